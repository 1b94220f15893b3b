"""WaffleIron's scan mixing for SemanticKITTI training (valeoai/WaffleIron ``datasets/semantic_kitti.py``):
PolarMix, then Instance CutMix, on the raw scan before any other augmentation.

* **PolarMix**: with probability 1/2 the half-plane of directions (sector, sector + pi) of the scan is replaced by
  the same half of another training scan drawn at random; then the points of the instance classes of that other
  scan are added three times: as they are and rotated about z by two random angles.
* **Instance CutMix**: instances (connected by instance id, more than 5 points) of the instance classes are cut
  from every training scan once into a bank, centred (xy mean, lowest z at 0). Each training scan gets, for each
  class, up to 40 instances of the bank (a uniform draw in 0..39), each flipped in x or y, rotated about z,
  scaled by U(0.9, 1.1) and set down on a distinct 1 m voxel of the scan's road, parking or sidewalk points.

Pasted points keep their class; instance ids are dropped from a mixed scan (they no longer name one object).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lidarssl.data.geometry import voxelize
from lidarssl.data.scan import Scan
from lidarssl.errors import DataError

__all__ = ["INSTANCE_CLASSES", "SURFACE_CLASSES", "InstanceBank", "ScanMixer", "polar_mix", "cutmix"]

#: WaffleIron's classes 1, 2, 4, 5, 6 (``PolarMix(classes=[1, 2, 4, 5, 6])``, ``InstanceCutMix.bank``).
INSTANCE_CLASSES = ("bicycle", "motorcycle", "other-vehicle", "person", "bicyclist")
#: Where instances are set down (``class_label_vox >= 8 & <= 10``).
SURFACE_CLASSES = ("road", "parking", "sidewalk")
MAX_PER_CLASS = 40  # InstanceCutMix.num_to_add
MIN_POINTS = 6  # instances of 5 points or fewer are not banked


def _class_ids(classes: Sequence[str], wanted: Sequence[str], where: str) -> list[int]:
    missing = [c for c in wanted if c not in classes]
    if missing:
        raise DataError(f"{where}: classes {missing} are not in the dataset's class map {list(classes)}; instance "
                        "CutMix and PolarMix are written for SemanticKITTI's classes")
    return [list(classes).index(c) for c in wanted]


def _rotate_z(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    out = points.copy()
    out[:, :2] = points[:, :2] @ np.array([[c, s], [-s, c]], np.float32)
    return out


def _needs_instances(scan: Scan, what: str) -> None:
    if scan.labels is None or scan.instance is None:
        raise DataError(f"{scan.source}: augment.{what} needs instance labels, which {scan.dataset or 'this dataset'} "
                        f"does not provide; set augment.{what}: false")


@dataclass
class InstanceBank:
    """Instances cut from a training split, per class id: (points (n, 3) centred, intensity (n,))."""

    instances: dict[int, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)

    @classmethod
    def build(cls, dataset: Any, class_ids: Sequence[int],
              progress: Callable[[int, int], None] | None = None) -> InstanceBank:
        """Read every scan of ``dataset`` once and cut its instances (WaffleIron's ``InstanceCutMix.cut``);
        ``progress(done, total)`` is called after each scan."""
        bank = cls({c: [] for c in class_ids})
        for index in range(len(dataset)):
            scan = dataset[index]
            _needs_instances(scan, "instance_cutmix")
            for c in class_ids:
                in_class = scan.labels == c
                for ident in np.unique(scan.instance[in_class]):
                    where = in_class & (scan.instance == ident)
                    if where.sum() < MIN_POINTS:
                        continue
                    pts = scan.points[where].copy()
                    pts[:, :2] -= pts[:, :2].mean(0, keepdims=True)
                    pts[:, 2] -= pts[:, 2].min()
                    bank.instances[c].append((pts, scan.intensity[where].copy()))
            if progress is not None:
                progress(index + 1, len(dataset))
        return bank


def polar_mix(points: np.ndarray, intensity: np.ndarray, labels: np.ndarray, other: Scan, class_ids: Sequence[int],
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WaffleIron's ``PolarMix.__call__``: swap a half-plane of directions with ``other`` (p = 1/2), then add the
    instance-class points of ``other`` three times (as they are and at two random rotations about z)."""
    if rng.uniform() < 0.5:
        sector = rng.uniform(-np.pi, np.pi)

        def half(p: np.ndarray) -> np.ndarray:
            theta = (np.arctan2(p[:, 1], p[:, 0]) - sector) % (2 * np.pi)
            return (theta > 0) & (theta < np.pi)

        keep, take = ~half(points), half(other.points)
        points = np.concatenate([points[keep], other.points[take]])
        intensity = np.concatenate([intensity[keep], other.intensity[take]])
        labels = np.concatenate([labels[keep], other.labels[take]])
    objects = np.isin(other.labels, class_ids)
    if objects.any():
        pts, inten, lab = other.points[objects], other.intensity[objects], other.labels[objects]
        copies = [pts, _rotate_z(pts, rng.uniform(-np.pi, np.pi)), _rotate_z(pts, rng.uniform(-np.pi, np.pi))]
        points = np.concatenate([points, *copies])
        intensity = np.concatenate([intensity, inten, inten, inten])
        labels = np.concatenate([labels, lab, lab, lab])
    return points, intensity, labels


def cutmix(points: np.ndarray, intensity: np.ndarray, labels: np.ndarray, bank: InstanceBank,
           surface_ids: Sequence[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WaffleIron's ``InstanceCutMix.mix``: instances of the bank set down on distinct 1 m voxels of the surface."""
    vox = voxelize(points, 1.0, mode="random", rng=rng)
    spots = vox.kept[np.isin(labels[vox.kept], surface_ids)]
    spots = spots[rng.permutation(len(spots))]
    used = 0
    out_p, out_i, out_l = [points], [intensity], [labels]
    for c, instances in bank.instances.items():
        n = min(int(rng.integers(MAX_PER_CLASS)), len(spots) - used)
        if not instances or n <= 0:
            continue
        for pick in rng.integers(len(instances), size=n):
            pts, inten = instances[pick]
            pts = pts.copy()
            pts[:, 1 - int(rng.integers(2))] *= -1.0  # FlipXY: x or y
            pts = _rotate_z(pts, rng.uniform(-np.pi, np.pi))
            pts *= np.float32(1 + rng.uniform(-0.1, 0.1))
            pts += points[spots[used]]
            out_p.append(pts)
            out_i.append(inten)
            out_l.append(np.full(len(pts), c, np.int64))
            used += 1
    return np.concatenate(out_p), np.concatenate(out_i), np.concatenate(out_l)


@dataclass
class ScanMixer:
    """PolarMix with another scan of ``dataset``, then Instance CutMix from ``bank`` (either may be off)."""

    dataset: Any
    polarmix: bool
    bank: InstanceBank | None
    class_ids: list[int]
    surface_ids: list[int]

    @classmethod
    def for_dataset(cls, dataset: Any, polarmix: bool, instance_cutmix: bool,
                    progress: Callable[[int, int], None] | None = None) -> ScanMixer:
        where = f"augment on {getattr(dataset, 'root', 'the dataset')}"
        class_ids = _class_ids(dataset.class_map.classes, INSTANCE_CLASSES, where)
        surface_ids = _class_ids(dataset.class_map.classes, SURFACE_CLASSES, where)
        if len(dataset):
            _needs_instances(dataset[0], "instance_cutmix" if instance_cutmix else "polarmix")
        bank = InstanceBank.build(dataset, class_ids, progress) if instance_cutmix else None
        return cls(dataset, polarmix, bank, class_ids, surface_ids)

    def __call__(self, scan: Scan, rng: np.random.Generator) -> Scan:
        if scan.labels is None:
            raise DataError(f"{scan.source}: scan mixing needs labels; segmentation needs a labelled split")
        points, intensity, labels = scan.points, scan.intensity, scan.labels
        if self.polarmix:
            other = self.dataset[int(rng.integers(len(self.dataset)))]
            points, intensity, labels = polar_mix(points, intensity, labels, other, self.class_ids, rng)
        if self.bank is not None:
            points, intensity, labels = cutmix(points, intensity, labels, self.bank, self.surface_ids, rng)
        return dataclasses.replace(scan, points=points.astype(np.float32), intensity=intensity, labels=labels,
                                   raw_labels=None, instance=None, ring=None, time=None, cameras=[])
