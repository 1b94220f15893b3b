"""What the sparse-convolution backbones share: numpy preprocessing (run in DataLoader workers), collate,
the batch-to-:class:`SparseTensor` step and small preset helpers.

One scan becomes: grid coordinates (cartesian, or cylindrical (rho, phi, z)) -> crop to the grid range
-> voxels (:func:`lidarssl.data.geometry.voxelize`) -> one feature row per voxel, the mean of its points
or one representative point. Every point inside the range is kept: sparse networks compute on voxels
and hand each point its voxel's features (or, for SPVCNN and VoxelNet, features interpolated at the
point), so ``kept`` is "inside the grid", not "one point per voxel".

Axis order: options are given in the input's order (x, y, z), or (rho, phi, z) for cylindrical grids;
the arrays for the network use spconv's (z, y, x) order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from lidarssl.data.geometry import voxelize
from lidarssl.errors import ConfigError, DataError
from lidarssl.models.backbones.base import Batch, Sample, collate_common
from lidarssl.models.sparse import SparseTensor
from lidarssl.models.sparse.tensor import KERNELS

__all__ = [
    "FEATURE_NAMES", "PREP_OPTIONS", "SparsePrep", "kernels_option", "layer_of_prefix", "scaled", "sparse_input", "split_overrides",
]  # fmt: skip

#: Per-point input features a preset may ask for.
FEATURE_NAMES = ("intensity", "x", "y", "z", "radius")

# Largest point_coords fraction inside a voxel: float32 rounding must never carry a point into the next
# voxel, because floor(point_coords) is how the networks find a point's voxel.
_MAX_FRACTION = 1.0 - 2.0**-10


@dataclass(frozen=True)
class SparsePrep:
    """Voxelisation of one scan for a sparse network, and the collate of a batch.

    Attributes:
        voxel_size: voxel edge per axis: metres for x, y, z and rho, degrees for phi.
        range_min: lower corner of the grid, in the same axes and units; points below are cropped.
        range_max: upper corner of the grid; points at or above are cropped. ``(max - min) / size``
            must be a whole number of voxels on every axis.
        coordinates: ``"cartesian"`` (x, y, z) or ``"cylindrical"`` (rho, phi, z) with phi in degrees,
            wrapped into ``[range_min[1], range_min[1] + 360)``.
        features: per-point input channels, a subset of :data:`FEATURE_NAMES` in any order.
        voxel_features: ``"mean"`` of the voxel's points, or ``"first"``: one point's (the lowest index
            in evaluation, a random one when the preprocessing gets an ``rng``).
        intensity_mean: subtracted from the intensity feature.
        intensity_std: divides the intensity feature.
    """

    voxel_size: tuple[float, float, float] = (0.1, 0.1, 0.1)
    range_min: tuple[float, float, float] = (-51.2, -51.2, -5.0)
    range_max: tuple[float, float, float] = (51.2, 51.2, 3.0)
    coordinates: str = "cartesian"
    features: tuple[str, ...] = ("intensity",)
    voxel_features: str = "mean"
    intensity_mean: float = 0.0
    intensity_std: float = 1.0

    def __post_init__(self) -> None:
        for name in ("voxel_size", "range_min", "range_max"):
            value = getattr(self, name)
            try:
                triple = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                triple = ()
            if len(triple) != 3 or not all(math.isfinite(v) for v in triple):
                raise ConfigError(f"{name} must be three finite numbers, got {value!r}")
            object.__setattr__(self, name, triple)
        object.__setattr__(self, "features", tuple(self.features))
        if self.coordinates not in ("cartesian", "cylindrical"):
            raise ConfigError(f"coordinates must be 'cartesian' or 'cylindrical', got {self.coordinates!r}")
        if self.voxel_features not in ("mean", "first"):
            raise ConfigError(f"voxel_features must be 'mean' or 'first', got {self.voxel_features!r}")
        unknown = [f for f in self.features if f not in FEATURE_NAMES]
        if not self.features or unknown or len(set(self.features)) != len(self.features):
            raise ConfigError(
                f"features must be distinct names from {list(FEATURE_NAMES)}, got {list(self.features)}"
            )
        if not self.intensity_std > 0:
            raise ConfigError(f"intensity_std must be positive, got {self.intensity_std}")
        if any(s <= 0 for s in self.voxel_size):
            raise ConfigError(f"voxel_size must be positive, got {list(self.voxel_size)}")
        axes = ("rho", "phi", "z") if self.coordinates == "cylindrical" else ("x", "y", "z")
        for axis, lo, hi, size in zip(axes, self.range_min, self.range_max, self.voxel_size):
            cells = (hi - lo) / size
            if not hi > lo or abs(cells - round(cells)) > 1e-6 * max(1.0, cells):
                raise ConfigError(
                    f"grid range along {axis} [{lo}, {hi}) must be a positive whole number of {size} voxels "
                    f"(range_min={list(self.range_min)}, range_max={list(self.range_max)}, "
                    f"voxel_size={list(self.voxel_size)})"
                )
        if self.coordinates == "cylindrical" and self.range_max[1] - self.range_min[1] > 360.0 + 1e-9:
            raise ConfigError(f"the phi range spans more than 360 degrees: {self.range_min[1]}..{self.range_max[1]}")

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """Voxels per axis, in the options' order (x, y, z) or (rho, phi, z)."""
        return tuple(  # type: ignore[return-value]
            round((hi - lo) / s) for lo, hi, s in zip(self.range_min, self.range_max, self.voxel_size)
        )

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """Voxels per axis in the networks' (z, y, x) order."""
        return self.grid_shape[::-1]  # type: ignore[return-value]

    @property
    def in_channels(self) -> int:
        """Number of input feature channels."""
        return len(self.features)

    def grid_coordinates(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) float64 continuous position of each point in voxel units from ``range_min``, options' order."""
        p = np.asarray(points, dtype=np.float64)
        if self.coordinates == "cylindrical":
            lo_phi = self.range_min[1]
            phi = lo_phi + np.mod(np.degrees(np.arctan2(p[:, 1], p[:, 0])) - lo_phi, 360.0)
            p = np.column_stack([np.hypot(p[:, 0], p[:, 1]), phi, p[:, 2]])
        return (p - np.asarray(self.range_min)) / np.asarray(self.voxel_size)

    def point_features(self, points: np.ndarray, intensity: np.ndarray) -> np.ndarray:
        """(N, C) float32 input features of points, in :attr:`features` order."""
        columns = {
            "intensity": lambda: (intensity - self.intensity_mean) / self.intensity_std,
            "x": lambda: points[:, 0],
            "y": lambda: points[:, 1],
            "z": lambda: points[:, 2],
            "radius": lambda: np.linalg.norm(points, axis=1),
        }
        return np.column_stack([columns[name]() for name in self.features]).astype(np.float32)

    def __call__(self, points: np.ndarray, intensity: np.ndarray, rng: np.random.Generator | None = None) -> Sample:
        """Preprocess one scan (see :class:`~lidarssl.models.backbones.base.Preprocessor`).

        Returns:
            ``voxel_coords`` (V, 3) int32 (z, y, x); ``voxel_feats`` (V, C) float32; ``point2voxel`` (M,)
            int64 voxel of each kept point; ``point_coords`` (M, 3) float32 continuous (z, y, x) position
            in voxel units, whose floor is the point's voxel; ``kept`` (M,) int64 sorted indices of the
            points inside the grid; ``voxel_point`` (V,) int64 row among the kept points of each voxel's
            representative (the point whose features a ``first`` voxel takes; SLidR's ``indexes``).

        Raises:
            DataError: on malformed inputs, or when no point lies inside the grid range.
        """
        points = np.asarray(points)
        intensity = np.asarray(intensity)
        if points.ndim != 2 or points.shape[1] != 3 or intensity.shape != (len(points),):
            raise DataError(
                "sparse preprocessing expects points (N, 3) and intensity (N,), "
                f"got {points.shape} and {intensity.shape}"
            )
        grid = self.grid_coordinates(points)
        with np.errstate(invalid="ignore"):  # NaN points compare False and are cropped
            inside = np.all((grid >= 0) & (grid < np.asarray(self.grid_shape)), axis=1)
        kept = np.flatnonzero(inside)
        if len(kept) == 0:
            raise DataError(
                f"no point of the scan ({len(points)} points) lies inside the {self.coordinates} voxel grid "
                f"range_min={list(self.range_min)}, range_max={list(self.range_max)}; "
                "check the grid range and the point frame"
            )
        grid = grid[kept]
        # Unit voxels on grid coordinates: voxelize's floor is exactly the crop's floor above.
        vox = voxelize(grid, 1.0, mode="first" if rng is None or self.voxel_features == "mean" else "random", rng=rng)
        feats = self.point_features(points[kept].astype(np.float64), intensity[kept].astype(np.float64))
        if self.voxel_features == "mean":
            counts = np.bincount(vox.inverse, minlength=len(vox))
            voxel_feats = np.column_stack(
                [np.bincount(vox.inverse, weights=feats[:, c], minlength=len(vox)) for c in range(feats.shape[1])]
            ) / counts[:, None]
        else:
            voxel_feats = feats[vox.kept]
        cell = np.floor(grid)
        point_coords = cell + np.minimum(grid - cell, _MAX_FRACTION)
        return {
            "voxel_coords": np.ascontiguousarray(vox.coords[:, ::-1], dtype=np.int32),
            "voxel_feats": voxel_feats.astype(np.float32),
            "point2voxel": vox.inverse.astype(np.int64, copy=False),
            "point_coords": np.ascontiguousarray(point_coords[:, ::-1], dtype=np.float32),
            "kept": kept.astype(np.int64, copy=False),
            "voxel_point": vox.kept.astype(np.int64, copy=False),
        }

    def collate(self, samples: Sequence[Sample]) -> Batch:
        """Concatenate samples into one batch (no padding).

        Returns:
            :data:`~lidarssl.batch.COMMON_KEYS` plus ``voxel_coords`` (sum V, 4) int32
            (batch, z, y, x), ``voxel_feats`` (sum V, C) float32, ``point2voxel`` (sum M,) int64 rows into
            the batch's voxels, ``point_coords`` (sum M, 3) float32 and ``voxel_point`` (sum V,) int64 rows
            of the voxels' representative points.
        """
        batch = collate_common(samples)
        for i, s in enumerate(samples):
            if "voxel_coords" not in s:
                raise DataError(f"sample {i} has no 'voxel_coords'; was it built by a sparse backbone's preprocessing?")
        sizes = [len(s["voxel_coords"]) for s in samples]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        coords = np.concatenate([s["voxel_coords"] for s in samples])
        batch_col = np.repeat(np.arange(len(samples), dtype=np.int32), sizes)
        batch["voxel_coords"] = torch.from_numpy(np.column_stack([batch_col, coords]).astype(np.int32))
        batch["voxel_feats"] = torch.from_numpy(np.concatenate([s["voxel_feats"] for s in samples]))
        point2voxel = [s["point2voxel"] + start for s, start in zip(samples, starts)]
        batch["point2voxel"] = torch.from_numpy(np.concatenate(point2voxel))
        batch["point_coords"] = torch.from_numpy(np.concatenate([s["point_coords"] for s in samples]))
        point_starts = np.concatenate([[0], np.cumsum([len(s["point2voxel"]) for s in samples])[:-1]])
        batch["voxel_point"] = torch.from_numpy(np.concatenate(
            [s["voxel_point"] + start for s, start in zip(samples, point_starts)]).astype(np.int64))
        return batch


def sparse_input(batch: Batch, spatial_shape: Sequence[int], in_channels: int, kernels: str = "auto") -> SparseTensor:
    """The voxels of a batch from :meth:`SparsePrep.collate` as a :class:`SparseTensor`.

    Args:
        batch: the collated batch.
        spatial_shape: (Z, Y, X) grid of the network, at least the preprocessing's grid.
        in_channels: channels the network expects.
        kernels: who computes the convolutions (:data:`~lidarssl.models.sparse.tensor.KERNELS`).

    Raises:
        DataError: when the batch lacks the sparse keys, or its voxels or channels do not fit the network.
    """
    missing = [k for k in ("voxel_coords", "voxel_feats", "point2voxel", "point_coords") if k not in batch]
    if missing:
        raise DataError(f"batch has no {missing}; build it with the collate of the same sparse backbone preset")
    coords, feats = batch["voxel_coords"], batch["voxel_feats"]
    if feats.shape[1] != in_channels:
        raise DataError(f"batch has {feats.shape[1]} voxel feature channels, the network expects {in_channels}")
    top = coords[:, 1:].amax(0) if len(coords) else None
    if top is not None and bool((top >= torch.tensor(spatial_shape, device=coords.device)).any()):
        raise DataError(
            f"voxel coordinates reach {top.tolist()} outside the network grid {list(spatial_shape)}; "
            "build the batch with the preprocessing of the same preset"
        )
    batch_size = int(batch["offsets"].shape[0] - 1)
    return SparseTensor(feats, coords, tuple(spatial_shape), batch_size, kernels=kernels)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ preset helpers

#: Preset options that belong to the preprocessing.
PREP_OPTIONS = tuple(f.name for f in fields(SparsePrep))


def kernels_option(kernels: str) -> str:
    """The ``kernels`` option of a sparse backbone, checked (:data:`~lidarssl.models.sparse.tensor.KERNELS`)."""
    if kernels not in KERNELS:
        raise ConfigError(f"backbone option kernels must be one of {', '.join(KERNELS)}, got {kernels!r}")
    return kernels


def scaled(channels: Sequence[int], width: float) -> tuple[int, ...]:
    """Channel counts times ``width``, at least 1."""
    if not width > 0:
        raise ConfigError(f"width must be positive, got {width}")
    return tuple(max(1, round(c * width)) for c in channels)


def split_overrides(
    name: str, overrides: dict[str, object], model_options: Sequence[str], prep_defaults: dict[str, object]
) -> tuple[SparsePrep, dict[str, object]]:
    """The preprocessing (preset defaults updated by overrides) and the model overrides of a preset.

    Raises:
        ConfigError: on an option neither the model nor the preprocessing has.
    """
    unknown = sorted(set(overrides) - set(model_options) - set(PREP_OPTIONS))
    if unknown:
        options = ", ".join(sorted((*model_options, *PREP_OPTIONS)))
        raise ConfigError(f"backbone '{name}' has no option {unknown}; options: {options}")
    prep_options = {**prep_defaults, **{k: v for k, v in overrides.items() if k in PREP_OPTIONS}}
    prep = SparsePrep(**prep_options)  # type: ignore[arg-type]
    return prep, {k: v for k, v in overrides.items() if k in model_options}


def layer_of_prefix(table: Sequence[tuple[str, int]], name: str, owner: str) -> int:
    """Layer of parameter ``name`` from (module prefix, layer) pairs; the longest matching prefix wins.

    Raises:
        ValueError: when no prefix matches (not a parameter of this backbone).
    """
    best = max((p for p, _ in table if name == p or name.startswith(p + ".")), key=len, default=None)
    if best is None:
        raise ValueError(f"'{name}' is not a parameter name of {owner}")
    return dict(table)[best]
