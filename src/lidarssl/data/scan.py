"""The data contract: every reader returns a :class:`Scan`, and nothing else crosses into training.

A Scan holds one lidar sweep in the **lidar frame** and the camera views taken with it. Each
:class:`CameraView` carries the lidar-to-camera extrinsic with the ego motion between the lidar and
camera timestamps already folded in, so projecting ``K @ (lidar_to_cam @ p)`` puts a point on the pixel
that saw the same surface. Both classes check themselves at construction; a bad field raises a
:class:`~lidarssl.errors.DataError` naming the field, the source file and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lidarssl.errors import DataError

#: Training id of points that carry no label (unlabelled, noise, ego vehicle, ...).
IGNORE_INDEX = 255

# A rotation passes as rigid when R^T R is within this of the identity: float32 calibration files
# (mmdet3d's pickles, for instance) carry noise of about 1e-7 per entry.
_RIGID_TOL = 1e-4


def _fail(source: str, name: str, expected: str, got: str) -> DataError:
    return DataError(f"{source}: field '{name}' must be {expected}, got {got}")


def _describe(a: np.ndarray) -> str:
    return f"shape {tuple(a.shape)} dtype {a.dtype}"


def _check_array(
    source: str, name: str, a: object, shape: tuple[int | None, ...], kinds: str, expected: str
) -> np.ndarray:
    """Check type, rank, fixed dimensions and dtype kind ('f' float, 'iu' integer, 'u' unsigned)."""
    if not isinstance(a, np.ndarray):
        raise _fail(source, name, expected, type(a).__name__)
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
        raise _fail(source, name, expected, _describe(a))
    if a.dtype.kind not in kinds:
        raise _fail(source, name, expected, _describe(a))
    return a


def _check_finite(source: str, name: str, a: np.ndarray) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise DataError(
            f"{source}: field '{name}' has {len(rows)} rows with NaN or Inf "
            f"(first at row {int(rows[0])}); drop them in the reader"
        )


def check_rigid(source: str, name: str, T: np.ndarray) -> None:
    """Raise unless ``T`` is a 4x4 rigid transform: orthonormal rotation, det +1, last row 0 0 0 1."""
    _check_array(source, name, T, (4, 4), "f", "a (4, 4) float rigid transform")
    _check_finite(source, name, T)
    R = T[:3, :3].astype(np.float64)
    err = np.abs(R.T @ R - np.eye(3)).max()
    if err > _RIGID_TOL or np.linalg.det(R) < 0 or not np.allclose(T[3], [0, 0, 0, 1]):
        raise DataError(
            f"{source}: field '{name}' must be a rigid transform (orthonormal rotation with det +1 "
            f"and last row [0 0 0 1]); |R^T R - I| = {err:.2e}, det = {np.linalg.det(R):.4f}, "
            f"last row = {np.round(T[3], 6).tolist()}; check the calibration file"
        )


@dataclass
class CameraView:
    """One camera image with the calibration that pairs it with its scan.

    Attributes:
        name: camera name, e.g. ``CAM_FRONT`` or ``image_2``.
        image: (H, W, 3) uint8 RGB.
        K: (3, 3) intrinsic matrix of ``image`` (pixels; u to the right, v down).
        lidar_to_cam: (4, 4) rigid transform from the scan's lidar frame to this camera's optical frame
            (x right, y down, z forward), ego motion between the two timestamps included.
        timestamp: capture time in seconds.
        source: file the image was read from, used in error messages.
    """

    name: str
    image: np.ndarray
    K: np.ndarray
    lidar_to_cam: np.ndarray
    timestamp: float = 0.0
    source: str = "<memory>"

    def __post_init__(self) -> None:
        src = self.source
        what = f"camera '{self.name}' image"
        if not isinstance(self.image, np.ndarray) or self.image.ndim != 3 or self.image.shape[2] != 3:
            got = _describe(self.image) if isinstance(self.image, np.ndarray) else type(self.image).__name__
            raise DataError(f"{src}: field '{what}' must be HxWx3 uint8 RGB, got {got}")
        if self.image.dtype != np.uint8:
            raise DataError(f"{src}: field '{what}' must be HxWx3 uint8 RGB, got {_describe(self.image)}")
        self.K = _check_array(src, "K", self.K, (3, 3), "f", "a (3, 3) float intrinsic matrix")
        _check_finite(src, "K", self.K)
        if self.K[0, 0] <= 0 or self.K[1, 1] <= 0:
            raise DataError(f"{src}: field 'K' must have positive focal lengths, got fx={self.K[0, 0]}, fy={self.K[1, 1]}")
        check_rigid(src, "lidar_to_cam", self.lidar_to_cam)

    @property
    def hw(self) -> tuple[int, int]:
        """Image height and width in pixels."""
        return int(self.image.shape[0]), int(self.image.shape[1])


@dataclass
class Scan:
    """One lidar sweep with its labels and cameras.

    Attributes:
        points: (N, 3) float32 xyz in the lidar frame, metres.
        intensity: (N,) float32 return strength, in the dataset's own scale (normalised later per dataset).
        source: file the sweep was read from, used in error messages.
        dataset: name of the dataset, e.g. ``nuscenes`` or ``synthetic``.
        frame_id: stable id of the frame inside its dataset (token, ``seq/frame``).
        timestamp: capture time of the sweep in seconds.
        ring: optional (N,) integer beam index.
        time: optional (N,) float32 per-point time offset in seconds.
        raw_labels: optional (N,) integer labels in the dataset's own ids.
        labels: optional (N,) int64 training ids, ``IGNORE_INDEX`` for points without a class.
        instance: optional (N,) integer instance ids, 0 for stuff.
        sensor_origin: (3,) float32 position of the sensor in the lidar frame (rays start here).
        ego_pose: (4, 4) rigid transform from the lidar frame to the global frame at ``timestamp``.
        cameras: the camera views paired with this sweep.
    """

    points: np.ndarray
    intensity: np.ndarray
    source: str = "<memory>"
    dataset: str = ""
    frame_id: str = ""
    timestamp: float = 0.0
    ring: np.ndarray | None = None
    time: np.ndarray | None = None
    raw_labels: np.ndarray | None = None
    labels: np.ndarray | None = None
    instance: np.ndarray | None = None
    sensor_origin: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    ego_pose: np.ndarray = field(default_factory=lambda: np.eye(4))
    cameras: list[CameraView] = field(default_factory=list)

    def __post_init__(self) -> None:
        src = self.source
        pts = _check_array(src, "points", self.points, (None, 3), "f", "an (N, 3) float32 array")
        if pts.dtype != np.float32:
            raise _fail(src, "points", "an (N, 3) float32 array", _describe(pts))
        _check_finite(src, "points", pts)
        n = len(pts)
        inten = _check_array(src, "intensity", self.intensity, (n,), "f", f"a ({n},) float array (one per point)")
        _check_finite(src, "intensity", inten)
        self.intensity = inten.astype(np.float32, copy=False)
        for name, kinds in (("ring", "iu"), ("time", "f"), ("raw_labels", "iu"), ("labels", "iu"), ("instance", "iu")):
            value = getattr(self, name)
            if value is None:
                continue
            kind_word = "float" if kinds == "f" else "integer"
            expected = f"a ({n},) {kind_word} array, one per point"
            _check_array(src, name, value, (n,), kinds, expected)
        if self.labels is not None:
            self.labels = self.labels.astype(np.int64, copy=False)
        origin = _check_array(src, "sensor_origin", self.sensor_origin, (3,), "f", "a (3,) float array")
        _check_finite(src, "sensor_origin", origin)
        check_rigid(src, "ego_pose", self.ego_pose)
        for cam in self.cameras:
            if not isinstance(cam, CameraView):
                raise _fail(src, "cameras", "a list of CameraView", type(cam).__name__)

    def __len__(self) -> int:
        return len(self.points)

    @property
    def cache_key(self) -> str:
        """``dataset/frame_id``: names the scan in on-disk caches (frame ids of two datasets may coincide)."""
        return f"{self.dataset or 'data'}/{self.frame_id}"

    def camera(self, name: str) -> CameraView:
        """The camera view called ``name``; the error lists the names this scan has."""
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise DataError(f"{self.source}: no camera '{name}'; this scan has {[c.name for c in self.cameras]}")
