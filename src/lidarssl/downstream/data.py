"""Samples and batches for lidar semantic segmentation, with a data order fixed by (seed, epoch).

Every random draw of a sample (augmentation, which point represents a voxel) comes from a generator seeded
with ``(seed, epoch, index)``, and the sampler's order from ``(seed, epoch)``. So a run resumed at an epoch
boundary sees exactly the batches an uninterrupted run would, whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import Sampler

from lidarssl.data.geometry import knn
from lidarssl.data.stats import Dataset
from lidarssl.data.transforms import PointAugment
from lidarssl.errors import DataError
from lidarssl.models.backbones.base import Batch, Preprocessor, Sample

__all__ = ["EpochSampler", "SegmentationSamples", "SegmentationCollate"]


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, epoch)`` keys: a seeded shuffle per epoch, sharded over distributed ranks.

    Each rank takes every ``world_size``-th index of the same permutation; the permutation is padded by
    wrapping around so every rank yields the same number of keys (DDP needs equal step counts).
    """

    def __init__(self, size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if size == 0:
            raise DataError("the dataset split is empty: nothing to sample")
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.size // self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = np.arange(self.size)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
        order = np.resize(order, len(self) * self.world_size)  # wrap around to equal shards
        return iter((int(i), self.epoch) for i in order[self.rank :: self.world_size])


class SegmentationSamples(TorchDataset):
    """Scans of a reader turned into backbone samples with per-point labels.

    Training samples are augmented and carry ``labels`` of the kept points. Evaluation samples are not
    augmented and also carry what is needed to score **every original point**: ``point_labels`` (N,) and
    ``nearest`` (N,), the index among kept points of each original point's nearest kept point (points
    dropped by voxel subsampling or the field-of-view crop take its prediction).
    """

    def __init__(self, dataset: Dataset, prep: Preprocessor, train: bool, seed: int = 0,
                 augment: PointAugment | None = None) -> None:
        self.dataset, self.prep, self.train, self.seed = dataset, prep, train, seed
        self.augment = augment if train else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int] | int) -> Sample:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        scan = self.dataset[index]
        if scan.labels is None:
            raise DataError(f"{scan.source}: scan has no labels; segmentation needs a labelled split")
        rng = np.random.default_rng([self.seed, epoch, index]) if self.train else None
        points = self.augment(scan.points, rng) if self.augment is not None else scan.points
        sample = self.prep(points, scan.intensity, rng)
        sample["labels"] = scan.labels[sample["kept"]]
        if not self.train:
            sample["point_labels"] = scan.labels
            # one thread: this runs inside DataLoader workers, which already use the cores
            sample["nearest"] = knn(scan.points, scan.points[sample["kept"]], k=1, workers=1)[1][:, 0]
        return sample


class SegmentationCollate:
    """The backbone's collate plus ``labels``; for evaluation also ``point_labels`` and ``nearest``
    (as rows of the batch's kept points), so predictions can be spread to every original point."""

    def __init__(self, prep: Preprocessor) -> None:
        self.prep = prep

    def __call__(self, samples: Sequence[Sample]) -> Batch:
        batch = self.prep.collate(samples)
        batch["labels"] = torch.from_numpy(np.concatenate([s["labels"] for s in samples]).astype(np.int64))
        if "nearest" in samples[0]:
            offsets = batch["offsets"].numpy()
            batch["nearest"] = torch.from_numpy(np.concatenate([s["nearest"] + offsets[i] for i, s in enumerate(samples)]))
            batch["point_labels"] = torch.from_numpy(np.concatenate([s["point_labels"] for s in samples]))
        return batch
