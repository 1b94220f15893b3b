"""The native on-disk layout of generated synthetic data: writer and reader.

Layout under ``root``::

    index.json                      written last; lists everything below
    lidar/<stem>.npz                one sweep: points, intensity, ring, raw labels, instance, poses,
                                    timestamps and the calibration of every camera
    cameras/<CAMERA>/<stem>.jpg     one JPEG (quality 95) per camera and frame

``<stem>`` is ``seed<seed>_<frame:06d>``. ``index.json`` holds the format name and version, the
generator parameters (``SyntheticWorld(**generator)`` rebuilds a sequence), the base seed, the class
map (``nuscenes``), the lidar preset, the camera names and sizes, the sequences with their seed and
split, and per frame its id, sequence, split, timestamp, point count and files.

Each npz (no pickled objects; read with ``allow_pickle=False``) holds:

- ``points`` float32 (N, 3): xyz in the lidar frame (x forward, y left, z up), metres
- ``intensity`` float32 (N,): 0..255, integer-valued
- ``ring`` uint8 (N,): beam index, 0 = lowest
- ``raw_labels`` uint8 (N,): nuScenes-lidarseg raw class ids (0..31)
- ``instance`` int32 (N,): instance ids, 0 for stuff
- ``ego_pose`` float64 (4, 4): lidar -> global at ``timestamp``
- ``sensor_origin`` float32 (3,): ray origin in the lidar frame (zeros)
- ``timestamp`` float64 (): sweep time, seconds
- ``camera_names`` str (C,): camera order of the ``cam_*`` arrays
- ``cam_K`` float64 (C, 3, 3): intrinsics
- ``cam_lidar_to_cam`` float64 (C, 4, 4): lidar -> camera, ego motion between the timestamps included
- ``cam_timestamp`` float64 (C,): camera times, seconds

Splits are by sequence: several short sequences (consecutive seeds), the last ones held out as
``val``. Every file is written to a temporary name and renamed into place, and ``index.json`` comes
last, so an interrupted run never leaves a half-written frame behind a valid index.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lidarssl.data.labels import ClassMap, load_class_map
from lidarssl.data.scan import CameraView, Scan
from lidarssl.errors import ConfigError, DataError
from lidarssl.synthetic.plan import Frame, Generation, ProgressFn, atomic_file, encode_image, write_atomic
from lidarssl.synthetic.world import SyntheticWorld

FORMAT = "lidarssl-synthetic"
VERSION = 1
SPLITS = ("train", "val", "all")

_HOW_TO_FIX = "create it with `lidarssl generate --out {root}` (or lidarssl.synthetic.write_dataset)"


def _stem(frame_id: str) -> str:
    return frame_id.replace("/", "_")


def write_dataset(
    source: SyntheticWorld | Mapping[str, Any],
    root: str | os.PathLike[str],
    num_frames: int,
    *,
    frames_per_sequence: int | None = None,
    val_fraction: float = 0.2,
    jpeg_quality: int = 95,
    overwrite: bool = False,
    threads: int | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """Generate ``num_frames`` synthetic frames and write them in the native layout.

    Sequence ``k`` uses seed ``seed + k`` and the other parameters of ``source``; sequence 0 is
    therefore exactly ``source`` when a world is given (same scans, frame by frame).

    Args:
        source: a :class:`SyntheticWorld`, or its parameters (``SyntheticWorld(**source)``).
        root: output folder, created if needed.
        num_frames: total frames over all sequences.
        frames_per_sequence: frames per sequence; defaults to the world's ``num_frames`` (40).
        val_fraction: share of sequences held out as ``val`` (at least one when there are two).
        jpeg_quality: JPEG quality of the camera images.
        overwrite: replace an existing dataset in ``root`` (its listed files are deleted first).
        threads: render threads (0 = one per core); None keeps the setting of a given world and
            uses all cores for parameters.
        progress: called with (written, total) after each frame.

    Returns:
        The path of the written ``index.json``.

    Raises:
        DataError: ``root`` already holds a dataset and ``overwrite`` is False.
        ConfigError: invalid parameters.
    """
    gen = Generation(source, num_frames, frames_per_sequence=frames_per_sequence, val_fraction=val_fraction,
                     threads=threads)
    root = Path(root)
    index_path = root / "index.json"
    if index_path.exists():
        if not overwrite:
            raise DataError(f"{index_path}: a dataset already exists here; choose another folder or overwrite it")
        _remove_listed(root, index_path)
    (root / "lidar").mkdir(parents=True, exist_ok=True)
    for name in gen.world0.camera_names:
        (root / "cameras" / name).mkdir(parents=True, exist_ok=True)

    frames = [_write_frame(f, root, jpeg_quality) for f in gen.frames(progress)]
    index = {
        "format": FORMAT,
        "version": VERSION,
        "generator": gen.generator_params,
        "seed": gen.params["seed"],
        "class_map": "nuscenes",
        "lidar": gen.params["lidar"],
        "lidar_frame": "x forward, y left, z up; sweeps treated as instantaneous",
        "cameras": gen.world0.camera_names,
        "image_size": {c.name: [c.width, c.height] for c in gen.world0.cameras},
        "sequences": [asdict(seq) for seq in gen.sequences],
        "frames": frames,
    }
    with atomic_file(index_path) as f:
        f.write(json.dumps(index, indent=1).encode())
        f.flush()
        os.fsync(f.fileno())
    return index_path


def _write_frame(frame: Frame, root: Path, quality: int) -> dict[str, Any]:
    scan = frame.scan
    stem = _stem(scan.frame_id)
    cams: dict[str, str] = {}
    for view in scan.cameras:
        rel = f"cameras/{view.name}/{stem}.jpg"
        write_atomic(root / rel, encode_image(view.image, "JPEG", quality))
        cams[view.name] = rel
    rel_lidar = f"lidar/{stem}.npz"
    arrays = {
        "points": scan.points,
        "intensity": scan.intensity,
        "ring": scan.ring.astype(np.uint8),
        "raw_labels": scan.raw_labels.astype(np.uint8),
        "instance": scan.instance.astype(np.int32),
        "ego_pose": scan.ego_pose.astype(np.float64),
        "sensor_origin": scan.sensor_origin.astype(np.float32),
        "timestamp": np.float64(scan.timestamp),
        "camera_names": np.array([v.name for v in scan.cameras], dtype=str),
        "cam_K": np.array([v.K for v in scan.cameras], np.float64).reshape(-1, 3, 3),
        "cam_lidar_to_cam": np.array([v.lidar_to_cam for v in scan.cameras], np.float64).reshape(-1, 4, 4),
        "cam_timestamp": np.array([v.timestamp for v in scan.cameras], np.float64),
    }
    with atomic_file(root / rel_lidar) as f:
        np.savez(f, **arrays)
    return {
        "id": scan.frame_id,
        "sequence": frame.sequence.id,
        "split": frame.sequence.split,
        "timestamp": scan.timestamp,
        "num_points": len(scan),
        "lidar": rel_lidar,
        "cameras": cams,
    }


def _remove_listed(root: Path, index_path: Path) -> None:
    """Delete the index first (so nothing half-replaced looks valid), then the files it listed."""
    try:
        old = json.loads(index_path.read_text())
        listed = [f["lidar"] for f in old.get("frames", [])] + [p for f in old.get("frames", []) for p in f["cameras"].values()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        listed = []
    index_path.unlink()
    for rel in listed:
        (root / rel).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Reading.


def _read_index(root: Path) -> dict[str, Any]:
    index_path = root / "index.json"
    fix = _HOW_TO_FIX.format(root=root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; {fix}")
    if not index_path.is_file():
        raise DataError(
            f"{index_path}: not found, so {root} holds no synthetic dataset (or its generation was "
            f"interrupted before the index was written); {fix}"
        )
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{index_path}: unreadable JSON ({e}); {fix}") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise DataError(f"{index_path}: not a {FORMAT} index (format = {index.get('format') if isinstance(index, dict) else None!r})")
    if index.get("version") != VERSION:
        raise DataError(f"{index_path}: format version {index.get('version')!r}, this lidarssl reads version {VERSION}; regenerate it")
    for key in ("frames", "cameras", "class_map", "lidar"):
        if key not in index:
            raise DataError(f"{index_path}: key '{key}' is missing; {fix}")
    return index


class NativeDataset:
    """A generated dataset read back as Scans.

    Args:
        root: folder holding ``index.json``.
        split: ``train``, ``val`` or ``all``.

    Raises:
        DataError: no index, an unreadable index, or a frame whose files are missing (when read).
        ConfigError: unknown split.
    """

    def __init__(self, root: str | os.PathLike[str], split: str = "train") -> None:
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
        self.root = Path(root)
        self.split = split
        self.index = _read_index(self.root)
        self.frames: list[dict[str, Any]] = [f for f in self.index["frames"] if split == "all" or f.get("split") == split]
        self.class_map: ClassMap = load_class_map(self.index["class_map"])
        self.camera_names: list[str] = list(self.index["cameras"])

    def __len__(self) -> int:
        return len(self.frames)

    def __repr__(self) -> str:
        return f"NativeDataset({str(self.root)!r}, split={self.split!r}, frames={len(self)})"

    def _missing(self, path: Path) -> DataError:
        return DataError(
            f"{path}: missing, though {self.root / 'index.json'} lists it; the dataset is incomplete: "
            f"regenerate it with `lidarssl generate --out {self.root} --overwrite`"
        )

    def __getitem__(self, i: int) -> Scan:
        if not -len(self) <= i < len(self):
            raise IndexError(f"frame {i} out of range for {len(self)} frames in split '{self.split}' of {self.root}")
        entry = self.frames[i]
        path = self.root / entry["lidar"]
        if not path.is_file():
            raise self._missing(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: unreadable npz ({e}); regenerate the dataset") from None
        need = ("points", "intensity", "ring", "raw_labels", "instance", "ego_pose", "sensor_origin", "timestamp",
                "camera_names", "cam_K", "cam_lidar_to_cam", "cam_timestamp")
        for key in need:
            if key not in data:
                raise DataError(f"{path}: array '{key}' is missing; regenerate the dataset")
        names = [str(n) for n in data["camera_names"]]
        views = []
        for k, name in enumerate(names):
            rel = entry["cameras"].get(name)
            img_path = self.root / rel if rel else self.root / "cameras" / name / f"{_stem(entry['id'])}.jpg"
            if not img_path.is_file():
                raise self._missing(img_path)
            try:
                with Image.open(img_path) as im:
                    image = np.asarray(im.convert("RGB"))
            except OSError as e:
                raise DataError(f"{img_path}: unreadable image ({e}); regenerate the dataset") from None
            views.append(CameraView(
                name=name, image=image, K=data["cam_K"][k], lidar_to_cam=data["cam_lidar_to_cam"][k],
                timestamp=float(data["cam_timestamp"][k]), source=str(img_path),
            ))
        raw = data["raw_labels"]
        return Scan(
            points=data["points"],
            intensity=data["intensity"],
            source=str(path),
            dataset="synthetic",
            frame_id=entry["id"],
            timestamp=float(data["timestamp"]),
            ring=data["ring"],
            raw_labels=raw,
            labels=self.class_map.map(raw, str(path)),
            instance=data["instance"],
            sensor_origin=data["sensor_origin"],
            ego_pose=data["ego_pose"],
            cameras=views,
        )
