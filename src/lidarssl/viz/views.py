"""What the figures share: one row per scan, its bird's-eye view and camera views coloured point by point.

A figure is a stack of :class:`Panel` rows. Each row shows a scan from above (lidar frame, x to the right, y up,
metres) and then its chosen cameras with the points projected onto them, every point in its panel's colour. Sizes
are exact in pixels (:func:`figure_size`), so a figure's size is known before it is drawn, and figures are written
atomically.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lidarssl.data.geometry import project
from lidarssl.data.scan import CameraView, Scan
from lidarssl.errors import DataError
from lidarssl.io import atomic_write

__all__ = ["Panel", "pick_cameras", "figure_size", "draw_rows", "save_png", "wrap", "camera_cells", "TITLE_PX", "FOOTER_PX",
           "query_camera", "busiest_camera", "dimmed"]

TITLE_PX = 22  # band above each row for its title
FOOTER_PX = 60  # band below the rows for a colour bar or legend
_BEV_BACKGROUND = "#101010"
_DPI = 100


@dataclass
class Panel:
    """One row of a figure.

    Attributes:
        scan: the scan drawn.
        colours: (N, 3) float RGB in [0, 1], one per point of the scan.
        title: text above the row.
        cameras: camera views to project the points onto (see :func:`pick_cameras`).
        order: bird's-eye drawing order (last on top); by height by default, so roofs cover roads.
        query: index of a point to mark with a star.
    """

    scan: Scan
    colours: np.ndarray
    title: str
    cameras: list[CameraView] = field(default_factory=list)
    order: np.ndarray | None = None
    query: int | None = None


def query_camera(scan: Scan, query: int, min_depth: float = 1.0) -> CameraView | None:
    """The camera that sees point ``query`` nearest to its image centre, or ``None``."""
    best, best_d = None, math.inf
    for cam in scan.cameras:
        proj = project(scan.points[query : query + 1], cam.K, cam.lidar_to_cam, cam.hw, min_depth)
        if proj.valid[0]:
            h, w = cam.hw
            d = float(np.hypot(proj.uv[0, 0] / w - 0.5, proj.uv[0, 1] / h - 0.5))
            if d < best_d:
                best, best_d = cam, d
    return best


def busiest_camera(scan: Scan) -> CameraView:
    """The camera that sees the most points of the scan."""
    counts = [int(project(scan.points, c.K, c.lidar_to_cam, c.hw, 1.0).valid.sum()) for c in scan.cameras]
    return scan.cameras[int(np.argmax(counts))]


def pick_cameras(scan: Scan, mode: str, query: int | None = None) -> list[CameraView]:
    """The cameras of a row: ``auto`` (the one that sees the query point, else the one that sees the most
    points), ``all``, ``none``, or camera names separated by commas."""
    if mode == "none" or not scan.cameras:
        return []
    if mode == "all":
        return list(scan.cameras)
    if mode == "auto":
        cam = query_camera(scan, query) if query is not None else None
        return [cam or busiest_camera(scan)]
    return [scan.camera(name) for name in mode.split(",")]


def camera_cells(cameras: Sequence[CameraView], height: int) -> tuple[int, list[tuple[int, int, int, int]]]:
    """Width of the camera block of a row ``height`` pixels tall, and each camera's ``(x, y, w, h)`` in it.

    One or two cameras sit side by side at full height; more are laid out on two lines at half height.
    """
    if not cameras:
        return 0, []
    lines = 1 if len(cameras) <= 2 else 2
    cols = -(-len(cameras) // lines)
    cam_h = height // lines
    cell_w = max(round(cam_h * c.hw[1] / c.hw[0]) for c in cameras)
    cells = [((i % cols) * cell_w, (i // cols) * cam_h, cell_w, cam_h) for i in range(len(cameras))]
    return cols * cell_w, cells


def figure_size(rows: Sequence[Sequence[CameraView]], height: int, footer_px: int = FOOTER_PX) -> tuple[int, int]:
    """(width, height) in pixels of a figure whose rows show these cameras, with a footer band ``footer_px`` tall."""
    width = max(height + camera_cells(cams, height)[0] for cams in rows)
    return width, len(rows) * (TITLE_PX + height) + footer_px


def save_png(fig, path: str | Path, compact: bool = False) -> Path:
    """Write a matplotlib figure as a PNG, atomically; ``compact`` quantises it to 256 colours (about a third
    of the size, for documentation)."""
    from PIL import Image

    def write(tmp: str) -> None:
        if not compact:
            fig.savefig(tmp, format="png", dpi=fig.dpi)
            return
        fig.canvas.draw()
        rgb = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])
        rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            tmp, format="png", optimize=True)

    return atomic_write(Path(path), write)


def wrap(text: str, width_px: int, fontsize: float = 8) -> str:
    """``text`` broken into lines that fit ``width_px`` at ``fontsize`` (DejaVu Sans: about 0.6 em a character)."""
    import textwrap

    return "\n".join(textwrap.wrap(text, max(20, int(width_px / (0.6 * fontsize * 100 / 72)))))


def dimmed(image: np.ndarray) -> np.ndarray:
    """A darkened grey copy of an RGB image, so coloured points stand out on it."""
    grey = image.astype(np.float32).mean(axis=2, keepdims=True) / 255.0
    return np.repeat(0.08 + 0.5 * grey, 3, axis=2)


def _bev(ax, panel: Panel, extent: float, size: float) -> None:
    pts = panel.scan.points
    order = panel.order if panel.order is not None else np.argsort(pts[:, 2], kind="stable")
    inside = (np.abs(pts[order, 0]) <= extent) & (np.abs(pts[order, 1]) <= extent)
    order = order[inside]
    ax.set_facecolor(_BEV_BACKGROUND)
    ax.scatter(pts[order, 0], pts[order, 1], c=panel.colours[order], s=size, linewidths=0, marker=".")
    if panel.query is not None:
        q = pts[panel.query]
        ax.scatter([q[0]], [q[1]], marker="*", s=220, c="white", edgecolors="black", linewidths=1.0, zorder=3)
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.02, 0.02, f"{2 * extent:.0f} m", transform=ax.transAxes, color="0.8", fontsize=7)


def _camera(ax, panel: Panel, cam: CameraView, size: float) -> None:
    proj = project(panel.scan.points, cam.K, cam.lidar_to_cam, cam.hw, 1.0)
    idx = np.flatnonzero(proj.valid)
    idx = idx[np.argsort(-proj.depth[idx], kind="stable")]  # far first: near surfaces stay on top
    h, w = cam.hw
    ax.imshow(dimmed(cam.image), extent=(0, w, h, 0), interpolation="bilinear")
    ax.scatter(proj.uv[idx, 0], proj.uv[idx, 1], c=panel.colours[idx], s=size, linewidths=0, marker=".")
    if panel.query is not None and proj.valid[panel.query]:
        u, v = proj.uv[panel.query]
        ax.scatter([u], [v], marker="*", s=220, c="white", edgecolors="black", linewidths=1.0, zorder=3)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.axis("off")
    ax.text(0.01, 0.97, cam.name, transform=ax.transAxes, color="white", fontsize=7, va="top")


def draw_rows(panels: Sequence[Panel], path: str | Path, height: int = 360, extent: float = 40.0,
              footer: Callable[[object, tuple[float, float, float, float]], None] | None = None,
              footer_px: int = FOOTER_PX, compact: bool = False) -> Path:
    """Draw one row per panel (bird's-eye view, then its cameras) and save the figure as a PNG, atomically.

    Args:
        panels: the rows, top to bottom.
        path: PNG file to write (folders are created).
        height: height of each row's views in pixels.
        extent: half-width of the bird's-eye view in metres.
        footer: draws a colour bar or legend in the band below the rows, given the figure and the band's
            ``(left, bottom, width, height)`` in figure fractions.
        footer_px: height of that band in pixels (0 without a footer).
        compact: write a 256-colour PNG (see :func:`save_png`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not panels:
        raise DataError("nothing to draw: no panel")
    for p in panels:
        if len(p.colours) != len(p.scan.points):
            raise DataError(f"{p.scan.source}: {len(p.colours)} colours for {len(p.scan.points)} points")
    W, H = figure_size([p.cameras for p in panels], height, footer_px if footer is not None else 0)
    fig = plt.figure(figsize=(W / _DPI, H / _DPI), dpi=_DPI, facecolor="white")
    scale = height / 360
    top = 0
    for p in panels:
        fig.text(4 / W, 1 - (top + TITLE_PX / 2) / H, p.title, fontsize=9, va="center", ha="left")
        top += TITLE_PX
        bev = fig.add_axes((0, 1 - (top + height) / H, height / W, height / H))
        _bev(bev, p, extent, 1.2 * scale**2)
        _, cells = camera_cells(p.cameras, height)
        for cam, (x, y, w, h) in zip(p.cameras, cells):
            ax = fig.add_axes(((height + x) / W, 1 - (top + y + h) / H, w / W, h / H))
            zoom = h / cam.hw[0]  # small images drawn large get larger dots, so their sparse points stay visible
            _camera(ax, p, cam, 4.0 * (h / 360) ** 2 * max(1.0, zoom) ** 2)
        top += height
    if footer is not None:
        footer(fig, (0.0, 0.0, 1.0, footer_px / H))
    try:
        return save_png(fig, path, compact)
    finally:
        plt.close(fig)
