"""Opening datasets: the reader of a folder (recognised by its layout), its splits, and the summary that
``lidarssl info`` prints (frames, points per scan, class histogram, cameras)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Protocol

import numpy as np

from lidarssl.data.formats import READERS
from lidarssl.data.labels import ClassMap
from lidarssl.data.scan import Scan
from lidarssl.errors import ConfigError, DataError


class Dataset(Protocol):
    """What every reader offers: indexed Scans and the class map of their labels."""

    class_map: ClassMap

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Scan: ...


def detect_format(root: Path) -> str:
    """The format of the dataset folder ``root``: the first reader of :data:`READERS` that recognises it."""
    if root.is_dir():
        for name, reader in READERS.items():
            if reader.detect(root):
                return name
    if not root.exists():
        raise DataError(f"{root}: no such dataset folder; write a synthetic one with `lidarssl generate out={root}`")
    layouts = "; ".join(f"{name}: {getattr(reader, 'layout', '?')}" for name, reader in READERS.items())
    raise DataError(f"{root}: not a dataset layout lidarssl recognises ({layouts}); write a synthetic one with "
                    f"`lidarssl generate out={root}`")


def check_format(fmt: str) -> str:
    """``fmt`` if it names a reader, else a DataError listing the names."""
    if fmt not in READERS:
        raise DataError(f"unknown dataset format '{fmt}'; choose one of {READERS.names()}")
    return fmt


def reader_splits(fmt: str) -> tuple[str, ...]:
    """The split names the reader of ``fmt`` knows by itself."""
    return READERS[check_format(fmt)].splits


def open_reader(root: Path, fmt: str, split: str | None, **options: object) -> Dataset:
    """The reader of format ``fmt`` for one of its own splits (``None``: its ``default_split``); ``splits``
    (scene lists) goes only to a reader that takes it (``reads_scene_lists``: nuScenes)."""
    reader = READERS[check_format(fmt)]
    if not getattr(reader, "reads_scene_lists", False):
        options.pop("splits", None)
    params = inspect.signature(reader.__init__).parameters.values()
    known = [p.name for p in params if p.default is not p.empty and p.kind != p.VAR_KEYWORD and p.name != "split"]
    unknown = sorted(set(options) - set(known))
    if unknown and not any(p.kind == p.VAR_KEYWORD for p in params):
        raise ConfigError(f"{root}: the {fmt} reader has no option {', '.join(unknown)}; its options: "
                          f"{', '.join(known) or 'none'}")
    return reader(root, split=split or reader.default_split, **options)


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
    if getattr(READERS[fmt], "reads_scene_lists", False):  # its scene lists of splits.json are splits too
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
