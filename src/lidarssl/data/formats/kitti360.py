"""KITTI-360 reader: raw Velodyne scans with the rectified perspective stereo pair and the vehicle poses.

Layout, from KITTI-360's documentation and its devkit (kitti360Scripts: ``devkits/commons/loadCalibration.py``,
``helpers/project.py``), ``<seq>`` being ``2013_05_28_drive_XXXX_sync``::

    <root>/data_3d_raw/<seq>/velodyne_points/data/NNNNNNNNNN.bin   float32 x 4: x, y, z, reflectance (0..1)
                            /velodyne_points/timestamps.txt        'YYYY-MM-DD HH:MM:SS.fffffffff', line k = frame k
    <root>/data_2d_raw/<seq>/image_0{0,1}/data_rect/NNNNNNNNNN.png   rectified perspective stereo pair
    <root>/calibration/calib_cam_to_velo.txt   12 numbers: unrectified image_00 -> Velodyne (3x4)
                      /calib_cam_to_pose.txt   'image_0i: 12 numbers': unrectified camera i -> pose (GPS/IMU) frame
                      /perspective.txt         'P_rect_0i: 12 numbers', 'R_rect_0i: 9 numbers', ...
    <root>/data_poses/<seq>/poses.txt          'frame r11 r12 r13 t1 ... t3': pose frame -> world, one line per
                                               frame that has a pose
    <root>/data_3d_semantics/train/2013_05_28_drive_{train,val}.txt   the official windows, one per line:
                                               'data_3d_semantics/train/<seq>/static/SSSSSSSSSS_EEEEEEEEEE.ply'

Which files a scan needs: its ``.bin`` always; ``calib_cam_to_velo.txt`` and ``calib_cam_to_pose.txt`` with poses
(``with_poses``); ``calib_cam_to_velo.txt``, ``perspective.txt`` (and ``calib_cam_to_pose.txt`` for image_01) and
the PNGs with images (``with_images``). The fisheye cameras (image_02, image_03) are not read: the Scan contract
is a pinhole camera.
"""

from __future__ import annotations

import re
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from lidarssl.data.formats._common import (
    FileCheck,
    FrameReader,
    MissingCamera,
    check_choice,
    homogeneous,
    invert_rigid,
    read_camera_image,
    read_points,
    repair_rotation,
    require_file,
)
from lidarssl.data.labels import load_class_map
from lidarssl.data.scan import CameraView, Scan, check_rigid
from lidarssl.errors import DataError
from lidarssl.registry import READERS

#: The rectified perspective cameras (the fisheye image_02 / image_03 are not pinhole cameras).
CAMERAS = ("image_00", "image_01")
#: Official split files of the semantic windows, relative to the root (ALSO's train / val lists come from them).
WINDOW_FILES = {split: f"data_3d_semantics/train/2013_05_28_drive_{split}.txt" for split in ("train", "val")}

_LAYOUT = ("<root>/data_3d_raw/<seq>/velodyne_points/data/NNNNNNNNNN.bin with <root>/calibration/, "
           "<root>/data_poses/<seq>/poses.txt and <root>/data_2d_raw/<seq>/image_0X/data_rect/")
_WINDOW = re.compile(r"([^/\s]+_sync)/(?:static|dynamic)/(\d+)_(\d+)\.ply$")


# --- text files ----------------------------------------------------------------------------------------------------


def _keyed_lines(path: Path, what: str) -> dict[str, str]:
    """The ``key: values`` lines of a calibration file (values kept as text: some, like calib_time, are not numbers)."""
    out = {}
    for line in require_file(path, what).read_text().splitlines():
        key, sep, values = line.partition(":")
        if sep:
            out[key.strip()] = values
    return out


def _numbers(text: str, count: int, path: Path, what: str) -> np.ndarray:
    """``count`` finite numbers parsed from ``text``, else a DataError naming ``path`` and ``what``."""
    try:
        values = np.array(text.split(), dtype=np.float64)
    except ValueError as e:
        raise DataError(f"{path}: {what} must be {count} numbers ({e})") from e
    if values.size != count or not np.all(np.isfinite(values)):
        raise DataError(f"{path}: {what} must be {count} finite numbers, got {values.size}")
    return values


def _keyed(calib: dict[str, str], key: str, count: int, path: Path) -> np.ndarray:
    if key not in calib:
        raise DataError(f"{path}: key '{key}' missing; the file has {sorted(calib)}")
    return _numbers(calib[key], count, path, f"'{key}'")


def _rigid(M: np.ndarray, path: Path, name: str) -> np.ndarray:
    """A (3, 4) matrix as a (4, 4) rigid transform; a rotation off by text rounding only is orthonormalised."""
    T = homogeneous(M)
    T[:3, :3] = repair_rotation(str(path), name, T[:3, :3])
    check_rigid(str(path), name, T)
    return T


def read_poses(path: Path) -> dict[int, np.ndarray]:
    """``poses.txt``: frame index -> (4, 4) pose-frame-to-world transform."""
    if not path.is_file():
        raise DataError(f"{path}: pose file not found; pass with_poses=False to read the scans without ego poses")
    poses = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        values = _numbers(line, 13, path, f"line {n} (a frame index and a 3x4 pose)")
        poses[int(values[0])] = _rigid(values[1:].reshape(3, 4), path, f"pose of frame {int(values[0])}")
    return poses


def read_timestamps(path: Path) -> list[float]:
    """``timestamps.txt``: seconds since the UNIX epoch (UTC) of each frame, from nanosecond date-time lines."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        stamp, _, fraction = line.strip().partition(".")
        try:
            seconds = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
            out.append(seconds + (float(f"0.{fraction}") if fraction else 0.0))
        except ValueError as e:
            raise DataError(f"{path}: line {n} is not 'YYYY-MM-DD HH:MM:SS.fffffffff' ({e})") from e
    return out


def read_windows(path: Path) -> list[tuple[str, int, int]]:
    """An official window list: (sequence, first frame, last frame) per line."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        match = _WINDOW.search(line.strip())
        if match is None:
            raise DataError(f"{path}: line {n} is not a window 'data_3d_semantics/train/<seq>/static/"
                            f"SSSSSSSSSS_EEEEEEEEEE.ply': {line.strip()!r}")
        out.append((match[1], int(match[2]), int(match[3])))
    return out


# --- reader --------------------------------------------------------------------------------------------------------


@READERS.register
class KITTI360(FrameReader):
    """KITTI-360's raw Velodyne scans as :class:`~lidarssl.data.scan.Scan`, with the rectified stereo pair.

    Each camera follows the devkit's chain (``helpers/project.py``): camera ``i``'s rectified frame is
    ``R_rect_i @ inv(cam_to_pose_i)`` of the pose frame, the Velodyne reaches the pose frame through image_00
    (``cam_to_pose_00 @ inv(cam_to_velo)``), and ``K = P_rect_i[:, :3]``. For image_00 the chain reduces to
    ``lidar_to_cam = R_rect_00 @ inv(cam_to_velo)``. ``ego_pose`` is ``poses[frame] @ cam_to_pose_00 @
    inv(cam_to_velo)`` (Velodyne -> world). The cameras are triggered by the Velodyne, as in KITTI, so one
    calibration serves every frame and each camera takes the scan's timestamp. Raw scans carry no per-point
    labels (``labels`` is ``None``; ``class_map`` is SemanticKITTI's, the label space of a segmentation head on
    the same Velodyne HDL-64E in the same city). Intensity is the reflectance as stored (0..1).

    Args:
        root: dataset folder (see the module docstring for the layout).
        split: ``"train"`` or ``"val"``: every scan of the official semantic windows listed in
            ``data_3d_semantics/train/2013_05_28_drive_<split>.txt``, as ALSO builds its lists
            (``also_selfsup/datasets/kitti360.py``), sorted and without the repeats of overlapping windows;
            ``"all"``: every scan under ``data_3d_raw``.
        with_poses: read ``ego_pose`` from ``data_poses/<seq>/poses.txt``. Frames without a pose there are left
            out of the index (a warning counts them); ``with_poses=False`` keeps every scan, with identity poses.
        with_images: attach the cameras.
        cameras: which of ``image_00``, ``image_01`` to attach.
        on_missing_camera: ``"error"``, or ``"skip"`` to warn and read the scan without that image.
        cache_dir: folder for the frame index (see :class:`~lidarssl.data.formats._common.FrameReader`).
        refresh: rebuild the frame index even if a valid one is cached.
    """

    reader_name = "kitti360"
    layout = "data_3d_raw/<seq>/velodyne_points"
    splits = ("train", "val", "all")

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        with_poses: bool = True,
        with_images: bool = True,
        cameras: tuple[str, ...] = CAMERAS,
        on_missing_camera: MissingCamera = "error",
        cache_dir: str | Path | None = None,
        refresh: bool = False,
    ) -> None:
        super().__init__(root, split)
        self.raw = self.root / "data_3d_raw"
        if not self.raw.is_dir():
            raise DataError(f"{self.root}: not a KITTI-360 folder (no data_3d_raw/); expected {_LAYOUT}")
        for cam in cameras:
            check_choice("cameras", cam, CAMERAS)
        self.cameras = tuple(cameras)
        self.with_poses = with_poses
        self.with_images = with_images
        self.on_missing_camera = check_choice("on_missing_camera", on_missing_camera, ("error", "skip"))
        self.class_map = load_class_map("semantickitti")
        self.calibration = self.root / "calibration"
        self._calib: dict[str, object] = {}
        self._poses: dict[str, dict[int, np.ndarray]] = {}
        self._times: dict[str, list[float] | None] = {}
        self._open_index(cache_dir, refresh)

    @classmethod
    def detect(cls, root: Path) -> bool:
        """Whether ``root`` looks like KITTI-360: ``data_3d_raw/<seq>/velodyne_points/``."""
        raw = Path(root) / "data_3d_raw"
        return raw.is_dir() and any((seq / "velodyne_points").is_dir() for seq in raw.iterdir())

    def _index_options(self) -> dict[str, object]:
        return {"with_poses": self.with_poses}

    # Frame index -------------------------------------------------------------------------------------------------

    def _list_frames(self) -> tuple[list[list[str]], list[Path]]:
        if self.split == "all":
            frames, watched = [], [self.raw]
            for seq in sorted(p.name for p in self.raw.iterdir() if (p / "velodyne_points" / "data").is_dir()):
                folder = self.raw / seq / "velodyne_points" / "data"
                watched.append(folder)
                frames += [[seq, p.stem] for p in sorted(folder.glob("*.bin"))]
            if not frames:
                raise DataError(f"{self.raw}: no .bin scans; expected {_LAYOUT}")
        else:
            listing = require_file(self.root / WINDOW_FILES[self.split], f"window list of split '{self.split}' "
                                   "(from KITTI-360's data_3d_semantics download; split='all' reads every scan)")
            keys = {(seq, k) for seq, first, last in read_windows(listing) for k in range(first, last + 1)}
            frames, watched = [[seq, f"{k:010d}"] for seq, k in sorted(keys)], [listing.parent]
        if self.with_poses:
            frames, watched = self._posed(frames), watched + [self.root / "data_poses"]
        return frames, watched

    def _posed(self, frames: list[list[str]]) -> list[list[str]]:
        """The frames that have a pose in their sequence's poses.txt (the others are counted in a warning)."""
        kept = [f for f in frames if int(f[1]) in self._sequence_poses(f[0])]
        if len(kept) < len(frames):
            warnings.warn(f"kitti360 {self.split}: {len(frames) - len(kept)} of {len(frames)} scans have no pose in "
                          "data_poses/<seq>/poses.txt and are left out (with_poses=False keeps them)", stacklevel=5)
        if not kept:
            raise DataError(f"{self.root}: no scan of split '{self.split}' has a pose in data_poses/<seq>/poses.txt")
        return kept

    # Calibration -------------------------------------------------------------------------------------------------

    def _cam0_from_velo(self) -> np.ndarray:
        """Unrectified image_00 <- Velodyne, from ``calib_cam_to_velo.txt``."""
        if "velo" not in self._calib:
            path = require_file(self.calibration / "calib_cam_to_velo.txt", "camera-to-Velodyne calibration")
            cam_to_velo = _rigid(_numbers(path.read_text(), 12, path, "the camera-to-Velodyne transform")
                                 .reshape(3, 4), path, "cam_to_velo")
            self._calib["velo"] = invert_rigid(cam_to_velo)
        return self._calib["velo"]  # type: ignore[return-value]

    def _cam_to_pose(self, cam: str) -> np.ndarray:
        """Unrectified camera ``cam`` -> pose frame, from ``calib_cam_to_pose.txt``."""
        key = f"pose:{cam}"
        if key not in self._calib:
            path = self.calibration / "calib_cam_to_pose.txt"
            calib = _keyed_lines(path, "camera-to-pose calibration")
            self._calib[key] = _rigid(_keyed(calib, cam, 12, path).reshape(3, 4), path, cam)
        return self._calib[key]  # type: ignore[return-value]

    def pose_from_velo(self) -> np.ndarray:
        """(4, 4) Velodyne -> pose (GPS/IMU) frame: ``cam_to_pose_00 @ inv(cam_to_velo)``."""
        return self._cam_to_pose("image_00") @ self._cam0_from_velo()

    def camera_calibration(self, cam: str) -> tuple[np.ndarray, np.ndarray]:
        """``(K, lidar_to_cam)`` of rectified camera ``cam`` (``image_00`` or ``image_01``)."""
        key = f"cam:{cam}"
        if key not in self._calib:
            path = self.calibration / "perspective.txt"
            calib = _keyed_lines(path, "perspective camera calibration")
            i = cam[-2:]
            P = _keyed(calib, f"P_rect_{i}", 12, path).reshape(3, 4)
            R_rect = homogeneous(repair_rotation(str(path), f"R_rect_{i}", _keyed(calib, f"R_rect_{i}", 9, path)
                                                 .reshape(3, 3)))
            K = P[:, :3].copy()
            if K[0, 0] <= 0 or K[1, 1] <= 0 or abs(K[2, 2] - 1) > 1e-6:
                raise DataError(f"{path}: 'P_rect_{i}' {P.tolist()} does not start with an intrinsic matrix")
            unrect_from_velo = self._cam0_from_velo()
            if cam != "image_00":  # through the pose frame, as the devkit's CameraPerspective
                unrect_from_velo = invert_rigid(self._cam_to_pose(cam)) @ self.pose_from_velo()
            lidar_to_cam = R_rect @ unrect_from_velo
            check_rigid(str(path), f"lidar_to_cam of {cam}", lidar_to_cam)
            self._calib[key] = (K, lidar_to_cam)
        return self._calib[key]  # type: ignore[return-value]

    # Per-sequence tables -----------------------------------------------------------------------------------------

    def _sequence_poses(self, seq: str) -> dict[int, np.ndarray]:
        if seq not in self._poses:
            self._poses[seq] = read_poses(self.root / "data_poses" / seq / "poses.txt")
        return self._poses[seq]

    def _timestamps(self, seq: str) -> list[float] | None:
        if seq not in self._times:
            path = self.raw / seq / "velodyne_points" / "timestamps.txt"
            self._times[seq] = read_timestamps(path) if path.is_file() else None
        return self._times[seq]

    # Frames ------------------------------------------------------------------------------------------------------

    def frame_files(self, index: int) -> list[FileCheck]:
        """The files frame ``index`` needs, with the sizes that make each plausible (``lidarssl prepare``)."""
        seq, stem = self.frames[index]
        out = [FileCheck(self.raw / seq / "velodyne_points" / "data" / f"{stem}.bin", "point file", record=16)]
        calibration = set()
        if self.with_poses:
            calibration |= {"calib_cam_to_velo.txt", "calib_cam_to_pose.txt"}
        if self.with_images:
            out += [FileCheck(self.root / "data_2d_raw" / seq / c / "data_rect" / f"{stem}.png", "camera image")
                    for c in self.cameras]
            calibration |= {"calib_cam_to_velo.txt", "perspective.txt"}
            if any(c != "image_00" for c in self.cameras):
                calibration.add("calib_cam_to_pose.txt")
        return out + [FileCheck(self.calibration / name, "calibration file") for name in sorted(calibration)]

    def _read(self, frame: list[str]) -> Scan:
        seq, stem = frame
        index = int(stem)
        scan_path = self.raw / seq / "velodyne_points" / "data" / f"{stem}.bin"
        raw = read_points(scan_path, 4)
        timestamp = 0.0
        times = self._timestamps(seq)
        if times is not None:
            if index >= len(times):
                raise DataError(f"{self.raw / seq / 'velodyne_points' / 'timestamps.txt'}: has {len(times)} lines but "
                                f"scan {stem} needs line {index + 1}")
            timestamp = times[index]
        ego_pose = np.eye(4)
        if self.with_poses:
            poses = self._sequence_poses(seq)
            if index not in poses:
                raise DataError(f"{self.root / 'data_poses' / seq / 'poses.txt'}: no pose for frame {index}; "
                                "pass with_poses=False to read the scans without ego poses")
            ego_pose = poses[index] @ self.pose_from_velo()
        cameras = []
        if self.with_images:
            for cam in self.cameras:
                image_path = self.root / "data_2d_raw" / seq / cam / "data_rect" / f"{stem}.png"
                image = read_camera_image(image_path, self.on_missing_camera)
                if image is not None:
                    K, lidar_to_cam = self.camera_calibration(cam)
                    cameras.append(CameraView(name=cam, image=image, K=K, lidar_to_cam=lidar_to_cam,
                                              timestamp=timestamp, source=str(image_path)))
        return Scan(points=raw[:, :3].copy(), intensity=raw[:, 3].copy(), source=str(scan_path), dataset="kitti360",
                    frame_id=f"{seq}/{stem}", timestamp=timestamp, ego_pose=ego_pose, cameras=cameras)
