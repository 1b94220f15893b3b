"""Sparse layers mirroring ``torch.nn``: each takes and returns a :class:`SparseTensor`.

Parameter names and shapes are spconv's (``weight`` (C_out, kz, ky, kx, C_in), ``bias``; BatchNorm is a
plain ``BatchNorm1d``), so a ``torch.nn.Sequential`` of these layers has the state_dict of the
``spconv.SparseSequential`` it mirrors. Compose them with ``torch.nn.Sequential`` and ``torch.nn.Identity``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from lidarssl.models.sparse import functional as F
from lidarssl.models.sparse.tensor import SparseTensor

__all__ = ["BatchNorm", "Conv3d", "ConvTranspose3d", "Dropout", "ReLU", "SubMConv3d"]


def _triple(value: int | Sequence[int]) -> tuple[int, int, int]:
    t = (value,) * 3 if isinstance(value, int) else tuple(int(v) for v in value)
    if len(t) != 3 or min(t) < 1:
        raise ValueError(f"expected a positive int or 3 positive ints, got {value!r}")
    return t  # type: ignore[return-value]


class _SparseConvBase(nn.Module):
    """A kernel in spconv's layout, initialised like ``torch.nn.Conv3d`` (uniform in +-1/sqrt(fan_in))."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int], bias: bool) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _triple(kernel_size)
        self.weight = nn.Parameter(torch.empty(out_channels, *self.kernel_size, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_channels * math.prod(self.kernel_size))
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, bias={self.bias is not None}"


class SubMConv3d(_SparseConvBase):
    """Submanifold convolution: outputs exactly at the input sites (spconv ``SubMConv3d``).

    Args:
        in_channels: C_in.
        out_channels: C_out.
        kernel_size: odd kernel size (int or (kz, ky, kx)).
        dilation: spacing of the kernel taps.
        bias: learn an additive bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int] = 3,
        dilation: int | Sequence[int] = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, bias)
        if any(k % 2 == 0 for k in self.kernel_size):
            raise ValueError(f"SubMConv3d needs an odd kernel size, got {self.kernel_size}")
        self.dilation = _triple(dilation)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return F.conv3d(x, self.weight, self.bias, dilation=self.dilation, subm=True)


class Conv3d(_SparseConvBase):
    """Regular sparse convolution (spconv ``SparseConv3d``): an output site is active when its receptive
    field holds an input site; with ``stride`` > 1 it downsamples.

    Args:
        in_channels: C_in.
        out_channels: C_out.
        kernel_size: int or (kz, ky, kx).
        stride: output step, int or (z, y, x).
        padding: input zero padding, int or (z, y, x).
        dilation: spacing of the kernel taps.
        bias: learn an additive bias.
        indice_key: record the rulebook under this name for a :class:`ConvTranspose3d` decoder layer.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        bias: bool = False,
        indice_key: str | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, bias)
        self.stride = _triple(stride)
        self.padding = padding if isinstance(padding, int) else tuple(padding)
        self.dilation = _triple(dilation)
        self.indice_key = indice_key

    def forward(self, x: SparseTensor) -> SparseTensor:
        return F.conv3d(
            x, self.weight, self.bias, stride=self.stride, padding=self.padding, dilation=self.dilation,
            indice_key=self.indice_key,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, stride={self.stride}, padding={self.padding}, indice_key={self.indice_key!r}"


class ConvTranspose3d(_SparseConvBase):
    """Inverse of the :class:`Conv3d` recorded under ``indice_key`` (spconv ``SparseInverseConv3d``):
    outputs at that convolution's input sites, as a U-Net decoder needs.

    Args:
        in_channels: C_in.
        out_channels: C_out.
        kernel_size: the recorded convolution's kernel size.
        indice_key: the recorded convolution's ``indice_key``.
        bias: learn an additive bias.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int], indice_key: str, bias: bool = False
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, bias)
        self.indice_key = indice_key

    def forward(self, x: SparseTensor) -> SparseTensor:
        return F.conv_transpose3d(x, self.weight, self.bias, indice_key=self.indice_key)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, indice_key={self.indice_key!r}"


class BatchNorm(nn.BatchNorm1d):
    """``torch.nn.BatchNorm1d`` over the active sites' features (same parameters and buffers)."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace_features(super().forward(x.features))


class ReLU(nn.ReLU):
    """``torch.nn.ReLU`` on the features."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace_features(super().forward(x.features))


class Dropout(nn.Dropout):
    """``torch.nn.Dropout`` on the features."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace_features(super().forward(x.features))
