"""WaffleIron (Puy et al., ICCV 2023): a point backbone that mixes features on 2D grids.

Written from the architecture description in ``design/reference/scalr_waffleiron.md``. Parameter names,
shapes and initialisation are those of the original channel-first implementation, so its released
checkpoints (and ScaLR's) load with ``strict=True``. The computation is reorganised for speed and memory:

* **Point-major, concatenated batches.** Features are (P, C) rows of all kept points of the batch, with
  no padding: 1x1 convolutions are single GEMMs (:class:`PointConv`), BatchNorm statistics come from real
  points only, and scatter/gather into grids move whole rows.
* **Channels-last grids.** A plane's grid is built as (B*H*W, C) rows, which *is* a channels-last
  (B, C, H, W) tensor; CPU depthwise convolutions run ~9x faster than on channels-first grids. Grids are
  processed in channel chunks of at most 16 MiB on CPU, which glibc serves from reusable heap memory
  instead of fresh pages (page faults cost as much as the convolutions themselves).
* **Small autograd footprint.** Norms store only their normalised output (their affine parameters are
  folded into the next linear map, as is LayerScale); the embedding's (P, K, C) neighbour activations
  are never stored (:class:`_NeighborMaxPool`); grids larger than the point set are recomputed in
  backward (:class:`_GridMix`). A block keeps three (P, C) tensors for backward, plus its two grids
  when they are smaller than the point set.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import fields
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from lidarssl.errors import ConfigError, DataError
from lidarssl.models.backbones.base import Backbone, BackboneSpec, Batch, register_backbone
from lidarssl.models.backbones.waffleiron_prep import FEATURE_NAMES, WaffleIronPrep, check_grid_shapes

# Grids with at most this many cells per point are kept for backward rather than recomputed: storing
# them costs less memory than the block's own point features.
_STORE_GRIDS_UP_TO = 1.0

# The original averages a cell as sum / (count + 1e-6); kept so its checkpoints give the same outputs.
_CELL_EPS = 1e-6

# Largest temporary a chunked op allocates. On CPU this stays below glibc's 32 MiB mmap ceiling, so freed
# chunks are reused from the heap; bigger blocks are mmap'ed and page-faulted in afresh on every use.
_CHUNK_BYTES = {"cpu": 16 * 2**20}
_CHUNK_BYTES_DEFAULT = 512 * 2**20


def _chunk_len(total: int, bytes_per_item: int, device: torch.device) -> int:
    """How many items (rows, channels) of ``bytes_per_item`` bytes fit in one chunk on ``device``."""
    budget = _CHUNK_BYTES.get(device.type, _CHUNK_BYTES_DEFAULT)
    return max(1, min(total, budget // max(1, bytes_per_item)))


# ------------------------------------------------------------------ layers with the original's parameters


class PointConv(nn.Conv1d):
    """A 1x1 ``nn.Conv1d`` applied to point-major features: (..., C_in) -> (..., C_out).

    The weight keeps the Conv1d layout (C_out, C_in, 1) and initialisation, so checkpoints and training
    from scratch match the original; the computation is one ``F.linear``.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.flatten(1), self.bias)


class PointConv2d(nn.Conv2d):
    """A 1x1 ``nn.Conv2d`` (weight (C_out, C_in, 1, 1)) applied to (..., C_in) neighbourhood features."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.flatten(1), self.bias)


class PointBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` over (P, K, C) neighbourhood features: statistics over all P*K entries.

    Same parameters and buffers as ``nn.BatchNorm2d`` (checkpoints load), computed on a (P*K, C) view.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() != 2:
            raise ValueError(f"expected (rows, C) input, got {tuple(input.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view(x.shape)


class LayerScale(nn.Conv1d):
    """Per-channel gain stored as the original's depthwise ``Conv1d(C, C, 1, groups=C, bias=False)``.

    Keeps its default U(-1, 1) initialisation, as the original does. Blocks fold :attr:`gain` into the
    preceding convolution instead of calling this module, which saves one stored activation.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, kernel_size=1, groups=channels, bias=False)

    @property
    def gain(self) -> torch.Tensor:
        """(C,) per-channel scale."""
        return self.weight.view(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


def make_norm(channels: int, layernorm: bool) -> nn.BatchNorm1d | nn.LayerNorm:
    """Channel norm over (P, C) rows: ``BatchNorm1d`` or ``LayerNorm`` (the original's state_dict keys)."""
    return nn.LayerNorm(channels) if layernorm else nn.BatchNorm1d(channels)


class Plane(NamedTuple):
    """Where each point falls on one plane's grids, built once per forward and shared by its blocks.

    Attributes:
        cell: (P,) int64 cell of each point among the B*H*W cells of the batch's grids on this plane.
        weight: (P, 1) 1 / (number of points in the point's cell + eps): scatter-adding ``x * weight``
            gives the cell means.
        batch_size: B.
        shape: (H, W).
    """

    cell: torch.Tensor
    weight: torch.Tensor
    batch_size: int
    shape: tuple[int, int]

    @property
    def num_cells(self) -> int:
        """B * H * W."""
        return self.batch_size * self.shape[0] * self.shape[1]

    def grid(self, rows: torch.Tensor) -> torch.Tensor:
        """(B*H*W, c) cell rows viewed as a (B, c, H, W) channels-last grid, without a copy."""
        return rows.view(self.batch_size, *self.shape, rows.shape[1]).permute(0, 3, 1, 2)

    @classmethod
    def build(cls, cell: torch.Tensor, batch_size: int, shape: tuple[int, int], dtype: torch.dtype) -> Plane:
        """Precompute the cell-mean weights of ``cell`` on B grids of ``shape``."""
        count = torch.bincount(cell, minlength=batch_size * shape[0] * shape[1])
        weight = (1.0 / (count[cell].to(dtype) + _CELL_EPS)).unsqueeze(1)
        return cls(cell, weight, batch_size, shape)


# ------------------------------------------------------------------------------ memory-lean autograd ops


def _apply_fp32(function: type[torch.autograd.Function], *args: Any) -> torch.Tensor:
    """``function.apply(*args)``, in float32 with autocast off when autocast is on.

    The custom ops below mix stored and recomputed tensors, which must share a dtype; under autocast
    they run in float32 while the GEMMs of channel mixing still run in half precision.
    """
    device = next(a.device for a in args if isinstance(a, torch.Tensor))
    if not torch.is_autocast_enabled(device.type):
        return function.apply(*args)
    args = tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
    with torch.autocast(device.type, enabled=False):
        return function.apply(*args)


def _autocast_off(backward: Callable[..., Any]) -> Callable[..., Any]:
    """Run a custom op's backward with autocast off (``loss.backward()`` may sit inside autocast)."""

    @functools.wraps(backward)
    def wrapper(ctx: Any, grad: torch.Tensor) -> Any:
        with torch.autocast(grad.device.type, enabled=False):
            return backward(ctx, grad)

    return wrapper


def _running_average_factor(bn: _BatchNorm) -> float:
    """``nn.BatchNorm``'s running-average factor for this call, counting the batch the same way."""
    if not (bn.training and bn.track_running_stats):
        return 0.0
    bn.num_batches_tracked.add_(1)
    return 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum


class _Normalize(torch.autograd.Function):
    """Normalisation without affine that stores its *output* for backward, not its input.

    The next linear map stores the output anyway, so the input need not be kept at all: the gradient
    only needs x_hat and 1/std, ``dx = (g - mean(g) - x_hat * mean(g * x_hat)) / std`` over the
    statistics' dimension (rows for BatchNorm, channels for LayerNorm). The native fused backward
    kernels compute exactly that when handed x_hat with mean 0 and std 1.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        running_mean: torch.Tensor | None,
        running_var: torch.Tensor | None,
        batch_stats: bool,
        factor: float,
        eps: float,
        layer: bool,
    ) -> torch.Tensor:
        if layer:
            x_hat, _, invstd = torch.native_layer_norm(x, (x.shape[-1],), None, None, eps)
        else:
            running = (running_mean, running_var)
            x_hat, _, invstd = torch.native_batch_norm(x, None, None, *running, batch_stats, factor, eps)
            if not batch_stats:
                invstd = (running_var + eps).rsqrt()  # type: ignore[operator]
        ctx.save_for_backward(x_hat, invstd)
        ctx.layer, ctx.batch_stats = layer, batch_stats
        return x_hat

    @staticmethod
    @_autocast_off
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x_hat, invstd = ctx.saved_tensors
        grad = grad.contiguous()
        if ctx.layer:
            zeros, ones = x_hat.new_zeros(invstd.shape), x_hat.new_ones(invstd.shape)
            dx = torch.ops.aten.native_layer_norm_backward(
                grad, x_hat, (x_hat.shape[-1],), zeros, ones, None, None, [True, False, False]
            )[0].mul_(invstd)
        elif ctx.batch_stats:
            zeros, ones = x_hat.new_zeros(invstd.shape), x_hat.new_ones(invstd.shape)
            dx = torch.ops.aten.native_batch_norm_backward(
                grad, x_hat, invstd, None, None, zeros, ones, True, 0.0, [True, False, False]
            )[0]
        else:
            dx = grad * invstd
        return dx, None, None, None, None, None, None


def normalize(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` without its affine part, for (P, C) ``x`` (see :func:`folded_linear`).

    Follows ``nn.BatchNorm1d`` (batch or running statistics, running-stat updates) and ``nn.LayerNorm``.
    """
    if isinstance(norm, nn.LayerNorm):
        return _apply_fp32(_Normalize, x, None, None, True, 0.0, norm.eps, True)
    assert isinstance(norm, _BatchNorm)
    batch_stats = norm.training or norm.running_mean is None
    track = not norm.training or norm.track_running_stats
    factor = _running_average_factor(norm)
    running = (norm.running_mean, norm.running_var) if track else (None, None)
    return _apply_fp32(_Normalize, x, *running, batch_stats, factor, norm.eps, False)


def norm_affine(norm: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(weight, bias) of a norm, ``None`` where it has none."""
    return getattr(norm, "weight", None), getattr(norm, "bias", None)


def folded_linear(x_hat: torch.Tensor, norm: nn.Module, conv: PointConv) -> torch.Tensor:
    """``conv(gamma * x_hat + beta)`` as one GEMM on the normalised ``x_hat``: ``(W gamma) x + (W beta + b)``."""
    weight, bias = conv.weight.flatten(1), conv.bias
    gamma, beta = norm_affine(norm)
    if beta is not None:
        bias = weight @ beta if bias is None else torch.addmv(bias, weight, beta)
    if gamma is not None:
        weight = weight * gamma
    return F.linear(x_hat, weight, bias)


class _NeighborMaxPool(torch.autograd.Function):
    """``max_k W2 ReLU(BN(W1 r_k))`` over the K neighbours of every point, chunk by chunk.

    The (P, K, C) activations are never stored: forward keeps the arg-max neighbour of every (point,
    channel) as uint8, backward recomputes ``W1 r`` per chunk. ``mean`` and ``invstd`` are the BN
    statistics of ``u = W1 r``; with ``batch_stats`` they are functions of ``r`` and ``W1``, and the
    backward adds the usual batch-norm correction terms, summed analytically through the linear map.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        r: torch.Tensor,
        w1: torch.Tensor,
        gamma: torch.Tensor,
        beta: torch.Tensor,
        w2: torch.Tensor,
        mean: torch.Tensor,
        invstd: torch.Tensor,
        batch_stats: bool,
    ) -> torch.Tensor:
        p, k, _ = r.shape
        c = w2.shape[0]
        a = gamma * invstd
        w1a, shift = w1 * a.unsqueeze(1), beta - mean * a  # ReLU(gamma (W1 r - mean) invstd + beta)
        out = r.new_empty(p, c)
        arg = torch.empty(p, c, dtype=torch.uint8 if k <= 256 else torch.int64, device=r.device)
        step = _chunk_len(p, k * c * r.element_size(), r.device)
        for s in range(0, p, step):
            v = F.relu_(F.linear(r[s : s + step], w1a, shift))
            out[s : s + step], arg[s : s + step] = F.linear(v, w2).max(dim=1)
        ctx.save_for_backward(r, w1, gamma, beta, w2, mean, invstd, arg)
        ctx.batch_stats = batch_stats
        return out

    @staticmethod
    @_autocast_off
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        r, w1, gamma, beta, w2, mean, invstd, arg = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        p, k, ci = r.shape
        a = gamma * invstd
        w1a, shift = w1 * a.unsqueeze(1), beta - mean * a
        r64 = r.flatten(0, 1).double()
        r_mean = r64.mean(0).to(r.dtype)
        grad_w2, sum_gz, t = torch.zeros_like(w2), torch.zeros_like(beta), r.new_zeros(w1.shape)
        grad_r = torch.empty_like(r)
        w1a_t = w1a.T.contiguous()  # thin GEMMs run several times faster with these operand layouts
        step = _chunk_len(p, k * w2.shape[0] * r.element_size(), r.device)
        for s in range(0, p, step):
            rc = r[s : s + step]
            v = F.relu_(F.linear(rc, w1a, shift)).flatten(0, 1)  # recomputed, (rows, C)
            g_w = torch.zeros_like(v).view(-1, k, v.shape[1])  # max's backward: grad to the arg-max neighbour
            g_w = g_w.scatter_(1, arg[s : s + step].long().unsqueeze(1), grad_out[s : s + step].unsqueeze(1))
            g_w = g_w.flatten(0, 1)
            grad_w2 += g_w.T @ v
            g_z = torch.ops.aten.threshold_backward(g_w @ w2, v, 0.0)  # grad of the BN output
            sum_gz += g_z.sum(0)
            t += ((rc.flatten(0, 1) - r_mean).T @ g_z).T  # centred, so grad_gamma below has no cancellation
            grad_r[s : s + step] = F.linear(g_z, w1a_t).view_as(rc)  # a * g_z is the grad of u = W1 r
        # With u = W1 r: sum(g_z * u_hat) = invstd * (sum_j W1 * t + (W1 r_mean - mean) * sum(g_z)).
        grad_beta = sum_gz
        grad_gamma = invstd * ((w1 * t).sum(1) + (w1 @ r_mean - mean) * sum_gz)
        grad_w1 = a.unsqueeze(1) * (t + sum_gz.unsqueeze(1) * r_mean)
        if ctx.batch_stats:
            # BatchNorm backward subtracts k0 + u_hat * k1 from a * g_z; push that through u = W1 r.
            n = p * k
            k0, k1 = (a * grad_beta / n).double(), (a * grad_gamma / n).double()
            # u_hat = r w1s^T + shift_hat
            w1s, shift_hat = (w1 * invstd.unsqueeze(1)).double(), (-mean * invstd).double()
            sum_r, rr = r64.sum(0), r64.T @ r64
            sum_uhat_r = w1s @ rr + shift_hat.unsqueeze(1) * sum_r
            grad_w1 -= (k0.unsqueeze(1) * sum_r + k1.unsqueeze(1) * sum_uhat_r).to(w1.dtype)
            m = w1s.T @ (k1.unsqueeze(1) * w1.double())
            m0 = (k0 + shift_hat * k1) @ w1.double()
            grad_r -= (r64 @ m + m0).to(r.dtype).view_as(r)
        return grad_r, grad_w1, grad_gamma, grad_beta, grad_w2, None, None, None


def neighbor_max_pool(r: torch.Tensor, conv_a: PointConv2d, bn: PointBatchNorm2d, conv_b: PointConv2d) -> torch.Tensor:
    """``conv_b(ReLU(bn(conv_a(r)))).max(dim=1).values`` for (P, K, C_in) ``r``, memory-lean.

    Same outputs, gradients and BN running-stat updates as the module chain; the BN batch statistics
    of ``conv_a(r)`` come from the (C_in, C_in) second moments of ``r`` since ``conv_a`` is linear.
    """
    w1, w2 = conv_a.weight.flatten(1), conv_b.weight.flatten(1)
    batch_stats = bn.training or bn.running_mean is None
    with torch.no_grad():
        if batch_stats:
            r64 = r.flatten(0, 1).double()
            n = r64.shape[0]
            centred = r64 - r64.mean(0)
            w64 = w1.double()
            mean = w64 @ r64.mean(0)
            var = ((w64 @ (centred.T @ centred / n)) * w64).sum(1)
            factor = _running_average_factor(bn)
            if bn.track_running_stats and bn.running_mean is not None:
                bn.running_mean.lerp_(mean.to(r.dtype), factor)
                bn.running_var.lerp_((var * n / max(n - 1, 1)).to(r.dtype), factor)
        else:
            mean, var = bn.running_mean, bn.running_var
        mean, invstd = mean.to(r.dtype), (var + bn.eps).rsqrt().to(r.dtype)
    return _apply_fp32(_NeighborMaxPool, r, w1, bn.weight, bn.bias, w2, mean, invstd, batch_stats)


def _as_rows(grid: torch.Tensor) -> torch.Tensor:
    """(B, c, H, W) channels-last grid -> its (B*H*W, c) rows (a view when channels-last)."""
    return grid.permute(0, 2, 3, 1).reshape(-1, grid.shape[1])


def _grid_conv1(
    x_hat: torch.Tensor, gamma: torch.Tensor | None, beta: torch.Tensor | None, w1: torch.Tensor, b1: torch.Tensor,
    plane: Plane, ch: slice,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The grid of cell means of channels ``ch`` of ``gamma * x_hat + beta``, and ReLU(conv1(grid))."""
    if gamma is None:
        y = x_hat[:, ch] * plane.weight
    else:
        y = torch.addcmul(beta[ch], x_hat[:, ch], gamma[ch]) if beta is not None else x_hat[:, ch] * gamma[ch]
        y.mul_(plane.weight)
    grid = plane.grid(y.new_zeros(plane.num_cells, y.shape[1]).index_add_(0, plane.cell, y))
    return grid, F.relu_(F.conv2d(grid, w1[ch], b1[ch], padding=1, groups=y.shape[1]))


class _GridMix(torch.autograd.Function):
    """The grid part of spatial mixing: cell means -> depthwise conv, ReLU, depthwise conv -> gather.

    Works in chunks of channels (depthwise convs keep channels apart), so no temporary exceeds the
    chunk budget. Unless ``store``, backward recomputes the grid and conv1 of one chunk at a time
    instead of keeping two (B, C, H, W) grids per block alive from forward to backward.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x_hat: torch.Tensor,
        gamma: torch.Tensor | None,
        beta: torch.Tensor | None,
        w1: torch.Tensor,
        b1: torch.Tensor,
        w2: torch.Tensor,
        b2: torch.Tensor,
        plane: Plane,
        store: bool,
    ) -> torch.Tensor:
        c = x_hat.shape[1]
        step = _chunk_len(c, plane.num_cells * x_hat.element_size(), x_hat.device)
        chunks = [slice(s, s + step) for s in range(0, c, step)]
        out, stored = torch.empty_like(x_hat), []
        for ch in chunks:
            grid, a = _grid_conv1(x_hat, gamma, beta, w1, b1, plane, ch)
            rows = _as_rows(F.conv2d(a, w2[ch], b2[ch], padding=1, groups=a.shape[1]))
            if len(chunks) == 1:  # gather straight into the output: one (P, C) copy less
                torch.index_select(rows, 0, plane.cell, out=out)
            else:
                out[:, ch] = rows.index_select(0, plane.cell)
            if store:
                stored += [grid, a]
        ctx.save_for_backward(x_hat, gamma, beta, w1, b1, w2, *stored)
        ctx.plane, ctx.chunks = plane, chunks
        return out

    @staticmethod
    @_autocast_off
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x_hat, gamma, beta, w1, b1, w2, *stored = ctx.saved_tensors
        plane: Plane = ctx.plane
        grad = grad.contiguous()
        g_x = None if len(ctx.chunks) == 1 else torch.empty_like(x_hat)
        g_w1, g_w2 = torch.empty_like(w1), torch.empty_like(w2)
        g_b1, g_b2 = torch.empty_like(b1), torch.empty_like(b1)
        g_gamma = None if gamma is None else torch.empty_like(gamma)
        g_beta = None if beta is None else torch.empty_like(beta)
        for i, ch in enumerate(ctx.chunks):
            if stored:
                grid, a = stored[2 * i], stored[2 * i + 1]
            else:
                grid, a = _grid_conv1(x_hat, gamma, beta, w1, b1, plane, ch)
            c = a.shape[1]
            # index_add_ is ~3x faster from a contiguous source than from a column slice.
            g_o = plane.grid(grad.new_zeros(plane.num_cells, c).index_add_(0, plane.cell, grad[:, ch].contiguous()))
            conv_args = ([c], [1, 1], [1, 1], [1, 1], False, [0, 0], c, [True, True, True])
            g_a, g_w2[ch], g_b2[ch] = torch.ops.aten.convolution_backward(g_o, a, w2[ch], *conv_args)
            g_a = torch.ops.aten.threshold_backward(g_a, a, 0.0)  # ReLU backward (a is ReLU's output)
            g_grid, g_w1[ch], g_b1[ch] = torch.ops.aten.convolution_backward(g_a, grid, w1[ch], *conv_args)
            g_y = _as_rows(g_grid).index_select(0, plane.cell).mul_(plane.weight)
            if g_beta is not None:
                g_beta[ch] = g_y.sum(0)
            if g_gamma is not None:
                g_gamma[ch] = (g_y * x_hat[:, ch]).sum(0)
                g_y.mul_(gamma[ch])
            if g_x is None:
                g_x = g_y
            else:
                g_x[:, ch] = g_y
        return g_x, g_gamma, g_beta, g_w1, g_b1, g_w2, g_b2, None, None


# ---------------------------------------------------------------------------------------------- modules


class Embedding(nn.Module):
    """Point embedding: a point branch and a max-pooled branch over kNN relative features.

    ``x = BN(feats)``; point branch ``conv1(x)``; neighbour branch: ``x[neighbours] - x`` through BN2d,
    1x1 conv, BN2d, ReLU, 1x1 conv, max over neighbours; output ``final(cat[point, neighbour])``.
    """

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(in_channels)
        self.conv1 = PointConv(in_channels, channels)
        self.conv2 = nn.Sequential(
            PointBatchNorm2d(in_channels),
            PointConv2d(in_channels, channels, bias=False),
            PointBatchNorm2d(channels),
            nn.ReLU(inplace=True),
            PointConv2d(channels, channels, bias=False),
        )
        self.final = PointConv(2 * channels, channels)

    def forward(self, feats: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
        """Embed (P, C_in) features given (P, K + 1) neighbour rows (self first) into (P, C)."""
        x = self.norm(feats)
        relative = self.conv2[0](x[neighbors[:, 1:]] - x.unsqueeze(1))  # (P, K, C_in)
        neigh = neighbor_max_pool(relative, self.conv2[1], self.conv2[2], self.conv2[4])
        return self.final(torch.cat([self.conv1(x), neigh], dim=1))


def _add_residual(x: torch.Tensor, y: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    return x + y if keep is None else torch.addcmul(x, y, keep)


class ChannelMix(nn.Module):
    """``x + DropPath(LayerScale(conv(ReLU(conv(Norm(x))))))`` on (P, C) rows."""

    def __init__(self, channels: int, layernorm: bool) -> None:
        super().__init__()
        self.norm = make_norm(channels, layernorm)
        self.mlp = nn.Sequential(PointConv(channels, channels), nn.ReLU(inplace=True), PointConv(channels, channels))
        self.scale = LayerScale(channels)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Mix channels of (P, C) ``x``; ``keep`` is the (P, 1) DropPath gain of each point or ``None``."""
        h = F.relu_(folded_linear(normalize(self.norm, x), self.norm, self.mlp[0]))
        fc2, gain = self.mlp[2], self.scale.gain
        weight, bias = fc2.weight.flatten(1) * gain.unsqueeze(1), fc2.bias * gain
        # Residual, bias and GEMM in one addmm saves a (P, C) pass; not under autocast, which would
        # round the residual stream to half precision.
        if keep is None and not torch.is_autocast_enabled(x.device.type):
            return torch.addmm(x + bias, h, weight.T)
        return _add_residual(x, F.linear(h, weight, bias), keep)


class SpatialMix(nn.Module):
    """``x + DropPath(gather(LayerScale(dwconv(ReLU(dwconv(cell_mean(Norm(x))))))))`` on one plane.

    Args:
        channels: C.
        layernorm: LayerNorm instead of BatchNorm.
        recompute_grid: recompute in backward the grids (cell means and conv1 output) that are larger
            than the block's point features, instead of keeping them from forward to backward. Costs
            one scatter and one depthwise conv; grids smaller than the points are always kept.
    """

    def __init__(self, channels: int, layernorm: bool, recompute_grid: bool = True) -> None:
        super().__init__()
        self.norm = make_norm(channels, layernorm)
        self.ffn = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
        )
        self.scale = LayerScale(channels)
        self.recompute_grid = recompute_grid

    def forward(self, x: torch.Tensor, plane: Plane, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Mix (P, C) ``x`` spatially on ``plane``; ``keep`` is the (P, 1) DropPath gain or ``None``."""
        gamma, beta = norm_affine(self.norm)
        conv1, conv2, gain = self.ffn[0], self.ffn[2], self.scale.gain
        # LayerScale commutes with the gather back to the points, so it rides on conv2's weights.
        w2, b2 = conv2.weight * gain.view(-1, 1, 1, 1), conv2.bias * gain
        small_grid = plane.num_cells <= _STORE_GRIDS_UP_TO * x.shape[0]
        store = torch.is_grad_enabled() and (small_grid or not self.recompute_grid)
        y = _apply_fp32(_GridMix, normalize(self.norm, x), gamma, beta, conv1.weight, conv1.bias, w2, b2, plane, store)
        return _add_residual(x, y, keep)


class WaffleIronTrunk(nn.Module):
    """The stack of ``depth`` (spatial mix, channel mix) blocks, planes cycling through the grids.

    Holds ``channel_mix`` before ``spatial_mix`` so the state_dict order is the original's.
    """

    def __init__(
        self,
        channels: int,
        depth: int,
        grid_shapes: Sequence[Sequence[int]],
        layernorm: bool = False,
        drop_path: float = 0.0,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.grid_shapes = check_grid_shapes(grid_shapes)
        self.drop_path = drop_path
        self.checkpointing = checkpointing
        self.channel_mix = nn.ModuleList(ChannelMix(channels, layernorm) for _ in range(depth))
        # Under whole-block checkpointing a second, inner recomputation of the grids would be wasted.
        self.spatial_mix = nn.ModuleList(
            SpatialMix(channels, layernorm, recompute_grid=not checkpointing) for _ in range(depth)
        )

    def forward(self, x: torch.Tensor, cells: torch.Tensor, batch_index: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Run the blocks on (P, C) ``x`` with (P, n_planes) batch-offset ``cells``."""
        if cells.shape[1] != len(self.grid_shapes):
            raise DataError(
                f"batch has cells for {cells.shape[1]} planes but the model has {len(self.grid_shapes)} grids; "
                "build batches with the collate of the same backbone preset"
            )
        planes = [Plane.build(cells[:, j], batch_size, shape, x.dtype) for j, shape in enumerate(self.grid_shapes)]
        for d in range(len(self.channel_mix)):
            plane = planes[d % len(planes)]
            keeps = (self._keep(batch_index, batch_size), self._keep(batch_index, batch_size))
            if self.checkpointing and torch.is_grad_enabled():
                x = checkpoint(
                    self._block, d, x, plane, *keeps, use_reentrant=False, context_fn=self._recompute_context(d)
                )
            else:
                x = self._block(d, x, plane, *keeps)
        return x

    def _block(
        self, d: int, x: torch.Tensor, plane: Plane, keep_s: torch.Tensor | None, keep_c: torch.Tensor | None
    ) -> torch.Tensor:
        return self.channel_mix[d](self.spatial_mix[d](x, plane, keep_s), keep_c)

    def _keep(self, batch_index: torch.Tensor, batch_size: int) -> torch.Tensor | None:
        """DropPath: a (P, 1) gain, 0 for every point of a dropped sample and 1/(1-p) otherwise."""
        if not self.training or self.drop_path == 0.0:
            return None
        keep = 1.0 - self.drop_path
        gain = torch.bernoulli(torch.full((batch_size,), keep, device=batch_index.device)) / keep
        return gain[batch_index].unsqueeze(1)

    def _recompute_context(self, d: int) -> Callable[[], tuple[AbstractContextManager, AbstractContextManager]]:
        """``checkpoint``'s context_fn: the recomputation must not update BatchNorm running stats again."""
        blocks = (self.spatial_mix[d], self.channel_mix[d])
        norms = [m for block in blocks for m in block.modules() if isinstance(m, _BatchNorm)]
        return lambda: (nullcontext(), _frozen_running_stats(norms))


@contextmanager
def _frozen_running_stats(norms: Sequence[_BatchNorm]) -> Iterator[None]:
    """Undo the running-stat updates of a checkpoint's recomputation, which would count a batch twice."""
    saved = [[b.clone() for b in m.buffers(recurse=False)] for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, values in zip(norms, saved):
                for buf, value in zip(m.buffers(recurse=False), values):
                    buf.copy_(value)


class WaffleIron(Backbone):
    """WaffleIron backbone: per-point features (sum M, C) for a batch from :class:`WaffleIronPrep`.

    Args:
        in_channels: input feature channels (5: intensity, x, y, z, radius).
        channels: C, the width of every block.
        depth: number of (spatial mix, channel mix) blocks.
        grid_shapes: (H, W) of each plane's grid, matching the preprocessing's.
        layernorm: channel LayerNorm instead of BatchNorm in the blocks (the embedding always uses BN).
        drop_path: per-sample DropPath probability of every residual branch.
        checkpointing: recompute each block in backward (activation checkpointing) to save memory.
    """

    def __init__(
        self,
        in_channels: int = 5,
        channels: int = 256,
        depth: int = 48,
        grid_shapes: Sequence[Sequence[int]] = ((256, 256), (256, 32), (256, 32)),
        layernorm: bool = False,
        drop_path: float = 0.0,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("channels", channels), ("depth", depth)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"WaffleIron {name} must be a positive integer, got {value!r}")
        if not 0.0 <= drop_path < 1.0:
            raise ConfigError(f"WaffleIron drop_path must be in [0, 1), got {drop_path}")
        self.out_channels = channels
        self.embed = Embedding(in_channels, channels)
        self.waffleiron = WaffleIronTrunk(channels, depth, grid_shapes, layernorm, drop_path, checkpointing)

    @property
    def num_layers(self) -> int:
        """Number of blocks: layer ids run from 0 (embedding) to ``depth`` (last block)."""
        return len(self.waffleiron.channel_mix)

    def layer_id(self, param_name: str) -> int:
        """Depth of a parameter for layer-wise learning-rate decay, as ScaLR: embedding 0, block d at d + 1.

        Raises:
            ValueError: when ``param_name`` is not a parameter of this backbone.
        """
        parts = param_name.split(".")
        if parts[0] == "embed":
            return 0
        if parts[0] == "waffleiron" and len(parts) > 2 and parts[1] in ("channel_mix", "spatial_mix"):
            return int(parts[2]) + 1
        if parts[0] == "classif" and hasattr(self, "classif"):
            return self.num_layers + 1
        raise ValueError(f"'{param_name}' is not a parameter name of {type(self).__name__}")

    def forward(self, batch: Batch) -> torch.Tensor:
        """Features (sum M, C) of a batch from :meth:`WaffleIronPrep.collate`."""
        missing = [k for k in ("feats", "neighbors", "cells", "batch_index", "offsets") if k not in batch]
        if missing:
            raise DataError(f"WaffleIron batch lacks {missing}; build it with WaffleIronPrep.collate")
        x = self.embed(batch["feats"], batch["neighbors"])
        return self.waffleiron(x, batch["cells"], batch["batch_index"], batch["offsets"].shape[0] - 1)


class WaffleIronSegmenter(WaffleIron):
    """WaffleIron plus the original's ``classif`` 1x1 conv head: logits (sum M, num_classes).

    Its state_dict is the original segmenter's (``embed.*``, ``waffleiron.*``, ``classif.*``), so released
    WaffleIron and ScaLR weights load with ``strict=True`` once their ``module.`` prefix is stripped.
    """

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.classif = PointConv(self.out_channels, num_classes)
        self.out_channels = num_classes

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits (sum M, num_classes)."""
        return self.classif(super().forward(batch))


# ---------------------------------------------------------------------------------------------- presets

_MODEL_OPTIONS = ("layernorm", "drop_path", "checkpointing")
_PREP_OPTIONS = tuple(f.name for f in fields(WaffleIronPrep))


def _waffleiron_spec(
    name: str, depth: int, channels: int, layernorm: bool, overrides: dict[str, object]
) -> BackboneSpec:
    """Build a preset's module and preprocessing from one set of options, so their grids agree."""
    unknown = sorted(set(overrides) - set(_MODEL_OPTIONS) - set(_PREP_OPTIONS))
    if unknown:
        options = ", ".join(sorted((*_MODEL_OPTIONS, *_PREP_OPTIONS)))
        raise ConfigError(f"backbone '{name}' has no option {unknown}; options: {options}")
    prep = WaffleIronPrep(**{k: v for k, v in overrides.items() if k in _PREP_OPTIONS})  # type: ignore[arg-type]
    model_options = {"layernorm": layernorm, **{k: v for k, v in overrides.items() if k in _MODEL_OPTIONS}}
    model = WaffleIron(
        in_channels=len(FEATURE_NAMES), channels=channels, depth=depth, grid_shapes=prep.grid_shapes, **model_options
    )
    return BackboneSpec(name=name, model=model, prep=prep, collate=prep.collate)


@register_backbone
def waffleiron_48_256(**overrides: object) -> BackboneSpec:
    """WI-48-256 with BatchNorm (6.84M parameters): WaffleIron's SemanticKITTI model."""
    return _waffleiron_spec("waffleiron_48_256", 48, 256, False, overrides)


@register_backbone
def waffleiron_48_384(**overrides: object) -> BackboneSpec:
    """WI-48-384 with BatchNorm (15.1M parameters): WaffleIron's nuScenes model."""
    return _waffleiron_spec("waffleiron_48_384", 48, 384, False, overrides)


@register_backbone
def waffleiron_48_768(**overrides: object) -> BackboneSpec:
    """WI-48-768 with LayerNorm (59.4M parameters): ScaLR's student."""
    return _waffleiron_spec("waffleiron_48_768", 48, 768, True, overrides)


@register_backbone
def waffleiron(depth: int = 48, channels: int = 256, layernorm: bool = False, **overrides: object) -> BackboneSpec:
    """WaffleIron of any depth and width, BatchNorm unless ``layernorm``: checkpoints whose size is no preset's."""
    return _waffleiron_spec("waffleiron", int(depth), int(channels), bool(layernorm), overrides)


@register_backbone
def waffleiron_12_64(**overrides: object) -> BackboneSpec:
    """WI-12-64 with BatchNorm (0.13M parameters): CPU demos."""
    return _waffleiron_spec("waffleiron_12_64", 12, 64, False, overrides)


@register_backbone
def waffleiron_4_32(**overrides: object) -> BackboneSpec:
    """WI-4-32 with BatchNorm (15k parameters): tests and smoke runs."""
    return _waffleiron_spec("waffleiron_4_32", 4, 32, False, overrides)
