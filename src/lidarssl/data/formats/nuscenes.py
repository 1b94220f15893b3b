"""nuScenes reader: LIDAR_TOP keyframes with nuScenes-lidarseg labels, earlier sweeps and the six cameras.

Layout (the official v1.0 download; the JSON tables are read directly, nuscenes-devkit is not needed)::

    <root>/<version>/{scene,sample,sample_data,calibrated_sensor,ego_pose,sensor,category,lidarseg,...}.json
    <root>/samples/LIDAR_TOP/*.pcd.bin      float32 x 5: x, y, z, intensity (0-255), ring (0-31); LIDAR_TOP frame
    <root>/samples/CAM_*/*.jpg              keyframe images
    <root>/sweeps/LIDAR_TOP/*.pcd.bin       lidar sweeps between keyframes
    <root>/lidarseg/<version>/<lidar sample_data token>_lidarseg.bin   uint8 lidarseg index (0-31) per point
    <root>/splits.json                      optional: {split name: [scene names]}

``<version>`` is ``v1.0-trainval``, ``v1.0-mini`` or ``v1.0-test``. Quaternions in the tables are
``(w, x, y, z)``; ``translation``/``rotation`` of ``calibrated_sensor`` map sensor -> ego and those of
``ego_pose`` map ego -> global at the timestamp of the sample_data that owns them.

The table lookups are resolved once, when the frame index is built: each indexed frame carries its file
names, timestamps and ego poses, and the index's shared part the calibrations they refer to (about 3 kB per
keyframe with six cameras, ~100 MB for v1.0-trainval). Reading a frame then opens no table, so DataLoader
workers stay small and fast, where the devkit holds every table in memory (a few GB for v1.0-trainval).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lidarssl.data.formats._common import (
    FileCheck,
    FrameReader,
    MissingCamera,
    check_choice,
    image_reduction,
    invert_rigid,
    pose_from_quaternion,
    read_camera_image,
    read_labels,
    read_points,
    reduce_intrinsics,
    require_file,
)
from lidarssl.data.labels import load_class_map
from lidarssl.data.scan import CameraView, Scan
from lidarssl.errors import DataError
from lidarssl.registry import READERS

VERSIONS = ("v1.0-trainval", "v1.0-mini", "v1.0-test")
LIDAR = "LIDAR_TOP"
CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT")

#: The devkit's ``mini_train`` / ``mini_val`` scene lists: the ten scenes of v1.0-mini.
MINI_SPLITS: dict[str, tuple[str, ...]] = {
    "mini_train": ("scene-0061", "scene-0553", "scene-0655", "scene-0757", "scene-0796", "scene-1077",
                   "scene-1094", "scene-1100"),
    "mini_val": ("scene-0103", "scene-0916"),
}
#: Split file looked up in the dataset root when no ``splits`` argument is given.
SPLIT_FILE = "splits.json"

# Fields each table record must have for this reader (a subset of the devkit schema).
_FIELDS: dict[str, tuple[str, ...]] = {
    "scene": ("token", "name", "first_sample_token"),
    "sample": ("token", "timestamp", "next"),
    "sample_data": ("token", "sample_token", "ego_pose_token", "calibrated_sensor_token", "filename", "timestamp",
                    "is_key_frame", "prev"),
    "calibrated_sensor": ("token", "sensor_token", "translation", "rotation", "camera_intrinsic"),
    "ego_pose": ("token", "translation", "rotation"),
    "sensor": ("token", "channel", "modality"),
    "lidarseg": ("token", "sample_data_token", "filename"),
    "category": ("token", "name"),
}
_LAYOUT = "<root>/v1.0-{trainval,mini,test}/{scene,sample,sample_data,...}.json with samples/ and sweeps/"
_SPLIT_HELP = ("export the devkit's lists once with `python -c \"import json; from nuscenes.utils.splits import "
               "create_splits_scenes as c; json.dump(c(), open('splits.json', 'w'))\"` and put splits.json in the "
               "dataset root, or pass splits={name: [scene names]}")


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(require_file(path, what).read_text())
    except ValueError as e:
        raise DataError(f"{path}: {what} is not valid JSON ({e})") from e


def read_split_lists(root: Path, splits: Mapping[str, Sequence[str]] | str | Path | None) -> dict[str, tuple[str, ...]]:
    """Scene lists per split name: from ``splits`` (a mapping or a JSON file), else ``<root>/splits.json``.

    Returns an empty dict when neither is given.
    """
    source = "splits argument"
    if splits is None:
        path = root / SPLIT_FILE
        if not path.is_file():
            return {}
        splits = path
    if isinstance(splits, str | Path):
        source = str(splits)
        splits = _read_json(Path(splits), "split file")
    if not isinstance(splits, Mapping) or not all(
            isinstance(v, list | tuple) and all(isinstance(n, str) for n in v) for v in splits.values()):
        raise DataError(f"{source}: expected {{split name: [scene names]}}, e.g. {{\"train\": [\"scene-0001\"]}}")
    return {str(k): tuple(v) for k, v in splits.items()}


@READERS.register
class NuScenes(FrameReader):
    """nuScenes LIDAR_TOP keyframes as :class:`~lidarssl.data.scan.Scan`.

    Points stay in the LIDAR_TOP frame (x right, y forward, z up), with ``intensity`` (0-255) and ``ring``.
    ``ego_pose`` maps them to the global frame (``ego_pose @ calibrated_sensor`` of the keyframe). Each
    camera's ``lidar_to_cam`` goes lidar -> ego (lidar time) -> global -> ego (camera time) -> camera, so the
    ego motion between the two timestamps (up to ~0.4 m at city speed) is folded in. Labels are the
    lidarseg indices (``raw_labels``, 0-31) mapped to the 16 challenge classes (``labels/nuscenes.yaml``).

    With ``sweeps = k`` the k sample_data before the keyframe (following ``prev``, keyframes or not) are moved
    into the keyframe's lidar frame through their own ego poses and appended; ``time`` is each point's sweep
    timestamp minus the keyframe's (0 for keyframe points, negative for earlier sweeps). Sweep points carry
    no lidarseg label: their raw label is 0 (noise), which maps to the ignore id.

    Args:
        root: dataset folder (see the module docstring for the layout).
        split: ``"all"`` (every scene of the version), a split of ``splits`` or of ``<root>/splits.json``,
            ``"mini_train"``/``"mini_val"`` (the devkit's lists), ``"train"``/``"val"`` on v1.0-mini (the
            same lists) or ``"test"`` on v1.0-test (all its scenes). Scenes of a split that the version does
            not hold are left out; a split with none of its scenes is an error. The official 700/150 scene
            lists of v1.0-trainval are not shipped: give them through ``splits`` or ``splits.json``.
        version: table folder; found in ``root`` when None (with several, ``v1.0-test`` for split
            ``"test"`` and ``v1.0-trainval`` otherwise).
        splits: ``{split name: [scene names]}`` or a JSON file holding it (the devkit's
            ``create_splits_scenes()`` dumped as JSON works as is).
        sweeps: earlier lidar sweeps to merge into each keyframe.
        with_labels: read the lidarseg labels (never on v1.0-test); ``lidarseg.json`` and a label file per
            keyframe are then required.
        with_images: attach the cameras.
        cameras: which cameras to attach.
        on_missing_camera: ``"error"``, or ``"skip"`` to warn and leave out a missing image.
        image_scale: 1, 0.5, 0.25 or 0.125: decode the JPEGs at that fraction of their size (JPEG's DCT scaling,
            much faster than decoding then resizing), with the intrinsics scaled to match. For consumers that
            resize the images down anyway (image teachers at 224-448 pixels high).
        cache_dir: folder for the frame index (see :class:`~lidarssl.data.formats._common.FrameReader`).
        refresh: rebuild the frame index even if a valid one is cached.
    """

    reader_name = "nuscenes"
    layout = "v1.0-*/sample_data.json"
    fraction_rule = "scenes"  # SLidR's protocol: `<p>%` counts scenes
    reads_scene_lists = True  # the scene lists of splits.json are splits of the reader itself (`splits` option)
    splits = ("train", "val", "test", "mini_train", "mini_val", "all")

    @classmethod
    def detect(cls, root: Path) -> bool:
        return any(root.glob("v1.0-*/sample_data.json"))

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        version: str | None = None,
        splits: Mapping[str, Sequence[str]] | str | Path | None = None,
        sweeps: int = 0,
        with_labels: bool = True,
        with_images: bool = True,
        cameras: tuple[str, ...] = CAMERAS,
        on_missing_camera: MissingCamera = "error",
        image_scale: float = 1.0,
        cache_dir: str | Path | None = None,
        refresh: bool = False,
    ) -> None:
        custom = read_split_lists(Path(root).expanduser(), splits)
        self.splits = tuple(dict.fromkeys((*type(self).splits, *custom)))
        super().__init__(root, split)
        self.version = self._find_version(version)
        self.tables_dir = self.root / self.version
        if int(sweeps) != sweeps or sweeps < 0:
            raise DataError(f"'sweeps' must be a non-negative integer, got {sweeps}")
        self.sweeps = int(sweeps)
        for cam in cameras:
            check_choice("cameras", cam, CAMERAS)
        self.cameras = tuple(cameras)
        self.with_labels = with_labels and self.version != "v1.0-test"
        self.with_images = with_images
        self.on_missing_camera = check_choice("on_missing_camera", on_missing_camera, ("error", "skip"))
        self.image_reduce = image_reduction(image_scale)
        self.class_map = load_class_map("nuscenes")
        self.scene_names = self._split_scenes(split, custom)
        self._open_index(cache_dir, refresh)

    # Layout and splits -------------------------------------------------------------------------------------------

    def _find_version(self, version: str | None) -> str:
        found = [v for v in VERSIONS if (self.root / v).is_dir()]
        if version is not None:
            if not (self.root / version).is_dir():
                raise DataError(f"{self.root / version}: no such nuScenes table folder; this root holds {found}")
            return version
        if not found:
            raise DataError(f"{self.root}: not a nuScenes folder; expected {_LAYOUT}")
        if len(found) > 1:
            preferred = "v1.0-test" if self.split == "test" else "v1.0-trainval"
            if preferred not in found:
                raise DataError(f"{self.root}: holds several nuScenes versions {found}; pass version=")
            return preferred
        return found[0]

    def _split_scenes(self, split: str, custom: dict[str, tuple[str, ...]]) -> tuple[str, ...] | None:
        """Scene names of ``split``, or None for every scene of the version."""
        if split in custom:
            return custom[split]
        if split == "all" or (split == "test" and self.version == "v1.0-test"):
            return None
        if split in MINI_SPLITS:
            return MINI_SPLITS[split]
        if self.version == "v1.0-mini" and split in ("train", "val"):
            return MINI_SPLITS[f"mini_{split}"]
        raise DataError(f"{self.root}: split '{split}' of {self.version} needs its scene list; {_SPLIT_HELP}")

    @property
    def index_name(self) -> str:
        return f"{self.reader_name}-{self.version}-{self.split}-sweeps{self.sweeps}"

    def _index_options(self) -> dict[str, object]:
        return {"version": self.version, "labels": self.with_labels,
                "scenes": sorted(self.scene_names) if self.scene_names is not None else None}

    # Index: resolve the tables once -------------------------------------------------------------------------------

    def _table_path(self, name: str) -> Path:
        return self.tables_dir / f"{name}.json"

    def _load_table(self, name: str) -> list[dict]:
        """A table as a list of records, each checked to have the fields this reader uses."""
        path = self._table_path(name)
        table = _read_json(path, "nuScenes table")
        need = set(_FIELDS[name])
        if not isinstance(table, list):
            raise DataError(f"{path}: expected a list of records, got {type(table).__name__}")
        for i, rec in enumerate(table):
            if not isinstance(rec, dict):
                raise DataError(f"{path}: record {i} is a {type(rec).__name__}, not an object")
            if not need.issubset(rec):
                raise DataError(f"{path}: record {i} lacks fields {sorted(need - rec.keys())}; it has {sorted(rec)}")
        return table

    def _ref(self, index: dict[str, dict], token: str, table: str, referrer: str) -> dict:
        try:
            return index[token]
        except KeyError:
            raise DataError(f"{self._table_path(table)}: no record with token '{token}' "
                            f"(referred to by {referrer})") from None

    def _list_frames(self) -> tuple[list[list[Any]], list[Path]]:
        names = ["scene", "sample", "sample_data", "calibrated_sensor", "ego_pose", "sensor"]
        if self.with_labels:
            names += ["category", "lidarseg"]
        tables = {name: self._load_table(name) for name in names}
        index = {name: {r["token"]: r for r in table} for name, table in tables.items()}
        if self.with_labels:
            self._check_categories(tables["category"])
        lidarseg = {r["sample_data_token"]: r["filename"] for r in tables.get("lidarseg", ())}

        channel = {}  # calibrated_sensor token -> sensor channel
        for calib in tables["calibrated_sensor"]:
            sensor = self._ref(index["sensor"], calib["sensor_token"], "sensor", f"calibrated_sensor {calib['token']}")
            channel[calib["token"]] = sensor["channel"]
        keyframes: dict[str, dict[str, dict]] = {}  # sample token -> channel -> sample_data record
        for sd in tables["sample_data"]:
            if sd["is_key_frame"]:
                calib = self._ref(index["calibrated_sensor"], sd["calibrated_sensor_token"], "calibrated_sensor",
                                  f"sample_data {sd['token']}")
                keyframes.setdefault(sd["sample_token"], {})[channel[calib["token"]]] = sd

        scenes = {s["name"]: s for s in tables["scene"]}
        wanted = sorted(scenes) if self.scene_names is None else sorted(set(self.scene_names) & set(scenes))
        self.shared = {"calibrated_sensor": {}}
        frames: list[list[Any]] = []
        for name in wanted:
            token = scenes[name]["first_sample_token"]
            while token:
                sample = self._ref(index["sample"], token, "sample", f"scene {name}")
                data = keyframes.get(token, {})
                if LIDAR not in data:
                    raise DataError(f"{self._table_path('sample_data')}: sample {token} of {name} has no "
                                    f"{LIDAR} keyframe")
                frames.append([name, token, self._resolve(data, index, lidarseg)])
                token = sample["next"]
        if not frames:
            raise DataError(f"{self.tables_dir}: no scene of split '{self.split}' "
                            f"({', '.join(self.scene_names or ())}) in {self.version}")
        watched = [self._table_path(n) for n in names]
        return frames, watched

    def _check_categories(self, categories: list[dict]) -> None:
        """Refuse a category table whose lidarseg indices name other classes than the class map's."""
        path = self._table_path("category")
        if not all("index" in c for c in categories):
            raise DataError(f"{path}: categories have no 'index' field: this is the category table from before "
                            "nuScenes-lidarseg; install lidarseg's table, or pass with_labels=False")
        names = {int(c["index"]): c["name"] for c in categories}
        wrong = sorted(k for k, v in names.items() if self.class_map.raw_names.get(k) != v)
        if wrong:
            raise DataError(f"{path}: lidarseg indices {[(k, names[k]) for k in wrong]} differ from the nuscenes "
                            f"class map ({[(k, self.class_map.raw_names.get(k)) for k in wrong]})")

    def _resolve(self, data: dict[str, dict], index: dict[str, dict[str, dict]], lidarseg: dict[str, str]
                 ) -> dict[str, Any]:
        """One keyframe as a plain-JSON record: files, timestamps, poses and calibration of every sensor read."""
        lidar = data[LIDAR]
        record: dict[str, Any] = {"lidar": self._entry(lidar, index), "sweeps": [], "lidarseg": None,
                                  "cameras": {ch: self._entry(sd, index, camera=True)
                                              for ch, sd in data.items() if ch in CAMERAS}}
        prev, child = lidar["prev"], lidar["token"]
        while prev and len(record["sweeps"]) < self.sweeps:
            sd = self._ref(index["sample_data"], prev, "sample_data", f"'prev' of sample_data {child}")
            record["sweeps"].append(self._entry(sd, index))
            prev, child = sd["prev"], sd["token"]
        if self.with_labels:
            if lidar["token"] not in lidarseg:
                raise DataError(f"{self._table_path('lidarseg')}: no record for the {LIDAR} keyframe "
                                f"{lidar['token']} (sample {lidar['sample_token']}); pass with_labels=False to "
                                "read the scans without labels")
            record["lidarseg"] = lidarseg[lidar["token"]]
        return record

    def _entry(self, sd: dict, index: dict[str, dict[str, dict]], camera: bool = False) -> dict:
        """File, timestamp, calibration token and ego -> global of one sample_data, checked to be rigid.

        Calibrations repeat across frames: each is checked and stored once, in ``shared``.
        """
        who = f"sample_data {sd['token']}"
        calib = self._ref(index["calibrated_sensor"], sd["calibrated_sensor_token"], "calibrated_sensor", who)
        pose = self._ref(index["ego_pose"], sd["ego_pose_token"], "ego_pose", who)
        entry = {"token": sd["token"], "file": sd["filename"], "timestamp": int(sd["timestamp"]),
                 "calib": calib["token"], "ego_to_global": [pose["translation"], pose["rotation"]]}
        self._ego_to_global(entry)
        calibrations = self.shared["calibrated_sensor"]
        if calib["token"] not in calibrations:
            calibrations[calib["token"]] = {"sensor_to_ego": [calib["translation"], calib["rotation"]]}
            self._sensor_to_ego(entry, who)
        if camera and "K" not in calibrations[calib["token"]]:
            K = np.asarray(calib["camera_intrinsic"], dtype=np.float64)
            if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
                raise DataError(f"{self._table_path('calibrated_sensor')}: record {calib['token']} of camera "
                                f"{who} needs a 3x3 camera_intrinsic, got {calib['camera_intrinsic']}")
            calibrations[calib["token"]]["K"] = K.tolist()
        return entry

    def _sensor_to_ego(self, entry: dict, who: str = "") -> np.ndarray:
        t, q = self.shared["calibrated_sensor"][entry["calib"]]["sensor_to_ego"]
        return pose_from_quaternion(t, q, str(self._table_path("calibrated_sensor")),
                                    f"calibration {entry['calib']} (of {who or 'sample_data ' + entry['token']})")

    def _ego_to_global(self, entry: dict) -> np.ndarray:
        return pose_from_quaternion(*entry["ego_to_global"], str(self._table_path("ego_pose")),
                                    f"ego pose {entry['token']}")

    # Frames ------------------------------------------------------------------------------------------------------

    def _sensor_to_global(self, entry: dict) -> np.ndarray:
        return self._ego_to_global(entry) @ self._sensor_to_ego(entry)

    def frame_files(self, index: int) -> list[FileCheck]:
        """The files frame ``index`` needs, with the sizes that make each plausible (``lidarssl prepare``)."""
        rec, root = self.frames[index][2], self.root
        lidar = root / rec["lidar"]["file"]
        out = [FileCheck(lidar, "lidar file", record=20)]
        out += [FileCheck(root / s["file"], "lidar sweep", record=20) for s in rec["sweeps"]]
        if self.with_labels and rec["lidarseg"]:
            out.append(FileCheck(root / rec["lidarseg"], "lidarseg label file", points_of=lidar, points_record=20,
                                 label_size=1))
        if self.with_images:
            out += [FileCheck(root / rec["cameras"][c]["file"], "camera image")
                    for c in self.cameras if c in rec["cameras"]]
        return out

    def scene_table(self) -> list[str] | None:
        """The scenes in the order of ``scene.json`` (every k-th scene of SLidR's protocol counts in it)."""
        path = self.tables_dir / "scene.json"
        if not path.is_file():
            return None
        try:
            return [s["name"] for s in json.loads(path.read_text())]
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}: unreadable scene table ({e})") from e

    def frame_keys(self, index: int) -> tuple[str, ...]:
        """Strings a frame list may name frame ``index`` by: its frame id, lidar file (relative to the root), tokens."""
        frame = self.frames[index]
        return (frame[1], frame[2]["lidar"]["file"], frame[2]["lidar"]["token"])

    def _read(self, frame: list[Any]) -> Scan:
        _scene, sample_token, record = frame
        lidar = record["lidar"]
        lidar_path = self.root / lidar["file"]
        raw = read_points(lidar_path, 5)
        lidar_to_global = self._sensor_to_global(lidar)

        parts, times = [raw], [np.zeros(len(raw), np.float32)]
        global_to_lidar = invert_rigid(lidar_to_global)
        for sweep in record["sweeps"]:
            pts = read_points(self.root / sweep["file"], 5).astype(np.float64)
            T = global_to_lidar @ self._sensor_to_global(sweep)
            pts[:, :3] = pts[:, :3] @ T[:3, :3].T + T[:3, 3]
            parts.append(pts.astype(np.float32))
            times.append(np.full(len(pts), (sweep["timestamp"] - lidar["timestamp"]) * 1e-6, np.float32))
        points = np.concatenate(parts) if len(parts) > 1 else raw

        raw_labels = labels = None
        if self.with_labels:
            label_path = self.root / record["lidarseg"]
            keyframe_labels = read_labels(label_path, len(raw), "u1")
            raw_labels = np.zeros(len(points), np.uint8)  # sweep points: 0 (noise), an ignored class
            raw_labels[: len(raw)] = keyframe_labels
            labels = self.class_map.map(raw_labels, str(label_path))

        cameras = []
        if self.with_images:
            for name in self.cameras:
                view = self._camera(name, record["cameras"].get(name), lidar_to_global, sample_token)
                if view is not None:
                    cameras.append(view)

        return Scan(
            points=np.ascontiguousarray(points[:, :3]),
            intensity=np.ascontiguousarray(points[:, 3]),
            ring=points[:, 4].astype(np.uint8),
            time=np.concatenate(times),
            source=str(lidar_path),
            dataset="nuscenes",
            frame_id=sample_token,
            timestamp=lidar["timestamp"] * 1e-6,
            raw_labels=raw_labels,
            labels=labels,
            ego_pose=lidar_to_global,
            cameras=cameras,
        )

    def _camera(self, name: str, entry: dict | None, lidar_to_global: np.ndarray, sample: str) -> CameraView | None:
        if entry is None:
            message = f"{self._table_path('sample_data')}: sample {sample} has no {name} keyframe"
            if self.on_missing_camera == "skip":
                warnings.warn(f"{message}; skipping this camera", stacklevel=4)
                return None
            raise DataError(f"{message}; restore it, or read scans without it: reader option "
                            f"on_missing_camera=skip (a pretraining recipe's data.options, or "
                            f"`lidarssl prepare FORMAT --root ROOT on_missing_camera=skip`)")
        path = self.root / entry["file"]
        image = read_camera_image(path, self.on_missing_camera, self.image_reduce)
        if image is None:
            return None
        # lidar -> global at the lidar time, then global -> camera through the ego pose at the camera time
        lidar_to_cam = invert_rigid(self._sensor_to_global(entry)) @ lidar_to_global
        K = reduce_intrinsics(np.array(self.shared["calibrated_sensor"][entry["calib"]]["K"]), self.image_reduce)
        return CameraView(name=name, image=image, K=K, lidar_to_cam=lidar_to_cam,
                          timestamp=entry["timestamp"] * 1e-6, source=str(path))
