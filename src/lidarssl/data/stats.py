"""What `lidarssl info` prints: frames, points per scan, class histogram and cameras of a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from lidarssl.data.labels import ClassMap
from lidarssl.data.scan import Scan
from lidarssl.errors import DataError


class Dataset(Protocol):
    """What every reader offers: indexed Scans and the class map of their labels."""

    class_map: ClassMap

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Scan: ...


def detect_format(root: Path) -> str:
    """The format of the dataset folder ``root``, from its layout."""
    if (root / "index.json").is_file():
        return "synthetic"
    if any(root.glob("v1.0-*/sample_data.json")):
        return "nuscenes"
    if (root / "dataset" / "sequences").is_dir() or (root / "sequences").is_dir():
        return "semantickitti"
    if (root / "training" / "velodyne").is_dir() or (root / "testing" / "velodyne").is_dir():
        return "kitti"
    if root.is_dir() and any((seq / "lidar" / "poses.json").is_file() for seq in root.iterdir() if seq.is_dir()):
        return "pandaset"
    if not root.exists():
        raise DataError(f"{root}: no such dataset folder; write a synthetic one with `lidarssl generate out={root}`")
    raise DataError(
        f"{root}: not a dataset layout lidarssl recognises (synthetic index.json, nuScenes v1.0-*/sample_data.json, "
        f"SemanticKITTI sequences/, KITTI training/velodyne, PandaSet <seq>/lidar/poses.json); write a synthetic "
        f"one with `lidarssl generate out={root}`"
    )


def open_dataset(root: str | Path, split: str | None = None, **options: object) -> Dataset:
    """Open the dataset at ``root``, recognised by its layout.

    Args:
        root: dataset folder.
        split: split name; ``None`` for the reader's default (all frames of a synthetic world).
        **options: reader options (e.g. ``sensor="pandargt"`` for PandaSet, ``sweeps=10`` for nuScenes).
    """
    root = Path(root)
    fmt = detect_format(root)
    if fmt == "synthetic":
        from lidarssl.synthetic import NativeDataset

        return NativeDataset(root, split=split or "all", **options)
    from lidarssl.data.formats import READERS

    reader = READERS[fmt]
    return reader(root, **options) if split is None else reader(root, split=split, **options)


def dataset_summary(dataset: Dataset, max_frames: int | None = None) -> str:
    """A plain-text report: frames, points per scan, class histogram over labelled points, cameras."""
    n = len(dataset) if max_frames is None else min(len(dataset), max_frames)
    if n == 0:
        return "0 frames"
    cmap = dataset.class_map
    counts = np.zeros(cmap.num_classes + 1, np.int64)  # last bin: ignored points
    sizes = []
    cameras: dict[str, tuple[int, int]] = {}
    first = None
    for i in range(n):
        scan = dataset[i]
        first = first or scan
        sizes.append(len(scan))
        if scan.labels is not None:
            labels = np.where(scan.labels < cmap.num_classes, scan.labels, cmap.num_classes)
            counts += np.bincount(labels, minlength=cmap.num_classes + 1)
        for cam in scan.cameras:
            cameras.setdefault(cam.name, cam.hw)
    sizes_a = np.array(sizes)
    lines = [
        f"dataset: {first.dataset}  ({n} frames summarised of {len(dataset)})",
        f"points per scan: mean {sizes_a.mean():.0f}, min {sizes_a.min()}, max {sizes_a.max()}",
    ]
    total = counts.sum()
    if total:
        lines.append(f"class histogram ({cmap.name} classes, {total} labelled points):")
        for c, name in enumerate((*cmap.classes, "(ignored)")):
            if counts[c]:
                lines.append(f"  {c if c < cmap.num_classes else cmap.ignore_index:>3} {name:<22}"
                             f"{counts[c]:>10} {100 * counts[c] / total:6.2f}%")
        missing = [name for c, name in enumerate(cmap.classes) if counts[c] == 0]
        if missing:
            lines.append(f"  classes without points: {', '.join(missing)}")
    if cameras:
        lines.append(f"cameras ({len(cameras)}): " + ", ".join(f"{k} {w}x{h}" for k, (h, w) in cameras.items()))
    else:
        lines.append("cameras: none")
    return "\n".join(lines)
