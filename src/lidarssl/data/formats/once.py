"""ONCE reader: roof lidar sweeps with the seven cameras, in the raw (unlabelled) and the labelled splits.

Layout, from ONCE's devkit as OpenPCDet reads it (``pcdet/datasets/once/once_toolkits.py``, ``once_dataset.py``)::

    <root>/ImageSets/{train,val,test,raw_small,raw_medium,raw_large}.txt   sequence ids, one per line
    <root>/data/<seq>/<seq>.json         meta_info; calib: {camXX: {cam_to_velo: 4x4 camera -> lidar,
                                         cam_intrinsic: 3x3, distortion: [k1, k2, p1, p2, k3]}};
                                         frames: [{frame_id, pose: [qx, qy, qz, qw, tx, ty, tz], annos?}, ...]
    <root>/data/<seq>/lidar_roof/<frame_id>.bin          float32 x 4: x, y, z, intensity (0..255)
    <root>/data/<seq>/cam0{1,3,5,6,7,8,9}/<frame_id>.jpg  raw (distorted) images

``frame_id`` is the capture time in milliseconds; ``pose`` maps the lidar frame to the world (quaternion x, y, z,
w first). A scan needs its ``.bin``, its sequence's JSON and the split's ``ImageSets`` list; with images, the
JPEGs of the chosen cameras.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lidarssl.data.formats._common import (
    FileCheck,
    FrameReader,
    MissingCamera,
    check_choice,
    invert_rigid,
    pose_from_quaternion,
    read_camera_image,
    read_points,
    require_file,
)
from lidarssl.data.labels import load_class_map
from lidarssl.data.lens import Undistorter, check_distortion
from lidarssl.data.scan import CameraView, Scan, check_rigid
from lidarssl.errors import DataError
from lidarssl.registry import READERS

#: ONCE's cameras (devkit order) and where they look.
CAMERAS = ("cam01", "cam03", "cam05", "cam06", "cam07", "cam08", "cam09")
CAMERA_TAGS = dict(zip(CAMERAS, ("top", "top2", "left_back", "left_front", "right_front", "right_back", "back")))
#: Splits whose frames carry 3D box annotations: only the annotated frames are read, as OpenPCDet's infos.
LABELLED_SPLITS = ("train", "val")
RAW_SPLITS = ("raw_small", "raw_medium", "raw_large")

_LAYOUT = ("<root>/ImageSets/<split>.txt listing sequences, <root>/data/<seq>/<seq>.json, "
           "<root>/data/<seq>/lidar_roof/<frame_id>.bin and <root>/data/<seq>/camXX/<frame_id>.jpg")


def read_sequence_json(path: Path) -> dict:
    """A sequence's ``<seq>.json``, checked to hold ``calib`` and a ``frames`` list."""
    if not path.is_file():
        raise DataError(f"{path}: sequence JSON not found (every ONCE sequence folder data/<seq>/ holds <seq>.json "
                        "with its calibration, poses and frame list)")
    try:
        doc = json.loads(path.read_text())
    except ValueError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("frames"), list) or not isinstance(doc.get("calib"), dict):
        raise DataError(f"{path}: expected an object with 'calib' (per camera) and a 'frames' list")
    return doc


def _has_boxes(frame: dict) -> bool:
    """Whether a JSON frame is annotated with at least one 3D box (OpenPCDet's infos skip the others)."""
    annos = frame.get("annos")
    return isinstance(annos, dict) and bool(annos.get("boxes_3d"))


@dataclass
class _Sequence:
    path: Path
    doc: dict
    poses: dict[str, list] = field(default_factory=dict)  # frame_id -> raw pose entry
    cameras: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)  # K, lidar_to_cam, dist
    undistort: dict[str, Undistorter] = field(default_factory=dict)


@READERS.register
class ONCE(FrameReader):
    """ONCE's ``lidar_roof`` sweeps as :class:`~lidarssl.data.scan.Scan`, with the seven cameras.

    Points stay in the lidar frame as recorded; ``ego_pose`` is the frame's ``pose`` (lidar -> world). Each
    camera's ``lidar_to_cam`` is ``inv(cam_to_velo)`` and ``K`` its ``cam_intrinsic``: the sequence's one
    calibration, since ONCE's lidar and cameras are synchronised (every image has the sweep's ``frame_id``).
    The raw images are distorted; with ``undistort`` (default) they are resampled to the ideal pinhole image of
    the same ``K`` (:mod:`lidarssl.data.lens`), so projecting with ``K`` lands on the pixel that saw the point.
    ONCE has no per-point labels (``labels`` is ``None``; ``class_map`` is nuScenes', the label space of a
    segmentation head on these scans). Intensity is as stored (0..255).

    Args:
        root: dataset folder (see the module docstring for the layout).
        split: ``"raw_small"``, ``"raw_medium"``, ``"raw_large"`` (unlabelled: every frame of the listed
            sequences; ALSO pretrains on ``raw_small``), ``"train"``, ``"val"`` (the annotated frames, those with
            at least one 3D box, as OpenPCDet's ``once_infos_<split>.pkl``) or ``"test"`` (every frame).
        with_images: attach the cameras.
        cameras: which of :data:`CAMERAS` to attach.
        undistort: resample the raw images to pinhole images (else they are returned as recorded, and
            projections with ``K`` are off by the lens distortion).
        on_missing_camera: ``"error"``, or ``"skip"`` to warn and read the scan without that image.
        cache_dir: folder for the frame index (see :class:`~lidarssl.data.formats._common.FrameReader`).
        refresh: rebuild the frame index even if a valid one is cached.
    """

    reader_name = "once"
    layout = "data/<seq>/lidar_roof"
    splits = (*RAW_SPLITS, *LABELLED_SPLITS, "test")
    default_split = "raw_small"

    def __init__(
        self,
        root: str | Path,
        split: str = "raw_small",
        *,
        with_images: bool = True,
        cameras: tuple[str, ...] = CAMERAS,
        undistort: bool = True,
        on_missing_camera: MissingCamera = "error",
        cache_dir: str | Path | None = None,
        refresh: bool = False,
    ) -> None:
        super().__init__(root, split)
        self.data = self.root / "data"
        if not self.data.is_dir():
            raise DataError(f"{self.root}: not a ONCE folder (no data/); expected {_LAYOUT}")
        for cam in cameras:
            check_choice("cameras", cam, CAMERAS)
        self.cameras = tuple(cameras)
        self.with_images = with_images
        self.undistort = undistort
        self.on_missing_camera = check_choice("on_missing_camera", on_missing_camera, ("error", "skip"))
        self.class_map = load_class_map("nuscenes")
        self._sequences: dict[str, _Sequence] = {}
        self._open_index(cache_dir, refresh)

    @classmethod
    def detect(cls, root: Path) -> bool:
        """Whether ``root`` looks like ONCE: ``data/<seq>/lidar_roof/``."""
        data = Path(root) / "data"
        return data.is_dir() and any((seq / "lidar_roof").is_dir() for seq in data.iterdir())

    # Frame index -------------------------------------------------------------------------------------------------

    def _list_frames(self) -> tuple[list[list[str]], list[Path]]:
        listing = require_file(self.root / "ImageSets" / f"{self.split}.txt", f"sequence list of split '{self.split}'")
        sequences = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        frames, watched = [], [listing.parent]
        for seq in sequences:
            path = self.data / seq / f"{seq}.json"
            doc = read_sequence_json(path)
            watched.append(path.parent)
            for k, entry in enumerate(doc["frames"]):
                if not isinstance(entry, dict) or "frame_id" not in entry:
                    raise DataError(f"{path}: frame {k} has no 'frame_id'")
                if self.split not in LABELLED_SPLITS or _has_boxes(entry):
                    frames.append([seq, str(entry["frame_id"])])
        if not frames:
            what = "annotated frames" if self.split in LABELLED_SPLITS else "frames"
            raise DataError(f"{listing}: its sequences hold no {what}; expected {_LAYOUT}")
        return frames, watched

    # Per-sequence calibration and poses --------------------------------------------------------------------------

    def _sequence(self, seq: str) -> _Sequence:
        if seq not in self._sequences:
            path = self.data / seq / f"{seq}.json"
            doc = read_sequence_json(path)
            s = _Sequence(path, doc)
            s.poses = {str(f.get("frame_id")): f.get("pose") for f in doc["frames"] if isinstance(f, dict)}
            self._sequences[seq] = s
        return self._sequences[seq]

    def camera_calibration(self, seq: str, cam: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(K, lidar_to_cam, distortion)`` of camera ``cam`` in sequence ``seq``."""
        s = self._sequence(seq)
        if cam not in s.cameras:
            calib = s.doc["calib"].get(cam)
            if not isinstance(calib, dict):
                raise DataError(f"{s.path}: no calibration for camera '{cam}'; the file has {sorted(s.doc['calib'])}")
            try:
                cam_to_velo = np.asarray(calib["cam_to_velo"], dtype=np.float64).reshape(4, 4)
                K = np.asarray(calib["cam_intrinsic"], dtype=np.float64).reshape(3, 3)
            except (KeyError, TypeError, ValueError) as e:
                raise DataError(f"{s.path}: calib '{cam}' needs cam_to_velo (4x4) and cam_intrinsic (3x3) ({e})") from e
            check_rigid(str(s.path), f"{cam} cam_to_velo", cam_to_velo)
            if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0 or abs(K[2, 2] - 1) > 1e-6:
                raise DataError(f"{s.path}: calib '{cam}' cam_intrinsic {K.tolist()} is not an intrinsic matrix")
            dist = check_distortion(calib.get("distortion", [0.0] * 5), f"{s.path} calib '{cam}'")
            s.cameras[cam] = (K, invert_rigid(cam_to_velo), dist)
        return s.cameras[cam]

    def ego_pose(self, seq: str, frame_id: str) -> np.ndarray:
        """(4, 4) lidar -> world of a frame, from its ``pose`` ``[qx, qy, qz, qw, tx, ty, tz]``."""
        s = self._sequence(seq)
        if frame_id not in s.poses:
            raise DataError(f"{s.path}: no frame '{frame_id}' in 'frames' (the frame index is stale: "
                            "rebuild it with refresh=True)")
        pose = s.poses[frame_id]
        if not isinstance(pose, list) or len(pose) != 7:
            raise DataError(f"{s.path}: frame '{frame_id}' needs a 'pose' of 7 numbers [qx, qy, qz, qw, tx, ty, tz], "
                            f"got {pose!r}")
        qx, qy, qz, qw, *t = pose
        return pose_from_quaternion(t, (qw, qx, qy, qz), str(s.path), f"pose of frame '{frame_id}'")

    def _image(self, seq: str, cam: str, path: Path, image: np.ndarray) -> np.ndarray:
        """The image as recorded, or resampled to the pinhole image of its ``K``."""
        if not self.undistort:
            return image
        s = self._sequence(seq)
        size = (image.shape[1], image.shape[0])
        if cam not in s.undistort or s.undistort[cam].size != size:
            K, _, dist = self.camera_calibration(seq, cam)
            s.undistort[cam] = Undistorter(K, dist, size)
        return s.undistort[cam](image, str(path))

    # Frames ------------------------------------------------------------------------------------------------------

    def frame_files(self, index: int) -> list[FileCheck]:
        """The files frame ``index`` needs, with the sizes that make each plausible (``lidarssl prepare``)."""
        seq, frame_id = self.frames[index]
        folder = self.data / seq
        out = [FileCheck(folder / "lidar_roof" / f"{frame_id}.bin", "point file", record=16)]
        if self.with_images:
            out += [FileCheck(folder / c / f"{frame_id}.jpg", "camera image") for c in self.cameras]
        return out

    def _read(self, frame: list[str]) -> Scan:
        seq, frame_id = frame
        folder = self.data / seq
        scan_path = folder / "lidar_roof" / f"{frame_id}.bin"
        raw = read_points(scan_path, 4)
        ego_pose = self.ego_pose(seq, frame_id)
        try:
            timestamp = int(frame_id) / 1000.0
        except ValueError:
            path = self._sequence(seq).path
            raise DataError(f"{path}: frame_id '{frame_id}' is not a time in milliseconds") from None
        cameras = []
        if self.with_images:
            for cam in self.cameras:
                K, lidar_to_cam, _ = self.camera_calibration(seq, cam)
                image_path = folder / cam / f"{frame_id}.jpg"
                image = read_camera_image(image_path, self.on_missing_camera)
                if image is None:
                    continue
                cameras.append(CameraView(name=cam, image=self._image(seq, cam, image_path, image), K=K,
                                          lidar_to_cam=lidar_to_cam, timestamp=timestamp, source=str(image_path)))
        return Scan(points=raw[:, :3].copy(), intensity=raw[:, 3].copy(), source=str(scan_path), dataset="once",
                    frame_id=f"{seq}/{frame_id}", timestamp=timestamp, ego_pose=ego_pose, cameras=cameras)
