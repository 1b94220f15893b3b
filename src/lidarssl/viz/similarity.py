"""Correlation maps: a scan coloured by the cosine similarity of every point's feature to one query point's.

ScaLR shows these for a point on a car, the same weights on nuScenes, SemanticKITTI, Pandar64 and PandarGT side by
side (valeoai/ScaLR, README "correlation maps"); here each row is a (dataset, weights) pair, seen from above and
projected onto the cameras.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lidarssl.data.scan import Scan
from lidarssl.features import cosine_similarity
from lidarssl.viz.query import check_point
from lidarssl.viz.views import Panel, draw_rows, pick_cameras, wrap

__all__ = ["similarity_colours", "similarity_panel", "save_similarity", "CMAP"]

CMAP = "turbo"
LOW_PERCENTILE = 2.0


def similarity_colours(similarity: np.ndarray) -> np.ndarray:
    """(N, 3) RGB of similarities, the colour map spanning the row's 2nd percentile to 1 (the query itself):
    untrained features are similar everywhere, so a fixed [-1, 1] scale would paint every scan one colour."""
    import matplotlib

    low = min(float(np.percentile(similarity, LOW_PERCENTILE)), 0.999)
    scaled = np.clip((similarity - low) / (1.0 - low), 0.0, 1.0)
    return matplotlib.colormaps[CMAP](scaled)[:, :3]


def similarity_panel(scan: Scan, features: np.ndarray, query: int, title: str, cameras: str = "auto") -> Panel:
    """A row coloured by similarity to point ``query``; the most similar points are drawn last (on top)."""
    check_point(scan, query)
    sim = cosine_similarity(features, query)
    return Panel(scan=scan, colours=similarity_colours(sim), title=title, cameras=pick_cameras(scan, cameras, query),
                 order=np.argsort(sim, kind="stable"), query=query)


def _colour_bar(fig, rect: tuple[float, float, float, float]) -> None:
    import matplotlib
    from matplotlib.colorbar import ColorbarBase

    left, bottom, width, height = rect
    ax = fig.add_axes((left + 0.25 * width, bottom + 0.55 * height, 0.5 * width, 0.22 * height))
    bar = ColorbarBase(ax, cmap=matplotlib.colormaps[CMAP], orientation="horizontal")
    bar.set_ticks([0, 1], labels=["low (the row's 2nd percentile)", "1 (the query point)"])
    bar.ax.tick_params(labelsize=7)
    text = wrap("cosine similarity of each point's feature to the query point's (star)", int(fig.bbox.width))
    fig.text(0.5, bottom + 0.88 * height, text, ha="center", va="center", fontsize=8)


def save_similarity(panels: Sequence[Panel], path: str | Path, height: int = 360, extent: float = 40.0,
                    compact: bool = False) -> Path:
    """Write the similarity rows as one PNG with a colour bar (``compact``: 256 colours)."""
    return draw_rows(panels, path, height=height, extent=extent, footer=_colour_bar, compact=compact)
