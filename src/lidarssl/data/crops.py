"""Input crops of training scans: which of a scan's points the backbone may see, before its own preprocessing.

ScaLR's student sees only the points inside the frustum of the one camera paired with the scan
(``nuscenes_for_scalr.py``, ``semantic_kitti_for_scalr.py`` in valeoai/ScaLR), then only the ``max_points``
points nearest to a point drawn at random (``LimitNumPoints`` in ``im_pc_dataset.py``); its downstream training
caps scans the same way (``max_points: 20000``), after its 0.1 m voxel subsampling (``datasets/pc_dataset.py``:
``downsample`` then ``train_augmentations``, whose first step is ``LimitNumPoints``, ``finetune.py``), so the
cap counts voxels, not raw points (``after_voxels``). Crops are drawn for training samples only: evaluation scores
every original point.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from lidarssl.data.geometry import project
from lidarssl.data.scan import Scan
from lidarssl.errors import DataError
from lidarssl.schema import Schema

__all__ = ["InputCrop", "cap_points", "cuboid_points", "frustum_points"]


def frustum_points(scan: Scan, camera: int, subset: np.ndarray, min_depth: float = 1.0) -> np.ndarray:
    """The entries of ``subset`` (indices into ``scan.points``) that project into camera ``camera``."""
    cam = scan.cameras[camera]
    valid = project(scan.points[subset], cam.K, cam.lidar_to_cam, cam.hw, min_depth).valid
    return subset[valid]


def cap_points(points: np.ndarray, subset: np.ndarray, max_points: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``max_points`` entries of ``subset``: those nearest (3D) to one of them drawn at random."""
    if len(subset) <= max_points:
        return subset
    seed = points[subset[rng.integers(len(subset))]]
    dist = np.linalg.norm(points[subset] - seed, axis=1)
    return np.sort(subset[np.argpartition(dist, max_points - 1)[:max_points]])


def cuboid_points(points: np.ndarray, subset: np.ndarray, share: tuple[float, float], aspect: float, min_points: int,
                  rng: np.random.Generator, tries: int = 100) -> np.ndarray:
    """The entries of ``subset`` inside a vertical box around one of them drawn at random (DepthContrast's
    ``randomcuboidLidar``, ``datasets/transforms/augment3d.py``): each xy side is a share drawn in ``share`` of the
    points' xy extent (redrawn while the shorter side is under ``aspect`` of the longer), and the centre is
    redrawn while the box holds ``min_points`` points or fewer, ``tries`` times at most."""
    if len(subset) == 0:
        return subset
    xy = points[subset, :2]
    extent = xy.max(0) - xy.min(0)
    for _ in range(tries):
        sides = rng.uniform(*share, 2)
        if sides.min() / sides.max() >= aspect:
            break
    half = extent * sides / 2
    for _ in range(tries):
        inside = np.all(np.abs(xy - xy[rng.integers(len(xy))]) <= half, axis=1)
        if inside.sum() > min_points:
            break
    return subset[inside]


class InputCrop(Schema):
    """``crop:`` of a recipe: the points a training scan keeps before augmentation and preprocessing.

    ``frustum`` draws one camera per scan and keeps the points it sees; that camera is then the only one the
    scan is paired with (set ``pairing.cameras: one``). ``cuboid`` keeps a random vertical box (DepthContrast's
    crop of each view). ``max_points`` keeps that many points nearest a random point. Evaluation samples are
    never cropped.
    """

    frustum: bool = Field(False, description="keep only the points of one camera's frustum, drawn per scan (ScaLR)")
    max_points: int | None = Field(None, gt=0, description="keep the N points nearest a random point (ScaLR: 20000)")
    min_depth: float = Field(1.0, ge=0, description="frustum: points nearer the camera plane are outside")
    after_voxels: bool = Field(False, description="apply max_points to the points the backbone's voxel subsampling "
                               "keeps, not to the raw scan (ScaLR, WaffleIron)")
    cuboid: tuple[float, float] | None = Field(
        None, description="keep a vertical box around a random point, each xy side a share in [low, high] of the "
        "scan's xy extent (DepthContrast: [0.5, 1.0])")
    cuboid_aspect: float = Field(0.75, gt=0, le=1, description="cuboid: smallest ratio of its shorter to longer side")
    cuboid_min_points: int = Field(10000, ge=0, description="cuboid: redraw the centre until the box holds more points "
                                   "(100 tries)")

    def __call__(self, scan: Scan, subset: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int | None]:
        """Cropped ``subset`` of the scan's points and the camera drawn (``None`` without ``frustum``)."""
        camera = None
        if self.frustum:
            if not scan.cameras:
                raise DataError(f"{scan.source}: crop.frustum needs camera views; set crop.frustum: false or use a "
                                "dataset with cameras")
            camera = int(rng.integers(len(scan.cameras)))
            subset = frustum_points(scan, camera, subset, self.min_depth)
        if self.cuboid is not None:
            subset = cuboid_points(scan.points, subset, self.cuboid, self.cuboid_aspect, self.cuboid_min_points, rng)
        if self.max_points is not None and not self.after_voxels:  # else ScanSamples caps the kept points
            subset = cap_points(scan.points, subset, self.max_points, rng)
        return subset, camera
