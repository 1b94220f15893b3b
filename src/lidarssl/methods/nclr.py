"""NCLR: 2D-3D neural calibration as a pretext (arXiv 2401.12452).

Each scan is moved by a random rigid perturbation (the point augmentation: ``augment.translate`` and the
z-rotation; no scaling and no mirroring, so every view's ground-truth camera-from-lidar transform, the
batch's ``lidar_to_cam``, stays a pose). For every (scan, camera) view the network then

1. projects point features (``Linear(backbone.out_channels -> dim)``) and frozen-teacher pixel features
   (a trainable 1x1 convolution, bilinearly upsampled to a grid of stride ``pixel_stride``) to a common
   width, and fuses ``points_per_view`` points of the scan (drawn with replacement) with all pixel cells by
   single-head cross-attention with a residual, one module per direction (points <- pixels, pixels <- points);
2. predicts which points fall inside the view and which pixel cells are hit by a point (BCE; the labels are
   the batch's pairs, so ``pairing.occlusion`` and ``pairing.min_depth`` decide what "inside" means);
3. contrasts points and pixels by InfoNCE, on the raw features of ``pairs_per_scan * B`` random pairs and
   on the fused features of ``fused_pairs_per_scan * B`` of the sampled points that overlap the view (drawn
   with replacement when there are not more, as the original; ``fused_replacement: false`` uses each once);
4. from epoch ``pose_start_epoch``: selects up to ``keypoints`` points by predicted overlap score
   (above ``score_threshold``, else ``fallback_threshold``; ``min_candidates`` or fewer: the view is
   skipped, or with ``rank_fallback`` its top-scoring points are taken), soft-matches each to the pixel cells (``softmax(f . g / match_temperature)``, the expected
   pixel position), turns positions into normalised coordinates ``K^-1 [u, v, 1]`` (right under crops and
   flips, where ``fx < 0``), solves the pose with the differentiable PnP of :mod:`lidarssl.methods.pnp`,
   and regresses it to the ground truth: SmoothL1 on the rotation entries + 0.01 SmoothL1 on the translation.

Views skipped by the pose head (too few keypoints, no pair at all, or a degenerate solve) are counted and
logged (``train/nclr_pose_*``), never turned into a NaN loss.

Departures from the released code (Eaphan/NCLR: ``bevlab/models.py``, ``bevlab/pnp.py``): separate fusion modules
per direction (the release reuses one), image flips applied to image and intrinsics alike, optional
occlusion test, the PnP on normalised coordinates with an implicit-gradient step instead of vendored
EPnP, and every constant in :class:`NCLROptions`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from lidarssl.batch import Batch, Sample, concat_rows
from lidarssl.data.loader import AugmentedScan
from lidarssl.data.pairing import PairBuilder
from lidarssl.errors import ConfigError
from lidarssl.methods.base import PretrainMethod, point_head, register_method
from lidarssl.methods.config import PretrainConfig
from lidarssl.methods.pair_losses import info_nce, sample_pairs
from lidarssl.methods.image import class_images, sample_maps, teacher_maps
from lidarssl.methods.pnp import rotation_error_deg, solve_pnp
from lidarssl.schema import Schema

__all__ = ["NCLR", "NCLROptions", "NCLRPairBuilder", "point_overlap_labels", "pixel_overlap_labels", "pixel_bearings",
           "cell_centres", "soft_match_bearings", "select_keypoints"]


class NCLRLossWeights(Schema):
    nce: float = Field(1.0, ge=0, description="InfoNCE on raw (pre-fusion) point-pixel pairs")
    nce_fused: float = Field(1.0, ge=0, description="InfoNCE on fused features of overlapping points")
    point_overlap: float = Field(1.0, ge=0, description="BCE of the point overlap scores")
    pixel_overlap: float = Field(1.0, ge=0, description="BCE of the pixel-cell overlap scores")
    rotation: float = Field(1.0, ge=0, description="SmoothL1 on the entries of R")
    translation: float = Field(0.01, ge=0, description="SmoothL1 on t (metres)")


class NCLROptions(Schema):
    dim: int = Field(64, gt=0, description="common width of point and pixel features")
    pixel_stride: int | None = Field(4, gt=0, description="stride (image pixels) of the pixel-feature grid the "
                                     "teacher features are upsampled to; null: the teacher's own stride")
    points_per_view: int = Field(4096, gt=0, description="points of the scan drawn (with replacement) per view")
    pairs_per_scan: int = Field(1024, gt=1, description="raw-feature InfoNCE pairs per scan of the batch")
    fused_pairs_per_scan: int = Field(1024, gt=1, description="fused overlapping points per scan in the fused "
                                      "InfoNCE")
    fused_replacement: bool = Field(True, description="with no more overlapping points than that, draw that many "
                                    "with replacement, as the original (false: each point once, so no anchor meets "
                                    "its own positive among its negatives)")
    temperature: float = Field(0.07, gt=0, description="InfoNCE temperature")
    match_temperature: float = Field(0.01, gt=0, description="temperature of the soft point-to-pixel matching")
    keypoints: int = Field(128, ge=6, description="keypoints per view for the pose")
    score_threshold: float = Field(0.9, gt=0, lt=1, description="predicted overlap a keypoint must exceed")
    fallback_threshold: float = Field(0.7, gt=0, lt=1, description="threshold used when too few pass the first")
    min_candidates: int = Field(10, ge=5, description="a view with this many candidates or fewer is skipped")
    rank_fallback: bool = Field(False, description="a view with too few candidates takes its top-scoring points "
                                "instead of being skipped, so the pose term runs before the overlap scores are "
                                "confident (the original skips it)")
    pose_start_epoch: int = Field(45, ge=0, description="first epoch (0-based) with the pose losses")
    pnp_iterations: int = Field(10, ge=0, description="Levenberg-Marquardt iterations of the PnP")
    smooth_l1_beta: float = Field(1.0, gt=0, description="beta of the pose SmoothL1 losses")
    loss_weights: NCLRLossWeights = Field(default_factory=NCLRLossWeights)


class NCLRPairBuilder(PairBuilder):
    """:class:`PairBuilder` plus ``row_xyz`` (sum M, 3): the augmented xyz of every backbone row (the 3D side
    of the PnP, in the frame ``lidar_to_cam`` maps from)."""

    def __call__(self, view: AugmentedScan, rng: np.random.Generator) -> Sample:
        sample = super().__call__(view, rng)
        sample["row_xyz"] = np.asarray(view.points[view.kept], dtype=np.float32)
        return sample

    def collate(self, samples: Sequence[Sample], batch: Batch) -> None:
        super().collate(samples, batch)
        batch["row_xyz"] = concat_rows(samples, "row_xyz")


# -- labels and geometry (pure functions, tested on the real nuScenes sample) ---------------------------------


def point_overlap_labels(pair_row: torch.Tensor, pair_view: torch.Tensor, num_rows: int, view: torch.Tensor,
                         rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Whether feature row ``rows[i]`` has a pair in view ``view[i]``, and the index of that pair (-1 if none).

    Args:
        pair_row, pair_view: (P,) the batch's pairs (a row has at most one pair per view).
        num_rows: rows of the batch (keys are ``view * num_rows + row``).
        view, rows: queries of any shape (broadcast together).
    """
    view, rows = torch.broadcast_tensors(view, rows)
    if len(pair_row) == 0:
        return torch.zeros(view.shape, dtype=torch.bool, device=view.device), torch.full_like(rows, -1)
    keys = pair_view.long() * num_rows + pair_row.long()
    sorted_keys, order = torch.sort(keys)
    query = view.long() * num_rows + rows.long()
    pos = torch.searchsorted(sorted_keys, query.reshape(-1)).clamp(max=len(keys) - 1).reshape(query.shape)
    found = sorted_keys[pos] == query
    return found, torch.where(found, order[pos], -1)


def pixel_overlap_labels(pair_view: torch.Tensor, pair_uv: torch.Tensor, num_views: int,
                         image_hw: tuple[int, int], grid_hw: tuple[int, int]) -> torch.Tensor:
    """(V, h, w) float: 1 where a pair's pixel falls in the cell. The grid covers the image edge to edge:
    cell ``(i, j)`` spans ``[j W / w, (j + 1) W / w) x [i H / h, (i + 1) H / h)``."""
    H, W = image_hw
    h, w = grid_hw
    labels = torch.zeros(num_views, h, w, device=pair_uv.device)
    if len(pair_view):
        col = (pair_uv[:, 0] * (w / W)).floor().long().clamp(0, w - 1)
        row = (pair_uv[:, 1] * (h / H)).floor().long().clamp(0, h - 1)
        labels[pair_view.long(), row, col] = 1.0
    return labels


def cell_centres(image_hw: tuple[int, int], grid_hw: tuple[int, int], device=None) -> torch.Tensor:
    """(h * w, 2) continuous pixel position ``(u, v)`` of each grid cell's centre, row-major."""
    H, W = image_hw
    h, w = grid_hw
    v = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * (H / h)
    u = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * (W / w)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu.reshape(-1), vv.reshape(-1)], dim=1)


def soft_match_bearings(point_feats: torch.Tensor, pixel_feats: torch.Tensor, centres: torch.Tensor,
                        K: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised image coordinates (V, k, 2) of the soft matches of keypoints.

    Args:
        point_feats: (V, k, D) keypoint features; pixel_feats: (V, Q, D) cell features (both L2-normalised here).
        centres: (Q, 2) pixel position of each cell.
        K: (V, 3, 3) intrinsics of the (augmented) images.
        temperature: softmax temperature over the cells.
    """
    f = F.normalize(point_feats.float(), dim=-1)
    g = F.normalize(pixel_feats.float(), dim=-1)
    prob = torch.softmax(f @ g.transpose(1, 2) / temperature, dim=-1)
    return pixel_bearings(prob @ centres.float(), K.float())


def pixel_bearings(uv: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Normalised image coordinates (V, k, 2) of pixel positions ``uv`` (V, k, 2) under intrinsics ``K``
    (V, 3, 3)."""
    hom = torch.cat([uv, torch.ones_like(uv[..., :1])], dim=-1)
    rays = hom @ torch.linalg.inv(K).transpose(1, 2)
    return rays[..., :2] / rays[..., 2:]


def select_keypoints(scores: torch.Tensor, keypoints: int, threshold: float, fallback: float,
                     min_candidates: int, rank_fallback: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``keypoints`` points of each view among those scoring above ``threshold`` (or ``fallback`` when
    ``min_candidates`` or fewer pass it; or, with ``rank_fallback``, every point when too few pass both).

    Returns:
        index (V, k) into the view's points, mask (V, k) of real selections, ok (V,) views with more than
        ``min_candidates`` candidates.
    """
    first = (scores > threshold).sum(1)
    thr = torch.where(first > min_candidates, torch.full_like(scores[:, 0], threshold),
                      torch.full_like(scores[:, 0], fallback))
    candidate = scores > thr[:, None]
    if rank_fallback:
        candidate |= (candidate.sum(1) <= min_candidates)[:, None]
    ok = candidate.sum(1) > min_candidates
    k = min(keypoints, scores.shape[1])
    ranked = torch.where(candidate, scores, torch.full_like(scores, -1.0))
    top, index = ranked.topk(k, dim=1)
    return index, top > -1.0, ok


# -- the method ---------------------------------------------------------------------------------------------


class CrossAttention(nn.Module):
    """Single-head attention of ``x`` (queries) to ``context``; returns the residual-free update."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x)[:, None], self.k(context)[:, None], self.v(context)[:, None]
        return self.out(F.scaled_dot_product_attention(q, k, v)[:, 0])


def _zero(*tensors: torch.Tensor) -> torch.Tensor:
    return sum(t.float().sum() * 0.0 for t in tensors)


@register_method
class NCLR(PretrainMethod):
    """Neural calibration pretext: overlap prediction, point-pixel InfoNCE and pose regression per view."""

    name = "nclr"
    Options = NCLROptions
    needs_teacher = True
    matches_pixels = True

    def __init__(self, backbone, options, optim, teacher=None, loss_scope="process") -> None:
        super().__init__(backbone, options, optim, teacher, loss_scope)
        if loss_scope == "global":
            raise ConfigError("nclr: loss_scope 'global' is not supported (its pairs are drawn per process)")
        d = options.dim
        self.head = point_head(backbone.out_channels, d)
        self.pixel_proj = nn.Conv2d(self.teacher.out_channels, d, 1)
        self.point_from_pixels = CrossAttention(d)
        self.pixel_from_points = CrossAttention(d)
        self.point_score = nn.Sequential(nn.Linear(d, d), nn.BatchNorm1d(d), nn.ReLU(inplace=True), nn.Linear(d, 1))
        self.pixel_score = nn.Sequential(nn.Conv2d(d, d, 1), nn.BatchNorm2d(d), nn.ReLU(inplace=True),
                                         nn.Conv2d(d, 1, 1))
        self.last_stats: dict[str, float] = {}

    def pixel_embedding(self, maps: torch.Tensor) -> torch.Tensor:
        return self.pixel_proj(maps)

    @classmethod
    def builders(cls, config: PretrainConfig, options: Schema) -> list:
        a = config.augment
        if a.scale is not None:
            raise ConfigError("nclr regresses rigid camera poses: set augment.scale: null (scaling makes "
                              "lidar_to_cam non-rigid)")
        if a.flip:
            raise ConfigError("nclr regresses rigid camera poses: set augment.flip: false (a mirrored point "
                              "cloud has no camera pose; image flips are pairing.flip)")
        return [NCLRPairBuilder(config.pairing, classes=class_images(config))]

    def grid_hw(self, image_hw: tuple[int, int], maps_hw: tuple[int, int]) -> tuple[int, int]:
        s = self.options.pixel_stride
        if s is None:
            return maps_hw
        return max(1, image_hw[0] // s), max(1, image_hw[1] // s)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        o, lw = self.options, self.options.loss_weights
        device = batch["offsets"].device
        feats = self.head(self.backbone(batch))  # (M, D)
        raw = teacher_maps(self.teacher, batch)
        image_hw = tuple(batch["images"].shape[1:3])
        grid = self.grid_hw(image_hw, tuple(raw.shape[-2:]))
        pix = self.pixel_proj(raw.to(self.pixel_proj.weight.dtype))
        if tuple(pix.shape[-2:]) != grid:
            pix = F.interpolate(pix, size=grid, mode="bilinear", align_corners=False)
        V, D = pix.shape[:2]
        B = int(batch["offsets"].shape[0] - 1)
        M = feats.shape[0]
        pair_row, pair_view, pair_uv = batch["pair_row"], batch["pair_view"], batch["pair_uv"]
        terms: dict[str, torch.Tensor] = {}

        # 1. InfoNCE on raw features of random pairs
        sel = sample_pairs(len(pair_row), o.pairs_per_scan * B).to(device)
        k = F.normalize(feats[pair_row[sel]], dim=1)
        q = F.normalize(sample_maps(pix.float(), pair_view[sel], pair_uv[sel], image_hw), dim=1)
        terms["nce"] = lw.nce * info_nce(k, q, o.temperature)

        # 2. points of each view's scan, drawn with replacement, and their overlap labels
        offsets = batch["offsets"].to(device)
        scan = batch["view_batch"].to(device).long()
        start, count = offsets[scan], (offsets[scan + 1] - offsets[scan])
        draw = torch.rand(V, o.points_per_view, device=device)
        rows = start[:, None] + (draw * count[:, None]).long().clamp(max=(count - 1).clamp_min(0)[:, None])
        rows = rows.clamp(max=max(M - 1, 0))
        views = torch.arange(V, device=device)[:, None]
        overlap, pair_index = point_overlap_labels(pair_row, pair_view, M, views, rows)
        overlap &= (count > 0)[:, None]
        cells = pixel_overlap_labels(pair_view, pair_uv, V, image_hw, grid)

        # 3. cross-attention fusion, one module per direction
        p = feats[rows]  # (V, Np, D)
        g = pix.flatten(2).transpose(1, 2)  # (V, Q, D)
        p_fused = p + self.point_from_pixels(p, g)
        g_fused = g + self.pixel_from_points(g, p)

        # 4. overlap scores
        point_logits = self.point_score(p_fused.reshape(-1, D)).reshape(V, -1)
        g_map = g_fused.transpose(1, 2).reshape(V, D, *grid)
        pixel_logits = self.pixel_score(g_map)[:, 0]
        bce = F.binary_cross_entropy_with_logits
        terms["point_overlap"] = lw.point_overlap * bce(point_logits.float(), overlap.float())
        terms["pixel_overlap"] = lw.pixel_overlap * bce(pixel_logits.float(), cells)

        # 5. InfoNCE on fused features of overlapping points
        vi, ni = torch.nonzero(overlap, as_tuple=True)
        want = o.fused_pairs_per_scan * B
        if o.fused_replacement and 0 < len(vi) <= want:  # NCLR: np.random.choice(..., replace=True)
            pick = torch.randint(len(vi), (want,), device=device)
        else:
            pick = sample_pairs(len(vi), want).to(device)
        vi, ni = vi[pick], ni[pick]
        kf = F.normalize(p_fused[vi, ni], dim=1)
        qf = F.normalize(sample_maps(g_map.float(), vi, pair_uv[pair_index[vi, ni]], image_hw), dim=1)
        terms["nce_fused"] = lw.nce_fused * info_nce(kf, qf, o.temperature)

        # 6. pose from soft keypoint matches
        stats = {"pose_views": 0.0, "pose_skipped_empty": 0.0, "pose_skipped_keypoints": 0.0,
                 "pose_skipped_degenerate": 0.0}
        if self.current_epoch >= o.pose_start_epoch:
            rot, trans, stats = self.pose_losses(batch, rows, p_fused, g_fused, point_logits, overlap, image_hw, grid)
            terms["pose_rotation"] = lw.rotation * rot
            terms["pose_translation"] = lw.translation * trans
        self.last_stats = stats
        if self._trainer is not None:
            counts = {f"train/nclr_{k}": float(v) for k, v in stats.items() if not k.endswith(("_deg", "_m"))}
            errors = {f"train/nclr_{k}": float(v) for k, v in stats.items() if k.endswith(("_deg", "_m"))}
            self.log_dict(counts, on_step=False, on_epoch=True, reduce_fx="sum", batch_size=B)
            if errors:
                self.log_dict(errors, on_step=False, on_epoch=True, batch_size=B)
        return terms

    def pose_losses(self, batch: Batch, rows: torch.Tensor, p_fused: torch.Tensor, g_fused: torch.Tensor,
                    point_logits: torch.Tensor, overlap: torch.Tensor, image_hw: tuple[int, int],
                    grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """SmoothL1 rotation and translation losses of the PnP poses of the views, and the view counts."""
        o = self.options
        V = len(rows)
        has_pairs = torch.zeros(V, dtype=torch.bool, device=rows.device)
        has_pairs[batch["pair_view"].long()] = True
        with torch.no_grad():
            index, mask, enough = select_keypoints(torch.sigmoid(point_logits.float()), o.keypoints, o.score_threshold,
                                                   o.fallback_threshold, o.min_candidates, o.rank_fallback)
        use = has_pairs & enough
        stats = {"pose_skipped_empty": float((~has_pairs).sum()),
                 "pose_skipped_keypoints": float((has_pairs & ~enough).sum())}
        zero = _zero(p_fused, g_fused)
        vid = torch.nonzero(use).squeeze(1)
        if len(vid) == 0:
            return zero, zero, {**stats, "pose_views": 0.0, "pose_skipped_degenerate": 0.0}
        index, mask = index[vid], mask[vid]
        kp_feats = torch.gather(p_fused[vid], 1, index[..., None].expand(-1, -1, p_fused.shape[-1]))
        xyz = batch["row_xyz"].to(p_fused.device)[torch.gather(rows[vid], 1, index)]
        centres = cell_centres(image_hw, grid, device=p_fused.device)
        bearings = soft_match_bearings(kp_feats, g_fused[vid], centres, batch["K"][vid], o.match_temperature)
        res = solve_pnp(xyz.float(), bearings, mask, iterations=o.pnp_iterations)
        ok = res.valid
        stats["pose_skipped_degenerate"] = float((~ok).sum())
        stats["pose_views"] = float(ok.sum())
        if not bool(ok.any()):
            return zero, zero, stats
        T = batch["lidar_to_cam"][vid][ok].float()
        R, t = res.R[ok].float(), res.t[ok].float()
        with torch.no_grad():
            stats["pose_rotation_error_deg"] = float(rotation_error_deg(R, T[:, :3, :3]).mean())
            stats["pose_translation_error_m"] = float((t - T[:, :3, 3]).norm(dim=1).mean())
        rot = F.smooth_l1_loss(R, T[:, :3, :3], beta=o.smooth_l1_beta)
        trans = F.smooth_l1_loss(t, T[:, :3, 3], beta=o.smooth_l1_beta)
        return rot, trans, stats
