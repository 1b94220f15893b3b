"""The sample pipeline of every training command: scans to samples to batches, with a data order fixed by a seed.

:class:`ScanSamples` turns scan ``index`` of a dataset into one sample: it draws the point augmentation (a
(4, 4) affine, so cameras and rays can follow it) and SLidR's DropCuboids, runs the backbone's preprocessing,
and hands the result to **sample builders**: picklable objects that run in DataLoader workers, add arrays to
the sample (segmentation labels, point-pixel pairs and images, occupancy queries, ...) and later collate them
(:class:`ScanCollate`). Keys and shapes are those of :mod:`lidarssl.batch`.

Every random draw of a sample comes from a generator seeded with ``(seed, epoch, index)`` and the sampler's
order from ``(seed, epoch)`` (:class:`EpochSampler`), so data order and augmentations are fixed by the seed,
whatever the number of workers, and a run resumed at an epoch boundary sees exactly the batches an
uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset

from lidarssl.batch import Batch, Preprocessor, Sample, concat_rows
from lidarssl.data.crops import InputCrop, cap_points
from lidarssl.data.datasets import Dataset
from lidarssl.data.geometry import knn
from lidarssl.data.pairing import keeps_pairs
from lidarssl.data.scan import Scan
from lidarssl.data.transforms import PointAugment, apply_affine, drop_cuboid
from lidarssl.errors import DataError

if TYPE_CHECKING:
    import lightning as L

__all__ = ["AugmentedScan", "EpochSampler", "LabelBuilder", "SampleBuilder", "ScanCollate", "ScanSamples",
           "augment_scan", "build_loader"]


@dataclass
class AugmentedScan:
    """A scan as the backbone saw it.

    Attributes:
        scan: the scan as read, in its own geometry.
        A: (4, 4) affine augmentation of the points (``points = A @ scan.points``).
        points: (N, 3) augmented points, all of them (also those the backbone dropped).
        kept: (M,) indices into ``scan.points`` of the backbone's kept points, in feature-row order.
        row_of_point: (N,) feature row of each scan point, -1 for points the backbone did not keep.
        camera: the camera an input crop drew (its frustum holds every kept point; pairing uses only it), or
            ``None``.
        index: the scan's index in its dataset.
    """

    scan: Scan
    A: np.ndarray
    points: np.ndarray
    kept: np.ndarray
    row_of_point: np.ndarray
    camera: int | None = None
    index: int = 0


class SampleBuilder(Protocol):
    """What a method or segmentation adds to each sample (in DataLoader workers) and to each batch; must pickle.

    ``rng`` is the sample's generator while training and ``None`` for evaluation samples.
    """

    def __call__(self, view: AugmentedScan, rng: np.random.Generator | None) -> Sample: ...

    def collate(self, samples: Sequence[Sample], batch: Batch) -> None: ...


class ScanSamples(TorchDataset):
    """Scans of a dataset as samples: augmentation, backbone preprocessing, then the sample builders.

    Args:
        dataset: a reader or mixture, indexed by integers.
        prep: the backbone's preprocessing.
        builders: sample builders, applied in order.
        seed: seed of every random draw.
        augment: point augmentation (training only), or ``None``.
        crop: input crop of training scans (ScaLR's frustum and point cap), or ``None``.
        mix: WaffleIron's PolarMix / instance CutMix of training scans (:class:`~lidarssl.data.mixing.ScanMixer`),
            applied to the scan as read, before crop and augmentation; or ``None``.
        train: training samples draw augmentations and voxel representatives; evaluation samples are
            deterministic (the builders then get ``rng=None``).
    """

    def __init__(self, dataset: Dataset, prep: Preprocessor, builders: Sequence[SampleBuilder], seed: int = 0,
                 augment: PointAugment | None = None, train: bool = True, crop: InputCrop | None = None,
                 mix: Callable[[Scan, np.random.Generator], Scan] | None = None) -> None:
        self.dataset, self.prep, self.builders, self.seed = dataset, prep, list(builders), seed
        self.augment, self.train = (augment if train else None), train
        self.crop = crop if train else None  # evaluation scores every original point
        self.mix = mix if train else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int] | int) -> Sample:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        if hasattr(self.dataset, "set_epoch"):  # a mixture's per-epoch draw, a function of (seed, epoch) only
            self.dataset.set_epoch(epoch)
        scan = self.dataset[index]
        rng = np.random.default_rng([self.seed, epoch, index]) if self.train else None
        if self.mix is not None:
            scan = self.mix(scan, rng)
        sample, view = augment_scan(scan, self.prep, rng, self.augment, self.crop, index)
        for builder in self.builders:
            sample.update(builder(view, rng))
        return sample


def augment_scan(scan: Scan, prep: Preprocessor, rng: np.random.Generator | None, augment: PointAugment | None = None,
                 crop: InputCrop | None = None, index: int = 0) -> tuple[Sample, AugmentedScan]:
    """One view of ``scan``: the input crop, the point augmentation and DropCuboids drawn from ``rng``, then the
    backbone's preprocessing. Returns the backbone's sample (``kept`` as indices into ``scan.points``) and the view.

    ``index`` names the frame in errors when the scan has no frame id."""
    A, points, subset, camera = np.eye(4), scan.points, np.arange(len(scan)), None
    if crop is not None:
        subset, camera = crop(scan, subset, rng)
    if augment is not None:
        A = augment.matrix(rng)
        points = apply_affine(A, scan.points)
        if augment.drop_cuboid:
            keep = drop_cuboid(points, rng, augment.drop_cuboid)
            min_pairs = augment.drop_cuboid_min_pairs
            if min_pairs == 0 or keeps_pairs(scan, keep, min_pairs):
                subset = subset[keep[subset]]
    if len(subset) == 0:
        raise DataError(f"{scan.source}: frame {scan.frame_id or index} of {scan.dataset or 'the dataset'} has no "
                        "points; restore the file or leave the frame out of the split")
    sample = _prep(prep, scan, index, points, subset, rng)
    kept = subset[sample["kept"]]
    if crop is not None and crop.after_voxels and crop.max_points is not None and len(kept) > crop.max_points:
        # the cap counts the points voxel subsampling kept (one per voxel, on an absolute grid, so the
        # backbone keeps them all again)
        subset = cap_points(scan.points, kept, crop.max_points, rng)
        sample = _prep(prep, scan, index, points, subset, rng)
        kept = subset[sample["kept"]]
    sample["kept"] = kept
    row_of_point = np.full(len(points), -1, np.int64)
    row_of_point[kept] = np.arange(len(kept))
    return sample, AugmentedScan(scan=scan, A=A, points=points, kept=kept, row_of_point=row_of_point, camera=camera,
                                 index=index)


def _prep(prep: Preprocessor, scan: Scan, index: int, points: np.ndarray, subset: np.ndarray,
          rng: np.random.Generator | None) -> Sample:
    try:
        return prep(points[subset], scan.intensity[subset], rng)
    except DataError as e:  # the backbone's preprocessing sees arrays only: name the frame
        raise DataError(f"{scan.source}: frame {scan.frame_id or index}: {e}") from None


class ScanCollate:
    """The backbone's collate, then each builder's."""

    def __init__(self, prep: Preprocessor, builders: Sequence[SampleBuilder]) -> None:
        self.prep, self.builders = prep, list(builders)

    def __call__(self, samples: Sequence[Sample]) -> Batch:
        batch = self.prep.collate(samples)
        for builder in self.builders:
            builder.collate(samples, batch)
        return batch


class LabelBuilder:
    """Segmentation labels: ``labels`` of the kept points; evaluation samples (``rng=None``) also carry what
    scores **every original point**: ``point_labels`` (N,) and ``nearest`` (N,), the row of each point's
    nearest kept point (points dropped by voxel subsampling or the field-of-view crop take its prediction)."""

    def __call__(self, view: AugmentedScan, rng: np.random.Generator | None) -> Sample:
        scan = view.scan
        if scan.labels is None:
            raise DataError(f"{scan.source}: scan has no labels; segmentation needs a labelled split")
        sample = {"labels": scan.labels[view.kept]}
        if rng is None:
            sample["point_labels"] = scan.labels
            # one thread: this runs inside DataLoader workers, which already use the cores
            sample["nearest"] = knn(scan.points, scan.points[view.kept], k=1, workers=1)[1][:, 0]
        return sample

    def collate(self, samples: Sequence[Sample], batch: Batch) -> None:
        batch["labels"] = concat_rows(samples, "labels").long()
        if "nearest" in samples[0]:
            batch["nearest"] = concat_rows(samples, "nearest", batch["offsets"].numpy())
            batch["point_labels"] = concat_rows(samples, "point_labels")


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, epoch)`` keys: a seeded shuffle per epoch, sharded over distributed ranks.

    Each rank takes every ``world_size``-th index of the same permutation; the permutation is padded by
    wrapping around so every rank yields the same number of keys (DDP needs equal step counts).
    """

    def __init__(self, size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1,
                 start_epoch: int = 0) -> None:
        if size == 0:
            raise DataError("the dataset split is empty: nothing to sample")
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = start_epoch

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


def build_loader(samples: ScanSamples, batch_size: int, num_workers: int, trainer: L.Trainer | None = None,
                 start_epoch: int = 0) -> DataLoader:
    """The DataLoader of ``samples``: shuffled by ``(seed, epoch)`` when they are training samples, sharded
    over the ranks of ``trainer``, batched by :class:`ScanCollate`.

    ``start_epoch`` is the epoch a resumed run continues with. It must be right before Lightning's ``set_epoch``:
    a DataLoader with workers starts prefetching (iterating the sampler) as soon as its iterator exists, and on
    resume Lightning creates it before calling ``set_epoch``; with epoch 0 there, the first resumed epoch would
    replay epoch 0's order and augmentations (with ``num_workers=0`` the sampler is only read later)."""
    sampler = EpochSampler(len(samples), shuffle=samples.train, seed=samples.seed,
                           rank=trainer.global_rank if trainer else 0, world_size=trainer.world_size if trainer else 1,
                           start_epoch=start_epoch)
    # The loader's own generator: each new iterator draws its workers' base seed from it. Drawn from torch's
    # global generator instead, that draw would happen once per run with persistent workers but again on
    # every resume, shifting the stream that dropout and drop path use: a resumed run would then differ from
    # an uninterrupted one only when num_workers > 0. Samples are seeded by (seed, epoch, index) anyway.
    generator = torch.Generator().manual_seed(samples.seed)
    return DataLoader(samples, batch_size=batch_size, sampler=sampler, num_workers=num_workers, generator=generator,
                      collate_fn=ScanCollate(samples.prep, samples.builders), persistent_workers=num_workers > 0)
