"""Small synthetic worlds shared by the tests of this folder (small images keep the folder fast)."""

from __future__ import annotations

import numpy as np
import pytest

from lidarssl.synthetic import SyntheticWorld
from lidarssl.synthetic.camera import CameraRender, CameraSpec


@pytest.fixture(scope="session")
def small_world() -> SyntheticWorld:
    """Six cameras at 160x90, a few frames."""
    return SyntheticWorld(seed=1, num_frames=6, image_size=(160, 90))


@pytest.fixture
def interrupt_after_two():
    """A writer progress callback that interrupts the write (as Ctrl-C does) after the second frame."""

    def progress(done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    return progress


def project(points: np.ndarray, lidar_to_cam: np.ndarray, spec: CameraSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Our own pinhole projection: (mask of points in the image, column, row, depth) for lidar points."""
    p = points.astype(np.float64) @ lidar_to_cam[:3, :3].T + lidar_to_cam[:3, 3]
    z = p[:, 2]
    front = z > 0.5
    zs = np.where(front, z, 1.0)
    u = spec.fx * p[:, 0] / zs + spec.cx
    v = spec.fy * p[:, 1] / zs + spec.cy
    inside = front & (u >= 0) & (u < spec.width) & (v >= 0) & (v < spec.height)
    return inside, np.floor(u[inside]).astype(int), np.floor(v[inside]).astype(int), z[inside]


def _agreement(raw_labels: np.ndarray, points: np.ndarray, lidar_to_cam: np.ndarray, spec: CameraSpec, render: CameraRender) -> tuple[int, float, float]:
    """(points in the image, share not occluded, class agreement among the non-occluded).

    A point counts as not occluded when the depth rendered at its pixel matches its own depth; ego
    returns (raw id 31, the lidar sees the car roof the cameras do not) are left out.
    """
    keep = raw_labels != 31
    inside, u, v, z = project(points[keep], lidar_to_cam, spec)
    depth = render.depth[v, u]
    visible = np.abs(depth - z) < 0.3 + 0.02 * z
    same = render.raw_class[v, u] == raw_labels[keep][inside]
    n = int(inside.sum())
    return n, float(visible.mean()) if n else 0.0, float(same[visible].mean()) if visible.any() else 0.0


@pytest.fixture(scope="session", name="agreement")
def agreement_fixture():
    """The :func:`_agreement` helper (tests in this folder cannot import conftest under importlib mode)."""
    return _agreement
