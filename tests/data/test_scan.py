import re

import numpy as np
import pytest

from lidarssl.data.scan import CameraView, Scan
from lidarssl.errors import DataError


def _scan(n: int = 5, **kw) -> Scan:
    rng = np.random.default_rng(0)
    args = dict(points=rng.normal(size=(n, 3)).astype(np.float32), intensity=np.ones(n, np.float32), source="a.bin")
    args.update(kw)
    return Scan(**args)


def _cam(**kw) -> CameraView:
    args = dict(name="CAM_FRONT", image=np.zeros((4, 6, 3), np.uint8), K=np.eye(3), lidar_to_cam=np.eye(4), source="f.jpg")
    args.update(kw)
    return CameraView(**args)


def test_valid_scan_keeps_fields():
    scan = _scan(labels=np.arange(5, dtype=np.int32), cameras=[_cam()])
    assert len(scan) == 5 and scan.labels.dtype == np.int64
    assert scan.camera("CAM_FRONT").hw == (4, 6)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(points=np.zeros((5, 4), np.float32)), "a.bin: field 'points' must be an (N, 3) float32 array, got shape (5, 4)"),
        (dict(points=np.zeros((5, 3), np.float64)), "field 'points' must be an (N, 3) float32 array, got shape (5, 3) dtype float64"),
        (dict(intensity=np.ones(4, np.float32)), "field 'intensity' must be a (5,) float array (one per point), got shape (4,)"),
        (dict(labels=np.zeros(6, np.int64)), "field 'labels' must be a (5,) integer array, one per point, got shape (6,)"),
        (dict(labels=np.zeros(5, np.float32)), "field 'labels' must be a (5,) integer array, one per point, got shape (5,) dtype float32"),
        (dict(ring=np.zeros(3, np.uint8)), "field 'ring' must be a (5,) integer array"),
        (dict(sensor_origin=np.zeros(2, np.float32)), "field 'sensor_origin' must be a (3,) float array"),
    ],
)
def test_bad_fields_name_field_file_and_expectation(kw, message):
    with pytest.raises(DataError) as err:
        _scan(**kw)
    assert message in str(err.value)


def test_nan_points_are_rejected_with_row():
    pts = np.zeros((5, 3), np.float32)
    pts[3, 1] = np.nan
    pts[4, 0] = np.inf
    with pytest.raises(DataError, match=r"a.bin: field 'points' has 2 rows with NaN or Inf \(first at row 3\)"):
        _scan(points=pts)


def test_non_rigid_extrinsic_is_rejected():
    T = np.eye(4)
    T[0, 0] = 2.0  # a scale is not a rigid transform
    with pytest.raises(DataError, match=r"f.jpg: field 'lidar_to_cam' must be a rigid transform .* check the calibration"):
        _cam(lidar_to_cam=T)
    mirror = np.diag([-1.0, 1.0, 1.0, 1.0])
    with pytest.raises(DataError, match="det = -1"):
        _cam(lidar_to_cam=mirror)


def test_float32_calibration_noise_is_accepted():
    angle = 0.3
    T = np.eye(4, dtype=np.float32)
    T[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    _cam(lidar_to_cam=T)


@pytest.mark.parametrize(
    "image, got",
    [
        (np.zeros((4, 6), np.uint8), "shape (4, 6)"),
        (np.zeros((4, 6, 4), np.uint8), "shape (4, 6, 4)"),
        (np.zeros((4, 6, 3), np.float32), "dtype float32"),
    ],
)
def test_bad_image_is_rejected(image, got):
    with pytest.raises(DataError, match=rf"f.jpg: field 'camera 'CAM_FRONT' image' must be HxWx3 uint8 RGB, got .*{re.escape(got)}"):
        _cam(image=image)


def test_missing_camera_lists_available():
    with pytest.raises(DataError, match=r"no camera 'CAM_BACK'; this scan has \['CAM_FRONT'\]"):
        _scan(cameras=[_cam()]).camera("CAM_BACK")
