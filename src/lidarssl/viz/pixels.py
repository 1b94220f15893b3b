"""Point-to-pixel similarity: how one lidar point's embedding matches every pixel of the camera that sees it.

The student's projection head maps the point's feature into the space where pretraining compared it with pixels:
the frozen teacher's features for ScaLR, the teacher's features through the trainable pixel head for PPKT, SLidR
and ST-SLidR, through the pixel projection for NCLR. The figure shows the cosine similarity of that embedding to
every pixel's, as SLidR's notebook does (valeoai/SLidR, ``utils/visualization.ipynb``). It needs the pretraining
run itself (its config and checkpoint hold the heads; ``backbone.safetensors`` does not).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lidarssl.data.scan import Scan
from lidarssl.errors import CheckpointError, ConfigError, DataError
from lidarssl.features import rows_of_points
from lidarssl.viz.query import check_point
from lidarssl.viz.views import FOOTER_PX, TITLE_PX, dimmed, save_png, wrap

__all__ = ["PretrainedRun", "PixelSimilarity", "save_pixels"]

CMAP = "turbo"


@dataclass
class PixelSimilarity:
    """The similarity of one point's embedding to every pixel of one camera.

    Attributes:
        camera: camera name.
        image: (H, W, 3) the camera's image as read.
        similarity: (h, w) cosine similarity at the resolution the teacher saw (the run's pairing size).
        uv: (2,) the query point's pixel position in ``image``.
        query: the query point's index.
    """

    camera: str
    image: np.ndarray
    similarity: np.ndarray
    uv: np.ndarray
    query: int


class PretrainedRun:
    """The student (backbone and point head) and the frozen teacher (with its pixel head) of a pretraining run.

    Args:
        run: the run directory of ``lidarssl pretrain`` (``config.yaml`` and ``checkpoints/``).
        checkpoint: a checkpoint instead of the run's ``last.ckpt``.
        device: torch device (CUDA when available by default).

    Raises:
        ConfigError: the run's method compares no points with pixels (ALSO).
        CheckpointError: the folder is not a pretraining run, or the checkpoint does not match it.
    """

    def __init__(self, run: str | Path, checkpoint: str | Path | None = None,
                 device: str | torch.device | None = None) -> None:
        from lidarssl.methods.base import list_methods, method_class
        from lidarssl.methods.config import PretrainConfig
        from lidarssl.methods.pretrain import build_teacher
        from lidarssl.models.backbones import create_backbone
        from lidarssl.run_folder import read_checkpoint
        from lidarssl.runs import last_checkpoint, load_run_config

        self.run = Path(run)
        self.config = config = load_run_config(self.run, PretrainConfig, "pretraining run", "lidarssl pretrain")
        name = config.method.name
        cls = method_class(name)
        if not cls.matches_pixels:
            image = ", ".join(n for n in list_methods() if method_class(n).matches_pixels)
            raise ConfigError(f"{self.run}: method '{name}' compares no points with pixels; `pixels` needs a run of "
                              f"an image method ({image})")
        options = cls.parse_options(config.method.options)
        with torch.random.fork_rng(devices=[]):
            spec = create_backbone(config.backbone.name, **config.backbone.options)
        # the same frozen teacher as in training: its weights file, or the run's seeded random draw
        module = cls(spec.model, options, config.optim, teacher=build_teacher(config))
        ckpt = Path(checkpoint) if checkpoint is not None else last_checkpoint(self.run)
        state = read_checkpoint(ckpt)["state_dict"]
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            raise CheckpointError(f"{ckpt}: not a checkpoint of this {name} run ({str(exc).splitlines()[0]})") from None
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.module = module.to(self.device).eval()
        self.spec = spec
        self.method = name

    @torch.no_grad()
    def point_features(self, scan: Scan) -> np.ndarray:
        """(N, C) backbone features of every original point (no augmentation)."""
        sample = self.spec.prep(scan.points, scan.intensity, None)
        batch = {k: v.to(self.device) for k, v in self.spec.collate([sample]).items()}
        feats = self.module.backbone(batch).float()
        rows = torch.from_numpy(rows_of_points(np.asarray(sample["kept"], np.int64), scan.points)).to(feats.device)
        return feats[rows].cpu().numpy()

    @torch.no_grad()
    def pixel_similarity(self, scan: Scan, query: int) -> PixelSimilarity:
        """The similarity of point ``query``'s embedding to every pixel of the camera that sees it best.

        Raises:
            DataError: the frame has no camera, or no camera sees the point.
        """
        from lidarssl.data.pairing import pair_views

        if not scan.cameras:
            raise DataError(f"{scan.source}: this frame has no cameras; `pixels` compares a point with the pixels "
                            "of the camera that sees it: use a dataset with cameras (synthetic, nuScenes, PandaSet, KITTI)")
        check_point(scan, query)
        pairing = self.config.pairing.model_copy(update={"cameras": "all", "flip": 0.0})
        views = pair_views(scan, pairing)  # no rng: whole images resized as in training, no random crop
        hits = np.flatnonzero(views.point == query)
        if len(hits) == 0:
            raise DataError(f"{scan.source}: query point {query} is not seen by any camera; choose a point in a "
                            "camera's view (--class picks one, or another --point)")
        H, W = views.images.shape[1:3]
        centre = np.hypot(views.uv[hits, 0] / W - 0.5, views.uv[hits, 1] / H - 0.5)
        hit = hits[int(np.argmin(centre))]
        v = int(views.view[hit])
        m = self.module
        feats = torch.from_numpy(self.point_features(scan)[query : query + 1]).to(self.device)
        k = F.normalize(m.head(feats).float(), dim=1)
        image = torch.from_numpy(np.ascontiguousarray(views.images[v : v + 1])).to(self.device).permute(0, 3, 1, 2)
        raw = m.teacher(image).float()
        # the space the point head was trained to match, upsampled and then normalised as in training
        pix = m.pixel_embedding(raw).float()
        pix = F.normalize(F.interpolate(pix, size=(H, W), mode="bilinear", align_corners=False), dim=1)
        sim = torch.einsum("c,chw->hw", k[0], pix[0]).cpu().numpy()
        cam = scan.camera(views.names[v])
        uv = views.uv[hit] * np.array([cam.hw[1] / W, cam.hw[0] / H])  # back to the image as read
        return PixelSimilarity(camera=cam.name, image=cam.image, similarity=sim, uv=uv, query=query)


def save_pixels(rows: Sequence[tuple[str, PixelSimilarity]], path: str | Path, height: int = 360,
                compact: bool = False) -> Path:
    """One row per ``(title, result)``: the camera image with the query point (star), and the similarity of
    every pixel to it over the dimmed image. Colours span each row's own range, printed in its title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colorbar import ColorbarBase

    if not rows:
        raise DataError("nothing to draw: no pixel similarity")
    widths = [round(height * r.image.shape[1] / r.image.shape[0]) for _, r in rows]
    W, H = 2 * max(widths), len(rows) * (TITLE_PX + height) + FOOTER_PX
    fig = plt.figure(figsize=(W / 100, H / 100), dpi=100, facecolor="white")
    top = 0
    cmap = matplotlib.colormaps[CMAP]
    for (title, r), w in zip(rows, widths):
        lo, hi = float(r.similarity.min()), float(r.similarity.max())
        fig.text(4 / W, 1 - (top + TITLE_PX / 2) / H, f"{title}: point {r.query} in {r.camera}; similarity "
                 f"from {lo:.2f} (blue) to {hi:.2f} (red)", fontsize=9, va="center")
        top += TITLE_PX
        h_img, w_img = r.image.shape[:2]
        for col in range(2):
            ax = fig.add_axes((col * w / W, 1 - (top + height) / H, w / W, height / H))
            if col == 0:
                ax.imshow(r.image, extent=(0, w_img, h_img, 0))
            else:
                ax.imshow(dimmed(r.image), extent=(0, w_img, h_img, 0))
                scaled = (r.similarity - lo) / max(hi - lo, 1e-12)
                ax.imshow(cmap(scaled), extent=(0, w_img, h_img, 0), alpha=0.7, interpolation="bilinear")
            ax.scatter([r.uv[0]], [r.uv[1]], marker="*", s=260, c="white", edgecolors="black", linewidths=1.0)
            ax.set_xlim(0, w_img)
            ax.set_ylim(h_img, 0)
            ax.axis("off")
        top += height
    bar = fig.add_axes((0.25, 0.55 * FOOTER_PX / H, 0.5, 0.22 * FOOTER_PX / H))
    ColorbarBase(bar, cmap=cmap, orientation="horizontal").set_ticks([0, 1], labels=["row minimum", "row maximum"])
    bar.tick_params(labelsize=7)
    text = wrap("cosine similarity of the point's embedding (student head) to each pixel's (teacher)", W)
    fig.text(0.5, 0.88 * FOOTER_PX / H, text, ha="center", va="center", fontsize=8)
    try:
        return save_png(fig, path, compact)
    finally:
        plt.close(fig)
