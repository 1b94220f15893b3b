"""Synthetic data in the nuScenes v1.0 layout, with tables in the format nuscenes-devkit loads.

Written under ``root``::

    <version>/{category,attribute,visibility,instance,sensor,calibrated_sensor,ego_pose,log,scene,sample,
               sample_data,sample_annotation,map,lidarseg}.json
    samples/LIDAR_TOP/<log>__LIDAR_TOP__<us>.pcd.bin   float32 x 5: x, y, z, intensity, ring
    samples/CAM_*/<log>__CAM_*__<us>.jpg
    lidarseg/<version>/<lidar sample_data token>_lidarseg.bin   uint8 lidarseg index per point
    maps/<token>.png                                   an empty semantic-prior mask (the devkit opens one per log)
    splits.json                                        {"train": [scene names], "val": [...]}

Each synthetic sequence is one log and one scene (``scene-0001``, ...); each frame is a keyframe sample with
LIDAR_TOP and every camera of the world. The lidar frame is the synthetic one (x forward, y left, z up), so
``calibrated_sensor`` of LIDAR_TOP is a pure translation, unlike nuScenes' 90-degree-rotated sensor; points
need no rotation and read back unchanged. Camera ego poses are taken at each camera's own timestamp, so the
ego motion between lidar and camera is in the tables exactly as in nuScenes. Boxes are not written
(``instance`` and ``sample_annotation`` are empty lists, which the devkit accepts).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lidarssl.data.formats._common import invert_rigid
from lidarssl.data.geometry import rotation_to_quaternion
from lidarssl.data.labels import load_class_map
from lidarssl.io import write_bytes_atomic
from lidarssl.synthetic.plan import (
    Frame,
    Generation,
    ProgressFn,
    encode_image,
    write_sequences,
)
from lidarssl.synthetic.world import EPOCH, SyntheticWorld
from lidarssl.synthetic.writers._shared import refuse_existing

#: Every table ``NuScenes(...)`` of nuscenes-devkit loads at init (lidarseg when its file exists).
TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
          "scene", "sample", "sample_data", "sample_annotation", "map", "lidarseg")

# The fixed vocabularies of the v1.0 release (referenced by boxes only; kept for a complete schema).
_ATTRIBUTES = ("vehicle.moving", "vehicle.stopped", "vehicle.parked", "cycle.with_rider", "cycle.without_rider",
               "pedestrian.sitting_lying_down", "pedestrian.standing", "pedestrian.moving")
_VISIBILITY = (("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100"))

# An 8x8 all-background grey PNG stands in for the semantic-prior map mask the devkit opens per log.
_MAP_SIZE = 8


def _pose_record(T: np.ndarray) -> dict[str, list[float]]:
    """``translation`` and ``rotation`` (w, x, y, z) of a (4, 4) rigid transform, as the tables store them."""
    return {"translation": [float(v) for v in T[:3, 3]], "rotation": rotation_to_quaternion(T[:3, :3]).tolist()}


def microseconds(seconds: float) -> int:
    """A timestamp in seconds as nuScenes' integer microseconds."""
    return round(seconds * 1e6)


class NuScenesTables:
    """Builds the v1.0 tables record by record and writes them as nuscenes-devkit expects.

    Tokens are 32 hex digits from a hash of ``namespace`` and a counter (stable for the same calls); calls
    that know a real token may pass it. ``sample_data`` chains (``prev``/``next``) run per scene and channel,
    each sample_data gets an ego_pose of the same token (as in nuScenes), and scenes count their samples.

    Args:
        version: table folder name, e.g. ``v1.0-trainval``.
        namespace: mixed into generated tokens, so two builders never share one.
    """

    def __init__(self, version: str, namespace: str = "lidarssl-synthetic") -> None:
        self.version = version
        self.namespace = namespace
        self.records: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
        self._count = 0
        self._sensors: dict[str, str] = {}  # channel -> sensor token
        self._channel: dict[str, str] = {}  # calibrated_sensor token -> channel
        self._scenes: dict[str, dict[str, Any]] = {}
        self._sample_scene: dict[str, str] = {}  # sample token -> scene token
        self._last_sample: dict[str, dict[str, Any]] = {}  # scene token -> its last sample
        self._last_data: dict[tuple[str, str], dict[str, Any]] = {}  # (scene, channel) -> last sample_data
        for index, name in sorted(load_class_map("nuscenes").raw_names.items()):
            self.records["category"].append({"token": self.new_token(), "name": name,
                                             "description": f"nuScenes-lidarseg class {name}", "index": index})
        for name in _ATTRIBUTES:
            self.records["attribute"].append({"token": self.new_token(), "name": name, "description": name})
        for token, level in _VISIBILITY:
            self.records["visibility"].append({"token": token, "level": level,
                                               "description": f"visibility of the whole object is {level[1:]}%"})

    def new_token(self) -> str:
        """A fresh 32-hex-digit token."""
        self._count += 1
        return hashlib.md5(f"{self.namespace}:{self._count}".encode()).hexdigest()

    def add_log(self, logfile: str, vehicle: str, date_captured: str, location: str) -> str:
        """A ``log`` record; returns its token."""
        token = self.new_token()
        self.records["log"].append({"token": token, "logfile": logfile, "vehicle": vehicle,
                                    "date_captured": date_captured, "location": location})
        return token

    def add_scene(self, name: str, log_token: str, description: str = "") -> str:
        """A ``scene`` record (its samples are counted as they are added); returns its token."""
        token = self.new_token()
        scene = {"token": token, "log_token": log_token, "nbr_samples": 0, "first_sample_token": "",
                 "last_sample_token": "", "name": name, "description": description}
        self.records["scene"].append(scene)
        self._scenes[token] = scene
        return token

    def add_sample(self, scene_token: str, timestamp: int, token: str | None = None) -> str:
        """The next keyframe ``sample`` of a scene, linked to the previous one; returns its token."""
        token = token or self.new_token()
        scene = self._scenes[scene_token]
        prev = self._last_sample.get(scene_token)
        sample = {"token": token, "timestamp": int(timestamp), "prev": prev["token"] if prev else "", "next": "",
                  "scene_token": scene_token}
        if prev:
            prev["next"] = token
        else:
            scene["first_sample_token"] = token
        scene["last_sample_token"] = token
        scene["nbr_samples"] += 1
        self.records["sample"].append(sample)
        self._last_sample[scene_token] = sample
        self._sample_scene[token] = scene_token
        return token

    def add_calibrated_sensor(self, channel: str, sensor_to_ego: np.ndarray, K: np.ndarray | None = None) -> str:
        """A ``calibrated_sensor`` record (and the ``sensor`` of ``channel`` the first time); returns its token."""
        if channel not in self._sensors:
            modality = "camera" if channel.startswith("CAM") else "lidar" if channel.startswith("LIDAR") else "radar"
            self._sensors[channel] = self.new_token()
            self.records["sensor"].append({"token": self._sensors[channel], "channel": channel, "modality": modality})
        token = self.new_token()
        intrinsic = [] if K is None else np.asarray(K, dtype=np.float64).tolist()
        self.records["calibrated_sensor"].append({"token": token, "sensor_token": self._sensors[channel],
                                                  **_pose_record(sensor_to_ego), "camera_intrinsic": intrinsic})
        self._channel[token] = channel
        return token

    def add_sample_data(
        self,
        sample_token: str,
        calibrated_sensor_token: str,
        filename: str,
        timestamp: int,
        ego_to_global: np.ndarray,
        *,
        is_key_frame: bool = True,
        width: int = 0,
        height: int = 0,
        token: str | None = None,
    ) -> str:
        """A ``sample_data`` record with its ``ego_pose`` (same token), chained per scene and channel."""
        token = token or self.new_token()
        scene = self._sample_scene[sample_token]
        key = (scene, self._channel[calibrated_sensor_token])
        prev = self._last_data.get(key)
        fileformat = "pcd" if filename.endswith(".pcd.bin") else filename.rsplit(".", 1)[-1]
        self.records["ego_pose"].append({"token": token, "timestamp": int(timestamp), **_pose_record(ego_to_global)})
        record = {"token": token, "sample_token": sample_token, "ego_pose_token": token,
                  "calibrated_sensor_token": calibrated_sensor_token, "timestamp": int(timestamp),
                  "fileformat": fileformat, "is_key_frame": is_key_frame, "height": int(height), "width": int(width),
                  "filename": filename, "prev": prev["token"] if prev else "", "next": ""}
        if prev:
            prev["next"] = token
        self.records["sample_data"].append(record)
        self._last_data[key] = record
        return token

    def add_lidarseg(self, sample_data_token: str, filename: str) -> None:
        """A ``lidarseg`` record; nuScenes gives it the token of its lidar sample_data."""
        self.records["lidarseg"].append({"token": sample_data_token, "sample_data_token": sample_data_token,
                                         "filename": filename})

    def write(self, root: Path) -> Path:
        """Write the map mask and every table under ``root``; ``sample_data.json`` last. Returns the table folder.

        One map record covers every log (the devkit looks a map up for each log and opens its mask file).
        """
        map_token = self.new_token()
        map_file = f"maps/{map_token}.png"
        write_bytes_atomic(root / map_file, encode_image(np.zeros((_MAP_SIZE, _MAP_SIZE), np.uint8), "PNG"))
        self.records["map"] = [{"token": map_token, "category": "semantic_prior", "filename": map_file,
                                "log_tokens": [log["token"] for log in self.records["log"]]}]
        folder = root / self.version
        for name in (*[t for t in TABLES if t != "sample_data"], "sample_data"):
            write_bytes_atomic(folder / f"{name}.json", json.dumps(self.records[name], indent=0).encode())
        return folder


def write_nuscenes(
    source: SyntheticWorld | Mapping[str, Any],
    root: str | os.PathLike[str],
    num_frames: int,
    *,
    version: str = "v1.0-trainval",
    frames_per_sequence: int | None = None,
    val_fraction: float = 0.2,
    jpeg_quality: int = 95,
    threads: int | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """Generate ``num_frames`` synthetic frames and write them in the nuScenes layout.

    Read them back with :class:`~lidarssl.data.formats.NuScenes` (``splits.json`` gives its train/val) or
    with nuscenes-devkit. Sequences and arguments are those of :func:`~lidarssl.synthetic.write_dataset`.

    Args:
        source: a :class:`SyntheticWorld`, or its parameters.
        root: output folder; it must not hold tables of ``version`` yet.
        num_frames: total frames over all sequences.
        version: table folder name.
        frames_per_sequence: frames per sequence (scene); defaults to the world's ``num_frames``.
        val_fraction: share of sequences held out as ``val``.
        jpeg_quality: JPEG quality of the camera images.
        threads: render threads (see :class:`~lidarssl.synthetic.plan.Generation`).
        progress: called with (written, total) after each frame.

    Returns:
        The table folder ``root/version``.

    Raises:
        DataError: ``root/version`` already holds files.
        ConfigError: invalid parameters.
    """
    gen = Generation(source, num_frames, frames_per_sequence=frames_per_sequence, val_fraction=val_fraction,
                     threads=threads)
    root = Path(root)
    refuse_existing(root / version, f"nuScenes {version} tables")
    tables = NuScenesTables(version)
    splits: dict[str, list[str]] = {"train": [], "val": []}
    write_sequences(gen, lambda first: _SceneWriter(tables, root, first, splits, jpeg_quality), progress)
    write_bytes_atomic(root / "splits.json", json.dumps(splits, indent=1).encode())
    return tables.write(root)


class _SceneWriter:
    """One sequence as one log and one scene, with one calibration per sensor; frames become keyframe samples."""

    def __init__(self, tables: NuScenesTables, root: Path, first: Frame, splits: dict[str, list[str]],
                 quality: int) -> None:
        seq, world = first.sequence, first.world
        self.tables, self.root, self.quality = tables, root, quality
        self.log = f"synthetic-seed{seq.seed}"
        name = f"scene-{seq.id + 1:04d}"
        splits[seq.split].append(name)
        self.scene = tables.add_scene(name, tables.add_log(self.log, "synthetic", _date(), "synthetic"),
                                      f"lidarssl synthetic world, seed {seq.seed}, {seq.split}")
        self.calib = {"LIDAR_TOP": tables.add_calibrated_sensor("LIDAR_TOP", world.lidar.ego_from_lidar())}
        for cam in world.cameras:
            self.calib[cam.name] = tables.add_calibrated_sensor(cam.name, cam.ego_from_cam(), cam.K)

    def add(self, frame: Frame) -> None:
        scan, world, tables = frame.scan, frame.world, self.tables
        stamp = microseconds(scan.timestamp)
        sample = tables.add_sample(self.scene, stamp)
        # scan.ego_pose is lidar -> global; the tables split it into ego -> global and lidar -> ego
        ego_to_global = scan.ego_pose @ invert_rigid(world.lidar.ego_from_lidar())
        lidar_file = f"samples/LIDAR_TOP/{self.log}__LIDAR_TOP__{stamp}.pcd.bin"
        columns = np.column_stack([scan.points, scan.intensity, scan.ring]).astype("<f4")
        write_bytes_atomic(self.root / lidar_file, columns.tobytes())
        lidar = tables.add_sample_data(sample, self.calib["LIDAR_TOP"], lidar_file, stamp, ego_to_global)
        label_file = f"lidarseg/{tables.version}/{lidar}_lidarseg.bin"
        write_bytes_atomic(self.root / label_file, scan.raw_labels.astype(np.uint8).tobytes())
        tables.add_lidarseg(lidar, label_file)
        for view, cam in zip(scan.cameras, world.cameras):
            cam_stamp = microseconds(view.timestamp)
            image_file = f"samples/{view.name}/{self.log}__{view.name}__{cam_stamp}.jpg"
            write_bytes_atomic(self.root / image_file, encode_image(view.image, "JPEG", self.quality))
            # ego pose at the camera time: camera -> global, then back onto the ego origin
            cam_to_global = scan.ego_pose @ invert_rigid(view.lidar_to_cam)
            h, w = view.hw
            tables.add_sample_data(sample, self.calib[view.name], image_file, cam_stamp,
                                   cam_to_global @ invert_rigid(cam.ego_from_cam()), width=w, height=h)

    def finish(self) -> None:
        """Nothing to close: the tables are written once, after every scene."""


def _date() -> str:
    """The capture date of synthetic logs (their timestamps start at ``EPOCH``)."""
    return datetime.datetime.fromtimestamp(EPOCH, datetime.UTC).strftime("%Y-%m-%d")
