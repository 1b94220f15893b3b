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

__all__ = ["InputCrop", "cap_points", "frustum_points"]


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


class InputCrop(Schema):
    """``crop:`` of a recipe: the points a training scan keeps before augmentation and preprocessing.

    ``frustum`` draws one camera per scan and keeps the points it sees; that camera is then the only one the
    scan is paired with (set ``pairing.cameras: one``). ``max_points`` keeps that many points nearest a random
    point. Evaluation samples are never cropped.
    """

    frustum: bool = Field(False, description="keep only the points of one camera's frustum, drawn per scan (ScaLR)")
    max_points: int | None = Field(None, gt=0, description="keep the N points nearest a random point (ScaLR: 20000)")
    min_depth: float = Field(1.0, ge=0, description="frustum: points nearer the camera plane are outside")
    after_voxels: bool = Field(False, description="apply max_points to the points the backbone's voxel subsampling "
                               "keeps, not to the raw scan (ScaLR, WaffleIron)")

    def __call__(self, scan: Scan, subset: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int | None]:
        """Cropped ``subset`` of the scan's points and the camera drawn (``None`` without ``frustum``)."""
        camera = None
        if self.frustum:
            if not scan.cameras:
                raise DataError(f"{scan.source}: crop.frustum needs camera views; set crop.frustum: false or use a "
                                "dataset with cameras")
            camera = int(rng.integers(len(scan.cameras)))
            subset = frustum_points(scan, camera, subset, self.min_depth)
        if self.max_points is not None and not self.after_voxels:  # else ScanSamples caps the kept points
            subset = cap_points(scan.points, subset, self.max_points, rng)
        return subset, camera
