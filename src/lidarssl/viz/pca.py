"""Features as colours: the first three principal components of a scan's point features mapped to RGB."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lidarssl.data.scan import Scan
from lidarssl.errors import DataError
from lidarssl.viz.views import Panel, draw_rows, pick_cameras, wrap

__all__ = ["pca_colours", "pca_panel", "save_pca"]


def pca_colours(features: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.0)) -> np.ndarray:
    """(N, 3) RGB in [0, 1]: projections on the first three principal components, each stretched between its
    1st and 99th percentile (a few outliers would otherwise grey out the rest)."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise DataError(f"PCA colours need an (N, C) feature array with N >= 2, got shape {f.shape}")
    centred = f - f.mean(axis=0)
    # SVD of a random subset gives the same axes as the full cloud's, much faster on 100k points
    rng = np.random.default_rng(0)
    sample = centred[rng.choice(len(f), size=min(len(f), 20000), replace=False)]
    _, _, vt = np.linalg.svd(sample, full_matrices=False)
    comps = vt[:3]
    if len(comps) < 3:  # fewer than three channels: pad with zeros (grey)
        comps = np.vstack([comps, np.zeros((3 - len(comps), f.shape[1]))])
    proj = centred @ comps.T
    lo, hi = np.percentile(proj, percentiles, axis=0)
    return np.clip((proj - lo) / np.maximum(hi - lo, 1e-12), 0.0, 1.0)


def pca_panel(scan: Scan, features: np.ndarray, title: str, cameras: str = "auto") -> Panel:
    """A row coloured by the scan's own three principal feature components."""
    return Panel(scan=scan, colours=pca_colours(features), title=title, cameras=pick_cameras(scan, cameras))


def _caption(fig, rect: tuple[float, float, float, float]) -> None:
    left, bottom, width, height = rect
    text = wrap("colour: the first three principal components of the point features as red, green and blue, "
                "fitted per row; similar colours, similar features", int(fig.bbox.width))
    fig.text(0.5, bottom + 0.5 * height, text, ha="center", va="center", fontsize=8)


def save_pca(panels: Sequence[Panel], path: str | Path, height: int = 360, extent: float = 40.0,
             compact: bool = False) -> Path:
    """Write the PCA rows as one PNG (``compact``: 256 colours)."""
    return draw_rows(panels, path, height=height, extent=extent, footer=_caption, compact=compact)
