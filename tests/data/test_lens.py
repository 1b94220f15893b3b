"""Lens distortion: raw images resampled to pinhole images follow OpenCV's model, pixel for pixel."""

from __future__ import annotations

import numpy as np
import pytest

from lidarssl.data.lens import Distorter, Undistorter, check_distortion
from lidarssl.errors import DataError

K = np.array([[100.0, 0.0, 80.0], [0.0, 100.0, 45.0], [0.0, 0.0, 1.0]])
DIST = np.array([-0.3, 0.1, 0.001, -0.002, 0.01])  # k1, k2, p1, p2, k3


def opencv_distort(u: float, v: float) -> tuple[float, float]:
    """Where OpenCV's model (k1, k2, p1, p2, k3) puts the ideal pixel (u, v) in the raw image."""
    k1, k2, p1, p2, k3 = DIST
    x, y = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return xd * K[0, 0] + K[0, 2], yd * K[1, 1] + K[1, 2]


def _centre(image: np.ndarray) -> tuple[float, float]:
    w = image[..., 0].astype(float)
    v, u = np.indices(w.shape)
    return float((u * w).sum() / w.sum()), float((v * w).sum() / w.sum())


@pytest.mark.parametrize("uv", [(20, 12), (140, 80), (75, 40)])
def test_a_dot_moves_as_opencv_says_and_back(uv):
    ideal = np.zeros((90, 160, 3), np.uint8)
    ideal[uv[1] - 1:uv[1] + 2, uv[0] - 1:uv[0] + 2] = 255  # a 3x3 dot centred on uv
    raw = Distorter(K, DIST, (160, 90))(ideal)
    np.testing.assert_allclose(_centre(raw), opencv_distort(*uv), atol=0.15)
    back = Undistorter(K, DIST, (160, 90))(raw)
    np.testing.assert_allclose(_centre(back), uv, atol=0.15)


def test_zero_distortion_is_the_identity_and_sizes_are_checked():
    image = np.random.default_rng(0).integers(0, 255, (9, 16, 3), dtype=np.uint8)
    assert Undistorter(K, np.zeros(5), (16, 9))(image) is image
    with pytest.raises(DataError, match=r"cam.jpg: image is 16x9, but its camera's undistortion map was built "
                                        r"for 32x9"):
        Undistorter(K, DIST, (32, 9))(image, "cam.jpg")


def test_distortion_vectors_are_checked():
    assert check_distortion([0.1, 0, 0, 0], "x").tolist() == [0.1, 0, 0, 0]
    with pytest.raises(DataError, match=r"calib.json: distortion must be 4 / 5 / 8 / 12 / 14 finite numbers "
                                        r"\(k1, k2, p1, p2\[, k3, ...\]\), got \[0.1, nan, 0.0, 0.0, 0.0\]"):
        check_distortion([0.1, float("nan"), 0, 0, 0], "calib.json")
    with pytest.raises(DataError, match=r"calib.json: distortion coefficients must be numbers"):
        check_distortion(["a"], "calib.json")
