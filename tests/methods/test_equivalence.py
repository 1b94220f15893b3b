"""Each method's whole loss path against a reference written from the original code's order of operations.

Every reference below is plain torch in float64, written from the original repository's code (heads,
upsampling and sampling, normalisation, pooling, loss), and is fed the same small random inputs and the same
weights as the method's ``losses()``: the backbone is replaced by a leaf tensor of point features, the frozen
teacher by a batch of teacher maps. Values must agree to 1e-5 and gradients (w.r.t. the point features and
every head weight) to 1e-4, relative.

Where lidarssl deviates on purpose (README, "Deliberate deviations" and "Still different"), the reference runs
with the deviation, and says so:

* pairs carry continuous pixel positions and feature maps are upsampled with ``align_corners=False``; the
  originals upsample with ``align_corners=True`` and read the floored pixel. The pairs here sit at pixel
  centres, where reading the upsampled map's pixel is the bilinear sample at the pair's position;
* ST-SLidR: the negatives removed from the denominator (``original: false``, the published recipes) or the
  released logits x W (``original: true``); both are references here;
* ALSO: the neighbours of a query are given (nearest first, our search), each pair is its own prediction;
* NCLR: our heads, attention, keypoint ranking and PnP (README and :mod:`lidarssl.methods.nclr`), and in a
  second case our options ``rank_fallback`` and ``fused_replacement: false``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lidarssl.methods.also import ALSO
from lidarssl.methods.config import PretrainOptimConfig
from lidarssl.methods.ppkt import PPKT
from lidarssl.methods.scalr import ScaLR
from lidarssl.methods.slidr import SLidR, STSLidR

TAU = 0.07
VALUE_RTOL, GRAD_RTOL = 1e-5, 1e-4


class Features(nn.Module):
    """Stands in for the backbone: its output is a leaf tensor of point features."""

    def __init__(self, feats: torch.Tensor) -> None:
        super().__init__()
        self.out_channels = feats.shape[1]
        self.feats = nn.Parameter(feats)

    def forward(self, batch) -> torch.Tensor:
        return self.feats


class Teacher(nn.Module):
    """Stands in for the frozen teacher: the batch carries its maps (``teacher_maps``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.out_channels = channels

    def freeze(self) -> Teacher:
        return self


def build(cls, feats: torch.Tensor, teacher_channels: int | None = None, **options):
    torch.manual_seed(0)  # head initialisation
    teacher = Teacher(teacher_channels) if teacher_channels is not None else None
    return cls(Features(feats), cls.parse_options(options), PretrainOptimConfig(), teacher)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def compare(method, batch, reference) -> dict[str, float]:
    """Run ``method.losses(batch)`` and ``reference(w, batch)`` on the same weights ``w`` (float64 copies of
    the method's parameters, ``w["feats"]`` the point features); assert that every term and the gradient of
    their sum w.r.t. every parameter agree. Returns the relative errors."""
    method.train()
    params = {n.removeprefix("backbone."): p for n, p in method.named_parameters()}
    terms = method.losses(batch)
    w = {n: p.detach().double().requires_grad_() for n, p in params.items()}
    expected = reference(w, batch)
    assert set(terms) == set(expected)
    errors = {f"value {k}": rel(terms[k].detach(), expected[k].detach()) for k in terms}
    total = torch.stack([t.float() for t in terms.values()]).sum()
    grads = torch.autograd.grad(total, list(params.values()), allow_unused=True)
    ref_grads = torch.autograd.grad(sum(expected.values()), [w[n] for n in params], allow_unused=True)
    # A gradient that is 0 in exact arithmetic (a bias before BatchNorm, a key bias under softmax: 1e-18 of the
    # largest here) is measured against 1e-3 of the largest gradient instead of its own rounding noise; every
    # other gradient here is above that (1.5e-3 of the largest at least), so it is compared relative to itself.
    floor = 1e-3 * max(float(r.norm()) for r in ref_grads if r is not None)
    for name, g, r in zip(params, grads, ref_grads):
        assert r is not None, f"{name} is not on the reference's loss path"
        g = g if g is not None else torch.zeros_like(r)
        errors[f"grad {name}"] = float((g.double() - r).norm()) / max(float(r.norm()), floor)
    worst_value = max(v for k, v in errors.items() if k.startswith("value"))
    worst_grad = max((v for k, v in errors.items() if k.startswith("grad")), default=0.0)
    detail = ", ".join(f"{k}: {v:.2e}" for k, v in errors.items())
    assert worst_value < VALUE_RTOL and worst_grad < GRAD_RTOL, f"differs from the reference: {detail}"
    return errors


# ---------------------------------------------------------------------------------------------- inputs


def linear(x: torch.Tensor, w: dict, name: str) -> torch.Tensor:
    return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]


def conv1x1(x: torch.Tensor, w: dict, name: str) -> torch.Tensor:
    return F.conv2d(x, w[f"{name}.weight"], w[f"{name}.bias"])


def nce(k: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The originals' NCELoss: cross-entropy of k q^T / tau with the diagonal as target."""
    return F.cross_entropy(k @ q.T / TAU, torch.arange(len(k)))


def pair_batch(seed: int, views: int = 3, rows: int = 40, pairs: int = 60, channels: int = 6,
               map_hw: tuple[int, int] = (3, 4), scale: int = 4) -> dict:
    """Random pairs of ``rows`` feature rows (two scans) with pixel centres of ``views`` images of
    ``map_hw * scale`` pixels, and random teacher maps of ``map_hw``."""
    g = torch.Generator().manual_seed(seed)
    H, W = map_hw[0] * scale, map_hw[1] * scale
    view = torch.randint(0, views, (pairs,), generator=g)
    flat = torch.stack([torch.randperm(H * W, generator=g)[:pairs] for _ in range(views)])  # distinct per view
    pix = flat[view, torch.arange(pairs)]
    uv = torch.stack([pix % W, pix // W], dim=1).float() + 0.5
    return {
        "offsets": torch.tensor([0, rows // 2, rows]),
        "images": torch.zeros(views, H, W, 3, dtype=torch.uint8),
        "teacher_maps": torch.randn(views, channels, *map_hw, generator=g),
        "pair_row": torch.randint(0, rows, (pairs,), generator=g),
        "pair_view": view,
        "pair_uv": uv,
        "view_batch": torch.tensor([0] * (views - 1) + [1]),
    }


def read_pixels(maps: torch.Tensor, batch: dict) -> torch.Tensor:
    """The originals' read of an image-size map at each pair's pixel: ``maps.permute(0, 2, 3, 1)[m]``."""
    rc = batch["pair_uv"].floor().long()
    return maps.permute(0, 2, 3, 1)[batch["pair_view"], rc[:, 1], rc[:, 0]]


def upsample(x: torch.Tensor, batch: dict) -> torch.Tensor:
    """The decoders' bilinear upsampling to the image (``align_corners=False``: our deviation)."""
    return F.interpolate(x, size=tuple(batch["images"].shape[1:3]), mode="bilinear", align_corners=False)


def feats(seed: int, rows: int = 40, channels: int = 8) -> torch.Tensor:
    return torch.randn(rows, channels, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- PPKT


def ppkt_reference(w: dict, batch: dict) -> dict:
    """SLidR's PPKT path: Res16UNet34C's ``final`` then ``normalize_features`` on the points; on the pixels
    ``PPKTFeatureExtractor``: 1x1 conv, bilinear upsampling, L2 normalisation, once; then ``loss``: the
    sampled pairs' features, NCELoss (every pair drawn here: max_pairs >= pairs)."""
    k = F.normalize(linear(w["feats"][batch["pair_row"]], w, "head"), dim=1)
    images = F.normalize(upsample(conv1x1(batch["teacher_maps"].double(), w, "pixel_head.proj"), batch), dim=1)
    return {"ppkt": nce(k, read_pixels(images, batch))}


def test_ppkt_matches_the_original():
    batch = pair_batch(1)
    method = build(PPKT, feats(2), 6, dim=5, max_pairs=4096)
    compare(method, batch, ppkt_reference)


# ---------------------------------------------------------------------------------------------- SLidR, ST-SLidR

SUPERPIXELS = 150  # SLidR's superpixel_size: ids of image b are offset by 150 b


def superpixel_batch(seed: int) -> dict:
    batch = pair_batch(seed, pairs=90)
    g = torch.Generator().manual_seed(seed + 100)
    V, H, W = batch["images"].shape[:3]
    # blocks of 2x2 pixels with random ids 0..5, so the nearest-resized map of ST-SLidR's teacher keeps them
    blocks = torch.randint(0, 6, (V, H // 2, W // 2), generator=g)
    batch["superpixels"] = blocks.repeat_interleave(2, 1).repeat_interleave(2, 2).to(torch.int16)
    return batch


def superpixel_means(batch: dict, w: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SLidR's ``loss_superpixels_average`` up to the criterion: the point and pixel embeddings averaged per
    superpixel (one-hot sums / (count + 1e-6)), and the mask ``k[:, 0] != 0`` of superpoints with a point."""
    k = F.normalize(linear(w["feats"][batch["pair_row"]], w, "head"), dim=1)
    # DilationFeatureExtractor's decoder: 1x1 conv, bilinear x4, then normalize_features
    images = F.normalize(upsample(conv1x1(batch["teacher_maps"].double(), w, "pixel_head.proj"), batch), dim=1)
    sp = batch["superpixels"].long() + torch.arange(len(images))[:, None, None] * SUPERPIXELS
    total = len(images) * SUPERPIXELS
    rc = batch["pair_uv"].floor().long()
    point_sp = sp[batch["pair_view"], rc[:, 1], rc[:, 0]]
    one_hot_p = F.one_hot(point_sp, total).double().T
    one_hot_i = F.one_hot(sp.flatten(), total).double().T
    k_s = (one_hot_p @ k) / (one_hot_p.sum(1, keepdim=True) + 1e-6)
    q_s = (one_hot_i @ images.permute(0, 2, 3, 1).flatten(0, 2)) / (one_hot_i.sum(1, keepdim=True) + 1e-6)
    return k_s, q_s, k_s[:, 0] != 0


def slidr_reference(w: dict, batch: dict) -> dict:
    k, q, mask = superpixel_means(batch, w)
    return {"slidr": nce(k[mask], q[mask])}


def test_slidr_matches_the_original():
    batch = superpixel_batch(3)
    compare(build(SLidR, feats(4), 6, dim=5), batch, slidr_reference)


def stslidr_reference(min_quantile: float, class_balance: bool, original: bool, threshold: float = 0.5):
    """ST-SLidR's ``loss_superpixel_stslidr_classbalance`` (``loss_superpixel_stslidr`` and its NCELoss without
    class balance): teacher features averaged over the superpixel map nearest-resized to the feature map,
    cosine similarity S of the kept superpoints, rows summing to 0 dropped; W = 1 - S (S clipped to [0, 1]
    without class balance), binarised at the row's ``min_quantile`` quantile, diagonal 1; logits x W
    (``original``) or, our fix, the ``floor(q (N - 1))`` most similar negatives out of the denominator;
    anchors weighted by 1 - min-max-normalised votes of S >= 0.5."""

    def reference(w: dict, batch: dict) -> dict:
        k, q, mask = superpixel_means(batch, w)
        raw = batch["teacher_maps"].double()
        sp = F.interpolate(batch["superpixels"][:, None].float(), size=raw.shape[-2:], mode="nearest")[:, 0].long()
        sp = sp + torch.arange(len(raw))[:, None, None] * SUPERPIXELS
        one_hot = F.one_hot(sp.flatten(), len(raw) * SUPERPIXELS).double().T
        f = (one_hot @ raw.permute(0, 2, 3, 1).flatten(0, 2)) / (one_hot.sum(1, keepdim=True) + 1e-6)
        f = F.normalize(f[mask], dim=1)
        sim = f @ f.T
        if not class_balance:
            sim = sim.clip(0.0, 1.0)
        keep = sim.sum(1) != 0
        sim, k, q = sim[keep][:, keep], k[mask][keep], q[mask][keep]
        n = len(k)
        logits = k @ q.T / TAU
        if original:
            weight = 1.0 - sim
            if min_quantile > 0:
                low = torch.quantile(weight, min_quantile, dim=1)
                weight = torch.where(weight < low[:, None], 0.0, weight)
                weight = torch.where(weight != 0, 1.0, weight)
            weight = weight.fill_diagonal_(1.0)
            per_anchor = F.cross_entropy(logits * weight, torch.arange(n), reduction="none")
        else:
            removed = math.floor(min_quantile * (n - 1))
            off = sim.clone().fill_diagonal_(-math.inf)
            drop = off >= off.topk(removed, dim=1).values[:, -1:] if removed else torch.zeros_like(off, dtype=bool)
            per_anchor = F.cross_entropy(logits.masked_fill(drop, -math.inf), torch.arange(n), reduction="none")
        if not class_balance:
            return {"stslidr": per_anchor.mean()}
        votes = torch.where(sim < threshold, 0.0, sim).sum(1)
        votes = votes - votes.min()
        anchor = 1.0 - votes / votes.max()
        return {"stslidr": (per_anchor @ anchor) / anchor.sum()}

    return reference


@pytest.mark.parametrize("original", [False, True])
@pytest.mark.parametrize("class_balance", [True, False])
def test_stslidr_matches_the_original(class_balance: bool, original: bool):
    batch = superpixel_batch(5)
    batch["teacher_maps"][:, 0] += 1.0  # mostly positive similarities, some above the vote threshold
    method = build(STSLidR, feats(6), 6, dim=5, min_quantile=0.2, class_balance=class_balance, original=original)
    compare(method, batch, stslidr_reference(0.2, class_balance, original))


# ---------------------------------------------------------------------------------------------- ScaLR


def scalr_reference(w: dict, batch: dict) -> dict:
    """ScaLR's ``Distiller.one_epoch``: the point network's output (its last layer is our head) at the
    paired points and the image model's upsampled features at the paired pixels, each L2-normalised; the
    mean over pairs of the Euclidean norm of their difference."""
    k = F.normalize(linear(w["feats"][batch["pair_row"]], w, "head"), p=2, dim=1)
    q = F.normalize(read_pixels(upsample(batch["teacher_maps"].double(), batch), batch), p=2, dim=1)
    return {"distill": torch.norm(k - q, p=2, dim=1).mean()}


def test_scalr_matches_the_original():
    batch = pair_batch(7, channels=5)
    compare(build(ScaLR, feats(8), 5), batch, scalr_reference)


# ---------------------------------------------------------------------------------------------- ALSO


def also_batch(seed: int, rows: int = 30, queries: int = 24, k: int = 4) -> dict:
    g = torch.Generator().manual_seed(seed)
    neighbors = torch.randint(0, rows, (queries, k), generator=g)
    neighbors[torch.rand(queries, k, generator=g) < 0.3] = -1  # fewer than k neighbours within the radius
    neighbors[0] = -1  # a query without neighbour
    intensity = torch.rand(queries, generator=g)
    intensity[2::3] = -1.0  # free-space queries carry -1
    return {
        "offsets": torch.tensor([0, rows // 2, rows]),
        "queries": torch.randn(queries, 3, generator=g),
        "row_xyz": torch.randn(rows, 3, generator=g),
        "query_neighbors": neighbors,
        "query_occ": (torch.rand(queries, generator=g) < 0.4).float(),
        "query_intensity": intensity,
        "query_batch": torch.arange(queries) % 2,
    }


def also_reference(w: dict, batch: dict) -> dict:
    """ALSO's ``InterpNet.forward``: per (query, neighbour) pair ``[latent_j || q - p_j]`` through fc_in,
    (ReLU, Linear) x 2 and fc_out with no activation before it; BCE-with-logits of the pair's occupancy
    logit against its query's label, L1 of the intensity channel where the target is >= 0. The latent is
    the backbone's last Linear (``classifier``), our head. With a bird's-eye map (SECOND), the latents are
    its cells (flat index ``b H W + i W + j``) and ``q - p_j`` is taken from the batch (``query_rel``)."""
    col, row = torch.nonzero(batch["query_neighbors"] >= 0, as_tuple=True)
    source = batch["query_neighbors"][col, row]
    if "query_rel" in batch:
        bev = w["bev"]
        B, _, H, W = bev.shape
        latents = linear(bev[source // (H * W), :, source % (H * W) // W, source % W], w, "head")
        x = torch.cat([latents, batch["query_rel"][col, row].double()], dim=1)
    else:
        latents = linear(w["feats"], w, "head")
        x = torch.cat([latents[source], (batch["queries"][col] - batch["row_xyz"][source]).double()], dim=1)
    x = linear(x, w, "decoder.fc_in")
    for i in range(2):
        x = linear(torch.relu(x), w, f"decoder.mlp_layers.{i}")
    x = linear(x, w, "decoder.fc_out")
    occupancy = F.binary_cross_entropy_with_logits(x[:, 0], batch["query_occ"][col].double())
    target = batch["query_intensity"][col].double()
    mask = target >= 0
    return {"occupancy": occupancy, "intensity": F.l1_loss(x[:, 1][mask], target[mask])}


class BevFeatures(nn.Module):
    """A backbone stand-in with only a bird's-eye map (``forward_bev``), VoxelNet's for ALSO's ``bev``."""

    def __init__(self, bev: torch.Tensor) -> None:
        super().__init__()
        self.out_channels = bev.shape[1]
        self.bev = nn.Parameter(bev)

    def forward_bev(self, batch) -> torch.Tensor:
        return self.bev


def test_also_matches_the_original():
    method = build(ALSO, feats(9, rows=30), latent=6, hidden=7)
    compare(method, also_batch(10), also_reference)


def test_also_bev_matches_the_original():
    bev = torch.randn(2, 8, 3, 5, generator=torch.Generator().manual_seed(11))
    torch.manual_seed(0)
    method = ALSO(BevFeatures(bev), ALSO.parse_options({"latent": 6, "hidden": 7, "bev": True}),
                  PretrainOptimConfig())
    batch = also_batch(12, rows=30)  # neighbours index the 2 x 3 x 5 cells
    batch["query_rel"] = torch.randn(*batch["query_neighbors"].shape, 3, generator=torch.Generator().manual_seed(13))
    compare(method, batch, also_reference)


# ---------------------------------------------------------------------------------------------- NCLR

NCLR_OPTIONS = dict(dim=5, pixel_stride=2, points_per_view=24, pairs_per_scan=1000, fused_pairs_per_scan=1000,
                    keypoints=10, score_threshold=0.5, fallback_threshold=0.3, min_candidates=5, pose_start_epoch=0)
DRAW_SEED = 11


def nclr_batch(seed: int, rows: int = 200, views: int = 3, pairs: int = 36, stride: int = 2) -> dict:
    """Pairs at grid-cell centres, at most one per (view, row), each view's rows from its own scan; points in
    front of cameras with the identity extrinsic."""
    batch = pair_batch(seed, views=views, rows=rows, pairs=pairs, map_hw=(4, 6), scale=4)
    g = torch.Generator().manual_seed(seed + 200)
    V, H, W = batch["images"].shape[:3]
    scan = batch["view_batch"]
    start, stop = batch["offsets"][scan], batch["offsets"][scan + 1]
    view = batch["pair_view"]
    row = torch.empty_like(view)
    for v in range(V):  # distinct rows per view
        mine = torch.nonzero(view == v).squeeze(1)
        row[mine] = start[v] + torch.randperm(int(stop[v] - start[v]), generator=g)[: len(mine)]
    cell = torch.randint(0, (H // stride) * (W // stride), (pairs,), generator=g)
    batch["pair_row"] = row
    batch["pair_uv"] = torch.stack([cell % (W // stride), cell // (W // stride)], dim=1).float() * stride + stride / 2
    xyz = torch.randn(rows, 3, generator=g)
    xyz[:, 2] = xyz[:, 2].abs() + 4.0
    batch["row_xyz"] = xyz
    batch["K"] = torch.tensor([[20.0, 0.0, W / 2], [0.0, 20.0, H / 2], [0.0, 0.0, 1.0]]).repeat(V, 1, 1)
    T = torch.eye(4).repeat(V, 1, 1)
    T[:, :3, 3] = torch.randn(V, 3, generator=g) * 0.1
    batch["lidar_to_cam"] = T
    return batch


def attention(x: torch.Tensor, context: torch.Tensor, w: dict, name: str) -> torch.Tensor:
    """NCLR's ``SelfAttention``: softmax(Q K^T / sqrt(d)) V (ours: one module per direction, with an output
    projection)."""
    q, k, v = (linear(t, w, f"{name}.{p}") for t, p in ((x, "q"), (context, "k"), (context, "v")))
    weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), dim=-1)
    return linear(weights @ v, w, f"{name}.out")


def score(x: torch.Tensor, w: dict, name: str) -> torch.Tensor:
    """The overlap score heads: Linear (1x1 conv), BatchNorm in training mode, ReLU, Linear, sigmoid."""
    x = linear(x, w, f"{name}.0")
    x = F.batch_norm(x, None, None, w[f"{name}.1.weight"], w[f"{name}.1.bias"], training=True)
    return torch.sigmoid(linear(torch.relu(x), w, f"{name}.3"))[..., 0]


def conv_weights(w: dict, name: str) -> dict:
    """A 1x1 convolution's weights as a Linear's."""
    return {f"{name}.weight": w[f"{name}.weight"][:, :, 0, 0], f"{name}.bias": w[f"{name}.bias"]}


def nclr_reference(**options):
    """NCLR's ``BEVTrainer.forward`` (bevlab/models.py): L2-normalised point and pixel features and the
    InfoNCE of the pairs; ``points_per_view`` points per view drawn with replacement from its scan, fused with
    the view's pixel cells by attention with a residual in each direction; overlap scores (sigmoid + BCE)
    against the pairs; InfoNCE of the fused, normalised features of ``fused_pairs_per_scan * B`` of the drawn
    points that overlap the view (with replacement when there are not more; our ``fused_replacement: false``:
    each once); keypoints above the threshold (else the fallback; our top-k by score; our ``rank_fallback``:
    every point when too few pass), soft matches softmax(f g^T / 0.01) to the cells, their normalised image
    coordinates K^-1 [u, v, 1], the pose (our PnP), SmoothL1 on R and 0.01 SmoothL1 on t."""
    o = {**NCLR_OPTIONS, **options}

    def reference(w: dict, batch: dict) -> dict:
        return _nclr_reference(w, batch, o)

    return reference


def _nclr_reference(w: dict, batch: dict, o: dict) -> dict:
    from lidarssl.methods.pnp import solve_pnp

    V, H, W = batch["images"].shape[:3]
    s = o["pixel_stride"]
    h, w_ = H // s, W // s
    voxel = linear(w["feats"], w, "head")
    image = F.interpolate(conv1x1(batch["teacher_maps"].double(), w, "pixel_proj"), size=(h, w_), mode="bilinear",
                          align_corners=False)
    cell = (batch["pair_uv"] / s).floor().long()  # the pairs in grid coordinates (pairing_images)
    view, prow = batch["pair_view"], batch["pair_row"]
    terms = {"nce": nce(F.normalize(voxel[prow], dim=1),
                        F.normalize(image, dim=1).permute(0, 2, 3, 1)[view, cell[:, 1], cell[:, 0]])}
    # the method's draws, replayed: its pair permutation (all pairs are used), then the rows of each view
    torch.manual_seed(DRAW_SEED)
    torch.randperm(len(prow))
    draw = torch.rand(V, o["points_per_view"])
    scan = batch["view_batch"]
    start, count = batch["offsets"][scan], batch["offsets"][scan + 1] - batch["offsets"][scan]
    rows = start[:, None] + (draw * count[:, None]).long()
    pair_of = torch.full((V, len(w["feats"])), -1)
    pair_of[view, prow] = torch.arange(len(prow))
    pair_index = pair_of[torch.arange(V)[:, None], rows]
    overlap = pair_index >= 0
    img_overlap = torch.zeros(V, h, w_, dtype=torch.float64)
    img_overlap[view, cell[:, 1], cell[:, 0]] = 1.0
    p = voxel[rows]
    g = image.flatten(2).transpose(1, 2)
    p_fused = p + attention(p, g, w, "point_from_pixels")
    g_fused = g + attention(g, p, w, "pixel_from_points")
    pc_score = score(p_fused.reshape(-1, p.shape[-1]), w, "point_score").reshape(V, -1)
    conv = {**conv_weights(w, "pixel_score.0"), **conv_weights(w, "pixel_score.3"),
            "pixel_score.1.weight": w["pixel_score.1.weight"], "pixel_score.1.bias": w["pixel_score.1.bias"]}
    img_score = score(g_fused.reshape(-1, p.shape[-1]), conv, "pixel_score").reshape(V, h, w_)
    terms["point_overlap"] = F.binary_cross_entropy(pc_score, overlap.double())
    terms["pixel_overlap"] = F.binary_cross_entropy(img_score, img_overlap)
    vi, ni = torch.nonzero(overlap, as_tuple=True)
    want = o["fused_pairs_per_scan"] * (len(batch["offsets"]) - 1)
    if o["fused_replacement"] and len(vi) <= want:  # np.random.choice(..., replace=True), replayed
        pick = torch.randint(len(vi), (want,))
        vi, ni = vi[pick], ni[pick]
    fused_cell = cell[pair_index[vi, ni]]
    g_norm = F.normalize(g_fused, dim=2).reshape(V, h, w_, -1)
    terms["nce_fused"] = nce(F.normalize(p_fused[vi, ni], dim=1), g_norm[vi, fused_cell[:, 1], fused_cell[:, 0]])
    # pose
    R_list, t_list, gt = [], [], []
    centres = torch.stack(torch.meshgrid((torch.arange(h) + 0.5) * s, (torch.arange(w_) + 0.5) * s,
                                         indexing="ij")[::-1], dim=-1).reshape(-1, 2).double()
    for v in range(V):
        sc = pc_score[v].detach()
        first = (sc > o["score_threshold"]).sum() > o["min_candidates"]
        thr = o["score_threshold"] if first else o["fallback_threshold"]
        candidate = sc > thr
        if o["rank_fallback"] and candidate.sum() <= o["min_candidates"]:
            candidate = torch.ones_like(candidate)
        if candidate.sum() <= o["min_candidates"] or not bool((view == v).any()):
            continue
        top, index = torch.where(candidate, sc, -1.0).topk(o["keypoints"])
        keep = top > -1
        f = F.normalize(p_fused[v, index], dim=1)
        prob = torch.softmax(f @ F.normalize(g_fused[v], dim=1).T / 0.01, dim=1)
        uv = prob @ centres
        ray = torch.cat([uv, torch.ones_like(uv[:, :1])], dim=1) @ torch.linalg.inv(batch["K"][v].double()).T
        res = solve_pnp(batch["row_xyz"][rows[v, index]].double()[None], (ray[:, :2] / ray[:, 2:])[None],
                        keep[None])
        if bool(res.valid[0]):
            R_list.append(res.R[0])
            t_list.append(res.t[0])
            gt.append(batch["lidar_to_cam"][v].double())
    assert R_list, "no view has a pose: the test exercises nothing"
    R, t, T = torch.stack(R_list), torch.stack(t_list), torch.stack(gt)
    terms["pose_rotation"] = F.smooth_l1_loss(R, T[:, :3, :3])
    terms["pose_translation"] = 0.01 * F.smooth_l1_loss(t, T[:, :3, 3])
    return terms


@pytest.mark.parametrize("options", [
    {"fused_replacement": True, "rank_fallback": False},  # the original
    {"fused_replacement": False, "rank_fallback": True, "score_threshold": 0.9, "fallback_threshold": 0.7},
], ids=["original", "deviations"])
def test_nclr_matches_the_original(options: dict):
    from lidarssl.methods.nclr import NCLR

    batch = nclr_batch(12)
    method = build(NCLR, feats(13, rows=200), 6, **{**NCLR_OPTIONS, **options})
    torch.manual_seed(DRAW_SEED)
    compare(method, batch, nclr_reference(**options))
    assert method.last_stats["pose_views"] >= 1
