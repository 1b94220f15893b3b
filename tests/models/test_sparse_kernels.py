"""spconv's own convolution kernels and ours over the same rulebooks and weights give the same outputs
(the CPU forward here; forward and backward on CUDA where a GPU is present)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from lidarssl.errors import ConfigError
from lidarssl.models.backbones import create_backbone
from lidarssl.models.sparse import SparseTensor
from lidarssl.models.sparse import functional as SF

SHAPE = (12, 14, 13)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="spconv's CUDA kernels need a GPU; none is present")


def sites(kernels: str, device: str = "cpu", seed: int = 0) -> SparseTensor:
    g = torch.Generator().manual_seed(seed)
    coords = (torch.rand(2, *SHAPE, generator=g) < 0.2).nonzero().int()
    feats = torch.randn(len(coords), 5, generator=g)
    return SparseTensor(feats.to(device), coords.to(device), SHAPE, 2, kernels=kernels)


def layers(x: SparseTensor, w: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """A submanifold conv (dilated too), a strided conv and its transpose: every rulebook kind."""
    a = SF.conv3d(x, w["subm"], subm=True)
    b = SF.conv3d(a, w["subm2"], dilation=2, subm=True)
    c = SF.conv3d(b, w["down"], stride=2, padding=1, indice_key="d")
    d = SF.conv_transpose3d(c, w["up"], indice_key="d")
    return [a.features, b.features, c.features, d.features]


def weights(device: str = "cpu") -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    shapes = {"subm": (7, 3, 3, 3, 5), "subm2": (6, 3, 1, 3, 7), "down": (8, 3, 3, 3, 6), "up": (4, 3, 3, 3, 8)}
    return {k: torch.randn(s, generator=g).to(device) for k, s in shapes.items()}


def test_spconv_kernels_equal_ours_on_cpu(one_thread):
    w = weights()
    with torch.no_grad():
        ours, theirs = layers(sites("lidarssl"), w), layers(sites("spconv"), w)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["minkunet_tiny", "spvcnn_tiny", "voxelnet_tiny"])
def test_backbones_give_the_same_features_with_either_kernels(name: str, one_thread):
    torch.manual_seed(0)
    ours = create_backbone(name, kernels="lidarssl")
    theirs = create_backbone(name, kernels="spconv")
    theirs.model.load_state_dict(ours.model.state_dict())  # the same weights, in the layout both read
    rng = np.random.default_rng(0)
    points = rng.uniform(-12, 12, (3000, 3)).astype(np.float32)
    points[:, 2] = rng.uniform(-1.5, 2, 3000)
    batch = ours.collate([ours.prep(points, rng.uniform(0, 1, 3000).astype(np.float32), rng)])
    with torch.no_grad():
        a, b = ours.model.eval()(batch), theirs.model.eval()(batch)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_auto_runs_ours_on_cpu(monkeypatch: pytest.MonkeyPatch):
    def refuse(*args):
        raise AssertionError("spconv's kernels ran on CPU under kernels='auto'")

    monkeypatch.setattr(SF, "_spconv_conv", refuse)
    x = sites("auto")
    x = replace(x, features=x.features.requires_grad_(True))
    out = layers(x, weights())
    sum(o.sum() for o in out).backward()  # ours has a CPU backward
    assert torch.isfinite(x.features.grad).all()


def test_spconv_kernels_refuse_training_on_cpu_and_bad_names():
    x = sites("spconv")
    w = torch.randn(4, 3, 3, 3, 5, requires_grad=True)
    with pytest.raises(ValueError, match="kernels='spconv' on CPU: spconv's CPU build has no backward pass"):
        SF.conv3d(x, w, subm=True)
    with pytest.raises(ValueError, match="sparse kernels must be one of auto, lidarssl, spconv, got 'cuda'"):
        sites("cuda")
    with pytest.raises(ConfigError, match="backbone option kernels must be one of auto, lidarssl, spconv, got 'fast'"):
        create_backbone("minkunet_tiny", kernels="fast")


@CUDA
def test_spconv_kernels_forward_and_backward_on_cuda():
    w = weights("cuda")
    grads = []
    outs = []
    for kernels in ("lidarssl", "auto"):  # auto: spconv's kernels on CUDA
        x = sites(kernels, "cuda")
        x = replace(x, features=x.features.requires_grad_(True))
        ws = {k: v.clone().requires_grad_(True) for k, v in w.items()}
        out = layers(x, ws)
        g = torch.Generator(device="cuda").manual_seed(3)
        sum((o * torch.randn(o.shape, generator=g, device="cuda")).sum() for o in out).backward()
        outs.append(out)
        grads.append([x.features.grad, *(ws[k].grad for k in sorted(ws))])
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)  # TF32 may differ in the last bits
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)
