"""PointContrast and DepthContrast: known answers of their losses, equality with references written from the papers'
equations and the originals' order of operations, every backbone family, and bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lidarssl.config import BackboneConfig, load_config
from lidarssl.data.datasets import open_dataset
from lidarssl.data.loader import ScanCollate, ScanSamples
from lidarssl.errors import ConfigError, DataError
from lidarssl.methods.config import PretrainConfig
from lidarssl.methods.depthcontrast import check_queue, moco_info_nce, scan_max_pool
from lidarssl.methods.pointcontrast import match_accuracy, point_info_nce
from lidarssl.methods.pretrain import build_method
from lidarssl.methods.views import match_rows

TINY_WI = ["backbone.name=waffleiron_4_32", "backbone.options.voxel_size=0.4",
           "backbone.options.grid_shapes=[[32,32],[32,8],[32,8]]"]
TINY = {"pointcontrast": "method.options={npos: 256, match_radius: 0.6}",
        "depthcontrast": "method.options={queue: 8, dim: 16, hidden: 16}"}


def _config(method: str, root: Path, tmp_path: Path, *extra: str) -> PretrainConfig:
    return load_config(PretrainConfig, f"{method}-wi-synthetic", [
        f"data.root={root}", f"out={tmp_path}", "data.num_workers=0", *TINY_WI, TINY[method], *extra])


def _batch(config: PretrainConfig, root: Path, frames=(0, 1)):
    torch.manual_seed(0)
    module, spec, builders = build_method(config)
    samples = ScanSamples(open_dataset(root, split="train"), spec.prep, builders, seed=0,
                          augment=config.augment.point_augment())
    return module, ScanCollate(spec.prep, builders)([samples[(i, 0)] for i in frames])


# --- matching --------------------------------------------------------------------------------------------------


def test_match_rows_pairs_each_point_with_one_neighbour_within_the_radius():
    grid = np.stack(np.meshgrid(np.arange(5.0), np.arange(5.0), [0.0], indexing="ij"), -1).reshape(-1, 3)
    order = np.random.default_rng(0).permutation(len(grid))
    row1, row2 = match_rows(grid, grid[order], radius=0.5, rng=np.random.default_rng(1))
    assert np.array_equal(row1, np.arange(25)) and np.array_equal(order[row2], np.arange(25))  # exact partners only
    row1, row2 = match_rows(grid, grid + [0.0, 0.0, 3.0], radius=0.5, rng=None)
    assert len(row1) == 0  # nothing within the radius
    # 1.5 spacings: up to 9 neighbours each (3 x 3 in the plane); every draw is one of them, and all are drawn
    rng = np.random.default_rng(2)
    drawn = {tuple(grid[match_rows(grid[12:13], grid, 1.5, rng)[1][0]]) for _ in range(200)}
    assert len(drawn) == 9 and all(np.linalg.norm(np.array(p) - grid[12]) <= 1.5 for p in drawn)


def test_two_views_of_a_scan_match_the_same_points(tiny_world: Path, tmp_path: Path, one_thread):
    config = _config("pointcontrast", tiny_world, tmp_path)
    _, batch = _batch(config, tiny_world)
    view2 = batch["view2"]
    assert set(view2) >= {"offsets", "kept", "batch_index"}
    scan1 = batch["batch_index"][batch["match_row"]]
    assert torch.equal(scan1, view2["batch_index"][batch["match_row2"]])  # pairs never cross scans
    dataset = open_dataset(tiny_world, split="train")
    for b in range(2):
        pts = torch.from_numpy(dataset[b].points)
        sel = scan1 == b
        a = pts[batch["kept"][batch["match_row"][sel]]]
        c = pts[view2["kept"][batch["match_row2"][sel]]]
        assert (a - c).norm(dim=1).max() <= 0.6 + 1e-5  # within match_radius, in the scan's own frame
        assert sel.sum() > 0.5 * int((batch["batch_index"] == b).sum())  # most rows find a partner


# --- PointInfoNCE ----------------------------------------------------------------------------------------------


def _reference_point_info_nce(q: torch.Tensor, k: torch.Tensor, tau: float) -> torch.Tensor:
    """PointContrast eq. 2: L = -1/|P| sum_(i,j) log exp(f_i . g_j / tau) / sum_(., l) exp(f_i . g_l / tau), written
    as PointNCELossTrainer runs it: logits = mm(q, k^T) / T, CrossEntropyLoss with labels arange(npos)."""
    total = torch.zeros((), dtype=torch.float64)
    for i in range(len(q)):
        logits = [float(q[i] @ k[j]) / tau for j in range(len(k))]
        total += -(logits[i] - math.log(sum(math.exp(v) for v in logits)))
    return total / len(q)


def test_point_info_nce_known_answers():
    n, tau = 32, 0.07
    eye = torch.eye(n, dtype=torch.float64)  # the loss is ~2e-5: below float32's resolution of log-sum-exp
    perfect = point_info_nce(eye, eye, npos=4096, temperature=tau)
    # matching features: only the positive at cosine 1, the negatives at 0
    assert float(perfect) == pytest.approx(math.log(1 + (n - 1) * math.exp(-1 / tau)), rel=1e-5)
    assert float(perfect) < 1e-4
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(n, 8192, generator=g), dim=1)
    k = F.normalize(torch.randn(n, 8192, generator=g), dim=1)  # unrelated features: no match stands out
    assert float(point_info_nce(q, k, npos=4096, temperature=1.0)) == pytest.approx(math.log(n), abs=0.02)
    # shuffled matches: each point's true partner sits among its negatives (log(n - 1 + e) at T = 1)
    shuffled = point_info_nce(q, q[torch.roll(torch.arange(n), 1)], npos=4096, temperature=1.0)
    assert float(shuffled) == pytest.approx(math.log(n - 1 + math.e), abs=0.02)


def test_point_info_nce_equals_the_papers_equation_and_samples_npos_pairs():
    g = torch.Generator().manual_seed(3)
    q, k = F.normalize(torch.randn(20, 6, generator=g), dim=1), F.normalize(torch.randn(20, 6, generator=g), dim=1)
    ours = point_info_nce(q.double(), k.double(), npos=64, temperature=0.4)
    assert float(ours) == pytest.approx(float(_reference_point_info_nce(q.double(), k.double(), 0.4)), rel=1e-10)
    # npos < pairs: the loss of a random subset of npos pairs, drawn without replacement
    gen = torch.Generator().manual_seed(5)
    sub = point_info_nce(q, k, npos=7, temperature=0.4, generator=gen)
    idx = torch.randperm(20, generator=torch.Generator().manual_seed(5))[:7]
    assert float(sub) == pytest.approx(float(_reference_point_info_nce(q[idx], k[idx], 0.4)), rel=1e-5)


def test_pointcontrast_loss_path_equals_the_reference(tiny_world: Path, tmp_path: Path, one_thread):
    config = _config("pointcontrast", tiny_world, tmp_path, "method.options.npos=100000",
                     "method.options.require_positives=false")
    module, batch = _batch(config, tiny_world)
    loss = module.losses(batch)["pointcontrast"]
    # the original's order: F0 = model(view0), F1 = model(view1), both normalised by the network; q = F0[pairs[:,0]]
    with torch.no_grad():
        f0 = F.normalize(module.head(module.backbone(batch)), dim=1)
        f1 = F.normalize(module.head(module.backbone(batch["view2"])), dim=1)
        q, k = f0[batch["match_row"]], f1[batch["match_row2"]]
        logits = q @ k.T / 0.4
        reference = F.cross_entropy(logits, torch.arange(len(q)))
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in module.head.parameters())


# --- DepthContrast ---------------------------------------------------------------------------------------------


def _reference_moco(q, k, queue, tau):
    """DepthContrast's NCELossMoco: l_pos = einsum('nc,nc->n'), l_neg = einsum('nc,ck->nk', queue), cat, / T,
    CrossEntropyLoss with labels 0."""
    l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
    l_neg = torch.einsum("nc,ck->nk", q, queue)
    logits = torch.cat([l_pos, l_neg], dim=1) / tau
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))


def test_moco_info_nce_known_answers_and_reference():
    dim, K, tau = 64, 32, 0.1
    eye = torch.eye(dim, dtype=torch.float64)
    q = eye[:4]
    queue = eye[4:4 + K].T  # keys orthogonal to every query
    perfect = moco_info_nce(q, q, queue, tau)
    assert float(perfect) == pytest.approx(math.log(math.exp(1 / tau) + K) - 1 / tau, rel=1e-5)
    assert float(perfect) < 0.002
    g = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return F.normalize(torch.randn(*shape, generator=g), dim=-1)

    far = moco_info_nce(rand(16, 8192), rand(16, 8192), F.normalize(torch.randn(8192, K * 8, generator=g), dim=0), 1.0)
    assert float(far) == pytest.approx(math.log(K * 8 + 1), abs=0.05)  # log of the number of candidates
    q, k = rand(5, 12).double(), rand(5, 12).double()
    queue = F.normalize(torch.randn(12, 40, generator=g), dim=0).double()
    assert float(moco_info_nce(q, k, queue, tau)) == pytest.approx(float(_reference_moco(q, k, queue, tau)), rel=1e-10)


def test_scan_max_pool():
    f = torch.tensor([[1.0, -2.0], [3.0, -1.0], [-5.0, 4.0]])
    out = scan_max_pool(f, torch.tensor([0, 0, 2]), 3)
    assert torch.equal(out, torch.tensor([[3.0, -1.0], [0.0, 0.0], [-5.0, 4.0]]))


def test_depthcontrast_step_equals_the_original_order(tiny_world: Path, tmp_path: Path, one_thread):
    config = _config("depthcontrast", tiny_world, tmp_path, "method.options.momentum=0.9")
    module, batch = _batch(config, tiny_world)
    for pq, pk in zip(module.backbone.parameters(), module.key_backbone.parameters()):
        assert torch.equal(pq, pk) and not pk.requires_grad  # the key encoder starts as a copy
    opt = torch.optim.SGD([p for _, p in module.trainable()], lr=0.5)
    module.losses(batch)["depthcontrast"].backward()  # a first step, so query and key encoders differ
    opt.step()
    opt.zero_grad()
    keys_before = {n: p.detach().clone() for n, p in module.key_backbone.named_parameters()}
    queue_before, ptr = module.queue.clone(), int(module.queue_ptr)
    state = {k: v.clone() for k, v in module.state_dict().items()}
    loss = module.losses(batch)["depthcontrast"]
    # reference, from the saved state: query forward, momentum update, key forward, NCELossMoco, enqueue
    module2, _ = _batch(config, tiny_world)
    module2.load_state_dict(state)
    with torch.no_grad():
        q = F.normalize(module2.head.mlp(scan_max_pool(module2.backbone(batch), batch["batch_index"], 2)), dim=1)
        for (n, pk), pq in zip(module2.key_backbone.named_parameters(), module2.backbone.parameters()):
            pk.copy_(0.9 * keys_before[n] + 0.1 * pq)
        for pk, pq in zip(module2.key_head.parameters(), module2.head.parameters()):
            pk.copy_(0.9 * pk + 0.1 * pq)
        v2 = batch["view2"]
        k = F.normalize(module2.key_head.mlp(scan_max_pool(module2.key_backbone(v2), v2["batch_index"], 2)), dim=1)
        reference = _reference_moco(q, k, queue_before, 0.1)
    assert float(loss.detach()) == pytest.approx(float(reference), rel=1e-5)
    for n, p in module.key_backbone.named_parameters():
        assert torch.allclose(p, dict(module2.key_backbone.named_parameters())[n], atol=1e-6)
    assert torch.allclose(module.queue[:, ptr:ptr + 2], k.T, atol=1e-5)  # this batch's keys replace the oldest
    assert torch.equal(module.queue[:, ptr + 2:], queue_before[:, ptr + 2:]) and int(module.queue_ptr) == ptr + 2
    loss.backward()
    assert all(p.grad is None for p in module.key_backbone.parameters())  # never trained by gradients


# --- every backbone family, no cameras -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["pointcontrast", "depthcontrast"])
@pytest.mark.parametrize("backbone", ["waffleiron_4_32", "minkunet_tiny", "spvcnn_tiny", "voxelnet_tiny",
                                      "res16unet34c"])
def test_one_step_with_every_backbone_family(method: str, backbone: str, tiny_world: Path, tmp_path: Path,
                                             one_thread):
    config = load_config(PretrainConfig, f"{method}-wi-synthetic", [
        f"data.root={tiny_world}", f"out={tmp_path}", "data.num_workers=0", TINY[method]])
    options = {"res16unet34c": {"voxel_size": [0.4, 4.0, 0.4], "range_min": [0.0, -180.0, -3.2],
                                "range_max": [25.6, 180.0, 3.2]}}.get(backbone, {})
    config = config.model_copy(update={"backbone": BackboneConfig(name=backbone, options=options)})
    module, batch = _batch(config, tiny_world)
    assert "images" not in batch  # a lidar-only method: the world has no camera
    before = [p.detach().clone() for p in module.backbone.parameters()]
    loss = sum(module.losses(batch).values())
    assert torch.isfinite(loss)
    loss.backward()
    torch.optim.SGD([p for _, p in module.trainable()], lr=0.1).step()
    assert any(not torch.equal(a, p) for a, p in zip(before, module.backbone.parameters()))


# --- bad input ---------------------------------------------------------------------------------------------------


def test_too_few_matches_for_the_requested_positives(tiny_world: Path, tmp_path: Path, one_thread):
    config = _config("pointcontrast", tiny_world, tmp_path, "method.options.npos=10000000", "trainer.batch_size=2")
    with pytest.raises(DataError, match=r"fewer than the 5000000 positives per scan that method.options.npos asks "
                                        r"over 2 scans per batch; lower method.options.npos to at most \d+"):
        _batch(config, tiny_world)


def test_sequence_option_needs_ego_poses(tmp_path: Path, tiny_world: Path, one_thread):
    import shutil

    root = tmp_path / "no_poses"
    shutil.copytree(tiny_world, root)
    for f in root.rglob("*.npz"):
        data = dict(np.load(f))
        if "ego_pose" in data:
            data["ego_pose"] = np.eye(4)
            np.savez(f, **data)
    config = _config("pointcontrast", root, tmp_path / "run", "method.options.sequence_offset=1",
                     "method.options.max_gap=1000")
    with pytest.raises(ConfigError, match="method.options.sequence_offset: .* gives no ego poses .*; set "
                                          "method.options.sequence_offset: 0"):
        _batch(config, root)


def test_sequence_pairs_are_registered_by_the_ego_poses(tiny_world: Path, tmp_path: Path, one_thread):
    config = _config("pointcontrast", tiny_world, tmp_path, "method.options.sequence_offset=1",
                     "method.options.max_gap=1000")
    _, batch = _batch(config, tiny_world, frames=(0,))
    dataset = open_dataset(tiny_world, split="train")
    a, b = dataset[0], dataset[1]
    T = np.linalg.inv(b.ego_pose) @ a.ego_pose
    p1 = a.points[batch["kept"][batch["match_row"]].numpy()] @ T[:3, :3].T + T[:3, 3]
    p2 = b.points[batch["view2"]["kept"][batch["match_row2"]].numpy()]
    assert len(p1) > 100 and np.linalg.norm(p1 - p2, axis=1).max() <= 0.6 + 1e-4


def test_queue_longer_than_the_dataset():
    check_queue(4, 4)
    with pytest.raises(ConfigError, match=r"method.options.queue=65536 is longer than the 4 scans of the dataset .*; "
                                          r"set method.options.queue to at most 4"):
        check_queue(65536, 4)


def test_match_accuracy_chance_and_perfect():
    eye = torch.eye(16)
    assert match_accuracy(eye, eye) == 1.0
    assert match_accuracy(eye, eye[torch.roll(torch.arange(16), 1)]) == 0.0


# --- a tiny training run -------------------------------------------------------------------------------------------


def test_pointcontrast_learns_to_match_held_out_points(tiny_world: Path, tmp_path: Path, one_thread):
    """Ten steps on the 4 training scans: the pretext loss falls and the embeddings of the 2 held-out scans find
    their matched point among 256 (chance 1/256) far more often than before training. Measured: loss 5.15 -> 4.22,
    accuracy 3 % -> 34 %; the asserts leave a factor of 3 or more on each."""
    config = _config("pointcontrast", tiny_world, tmp_path)
    torch.manual_seed(0)
    module, spec, builders = build_method(config)
    augment = config.augment.point_augment()
    train = ScanSamples(open_dataset(tiny_world, split="train"), spec.prep, builders, seed=0, augment=augment)
    val = ScanSamples(open_dataset(tiny_world, split="val"), spec.prep, builders, seed=1, augment=augment)
    collate = ScanCollate(spec.prep, builders)

    def held_out_accuracy() -> float:
        module.eval()
        scores = []
        with torch.no_grad():
            for epoch in range(3):
                q, k = module.pairs(collate([val[(i, 100 + epoch)] for i in range(len(val))]))
                pick = torch.randperm(len(q), generator=torch.Generator().manual_seed(epoch))[:256]
                scores.append(match_accuracy(q[pick], k[pick]))
        module.train()
        return float(np.mean(scores))

    before = held_out_accuracy()
    optimizer = torch.optim.AdamW([p for _, p in module.trainable()], lr=0.01)
    losses = []
    for step in range(10):
        loss = module.losses(collate([train[(i, step)] for i in range(len(train))]))["pointcontrast"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    after = held_out_accuracy()
    print(f"pointcontrast tiny run: loss {losses[0]:.2f} -> {losses[-1]:.2f}, held-out matching {before:.1%} -> "
          f"{after:.1%} (chance {1 / 256:.1%})")
    assert losses[-1] < losses[0] - 0.3
    assert after > 3 * before and after > 25 / 256


# --- the command line ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["pointcontrast", "depthcontrast"])
def test_cli_pretrains_on_a_world_without_cameras(method: str, tiny_world: Path, tmp_path: Path, one_thread,
                                                   capsys: pytest.CaptureFixture):
    from lidarssl.cli import main

    run = [f"{method}-wi-synthetic", f"data.root={tiny_world}", "data.num_workers=0", *TINY_WI, TINY[method],
           "optim.epochs=1", "trainer.batch_size=2", "trainer.progress_bar=false"]
    if method == "depthcontrast":  # the world has 4 training scans: a longer queue is refused before training
        assert main(["pretrain", *run, f"out={tmp_path / 'long'}", "method.options.queue=65536"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith("method.options.queue=65536 is longer than the 4 scans of the dataset (keys of one scan "
                            "would be its own negatives); set method.options.queue to at most 4")
        assert len(err.splitlines()) == 1
        run.append("method.options.queue=4")
    assert main(["pretrain", *run, f"out={tmp_path / 'run'}"]) == 0
    assert (tmp_path / "run" / "backbone.safetensors").is_file()
