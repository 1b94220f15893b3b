"""Sparse convolutions and point-voxel maps as functions (the ``torch.nn.functional`` of sparse tensors).

Kernels use spconv's layout ``(C_out, kz, ky, kx, C_in)``, so weights load into spconv and OpenPCDet
unchanged. On CUDA (``kernels='auto'``) a convolution runs spconv's own fused kernels over the same rulebook;
otherwise ours: a convolution gathers the inputs of all its (input, output) pairs at once, multiplies each
kernel offset's slice by its kernel matrix and scatter-adds the products into the outputs; the
backward pass recomputes the gathers instead of storing them, so a convolution keeps only its input
alive.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from lidarssl.models.sparse.backend import Rulebook, get_backend
from lidarssl.models.sparse.tensor import SparseTensor, Triple, linear_index

__all__ = [
    "conv3d",
    "conv_transpose3d",
    "lookup",
    "point_sites",
    "point_to_voxel",
    "rulebook_conv",
    "scatter_mean",
    "voxel_to_point",
]


def _triple(value: int | Sequence[int], name: str) -> Triple:
    t = (value,) * 3 if isinstance(value, int) else tuple(int(v) for v in value)
    if len(t) != 3:
        raise ValueError(f"{name} must be an int or 3 ints, got {value!r}")
    return t  # type: ignore[return-value]


#: Gathered elements per group of kernel offsets (64 MiB of float32): bounds the transient buffers.
_CHUNK_ELEMENTS = 1 << 24


def _offset_groups(rb: Rulebook, row_width: int) -> list[range]:
    """Consecutive kernel offsets whose pairs, ``row_width`` values each, fit one chunk (at least one offset)."""
    groups, first = [], 0
    limit = max(1, _CHUNK_ELEMENTS // row_width)
    for k in range(rb.kernel_volume):
        if k > first and rb.bounds[k + 1] - rb.bounds[first] > limit:
            groups.append(range(first, k))
            first = k
    groups.append(range(first, rb.kernel_volume))
    return groups


def _gather_mm_scatter(features: torch.Tensor, weight: torch.Tensor, rb: Rulebook) -> torch.Tensor:
    """``out[dst] += in[src] @ weight[k]`` per offset k, with (K, C_in, C_out) ``weight``.

    One gather and one scatter per group of offsets (usually all of them) keep the number of
    operations, and their thread synchronisations, low; the products run per offset on slices.
    """
    c_out = weight.shape[2]
    if rb.identity is None:
        out = features.new_zeros(rb.num_out, c_out)
    else:
        out = features @ weight[rb.identity]
    for group in _offset_groups(rb, features.shape[1] + c_out):
        lo, hi = rb.bounds[group.start], rb.bounds[group.stop]
        if hi == lo:
            continue
        gathered = features.index_select(0, rb.src[lo:hi])
        products = gathered.new_empty(hi - lo, c_out)
        for k in group:
            a, b = rb.bounds[k] - lo, rb.bounds[k + 1] - lo
            if b > a:
                torch.mm(gathered[a:b], weight[k], out=products[a:b])
        out.index_add_(0, rb.dst[lo:hi], products)
    return out


def _weight_grad(features: torch.Tensor, grad_out: torch.Tensor, rb: Rulebook) -> torch.Tensor:
    """(K, C_in, C_out) kernel gradient: ``in[src]^T @ grad_out[dst]`` per offset."""
    grad = features.new_zeros(rb.kernel_volume, features.shape[1], grad_out.shape[1])
    if rb.identity is not None:
        torch.mm(features.t(), grad_out, out=grad[rb.identity])
    for group in _offset_groups(rb, features.shape[1] + grad_out.shape[1]):
        lo, hi = rb.bounds[group.start], rb.bounds[group.stop]
        if hi == lo:
            continue
        inputs = features.index_select(0, rb.src[lo:hi])
        grads = grad_out.index_select(0, rb.dst[lo:hi])
        for k in group:
            a, b = rb.bounds[k] - lo, rb.bounds[k + 1] - lo
            if b > a:
                torch.mm(inputs[a:b].t(), grads[a:b], out=grad[k])
    return grad


def _per_offset(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, kz, ky, kx, C_in) kernel as a (K, C_in, C_out) view, no copy."""
    return weight.reshape(weight.shape[0], -1, weight.shape[-1]).permute(1, 2, 0)


class _RulebookConv(torch.autograd.Function):
    """A sparse convolution; backward recomputes the gathers, so only the input is stored."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, features: torch.Tensor, weight: torch.Tensor, rulebook: Rulebook
    ) -> torch.Tensor:
        ctx.save_for_backward(features, weight)
        ctx.rulebook = rulebook
        return _gather_mm_scatter(features, _per_offset(weight), rulebook)

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx, grad_out: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        features, weight = ctx.saved_tensors
        rb: Rulebook = ctx.rulebook
        grad_out = grad_out.contiguous()
        grad_in = grad_weight = None
        if ctx.needs_input_grad[0]:
            # The input gradient is the transposed convolution of the output gradient.
            grad_in = _gather_mm_scatter(grad_out, _per_offset(weight).transpose(1, 2), rb.transposed())
        if ctx.needs_input_grad[1]:
            grad = _weight_grad(features, grad_out, rb)  # (K, C_in, C_out)
            grad_weight = grad.permute(2, 0, 1).reshape(weight.shape)
        return grad_in, grad_weight, None


def rulebook_conv(features: torch.Tensor, weight: torch.Tensor, rulebook: Rulebook) -> torch.Tensor:
    """Apply a rulebook: (N_in, C_in) features and a (C_out, kz, ky, kx, C_in) kernel to (N_out, C_out).

    Args:
        features: input features, one row per input site.
        weight: kernel in spconv's layout; its offsets flatten row-major, as the rulebook's do.
        rulebook: the pairs (see :class:`~lidarssl.models.sparse.backend.Rulebook`).
    """
    kv = math.prod(weight.shape[1:-1])
    if kv != rulebook.kernel_volume or weight.shape[-1] != features.shape[1] or features.shape[0] != rulebook.num_in:
        raise ValueError(
            f"kernel {tuple(weight.shape)} and features {tuple(features.shape)} do not fit a rulebook of "
            f"{rulebook.kernel_volume} offsets from {rulebook.num_in} sites"
        )
    device = features.device.type
    if torch.is_autocast_enabled(device):  # mixed precision: the whole convolution in the autocast dtype
        dtype = torch.get_autocast_dtype(device)
        with torch.autocast(device, enabled=False):
            return _RulebookConv.apply(features.to(dtype), weight.to(dtype), rulebook)
    return _RulebookConv.apply(features, weight, rulebook)


def _spconv_kernels(x: SparseTensor, weight: torch.Tensor, rulebook: Rulebook) -> bool:
    """Whether this convolution runs spconv's kernels (see :data:`~lidarssl.models.sparse.tensor.KERNELS`)."""
    if x.kernels == "lidarssl" or rulebook.native is None:
        if x.kernels == "spconv":
            raise ValueError(f"kernels='spconv' needs spconv's rulebooks, but the backend is '{x.backend}'")
        return False
    from spconv.cppconstants import CPU_ONLY_BUILD

    if x.kernels == "auto":
        return x.features.is_cuda and not CPU_ONLY_BUILD
    if not x.features.is_cuda and torch.is_grad_enabled() and (x.features.requires_grad or weight.requires_grad):
        raise ValueError("kernels='spconv' on CPU: spconv's CPU build has no backward pass; train with "
                         "kernels='auto' (ours on CPU) and keep 'spconv' for CPU inference")
    return True


def _spconv_conv(kind: str, features: torch.Tensor, weight: torch.Tensor, rulebook: Rulebook,
                 num_out: int) -> torch.Tensor:
    """spconv's native (gather / GEMM / scatter) convolution with its autograd: ``subm``, ``conv`` or
    ``inverse`` (the transpose of the ``conv`` whose pairs ``rulebook`` holds)."""
    from spconv.core import ConvAlgo
    from spconv.pytorch import functional as Fsp

    function = {"subm": Fsp.indice_subm_conv, "conv": Fsp.indice_conv, "inverse": Fsp.indice_inverse_conv}[kind]
    pairs, counts = rulebook.native  # type: ignore[misc]
    return function(features.contiguous(), weight.contiguous(), pairs, counts, num_out, ConvAlgo.Native)


def _add_bias(out: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return out if bias is None else out + bias


def _check_channels(x: SparseTensor, weight: torch.Tensor) -> None:
    if weight.dim() != 5 or weight.shape[-1] != x.num_channels:
        raise ValueError(
            f"expected a (C_out, kz, ky, kx, C_in={x.num_channels}) kernel, got {tuple(weight.shape)}"
        )


@dataclass(frozen=True)
class _Recorded:
    """What a strided convolution leaves in ``indice_dict`` for its transpose."""

    rulebook: Rulebook
    kernel_size: Triple
    coords: torch.Tensor
    spatial_shape: Triple
    stride: Triple
    site_cache: dict


def conv3d(
    x: SparseTensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    subm: bool = False,
    indice_key: str | None = None,
) -> SparseTensor:
    """Sparse 3D convolution.

    Args:
        x: input tensor.
        weight: (C_out, kz, ky, kx, C_in) kernel.
        bias: (C_out,) or ``None``.
        stride: step of the output grid (regular convolution only).
        padding: zero padding of the input grid (regular convolution only; submanifold convolutions
            pad by ``k // 2 * dilation`` so that outputs stay on the input sites).
        dilation: spacing of the kernel taps.
        subm: submanifold convolution: outputs exactly at the input sites (spconv ``SubMConv3d``).
            Otherwise a regular sparse convolution (spconv ``SparseConv3d``): every output site whose
            receptive field holds an input site is active, as in a dense convolution.
        indice_key: name under which a regular convolution records its rulebook, so that
            :func:`conv_transpose3d` with the same key can map back to the input sites.

    Returns:
        The output tensor; it shares ``indice_dict`` with ``x``.
    """
    _check_channels(x, weight)
    kernel = tuple(weight.shape[1:4])
    dilation = _triple(dilation, "dilation")
    if subm:
        if any(k % 2 == 0 for k in kernel):
            raise ValueError(f"a submanifold convolution needs an odd kernel to stay centred, got {kernel}")
        if kernel == (1, 1, 1):
            return x.replace_features(_add_bias(x.features @ weight.view(weight.shape[0], -1).t(), bias))
        key = ("subm", kernel, dilation)
        if key not in x.site_cache:
            x.site_cache[key] = get_backend(x.backend).submanifold(
                x.coords, x.spatial_shape, x.batch_size, kernel, dilation
            )
        rulebook = x.site_cache[key]
        if _spconv_kernels(x, weight, rulebook):
            out = _spconv_conv("subm", x.features, weight, rulebook, rulebook.num_out)
        else:
            out = rulebook_conv(x.features, weight, rulebook)
        return x.replace_features(_add_bias(out, bias))

    stride, padding = _triple(stride, "stride"), _triple(padding, "padding")
    key = ("conv", kernel, stride, padding, dilation)
    if key not in x.site_cache:
        rulebook, out_coords, out_shape = get_backend(x.backend).strided(
            x.coords, x.spatial_shape, x.batch_size, kernel, stride, padding, dilation
        )
        if min(out_shape) < 1:
            raise ValueError(f"convolution {kernel}/{stride} leaves an empty grid {out_shape} from {x.spatial_shape}")
        x.site_cache[key] = (rulebook, out_coords, out_shape, {})
    rulebook, out_coords, out_shape, out_cache = x.site_cache[key]
    if indice_key is not None:
        x.indice_dict[indice_key] = _Recorded(rulebook, kernel, x.coords, x.spatial_shape, x.stride, x.site_cache)
    if _spconv_kernels(x, weight, rulebook):
        out = _spconv_conv("conv", x.features, weight, rulebook, rulebook.num_out)
    else:
        out = rulebook_conv(x.features, weight, rulebook)
    return SparseTensor(
        features=_add_bias(out, bias),
        coords=out_coords,
        spatial_shape=out_shape,
        batch_size=x.batch_size,
        stride=tuple(a * b for a, b in zip(x.stride, stride)),  # type: ignore[arg-type]
        backend=x.backend,
        kernels=x.kernels,
        site_cache=out_cache,
        indice_dict=x.indice_dict,
    )


def conv_transpose3d(
    x: SparseTensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, indice_key: str
) -> SparseTensor:
    """Transpose of the regular convolution recorded under ``indice_key`` (spconv ``SparseInverseConv3d``).

    Outputs lie exactly on that convolution's input sites, which is what a U-Net decoder needs to
    concatenate its skip connection. On those sites it equals a dense ``conv_transpose3d`` with the
    same stride and padding.

    Args:
        x: tensor on the recorded convolution's output sites.
        weight: (C_out, kz, ky, kx, C_in) kernel, same kernel size as the recorded convolution.
        bias: (C_out,) or ``None``.
        indice_key: key given to the strided :func:`conv3d`.

    Raises:
        ValueError: when nothing was recorded under the key, or sites or kernel size do not match.
    """
    _check_channels(x, weight)
    rec = x.indice_dict.get(indice_key)
    if rec is None:
        raise ValueError(
            f"no strided convolution recorded under indice_key '{indice_key}' "
            f"(recorded: {sorted(x.indice_dict) or 'none'}); run the encoder conv with this key first"
        )
    if rec.rulebook.num_out != x.features.shape[0]:
        raise ValueError(
            f"indice_key '{indice_key}' maps {rec.rulebook.num_out} sites but the input has {x.features.shape[0]}"
        )
    if tuple(weight.shape[1:4]) != rec.kernel_size:
        raise ValueError(f"kernel {tuple(weight.shape[1:4])} differs from the recorded conv's {rec.kernel_size}")
    if _spconv_kernels(x, weight, rec.rulebook):
        out = _spconv_conv("inverse", x.features, weight, rec.rulebook, rec.rulebook.num_in)
    else:
        out = rulebook_conv(x.features, weight, rec.rulebook.transposed())
    return SparseTensor(
        features=_add_bias(out, bias),
        coords=rec.coords,
        spatial_shape=rec.spatial_shape,
        batch_size=x.batch_size,
        stride=rec.stride,
        backend=x.backend,
        kernels=x.kernels,
        site_cache=rec.site_cache,
        indice_dict=x.indice_dict,
    )


# ---------------------------------------------------------------------------------- point-voxel maps


def scatter_mean(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """(size, C) mean of the (M, C) ``values`` rows that share each ``index``; zero where none does."""
    total = values.new_zeros(size, values.shape[1]).index_add_(0, index, values)
    count = torch.bincount(index, minlength=size).clamp_(min=1).to(values.dtype)
    return total / count.unsqueeze(1)


def lookup(x: SparseTensor, coords: torch.Tensor) -> torch.Tensor:
    """(M,) int64 row of ``x`` at each ``(batch, z, y, x)`` of ``coords``, -1 where the site is inactive.

    The sorted site keys are cached with the coordinates, so repeated lookups cost one binary search.
    """
    if "sorted_keys" not in x.site_cache:
        keys = linear_index(x.coords, x.spatial_shape)
        x.site_cache["sorted_keys"] = torch.sort(keys)
    sorted_keys, order = x.site_cache["sorted_keys"]
    shape = torch.tensor(x.spatial_shape, device=coords.device)
    inside = ((coords[:, 1:] >= 0) & (coords[:, 1:] < shape)).all(dim=1)
    key = linear_index(torch.where(inside.unsqueeze(1), coords, torch.zeros_like(coords)), x.spatial_shape)
    if len(sorted_keys) == 0:
        return torch.full_like(key, -1)
    pos = torch.searchsorted(sorted_keys, key).clamp_(max=len(sorted_keys) - 1)
    found = inside & (sorted_keys[pos] == key)
    return torch.where(found, order[pos], torch.full_like(pos, -1))


def point_sites(x: SparseTensor, batch_index: torch.Tensor, point_coords: torch.Tensor) -> torch.Tensor:
    """(M, 4) int64 ``(batch, z, y, x)`` of the site of ``x`` that holds each point.

    A site at stride s covers input voxels ``[s c, s c + s)``, as after kernel-2 stride-2 convolutions
    (U-Nets); padded or 3-tap strided convolutions place their sites differently.

    Args:
        x: tensor whose sites have size ``x.stride`` input voxels.
        batch_index: (M,) sample of each point.
        point_coords: (M, 3) float continuous ``(z, y, x)`` position of each point in input-voxel units
            (``floor`` gives its input voxel).
    """
    stride = torch.tensor(x.stride, dtype=point_coords.dtype, device=point_coords.device)
    cells = torch.floor(point_coords / stride).long()
    return torch.cat([batch_index.long().unsqueeze(1), cells], dim=1)


def point_to_voxel(
    x: SparseTensor, values: torch.Tensor, batch_index: torch.Tensor, point_coords: torch.Tensor
) -> SparseTensor:
    """The sites of ``x`` with features replaced by the mean of the (M, C) point ``values`` inside each.

    Sites holding no point get zeros; points outside every site are ignored.
    """
    rows = lookup(x, point_sites(x, batch_index, point_coords))
    hit = rows >= 0
    return x.replace_features(scatter_mean(values[hit], rows[hit], x.features.shape[0]))


def voxel_to_point(
    x: SparseTensor, batch_index: torch.Tensor, point_coords: torch.Tensor, mode: str = "nearest"
) -> torch.Tensor:
    """(M, C) features of ``x`` at points.

    Args:
        x: the voxel tensor.
        batch_index: (M,) sample of each point.
        point_coords: (M, 3) continuous ``(z, y, x)`` positions in input-voxel units (see :func:`point_sites`).
        mode: ``"nearest"``: the features of the site holding the point (zero if inactive);
            ``"trilinear"``: interpolation between the 8 site centres around the point, over the active
            ones only, weights renormalised (the site holding the point always takes part).
    """
    if mode == "nearest":
        rows = lookup(x, point_sites(x, batch_index, point_coords))
        out = x.features.index_select(0, rows.clamp(min=0))
        return out * (rows >= 0).unsqueeze(1).to(out.dtype)
    if mode != "trilinear":
        raise ValueError(f"voxel_to_point mode must be 'nearest' or 'trilinear', got {mode!r}")
    stride = torch.tensor(x.stride, dtype=point_coords.dtype, device=point_coords.device)
    t = point_coords / stride - 0.5  # position relative to site centres
    base = torch.floor(t)
    frac = t - base
    base = base.long()
    b = batch_index.long().unsqueeze(1)
    out = x.features.new_zeros(point_coords.shape[0], x.num_channels)
    total = point_coords.new_zeros(point_coords.shape[0])
    for corner in itertools.product((0, 1), repeat=3):
        d = torch.tensor(corner, device=point_coords.device)
        weight = torch.where(d.bool(), frac, 1.0 - frac).prod(dim=1)
        rows = lookup(x, torch.cat([b, base + d], dim=1))
        weight = torch.where(rows >= 0, weight, torch.zeros_like(weight))
        out = out + weight.unsqueeze(1).to(out.dtype) * x.features.index_select(0, rows.clamp(min=0))
        total = total + weight
    return out / total.clamp(min=1e-12).unsqueeze(1).to(out.dtype)
