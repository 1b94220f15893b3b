"""Numpy preprocessing and collate for WaffleIron (runs in DataLoader workers).

One scan becomes: strict field-of-view crop -> voxel subsampling (one point per voxel) -> input features
``[intensity, x, y, z, radius]`` -> one grid cell per point on each projection plane -> the k nearest
neighbours of each point. Batches are concatenated, not padded: neighbour and cell indices are offset
so that every sample owns its own rows and its own grids (see :meth:`WaffleIronPrep.collate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from lidarssl.data.geometry import voxelize
from lidarssl.errors import ConfigError, DataError
from lidarssl.models.backbones.base import Batch, Sample, collate_common

#: Names of the input feature channels, in order.
FEATURE_NAMES = ("intensity", "x", "y", "z", "radius")

# ScaLR's common grid for pretraining and downstream: +-64 m in xy, +-8 m in z, 0.5 m cells.
DEFAULT_FOV_MIN = (-64.0, -64.0, -8.0)
DEFAULT_FOV_MAX = (64.0, 64.0, 8.0)
DEFAULT_GRID_SHAPES = ((256, 256), (256, 32), (256, 32))
DEFAULT_DIM_PROJ = (2, 1, 0)


def plane_axes(dropped_axis: int) -> tuple[int, int]:
    """The two axes (a, b) of the plane that projects ``dropped_axis`` away: 2 -> (x, y), 1 -> (x, z), 0 -> (y, z)."""
    a, b = (ax for ax in range(3) if ax != dropped_axis)
    return a, b


@dataclass(frozen=True)
class WaffleIronPrep:
    """WaffleIron preprocessing of one scan, and the collate of a batch.

    Attributes:
        fov_min: (x, y, z) lower corner of the field of view in metres; points must lie strictly inside.
        fov_max: (x, y, z) upper corner of the field of view.
        grid_shapes: (H, W) of the 2D grid of each projection plane, in ``dim_proj`` order.
        dim_proj: axis projected away by each plane (2: xy plane, 1: xz, 0: yz); block d uses plane d % len.
        voxel_size: voxel edge in metres for subsampling, or ``None`` to keep every point.
        num_neighbors: K neighbours per point (the kNN returns K + 1 with the point itself first).
        intensity_mean: dataset intensity mean, subtracted from the intensity feature.
        intensity_std: dataset intensity standard deviation, dividing the intensity feature.
    """

    fov_min: tuple[float, float, float] = DEFAULT_FOV_MIN
    fov_max: tuple[float, float, float] = DEFAULT_FOV_MAX
    grid_shapes: tuple[tuple[int, int], ...] = DEFAULT_GRID_SHAPES
    dim_proj: tuple[int, ...] = DEFAULT_DIM_PROJ
    voxel_size: float | None = 0.1
    num_neighbors: int = 16
    intensity_mean: float = 0.0
    intensity_std: float = 1.0

    def __post_init__(self) -> None:
        # Normalise lists from YAML into tuples so the object stays hashable and picklable.
        object.__setattr__(self, "fov_min", tuple(float(v) for v in self.fov_min))
        object.__setattr__(self, "fov_max", tuple(float(v) for v in self.fov_max))
        object.__setattr__(self, "grid_shapes", check_grid_shapes(self.grid_shapes))
        object.__setattr__(self, "dim_proj", tuple(int(v) for v in self.dim_proj))
        if len(self.fov_min) != 3 or len(self.fov_max) != 3:
            raise ConfigError(f"fov_min and fov_max must be (x, y, z) triples, got {self.fov_min} and {self.fov_max}")
        for axis, lo, hi in zip("xyz", self.fov_min, self.fov_max):
            if not lo < hi:
                raise ConfigError(
                    f"field of view is empty along {axis}: fov_min {lo} >= fov_max {hi} "
                    f"(fov_min={list(self.fov_min)}, fov_max={list(self.fov_max)})"
                )
        if len(self.dim_proj) != len(self.grid_shapes) or any(d not in (0, 1, 2) for d in self.dim_proj):
            raise ConfigError(
                f"dim_proj must list one projected axis (0, 1 or 2) per grid, got dim_proj={list(self.dim_proj)} "
                f"for {len(self.grid_shapes)} grids"
            )
        if self.voxel_size is not None and not self.voxel_size > 0:
            raise ConfigError(f"voxel_size must be positive (or None to keep every point), got {self.voxel_size}")
        if self.num_neighbors < 1:
            raise ConfigError(f"num_neighbors must be at least 1, got {self.num_neighbors}")
        if not self.intensity_std > 0:
            raise ConfigError(f"intensity_std must be positive, got {self.intensity_std}")

    @property
    def cells_per_grid(self) -> tuple[int, ...]:
        """H * W of each plane's grid."""
        return tuple(h * w for h, w in self.grid_shapes)

    def __call__(self, points: np.ndarray, intensity: np.ndarray, rng: np.random.Generator | None = None) -> Sample:
        """Preprocess one scan (see :class:`~lidarssl.models.backbones.base.Preprocessor`).

        Returns:
            ``feats`` (M, 5) float32 ``[intensity, x, y, z, radius]``; ``cells`` (M, n_planes) int64 cell
            of each point on each plane's grid (row * W + col); ``neighbors`` (M, K + 1) int64 with the point
            itself in column 0; ``kept`` (M,) int64 sorted indices into ``points``.

        Raises:
            DataError: on malformed inputs, or when no point lies inside the field of view.
        """
        points = np.asarray(points)
        intensity = np.asarray(intensity)
        if points.ndim != 2 or points.shape[1] != 3 or len(intensity) != len(points):
            raise DataError(
                f"WaffleIron preprocessing expects points (N, 3) and intensity (N,), "
                f"got {points.shape} and {intensity.shape}"
            )
        lo, hi = np.asarray(self.fov_min), np.asarray(self.fov_max)
        kept = np.flatnonzero(np.all((points > lo) & (points < hi), axis=1))
        if len(kept) == 0:
            raise DataError(
                f"no point of the scan ({len(points)} points) lies strictly inside the field of view "
                f"fov_min={list(self.fov_min)}, fov_max={list(self.fov_max)}; check the FOV and the point frame"
            )
        # Crop before subsampling: cheaper, and a voxel that straddles the FOV border keeps an inside point.
        if self.voxel_size is not None:
            voxels = voxelize(points[kept], self.voxel_size, mode="first" if rng is None else "random", rng=rng)
            kept = kept[np.sort(voxels.kept)]
        xyz = points[kept].astype(np.float32, copy=False)
        feats = np.empty((len(kept), len(FEATURE_NAMES)), dtype=np.float32)
        feats[:, 0] = (intensity[kept] - self.intensity_mean) / self.intensity_std
        feats[:, 1:4] = xyz
        feats[:, 4] = np.linalg.norm(xyz, axis=1)
        return {
            "feats": feats,
            "cells": self.cells(xyz),
            "neighbors": knn_with_self(xyz, self.num_neighbors),
            "kept": kept.astype(np.int64, copy=False),
        }

    def cells(self, xyz: np.ndarray) -> np.ndarray:
        """(M, n_planes) int64 flat cell index ``row * W + col`` of each point on each plane's grid."""
        xyz = xyz.astype(np.float64)
        out = np.empty((len(xyz), len(self.dim_proj)), dtype=np.int64)
        lo, hi = np.asarray(self.fov_min), np.asarray(self.fov_max)
        for j, (dropped, shape) in enumerate(zip(self.dim_proj, self.grid_shapes)):
            q = []
            for axis, size in zip(plane_axes(dropped), shape):
                res = (hi[axis] - lo[axis]) / size
                # Clip guards against a point a hair below fov_max rounding up to index == size.
                q.append(np.clip(((xyz[:, axis] - lo[axis]) / res).astype(np.int64), 0, size - 1))
            out[:, j] = q[0] * shape[1] + q[1]
        return out

    def collate(self, samples: Sequence[Sample]) -> Batch:
        """Concatenate samples into one batch (no padding).

        Returns:
            :data:`~lidarssl.batch.COMMON_KEYS` plus ``feats`` (sum M, 5) float32,
            ``neighbors`` (sum M, K + 1) int64 row indices into the batch, and ``cells`` (sum M, n_planes) int64 with
            sample b's cells offset by ``b * H * W`` so each sample owns its own grid on every plane.
        """
        batch = collate_common(samples)
        starts = batch["offsets"][:-1].numpy()
        cells_per_grid = np.asarray(self.cells_per_grid, dtype=np.int64)
        batch["feats"] = torch.from_numpy(np.concatenate([s["feats"] for s in samples]))
        batch["neighbors"] = torch.from_numpy(np.concatenate([s["neighbors"] + st for s, st in zip(samples, starts)]))
        batch["cells"] = torch.from_numpy(
            np.concatenate([s["cells"] + b * cells_per_grid for b, s in enumerate(samples)])
        )
        return batch


def knn_with_self(xyz: np.ndarray, k: int) -> np.ndarray:
    """(M, k + 1) int64 indices of the k nearest neighbours of each point, the point itself in column 0.

    Duplicated points may come back in any order, so column 0 is forced to the point itself; with fewer
    than k + 1 points the missing neighbours also point at the point itself (a zero relative feature).
    """
    m = len(xyz)
    _, nbr = cKDTree(xyz).query(xyz, k=k + 1)
    nbr = np.asarray(nbr, dtype=np.int64).reshape(m, k + 1)
    own = np.arange(m, dtype=np.int64)
    nbr[nbr >= m] = np.broadcast_to(own[:, None], nbr.shape)[nbr >= m]
    first = nbr[:, 0].copy()
    nbr[:, 0] = own
    rest = nbr[:, 1:]  # a view: assigning through it edits nbr
    is_self = rest == own[:, None]
    rest[is_self] = np.broadcast_to(first[:, None], rest.shape)[is_self]
    return nbr


def check_grid_shapes(grid_shapes: Sequence[Sequence[int]]) -> tuple[tuple[int, int], ...]:
    """Grid shapes as a tuple of (H, W) pairs of positive integers, one per plane.

    Raises:
        ConfigError: when there is no grid, a grid is not a pair, or a size is not a positive integer.
    """
    try:
        shapes = tuple((int(h), int(w)) for h, w in grid_shapes)
        valid = len(shapes) > 0 and all(
            h > 0 and w > 0 and (h, w) == tuple(given) for (h, w), given in zip(shapes, grid_shapes)
        )
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ConfigError(
            f"grid_shapes must be a non-empty list of [H, W] pairs of positive integers, one per plane, "
            f"got {grid_shapes!r}"
        )
    return shapes
