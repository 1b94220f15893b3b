"""KITTI object reader: the 3D object benchmark's scans with their left colour camera.

Layout::

    <root>/training/velodyne/NNNNNN.bin          float32 x 4: x, y, z, reflectance (lidar frame)
                    velodyne_reduced/NNNNNN.bin  the same scans cropped to the image_2 frustum (optional)
                    image_2/NNNNNN.png           left colour camera
                    calib/NNNNNN.txt             P0-P3 (3x4), R0_rect (3x3), Tr_velo_to_cam (3x4), Tr_imu_to_velo
                    label_2/NNNNNN.txt           3D boxes (not read: they are not per-point labels)
    <root>/testing/...                           the same without label_2
    <root>/ImageSets/{train,val,trainval,test}.txt   optional frame lists (one id per line)
"""

from __future__ import annotations

from pathlib import Path

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
    repair_rotation,
    require_file,
)
from lidarssl.data.labels import load_class_map
from lidarssl.data.scan import CameraView, Scan, check_rigid
from lidarssl.errors import DataError
from lidarssl.registry import READERS

# Splits read whole folders, or the frame lists of ImageSets/ (the common 3712 / 3769 train / val split).
_FOLDER_SPLITS = {"training": "training", "testing": "testing"}
_LIST_SPLITS = {"train": "training", "val": "training", "trainval": "training", "test": "testing"}

_LAYOUT = "<root>/training/velodyne/NNNNNN.bin with image_2/NNNNNN.png and calib/NNNNNN.txt (or <root>/testing/...)"


@READERS.register
class KITTIObject(FrameReader):
    """KITTI object scans as :class:`~lidarssl.data.scan.Scan`, with ``image_2`` as their camera.

    The camera is ``K = P2[:, :3]`` and ``lidar_to_cam = [I | K^-1 P2[:, 3]] @ R0_rect @ Tr_velo_to_cam``, so
    projecting with ``K`` gives exactly the pixels of ``P2 @ R0_rect @ Tr_velo_to_cam``. ``R0_rect`` is kept as
    written unless it fails :func:`~lidarssl.data.scan.check_rigid`; then its nearest rotation is used, as
    long as it is within text-rounding noise of one. There are no per-point labels (``label_2`` holds boxes),
    so ``labels`` is ``None``; ``class_map`` is SemanticKITTI's, the label space of a segmentation head for
    these scans. Frames carry no timestamp or pose (0 s, identity).

    Args:
        root: dataset folder (see the module docstring for the layout).
        split: ``"training"`` or ``"testing"`` (every scan of that folder), or ``"train"``, ``"val"``,
            ``"trainval"``, ``"test"`` (the ids listed in ``<root>/ImageSets/<split>.txt``).
        velodyne_reduced: read ``velodyne_reduced/`` (scans cropped to the camera frustum) instead of
            ``velodyne/``.
        with_images: attach ``image_2``.
        on_missing_camera: ``"error"``, or ``"skip"`` to warn and read the scan without its image.
        cache_dir: folder for the frame index (see :class:`~lidarssl.data.formats._common.FrameReader`).
        refresh: rebuild the frame index even if a valid one is cached.
    """

    reader_name = "kitti"
    layout = "training/velodyne/NNNNNN.bin"
    splits = (*_FOLDER_SPLITS, *_LIST_SPLITS)
    default_split = "training"

    @classmethod
    def detect(cls, root: Path) -> bool:
        return any((root / folder / "velodyne").is_dir() for folder in _FOLDER_SPLITS)

    def __init__(
        self,
        root: str | Path,
        split: str = "training",
        *,
        velodyne_reduced: bool = False,
        with_images: bool = True,
        on_missing_camera: MissingCamera = "error",
        cache_dir: str | Path | None = None,
        refresh: bool = False,
    ) -> None:
        super().__init__(root, split)
        self.folder = self.root / {**_FOLDER_SPLITS, **_LIST_SPLITS}[split]
        if not self.folder.is_dir():
            raise DataError(f"{self.root}: not a KITTI object folder (no {self.folder.name}/); expected {_LAYOUT}")
        self.velodyne = self.folder / ("velodyne_reduced" if velodyne_reduced else "velodyne")
        self.class_map = load_class_map("semantickitti")
        self.with_images = with_images
        self.on_missing_camera = check_choice("on_missing_camera", on_missing_camera, ("error", "skip"))
        self._open_index(cache_dir, refresh)

    @property
    def index_name(self) -> str:
        return f"{self.reader_name}-{self.split}-{self.velodyne.name}"

    def _list_frames(self) -> tuple[list[list[str]], list[Path]]:
        if self.split in _LIST_SPLITS:
            listing = require_file(self.root / "ImageSets" / f"{self.split}.txt", "frame list of split "
                                   f"'{self.split}' (or use split='{self.folder.name}' for every scan)")
            return [[line.strip()] for line in listing.read_text().splitlines() if line.strip()], [listing.parent]
        if not self.velodyne.is_dir():
            raise DataError(f"{self.folder}: no {self.velodyne.name}/ folder; expected {_LAYOUT}")
        frames = [[p.stem] for p in sorted(self.velodyne.glob("*.bin"))]
        if not frames:
            raise DataError(f"{self.velodyne}: no .bin scans; expected {_LAYOUT}")
        return frames, [self.velodyne]

    def camera_calibration(self, frame_id: str) -> tuple[np.ndarray, np.ndarray]:
        """``(K, lidar_to_cam)`` of ``image_2`` for frame ``frame_id``, from ``calib/<frame_id>.txt``."""
        path = self.folder / "calib" / f"{frame_id}.txt"
        calib = read_kitti_calib(path)
        R0 = repair_rotation(str(path), "R0_rect", calib_matrix(calib, "R0_rect", (3, 3), path))
        velo_to_cam = homogeneous(calib_matrix(calib, "Tr_velo_to_cam", (3, 4), path))
        check_rigid(str(path), "Tr_velo_to_cam", velo_to_cam)
        return camera_from_projection(calib_matrix(calib, "P2", (3, 4), path), homogeneous(R0) @ velo_to_cam, path)

    def frame_files(self, index: int) -> list[FileCheck]:
        """The files frame ``index`` needs, with the sizes that make each plausible (``lidarssl prepare``)."""
        (stem,) = self.frames[index]
        out = [FileCheck(self.velodyne / f"{stem}.bin", "point file", record=16)]
        if self.with_images:
            out += [FileCheck(self.folder / "image_2" / f"{stem}.png", "camera image"),
                    FileCheck(self.folder / "calib" / f"{stem}.txt", "calibration file")]
        return out

    def frame_keys(self, index: int) -> tuple[str, ...]:
        """Strings a frame list may name frame ``index`` by: its frame id, lidar file (relative to the root), tokens."""
        (stem,) = self.frames[index]
        return (stem, self.velodyne.relative_to(self.root).joinpath(f"{stem}.bin").as_posix())

    def _read(self, frame: list[str]) -> Scan:
        (stem,) = frame
        scan_path = self.velodyne / f"{stem}.bin"
        raw = read_points(scan_path, 4)
        cameras = []
        if self.with_images:
            image_path = self.folder / "image_2" / f"{stem}.png"
            image = read_camera_image(image_path, self.on_missing_camera)
            if image is not None:
                K, lidar_to_cam = self.camera_calibration(stem)
                cameras.append(CameraView(name="image_2", image=image, K=K, lidar_to_cam=lidar_to_cam,
                                          source=str(image_path)))
        return Scan(points=raw[:, :3].copy(), intensity=raw[:, 3].copy(), source=str(scan_path), dataset="kitti",
                    frame_id=stem, cameras=cameras)
