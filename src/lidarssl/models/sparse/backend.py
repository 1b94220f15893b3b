"""Rulebooks: which input site feeds which output site through which kernel offset.

The backend is the only place that knows a sparse-convolution library. It turns coordinates into a
:class:`Rulebook`; the arithmetic (gather, matrix product, scatter) is ours by default on CPU, in
:mod:`lidarssl.models.sparse.functional`, so gradients work on every device. That matters for spconv:
its CPU backward asks for a CUDA stream and fails on machines without a GPU driver, while its CPU
rulebook builder works everywhere. The rulebook also keeps spconv's own pairs, so that on CUDA its fused
kernels can run the same convolution (its native algorithm) (``kernels`` in :class:`~lidarssl.models.sparse.tensor.SparseTensor`). A torchsparse or MinkowskiEngine backend would implement the same
two methods and register itself in :data:`BACKENDS`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = ["BACKENDS", "Rulebook", "RulebookBackend", "SpconvBackend", "get_backend"]

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class Rulebook:
    """A convolution as (input row, output row) pairs, grouped by kernel offset.

    ``out[dst[p]] += in[src[p]] @ W[k]`` for every pair p of offset k, where ``W[k]`` is the
    (C_in, C_out) kernel slice at flattened offset k (row-major over (kz, ky, kx)). Pairs of offset k
    are ``src[bounds[k]:bounds[k + 1]]``. Only existing neighbours are listed, so the arithmetic is
    exact even where sites have few neighbours (lidar surfaces fill 5-40% of a 3^3 kernel).

    Attributes:
        src: (P,) int64 input rows.
        dst: (P,) int64 output rows.
        bounds: K + 1 offsets into the pair lists, one group per kernel offset.
        num_in: number of input sites.
        num_out: number of output sites.
        identity: kernel offset that maps every site to itself (a submanifold kernel's centre), whose
            pairs are left out of the lists: it is one plain matrix product, no gather or scatter.
        native: the same convolution as spconv's (2, K, P) int32 indice pairs and (K,) pair counts, which
            its own kernels take (``None`` for a backend without them).
    """

    src: torch.Tensor
    dst: torch.Tensor
    bounds: tuple[int, ...]
    num_in: int
    num_out: int
    identity: int | None = None
    native: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_pairs(
        cls,
        in_rows: Sequence[torch.Tensor],
        out_rows: Sequence[torch.Tensor],
        num_in: int,
        num_out: int,
        identity: int | None = None,
        native: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> Rulebook:
        """Build a rulebook from one (input rows, output rows) list per kernel offset."""
        bounds = [0]
        for rows in in_rows:
            bounds.append(bounds[-1] + len(rows))
        src, dst = torch.cat(list(in_rows)).long(), torch.cat(list(out_rows)).long()
        return cls(src, dst, tuple(bounds), num_in, num_out, identity, native)

    @property
    def kernel_volume(self) -> int:
        """Number of kernel offsets K."""
        return len(self.bounds) - 1

    def transposed(self) -> Rulebook:
        """The rulebook of the transposed convolution: every pair reversed, same offsets (spconv's pairs stay
        as they are: its inverse kernels read them backwards)."""
        return Rulebook(self.dst, self.src, self.bounds, self.num_out, self.num_in, self.identity, self.native)


class RulebookBackend(Protocol):
    """What a sparse-convolution library must provide."""

    name: str

    def submanifold(
        self, coords: torch.Tensor, spatial_shape: Triple, batch_size: int, kernel_size: Triple, dilation: Triple
    ) -> Rulebook:
        """Rulebook of a submanifold convolution: outputs at the input sites, odd kernel centred on them."""
        ...

    def strided(
        self,
        coords: torch.Tensor,
        spatial_shape: Triple,
        batch_size: int,
        kernel_size: Triple,
        stride: Triple,
        padding: Triple,
        dilation: Triple,
    ) -> tuple[Rulebook, torch.Tensor, Triple]:
        """Rulebook, output coordinates (M, 4) int32 and output spatial shape of a regular sparse
        convolution: an output site is active when its receptive field holds an active input."""
        ...


class SpconvBackend:
    """Rulebooks from spconv 2.x's indice-pair builder (the "native" gather-scatter algorithm)."""

    name = "spconv"

    def __init__(self) -> None:
        # Imported here so that the rest of the package imports without spconv.
        from spconv.core import ConvAlgo
        from spconv.cppconstants import CPU_ONLY_BUILD
        from spconv.pytorch import ops

        self._ops = ops
        self._algo = ConvAlgo.Native
        self._cpu_only = CPU_ONLY_BUILD

    def _pairs(
        self,
        coords: torch.Tensor,
        spatial_shape: Triple,
        batch_size: int,
        kernel_size: Triple,
        stride: Triple,
        padding: Triple,
        dilation: Triple,
        subm: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        device = coords.device
        if self._cpu_only and device.type != "cpu":
            coords = coords.cpu()  # the CPU wheel builds rulebooks on the CPU; the arithmetic stays on device
        out = self._ops.get_indice_pairs(
            coords.int().contiguous(), batch_size, list(spatial_shape), self._algo, list(kernel_size),
            list(stride), list(padding), list(dilation), [0, 0, 0], subm, False,
        )  # fmt: skip
        return tuple(t.to(device) for t in out)  # type: ignore[return-value]

    def submanifold(
        self, coords: torch.Tensor, spatial_shape: Triple, batch_size: int, kernel_size: Triple, dilation: Triple
    ) -> Rulebook:
        padding = tuple(k // 2 * d for k, d in zip(kernel_size, dilation))
        _, pairs, counts = self._pairs(
            coords, spatial_shape, batch_size, kernel_size, (1, 1, 1), padding, dilation, subm=True
        )
        native = (pairs, counts)
        kv = math.prod(kernel_size)
        centre = kv // 2
        counts = counts.tolist()
        n = coords.shape[0]
        none = coords.new_zeros(0, dtype=torch.int64)
        in_rows, out_rows = [none] * kv, [none] * kv  # the centre stays empty: it is the identity
        # A submanifold kernel is symmetric: offset kv-1-k holds offset k's pairs reversed. spconv's CPU
        # builder fills only the first half, so both halves are built from it on every device.
        for k in range(centre):
            src, dst = pairs[0, k, : counts[k]].long(), pairs[1, k, : counts[k]].long()
            in_rows[k], out_rows[k] = src, dst
            in_rows[kv - 1 - k], out_rows[kv - 1 - k] = dst, src
        return Rulebook.from_pairs(in_rows, out_rows, n, n, identity=centre, native=native)

    def strided(
        self,
        coords: torch.Tensor,
        spatial_shape: Triple,
        batch_size: int,
        kernel_size: Triple,
        stride: Triple,
        padding: Triple,
        dilation: Triple,
    ) -> tuple[Rulebook, torch.Tensor, Triple]:
        out_coords, pairs, counts = self._pairs(
            coords, spatial_shape, batch_size, kernel_size, stride, padding, dilation
        )
        native = (pairs, counts)
        counts = counts.tolist()
        in_rows = [pairs[0, k, :n].long() for k, n in enumerate(counts)]
        out_rows = [pairs[1, k, :n].long() for k, n in enumerate(counts)]
        out_shape = conv_output_shape(spatial_shape, kernel_size, stride, padding, dilation)
        rulebook = Rulebook.from_pairs(in_rows, out_rows, coords.shape[0], out_coords.shape[0], native=native)
        return rulebook, out_coords.int(), out_shape


def conv_output_shape(
    spatial_shape: Sequence[int], kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int],
    dilation: Sequence[int],
) -> Triple:
    """Output grid of a strided convolution, as for a dense ``torch.nn.Conv3d``."""
    return tuple(  # type: ignore[return-value]
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(spatial_shape, kernel_size, stride, padding, dilation)
    )


BACKENDS: dict[str, type] = {"spconv": SpconvBackend}
_INSTANCES: dict[str, RulebookBackend] = {}


def get_backend(name: str) -> RulebookBackend:
    """The rulebook backend registered under ``name`` (created on first use).

    Raises:
        ValueError: for an unknown name.
    """
    if name not in _INSTANCES:
        if name not in BACKENDS:
            raise ValueError(f"unknown sparse backend '{name}'; known: {', '.join(sorted(BACKENDS))}")
        _INSTANCES[name] = BACKENDS[name]()
    return _INSTANCES[name]
