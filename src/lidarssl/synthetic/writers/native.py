"""The writer of the synthetic world's native on-disk layout: ``index.json``, one npz per sweep, one JPEG per
camera and frame. The layout is described, and read back, by :mod:`lidarssl.data.formats.synthetic`.

Splits are by sequence: several short sequences (consecutive seeds), the last ones held out as ``val``. Every
file is written to a temporary name and renamed into place, and ``index.json`` comes last, so an interrupted
run never leaves a half-written frame behind a valid index.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from lidarssl.data.formats.synthetic import CLASS_IMAGES, FORMAT, VERSION, frame_stem
from lidarssl.errors import DataError
from lidarssl.io import atomic_file, write_bytes_atomic
from lidarssl.synthetic.plan import Frame, Generation, ProgressFn, encode_image
from lidarssl.synthetic.world import SyntheticWorld


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
        (root / CLASS_IMAGES / name).mkdir(parents=True, exist_ok=True)

    # Resumable: each written frame is recorded in a progress file; a rerun of the same plan keeps those frames,
    # a rerun of another plan first deletes them (no orphans). The progress file goes once index.json exists.
    progress_path = root / PROGRESS_NAME
    plan = {"generator": gen.generator_params, "num_frames": num_frames, "frames_per_sequence": frames_per_sequence,
            "val_fraction": val_fraction, "jpeg_quality": jpeg_quality}
    plan = json.loads(json.dumps(plan))
    written = _resume_progress(root, progress_path, plan)

    def record(key: str, entry: dict[str, Any]) -> None:
        written[key] = entry
        with atomic_file(progress_path) as f:
            f.write(json.dumps({"plan": plan, "frames": written}).encode())

    for frame in gen.frames(progress, skip=lambda seq, i: f"{seq}/{i}" in written):
        record(f"{frame.sequence.id}/{frame.index}", _write_frame(frame, root, jpeg_quality))
    frames = [written[f"{seq.id}/{i}"] for seq in gen.sequences for i in range(seq.num_frames)]
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
    progress_path.unlink(missing_ok=True)
    return index_path


#: Frames written so far by an unfinished ``write_dataset`` (removed once ``index.json`` is written).
PROGRESS_NAME = "generate-progress.json"


def _files(entries: Any) -> list[str]:
    return [e["lidar"] for e in entries] + [p for e in entries for p in e["cameras"].values()]


def _resume_progress(root: Path, path: Path, plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Frames an interrupted run of the same ``plan`` left complete on disk; frames of another plan are deleted."""
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text())
        entries = dict(old["frames"])
        same = old["plan"] == plan
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if same:
        return {k: e for k, e in entries.items() if all((root / rel).is_file() for rel in _files([e]))}
    for rel in _files(entries.values()):
        (root / rel).unlink(missing_ok=True)
    path.unlink()
    return {}


def _write_frame(frame: Frame, root: Path, quality: int) -> dict[str, Any]:
    scan = frame.scan
    stem = frame_stem(scan.frame_id)
    cams: dict[str, str] = {}
    classes: dict[str, str] = {}
    for k, view in enumerate(scan.cameras):
        rel = f"cameras/{view.name}/{stem}.jpg"
        write_bytes_atomic(root / rel, encode_image(view.image, "JPEG", quality))
        cams[view.name] = rel
        if k < len(frame.class_images):  # lossless: a JPEG would blur the ids at edges
            rel = f"{CLASS_IMAGES}/{view.name}/{stem}.png"
            write_bytes_atomic(root / rel, encode_image(frame.class_images[k], "PNG"))
            classes[view.name] = rel
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
        "class_images": classes,
    }


def _remove_listed(root: Path, index_path: Path) -> None:
    """Delete the index first (so nothing half-replaced looks valid), then the files it listed."""
    try:
        old = json.loads(index_path.read_text())
        listed = [f["lidar"] for f in old.get("frames", [])] + [p for f in old.get("frames", []) for p in f["cameras"].values()]
        listed += [p for f in old.get("frames", []) for p in f.get("class_images", {}).values()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        listed = []
    index_path.unlink()
    for rel in listed:
        (root / rel).unlink(missing_ok=True)
