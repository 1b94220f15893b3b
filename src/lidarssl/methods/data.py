"""Pretraining samples: one scan, augmented once, turned into the backbone's input plus what a method needs.

:class:`PretrainSamples` draws the point augmentation (a (4, 4) affine, so cameras and rays can follow it),
optionally drops a cuboid of points (SLidR), runs the backbone's preprocessing, and hands the result to the
method's **sample builders**: picklable objects that run in DataLoader workers and add arrays to the sample
(point-pixel pairs and images, occupancy queries, ...) and later collate them. Every random draw comes from a
generator seeded with ``(seed, epoch, index)``, as in segmentation, so data order and augmentations are fixed
by the seed and a resumed run sees the batches an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from lidarssl.data.pairing import PairingConfig, drop_cuboid, keeps_pairs, pair_views
from lidarssl.data.scan import Scan
from lidarssl.data.stats import Dataset
from lidarssl.data.transforms import PointAugment, apply_affine
from lidarssl.errors import DataError
from lidarssl.models.backbones.base import Batch, Preprocessor, Sample

__all__ = ["AugmentedScan", "SampleBuilder", "PretrainSamples", "PretrainCollate", "PairBuilder", "concat_rows"]


@dataclass
class AugmentedScan:
    """A scan as the backbone saw it.

    Attributes:
        scan: the scan as read, in its own geometry.
        A: (4, 4) affine augmentation of the points (``points = A @ scan.points``).
        points: (N, 3) augmented points, all of them (also those the backbone dropped).
        kept: (M,) indices into ``scan.points`` of the backbone's kept points, in feature-row order.
        row_of_point: (N,) feature row of each scan point, -1 for points the backbone did not keep.
    """

    scan: Scan
    A: np.ndarray
    points: np.ndarray
    kept: np.ndarray
    row_of_point: np.ndarray


class SampleBuilder(Protocol):
    """What a method adds to each sample (in DataLoader workers) and to each batch; must pickle."""

    def __call__(self, view: AugmentedScan, rng: np.random.Generator) -> Sample: ...

    def collate(self, samples: Sequence[Sample], batch: Batch) -> None: ...


class PretrainSamples(TorchDataset):
    """Scans of a dataset as pretraining samples (labels, if the reader gives any, are never used).

    Args:
        dataset: a reader or mixture, indexed by integers.
        prep: the backbone's preprocessing.
        builders: the method's sample builders, applied in order.
        seed: seed of every random draw.
        augment: point augmentation, or ``None``.
        drop_cuboid: ``max_side`` of SLidR's DropCuboids (a fraction of the cloud's extent), or ``None``.
        drop_min_pairs: a drop is undone when a camera would keep fewer points than this (SLidR: 1024).
    """

    def __init__(self, dataset: Dataset, prep: Preprocessor, builders: Sequence[SampleBuilder], seed: int = 0,
                 augment: PointAugment | None = None, drop_cuboid: float | None = None, drop_min_pairs: int = 0) -> None:
        self.dataset, self.prep, self.builders, self.seed = dataset, prep, list(builders), seed
        self.augment, self.drop_cuboid, self.drop_min_pairs = augment, drop_cuboid, drop_min_pairs

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int] | int) -> Sample:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        if hasattr(self.dataset, "set_epoch"):  # a mixture's per-epoch draw, a function of (seed, epoch) only
            self.dataset.set_epoch(epoch)
        scan = self.dataset[index]
        rng = np.random.default_rng([self.seed, epoch, index])
        A = self.augment.matrix(rng) if self.augment is not None else np.eye(4)
        points = apply_affine(A, scan.points)
        subset = np.arange(len(points))
        if self.drop_cuboid:
            keep = drop_cuboid(points, rng, self.drop_cuboid)
            if self.drop_min_pairs == 0 or keeps_pairs(scan, keep, self.drop_min_pairs):
                subset = np.flatnonzero(keep)
        sample = self.prep(points[subset], scan.intensity[subset], rng)
        kept = subset[sample["kept"]]
        sample["kept"] = kept
        row_of_point = np.full(len(points), -1, np.int64)
        row_of_point[kept] = np.arange(len(kept))
        view = AugmentedScan(scan=scan, A=A, points=points, kept=kept, row_of_point=row_of_point)
        for builder in self.builders:
            sample.update(builder(view, rng))
        return sample


class PretrainCollate:
    """The backbone's collate, then each builder's."""

    def __init__(self, prep: Preprocessor, builders: Sequence[SampleBuilder]) -> None:
        self.prep, self.builders = prep, list(builders)

    def __call__(self, samples: Sequence[Sample]) -> Batch:
        batch = self.prep.collate(samples)
        for builder in self.builders:
            builder.collate(samples, batch)
        return batch


def concat_rows(samples: Sequence[Sample], key: str, offsets: Sequence[int] | np.ndarray | None = None) -> torch.Tensor:
    """Concatenate ``key`` over samples, adding ``offsets[i]`` to sample i's values (row or view indices)."""
    parts = [s[key] if offsets is None else s[key] + offsets[i] for i, s in enumerate(samples)]
    return torch.from_numpy(np.ascontiguousarray(np.concatenate(parts)))


class PairBuilder:
    """Point-pixel pairs, augmented images and, when asked, superpixels or cached teacher features.

    Adds to each sample ``images`` (V, H, W, 3) uint8, ``K`` (V, 3, 3), ``lidar_to_cam`` (V, 4, 4) from the
    augmented points, ``pair_row`` (P,) feature row of each paired point (pairs of points the backbone dropped
    are left out), ``pair_view`` (P,) and ``pair_uv`` (P, 2); optionally ``superpixels`` (V, H, W) and
    ``teacher_maps`` (V, C, h, w). In the batch, rows and views are offset to index the whole batch, and
    ``view_batch`` (sum V,) says which scan each view belongs to.

    Args:
        config: pairing settings.
        superpixels: a superpixel source with ``get(scan, camera_index) -> (H, W) uint16`` (cached or computed).
        teacher_cache: a :class:`~lidarssl.methods.teacher_cache.TeacherFeatureCache`; only for images that are
            not randomly augmented (the cache holds the features of the deterministic image).
    """

    def __init__(self, config: PairingConfig, superpixels=None, teacher_cache=None) -> None:
        if teacher_cache is not None and config.augments_images:
            raise DataError("cached teacher features need deterministic images: set pairing.crop_size: null and "
                            "pairing.flip: 0, or compute teacher features online (no teacher cache)")
        self.config, self.superpixels, self.teacher_cache = config, superpixels, teacher_cache

    def __call__(self, view: AugmentedScan, rng: np.random.Generator) -> Sample:
        scan = view.scan
        sps = None
        if self.superpixels is not None:
            sps = [self.superpixels.get(scan, c) for c in range(len(scan.cameras))]
        views = pair_views(scan, self.config, view.A, rng, superpixels=sps)
        rows = view.row_of_point[views.point]
        keep = rows >= 0
        sample = {"images": views.images, "K": views.K.astype(np.float32),
                  "lidar_to_cam": views.lidar_to_cam.astype(np.float32), "pair_row": rows[keep],
                  "pair_view": views.view[keep], "pair_uv": views.uv[keep].astype(np.float32)}
        if views.superpixels is not None:
            sample["superpixels"] = views.superpixels
        if self.teacher_cache is not None:
            sample["teacher_maps"] = np.stack([self.teacher_cache.load_for(scan, name) for name in views.names])
        return sample

    def collate(self, samples: Sequence[Sample], batch: Batch) -> None:
        n_views = np.array([len(s["images"]) for s in samples])
        view_offsets = np.concatenate([[0], np.cumsum(n_views)[:-1]])
        batch["images"] = torch.from_numpy(np.concatenate([s["images"] for s in samples]))
        batch["K"] = concat_rows(samples, "K")
        batch["lidar_to_cam"] = concat_rows(samples, "lidar_to_cam")
        batch["view_batch"] = torch.from_numpy(np.repeat(np.arange(len(samples)), n_views))
        batch["pair_row"] = concat_rows(samples, "pair_row", batch["offsets"].numpy())
        batch["pair_view"] = concat_rows(samples, "pair_view", view_offsets)
        batch["pair_uv"] = concat_rows(samples, "pair_uv")
        if "superpixels" in samples[0]:
            batch["superpixels"] = torch.from_numpy(np.concatenate([s["superpixels"] for s in samples]).astype(np.int32))
        if "teacher_maps" in samples[0]:
            batch["teacher_maps"] = torch.from_numpy(np.concatenate([s["teacher_maps"] for s in samples]))
