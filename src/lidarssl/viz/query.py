"""Choosing the query point of a similarity figure: by index, by coordinates, or a point of a class."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree

from lidarssl.data.geometry import project
from lidarssl.data.scan import Scan
from lidarssl.errors import ConfigError, DataError

__all__ = ["select_query", "check_point"]

MIN_RANGE = 4.0  # a class query skips points this near the sensor (metres): ego-vehicle returns, cut-off objects


def check_point(scan: Scan, index: int) -> int:
    """``index`` if it is a point of ``scan``, else a one-line error with the valid range."""
    n = len(scan.points)
    if not 0 <= index < n:
        raise DataError(f"query point {index} is out of range: {scan.source} has {n} points (0..{n - 1})")
    return index


def _seen(scan: Scan, rows: np.ndarray) -> np.ndarray:
    """Which of ``rows`` project into at least one camera."""
    seen = np.zeros(len(rows), bool)
    for cam in scan.cameras:
        seen |= project(scan.points[rows], cam.K, cam.lidar_to_cam, cam.hw, 1.0).valid
    return seen


def select_query(scan: Scan, point: int | None = None, xyz: Sequence[float] | None = None,
                 cls: str | None = None, class_names: Sequence[str] | None = None, extent: float = 40.0) -> int:
    """The index of the query point in ``scan``.

    Exactly one of ``point`` (an index), ``xyz`` (the point nearest these lidar-frame coordinates) or ``cls`` (a
    class name; needs labels) picks it. For a class, the point chosen is the one with the most points of its class
    within 1 m among those within ``extent`` metres (in x and y) but not nearer than ``MIN_RANGE`` and, when the scan has cameras, seen by one: a
    point in the middle of a well-sampled object, the same rule for every dataset.
    """
    given = sum(x is not None for x in (point, xyz, cls))
    if given != 1:
        raise ConfigError("choose the query point with exactly one of --point INDEX, --xyz X,Y,Z or --class NAME")
    if point is not None:
        return check_point(scan, int(point))
    if xyz is not None:
        if len(xyz) != 3:
            raise ConfigError(f"--xyz needs three coordinates X,Y,Z, got {list(xyz)}")
        return int(np.argmin(np.linalg.norm(scan.points - np.asarray(xyz, np.float32), axis=1)))
    names = list(class_names or [])
    if cls not in names:
        raise ConfigError(f"class '{cls}' is not a class of {scan.dataset or 'this dataset'}; classes: {', '.join(names)}")
    if scan.labels is None:
        raise DataError(f"{scan.source}: --class needs labels and this frame has none; use --point or --xyz")
    rows = np.flatnonzero(scan.labels == names.index(cls))
    if len(rows) == 0:
        raise DataError(f"{scan.source}: no point of class '{cls}' in this frame; choose another class or frame")
    xy = scan.points[rows, :2] - scan.sensor_origin[:2]
    near = rows[(np.abs(xy[:, 0]) <= extent) & (np.abs(xy[:, 1]) <= extent) & (np.hypot(xy[:, 0], xy[:, 1]) >= MIN_RANGE)]
    rows = near if len(near) else rows
    if scan.cameras:
        seen = rows[_seen(scan, rows)]
        rows = seen if len(seen) else rows
    pts = scan.points[rows]
    counts = cKDTree(pts).query_ball_point(pts, r=1.0, return_length=True)
    return int(rows[int(np.argmax(counts))])
