"""Synthetic data in the PandaSet layout (one folder per sequence, pickled DataFrames, JSON tables).

Written under ``root``, per sequence ``NNN`` (001, 002, ...)::

    NNN/lidar/FF.pkl.gz              DataFrame x, y, z (world), i (0..255), t (s), d (0 = Pandar64)
    NNN/lidar/poses.json             lidar -> world per frame {position, heading (w, x, y, z)}
    NNN/lidar/timestamps.json
    NNN/camera/<name>/FF.jpg         six cameras, named as PandaSet's (see CAMERA_NAMES)
    NNN/camera/<name>/{intrinsics,poses,timestamps}.json   poses: camera -> world, OpenCV axes
    NNN/annotations/semseg/FF.pkl.gz DataFrame with one ``class`` column, PandaSet raw ids
    NNN/annotations/semseg/classes.json
    NNN/meta/gps.json, NNN/meta/timestamps.json

The world frame of a sequence is its first lidar pose, as in PandaSet. Every point is a Pandar64 point and
carries the sweep's timestamp (synthetic sweeps are instantaneous). The reader splits sequences by their first
GPS latitude (ScaLR's rule, 37.6); the writer places training sequences north of it and validation ones south,
so the splits read back as written. The per-sequence JSON tables are written after the sequence's frames.

Read back, ``ego_pose`` is relative to the sequence's first sweep; points, intensity, labels (after mapping)
and every camera projection are those of the synthetic scan.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lidarssl.data.formats._common import invert_rigid
from lidarssl.data.geometry import rotation_to_quaternion
from lidarssl.data.labels import load_class_map
from lidarssl.errors import ConfigError
from lidarssl.io import write_bytes_atomic
from lidarssl.synthetic.plan import (
    Frame,
    Generation,
    ProgressFn,
    encode_image,
    write_sequences,
)
from lidarssl.synthetic.world import SyntheticWorld
from lidarssl.synthetic.writers._shared import (
    label_table,
    refuse_existing,
    relative_pose,
)

#: Synthetic (nuScenes-like) camera -> PandaSet camera. PandaSet's side cameras look sideways, nuScenes'
#: back-side cameras 20 degrees further back; the names follow the closest view.
CAMERA_NAMES = {"CAM_FRONT": "front_camera", "CAM_FRONT_LEFT": "front_left_camera",
                "CAM_FRONT_RIGHT": "front_right_camera", "CAM_BACK": "back_camera", "CAM_BACK_LEFT": "left_camera",
                "CAM_BACK_RIGHT": "right_camera"}

#: nuScenes-lidarseg raw id -> PandaSet raw id. After each dataset's 16/17-class learning map: trailer
#: (22 -> Towed Object) and construction_vehicle both become other-vehicle, and other_flat and terrain both
#: become ground; every other nuScenes class keeps one PandaSet class. nuScenes ids without a class map to
#: PandaSet ids without one (noise and ego -> 0, animal, personal mobility, emergency vehicles, pushable ->
#: rolling containers), except stroller and wheelchair (pedestrian with object), debris, bicycle rack and
#: static other (other static object -> manmade).
NUSCENES_TO_PANDASET: dict[int, int] = {
    0: 0,  # noise -> unlabeled
    1: 33,  # animal -> Animals - Other
    2: 30, 3: 30, 4: 30, 6: 30,  # adult, child, construction worker, police officer -> Pedestrian
    5: 24,  # personal mobility -> Personal Mobility Device
    7: 31, 8: 31,  # stroller, wheelchair -> Pedestrian with Object
    9: 35,  # barrier -> Road Barriers
    10: 42,  # debris -> Other Static Object
    11: 40,  # pushable/pullable (bins, carts) -> Rolling Containers
    12: 37,  # traffic cone -> Cones
    13: 42,  # bicycle rack -> Other Static Object
    14: 26,  # bicycle
    15: 23, 16: 23,  # bendy and rigid bus -> Bus
    17: 13,  # car
    18: 19,  # construction vehicle -> Other Vehicle - Construction Vehicle
    19: 22, 20: 22,  # ambulance, police vehicle -> Emergency Vehicle
    21: 18,  # motorcycle
    22: 17,  # trailer -> Towed Object
    23: 15,  # truck -> Medium-sized Truck
    24: 7,  # driveable surface -> Road
    25: 6, 27: 6,  # other flat, terrain -> Ground
    26: 11,  # sidewalk
    28: 41,  # manmade -> Building
    29: 42,  # static other -> Other Static Object
    30: 5,  # vegetation
    31: 0,  # ego vehicle -> unlabeled
}
_TABLE = label_table(NUSCENES_TO_PANDASET)

# First GPS latitude of training and validation sequences (the reader's threshold is 37.6) and longitude.
_LATITUDE = {"train": 37.77, "val": 37.40}
_LONGITUDE = -122.40
_METRES_PER_DEGREE = 111_320.0


def _pose_json(T: np.ndarray) -> dict[str, dict[str, float]]:
    w, x, y, z = rotation_to_quaternion(T[:3, :3])
    return {"position": dict(zip("xyz", map(float, T[:3, 3]))),
            "heading": {"w": float(w), "x": float(x), "y": float(y), "z": float(z)}}


def _dataframe_bytes(columns: dict[str, np.ndarray]) -> bytes:
    """A gzip-compressed pickled DataFrame, PandaSet's file format (mtime 0: same bytes for the same data)."""
    import pandas as pd

    buf = io.BytesIO()
    pd.DataFrame(columns).to_pickle(buf, compression={"method": "gzip", "compresslevel": 1, "mtime": 0})
    return buf.getvalue()


def write_pandaset(
    source: SyntheticWorld | Mapping[str, Any],
    root: str | os.PathLike[str],
    num_frames: int,
    *,
    frames_per_sequence: int | None = None,
    val_fraction: float = 0.2,
    jpeg_quality: int = 95,
    threads: int | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """Generate ``num_frames`` synthetic frames and write them in the PandaSet layout.

    Read them back with :class:`~lidarssl.data.formats.PandaSet` (``sensor="pandar64"``; with a world whose
    cameras are not the six nuScenes-like ones, pass ``with_images=False`` or the written ``cameras``).
    Sequences and arguments are those of :func:`~lidarssl.synthetic.write_dataset`.

    Args:
        source: a :class:`SyntheticWorld`, or its parameters.
        root: output folder; it must not exist or be empty.
        num_frames: total frames over all sequences.
        frames_per_sequence: frames per sequence; defaults to the world's ``num_frames``.
        val_fraction: share of sequences held out as ``val``.
        jpeg_quality: JPEG quality of the camera images.
        threads: render threads (see :class:`~lidarssl.synthetic.plan.Generation`).
        progress: called with (written, total) after each frame.

    Returns:
        ``root``.

    Raises:
        DataError: ``root`` already holds files.
        ConfigError: invalid parameters, or a camera without a PandaSet name.
    """
    gen = Generation(source, num_frames, frames_per_sequence=frames_per_sequence, val_fraction=val_fraction,
                     threads=threads)
    unnamed = [c for c in gen.world0.camera_names if c not in CAMERA_NAMES]
    if unnamed:
        raise ConfigError(f"cameras {unnamed} have no PandaSet name (known: {sorted(CAMERA_NAMES)}); "
                          "use cameras='nuscenes' or 'none'")
    root = Path(root)
    refuse_existing(root, "files")
    write_sequences(gen, lambda first: _SequenceWriter(root / f"{first.sequence.id + 1:03d}", first.sequence.split,
                                                       jpeg_quality), progress)
    return root


class _SequenceWriter:
    """Writes the frames of one sequence as they come, and its JSON tables at the end."""

    def __init__(self, folder: Path, split: str, quality: int) -> None:
        self.folder = folder
        self.split = split
        self.quality = quality
        self.first_pose: np.ndarray | None = None  # lidar -> global of the first sweep: the world frame
        self.lidar_poses: list[dict] = []
        self.positions: list[np.ndarray] = []
        self.timestamps: list[float] = []
        self.cameras: dict[str, dict[str, Any]] = {}

    def add(self, frame: Frame) -> None:
        scan = frame.scan
        if self.first_pose is None:
            self.first_pose = scan.ego_pose
        lidar_to_world = relative_pose(self.first_pose, scan.ego_pose)
        world = scan.points.astype(np.float64) @ lidar_to_world[:3, :3].T + lidar_to_world[:3, 3]
        stem = f"{frame.index:02d}"
        n = len(scan)
        write_bytes_atomic(self.folder / "lidar" / f"{stem}.pkl.gz", _dataframe_bytes({
            "x": world[:, 0], "y": world[:, 1], "z": world[:, 2], "i": scan.intensity.astype(np.float64),
            "t": scan.timestamp + (scan.time if scan.time is not None else np.zeros(n)), "d": np.zeros(n, np.int64)}))
        write_bytes_atomic(self.folder / "annotations" / "semseg" / f"{stem}.pkl.gz",
                     _dataframe_bytes({"class": _TABLE[scan.raw_labels]}))
        for view in scan.cameras:
            name = CAMERA_NAMES[view.name]
            write_bytes_atomic(self.folder / "camera" / name / f"{stem}.jpg", encode_image(view.image, "JPEG", self.quality))
            cam = self.cameras.setdefault(name, {"K": view.K, "poses": [], "timestamps": []})
            cam["poses"].append(_pose_json(lidar_to_world @ invert_rigid(view.lidar_to_cam)))
            cam["timestamps"].append(view.timestamp)
        self.lidar_poses.append(_pose_json(lidar_to_world))
        self.positions.append(lidar_to_world[:3, 3])
        self.timestamps.append(scan.timestamp)

    def finish(self) -> None:
        def put(rel: str, doc: object) -> None:
            write_bytes_atomic(self.folder / rel, json.dumps(doc).encode())

        for name, cam in self.cameras.items():
            K = cam["K"]
            put(f"camera/{name}/intrinsics.json",
                {"fx": float(K[0, 0]), "fy": float(K[1, 1]), "cx": float(K[0, 2]), "cy": float(K[1, 2])})
            put(f"camera/{name}/poses.json", cam["poses"])
            put(f"camera/{name}/timestamps.json", cam["timestamps"])
        classes = load_class_map("pandaset").raw_names
        put("annotations/semseg/classes.json", {str(k): v for k, v in classes.items() if k})
        put("meta/gps.json", self._gps())
        put("meta/timestamps.json", self.timestamps)
        put("lidar/poses.json", self.lidar_poses)
        put("lidar/timestamps.json", self.timestamps)

    def _gps(self) -> list[dict[str, float]]:
        """Latitude and longitude from the lidar positions around the split's base point, velocities by
        finite differences."""
        pos = np.array(self.positions)
        vel = np.gradient(pos[:, :2], np.array(self.timestamps), axis=0) if len(pos) > 1 else np.zeros((1, 2))
        lat0 = _LATITUDE[self.split]
        lat = lat0 + pos[:, 1] / _METRES_PER_DEGREE
        lon = _LONGITUDE + pos[:, 0] / (_METRES_PER_DEGREE * np.cos(np.deg2rad(lat0)))
        return [{"lat": float(a), "long": float(o), "height": float(p[2]), "xvel": float(v[0]), "yvel": float(v[1])}
                for a, o, p, v in zip(lat, lon, pos, vel)]
