"""Helpers the format writers share: refusing to overwrite, label tables, relative poses."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from lidarssl.data.formats._common import invert_rigid
from lidarssl.data.labels import load_class_map
from lidarssl.errors import DataError


def refuse_existing(path: Path, what: str) -> None:
    """Raise unless ``path`` is absent or an empty folder: writers never mix two datasets in one place."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise DataError(f"{path}: already holds {what}; write into an empty folder")


def label_table(mapping: Mapping[int, int]) -> np.ndarray:
    """Lookup array ``t[nuScenes raw id] = target raw id`` from a mapping that covers all 32 nuScenes ids."""
    nuscenes_ids = sorted(load_class_map("nuscenes").raw_names)
    missing = sorted(set(nuscenes_ids) - set(mapping))
    if missing:  # a programming error in a table below, caught at import
        raise ValueError(f"label table misses nuScenes raw ids {missing}")
    table = np.zeros(max(nuscenes_ids) + 1, np.int64)
    for raw, target in mapping.items():
        table[raw] = target
    return table


def relative_pose(first: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """``pose`` expressed in the frame of ``first``: ``inv(first) @ pose`` (both sensor -> global)."""
    return invert_rigid(first) @ pose
