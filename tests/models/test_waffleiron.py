"""WaffleIron: checkpoint layout, parameter counts, agreement with a plain channel-first implementation and
with the original's order of operations (benchmarks/waffleiron_original.py), batch invariance, checkpointing,
preprocessing and its errors."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lidarssl.errors import ConfigError, DataError
from lidarssl.models.backbones import BackboneSpec, create_backbone, list_backbones
from lidarssl.models.backbones import waffleiron as wi
from lidarssl.models.backbones import waffleiron_ops as wi_ops
from lidarssl.models.backbones.waffleiron import WaffleIron, WaffleIronSegmenter
from lidarssl.models.backbones.waffleiron_prep import WaffleIronPrep, knn_with_self

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from waffleiron_original import original_from, padded_inputs, unpadded  # noqa: E402

SMALL_GRIDS = ((16, 16), (16, 4), (16, 4))
SMALL_FOV = {"fov_min": (-20.0, -20.0, -4.0), "fov_max": (20.0, 20.0, 6.0), "grid_shapes": SMALL_GRIDS}


def planes_scan(rng: np.random.Generator, n: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Points on a ground plane and two walls, with intensities."""
    k = n // 3
    ground = np.c_[rng.uniform(-18, 18, (k, 2)), rng.normal(-1.7, 0.02, k)]
    wall_x = np.c_[np.full(k, 12.0 + shift), rng.uniform(-18, 18, k), rng.uniform(-1.7, 5, k)]
    wall_y = np.c_[rng.uniform(-18, 18, n - 2 * k), np.full(n - 2 * k, -9.0 - shift), rng.uniform(-1.7, 5, n - 2 * k)]
    points = np.r_[ground, wall_x, wall_y].astype(np.float32)
    return points, rng.uniform(0, 100, n).astype(np.float32)


def small_spec(**overrides: object) -> BackboneSpec:
    torch.manual_seed(0)
    return create_backbone("waffleiron_4_32", **{**SMALL_FOV, **overrides})


def sample(spec: BackboneSpec, seed: int, n: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return spec.prep(*planes_scan(rng, n, shift), rng)


# ------------------------------------------------------------------------------------- checkpoint layout


def _expected_layout(c_in: int, c: int, k: int, depth: int, layernorm: bool) -> list[tuple[str, tuple[int, ...]]]:
    """The original segmenter's state_dict (design note, section 2), in order."""

    def bn(prefix: str, n: int) -> list[tuple[str, tuple[int, ...]]]:
        names = ("weight", "bias", "running_mean", "running_var")
        return [*((f"{prefix}.{name}", (n,)) for name in names), (f"{prefix}.num_batches_tracked", ())]

    def norm(prefix: str) -> list[tuple[str, tuple[int, ...]]]:
        return [(f"{prefix}.weight", (c,)), (f"{prefix}.bias", (c,))] if layernorm else bn(prefix, c)

    keys = [
        *bn("embed.norm", c_in),
        ("embed.conv1.weight", (c, c_in, 1)), ("embed.conv1.bias", (c,)),
        *bn("embed.conv2.0", c_in), ("embed.conv2.1.weight", (c, c_in, 1, 1)),
        *bn("embed.conv2.2", c), ("embed.conv2.4.weight", (c, c, 1, 1)),
        ("embed.final.weight", (c, 2 * c, 1)), ("embed.final.bias", (c,)),
    ]  # fmt: skip
    for d in range(depth):
        p = f"waffleiron.channel_mix.{d}"
        keys += [*norm(f"{p}.norm"), (f"{p}.mlp.0.weight", (c, c, 1)), (f"{p}.mlp.0.bias", (c,)),
                 (f"{p}.mlp.2.weight", (c, c, 1)), (f"{p}.mlp.2.bias", (c,)),
                 (f"{p}.scale.weight", (c, 1, 1))]  # fmt: skip
    for d in range(depth):
        p = f"waffleiron.spatial_mix.{d}"
        keys += [*norm(f"{p}.norm"), (f"{p}.ffn.0.weight", (c, 1, 3, 3)), (f"{p}.ffn.0.bias", (c,)),
                 (f"{p}.ffn.2.weight", (c, 1, 3, 3)), (f"{p}.ffn.2.bias", (c,)),
                 (f"{p}.scale.weight", (c, 1, 1))]  # fmt: skip
    return keys + [("classif.weight", (k, c, 1)), ("classif.bias", (k,))]


@pytest.mark.parametrize("layernorm", [False, True])
def test_state_dict_layout_is_the_originals(layernorm: bool) -> None:
    config = {"in_channels": 5, "channels": 8, "depth": 3, "grid_shapes": SMALL_GRIDS, "layernorm": layernorm}
    model = WaffleIronSegmenter(num_classes=4, **config)
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == _expected_layout(5, 8, 4, 3, layernorm)
    # An original-layout state dict loads strictly into a fresh model.
    WaffleIronSegmenter(num_classes=4, **config).load_state_dict(model.state_dict(), strict=True)


def test_layer_ids_follow_scalr_layer_decay() -> None:
    model = WaffleIronSegmenter(num_classes=4, channels=8, depth=3, grid_shapes=SMALL_GRIDS)
    ids = {name: model.layer_id(name) for name, _ in model.named_parameters()}
    assert model.num_layers == 3
    assert ids["embed.conv2.1.weight"] == 0 and ids["classif.bias"] == 4
    assert ids["waffleiron.channel_mix.0.mlp.0.weight"] == ids["waffleiron.spatial_mix.0.ffn.0.weight"] == 1
    assert ids["waffleiron.spatial_mix.2.scale.weight"] == 3
    with pytest.raises(ValueError, match="not a parameter name"):
        model.layer_id("head.weight")


@pytest.mark.parametrize(
    ("name", "exact", "published"),
    [
        ("waffleiron_48_256", 6_835_732, 6.84e6),
        ("waffleiron_48_384", 15_119_636, 15.1e6),
        ("waffleiron_48_768", 59_435_540, 59.4e6),
    ],
)
def test_parameter_counts_match_the_published_sizes(name: str, exact: int, published: float) -> None:
    with torch.device("meta"):
        model = create_backbone(name).model
    count = sum(p.numel() for p in model.parameters())
    assert count == exact
    assert abs(count - published) / published < 0.01


# --------------------------------------------------------------- agreement with a plain implementation


def reference_forward(model: WaffleIron, feats: torch.Tensor, nbrs: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """The architecture as the design note describes it, channel-first (1, C, N), for one scan."""

    def norm(m: torch.nn.Module, t: torch.Tensor) -> torch.Tensor:
        if isinstance(m, torch.nn.LayerNorm):
            return F.layer_norm(t.transpose(1, -1), m.normalized_shape, m.weight, m.bias, m.eps).transpose(1, -1)
        if m.training:
            m.num_batches_tracked += 1
        return F.batch_norm(t, m.running_mean, m.running_var, m.weight, m.bias, m.training, m.momentum, m.eps)

    e, c2 = model.embed, model.embed.conv2
    x = norm(e.norm, feats.T[None])
    rel = x[:, :, nbrs[:, 1:]] - x.unsqueeze(-1)  # (1, C_in, N, K)
    h = F.conv2d(F.relu(norm(c2[2], F.conv2d(norm(c2[0], rel), c2[1].weight))), c2[4].weight).max(-1).values
    x = F.conv1d(torch.cat([F.conv1d(x, e.conv1.weight, e.conv1.bias), h], 1), e.final.weight, e.final.bias)
    c = x.shape[1]
    for d, (sm, cm) in enumerate(zip(model.waffleiron.spatial_mix, model.waffleiron.channel_mix)):
        (gh, gw), cell = SMALL_GRIDS[d % 3], cells[:, d % 3]
        y = norm(sm.norm, x)
        count = torch.bincount(cell, minlength=gh * gw).to(x.dtype)
        grid = torch.zeros(1, c, gh * gw, dtype=x.dtype).index_add_(2, cell, y / (count[cell] + 1e-6))
        grid = F.conv2d(grid.view(1, c, gh, gw), sm.ffn[0].weight, sm.ffn[0].bias, padding=1, groups=c)
        grid = F.conv2d(F.relu(grid), sm.ffn[2].weight, sm.ffn[2].bias, padding=1, groups=c)
        x = x + F.conv1d(grid.flatten(2), sm.scale.weight, groups=c)[:, :, cell]
        y = F.relu(F.conv1d(norm(cm.norm, x), cm.mlp[0].weight, cm.mlp[0].bias))
        y = F.conv1d(y, cm.mlp[2].weight, cm.mlp[2].bias)
        x = x + F.conv1d(y, cm.scale.weight, groups=c)
    return x[0].T


@pytest.mark.parametrize("layernorm", [False, True])
@pytest.mark.parametrize("train", [True, False])
def test_matches_plain_implementation(layernorm: bool, train: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if train:  # and in evaluation every chunked loop (neighbour rows, grid channels) runs whole
        monkeypatch.setattr(wi_ops, "_chunk_len", lambda total, bytes_per_item, device: max(1, total // 3 + 1))
    monkeypatch.setattr(wi, "_STORE_GRIDS_UP_TO", 0.0)  # these grids are small: recompute them anyway
    spec = small_spec(layernorm=layernorm)
    batch = spec.collate([sample(spec, 0, 600)])
    model = spec.model.double().train(train)
    for d, block in enumerate(model.waffleiron.spatial_mix):  # both grid paths: recomputed and stored
        block.recompute_grid = d % 2 == 0
    for m in model.modules():  # non-trivial running stats for eval mode
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    ref = copy.deepcopy(model)
    feats = batch["feats"].double()
    out = model({**batch, "feats": feats})
    expected = reference_forward(ref, feats, batch["neighbors"], batch["cells"])
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-7, atol=1e-9, msg=lambda m: f"{name}: {m}")
    for (name, b), q in zip(model.named_buffers(), ref.buffers()):
        torch.testing.assert_close(b, q, rtol=1e-9, atol=1e-12, msg=lambda m: f"{name}: {m}")


# ------------------------------------------- the original's order of operations, as the benchmark runs it


def _randomise_running_stats(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)


@pytest.mark.parametrize("layernorm", [False, True])
@pytest.mark.parametrize("train", [True, False])
def test_original_order_equals_ours(layernorm: bool, train: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outputs, gradients and running statistics of benchmarks/waffleiron_original.py are ours."""
    # The original's scatter_reduce mean is sum / count; ours sum * 1 / (count + 1e-6): equal without the eps.
    monkeypatch.setattr(wi_ops, "_CELL_EPS", 0.0)
    spec = small_spec(layernorm=layernorm)
    batch = spec.collate([sample(spec, 0, 600)])
    torch.manual_seed(0)
    ours = WaffleIronSegmenter(num_classes=3, channels=16, depth=4, grid_shapes=SMALL_GRIDS, layernorm=layernorm)
    ours = ours.double().train(train)
    _randomise_running_stats(ours)
    original = original_from(ours)
    assert original.training == train and next(original.parameters()).dtype == torch.float64
    feats = batch["feats"].double()
    out = ours({**batch, "feats": feats})
    expected = unpadded(original(padded_inputs({**batch, "feats": feats}, SMALL_GRIDS)), batch)
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    theirs = dict(original.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, theirs[name].grad, rtol=1e-7, atol=1e-9, msg=lambda m: f"{name}: {m}")
    theirs = dict(original.named_buffers())
    for name, b in ours.named_buffers():
        torch.testing.assert_close(b, theirs[name], rtol=1e-9, atol=1e-12, msg=lambda m: f"{name}: {m}")


def test_original_order_agrees_in_float32_with_the_cell_eps() -> None:
    spec = small_spec()
    batch = spec.collate([sample(spec, 1, 800)])
    ours = spec.model.train()
    original = original_from(ours)
    torch.testing.assert_close(ours(batch), unpadded(original(padded_inputs(batch, SMALL_GRIDS)), batch),
                               rtol=1e-4, atol=1e-4)  # fmt: skip


def test_original_order_pads_a_batch_as_the_original_collate() -> None:
    """Padding points sit in cell 0 with neighbour N - 1; in eval the largest scan keeps its own outputs."""
    spec = small_spec()
    a, b = sample(spec, 1, 900), sample(spec, 2, 500, shift=1.0)
    model = spec.model.eval()
    _randomise_running_stats(model)
    original = original_from(model)
    batch = spec.collate([a, b])
    inputs = padded_inputs(batch, SMALL_GRIDS)
    m, n = len(a["kept"]), len(b["kept"])
    assert inputs["feats"].shape == (2, 5, m) and inputs["neighbors"].shape == (2, 17, m)
    assert bool((inputs["neighbors"][1, :, n:] == m - 1).all()) and bool((inputs["cell_ind"][1, :, n:] == 0).all())
    with torch.no_grad():
        alone = model(spec.collate([a]))
        both = unpadded(original(inputs), batch)
    torch.testing.assert_close(both[:m], alone, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------ batch invariance


def test_a_scan_in_a_batch_gives_its_alone_outputs_in_eval() -> None:
    spec = small_spec()
    a, b = sample(spec, 1, 500), sample(spec, 2, 900, shift=1.0)
    model = spec.model.eval()
    with torch.no_grad():
        alone = model(spec.collate([a]))
        both = model(spec.collate([a, b]))
        swapped = model(spec.collate([b, a]))
    m = len(a["kept"])
    torch.testing.assert_close(both[:m], alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(swapped[-m:], alone, rtol=1e-5, atol=1e-5)


def test_batch_statistics_come_from_real_points_only() -> None:
    spec = small_spec()
    a = sample(spec, 1, 500)
    alone_model, pair_model = spec.model.train(), copy.deepcopy(spec.model).train()
    alone = alone_model(spec.collate([a]))
    # The same scan twice has the same batch statistics as once: outputs and running stats must agree.
    pair = pair_model(spec.collate([a, a]))
    m = len(a["kept"])
    torch.testing.assert_close(pair[:m], alone, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(pair[m:], alone, rtol=1e-4, atol=1e-4)
    for (name, x), y in zip(alone_model.named_buffers(), pair_model.buffers()):
        # running_var uses the unbiased variance, n/(n-1), which differs between n and 2n points.
        tol = 2.0 / m if name.endswith("running_var") else 1e-5
        torch.testing.assert_close(x, y, rtol=tol, atol=1e-5, msg=lambda msg: f"{name}: {msg}")


def test_running_stats_equal_statistics_of_the_batch_points() -> None:
    spec = small_spec()
    a, b = sample(spec, 1, 500), sample(spec, 2, 900, shift=1.0)
    batch = spec.collate([a, b])
    spec.model.train()(batch)
    feats = batch["feats"].double()
    norm = spec.model.embed.norm
    torch.testing.assert_close(norm.running_mean.double(), 0.1 * feats.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(norm.running_var.double(), 0.9 + 0.1 * feats.var(0), rtol=1e-5, atol=1e-6)
    assert int(norm.num_batches_tracked) == 1


# ------------------------------------------------------------------------------- training end to end


def test_forward_backward_on_a_small_scene() -> None:
    spec = small_spec(drop_path=0.2)
    samples = [sample(spec, 3, 1500), sample(spec, 4, 800, shift=2.0)]
    batch = spec.collate(samples)
    out = spec.model.train()(batch)
    assert out.shape == (sum(len(s["kept"]) for s in samples), spec.model.out_channels)
    sizes = torch.tensor([len(s["kept"]) for s in samples])
    assert torch.equal(batch["batch_index"], torch.repeat_interleave(torch.arange(2), sizes))
    out.square().mean().backward()
    for name, p in spec.model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_runs_under_autocast() -> None:
    spec = small_spec()
    batch = spec.collate([sample(spec, 3, 800)])
    model = spec.model.train()
    full = model(batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = model(batch)
        half.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    torch.testing.assert_close(half.float(), full, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("layernorm", [False, True])
def test_a_block_keeps_its_three_point_tensors_in_one_allocation(layernorm: bool) -> None:
    # Kept tensors allocated one by one between temporaries fragment the heap (the README's memory table).
    spec = small_spec(layernorm=layernorm)
    batch = spec.collate([sample(spec, 3, 900)])
    model = spec.model.train()
    points = len(batch["kept"])
    storages: dict[int, set[int]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.shape == (points, model.out_channels):
            storages.setdefault(t.untyped_storage().data_ptr(), set()).add(t.storage_offset())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(batch)
    size = points * model.out_channels
    shared = [offsets for offsets in storages.values() if len(offsets) > 1]
    assert shared == [{0, size, 2 * size}] * model.num_layers
    assert len(storages) == model.num_layers + 1  # and the embedding's output
    out.square().mean().backward()  # the version checks of the three tensors must not interfere
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_blocks_take_full_backward_hooks() -> None:
    spec = small_spec()
    model = spec.model.train()
    called = []
    for block in (model.waffleiron.spatial_mix[0], model.waffleiron.channel_mix[0]):
        block.register_full_backward_hook(lambda module, grad_in, grad_out: called.append(type(module).__name__))
    model(spec.collate([sample(spec, 3, 900)])).square().mean().backward()
    assert called == ["ChannelMix", "SpatialMix"]


def test_segmenter_gives_logits_per_kept_point() -> None:
    spec = small_spec()
    torch.manual_seed(0)
    model = WaffleIronSegmenter(num_classes=7, channels=32, depth=4, grid_shapes=SMALL_GRIDS)
    batch = spec.collate([sample(spec, 5, 700)])
    assert model(batch).shape == (len(batch["kept"]), 7)
    assert model.out_channels == 7


def test_checkpointing_gives_the_same_gradients() -> None:
    spec = small_spec(drop_path=0.3)
    batch = spec.collate([sample(spec, 6, 800), sample(spec, 7, 600, shift=1.5)])
    plain = spec.model.train()
    ckpt = copy.deepcopy(plain)
    ckpt.waffleiron.checkpointing = True
    for m in ckpt.waffleiron.spatial_mix:
        m.recompute_grid = False
    grads = []
    for model in (plain, ckpt):
        torch.manual_seed(1)  # same DropPath draws
        model(batch).square().mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7, msg=lambda m: f"{name}: {m}")
    for (name, x), y in zip(plain.named_buffers(), ckpt.buffers()):  # recomputation must not count twice
        torch.testing.assert_close(y, x, msg=lambda m: f"{name}: {m}")


# --------------------------------------------------------------------------------------- preprocessing


def test_preprocessing_outputs() -> None:
    prep = WaffleIronPrep(**SMALL_FOV, voxel_size=0.5, num_neighbors=4, intensity_mean=50.0, intensity_std=10.0)
    rng = np.random.default_rng(8)
    points, intensity = planes_scan(rng, 3000)
    points = np.r_[points, [[30.0, 0.0, 0.0], [0.0, 0.0, 6.0]]].astype(np.float32)  # outside, on the border
    intensity = np.r_[intensity, [1.0, 1.0]].astype(np.float32)
    out = prep(points, intensity, rng)
    kept, feats, cells, nbrs = out["kept"], out["feats"], out["cells"], out["neighbors"]
    assert kept.dtype == np.int64 and np.all(np.diff(kept) > 0)
    assert len(points) - 2 not in kept and len(points) - 1 not in kept
    voxels = np.floor(points[kept] / 0.5).astype(np.int64)
    assert len(np.unique(voxels, axis=0)) == len(kept) == len(np.unique(np.floor(points[:-2] / 0.5), axis=0))
    np.testing.assert_allclose(feats[:, 1:4], points[kept])
    np.testing.assert_allclose(feats[:, 0], (intensity[kept] - 50.0) / 10.0, rtol=1e-6)
    np.testing.assert_allclose(feats[:, 4], np.linalg.norm(points[kept], axis=1), rtol=1e-6)
    assert nbrs.shape == (len(kept), 5) and np.array_equal(nbrs[:, 0], np.arange(len(kept)))
    assert np.all(cells >= 0) and np.all(cells < np.array([16 * 16, 16 * 4, 16 * 4]))
    # Cell of plane xz (grid 16 x 4 over 40 m x 10 m): row from x, column from z.
    x, z = points[kept, 0], points[kept, 2]
    np.testing.assert_array_equal(cells[:, 1], ((x + 20) // 2.5).astype(int) * 4 + ((z + 4) // 2.5).astype(int))
    # Evaluation keeps the first point of each voxel, training a random one.
    first = prep(points, intensity)["kept"]
    assert np.array_equal(first, prep(points, intensity)["kept"])
    assert not np.array_equal(first, kept)


def test_knn_puts_self_first_with_duplicates_and_tiny_scans() -> None:
    xyz = np.array([[0, 0, 0], [0, 0, 0], [0, 0, 0], [1, 0, 0]], dtype=np.float32)
    nbrs = knn_with_self(xyz, 6)
    assert nbrs.shape == (4, 7)
    assert np.array_equal(nbrs[:, 0], np.arange(4))
    assert np.all(nbrs < 4)


@pytest.mark.parametrize("train", [True, False])
def test_a_scan_with_fewer_points_than_neighbours_runs(train: bool) -> None:
    spec = small_spec()
    points = np.array([[1, 1, 0], [1, 2, 0], [3, 1, 1], [-2, 4, 0.5], [5, -5, 2]], dtype=np.float32)
    batch = spec.collate([spec.prep(points, np.ones(5, np.float32))])
    assert batch["neighbors"].shape == (5, 17)
    out = spec.model.train(train)(batch)
    assert out.shape == (5, 32) and torch.isfinite(out).all()


def test_collate_offsets_neighbours_and_cells() -> None:
    spec = small_spec()
    a, b = sample(spec, 1, 300), sample(spec, 2, 400)
    batch = spec.collate([a, b])
    m = len(a["kept"])
    assert batch["offsets"].tolist() == [0, m, m + len(b["kept"])]
    assert torch.equal(batch["neighbors"][m:], torch.from_numpy(b["neighbors"]) + m)
    assert torch.equal(batch["cells"][m:], torch.from_numpy(b["cells"]) + torch.tensor([256, 64, 64]))
    assert torch.equal(batch["kept"], torch.from_numpy(np.r_[a["kept"], b["kept"]]))


# -------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fov_min": (-10, -10, 3), "fov_max": (10, 10, 3)}, "empty along z"),
        ({"grid_shapes": ((16, 0), (16, 4), (16, 4))}, "positive integers"),
        ({"grid_shapes": ((16, 2.5), (16, 4), (16, 4))}, "positive integers"),
        ({"grid_shapes": ((16, 16, 1), (16, 4), (16, 4))}, "positive integers"),
        ({"grid_shapes": ((16, 16), (16, 4))}, "one projected axis"),
        ({"voxel_size": 0.0}, "voxel_size must be positive"),
        ({"intensity_std": 0.0}, "intensity_std must be positive"),
    ],
)
def test_bad_grid_or_fov_is_a_config_error(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_backbone("waffleiron_4_32", **options)


def test_scan_outside_the_fov_is_a_data_error() -> None:
    prep = WaffleIronPrep(**SMALL_FOV)
    points = np.array([[50.0, 0.0, 0.0], [0.0, 0.0, 9.0]], dtype=np.float32)
    with pytest.raises(DataError, match=r"fov_min=\[-20.0, -20.0, -4.0\], fov_max=\[20.0, 20.0, 6.0\]"):
        prep(points, np.zeros(2, np.float32))


def test_registry_errors_name_the_choices() -> None:
    assert {"waffleiron_48_256", "waffleiron_48_384", "waffleiron_48_768", "waffleiron_4_32"} <= set(list_backbones())
    with pytest.raises(ConfigError, match="known backbones: .*waffleiron_48_768"):
        create_backbone("waffleiron_48_1024")
    with pytest.raises(ConfigError, match="has no option \\['grid'\\]; options: .*grid_shapes"):
        create_backbone("waffleiron_4_32", grid=(1, 1))
