"""Reduced-size image decoding (``image_scale``): JPEG DCT scaling, box-filter fallback, intrinsics to match."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lidarssl.data.formats import NuScenes
from lidarssl.data.formats._common import read_image, reduce_intrinsics
from lidarssl.data.geometry import project, project_scan
from lidarssl.errors import DataError


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
@pytest.mark.parametrize("reduce", [1, 2, 4, 8])
def test_read_image_reduces_to_ceil_size(tmp_path: Path, suffix, reduce):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (36, 66, 3), np.uint8)).save(tmp_path / f"a{suffix}")
    image = read_image(tmp_path / f"a{suffix}", reduce)
    assert image.shape == (-(-36 // reduce), -(-66 // reduce), 3) and image.dtype == np.uint8


def test_reduced_intrinsics_divide_image_coordinates():
    K = np.array([[1200.0, 0, 800], [0, 1200, 450], [0, 0, 1]])
    pts = np.random.default_rng(1).uniform([-5, -5, 2], [5, 5, 30], (100, 3))
    full = project(pts, K, np.eye(4), (900, 1600))
    half = project(pts, reduce_intrinsics(K, 2), np.eye(4), (450, 800))
    np.testing.assert_allclose(half.uv, full.uv / 2)
    np.testing.assert_array_equal(half.valid, full.valid)


def test_nuscenes_image_scale(tmp_path):
    from lidarssl.synthetic import write_nuscenes

    world = {"seed": 2, "lidar": "nuscenes", "cameras": "nuscenes", "image_size": (96, 54)}
    write_nuscenes(world, tmp_path, 2, frames_per_sequence=1)
    full, half = NuScenes(tmp_path, "train")[0], NuScenes(tmp_path, "train", image_scale=0.5)[0]
    for a, b, pa, pb in zip(full.cameras, half.cameras, project_scan(full), project_scan(half)):
        assert a.hw == (54, 96) and b.hw == (27, 48)
        np.testing.assert_allclose(b.K[:2], a.K[:2] / 2)
        np.testing.assert_array_equal(pa.valid, pb.valid)
        np.testing.assert_allclose(pb.uv[pb.valid], pa.uv[pa.valid] / 2)
    with pytest.raises(DataError, match=r"'image_scale' must be one of \[1.0, 0.5, 0.25, 0.125\], got 0.3"):
        NuScenes(tmp_path, "train", image_scale=0.3)
