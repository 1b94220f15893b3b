"""Tests of lidarssl.data.geometry: projection, occlusion, voxelisation, kNN."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from lidarssl.data.geometry import (
    Projection,
    backproject,
    knn,
    occluded,
    project,
    project_scan,
    quaternion_to_rotation,
    rotation_to_quaternion,
    voxelize,
)
from lidarssl.data.scan import CameraView, Scan
from lidarssl.errors import DataError

FAST = settings(max_examples=40, deadline=None)

# Lidar frame (x forward, y left, z up) to camera optical frame (x right, y down, z forward).
LIDAR_TO_OPTICAL = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


@st.composite
def rigid(draw: st.DrawFn) -> np.ndarray:
    rotvec = draw(st.lists(st.floats(-np.pi, np.pi), min_size=3, max_size=3))
    t = draw(st.lists(st.floats(-5, 5), min_size=3, max_size=3))
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = t
    return T


@st.composite
def camera(draw: st.DrawFn) -> tuple[np.ndarray, tuple[int, int]]:
    H = draw(st.integers(16, 1200))
    W = draw(st.integers(16, 2000))
    f = draw(st.floats(50, 2000))
    aspect = draw(st.floats(0.8, 1.25))
    cx = draw(st.floats(0.2, 0.8)) * W
    cy = draw(st.floats(0.2, 0.8)) * H
    K = np.array([[f, 0, cx], [0, f * aspect, cy], [0, 0, 1]])
    return K, (H, W)


def inverse_rigid(T: np.ndarray) -> np.ndarray:
    inv = np.eye(4)
    inv[:3, :3] = T[:3, :3].T
    inv[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return inv


# ----------------------------------------------------------------------------------------------- projection


def test_project_hand_computed() -> None:
    K = np.array([[100.0, 0, 50], [0, 100, 40], [0, 0, 1]])
    T = LIDAR_TO_OPTICAL.copy()
    T[:3, 3] = [0.5, 0.0, 0.0]  # the lidar origin sits 0.5 m to the camera's right
    # Lidar points -> camera (x, y, z) = (-y + 0.5, -z, x):
    #   (10, -0.5, -2) -> (1, 2, 10)  -> u = 100 * 0.1 + 50 = 60, v = 100 * 0.2 + 40 = 60, valid
    #   (10, -10, 0)   -> (10.5, 0, 10) -> u = 155 >= W = 100, outside
    #   (0.5, 0, 0)    -> (0.5, 0, 0.5) -> depth 0.5 <= min_depth, invalid
    #   (-5, 0, 0)     -> behind the camera: no uv
    pts = np.array([[10, -0.5, -2], [10, -10, 0], [0.5, 0, 0], [-5, 0, 0]], dtype=np.float32)
    proj = project(pts, K, T, hw=(80, 100), min_depth=1.0)
    assert isinstance(proj, Projection)
    np.testing.assert_allclose(proj.uv[0], [60, 60])
    np.testing.assert_allclose(proj.uv[1], [155, 40])
    np.testing.assert_allclose(proj.depth, [10, 10, 0.5, -5])
    assert proj.valid.tolist() == [True, False, False, False]
    assert np.isnan(proj.uv[3]).all()
    assert proj.pixels.tolist() == [[60, 60], [-1, -1], [-1, -1], [-1, -1]]


def test_image_border_convention() -> None:
    # Pixel (r, c) covers [c, c + 1) x [r, r + 1): u = 0 is inside, u = W is outside.
    K = np.array([[10.0, 0, 0], [0, 10, 0], [0, 0, 1]])
    cam_pts = np.array([[0.0, 0.0, 2.0], [0.8, 0.0, 2.0], [0.799, 0.599, 2.0], [0.0, 0.6, 2.0]])
    proj = project(cam_pts, K, np.eye(4), hw=(3, 4))
    assert proj.valid.tolist() == [True, False, True, False]
    assert proj.pixels[2].tolist() == [2, 3]


@FAST
@given(T=rigid(), cam=camera(), seed=st.integers(0, 2**32 - 1))
def test_pixel_backprojects_and_projects_back(T: np.ndarray, cam: tuple, seed: int) -> None:
    K, (H, W) = cam
    rng = np.random.default_rng(seed)
    uv = np.column_stack([rng.uniform(0.01, W - 0.01, 64), rng.uniform(0.01, H - 0.01, 64)])
    depth = rng.uniform(1.5, 80.0, 64)
    pts = backproject(uv, depth, K, T)
    proj = project(pts, K, T, hw=(H, W), min_depth=1.0)
    np.testing.assert_allclose(proj.uv, uv, atol=1e-6)
    np.testing.assert_allclose(proj.depth, depth, rtol=1e-9)
    assert proj.valid.all()


@FAST
@given(T=rigid(), cam=camera(), seed=st.integers(0, 2**32 - 1))
def test_point_projects_and_backprojects(T: np.ndarray, cam: tuple, seed: int) -> None:
    K, hw = cam
    pts = np.random.default_rng(seed).uniform(-50, 50, (128, 3))
    proj = project(pts, K, T, hw=hw, min_depth=0.0)
    front = proj.depth > 0.1
    back = backproject(proj.uv[front], proj.depth[front], K, T)
    np.testing.assert_allclose(back, pts[front], atol=1e-6)


@FAST
@given(T=rigid(), cam=camera(), seed=st.integers(0, 2**32 - 1), min_depth=st.sampled_from([0.0, 1.0]))
def test_points_behind_camera_never_valid(T: np.ndarray, cam: tuple, seed: int, min_depth: float) -> None:
    K, hw = cam
    rng = np.random.default_rng(seed)
    cam_pts = np.column_stack([rng.uniform(-50, 50, (64, 2)), -rng.exponential(5.0, 64)])
    cam_pts[:4, 2] = [0.0, -0.0, -1e-300, -1e-12]  # on the camera plane: division by zero if not guarded
    pts = cam_pts @ inverse_rigid(T)[:3, :3].T + inverse_rigid(T)[:3, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any overflow / divide / invalid RuntimeWarning fails the test
        proj = project(pts, K, T, hw=hw, min_depth=min_depth)
        pixels = proj.pixels
    assert not proj.valid.any()
    assert (pixels == -1).all()


def test_project_rejects_bad_shapes() -> None:
    with pytest.raises(DataError, match=r"'points' must have shape \(N, 3\), got \(5, 2\)"):
        project(np.zeros((5, 2)), np.eye(3), np.eye(4), hw=(10, 10))
    with pytest.raises(DataError, match=r"'lidar_to_cam' must have shape \(4, 4\)"):
        project(np.zeros((5, 3)), np.eye(3), np.eye(3), hw=(10, 10))


# ------------------------------------------------------------------------------------------------ occlusion


def _grid(xs: np.ndarray, ys: np.ndarray, z: float) -> np.ndarray:
    gx, gy = np.meshgrid(xs, ys)
    return np.column_stack([gx.ravel(), gy.ravel(), np.full(gx.size, z)])


def _wall_scan() -> tuple[Scan, np.ndarray, np.ndarray]:
    # Camera frame = lidar frame. f = 100 px: at 5 m one pixel is 5 cm, at 20 m it is 20 cm.
    # The near wall (z = 5) covers the left half of the image with a point every 2 px, the far wall
    # (z = 20) the whole image with a point every 1.5 px.
    near = _grid(np.arange(-2.5, 0.0, 0.1), np.arange(-2.5, 2.5, 0.1), 5.0)
    far = _grid(np.arange(-10, 10, 0.3), np.arange(-10, 10, 0.3), 20.0)
    pts = np.concatenate([near, far]).astype(np.float32)
    is_far = np.arange(len(pts)) >= len(near)
    K = np.array([[100.0, 0, 50], [0, 100, 50], [0, 0, 1]])
    view = CameraView("cam", np.zeros((100, 100, 3), np.uint8), K, np.eye(4))
    scan = Scan(points=pts, intensity=np.zeros(len(pts), np.float32), cameras=[view])
    return scan, is_far, pts[:, 0]


def test_far_wall_behind_near_wall_is_occluded() -> None:
    scan, is_far, x = _wall_scan()
    (proj,) = project_scan(scan)
    hidden = occluded(proj.uv, proj.depth, proj.valid, (100, 100))
    u = proj.uv[:, 0]
    behind = is_far & proj.valid & (u < 50 - 3)  # well inside the near wall's image footprint
    visible = is_far & proj.valid & (u > 50 + 3)  # clear of its edge by more than the window radius
    assert behind.sum() > 100 and visible.sum() > 100
    assert hidden[behind].all()
    assert not hidden[visible].any()
    assert not hidden[~is_far].any()  # the near wall is never hidden
    assert not hidden[~proj.valid].any()

    (filtered,) = project_scan(scan, occlusion=True)
    assert (filtered.valid == (proj.valid & ~hidden)).all()


def test_sparse_near_surface_needs_the_window() -> None:
    scan, is_far, _ = _wall_scan()
    (proj,) = project_scan(scan)
    behind = is_far & proj.valid & (proj.uv[:, 0] < 47)
    # A per-pixel z-buffer lets far points slip through the 2 px gaps of the near wall; a 5 px window does not.
    assert not occluded(proj.uv, proj.depth, proj.valid, (100, 100), window=1)[behind].all()
    assert occluded(proj.uv, proj.depth, proj.valid, (100, 100), window=5)[behind].all()


def test_slanted_ground_does_not_occlude_itself() -> None:
    # A road 1.5 m below a camera with f = 1000 px, out to 40 m: neighbouring pixels differ in depth by a
    # few percent, below the default 10 % tolerance.
    rng = np.random.default_rng(0)
    n = 20000
    cam_pts = np.column_stack([rng.uniform(-10, 10, n), np.full(n, 1.5), rng.uniform(3, 40, n)])
    K = np.array([[1000.0, 0, 500], [0, 1000, 300], [0, 0, 1]])
    proj = project(cam_pts, K, np.eye(4), hw=(600, 1000))
    assert proj.valid.sum() > 5000
    assert not occluded(proj.uv, proj.depth, proj.valid, (600, 1000)).any()


def test_occluded_rejects_bad_parameters() -> None:
    uv, depth, valid = np.zeros((1, 2)), np.ones(1), np.ones(1, bool)
    with pytest.raises(DataError, match="positive odd number"):
        occluded(uv, depth, valid, (4, 4), window=4)
    with pytest.raises(DataError, match=r"rel_tol must be in \[0, 1\)"):
        occluded(uv, depth, valid, (4, 4), rel_tol=1.5)


# --------------------------------------------------------------------------------------------- voxelisation

voxel_sizes = st.one_of(
    st.floats(0.05, 2.0),
    st.lists(st.floats(0.05, 2.0), min_size=3, max_size=3).map(np.array),
)


@FAST
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 400), size=voxel_sizes, scale=st.floats(0.1, 50))
def test_voxelize_round_trip(seed: int, n: int, size: float | np.ndarray, scale: float) -> None:
    pts = (np.random.default_rng(seed).normal(size=(n, 3)) * scale).astype(np.float32)
    vox = voxelize(pts, size)
    expected = np.floor(pts.astype(np.float64) / np.broadcast_to(size, (3,))).astype(np.int32)
    M = len(vox)
    assert vox.coords.dtype == np.int32 and vox.coords.shape == (M, 3)
    assert vox.kept.shape == (M,) and vox.inverse.shape == (n,)
    np.testing.assert_array_equal(vox.coords[vox.inverse], expected)  # every point's voxel = floor(p / size)
    assert len(np.unique(vox.coords, axis=0)) == M  # one row per voxel
    np.testing.assert_array_equal(vox.inverse[vox.kept], np.arange(M))  # one kept point in each voxel
    # "first" keeps the lowest point index of each voxel.
    first = np.full(M, n)
    np.minimum.at(first, vox.inverse, np.arange(n))
    np.testing.assert_array_equal(vox.kept, first)


def test_voxelize_absolute_coordinates_and_negative_floor() -> None:
    pts = np.array([[-0.05, 0.0, 0.15], [0.05, 0.09, 0.1], [-0.01, 0.02, 0.19], [1.0, -1.0, 0.0]])
    vox = voxelize(pts, 0.1)
    # Coordinates are floor(p / 0.1), not shifted to the minimum: -0.05 -> -1.
    assert vox.coords.tolist() == [[-1, 0, 1], [0, 0, 1], [10, -10, 0]]
    assert vox.inverse.tolist() == [0, 1, 0, 2]
    assert vox.kept.tolist() == [0, 1, 3]
    aniso = voxelize(pts, [0.1, 1.0, 1.0])
    assert aniso.coords.tolist() == [[-1, 0, 0], [0, 0, 0], [10, -1, 0]]


def test_voxelize_random_is_seeded() -> None:
    pts = np.random.default_rng(1).uniform(0, 2, (2000, 3))
    a = voxelize(pts, 0.5, mode="random", rng=np.random.default_rng(7))
    b = voxelize(pts, 0.5, mode="random", rng=7)
    first = voxelize(pts, 0.5)
    np.testing.assert_array_equal(a.kept, b.kept)
    np.testing.assert_array_equal(a.coords, first.coords)
    np.testing.assert_array_equal(a.inverse, first.inverse)
    np.testing.assert_array_equal(a.inverse[a.kept], np.arange(len(a)))
    assert (a.kept != first.kept).mean() > 0.5  # about 30 points per voxel: the draw rarely hits the first


@pytest.mark.parametrize(
    ("points", "size", "mode", "message"),
    [
        (np.zeros((0, 3)), 0.1, "first", r"empty point cloud \(0 points\)"),
        (np.zeros((4, 3)), 0.0, "first", "voxel_size must be a positive scalar or 3 positive values, got 0.0"),
        (np.zeros((4, 3)), -0.1, "first", "voxel_size must be a positive"),
        (np.zeros((4, 3)), [0.1, 0.1], "first", "voxel_size must be a positive"),
        (np.zeros((4, 3)), [0.1, np.nan, 0.1], "first", "voxel_size must be a positive"),
        (np.zeros((4, 3)), 0.1, "mean", "mode must be 'first' or 'random', got 'mean'"),
        (np.zeros((4, 2)), 0.1, "first", r"'points' must have shape \(N, 3\)"),
        (np.full((4, 3), 1e9), 1e-3, "first", "overflow int32"),
    ],
)
def test_voxelize_errors(points: np.ndarray, size: object, mode: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        voxelize(points, size, mode=mode)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------- kNN


@pytest.mark.parametrize("k", [1, 5])
def test_knn_matches_brute_force(k: int) -> None:
    rng = np.random.default_rng(3)
    ref, query = rng.normal(size=(300, 3)), rng.normal(size=(40, 3))
    dist, idx = knn(query, ref, k)
    assert dist.shape == idx.shape == (40, k) and idx.dtype == np.int64
    all_d = np.linalg.norm(query[:, None] - ref[None], axis=2)
    order = np.argsort(all_d, axis=1)[:, :k]
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_allclose(dist, np.take_along_axis(all_d, order, axis=1))


def test_knn_errors() -> None:
    with pytest.raises(DataError, match="k=4 neighbours but the reference cloud has only 3 points"):
        knn(np.zeros((2, 3)), np.zeros((3, 3)), 4)
    with pytest.raises(DataError, match="k >= 1"):
        knn(np.zeros((2, 3)), np.zeros((3, 3)), 0)


# --- quaternions ----------------------------------------------------------------------------------------------------


@FAST
@given(seed=st.integers(0, 2**32 - 1))
def test_quaternions_match_scipy_and_round_trip(seed: int) -> None:
    q = np.random.default_rng(seed).normal(size=4)
    q /= np.linalg.norm(q)
    R = quaternion_to_rotation(q)  # (w, x, y, z); scipy's order is (x, y, z, w)
    np.testing.assert_allclose(R, Rotation.from_quat([*q[1:], q[0]]).as_matrix(), atol=1e-12)
    np.testing.assert_allclose(rotation_to_quaternion(R), q * np.sign(q[0]), atol=1e-12)


@pytest.mark.parametrize("axis", [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]])
def test_half_turns_keep_their_quaternion(axis: list[int]) -> None:
    # trace -1: the branch that divides by the largest diagonal term keeps these exact
    R = Rotation.from_rotvec(np.pi * np.array(axis) / np.linalg.norm(axis)).as_matrix()
    np.testing.assert_allclose(quaternion_to_rotation(rotation_to_quaternion(R)), R, atol=1e-12)
