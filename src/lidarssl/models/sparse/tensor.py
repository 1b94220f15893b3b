"""The sparse voxel tensor every sparse layer takes and returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

__all__ = ["KERNELS", "SparseTensor", "cat"]

Triple = tuple[int, int, int]
#: who computes the convolutions: ``auto`` (spconv's fused kernels on CUDA, ours elsewhere), ``lidarssl``
#: (our gather / product / scatter everywhere) or ``spconv`` (spconv's everywhere; its CPU build has no backward)
KERNELS = ("auto", "lidarssl", "spconv")


@dataclass(frozen=True, eq=False)
class SparseTensor:
    """Features on the active sites of a batch of 3D grids.

    Coordinates follow spconv and OpenPCDet: one row ``(batch, z, y, x)`` per active site, in a grid of
    ``spatial_shape = (Z, Y, X)``. For cylindrical grids the three axes are ``(z, phi, rho)``.

    Two caches make rulebooks (which input site feeds which output site) computed once per forward:

    * ``site_cache``: rulebooks of this coordinate set (submanifold convolutions, strided convolutions
      out of it, point lookups). Every tensor sharing these coordinates shares the dict.
    * ``indice_dict``: network-wide, shared by every tensor derived from the input; a strided
      :func:`~lidarssl.models.sparse.functional.conv3d` with an ``indice_key`` records itself there so
      that the :func:`~lidarssl.models.sparse.functional.conv_transpose3d` with the same key can invert it.

    Attributes:
        features: (N, C) float features, one row per active site.
        coords: (N, 4) int32 ``(batch, z, y, x)`` of each site, unique.
        spatial_shape: (Z, Y, X) bounds of the grid; coordinates lie in ``[0, shape)``.
        batch_size: B; batch indices lie in ``[0, B)``.
        stride: (z, y, x) size of one site in input voxels (1 for the input, 2 after a stride-2 conv).
        backend: name of the rulebook backend (see :mod:`lidarssl.models.sparse.backend`).
        kernels: who computes the convolutions, one of :data:`KERNELS`.
    """

    features: torch.Tensor
    coords: torch.Tensor
    spatial_shape: Triple
    batch_size: int
    stride: Triple = (1, 1, 1)
    backend: str = "spconv"
    kernels: str = "auto"
    site_cache: dict[Any, Any] = field(default_factory=dict, repr=False)
    indice_dict: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.features.dim() != 2 or self.coords.shape != (self.features.shape[0], 4):
            raise ValueError(
                f"SparseTensor needs features (N, C) and coords (N, 4), got {tuple(self.features.shape)} "
                f"and {tuple(self.coords.shape)}"
            )
        if self.kernels not in KERNELS:
            raise ValueError(f"sparse kernels must be one of {', '.join(KERNELS)}, got {self.kernels!r}")
        object.__setattr__(self, "spatial_shape", tuple(int(s) for s in self.spatial_shape))
        object.__setattr__(self, "stride", tuple(int(s) for s in self.stride))

    @property
    def num_channels(self) -> int:
        """C."""
        return self.features.shape[1]

    def replace_features(self, features: torch.Tensor) -> SparseTensor:
        """The same sites (and caches) with new (N, C') features."""
        if features.shape[0] != self.features.shape[0]:
            raise ValueError(f"expected {self.features.shape[0]} feature rows, got {features.shape[0]}")
        return replace(self, features=features)

    def dense(self) -> torch.Tensor:
        """(B, C, Z, Y, X) dense grid, zero at inactive sites (OpenPCDet's ``dense()``)."""
        b, (z, y, x), c = self.batch_size, self.spatial_shape, self.num_channels
        flat = linear_index(self.coords, self.spatial_shape)
        out = self.features.new_zeros(b * z * y * x, c).index_copy(0, flat, self.features)
        return out.view(b, z, y, x, c).permute(0, 4, 1, 2, 3)


def linear_index(coords: torch.Tensor, spatial_shape: Sequence[int]) -> torch.Tensor:
    """(N,) int64 row-major index of ``(batch, z, y, x)`` rows in a (B, Z, Y, X) grid."""
    c = coords.long()
    z, y, x = spatial_shape
    return ((c[:, 0] * z + c[:, 1]) * y + c[:, 2]) * x + c[:, 3]


def cat(tensors: Sequence[SparseTensor]) -> SparseTensor:
    """Concatenate the channels of tensors defined on the same sites (U-Net skip connections).

    Raises:
        ValueError: when the tensors do not share their coordinates.
    """
    first = tensors[0]
    for t in tensors[1:]:
        same = t.coords is first.coords or (
            t.coords.shape == first.coords.shape and bool(torch.equal(t.coords, first.coords))
        )
        if not same:
            raise ValueError("sparse cat needs tensors on the same sites; were they built from different convs?")
    return first.replace_features(torch.cat([t.features for t in tensors], dim=1))
