"""Every method and head works with every backbone: one training step of the segmentation module per preset,
where the only change is the backbone's name."""

import numpy as np
import pytest
import torch

from lidarssl.data.stats import open_dataset
from lidarssl.data.transforms import PointAugment
from lidarssl.downstream.data import SegmentationCollate, SegmentationSamples
from lidarssl.downstream.segmentation import SegmentationModule
from lidarssl.models.backbones import create_backbone


@pytest.mark.parametrize("name", ["waffleiron_4_32", "minkunet_tiny", "spvcnn_tiny", "voxelnet_tiny"])
def test_one_training_step_with_each_backbone(name: str, tiny_world):
    torch.manual_seed(0)
    spec = create_backbone(name)
    dataset = open_dataset(tiny_world, split="train")
    samples = SegmentationSamples(dataset, spec.prep, train=True, seed=0, augment=PointAugment())
    batch = SegmentationCollate(spec.prep)([samples[(0, 0)], samples[(1, 0)]])
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
