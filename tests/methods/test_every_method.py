"""Every registered pretext method runs one training step with a small backbone: the batch holds only keys of
the batch schema, every loss term is finite, and the step changes the backbone's weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lidarssl.batch import batch_keys
from lidarssl.config import load_config
from lidarssl.data.datasets import open_dataset
from lidarssl.data.loader import ScanCollate, ScanSamples
from lidarssl.methods import list_methods
from lidarssl.methods.config import PretrainConfig
from lidarssl.methods.pretrain import build_method

TINY_BACKBONE = ["backbone.name=waffleiron_4_32", "backbone.options.voxel_size=0.4",
                 "backbone.options.grid_shapes=[[32,32],[32,8],[32,8]]"]
#: Small settings of each method (recipe to start from, overrides); a new method must be added here.
TINY = {
    "ppkt": (None, ["teacher.name=resnet50", "pairing.crop_size=[48,80]", "method.options.max_pairs=512"]),
    "slidr": (None, ["teacher.name=resnet50", "pairing.crop_size=[48,80]", "method.options.superpixels=slic30_fast"]),
    "stslidr": (None, ["teacher.name=resnet50", "pairing.crop_size=[48,80]", "method.options.superpixels=slic30_fast"]),
    "scalr": (None, ["teacher.name=dino_vits16", "pairing.resize=[48,96]", "pairing.cameras=one"]),
    "also": ("also-wi-synthetic", ["method.options={queries: 128, max_neighbors: 4}"]),
    "nclr": ("nclr-wi-synthetic", ["method.options={points_per_view: 256, pairs_per_scan: 64, fused_pairs_per_scan: 64, "
                                   "keypoints: 16, pose_start_epoch: 0}"]),
    "pointcontrast": ("pointcontrast-wi-synthetic", ["method.options={npos: 256, match_radius: 0.6}"]),
    "depthcontrast": ("depthcontrast-wi-synthetic", ["method.options={queue: 8, dim: 16, hidden: 16}"]),
}


@pytest.mark.parametrize("method", list_methods())
def test_one_training_step_with_each_method(method: str, camera_world: Path, tmp_path: Path, one_thread):
    if method not in TINY:
        pytest.fail(f"method '{method}' is registered but has no small settings in TINY")
    recipe, extra = TINY[method]
    config = load_config(PretrainConfig, recipe, [f"data.root={camera_world}", f"out={tmp_path}", f"method.name={method}",
                                                  "data.num_workers=0", *TINY_BACKBONE, *extra])
    torch.manual_seed(0)
    module, spec, builders = build_method(config)
    samples = ScanSamples(open_dataset(camera_world, split="train"), spec.prep, builders, seed=0,
                          augment=config.augment.point_augment())
    batch = ScanCollate(spec.prep, builders)([samples[(0, 0)], samples[(1, 0)]])
    assert set(batch) <= batch_keys(), f"keys outside lidarssl.batch: {sorted(set(batch) - batch_keys())}"
    optimizer = torch.optim.SGD([p for _, p in module.trainable()], lr=1e-2)
    before = [p.detach().clone() for p in spec.model.parameters()]
    terms = module.losses(batch)
    assert terms and all(torch.isfinite(t) for t in terms.values()), terms
    torch.stack([t.float() for t in terms.values()]).sum().backward()
    optimizer.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, spec.model.parameters()))
