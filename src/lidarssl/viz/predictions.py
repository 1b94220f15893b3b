"""A segmentation run's predictions next to the labels, with the wrong points highlighted.

Every original point is predicted (dropped points take their nearest kept point's class, as evaluation scores
them), so the figure shows what ``lidarssl evaluate`` counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lidarssl.data.scan import IGNORE_INDEX, Scan
from lidarssl.errors import DataError
from lidarssl.features import rows_of_points
from lidarssl.viz.palette import IGNORE_COLOUR, class_colours, colour_labels
from lidarssl.viz.views import Panel, draw_rows, figure_size, pick_cameras

__all__ = ["RunPredictor", "prediction_panels", "save_predictions", "legend_layout", "ERROR_COLOUR", "CORRECT_COLOUR"]

ERROR_COLOUR = (1.0, 0.12, 0.12)
CORRECT_COLOUR = (0.72, 0.72, 0.72)


class RunPredictor:
    """The segmentation model of a run directory (``lidarssl train | probe | finetune``), ready to predict scans.

    Args:
        run: the run directory (``config.yaml`` and ``checkpoints/``).
        checkpoint: a checkpoint file instead of the run's ``last.ckpt``.
        device: torch device (CUDA when available by default).
    """

    def __init__(self, run: str | Path, checkpoint: str | Path | None = None,
                 device: str | torch.device | None = None) -> None:
        from lidarssl.downstream.config import SegmentationConfig
        from lidarssl.downstream.segmentation import SegmentationModule
        from lidarssl.errors import CheckpointError
        from lidarssl.models.backbones import create_backbone
        from lidarssl.runs import last_checkpoint, load_run_config

        self.run = Path(run)
        self.config = load_run_config(self.run, SegmentationConfig, "segmentation run",
                                      "lidarssl train, probe or finetune")
        ckpt = Path(checkpoint) if checkpoint is not None else last_checkpoint(self.run)
        self.spec = create_backbone(self.config.backbone.name, **self.config.backbone.options)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            module = SegmentationModule.load_from_checkpoint(ckpt, map_location="cpu", backbone=self.spec.model,
                                                             weights_only=True)
        except (RuntimeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{ckpt}: not a segmentation checkpoint of this run ({exc})") from None
        self.module = module.to(self.device).eval()
        self.class_names: tuple[str, ...] = tuple(module.class_names)

    @torch.no_grad()
    def __call__(self, scan: Scan) -> np.ndarray:
        """(N,) predicted training id of every original point of ``scan``."""
        sample = self.spec.prep(scan.points, scan.intensity, None)
        batch = {k: v.to(self.device) for k, v in self.spec.collate([sample]).items()}
        pred = self.module(batch).argmax(1).cpu().numpy()
        return pred[rows_of_points(np.asarray(sample["kept"], np.int64), scan.points)]


def _error_colours(labels: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    labelled = labels != IGNORE_INDEX
    wrong = labelled & (pred != labels)
    colours = np.tile(np.array(IGNORE_COLOUR, np.float64) / 255.0, (len(labels), 1))
    colours[labelled] = CORRECT_COLOUR
    colours[wrong] = ERROR_COLOUR
    order = np.argsort(wrong.astype(np.int8) + labelled, kind="stable")  # errors on top
    share = 100.0 * wrong.sum() / max(1, labelled.sum())
    return colours, order, share


def prediction_panels(scan: Scan, predictions: Sequence[tuple[str, np.ndarray]], class_names: Sequence[str],
                      title: str, cameras: str = "auto") -> list[Panel]:
    """Rows: the labels, then for each ``(name, predictions)`` the predicted classes and the errors.

    Raises:
        DataError: the scan has no labels.
    """
    if scan.labels is None:
        raise DataError(f"{scan.source}: this frame has no labels to compare the predictions with; "
                        "use a labelled split")
    n = len(class_names)
    cams = pick_cameras(scan, cameras)
    rows = [Panel(scan=scan, colours=colour_labels(scan.labels, n) / 255.0, title=f"{title}: labels", cameras=cams)]
    for name, pred in predictions:
        rows.append(Panel(scan=scan, colours=colour_labels(pred, n) / 255.0, title=f"{name}: predictions",
                          cameras=cams))
        colours, order, share = _error_colours(scan.labels, pred)
        rows.append(Panel(scan=scan, colours=colours, order=order, cameras=cams,
                          title=f"{name}: errors in red, {share:.1f} % of the labelled points"))
    return rows


LEGEND_COLUMN_PX = 140  # width of one legend entry
LEGEND_ROW_PX = 15


def legend_layout(entries: int, width: int) -> tuple[int, int]:
    """(columns, footer height in pixels) of a legend of ``entries`` items in a figure ``width`` pixels wide."""
    cols = max(1, min(entries, width // LEGEND_COLUMN_PX))
    return cols, 12 + LEGEND_ROW_PX * -(-entries // cols)


def _legend(class_names: Sequence[str], present: np.ndarray, cols: int):
    def draw(fig, rect: tuple[float, float, float, float]) -> None:
        from matplotlib.patches import Patch

        palette = class_colours(len(class_names)) / 255.0
        handles = [Patch(color=palette[c], label=class_names[c]) for c in present]
        handles += [Patch(color=ERROR_COLOUR, label="wrong"), Patch(color=CORRECT_COLOUR, label="right"),
                    Patch(color=np.array(IGNORE_COLOUR) / 255.0, label="unlabelled")]
        left, bottom, width, height = rect
        fig.legend(handles=handles, loc="center", bbox_to_anchor=(0.5, bottom + height / 2), ncol=cols,
                   fontsize=7, frameon=False, handlelength=1.2, columnspacing=1.0, borderaxespad=0.0)

    return draw


def save_predictions(scan: Scan, predictions: Sequence[tuple[str, np.ndarray]], class_names: Sequence[str],
                     path: str | Path, title: str, cameras: str = "auto", height: int = 360,
                     extent: float = 40.0, compact: bool = False) -> Path:
    """Write labels, predictions and errors of one scan as one PNG, with a legend of the classes that appear
    (``compact``: 256 colours)."""
    panels = prediction_panels(scan, predictions, class_names, title, cameras)
    present = np.unique(np.concatenate([scan.labels, *[p for _, p in predictions]]))
    present = present[(present >= 0) & (present < len(class_names))]
    width = figure_size([p.cameras for p in panels], height, 0)[0]
    cols, footer_px = legend_layout(len(present) + 3, width)
    return draw_rows(panels, path, height=height, extent=extent, footer=_legend(class_names, present, cols),
                     footer_px=footer_px, compact=compact)
