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


#: Format names ``open_dataset(format=...)`` accepts besides those of the readers.
SYNTHETIC = "synthetic"


def _is_semanticposs(sequences: Path) -> bool:
    """Whether a SemanticKITTI-layout folder holds SemanticPOSS: by the ids of its first label file, else its name.

    Every SemanticPOSS raw id is at most 22, while any SemanticKITTI scan holds road (40), building (50) or
    vegetation (70); only without label files does the folder name decide ("SemanticPOSS", "semantic_poss").
    """
    from lidarssl.data.formats.semanticposs import MAX_RAW_ID

    for seq in sorted(p for p in sequences.iterdir() if p.is_dir()):
        labels = sorted((seq / "labels").glob("*.label")) if (seq / "labels").is_dir() else []
        if labels:
            raw = np.fromfile(labels[0], dtype="<u4") & 0xFFFF
            return raw.size > 0 and int(raw.max()) <= MAX_RAW_ID
    return any("poss" in part.lower() for part in sequences.parts[-3:])


def detect_format(root: Path) -> str:
    """The format of the dataset folder ``root``, from its layout."""
    if (root / "index.json").is_file():
        return SYNTHETIC
    if any(root.glob("v1.0-*/sample_data.json")):
        return "nuscenes"
    for sequences in (root / "dataset" / "sequences", root / "sequences"):
        if sequences.is_dir():
            return "semanticposs" if _is_semanticposs(sequences) else "semantickitti"
    if (root / "training" / "velodyne").is_dir() or (root / "testing" / "velodyne").is_dir():
        return "kitti"
    if root.is_dir() and any((seq / "lidar" / "poses.json").is_file() for seq in root.iterdir() if seq.is_dir()):
        return "pandaset"
    from lidarssl.data.formats import KITTI360, ONCE

    for reader in (KITTI360, ONCE):  # readers that say themselves whether a folder is theirs
        if root.is_dir() and reader.detect(root):
            return reader.reader_name
    if not root.exists():
        raise DataError(f"{root}: no such dataset folder; write a synthetic one with `lidarssl generate out={root}`")
    raise DataError(
        f"{root}: not a dataset layout lidarssl recognises (synthetic index.json, nuScenes v1.0-*/sample_data.json, "
        f"SemanticKITTI sequences/, KITTI training/velodyne, PandaSet <seq>/lidar/poses.json, KITTI-360 "
        f"data_3d_raw/<seq>/velodyne_points, ONCE data/<seq>/lidar_roof); write a synthetic "
        f"one with `lidarssl generate out={root}`"
    )


def check_format(fmt: str) -> str:
    """``fmt`` if it names a reader (or the synthetic layout), else a DataError listing the names."""
    from lidarssl.data.formats import READERS

    if fmt != SYNTHETIC and fmt not in READERS:
        raise DataError(f"unknown dataset format '{fmt}'; choose one of {[SYNTHETIC, *READERS]}")
    return fmt


def reader_splits(fmt: str) -> tuple[str, ...]:
    """The split names the reader of ``fmt`` knows by itself."""
    if fmt == SYNTHETIC:
        from lidarssl.synthetic.native import SPLITS

        return SPLITS
    from lidarssl.data.formats import READERS

    return READERS[fmt].splits


def open_reader(root: Path, fmt: str, split: str | None, **options: object) -> Dataset:
    """The reader of format ``fmt`` for a base split (``None``: the reader's default, all frames of a synthetic
    world); ``splits`` (scene lists) goes only to the reader that takes it (nuScenes)."""
    if fmt != "nuscenes":
        options.pop("splits", None)
    if fmt == SYNTHETIC:
        from lidarssl.synthetic import NativeDataset

        return NativeDataset(root, split=split or "all", **options)
    from lidarssl.data.formats import READERS

    reader = READERS[check_format(fmt)]
    return reader(root, **options) if split is None else reader(root, split=split, **options)


def open_dataset(root: str | Path, split: str | None = None, *, format: str | None = None,
                 **options: object) -> Dataset:
    """Open the dataset at ``root``, recognised by its layout.

    Args:
        root: dataset folder.
        split: a split name: the reader's own (``train``, ``val``, ...) or a named split of
            :mod:`lidarssl.data.splits` (``train@1%``, ``train@10%-scenes``, ``parametrizing``, ...); ``None``
            for the reader's default (all frames of a synthetic world).
        format: the format name instead of recognising it (``"semanticposs"``, ``"semantickitti"``, ...).
        **options: reader options (e.g. ``sensor="pandargt"`` for PandaSet, ``sweeps=10`` for nuScenes);
            ``splits`` (a ``{name: [scene names]}`` mapping or JSON file) replaces ``<root>/splits.json``.
    """
    root = Path(root)
    fmt = check_format(format) if format is not None else detect_format(root)
    if split is None or split in reader_splits(fmt):
        return open_reader(root, fmt, split, **options)
    from lidarssl.data.splits import open_split

    return open_split(lambda name: open_reader(root, fmt, name, **options), root, fmt, split,
                      splits=options.get("splits"), reader_splits=reader_splits(fmt))


def split_summary(root: str | Path, *, format: str | None = None, **options: object) -> str:
    """The named splits of the dataset at ``root`` with their frame counts (what ``lidarssl info`` lists)."""
    from lidarssl.data.splits import describe_splits

    root = Path(root)
    fmt = check_format(format) if format is not None else detect_format(root)
    names = reader_splits(fmt)
    if fmt == "nuscenes":  # its scene lists of splits.json are splits too
        from lidarssl.data.splits import scene_lists

        names = tuple(dict.fromkeys((*names, *scene_lists(root, options.get("splits"))[0])))
    return "\n".join(describe_splits(lambda name: open_reader(root, fmt, name, **options), root, fmt, names,
                                      splits=options.get("splits")))


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
