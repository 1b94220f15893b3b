"""ScaLR's options beyond the original: centred targets (the teacher cache's mean), the MLP head of scalr_plus, and
the semantic teacher's pre-ReLU features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lidarssl.config import load_config
from lidarssl.data.datasets import open_dataset
from lidarssl.data.loader import ScanCollate, ScanSamples
from lidarssl.errors import ConfigError, DataError
from lidarssl.methods.config import PretrainConfig
from lidarssl.methods.pretrain import build_method, prepare_teacher_features, teacher_cache
from lidarssl.models.teachers import create_teacher

TINY = ["backbone.name=waffleiron_4_32", "backbone.options.voxel_size=0.4",
        "backbone.options.grid_shapes=[[32,32],[32,8],[32,8]]"]


def _config(root: Path, out: Path, *extra: str) -> PretrainConfig:
    return load_config(PretrainConfig, None, [
        f"out={out}", f"data.root={root}", "data.num_workers=0", "method.name=scalr", "teacher.name=resnet18_semantic",
        "pairing.resize=[48,96]", *TINY, "trainer.batch_size=2", "trainer.progress_bar=false", *extra])


def _batch(cfg: PretrainConfig):
    torch.manual_seed(0)
    module, spec, builders = build_method(cfg)
    samples = ScanSamples(open_dataset(cfg.data.root, "train"), spec.prep, builders, seed=0)
    return module, ScanCollate(spec.prep, builders)([samples[(0, 0)], samples[(1, 0)]])


def test_centred_targets_subtract_the_cache_mean(camera_world: Path, tmp_path: Path):
    cache = f"data.teacher_cache={tmp_path / 'cache'}"
    plain = _config(camera_world, tmp_path / "a", cache)
    centred = _config(camera_world, tmp_path / "b", cache, "method.options.center_targets=true")
    prepare_teacher_features(plain)
    store = teacher_cache(plain)
    (store.root / "mean.npy").unlink()  # a cache filled by an older lidarssl
    with pytest.raises(DataError, match="mean.npy is missing.*prepare teacher-features"):
        _batch(centred)
    assert prepare_teacher_features(plain) == {"computed": 0, "skipped": 12}  # adds the mean only
    maps = [np.load(p).astype(np.float64) for p in sorted(store.root.rglob("*.npy")) if p.name != "mean.npy"]
    assert len(maps) == 12  # 2 train frames x 6 cameras
    expected = np.concatenate([m.reshape(m.shape[0], -1) for m in maps], axis=1).mean(1)
    np.testing.assert_allclose(store.mean(), expected, rtol=1e-5, atol=1e-6)
    _, a = _batch(plain)
    module, b = _batch(centred)
    np.testing.assert_allclose(b["teacher_maps"].numpy(), a["teacher_maps"].numpy() - expected[None, :, None, None],
                               rtol=1e-3, atol=1e-3)
    assert torch.isfinite(module.losses(b)["distill"])
    with pytest.raises(ConfigError, match="center_targets needs data.teacher_cache"):
        build_method(_config(camera_world, tmp_path / "c", "method.options.center_targets=true"))


def test_mlp_head_of_scalr_plus(camera_world: Path, tmp_path: Path):
    module, batch = _batch(_config(camera_world, tmp_path, "method.options.head_hidden=64"))
    head = module.head
    assert isinstance(head, nn.Sequential) and [type(m) for m in head] == [nn.Linear, nn.ReLU, nn.Linear]
    assert (head[0].in_features, head[0].out_features, head[2].out_features) == (32, 64, 256)
    module.losses(batch)["distill"].backward()
    assert head[0].weight.grad is not None and float(head[0].weight.grad.abs().sum()) > 0
    assert isinstance(_batch(_config(camera_world, tmp_path))[0].head, nn.Linear)  # ScaLR's own head


def test_pre_relu_teacher_features_are_signed():
    torch.manual_seed(0)
    post = create_teacher("resnet18_semantic").eval()
    pre = create_teacher("resnet18_semantic", pre_relu=True).eval()
    pre.load_state_dict(post.state_dict())
    images = torch.randint(0, 256, (2, 3, 48, 96), dtype=torch.uint8)
    with torch.no_grad():
        a, b = post(images), pre(images)
    assert a.shape == b.shape == (2, 256, 6, 12)
    torch.testing.assert_close(b.clamp(min=0), a)  # the same block, only the last ReLU left out
    assert float((b < 0).float().mean()) > 0.1 and float(a.min()) >= 0
