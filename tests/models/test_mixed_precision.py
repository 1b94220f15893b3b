"""bf16 autocast (Lightning's ``trainer.precision=bf16-mixed``) on every backbone family: one training step on
CPU gives a finite loss close to fp32's and gradients pointing the same way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lidarssl.models.backbones import create_backbone

FAMILIES = ["waffleiron_4_32", "minkunet_tiny", "spvcnn_tiny", "voxelnet_tiny"]


def _step(model: torch.nn.Module, batch: dict, target: torch.Tensor, bf16: bool) -> tuple[float, torch.Tensor, torch.dtype]:
    model.zero_grad()
    torch.manual_seed(5)  # the same dropout draws in both precisions
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(batch)
        loss = (out.float() - target).square().mean()
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    return float(loss), grads, out.dtype


@pytest.mark.parametrize("name", FAMILIES)
def test_a_bf16_step_matches_fp32(name: str, one_thread):
    torch.manual_seed(0)
    spec = create_backbone(name)
    rng = np.random.default_rng(0)
    points = rng.uniform(-12, 12, (3000, 3)).astype(np.float32)
    points[:, 2] = rng.uniform(-1.5, 2, 3000)
    batch = spec.collate([spec.prep(points, rng.uniform(0, 1, 3000).astype(np.float32), rng) for _ in range(2)])
    model = spec.model.train()
    target = torch.randn(len(batch["kept"]), model.out_channels, generator=torch.Generator().manual_seed(1))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    loss32, grad32, _ = _step(model, batch, target, bf16=False)
    model.load_state_dict(state)  # BatchNorm statistics as before the fp32 step
    loss16, grad16, dtype = _step(model, batch, target, bf16=True)
    assert np.isfinite(loss16) and torch.isfinite(grad16).all()
    assert loss16 == pytest.approx(loss32, rel=1e-2)
    # bf16 keeps 8 mantissa bits: rounding the activations between layers alone moves these gradients by 1-20 %
    # (measured: cosine 0.983 to 0.99999 with fp32); a broken cast or scatter leaves them unrelated
    assert torch.nn.functional.cosine_similarity(grad16, grad32, dim=0) > 0.95
    if name in ("minkunet_tiny", "spvcnn_tiny"):  # the sparse layers ran in bf16 (the others end in a BatchNorm)
        assert dtype == torch.bfloat16


def test_bf16_mixed_precision_through_the_trainer(tiny_world: Path, tmp_path: Path, one_thread):
    from lidarssl.config import SegmentationConfig, load_config
    from lidarssl.downstream.train import run_segmentation

    config = load_config(SegmentationConfig, None, [
        f"data.root={tiny_world}", f"out={tmp_path}", "data.num_workers=0", "trainer.batch_size=2",
        "trainer.progress_bar=false", "trainer.precision=bf16-mixed", "trainer.accelerator=cpu", "optim.epochs=1",
        "backbone.name=minkunet_tiny"])
    result = run_segmentation(config, "scratch")
    assert 0 < result.miou <= 100
    assert "bf16-mixed" in (tmp_path / "config.yaml").read_text()
