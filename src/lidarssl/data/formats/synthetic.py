"""The reader of the synthetic world's native on-disk layout (written by :func:`lidarssl.synthetic.write_dataset`).

Layout under ``root``::

    index.json                      written last; lists everything below
    lidar/<stem>.npz                one sweep: points, intensity, ring, raw labels, instance, poses,
                                    timestamps and the calibration of every camera
    cameras/<CAMERA>/<stem>.jpg     one JPEG (quality 95) per camera and frame
    class_images/<CAMERA>/<stem>.png  per-pixel raw nuScenes-lidarseg class ids of that image (uint8 PNG,
                                    255 = sky); worlds written before they existed have none

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

Splits are by sequence (``train``, ``val``; ``all`` for both), as the index lists them.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from lidarssl.data.formats._common import FileCheck
from lidarssl.data.labels import ClassMap, load_class_map
from lidarssl.data.scan import CameraView, Scan, check_rigid
from lidarssl.errors import DataError
from lidarssl.registry import READERS

__all__ = ["CLASS_IMAGES", "FORMAT", "VERSION", "SyntheticDataset", "frame_stem"]

FORMAT = "lidarssl-synthetic"
VERSION = 1
#: Folder of the per-pixel class images.
CLASS_IMAGES = "class_images"

_HOW_TO_FIX = "create it with `lidarssl generate out={root}`"


def frame_stem(frame_id: str) -> str:
    """The file stem of a frame (``seed<seed>_<frame:06d>``)."""
    return frame_id.replace("/", "_")


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


@READERS.register
class SyntheticDataset:
    """A generated synthetic world read back as Scans.

    Args:
        root: folder holding ``index.json``.
        split: ``train``, ``val`` or ``all``.
        with_images: attach the camera views; ``False`` reads the lidar only (no image is decoded; for the
            methods that use no camera).

    Raises:
        DataError: no index, an unreadable index, or a frame whose files are missing (when read).
    """

    reader_name: ClassVar[str] = "synthetic"
    layout: ClassVar[str] = "index.json"
    fraction_rule: ClassVar[str] = "scenes"  # `<p>%` of a world counts sequences
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "all")
    default_split: ClassVar[str] = "all"  # what `lidarssl info` and open_dataset(split=None) show

    @classmethod
    def detect(cls, root: Path) -> bool:
        """Whether ``root`` holds a synthetic world (its ``index.json``)."""
        return (root / "index.json").is_file()

    def __init__(self, root: str | os.PathLike[str], split: str = "train", with_images: bool = True) -> None:
        if split not in self.splits:
            raise DataError(f"{self.reader_name}: unknown split '{split}'; choose one of {list(self.splits)}")
        self.root = Path(root)
        self.split = split
        self.with_images = with_images
        self.index = _read_index(self.root)
        self.frames: list[dict[str, Any]] = [f for f in self.index["frames"] if split == "all" or f.get("split") == split]
        self.class_map: ClassMap = load_class_map(self.index["class_map"])
        self.camera_names: list[str] = list(self.index["cameras"])

    def __len__(self) -> int:
        return len(self.frames)

    def frame_files(self, index: int) -> list[FileCheck]:
        """The files frame ``index`` needs, with the sizes that make each plausible (``lidarssl prepare``)."""
        frame = self.frames[index]
        return [FileCheck(self.root / frame["lidar"], "lidar file"),
                *(FileCheck(self.root / rel, "camera image") for rel in frame["cameras"].values())]

    def frame_keys(self, index: int) -> tuple[str, ...]:
        """Strings a frame list may name frame ``index`` by: its frame id, lidar file (relative to the root), tokens."""
        frame = self.frames[index]
        return (str(frame["id"]), str(frame["lidar"]))

    def frame_scene(self, index: int) -> str:
        """Name of the scene (sequence) frame ``index`` belongs to."""
        return str(self.frames[index]["sequence"])

    def __repr__(self) -> str:
        return f"SyntheticDataset({str(self.root)!r}, split={self.split!r}, frames={len(self)})"

    def _missing(self, path: Path) -> DataError:
        return DataError(
            f"{path}: missing, though {self.root / 'index.json'} lists it; the dataset is incomplete: "
            f"regenerate it with `lidarssl generate out={self.root} overwrite=true`"
        )

    @property
    def has_class_images(self) -> bool:
        """Whether every frame of the split lists a class image per camera (worlds written by this version)."""
        return all(set(f.get("class_images", {})) >= set(f["cameras"]) for f in self.frames)

    def class_image(self, i: int, camera: str) -> np.ndarray:
        """The (H, W) uint8 raw class ids of frame ``i``'s ``camera`` image (255 where the sky is seen).

        Raises:
            DataError: the world has no class images (written before they existed) or the file is missing.
        """
        entry = self.frames[i]
        rel = entry.get("class_images", {}).get(camera)
        if rel is None:
            raise DataError(f"{self.root}: frame '{entry['id']}' has no class image for camera '{camera}'; "
                            f"regenerate the world with `lidarssl generate out={self.root} overwrite=true`")
        path = self.root / rel
        if not path.is_file():
            raise self._missing(path)
        try:
            with Image.open(path) as im:
                return np.asarray(im)
        except OSError as e:
            raise DataError(f"{path}: unreadable class image ({e}); regenerate the dataset") from None

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
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # damaged or truncated
            raise DataError(f"{path}: unreadable npz ({type(e).__name__}: {e}); the file is damaged or truncated: "
                            f"regenerate the dataset with `lidarssl generate out={self.root} overwrite=true` "
                            "and the options it was made with") from None
        need = ("points", "intensity", "ring", "raw_labels", "instance", "ego_pose", "sensor_origin", "timestamp",
                "camera_names", "cam_K", "cam_lidar_to_cam", "cam_timestamp")
        for key in need:
            if key not in data:
                raise DataError(f"{path}: array '{key}' is missing; regenerate the dataset")
        names = [str(n) for n in data["camera_names"]] if self.with_images else []
        views = []
        for k, name in enumerate(names):
            rel = entry["cameras"].get(name)
            img_path = self.root / rel if rel else self.root / "cameras" / name / f"{frame_stem(entry['id'])}.jpg"
            if not img_path.is_file():
                raise self._missing(img_path)
            try:
                with Image.open(img_path) as im:
                    image = np.asarray(im.convert("RGB"))
            except OSError as e:
                raise DataError(f"{img_path}: unreadable image ({e}); regenerate the dataset") from None
            # calibration lives in the npz, not the image: name that file when it is not rigid
            check_rigid(f"{path} (camera '{name}')", "cam_lidar_to_cam", data["cam_lidar_to_cam"][k])
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
