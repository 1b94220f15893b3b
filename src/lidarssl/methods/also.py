"""ALSO: occupancy of queries along the lidar rays, decoded from the latents of nearby input points.

ALSO (Boulch et al., CVPR 2023), after the original code (valeoai/ALSO: ``also_selfsup/transforms/create_points.py``
for the queries, ``also_selfsup/networks/decoder/decoder.py`` for the decoder), with these changes:

* rays start at the sensor origin recorded in the scan (:attr:`~lidarssl.data.scan.Scan.sensor_origin`),
  not at the coordinate origin;
* query counts, split, distance, search radius and neighbour cap are options; neighbours are the
  **nearest** ``max_neighbors`` within ``radius`` (ALSO's search keeps an arbitrary 32);
* ``aggregate: true`` averages the pair predictions of a query (ALSO makes every pair its own prediction);
* a scan with too few points draws its sources with replacement; a scan with none gives no queries and
  is skipped (and counted) by the loss.

Pretext, per scan of ``Q`` queries (ALSO: 2048 on nuScenes, 4096 elsewhere), each from a random source
point ``p`` on the ray from the sensor ``o``, ``dir = (p - o) / |p - o|``, ``u ~ U(0, 1)``:

* ``Q - 2 floor(Q / 3)`` behind the surface, ``p + d u dir``: occupied;
* ``floor(Q / 3)`` in front of it, ``p - d u dir``: empty;
* ``floor(Q / 3)`` in free space, ``o + u (p - o)``: empty.

Behind and front queries carry the source's intensity (divided by ``intensity_scale``); free-space
queries carry -1, which the intensity loss masks. Queries are made in the scan's own geometry and moved by
the scan's augmentation, so they line up with the backbone's input.

Decoder: each (query, neighbour) pair gets ``[z_j || q - p_j]`` through an MLP (Linear to ``hidden``, two
ReLU + Linear, ReLU + Linear to 2: occupancy logit and intensity), where ``z_j`` is a linear head
(``latent`` wide) on the backbone feature of input point ``j`` and ``p_j`` its augmented position. With
``latent_norm: true`` (not in ALSO) that head reads the features through a LayerNorm. With
``bev: true`` (VoxelNet) the latents are the bird's-eye-view cells of :meth:`VoxelNet.forward_bev` at
their centres with ``z = 0``, searched in xy only (ALSO's ``column_search`` for SECOND).

Loss: BCE-with-logits of occupancy over pairs (or queries) + L1 of the intensity channel where the target
is at least 0, weighted by ``occupancy_weight`` and ``intensity_weight``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from scipy.spatial import cKDTree
from torch import nn

from lidarssl.batch import Batch, Sample, concat_rows
from lidarssl.data.loader import AugmentedScan
from lidarssl.data.transforms import apply_affine
from lidarssl.errors import ConfigError
from lidarssl.methods.base import PretrainMethod, point_head, register_method
from lidarssl.methods.config import PretrainConfig
from lidarssl.schema import Schema

__all__ = ["ALSO", "ALSOOptions", "BevGrid", "QueryBuilder", "OccupancyDecoder", "occupancy_iou", "occupancy_logits",
           "BEHIND", "FRONT", "FREE"]

#: Query kinds (``query_kind``): behind the surface (occupied), in front of it and in free space (empty).
BEHIND, FRONT, FREE = 0, 1, 2

# Source points closer than this to the sensor have no ray direction.
_MIN_RANGE = 1e-6


class ALSOOptions(Schema):
    queries: int = Field(4096, ge=0, description="queries per scan (ALSO: 2048 on nuScenes, 4096 elsewhere)")
    distance: float = Field(0.1, gt=0, description="largest offset d (m) of behind/front queries from the surface")
    intensity_scale: float = Field(255.0, gt=0, description="intensity target = intensity / intensity_scale")
    radius: float = Field(1.0, gt=0, description="neighbour search radius (m); xy only with bev")
    max_neighbors: int = Field(32, gt=0, description="nearest neighbours kept per query")
    latent: int = Field(128, gt=0, description="width of the latent head on the backbone features")
    hidden: int = Field(128, gt=0, description="width of the decoder MLP")
    aggregate: bool = Field(False, description="average the pair predictions per query "
                                               "(ALSO: every pair is its own prediction)")
    bev: bool = Field(False, description="VoxelNet: latents at bird's-eye-view cell centres (z = 0), xy search")
    latent_norm: bool = Field(False, description="LayerNorm on the backbone features the latent head reads (not in "
                                                 "ALSO: keeps a backbone without a final norm from collapsing)")
    occupancy_weight: float = Field(1.0, ge=0)
    intensity_weight: float = Field(1.0, ge=0)


# ---------------------------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class BevGrid:
    """The cells of a bird's-eye-view map: cell (i, j) (row i along y, column j along x) is centred at
    ``(origin[0] + (j + 0.5) cell[0], origin[1] + (i + 0.5) cell[1], 0)``; flat index ``i * W + j``."""

    origin: tuple[float, float]
    cell: tuple[float, float]
    shape: tuple[int, int]

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def neighbors(self, queries: np.ndarray, radius: float, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, k) flat cells within ``radius`` in xy, nearest first, -1 padded, and (Q, k, 3) ``q - centre``."""
        q = np.asarray(queries, np.float64)
        n = len(q)
        rows, cols = self.shape
        cx, cy = self.cell
        # fractional cell coordinates of the queries; candidates in a window of whole cells around them
        fj = (q[:, 0] - self.origin[0]) / cx - 0.5
        fi = (q[:, 1] - self.origin[1]) / cy - 0.5
        mj, mi = math.ceil(radius / cx) + 1, math.ceil(radius / cy) + 1
        dj, di = np.meshgrid(np.arange(-mj, mj + 1), np.arange(-mi, mi + 1))
        j = np.round(fj)[:, None].astype(np.int64) + dj.ravel()[None]
        i = np.round(fi)[:, None].astype(np.int64) + di.ravel()[None]
        centre_x = self.origin[0] + (j + 0.5) * cx
        centre_y = self.origin[1] + (i + 0.5) * cy
        dist = np.hypot(q[:, :1] - centre_x, q[:, 1:2] - centre_y)
        ok = (dist <= radius) & (i >= 0) & (i < rows) & (j >= 0) & (j < cols)
        dist = np.where(ok, dist, np.inf)
        k_eff = min(k, dist.shape[1])
        order = np.argsort(dist, axis=1, kind="stable")[:, :k_eff]
        take = np.take_along_axis
        ok = take(ok, order, 1)
        flat = np.where(ok, take(i, order, 1) * cols + take(j, order, 1), -1)
        rel = np.stack([q[:, :1] - take(centre_x, order, 1), q[:, 1:2] - take(centre_y, order, 1),
                        np.broadcast_to(q[:, 2:3], ok.shape)], axis=-1)
        rel = np.where(ok[..., None], rel, 0.0)
        if k_eff < k:
            flat = np.concatenate([flat, np.full((n, k - k_eff), -1, np.int64)], axis=1)
            rel = np.concatenate([rel, np.zeros((n, k - k_eff, 3))], axis=1)
        return flat.astype(np.int64), rel.astype(np.float32)


def make_queries(scan, count: int, distance: float, intensity_scale: float, rng: np.random.Generator
                 ) -> dict[str, np.ndarray]:
    """ALSO's queries of one scan in its own geometry (see the module doc).

    Returns ``queries`` (Q, 3) float64, ``occ`` (Q,) float32, ``intensity`` (Q,) float32 (-1 for free space),
    ``kind`` (Q,) int8 (:data:`BEHIND`, :data:`FRONT`, :data:`FREE`) and ``source`` (Q,) int64 source point
    indices; Q = 0 when the scan has no point away from the sensor.
    """
    points = np.asarray(scan.points, np.float64)
    origin = np.asarray(scan.sensor_origin, np.float64)
    ray = points - origin
    length = np.linalg.norm(ray, axis=1)
    candidates = np.flatnonzero(length > _MIN_RANGE)
    if len(candidates) == 0 or count == 0:
        return {"queries": np.zeros((0, 3)), "occ": np.zeros(0, np.float32), "intensity": np.zeros(0, np.float32),
                "kind": np.zeros(0, np.int8), "source": np.zeros(0, np.int64)}
    n_front = n_free = count // 3
    n_behind = count - n_front - n_free
    source = rng.choice(candidates, size=count, replace=len(candidates) < count)
    kind = np.repeat(np.array([BEHIND, FRONT, FREE], np.int8), [n_behind, n_front, n_free])
    u = rng.uniform(0.0, 1.0, count)
    p, o = points[source], origin
    direction = ray[source] / length[source, None]
    step = np.where(kind == BEHIND, 1.0, -1.0)[:, None] * distance * u[:, None] * direction
    queries = np.where((kind == FREE)[:, None], o + u[:, None] * ray[source], p + step)
    occ = (kind == BEHIND).astype(np.float32)
    intensity = np.where(kind == FREE, -1.0, scan.intensity[source] / intensity_scale).astype(np.float32)
    return {"queries": queries, "occ": occ, "intensity": intensity, "kind": kind, "source": source}


def point_neighbors(queries: np.ndarray, points: np.ndarray, radius: float, k: int) -> np.ndarray:
    """(Q, k) rows of ``points`` within ``radius`` of each query, nearest first, -1 padded."""
    out = np.full((len(queries), k), -1, np.int64)
    if len(queries) == 0 or len(points) == 0:
        return out
    _, idx = cKDTree(points).query(queries, k=k, distance_upper_bound=radius, workers=1)
    idx = np.asarray(idx).reshape(len(queries), k)
    found = idx < len(points)
    out[found] = idx[found]
    return out


class QueryBuilder:
    """Sample builder of ALSO's queries and their neighbours (runs in DataLoader workers).

    Adds to each sample ``queries`` (Q, 3) float32 (augmented, like ``view.points``), ``query_occ`` (Q,),
    ``query_intensity`` (Q,), ``query_kind`` (Q,) int8, ``query_neighbors`` (Q, K) int64 (rows of the kept
    points, or flat BEV cells, nearest first, -1 padded) and ``row_xyz`` (M, 3) float32, the augmented
    position of each feature row; with a BEV grid also ``query_rel`` (Q, K, 3) = q - cell centre. In the
    batch, neighbours index the whole batch (feature rows, or cells of the (B, H, W) map) and
    ``query_batch`` (sum Q,) says which scan each query belongs to.
    """

    def __init__(self, queries: int = 4096, distance: float = 0.1, intensity_scale: float = 255.0,
                 radius: float = 1.0, max_neighbors: int = 32, bev: BevGrid | None = None) -> None:
        self.queries, self.distance, self.intensity_scale = queries, distance, intensity_scale
        self.radius, self.max_neighbors, self.bev = radius, max_neighbors, bev

    def __call__(self, view: AugmentedScan, rng: np.random.Generator) -> Sample:
        made = make_queries(view.scan, self.queries, self.distance, self.intensity_scale, rng)
        q = apply_affine(view.A, made["queries"]) if len(made["queries"]) else np.zeros((0, 3), np.float32)
        row_xyz = np.ascontiguousarray(view.points[view.kept], dtype=np.float32)
        sample = {"queries": q, "query_occ": made["occ"], "query_intensity": made["intensity"],
                  "query_kind": made["kind"], "row_xyz": row_xyz}
        if self.bev is not None:
            sample["query_neighbors"], sample["query_rel"] = self.bev.neighbors(q, self.radius, self.max_neighbors)
        else:
            sample["query_neighbors"] = point_neighbors(q, row_xyz, self.radius, self.max_neighbors)
        return sample

    def collate(self, samples: Sequence[Sample], batch: Batch) -> None:
        if self.bev is not None:
            starts = np.arange(len(samples), dtype=np.int64) * self.bev.size
        else:
            starts = batch["offsets"].numpy()[:-1]
        neighbors = [np.where(s["query_neighbors"] >= 0, s["query_neighbors"] + start, -1)
                     for s, start in zip(samples, starts)]
        batch["queries"] = concat_rows(samples, "queries")
        batch["query_occ"] = concat_rows(samples, "query_occ")
        batch["query_intensity"] = concat_rows(samples, "query_intensity")
        batch["query_kind"] = concat_rows(samples, "query_kind")
        batch["query_neighbors"] = torch.from_numpy(np.concatenate(neighbors).reshape(-1, self.max_neighbors))
        sizes = [len(s["queries"]) for s in samples]
        batch["query_batch"] = torch.from_numpy(np.repeat(np.arange(len(samples), dtype=np.int64), sizes))
        batch["row_xyz"] = concat_rows(samples, "row_xyz")
        if self.bev is not None:
            batch["query_rel"] = torch.from_numpy(
                np.concatenate([s["query_rel"] for s in samples]).reshape(-1, self.max_neighbors, 3))


# ---------------------------------------------------------------------------------------------- decoder


class OccupancyDecoder(nn.Module):
    """ALSO's pair MLP (``InterpNet``): [latent || q - p] -> hidden -> (ReLU, Linear) x 2 -> Linear -> 2 (logit, intensity).

    No activation before the output layer, as in ALSO's ``networks/decoder/decoder.py``.
    """

    def __init__(self, latent: int, hidden: int) -> None:
        super().__init__()
        self.fc_in = nn.Linear(latent + 3, hidden)
        self.mlp_layers = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(2)])
        self.fc_out = nn.Linear(hidden, 2)

    def forward(self, latents: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        x = self.fc_in(torch.cat([latents, rel.to(latents.dtype)], dim=1))
        for layer in self.mlp_layers:
            x = layer(F.relu(x))
        return self.fc_out(x)


@dataclass
class Decoded:
    """Predictions of a batch: per pair, or per query when aggregated.

    Attributes:
        out: (P, 2) occupancy logit and intensity.
        query: (P,) query of each prediction.
        zero: a graph-keeping zero (a sum over no element of the backbone's output and of the predictions).
    """

    out: torch.Tensor
    query: torch.Tensor
    zero: torch.Tensor


def _mean_per_query(out: torch.Tensor, query: torch.Tensor, num_queries: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of pair predictions per query, for queries with at least one pair."""
    sums = out.new_zeros(num_queries, out.shape[1]).index_add_(0, query, out)
    counts = torch.bincount(query, minlength=num_queries)
    has = counts > 0
    return sums[has] / counts[has, None].to(out.dtype), torch.nonzero(has).squeeze(1)


# ---------------------------------------------------------------------------------------------- method


def bev_grid(config: PretrainConfig) -> BevGrid:
    """The bird's-eye-view cells of the recipe's VoxelNet preset (for ``bev: true``)."""
    from lidarssl.models.backbones import create_backbone
    from lidarssl.models.backbones.voxelnet import BEV_STRIDE

    spec = create_backbone(config.backbone.name, **config.backbone.options)
    prep = spec.prep
    if not hasattr(spec.model, "forward_bev") or getattr(prep, "coordinates", None) != "cartesian":
        raise ConfigError("method.options.bev needs a VoxelNet backbone on a cartesian grid, "
                          f"got '{config.backbone.name}'")
    cell = (prep.voxel_size[0] * BEV_STRIDE, prep.voxel_size[1] * BEV_STRIDE)
    return BevGrid(origin=(prep.range_min[0], prep.range_min[1]), cell=cell, shape=tuple(spec.model.bev_shape))


@register_method
class ALSO(PretrainMethod):
    """ALSO's occupancy pretext (see the module doc). ``skipped_scans`` counts scans the loss skipped
    (no query with a neighbour) since the module was built; it is also logged per epoch."""

    name = "also"
    Options = ALSOOptions
    needs_teacher = False

    def __init__(self, backbone, options, optim, teacher=None, loss_scope="process") -> None:
        super().__init__(backbone, options, optim, teacher, loss_scope)
        if options.bev and not hasattr(backbone, "forward_bev"):
            raise ConfigError(f"method.options.bev needs a backbone with a bird's-eye map (VoxelNet), "
                              f"got {type(backbone).__name__}")
        self.head = point_head(backbone.out_channels, options.latent)
        if options.latent_norm:
            # without it, on a residual stream with no final norm (WaffleIron), the scale-sensitive pretext makes
            # one direction take ~99 % of the features' variance; ALSO's backbones end in BN + ReLU
            self.head = nn.Sequential(nn.LayerNorm(backbone.out_channels), self.head)
        self.decoder = OccupancyDecoder(options.latent, options.hidden)
        self.skipped_scans = 0

    @classmethod
    def builders(cls, config: PretrainConfig, options: Schema) -> list:
        o = options
        return [QueryBuilder(o.queries, o.distance, o.intensity_scale, o.radius, o.max_neighbors,
                             bev=bev_grid(config) if o.bev else None)]

    def decode(self, batch: Batch) -> Decoded:
        """Pair predictions (or per-query means with ``aggregate``)."""
        nb = batch["query_neighbors"]
        qi, ki = torch.nonzero(nb >= 0, as_tuple=True)
        rows = nb[qi, ki]
        if self.options.bev:
            bev = self.backbone.forward_bev(batch)
            table = bev.permute(0, 2, 3, 1).reshape(-1, bev.shape[1])
            rel = batch["query_rel"][qi, ki]
        else:
            table = self.backbone(batch)
            rel = batch["queries"][qi] - batch["row_xyz"][rows]
        latents = self.head(table[rows])
        out = self.decoder(latents, rel)
        zero = table[:0].float().sum() + out[:0].float().sum()  # exactly 0 (never inf * 0), with the graph
        if self.options.aggregate:
            out, qi = _mean_per_query(out, qi, len(nb))
        return Decoded(out=out, query=qi, zero=zero)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        o = self.options
        d = self.decode(batch)
        logit, inten = d.out[:, 0].float(), d.out[:, 1].float()
        occ = batch["query_occ"][d.query].float()
        target = batch["query_intensity"][d.query].float()
        occupancy = F.binary_cross_entropy_with_logits(logit, occ) if len(logit) else d.zero
        has_target = target >= 0
        intensity = (inten[has_target] - target[has_target]).abs().mean() if bool(has_target.any()) else d.zero
        size = int(batch["offsets"].shape[0] - 1)
        predicted = torch.bincount(batch["query_batch"][d.query], minlength=size)
        skipped = int((predicted == 0).sum())
        self.skipped_scans += skipped
        if self._trainer is not None:
            self.log("train/skipped_scans", float(skipped), on_step=False, on_epoch=True, reduce_fx="sum",
                     batch_size=size)
            if len(logit):
                with torch.no_grad():
                    acc, iou = _binary_scores(logit, occ)
                self.log_dict({"train/occ_acc": acc, "train/occ_iou": iou}, on_step=False, on_epoch=True,
                              batch_size=size)
        return {"occupancy": o.occupancy_weight * occupancy, "intensity": o.intensity_weight * intensity}


def _binary_scores(logit: torch.Tensor, occ: torch.Tensor) -> tuple[float, float]:
    """Accuracy and IoU of the occupied class (IoU 1 by convention when neither is ever occupied)."""
    pred, target = logit > 0, occ > 0.5
    acc = float((pred == target).float().mean())
    union = int((pred | target).sum())
    iou = float((pred & target).sum()) / union if union else 1.0
    return acc, iou


@torch.no_grad()
def occupancy_logits(module: ALSO, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Occupancy logit and target of each query of ``batch`` that has a neighbour, predicting a query by the
    mean of its pair logits (in either mode); the module runs in eval mode."""
    was_training = module.training
    module.eval()
    try:
        d = module.decode(batch)
        out, query = (d.out, d.query) if module.options.aggregate else _mean_per_query(
            d.out, d.query, len(batch["query_neighbors"]))
        return out[:, 0].float(), batch["query_occ"][query].float()
    finally:
        module.train(was_training)


def occupancy_iou(module: ALSO, batch: Batch) -> float:
    """IoU of the occupied class (logit > 0) over the queries of ``batch`` that have a neighbour."""
    logit, occ = occupancy_logits(module, batch)
    return _binary_scores(logit, occ)[1] if len(logit) else float("nan")
