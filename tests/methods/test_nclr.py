"""NCLR: the differentiable PnP, the overlap labels on the real nuScenes sample, skipped views, a tiny run."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lidarssl.config import load_config
from lidarssl.data.pairing import PairingConfig, pair_views
from lidarssl.errors import ConfigError
from lidarssl.methods.config import PretrainConfig
from lidarssl.methods.nclr import (
    cell_centres,
    pixel_overlap_labels,
    point_overlap_labels,
    select_keypoints,
    soft_match_bearings,
)
from lidarssl.methods.pnp import rotation_error_deg, solve_pnp

# -- (a) PnP ------------------------------------------------------------------------------------------------


def _rotations(n: int, gen: torch.Generator) -> torch.Tensor:
    q = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    w, x, y, z = (q / q.norm(dim=1, keepdim=True)).unbind(1)
    return torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
                        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
                        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], 1).reshape(n, 3, 3)


def _scene(views: int = 8, n: int = 128, seed: int = 0):
    """Known camera-from-lidar poses and lidar points 2..42 m in front of each camera."""
    gen = torch.Generator().manual_seed(seed)
    R = _rotations(views, gen)
    t = torch.randn(views, 3, generator=gen, dtype=torch.float64) * 8
    cam = torch.stack([torch.rand(views, n, generator=gen) * 30 - 15, torch.rand(views, n, generator=gen) * 8 - 4,
                       torch.rand(views, n, generator=gen) * 40 + 2], -1).double()
    X = (cam - t[:, None]) @ R  # lidar = R^T (cam - t)
    return R, t, X, cam[..., :2] / cam[..., 2:]


def test_pnp_recovers_a_known_pose_from_exact_correspondences():
    R, t, X, b = _scene()
    res = solve_pnp(X, b)
    assert res.valid.all()
    assert rotation_error_deg(res.R, R).max() < 0.5  # measured ~1e-6 deg in float64
    assert (res.t - t).norm(dim=1).max() < 0.01
    # float32 inputs (as in training) too
    res32 = solve_pnp(X.float(), b.float())
    assert rotation_error_deg(res32.R.double(), R).max() < 0.5
    assert (res32.t.double() - t).norm(dim=1).max() < 0.01


def test_pnp_with_pixel_noise_and_rays():
    R, t, X, b = _scene(seed=1)
    gen = torch.Generator().manual_seed(5)
    noisy = b + torch.randn(b.shape, generator=gen, dtype=torch.float64) / 1000  # ~1 px at f = 1000 px
    rays = torch.cat([noisy * 2.0, torch.full_like(noisy[..., :1], 2.0)], -1)  # (x, y, 1) up to scale
    res = solve_pnp(X, rays)
    assert res.valid.all()
    assert rotation_error_deg(res.R, R).max() < 0.5
    assert (res.t - t).norm(dim=1).max() < 0.1


def test_pnp_with_one_hot_soft_matches_and_a_flipped_crop():
    """Perfect features (one-hot cell codes) through the soft matching: the poses come back within the cell
    quantisation, also with the negative fx of a horizontally flipped image."""
    H, W, stride = 224, 416, 4
    grid = (H // stride, W // stride)
    K = torch.tensor([[300.0, 0, 208], [0, 300.0, 112], [0, 0, 1]], dtype=torch.float64)
    K_flip = torch.tensor([[-1.0, 0, W], [0, 1, 0], [0, 0, 1]], dtype=torch.float64) @ K
    R, t, X, b = _scene(views=2, n=400, seed=2)
    centres = cell_centres((H, W), grid).double()
    errors = []
    for v, Kv in enumerate([K, K_flip]):
        uv = torch.cat([b[v], torch.ones_like(b[v][:, :1])], 1) @ Kv.T
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
        cell = (uv[inside, 1] // stride).long() * grid[1] + (uv[inside, 0] // stride).long()
        pixel_feats = torch.eye(grid[0] * grid[1])[None]
        bearings = soft_match_bearings(pixel_feats[:, cell], pixel_feats, centres, Kv[None].float(), 0.01)
        res = solve_pnp(X[v : v + 1, inside], bearings.double())
        assert res.valid.all() and int(inside.sum()) > 100
        errors.append((float(rotation_error_deg(res.R, R[v : v + 1])[0]), float((res.t - t[v]).norm())))
    for rot, trans in errors:
        assert rot < 1.0 and trans < 0.5, errors


def test_pnp_degenerate_views_are_flagged_not_nan():
    R, t, X, b = _scene(views=3)
    X = X.clone().requires_grad_()
    planar = X.detach().clone()
    planar[1, :, 2] = 0.0
    mask = torch.ones(3, X.shape[1], dtype=torch.bool)
    mask[2, 5:] = False  # five points only
    Xin = torch.stack([X[0], planar[1], X[2]])
    res = solve_pnp(Xin, b, mask)
    assert res.valid.tolist() == [True, False, False]
    assert torch.isfinite(res.R).all() and torch.isfinite(res.t).all()
    loss = (res.R[res.valid] - R[res.valid]).abs().sum() + res.t[res.valid].sum()
    loss.backward()
    assert torch.isfinite(X.grad).all() and X.grad[0].abs().sum() > 0


def test_pnp_gradient_matches_finite_differences():
    R, t, X, b = _scene(views=1, seed=3)
    b = b + torch.randn(b.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1e-3
    bg = b.clone().requires_grad_()
    res = solve_pnp(X, bg, iterations=20)
    f = res.t.sum() + res.R[:, 0].sum()
    (grad,) = torch.autograd.grad(f, bg)
    eps = 1e-6
    for i, c in [(3, 0), (17, 1)]:
        d = torch.zeros_like(b)
        d[0, i, c] = eps
        plus = solve_pnp(X, b + d, iterations=20)
        minus = solve_pnp(X, b - d, iterations=20)
        fd = ((plus.t.sum() + plus.R[:, 0].sum()) - (minus.t.sum() + minus.R[:, 0].sum())) / (2 * eps)
        assert abs(float(fd) - float(grad[0, i, c])) < 1e-3 * max(1.0, abs(float(fd)))


def test_keypoint_selection_thresholds_and_fallback():
    scores = torch.zeros(3, 50)
    scores[0, :20] = 0.95  # 20 above 0.9
    scores[1, :5] = 0.95
    scores[1, 5:30] = 0.8  # 5 above 0.9 -> fallback 0.7 gives 30
    scores[2, :8] = 0.8  # 8 candidates: skipped
    index, mask, ok = select_keypoints(scores, 16, 0.9, 0.7, 10)
    assert ok.tolist() == [True, True, False]
    assert mask[0].sum() == 16 and set(index[0][mask[0]].tolist()) <= set(range(20))
    assert mask[1].sum() == 16 and set(index[1][mask[1]].tolist()) <= set(range(30))
    # rank_fallback: the skipped view takes its best points instead (the 8 at 0.8 first), the others are unchanged
    ranked, ranked_mask, ranked_ok = select_keypoints(scores, 16, 0.9, 0.7, 10, rank_fallback=True)
    assert ranked_ok.tolist() == [True, True, True] and ranked_mask.all()
    assert set(ranked[2, :8].tolist()) == set(range(8))
    assert torch.equal(ranked[:2], index[:2])


# -- (b) overlap labels on the real nuScenes keyframe ----------------------------------------------------------

MEASURED = {"CAM_FRONT": 3067, "CAM_FRONT_RIGHT": 3079, "CAM_FRONT_LEFT": 3704, "CAM_BACK": 4826,
            "CAM_BACK_LEFT": 4097, "CAM_BACK_RIGHT": 3379}


def test_overlap_labels_on_the_real_nuscenes_keyframe(nuscenes_keyframe):
    scan = nuscenes_keyframe
    views = pair_views(scan, PairingConfig(min_depth=0.1))
    counts = dict(zip(views.names, np.bincount(views.view, minlength=len(views.names)).tolist()))
    assert counts == MEASURED
    n = len(scan.points)
    pair_row, pair_view = torch.from_numpy(views.point), torch.from_numpy(views.view)
    V = len(views.names)
    labels, index = point_overlap_labels(pair_row, pair_view, n, torch.arange(V)[:, None], torch.arange(n)[None])
    assert dict(zip(views.names, labels.sum(1).tolist())) == MEASURED
    hit = index[labels]
    assert torch.equal(pair_row[hit], torch.arange(n).expand(V, n)[labels])  # each label points at its own pair
    assert torch.equal(pair_view[hit], torch.arange(V)[:, None].expand(V, n)[labels])

    H, W = views.images.shape[1:3]
    grid = (H // 4, W // 4)
    cells = pixel_overlap_labels(pair_view, torch.from_numpy(views.uv), V, (H, W), grid)
    expected = np.zeros((V, *grid))
    rc = np.floor(views.uv[:, ::-1] / 4).astype(np.int64)
    expected[views.view, rc[:, 0], rc[:, 1]] = 1
    assert np.array_equal(cells.numpy(), expected)
    assert 0 < cells.sum() < views.view.size


# -- (c), (d) the method on a tiny synthetic world --------------------------------------------------------------

TINY = {"pose_start_epoch": 0, "points_per_view": 512, "pairs_per_scan": 128, "fused_pairs_per_scan": 128,
        "keypoints": 32}


def _config(world: Path, out: Path, *extra: str) -> PretrainConfig:
    options = "{" + ", ".join(f"{k}: {v}" for k, v in TINY.items()) + "}"
    return load_config(PretrainConfig, None, [
        f"out={out}", f"data.root={world}", "data.split=train", "data.num_workers=0",
        "backbone.name=waffleiron_4_32", "method.name=nclr", "teacher.name=resnet50", "teacher.weights=null",
        "optim.epochs=1", "trainer.batch_size=2", "trainer.progress_bar=false", "trainer.accelerator=cpu",
        "pairing.crop_size=[64,112]", "pairing.flip=0.5", "augment.scale=null", "augment.flip=false",
        "augment.translate=[4.0,15.0]", f"method.options={options}", *extra])


def test_rigidity_is_checked(camera_world: Path, tmp_path: Path):
    from lidarssl.methods.nclr import NCLR

    for bad in ("augment.scale=[0.9,1.1]", "augment.flip=true"):
        cfg = _config(camera_world, tmp_path / "x", bad)
        with pytest.raises(ConfigError, match="rigid"):
            NCLR.builders(cfg, NCLR.parse_options(cfg.method.options))


def test_view_without_points_is_skipped_and_counted(camera_world: Path, tmp_path: Path):
    from lidarssl.data.datasets import open_dataset
    from lidarssl.data.loader import ScanCollate, ScanSamples
    from lidarssl.methods.pretrain import build_method

    torch.manual_seed(0)
    cfg = _config(camera_world, tmp_path / "run")
    module, spec, builders = build_method(cfg)
    samples = ScanSamples(open_dataset(camera_world, split="train"), spec.prep, builders, seed=0,
                              augment=cfg.augment.point_augment())
    batch = ScanCollate(spec.prep, builders)([samples[0], samples[1]])
    keep = batch["pair_view"] != 0  # view 0: no point projects into it
    for key in ("pair_row", "pair_view", "pair_uv"):
        batch[key] = batch[key][keep]
    with torch.no_grad():
        module.point_score[-1].bias.fill_(20.0)  # every point a keypoint candidate: the pose path runs
    module.train()
    terms = module.losses(batch)
    stats = module.last_stats
    assert stats["pose_skipped_empty"] == 1
    views = int(batch["images"].shape[0])
    assert stats["pose_views"] + stats["pose_skipped_degenerate"] + stats["pose_skipped_keypoints"] == views - 1
    assert stats["pose_views"] > 0
    assert {"pose_rotation", "pose_translation", "point_overlap", "pixel_overlap", "nce", "nce_fused"} <= set(terms)
    loss = sum(terms.values())
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in module.point_from_pixels.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_tiny_pretraining_run_logs_the_pose_terms(camera_world: Path, tmp_path: Path):
    from lidarssl.methods.pretrain import run_pretraining

    result = run_pretraining(_config(camera_world, tmp_path / "run"))
    assert math.isfinite(result.loss)
    assert result.backbone.is_file()
    with open(tmp_path / "run" / "metrics.csv") as f:
        columns = next(csv.reader(f))
    for name in ("train/pose_rotation", "train/pose_translation", "train/nce_fused", "train/point_overlap",
                 "train/nclr_pose_skipped_keypoints"):
        assert name in columns, columns


@pytest.mark.parametrize("name", ["nclr-minkunet34-nuscenes", "nclr-minkunet18-semantickitti", "nclr-wi-synthetic"])
def test_shipped_nclr_recipes_validate(name: str):
    from lidarssl.methods.nclr import NCLR

    cfg = load_config(PretrainConfig, name)
    assert cfg.method.name == "nclr" and cfg.augment.scale is None and cfg.teacher.name == "resnet50"
    NCLR.builders(cfg, NCLR.parse_options(cfg.method.options))  # rigid augmentation


@pytest.mark.slow
def test_pose_diagnosis_recovers_the_true_pose_from_the_true_pixels(camera_world: Path, tmp_path: Path):
    """benchmarks/nclr_pose.py on a run: PnP from each view's true pixels gives the batch's own camera pose (the
    geometry of the pose term is consistent), and the learned soft matches are scored against those pixels."""
    import sys

    from lidarssl.methods.pretrain import run_pretraining

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    nclr_pose = pytest.importorskip("nclr_pose")
    run_pretraining(_config(camera_world, tmp_path / "run"))
    r = nclr_pose.measure(tmp_path / "run", batches=1)
    assert r["views"] > 0 and r["soft_px"] > 0
    assert r["rot_true"] < 0.5 and r["trans_true"] < 0.05
    assert r["rot_1px"] < r["rot_noisy"] or r["soft_px"] < 2  # noise as large as the matches' error hurts more
