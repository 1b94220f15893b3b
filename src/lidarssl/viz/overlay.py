"""Lidar points drawn over a camera image, coloured by class: the check a person makes of a calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lidarssl.data.geometry import project
from lidarssl.data.scan import Scan
from lidarssl.viz.palette import IGNORE_COLOUR, class_colours, colour_labels


def save_overlay(
    scan: Scan,
    path: str | Path,
    camera: str | None = None,
    class_names: tuple[str, ...] | None = None,
    min_depth: float = 1.0,
) -> Path:
    """Save ``camera`` of ``scan`` with its projected points as a PNG (with a class legend).

    Points are coloured by training class when the scan has labels (ignored ones grey), else by depth.
    Far points are drawn first so near surfaces stay on top.

    Args:
        scan: the scan; it must have at least one camera.
        path: PNG file to write (folders are created).
        camera: camera name; the scan's first camera when ``None``.
        class_names: names of the training classes, for the legend.
        min_depth: points nearer than this (metres) are not drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from lidarssl.errors import DataError

    if not scan.cameras:
        raise DataError(f"{scan.source}: this scan has no camera to draw an overlay on")
    view = scan.camera(camera) if camera is not None else scan.cameras[0]
    proj = project(scan.points, view.K, view.lidar_to_cam, view.hw, min_depth=min_depth)
    idx = np.nonzero(proj.valid)[0]
    idx = idx[np.argsort(-proj.depth[idx])]
    h, w = view.hw

    zoom = max(1.0, 960 / w)  # small synthetic images are drawn larger so points and legend stay legible
    fig_w, fig_h, legend_h = w * zoom / 100, h * zoom / 100, 0.6
    fig = plt.figure(figsize=(fig_w, fig_h + legend_h), dpi=100)
    ax = fig.add_axes([0, legend_h / (fig_h + legend_h), 1, fig_h / (fig_h + legend_h)])
    ax.imshow(view.image, extent=(0, w, h, 0))  # pixel i spans [i, i+1), as in `project`
    size = max(1.0, (w * zoom / 800) ** 2 * 2)
    if scan.labels is not None and class_names:
        colours = colour_labels(scan.labels[idx], len(class_names)) / 255.0
        present = np.unique(scan.labels[idx])
        palette = class_colours(len(class_names)) / 255.0
        handles = [Patch(color=palette[c], label=class_names[c]) for c in present if c < len(class_names)]
        if np.any(present >= len(class_names)):
            handles.append(Patch(color=np.array(IGNORE_COLOUR) / 255.0, label="ignored"))
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), fontsize=7, frameon=False)
        ax.scatter(proj.uv[idx, 0], proj.uv[idx, 1], c=colours, s=size, linewidths=0)
    else:
        ax.scatter(proj.uv[idx, 0], proj.uv[idx, 1], c=proj.depth[idx], cmap="turbo", s=size, linewidths=0)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.axis("off")
    ax.set_title(f"{scan.dataset} {scan.frame_id} {view.name}: {len(idx)} points", fontsize=8)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
