"""Camera projection, occlusion, voxelisation and nearest neighbours (numpy and scipy only).

Pixel convention: image coordinates are continuous, ``u`` to the right (column) and ``v`` down (row), and
pixel ``(row r, column c)`` covers ``[c, c + 1) x [r, r + 1)``, so its centre is ``(c + 0.5, r + 0.5)`` and a
point lands on pixel ``floor(uv)``. A point is inside a ``(H, W)`` image when ``0 <= u < W`` and
``0 <= v < H``. :func:`project` and :func:`backproject` are exact inverses under this convention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from lidarssl.data.scan import Scan
from lidarssl.errors import DataError

__all__ = [
    "Projection",
    "Voxelization",
    "backproject",
    "knn",
    "occluded",
    "project",
    "project_scan",
    "quaternion_to_rotation",
    "rotation_to_quaternion",
    "voxelize",
]

# Below this camera depth (metres) a point is on or behind the image plane: it has no image position, and
# dividing by such a depth would overflow.
_MIN_Z = 1e-6


@dataclass(frozen=True)
class Projection:
    """Points projected into one camera.

    Attributes:
        uv: (N, 2) float64 continuous pixel coordinates (u = column, v = row); NaN for points at or behind
            the camera plane, which have no image position.
        depth: (N,) float64 depth along the optical axis (z in the camera frame), negative behind the camera.
        valid: (N,) bool, True for points deeper than ``min_depth``, inside the image and (when asked for)
            not occluded.
    """

    uv: np.ndarray
    depth: np.ndarray
    valid: np.ndarray

    @property
    def pixels(self) -> np.ndarray:
        """(N, 2) int64 ``(row, column)`` of the pixel each valid point falls on; -1 for invalid points."""
        rc = np.full((len(self.uv), 2), -1, dtype=np.int64)
        rc[self.valid] = np.floor(self.uv[self.valid][:, ::-1]).astype(np.int64)
        return rc


@dataclass(frozen=True)
class Voxelization:
    """The result of :func:`voxelize`.

    Attributes:
        coords: (M, 3) int32 voxel coordinates ``floor(p / voxel_size)``, unique and sorted lexicographically.
        kept: (M,) int64 index of the one input point that represents each voxel.
        inverse: (N,) int64 row of ``coords`` that each input point falls in.
    """

    coords: np.ndarray
    kept: np.ndarray
    inverse: np.ndarray

    def __len__(self) -> int:
        return len(self.coords)


def _as_array(name: str, a: np.ndarray, shape: tuple[int | None, ...]) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape)):
        want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise DataError(f"'{name}' must have shape {want}, got {a.shape}")
    return a


def project(
    points: np.ndarray,
    K: np.ndarray,
    lidar_to_cam: np.ndarray,
    hw: tuple[int, int],
    min_depth: float = 1.0,
) -> Projection:
    """Project lidar-frame points into a pinhole camera.

    Args:
        points: (N, 3) xyz in the lidar frame.
        K: (3, 3) intrinsic matrix.
        lidar_to_cam: (4, 4) rigid transform from the lidar frame to the camera optical frame
            (x right, y down, z forward).
        hw: image height and width in pixels.
        min_depth: points at this depth or nearer are never valid (metres).

    Returns:
        The :class:`Projection`; see the module docstring for the pixel convention.
    """
    pts = _as_array("points", points, (None, 3))
    K = _as_array("K", K, (3, 3))
    T = _as_array("lidar_to_cam", lidar_to_cam, (4, 4))
    cam = pts @ T[:3, :3].T + T[:3, 3]
    depth = cam[:, 2]
    front = depth > _MIN_Z
    uv = np.full((len(pts), 2), np.nan)
    # Dividing only the points in front keeps points behind the camera from raising overflow warnings.
    hom = cam[front] @ K.T
    uv[front] = hom[:, :2] / hom[:, 2:]
    H, W = hw
    # Comparisons with NaN are False without a warning, so the NaN rows drop out here.
    with np.errstate(invalid="ignore"):
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    valid = front & (depth > min_depth) & inside
    return Projection(uv=uv, depth=depth, valid=valid)


def quaternion_to_rotation(q: np.ndarray | list[float]) -> np.ndarray:
    """(3, 3) rotation matrix of the quaternion ``q = (w, x, y, z)``, normalised first.

    This is the Hamilton convention used by nuScenes and PandaSet: ``R @ p`` rotates ``p`` by ``q``.
    """
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(w, x, y, z)`` with ``w >= 0`` of a (3, 3) rotation matrix.

    The inverse of :func:`quaternion_to_rotation` (up to the sign of ``q``, which describes the same rotation).
    It branches on the largest diagonal term so that the square root never takes a tiny argument, which keeps
    every rotation, half-turns included, accurate to machine precision.
    """
    m = _as_array("R", R, (3, 3))
    trace = np.trace(m)
    if trace > 0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = [s / 4, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [(m[2, 1] - m[1, 2]) / s, s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4]
    q = np.asarray(q)
    q = -q if q[0] < 0 else q
    return q / np.linalg.norm(q)


def backproject(uv: np.ndarray, depth: np.ndarray, K: np.ndarray, lidar_to_cam: np.ndarray) -> np.ndarray:
    """Lift pixels at given depths back to lidar-frame points: the inverse of :func:`project`.

    Args:
        uv: (N, 2) continuous pixel coordinates (u = column, v = row); the centre of pixel (r, c) is
            (c + 0.5, r + 0.5).
        depth: (N,) depth along the optical axis (z in the camera frame).
        K: (3, 3) intrinsic matrix.
        lidar_to_cam: (4, 4) rigid transform from the lidar frame to the camera optical frame.

    Returns:
        (N, 3) float64 points in the lidar frame.
    """
    uv = _as_array("uv", uv, (None, 2))
    depth = _as_array("depth", depth, (len(uv),))
    K = _as_array("K", K, (3, 3))
    T = _as_array("lidar_to_cam", lidar_to_cam, (4, 4))
    rays = np.linalg.solve(K, np.column_stack([uv, np.ones(len(uv))]).T).T
    cam = rays * (depth / rays[:, 2])[:, None]  # scale each ray so that its z is the depth
    R, t = T[:3, :3], T[:3, 3]
    return (cam - t) @ R  # inverse of a rigid transform: R^T (x - t), written row-wise


def occluded(
    uv: np.ndarray,
    depth: np.ndarray,
    valid: np.ndarray,
    hw: tuple[int, int],
    window: int = 5,
    rel_tol: float = 0.1,
) -> np.ndarray:
    """Flag valid points hidden behind a clearly nearer point (a z-buffer test built from the points).

    The nearest depth per pixel is rasterised from the valid points, then spread over a ``window`` x
    ``window`` neighbourhood, because lidar points are sparse in the image and a far point seldom lands on
    exactly the pixel of the nearer point that hides it. A point is occluded when that neighbourhood holds a
    depth below ``depth * (1 - rel_tol)``; the tolerance keeps points on one slanted surface (the road seen
    at a grazing angle) from hiding each other.

    Args:
        uv: (N, 2) continuous pixel coordinates, as in :class:`Projection`.
        depth: (N,) camera depths.
        valid: (N,) which points to consider; the others neither occlude nor are occluded.
        hw: image height and width.
        window: side in pixels of the square neighbourhood (odd; 1 is a plain per-pixel z-buffer). Sparse
            lidar in a high-resolution image leaves gaps of several pixels between beams: enlarge it there.
        rel_tol: relative depth gap above which a nearer point counts as occluding.

    Returns:
        (N,) bool mask, True for occluded points (always False where ``valid`` is False).
    """
    if window < 1 or window % 2 == 0:
        raise DataError(f"occlusion window must be a positive odd number of pixels, got {window}")
    if not 0.0 <= rel_tol < 1.0:
        raise DataError(f"occlusion rel_tol must be in [0, 1), got {rel_tol}")
    valid = np.asarray(valid, dtype=bool)
    depth = np.asarray(depth, dtype=np.float64)
    out = np.zeros(len(valid), dtype=bool)
    if not valid.any():
        return out
    H, W = hw
    rc = np.floor(np.asarray(uv)[valid][:, ::-1]).astype(np.int64)
    z = depth[valid]
    zbuf = np.full((H, W), np.inf)
    np.minimum.at(zbuf, (rc[:, 0], rc[:, 1]), z)
    from scipy.ndimage import minimum_filter  # imported on use: the schemas (and --help) need no scipy

    near = minimum_filter(zbuf, size=window, mode="constant", cval=np.inf)
    out[valid] = near[rc[:, 0], rc[:, 1]] < z * (1.0 - rel_tol)
    return out


def project_scan(
    scan: Scan,
    min_depth: float = 1.0,
    occlusion: bool = False,
    occlusion_window: int = 5,
    occlusion_tol: float = 0.1,
) -> list[Projection]:
    """Project a scan's points into each of its cameras.

    Args:
        scan: the scan; its cameras carry ``K``, ``lidar_to_cam`` and the image size.
        min_depth: see :func:`project`.
        occlusion: also drop points that :func:`occluded` flags, so a point hidden behind a nearer surface
            is never paired with the pixel of that surface.
        occlusion_window: ``window`` of :func:`occluded`.
        occlusion_tol: ``rel_tol`` of :func:`occluded`.

    Returns:
        One :class:`Projection` per camera, in the order of ``scan.cameras``.
    """
    out = []
    for cam in scan.cameras:
        proj = project(scan.points, cam.K, cam.lidar_to_cam, cam.hw, min_depth)
        if occlusion:
            hidden = occluded(proj.uv, proj.depth, proj.valid, cam.hw, occlusion_window, occlusion_tol)
            proj = Projection(uv=proj.uv, depth=proj.depth, valid=proj.valid & ~hidden)
        out.append(proj)
    return out


def voxelize(
    points: np.ndarray,
    voxel_size: float | np.ndarray,
    mode: Literal["first", "random"] = "first",
    rng: np.random.Generator | int | None = None,
) -> Voxelization:
    """Group points into voxels and pick one representative point per voxel.

    Coordinates are absolute, ``floor(p / voxel_size)``, so a voxel has the same coordinates in every scan
    (no shift to the minimum of each scan).

    Args:
        points: (N, 3) xyz, N >= 1.
        voxel_size: edge length, a scalar or one per axis (metres, > 0).
        mode: ``"first"`` keeps the lowest-index point of each voxel (deterministic, for evaluation);
            ``"random"`` keeps a uniformly drawn one (augmentation during training).
        rng: generator or seed for ``"random"``; pass one to make the draw reproducible.

    Returns:
        The :class:`Voxelization`.
    """
    pts = _as_array("points", points, (None, 3))
    if len(pts) == 0:
        raise DataError("cannot voxelize an empty point cloud (0 points)")
    size = np.asarray(voxel_size, dtype=np.float64)
    if size.ndim == 0:
        size = np.full(3, size)
    if size.shape != (3,) or not np.all(np.isfinite(size)) or np.any(size <= 0):
        raise DataError(f"voxel_size must be a positive scalar or 3 positive values, got {voxel_size!r}")
    if mode not in ("first", "random"):
        raise DataError(f"voxelize mode must be 'first' or 'random', got {mode!r}")
    grid = np.floor(pts / size)
    if not np.all(np.abs(grid) < 2**31 - 1):
        raise DataError(
            f"voxel coordinates overflow int32 (or points are not finite) with voxel_size {voxel_size!r}; "
            "use a larger voxel size or drop far and non-finite points first"
        )
    coords = grid.astype(np.int32)
    # A stable lexicographic sort groups equal voxels while keeping input order inside each group, so the
    # first element of a group is that voxel's lowest point index.
    order = np.lexsort((coords[:, 2], coords[:, 1], coords[:, 0]))
    sorted_coords = coords[order]
    starts_mask = np.ones(len(pts), dtype=bool)
    starts_mask[1:] = np.any(sorted_coords[1:] != sorted_coords[:-1], axis=1)
    starts = np.flatnonzero(starts_mask)
    inverse = np.empty(len(pts), dtype=np.int64)
    inverse[order] = np.cumsum(starts_mask) - 1
    if mode == "first":
        pick = starts
    else:
        counts = np.diff(np.append(starts, len(pts)))
        pick = starts + np.floor(np.random.default_rng(rng).random(len(starts)) * counts).astype(np.int64)
    return Voxelization(coords=sorted_coords[starts], kept=order[pick].astype(np.int64), inverse=inverse)


def knn(query: np.ndarray, ref: np.ndarray, k: int, workers: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest reference points of each query point (Euclidean, via a k-d tree).

    Args:
        query: (Q, 3) query points.
        ref: (R, 3) reference points, R >= k.
        k: number of neighbours.
        workers: threads for the query; -1 uses every core.

    Returns:
        ``(dist, idx)``: (Q, k) float64 distances in increasing order and (Q, k) int64 indices into ``ref``.
    """
    q = _as_array("query", query, (None, 3))
    r = _as_array("ref", ref, (None, 3))
    if k < 1:
        raise DataError(f"knn needs k >= 1, got k={k}")
    if k > len(r):
        raise DataError(f"knn asked for k={k} neighbours but the reference cloud has only {len(r)} points")
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(r).query(q, k=k, workers=workers)
    # scipy drops the neighbour axis when k == 1; keep (Q, k) for every k.
    return dist.reshape(len(q), k), idx.reshape(len(q), k).astype(np.int64)
