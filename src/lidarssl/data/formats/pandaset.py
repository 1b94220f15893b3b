"""PandaSet reader: Pandar64 or PandarGT sweeps with six cameras and per-point semantic labels.

Layout (one folder per sequence)::

    <root>/<seq>/lidar/NN.pkl.gz            pickled DataFrame: x, y, z (world), i, t (s), d (0 Pandar64, 1 PandarGT)
                 lidar/poses.json           per frame {position: {x,y,z}, heading: {w,x,y,z}}: lidar pose -> world
                 lidar/timestamps.json      per frame, seconds
                 camera/<cam>/NN.jpg        six cameras: back, front, front_left, front_right, left, right
                 camera/<cam>/intrinsics.json   {fx, fy, cx, cy}
                 camera/<cam>/poses.json    per frame camera -> world, OpenCV axes (x right, y down, z forward)
                 camera/<cam>/timestamps.json
                 annotations/semseg/NN.pkl.gz   DataFrame with one column `class` per lidar row
                 annotations/semseg/classes.json   raw id -> name
                 meta/gps.json              per frame {lat, long, ...}

The ``.pkl.gz`` files are the dataset's own format: pickled DataFrames, read by a restricted unpickler
(:mod:`lidarssl.data.formats._dataframe`) that builds DataFrames and refuses any other object, so a crafted
file runs no code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from lidarssl.data.formats._common import (
    FileCheck,
    FrameReader,
    MissingCamera,
    check_choice,
    invert_rigid,
    pose_from_quaternion,
    read_camera_image,
    require_file,
    translation,
)
from lidarssl.data.formats._dataframe import read_dataframe
from lidarssl.data.labels import load_class_map
from lidarssl.data.scan import CameraView, Scan
from lidarssl.errors import DataError
from lidarssl.registry import READERS

if TYPE_CHECKING:
    import pandas as pd

CAMERAS = ("back_camera", "front_camera", "front_left_camera", "front_right_camera", "left_camera", "right_camera")
SENSORS = {"pandar64": 0, "pandargt": 1}  # value of the `d` column

#: ScaLR's split rule: sequences recorded north of this latitude (San Francisco) train, the others validate.
VAL_MAX_LATITUDE = 37.6

_LIDAR_COLUMNS = ("x", "y", "z", "i", "t", "d")
_LAYOUT = ("<root>/<sequence>/lidar/NN.pkl.gz with lidar/poses.json, lidar/timestamps.json, meta/gps.json, "
           "camera/<name>/..., annotations/semseg/...")


def pose_matrix(pose: dict, source: Path) -> np.ndarray:
    """(4, 4) transform of a PandaSet pose ``{position: {x, y, z}, heading: {w, x, y, z}}``."""
    try:
        t = [float(pose["position"][k]) for k in "xyz"]
        q = [float(pose["heading"][k]) for k in "wxyz"]
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{source}: pose entries need position {{x, y, z}} and heading {{w, x, y, z}} ({e})") from e
    return pose_from_quaternion(t, q, str(source), "heading")


def _read_json(path: Path, what: str) -> object:
    try:
        return json.loads(require_file(path, what).read_text())
    except ValueError as e:
        raise DataError(f"{path}: {what} is not valid JSON ({e})") from e


def _read_dataframe(path: Path, what: str) -> pd.DataFrame:
    return read_dataframe(require_file(path, what), what)


@dataclass(frozen=True)
class _Camera:
    K: np.ndarray
    poses: list[np.ndarray]  # camera -> world per frame
    timestamps: list[float]


@dataclass(frozen=True)
class _Sequence:
    lidar_poses: list[np.ndarray]  # lidar pose -> world per frame
    timestamps: list[float]
    cameras: dict[str, _Camera]


@READERS.register
class PandaSet(FrameReader):
    """PandaSet sweeps of one lidar as :class:`~lidarssl.data.scan.Scan`.

    Pandar64 (360 degrees) and PandarGT (forward solid state) are two datasets: ``sensor`` picks one and keeps
    its rows of each frame. Points arrive in world coordinates and are moved into the frame of that sweep's
    lidar pose (``inv(lidar_pose) @ p``); ``ego_pose`` maps them back. Per-point ``time`` is ``t`` minus the
    frame's timestamp. Each camera's ``lidar_to_cam`` is ``inv(camera_pose) @ lidar_pose``, both taken at their
    own timestamps, so the ~50 ms between the camera and the lidar is folded in. Labels map the 42 raw classes
    to ScaLR's 17 (``labels/pandaset.yaml``).

    Args:
        root: dataset folder holding the sequence folders.
        split: ``"train"`` (sequences whose first GPS latitude is above 37.6), ``"val"`` (the others), as in
            ScaLR, or ``"all"``.
        sensor: ``"pandar64"`` or ``"pandargt"``.
        z_shift: metres added to every point's z (the frame moves with the points: ``ego_pose``, the camera
            extrinsics and ``sensor_origin`` account for it). 0 keeps the lidar-pose frame, where the road is at
            about z = -0.3 m. ScaLR uses -1.6, which puts the road near -1.9 m, close to the other datasets.
        labelled_only: index only sequences with ``annotations/semseg`` (76 of 103), as ScaLR does.
        with_labels: read the semseg labels (a frame without them is then an error).
        with_images: attach the cameras.
        cameras: which cameras to attach.
        on_missing_camera: ``"error"``, or ``"skip"`` to warn and leave out a missing image.
        cache_dir: folder for the frame index (see :class:`~lidarssl.data.formats._common.FrameReader`).
        refresh: rebuild the frame index even if a valid one is cached.
    """

    reader_name = "pandaset"
    layout = "<seq>/lidar/poses.json"
    splits = ("train", "val", "all")

    @classmethod
    def detect(cls, root: Path) -> bool:
        return root.is_dir() and any((seq / "lidar" / "poses.json").is_file() for seq in root.iterdir() if seq.is_dir())

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        sensor: Literal["pandar64", "pandargt"] = "pandar64",
        z_shift: float = 0.0,
        labelled_only: bool = True,
        with_labels: bool = True,
        with_images: bool = True,
        cameras: tuple[str, ...] = CAMERAS,
        on_missing_camera: MissingCamera = "error",
        cache_dir: str | Path | None = None,
        refresh: bool = False,
    ) -> None:
        super().__init__(root, split)
        self.sensor = check_choice("sensor", sensor, SENSORS)
        for cam in cameras:
            check_choice("cameras", cam, CAMERAS)
        self.cameras = tuple(cameras)
        self.z_shift = float(z_shift)
        self.labelled_only = labelled_only
        self.with_labels = with_labels
        self.with_images = with_images
        self.on_missing_camera = check_choice("on_missing_camera", on_missing_camera, ("error", "skip"))
        self.class_map = load_class_map("pandaset")
        self._sequences: dict[str, _Sequence] = {}
        self._checked_classes: set[str] = set()
        self._open_index(cache_dir, refresh)

    def _index_options(self) -> dict[str, object]:
        return {"labelled_only": self.labelled_only}

    def _list_frames(self) -> tuple[list[list[str]], list[Path]]:
        sequences = sorted(p.name for p in self.root.iterdir() if (p / "lidar").is_dir())
        if not sequences:
            raise DataError(f"{self.root}: not a PandaSet folder; expected {_LAYOUT}")
        frames, watched = [], [self.root]
        for seq in sequences:
            folder = self.root / seq
            if self.labelled_only and not (folder / "annotations" / "semseg").is_dir():
                continue
            if self.split != "all":
                gps_path = folder / "meta" / "gps.json"
                gps = _read_json(gps_path, "GPS table")
                try:
                    latitude = float(gps[0]["lat"])
                except (IndexError, KeyError, TypeError, ValueError) as e:
                    raise DataError(f"{gps_path}: expected a list of {{lat, long, ...}} entries ({e})") from e
                if (latitude > VAL_MAX_LATITUDE) != (self.split == "train"):
                    continue
            lidar = folder / "lidar"
            watched.append(lidar)
            frames += [[seq, p.name.removesuffix(".pkl.gz")] for p in sorted(lidar.glob("*.pkl.gz"))]
        if not frames:
            raise DataError(f"{self.root}: no {'labelled ' if self.labelled_only else ''}PandaSet frames in split "
                            f"'{self.split}'; expected {_LAYOUT}")
        return frames, watched

    # Per-sequence tables -----------------------------------------------------------------------------------------

    def _sequence(self, name: str) -> _Sequence:
        if name not in self._sequences:
            self._sequences[name] = self._read_sequence(self.root / name)
        return self._sequences[name]

    def _read_sequence(self, folder: Path) -> _Sequence:
        lidar_poses = self._read_poses(folder / "lidar" / "poses.json")
        timestamps = self._read_timestamps(folder / "lidar" / "timestamps.json")
        cameras = {}
        if self.with_images:
            for cam in self.cameras:
                cam_dir = folder / "camera" / cam
                path = cam_dir / "intrinsics.json"
                intr = _read_json(path, "camera intrinsics")
                try:
                    fx, fy, cx, cy = (float(intr[k]) for k in ("fx", "fy", "cx", "cy"))
                except (KeyError, TypeError, ValueError) as e:
                    raise DataError(f"{path}: expected {{fx, fy, cx, cy}} ({e})") from e
                K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
                cameras[cam] = _Camera(K=K, poses=self._read_poses(cam_dir / "poses.json"),
                                       timestamps=self._read_timestamps(cam_dir / "timestamps.json"))
        return _Sequence(lidar_poses=lidar_poses, timestamps=timestamps, cameras=cameras)

    @staticmethod
    def _read_poses(path: Path) -> list[np.ndarray]:
        table = _read_json(path, "pose table")
        if not isinstance(table, list):
            raise DataError(f"{path}: expected a list of poses, got {type(table).__name__}")
        return [pose_matrix(p, path) for p in table]

    @staticmethod
    def _read_timestamps(path: Path) -> list[float]:
        table = _read_json(path, "timestamp table")
        try:
            return [float(t) for t in table]
        except (TypeError, ValueError) as e:
            raise DataError(f"{path}: expected a list of timestamps in seconds ({e})") from e

    def _check_classes(self, path: Path) -> None:
        """Refuse a ``classes.json`` whose names differ from the class map's (it would silently mislabel)."""
        if str(path) in self._checked_classes:
            return
        table = _read_json(path, "class table")
        try:
            names = {int(k): str(v) for k, v in table.items()}
        except (AttributeError, ValueError) as e:
            raise DataError(f"{path}: expected {{id: name}} ({e})") from e
        expected = {k: v for k, v in self.class_map.raw_names.items() if k in names}
        if names != expected:
            diff = sorted(k for k in names if names[k] != expected.get(k))
            raise DataError(f"{path}: classes {[(k, names[k]) for k in diff]} differ from the pandaset class map "
                            f"({[(k, self.class_map.raw_names.get(k)) for k in diff]})")
        self._checked_classes.add(str(path))

    # Frames ------------------------------------------------------------------------------------------------------

    @staticmethod
    def _row(table: list, index: int, source: Path) -> object:
        if index >= len(table):
            raise DataError(f"{source}: has {len(table)} entries but frame {index:02d} needs entry {index}")
        return table[index]

    def frame_files(self, index: int) -> list[FileCheck]:
        """The files frame ``index`` needs, with the sizes that make each plausible (``lidarssl prepare``)."""
        seq, stem = self.frames[index]
        folder = self.root / seq
        out = [FileCheck(folder / "lidar" / f"{stem}.pkl.gz", "lidar frame")]
        if self.with_labels:
            out.append(FileCheck(folder / "annotations" / "semseg" / f"{stem}.pkl.gz", "semseg label file"))
        if self.with_images:
            out += [FileCheck(folder / "camera" / c / f"{stem}.jpg", "camera image") for c in self.cameras]
        return out

    def frame_keys(self, index: int) -> tuple[str, ...]:
        """Strings a frame list may name frame ``index`` by: its frame id, lidar file (relative to the root), tokens."""
        seq, stem = self.frames[index]
        return (f"{seq}/{stem}", f"{seq}/lidar/{stem}.pkl.gz")

    def _read(self, frame: list[str]) -> Scan:
        seq_name, stem = frame
        folder = self.root / seq_name
        seq = self._sequence(seq_name)
        index = int(stem)

        lidar_path = folder / "lidar" / f"{stem}.pkl.gz"
        df = _read_dataframe(lidar_path, "lidar frame")
        missing = [c for c in _LIDAR_COLUMNS if c not in df.columns]
        if missing:
            raise DataError(f"{lidar_path}: columns {missing} missing; expected {list(_LIDAR_COLUMNS)}")
        keep = df["d"].to_numpy() == SENSORS[self.sensor]

        lidar_pose = self._row(seq.lidar_poses, index, folder / "lidar" / "poses.json")
        timestamp = float(self._row(seq.timestamps, index, folder / "lidar" / "timestamps.json"))
        # scan frame = lidar-pose frame moved by z_shift; scan_to_world undoes the shift, then applies the pose
        scan_to_world = lidar_pose @ translation((0.0, 0.0, -self.z_shift))
        world = df[["x", "y", "z"]].to_numpy(np.float64)[keep]
        world_to_scan = invert_rigid(scan_to_world)
        points = (world @ world_to_scan[:3, :3].T + world_to_scan[:3, 3]).astype(np.float32)

        raw_labels = labels = None
        if self.with_labels:
            semseg = folder / "annotations" / "semseg"
            label_path = semseg / f"{stem}.pkl.gz"
            self._check_classes(semseg / "classes.json")
            table = _read_dataframe(label_path, "semseg labels")
            if "class" not in table.columns or len(table) != len(df):
                has = "a 'class' column" if "class" in table.columns else "no 'class' column"
                raise DataError(f"{label_path}: expected a 'class' column with one row per lidar row ({len(df)}), "
                                f"got {has} and {len(table)} rows")
            raw_labels = table["class"].to_numpy(np.int64)[keep]
            labels = self.class_map.map(raw_labels, str(label_path))

        cameras = []
        for name, cam in seq.cameras.items():
            image_path = folder / "camera" / name / f"{stem}.jpg"
            image = read_camera_image(image_path, self.on_missing_camera)
            if image is None:
                continue
            cam_pose = self._row(cam.poses, index, folder / "camera" / name / "poses.json")
            cam_time = self._row(cam.timestamps, index, folder / "camera" / name / "timestamps.json")
            cameras.append(CameraView(name=name, image=image, K=cam.K,
                                      lidar_to_cam=invert_rigid(cam_pose) @ scan_to_world,
                                      timestamp=float(cam_time), source=str(image_path)))

        return Scan(
            points=points,
            intensity=df["i"].to_numpy(np.float32)[keep],
            time=(df["t"].to_numpy(np.float64)[keep] - timestamp).astype(np.float32),
            source=str(lidar_path),
            dataset=f"pandaset-{self.sensor}",
            frame_id=f"{seq_name}/{stem}",
            timestamp=timestamp,
            raw_labels=raw_labels,
            labels=labels,
            sensor_origin=np.array([0.0, 0.0, self.z_shift], np.float32),
            ego_pose=scan_to_world,
            cameras=cameras,
        )
