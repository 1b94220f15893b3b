"""WaffleIron's layers and memory-lean autograd functions (the model is in :mod:`.waffleiron`).

* :class:`PointConv` and friends: 1x1 convolutions and norms over (P, C) rows that keep the original
  channel-first parameter shapes, so its checkpoints load unchanged.
* :func:`normalize` / :func:`folded_linear_relu`: a norm that stores only its normalised output, its affine part
  folded into the next linear map.
* :func:`neighbor_max_pool`: the embedding's neighbour max-pool without storing (P, K, C) activations.
* :class:`GridMix`: a plane's scatter to cell means, two depthwise 3x3 convolutions and the gather back,
  with the grids recomputed in backward when they are larger than the point set.

Each runs in float32 with autocast off (:func:`apply_fp32`), since it mixes stored and recomputed tensors.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["GridMix", "LayerScale", "Plane", "PointBatchNorm2d", "PointConv", "PointConv2d", "apply_fp32",
           "folded_linear_relu", "make_norm", "neighbor_max_pool", "norm_affine", "normalize"]

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


def apply_fp32(function: type[torch.autograd.Function], *args: Any) -> torch.Tensor:
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
        out: torch.Tensor | None,
    ) -> torch.Tensor:
        x_hat = torch.empty_like(x) if out is None else out
        stats = (x.new_empty(0), x.new_empty(0))  # mean and 1/std, resized by the op
        if layer:
            _, _, invstd = torch.ops.aten.native_layer_norm.out(
                x, (x.shape[-1],), None, None, eps, out0=x_hat, out1=stats[0], out2=stats[1]
            )
        else:
            _, _, invstd = torch.ops.aten.native_batch_norm.out(
                x, None, None, running_mean, running_var, batch_stats, factor, eps,
                out=x_hat, save_mean=stats[0], save_invstd=stats[1],
            )  # fmt: skip
            if not batch_stats:
                invstd = (running_var + eps).rsqrt()  # type: ignore[operator]
        ctx.save_for_backward(x_hat, invstd)
        if out is not None:
            ctx.mark_dirty(out)
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
        return dx, None, None, None, None, None, None, None


def normalize(norm: nn.Module, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``norm(x)`` without its affine part, for (P, C) ``x`` (see :func:`folded_linear_relu`), into ``out``.

    Follows ``nn.BatchNorm1d`` (batch or running statistics, running-stat updates) and ``nn.LayerNorm``.
    """
    if isinstance(norm, nn.LayerNorm):
        return apply_fp32(_Normalize, x, None, None, True, 0.0, norm.eps, True, out)
    assert isinstance(norm, _BatchNorm)
    batch_stats = norm.training or norm.running_mean is None
    track = not norm.training or norm.track_running_stats
    factor = _running_average_factor(norm)
    running = (norm.running_mean, norm.running_var) if track else (None, None)
    return apply_fp32(_Normalize, x, *running, batch_stats, factor, norm.eps, False, out)


def norm_affine(norm: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(weight, bias) of a norm, ``None`` where it has none."""
    return getattr(norm, "weight", None), getattr(norm, "bias", None)


def folded_linear_relu(
    x_hat: torch.Tensor, norm: nn.Module, conv: PointConv, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``ReLU(conv(gamma * x_hat + beta))`` as one GEMM on the normalised ``x_hat``, written into ``out``.

    The norm's affine part is folded into the map: ``(W gamma) x + (W beta + b)``.
    """
    weight, bias = conv.weight.flatten(1), conv.bias
    gamma, beta = norm_affine(norm)
    if beta is not None:
        bias = weight @ beta if bias is None else torch.addmv(bias, weight, beta)
    if gamma is not None:
        weight = weight * gamma
    if out is None or torch.is_autocast_enabled(x_hat.device.type):  # half-precision GEMMs: torch allocates
        return F.relu_(F.linear(x_hat, weight, bias))
    return _LinearReLU.apply(x_hat, weight, bias, out)


class _LinearReLU(torch.autograd.Function):
    """``ReLU(x W^T + b)`` written into a given tensor (``F.linear`` and ``relu_`` allocate their own)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor
    ) -> torch.Tensor:
        if bias is None:
            torch.mm(x, weight.T, out=out)
        else:
            torch.addmm(bias, x, weight.T, out=out)
        ctx.save_for_backward(x, weight, out.relu_())
        ctx.mark_dirty(out)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    @_autocast_off
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, weight, h = ctx.saved_tensors
        g = torch.ops.aten.threshold_backward(grad, h, 0.0)
        return g @ weight, g.T @ x, g.sum(0) if ctx.has_bias else None, None


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
    return apply_fp32(_NeighborMaxPool, r, w1, bn.weight, bn.bias, w2, mean, invstd, batch_stats)


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


class GridMix(torch.autograd.Function):
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
