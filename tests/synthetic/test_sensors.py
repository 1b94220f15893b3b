"""Lidar and camera models on scenes simple enough to know the answer."""

from __future__ import annotations

import numpy as np
import pytest

from lidarssl.synthetic import LIDAR_PRESETS
from lidarssl.synthetic.camera import SKY_CLASS, CameraSpec, render
from lidarssl.synthetic.layout import generate_layout
from lidarssl.synthetic.lidar import beam_directions, simulate_sweep
from lidarssl.synthetic.materials import MATERIAL_IDS
from lidarssl.synthetic.meshes import MeshBuilder, MeshLayer
from lidarssl.synthetic.raycast import FrameGeometry, StaticGeometry


def _flat_ground(size: float = 400.0) -> FrameGeometry:
    b = MeshBuilder(cls=24)
    v = np.array([[-size, -size, 0.0], [size, -size, 0.0], [size, size, 0.0], [-size, size, 0.0]])
    b.add(v, np.array([[0, 1, 2], [0, 2, 3]]), MATERIAL_IDS["grass"])
    return FrameGeometry(StaticGeometry(b.build()), MeshLayer.empty())


@pytest.mark.parametrize("name", ["nuscenes", "kitti"])
def test_lidar_on_flat_ground(name: str) -> None:
    preset = LIDAR_PRESETS[name]
    h = preset.mount[2]
    pose = np.eye(4)
    pose[:3, 3] = (5.0, -2.0, h)
    sweep = simulate_sweep(preset, _flat_ground(), pose, lambda f, p: np.full(len(f), 0.3), np.random.default_rng(0))
    # Every return lies on the ground, h below the sensor, up to the range noise (2 cm).
    assert np.abs(sweep.points[:, 2] + h).max() < 0.06
    assert np.abs(sweep.points[:, 2] + h).mean() < 0.01
    assert np.all(sweep.raw_labels == 24) and np.all(sweep.instance == 0)
    elev = np.asarray(preset.elevations_deg)
    rng_expected = h / np.sin(-np.deg2rad(elev))
    for ring, (e, r) in enumerate(zip(elev, rng_expected)):
        sel = sweep.ring == ring
        if e >= 0 or r > preset.max_range or r < preset.min_range:
            assert not sel.any(), (ring, e)  # beams above the horizon or out of range return nothing
            continue
        if r < 25.0:  # a few random dropouts only; farther, grazing returns get weak and drop out
            assert sel.sum() > 0.93 * preset.azimuth_steps, ring
        measured = np.linalg.norm(sweep.points[sel], axis=1)
        assert np.abs(np.median(measured) - r) < 0.02 + 1e-3 * r, ring
    # Intensity follows reflectivity x cos(incidence): steeper (closer) rings are brighter.
    ground_rings = np.nonzero((elev < 0) & (rng_expected < preset.max_range / 2))[0]
    near, far = sweep.ring == ground_rings.min(), sweep.ring == ground_rings.max()
    assert sweep.intensity[near].mean() > sweep.intensity[far].mean()


def test_beam_directions_match_the_preset() -> None:
    preset = LIDAR_PRESETS["nuscenes"]
    d, ring = beam_directions(preset)
    assert d.shape == (1085 * 32, 3) and np.allclose(np.linalg.norm(d, axis=1), 1.0)
    el = np.rad2deg(np.arcsin(d[:, 2]))
    assert np.allclose(el[:32], preset.elevations_deg) and np.array_equal(ring[:32], np.arange(32))
    assert el.max() == pytest.approx(10.67, abs=1e-3) and el.min() == pytest.approx(-30.67, abs=1e-3)


def test_camera_sees_ground_below_and_sky_above_the_horizon() -> None:
    spec = CameraSpec("CAM", (0.0, 0.0, 0.0), 0.0, 0.0, 64, 36, 40.0, 40.0, 32.0, 18.0)
    pose = spec.ego_from_cam()
    pose[:3, 3] = (0.0, 0.0, 1.5)
    layout = generate_layout(np.random.default_rng(0), (0.0, 10.0), 50.0, 80.0)
    out = render(spec, _flat_ground(), pose, np.array([0.3, 0.2, 0.93]) / np.linalg.norm([0.3, 0.2, 0.93]),
                 layout, np.random.default_rng(0))
    assert np.all(out.raw_class[:18] == SKY_CLASS) and np.all(out.raw_class[18:] == 24)
    # Depth of a ground pixel: camera height over the ray's downward slope.
    v = 30
    slope = (v + 0.5 - 18.0) / 40.0
    assert out.depth[v, 32] == pytest.approx(1.5 / slope, rel=1e-3)
    assert out.rgb[:18].mean(axis=(0, 1))[2] > out.rgb[:18].mean(axis=(0, 1))[0]  # blue sky
