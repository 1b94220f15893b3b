"""The batch schema and the invariants of collated batches: pairs still project onto their pixels after
augmentation and batching, feature maps are read where the pixels are, superpixels pool like a dense mean."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lidarssl.batch import COMMON_KEYS, Batch, batch_keys
from lidarssl.data.datasets import open_dataset
from lidarssl.data.loader import LabelBuilder, ScanCollate, ScanSamples
from lidarssl.data.pairing import PairBuilder, PairingConfig
from lidarssl.data.scan import Scan
from lidarssl.data.transforms import PointAugment
from lidarssl.methods.pair_losses import superpixel_pool
from lidarssl.methods.image import sample_maps
from lidarssl.models.backbones import create_backbone

#: WaffleIron's input features hold each row's augmented xyz in columns 1:4, which is what the pairs refer to.
SMALL_WI = {"voxel_size": 0.3, "fov_min": (-60, -60, -6), "fov_max": (60, 60, 6), "grid_shapes": ((32, 32), (32, 8), (32, 8))}
AUGMENT = PointAugment(rotate=True, flip=True, scale=(0.9, 1.1), translate=(2.0, 4.0))


def test_schema_lists_every_key_once_with_its_documentation():
    import lidarssl.batch as module

    keys = batch_keys()
    assert set(COMMON_KEYS) <= keys and len(keys) == len(Batch.__annotations__)
    table = module.__doc__
    for key in keys:  # each key is a row of the module's table
        assert f"\n{key} " in table, key


class _Scans:
    """A dataset of given scans."""

    def __init__(self, scans: list[Scan]) -> None:
        self.scans = scans

    def __len__(self) -> int:
        return len(self.scans)

    def __getitem__(self, index: int) -> Scan:
        return self.scans[index]


def _check_pairs_project(batch: Batch) -> int:
    """Every pair's row, projected through its view's K and extrinsic, lands on its pair_uv; returns pairs."""
    rows, views, uv = batch["pair_row"], batch["pair_view"], batch["pair_uv"].double()
    xyz = batch["feats"][rows, 1:4].double()  # augmented xyz of the paired rows
    T, K = batch["lidar_to_cam"][views].double(), batch["K"][views].double()
    cam = torch.einsum("pij,pj->pi", T[:, :3, :3], xyz) + T[:, :3, 3]
    hom = torch.einsum("pij,pj->pi", K, cam)
    assert torch.all(cam[:, 2] > 0)
    torch.testing.assert_close(hom[:, :2] / hom[:, 2:], uv, atol=2e-3, rtol=0)
    # a pair's view belongs to the scan of its row
    assert torch.equal(batch["view_batch"][views], batch["batch_index"][rows])
    H, W = batch["images"].shape[1:3]
    assert uv[:, 0].min() >= 0 and uv[:, 0].max() <= W and uv[:, 1].min() >= 0 and uv[:, 1].max() <= H
    return len(rows)


@pytest.mark.parametrize("pairing", [{"crop_size": (48, 80), "flip": 0.5}, {"resize": (45, 80), "cameras": "one"}])
def test_pairs_project_onto_their_pixels_after_augmentation_and_collate(camera_world: Path, pairing: dict):
    spec = create_backbone("waffleiron_4_32", **SMALL_WI)
    builders = [PairBuilder(PairingConfig(crop_min_pairs=16, **pairing))]
    samples = ScanSamples(open_dataset(camera_world, split="all"), spec.prep, builders, seed=5, augment=AUGMENT)
    batch = ScanCollate(spec.prep, builders)([samples[(i, 1)] for i in range(len(samples))])
    assert set(batch) <= batch_keys()
    assert _check_pairs_project(batch) > 100
    assert int(batch["pair_row"].max()) < int(batch["offsets"][-1])


def test_pairs_project_on_the_real_keyframe_after_collate(nuscenes_keyframe: Scan):
    spec = create_backbone("waffleiron_4_32", **SMALL_WI)
    builders = [PairBuilder(PairingConfig(crop_size=(224, 416), flip=0.5))]
    samples = ScanSamples(_Scans([nuscenes_keyframe, nuscenes_keyframe]), spec.prep, builders, seed=2, augment=AUGMENT)
    batch = ScanCollate(spec.prep, builders)([samples[(0, 0)], samples[(1, 0)]])
    assert _check_pairs_project(batch) > 2000
    assert not torch.equal(batch["feats"][batch["batch_index"] == 0, 1:4][:10],
                           batch["feats"][batch["batch_index"] == 1, 1:4][:10])  # two different augmentations


def test_label_fields_index_the_batch(tiny_world: Path):
    spec = create_backbone("waffleiron_4_32", **SMALL_WI)
    dataset = open_dataset(tiny_world, split="val")
    samples = ScanSamples(dataset, spec.prep, [LabelBuilder()], train=False)
    batch = ScanCollate(spec.prep, samples.builders)([samples[0], samples[1]])
    scans = [dataset[0], dataset[1]]
    assert len(batch["point_labels"]) == sum(len(s) for s in scans)
    # each kept point is its own nearest kept point, in batch rows
    offsets = batch["offsets"]
    for b, scan in enumerate(scans):
        start = sum(len(s) for s in scans[:b])
        kept = batch["kept"][offsets[b]:offsets[b + 1]]
        assert torch.equal(batch["nearest"][start + kept], torch.arange(int(offsets[b]), int(offsets[b + 1])))
        assert torch.equal(batch["labels"][offsets[b]:offsets[b + 1]], torch.from_numpy(scan.labels[kept.numpy()]).long())


def test_sample_maps_equals_upsampling_then_reading_the_pixel():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 5, 7, 9, generator=g)
    H, W = 28, 45
    view = torch.randint(0, 3, (400,), generator=g)
    rows, cols = torch.randint(0, H, (400,), generator=g), torch.randint(0, W, (400,), generator=g)
    uv = torch.stack([cols + 0.5, rows + 0.5], 1).float()  # pixel centres
    up = F.interpolate(maps, size=(H, W), mode="bilinear", align_corners=False)
    torch.testing.assert_close(sample_maps(maps, view, uv, (H, W)), up[view, :, rows, cols], atol=1e-5, rtol=0)
    # at the maps' own resolution a pixel centre reads that pixel exactly
    same = sample_maps(up, view, uv, (H, W))
    torch.testing.assert_close(same, up[view, :, rows, cols], atol=1e-6, rtol=0)


def test_superpixel_pool_equals_a_dense_mean():
    g = torch.Generator().manual_seed(1)
    features = torch.randn(500, 8, generator=g)
    segment = torch.randint(0, 40, (500,), generator=g) * 3  # sparse ids, some never used
    pooled, counts = superpixel_pool(features, segment, 130)
    onehot = F.one_hot(segment, 130).float()  # (P, S)
    dense = onehot.T @ features / onehot.sum(0).clamp(min=1)[:, None]
    torch.testing.assert_close(pooled, dense, atol=1e-5, rtol=0)
    assert torch.equal(counts, onehot.sum(0).long())
