"""Every method and head works with every backbone: one training step of the segmentation module for every
registered preset, where the only change is the backbone's name (and, for full-size presets, a coarse grid so
the step stays small on a CPU; the network itself is the preset's)."""

import numpy as np
import pytest
import torch

from lidarssl.data.datasets import open_dataset
from lidarssl.data.loader import LabelBuilder, ScanCollate, ScanSamples
from lidarssl.data.transforms import PointAugment
from lidarssl.downstream.segmentation import SegmentationModule
from lidarssl.models.backbones import create_backbone, list_backbones

_COARSE = {"range_min": (-25.6, -25.6, -3.2), "range_max": (25.6, 25.6, 3.2)}
#: Coarse-grid overrides by preset family; a new family must be added here (the test says so).
SMALL_GRIDS = {
    "waffleiron": {"voxel_size": 2.0, "fov_min": (-25.6, -25.6, -4.0), "fov_max": (25.6, 25.6, 4.0),
                   "grid_shapes": ((16, 16), (16, 4), (16, 4))},
    "res16unet": {"voxel_size": (0.4, 4.0, 0.4), "range_min": (0.0, -180.0, -3.2), "range_max": (25.6, 180.0, 3.2)},
    "minkunet": {"voxel_size": (0.4, 0.4, 0.4), **_COARSE},
    "spvcnn": {"voxel_size": (0.4, 0.4, 0.4), **_COARSE},
    "voxelnet": {"voxel_size": (0.4, 0.4, 0.2), **_COARSE},
}


def small_grid(name: str) -> dict:
    family = next((f for f in SMALL_GRIDS if name.startswith(f)), None)
    if family is None:
        pytest.fail(f"backbone '{name}' of a new family: add its coarse-grid overrides to SMALL_GRIDS")
    return {} if name.endswith(("_tiny", "_4_32")) else SMALL_GRIDS[family]


@pytest.mark.parametrize("name", list_backbones())
def test_one_training_step_with_each_backbone(name: str, tiny_world, one_thread):
    torch.manual_seed(0)
    spec = create_backbone(name, **small_grid(name))
    dataset = open_dataset(tiny_world, split="train")
    samples = ScanSamples(dataset, spec.prep, [LabelBuilder()], seed=0, augment=PointAugment())
    batch = ScanCollate(spec.prep, samples.builders)([samples[(0, 0)], samples[(1, 0)]])
    module = SegmentationModule(spec.model, dataset.class_map.classes)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in spec.model.parameters()]
    for _ in range(2):  # the head starts at zero: the first step moves only the head, the second the backbone too
        optimizer.zero_grad()
        logits = module(batch)
        assert logits.shape == (len(batch["kept"]), dataset.class_map.num_classes)
        loss = module._loss(logits, batch["labels"])
        loss.backward()
        optimizer.step()
    assert np.isfinite(loss.item())
    grads = [p.grad for p in spec.model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)  # the loss reaches the backbone
    assert any(not torch.equal(a, p) for a, p in zip(before, spec.model.parameters()))
