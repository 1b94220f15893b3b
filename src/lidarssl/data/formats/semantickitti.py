"""SemanticKITTI reader: KITTI odometry scans with per-point semantic and instance labels.

Layout (the odometry download with the SemanticKITTI labels merged in)::

    <root>/dataset/sequences/XX/velodyne/NNNNNN.bin   float32 x 4: x, y, z, reflectance (lidar frame)
                                 labels/NNNNNN.label  uint32 per point: semantic id (low 16 bits), instance (high 16)
                                 image_2/NNNNNN.png   left colour camera, optional
                                 calib.txt            P0-P3 (3x4) and Tr (3x4, lidar -> camera 0)
                                 poses.txt            optional: one 3x4 camera-0 pose per frame
                                 times.txt            optional: one timestamp (s) per frame

``<root>/sequences/...`` (without ``dataset/``) is accepted too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from lidarssl.data.formats._common import (
    FileCheck,
    FrameReader,
    MissingCamera,
    calib_matrix,
    camera_from_projection,
    check_choice,
    homogeneous,
    read_camera_image,
    read_kitti_calib,
    read_points,
    read_uint32_labels,
)
from lidarssl.data.labels import load_class_map
from lidarssl.data.scan import CameraView, Scan, check_rigid
from lidarssl.errors import DataError
from lidarssl.registry import READERS

#: Sequences of each split, as in the SemanticKITTI benchmark (test sequences have no labels).
SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("00", "01", "02", "03", "04", "05", "06", "07", "09", "10"),
    "val": ("08",),
    "test": tuple(f"{s:02d}" for s in range(11, 22)),
}

_LAYOUT = ("<root>/dataset/sequences/XX/velodyne/NNNNNN.bin (with labels/NNNNNN.label, calib.txt and "
           "optionally image_2/, poses.txt, times.txt)")


@dataclass(frozen=True)
class _Sequence:
    """What one sequence folder holds besides its scans, read once."""

    K: np.ndarray | None  # image_2 intrinsics, None without calib.txt
    lidar_to_cam: np.ndarray | None  # lidar -> image_2 camera
    poses: np.ndarray | None  # (F, 4, 4) lidar frame -> lidar frame of the first scan
    times: np.ndarray | None  # (F,) seconds


@READERS.register
class SemanticKITTI(FrameReader):
    """SemanticKITTI scans as :class:`~lidarssl.data.scan.Scan`.

    Labels map through the standard 19-class learning map (``labels/semantickitti.yaml``); ``raw_labels`` keep
    the 34 raw ids and ``instance`` the instance ids. ``ego_pose`` comes from ``poses.txt`` when the sequence
    has it (SemanticKITTI's poses of camera 0, moved to the lidar frame with ``Tr``), else it is the identity.
    The camera shares the scan's timestamp: KITTI triggers the camera as the lidar sweeps past it, so there is
    no ego motion term to add.

    Args:
        root: dataset folder (see the module docstring for the layout).
        split: ``"train"`` (00-07, 09, 10), ``"val"`` (08) or ``"test"`` (11-21, no labels). Sequences of the
            split that are not on disk are left out; a split with no scan at all is an error.
        with_labels: read labels (never for ``"test"``); a missing label file is then an error.
        with_images: attach ``image_2`` when the sequence has that folder. Without the folder the scan has
            no camera; that is not an error (not every download has the images).
        on_missing_camera: ``"error"``, or ``"skip"`` to warn and leave out an image missing from an
            existing ``image_2`` folder.
        cache_dir: folder for the frame index (see :class:`~lidarssl.data.formats._common.FrameReader`).
        refresh: rebuild the frame index even if a valid one is cached.
    """

    reader_name = "semantickitti"
    splits = tuple(SPLITS)
    #: Sequences of each split; a reader of the same layout (SemanticPOSS) swaps this table and its class map
    #: (``labels/<reader_name>.yaml``).
    split_sequences: ClassVar[dict[str, tuple[str, ...]]] = SPLITS
    title: ClassVar[str] = "SemanticKITTI"
    layout: ClassVar[str] = _LAYOUT

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        with_labels: bool = True,
        with_images: bool = True,
        on_missing_camera: MissingCamera = "error",
        cache_dir: str | Path | None = None,
        refresh: bool = False,
    ) -> None:
        super().__init__(root, split)
        self.sequences_dir = self.find_sequences(self.root)
        self.class_map = load_class_map(self.reader_name)
        self.with_labels = with_labels and split != "test"
        self.with_images = with_images
        self.on_missing_camera = check_choice("on_missing_camera", on_missing_camera, ("error", "skip"))
        self._sequences: dict[str, _Sequence] = {}
        self._open_index(cache_dir, refresh)

    @classmethod
    def detect(cls, root: Path) -> bool:
        """A ``sequences`` folder. Readers of the same layout (SemanticPOSS) are declared before this one in
        :mod:`lidarssl.registry`, so they claim their own folders first."""
        return any(c.is_dir() for c in (root / "dataset" / "sequences", root / "sequences"))

    @classmethod
    def find_sequences(cls, root: Path) -> Path:
        """The ``sequences`` folder under ``root``; a DataError describing the layout when there is none."""
        for candidate in (root / "dataset" / "sequences", root / "sequences"):
            if candidate.is_dir():
                return candidate
        raise DataError(f"{root}: not a {cls.title} folder; expected {cls.layout}")

    def _list_frames(self) -> tuple[list[list[str]], list[Path]]:
        frames, watched = [], [self.sequences_dir]
        for seq in self.split_sequences[self.split]:
            velodyne = self.sequences_dir / seq / "velodyne"
            watched.append(velodyne)
            if velodyne.is_dir():
                frames += [[seq, p.stem] for p in sorted(velodyne.glob("*.bin"))]
        if not frames:
            raise DataError(f"{self.sequences_dir}: no scans of split '{self.split}' (sequences "
                            f"{', '.join(self.split_sequences[self.split])}); expected {self.layout}")
        return frames, watched

    # Per-sequence files ------------------------------------------------------------------------------------------

    def camera_calibration(self, sequence: str) -> tuple[np.ndarray, np.ndarray]:
        """``(K, lidar_to_cam)`` of ``image_2`` in ``sequence``, from its ``calib.txt``.

        ``K = P2[:, :3]`` and ``lidar_to_cam = [I | K^-1 P2[:, 3]] @ Tr``, so ``K @ lidar_to_cam[:3]`` is
        ``P2 @ Tr``.
        """
        seq = self._sequence(sequence)
        if seq.K is None or seq.lidar_to_cam is None:
            raise DataError(f"{self.sequences_dir / sequence / 'calib.txt'}: calibration file not found")
        return seq.K, seq.lidar_to_cam

    def _sequence(self, name: str) -> _Sequence:
        if name not in self._sequences:
            self._sequences[name] = self._read_sequence(self.sequences_dir / name)
        return self._sequences[name]

    def _read_sequence(self, folder: Path) -> _Sequence:
        calib_path, poses_path, times_path = folder / "calib.txt", folder / "poses.txt", folder / "times.txt"
        K = lidar_to_cam = poses = times = None
        if calib_path.is_file() or poses_path.is_file() or (self.with_images and (folder / "image_2").is_dir()):
            calib = read_kitti_calib(calib_path)  # cameras and poses need it: a missing file is an error here
            Tr = homogeneous(calib_matrix(calib, "Tr", (3, 4), calib_path))
            check_rigid(str(calib_path), "Tr", Tr)
            K, lidar_to_cam = camera_from_projection(calib_matrix(calib, "P2", (3, 4), calib_path), Tr, calib_path)
            if poses_path.is_file():
                poses = self._read_poses(poses_path, Tr)
        if times_path.is_file():
            try:
                times = np.loadtxt(times_path, dtype=np.float64, ndmin=1)
            except ValueError as e:
                raise DataError(f"{times_path}: expected one timestamp per line ({e})") from e
        return _Sequence(K=K, lidar_to_cam=lidar_to_cam, poses=poses, times=times)

    @staticmethod
    def _read_poses(path: Path, Tr: np.ndarray) -> np.ndarray:
        """Camera-0 poses of ``poses.txt`` as lidar poses: ``inv(Tr) @ pose @ Tr``."""
        try:
            rows = np.loadtxt(path, dtype=np.float64, ndmin=2)
        except ValueError as e:
            raise DataError(f"{path}: expected 12 numbers (a 3x4 pose) per line ({e})") from e
        if rows.shape[1] != 12:
            raise DataError(f"{path}: expected 12 numbers (a 3x4 pose) per line, got {rows.shape[1]}")
        poses = np.tile(np.eye(4), (len(rows), 1, 1))
        poses[:, :3, :] = rows.reshape(-1, 3, 4)
        poses = np.linalg.inv(Tr) @ poses @ Tr  # exact inverse: Tr is orthonormal only to ~1e-7
        for i, pose in enumerate(poses):
            check_rigid(str(path), f"pose of frame {i}", pose)
        return poses

    # Frames ------------------------------------------------------------------------------------------------------

    def frame_files(self, index: int) -> list[FileCheck]:
        """The files frame ``index`` needs, with the sizes that make each plausible (``lidarssl prepare``)."""
        seq, stem = self.frames[index]
        folder = self.sequences_dir / seq
        scan = folder / "velodyne" / f"{stem}.bin"
        out = [FileCheck(scan, "point file", record=16)]
        if self.with_labels:
            out.append(FileCheck(folder / "labels" / f"{stem}.label", "label file", points_of=scan, points_record=16,
                                 label_size=4))
        if self.with_images and (folder / "image_2").is_dir():
            out.append(FileCheck(folder / "image_2" / f"{stem}.png", "camera image"))
        return out

    def frame_keys(self, index: int) -> tuple[str, ...]:
        """Strings a frame list may name frame ``index`` by: its frame id, lidar file (relative to the root), tokens."""
        seq, stem = self.frames[index]
        rel = (self.sequences_dir / seq / "velodyne" / f"{stem}.bin").relative_to(self.root)
        return (f"{seq}/{stem}", rel.as_posix())

    def _read(self, frame: list[str]) -> Scan:
        seq_name, stem = frame
        folder = self.sequences_dir / seq_name
        seq = self._sequence(seq_name)
        scan_path = folder / "velodyne" / f"{stem}.bin"
        raw = read_points(scan_path, 4)
        index = int(stem)

        raw_labels = labels = instance = None
        if self.with_labels:
            label_path = folder / "labels" / f"{stem}.label"
            if not label_path.is_file():
                raise DataError(f"{label_path}: label file not found (pass with_labels=False to read scans only)")
            packed = read_uint32_labels(label_path, len(raw))
            raw_labels = (packed & 0xFFFF).astype(np.int64)
            instance = (packed >> 16).astype(np.int64)
            labels = self.class_map.map(raw_labels, str(label_path))

        ego_pose, timestamp = np.eye(4), 0.0
        if seq.poses is not None:
            ego_pose = self._per_frame(seq.poses, index, folder / "poses.txt")
        if seq.times is not None:
            timestamp = float(self._per_frame(seq.times, index, folder / "times.txt"))

        cameras = []
        image_dir = folder / "image_2"
        if self.with_images and image_dir.is_dir():
            image_path = image_dir / f"{stem}.png"
            image = read_camera_image(image_path, self.on_missing_camera)
            if image is not None:
                cameras.append(CameraView(name="image_2", image=image, K=seq.K, lidar_to_cam=seq.lidar_to_cam,
                                          timestamp=timestamp, source=str(image_path)))

        return Scan(
            points=raw[:, :3].copy(), intensity=raw[:, 3].copy(), source=str(scan_path), dataset=self.reader_name,
            frame_id=f"{seq_name}/{stem}", timestamp=timestamp, raw_labels=raw_labels, labels=labels,
            instance=instance, ego_pose=ego_pose, cameras=cameras,
        )

    @staticmethod
    def _per_frame(table: np.ndarray, index: int, source: Path) -> np.ndarray:
        if index >= len(table):
            raise DataError(f"{source}: has {len(table)} rows but frame {index:06d} needs row {index}")
        return table[index]
