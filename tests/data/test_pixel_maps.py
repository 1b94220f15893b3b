"""Per-pixel maps travel through pairing as one generic channel: cropped, resized and flipped with the images."""

from pathlib import Path

import numpy as np
import pytest
import torch

from lidarssl.data.datasets import open_dataset
from lidarssl.data.loader import ScanCollate, ScanSamples
from lidarssl.data.pairing import PairBuilder, PairingConfig, PixelMap, pair_views
from lidarssl.data.scan import Scan
from lidarssl.errors import DataError
from lidarssl.models.backbones import create_backbone

SMALL_WI = {"fov_min": [-40, -40, -4], "fov_max": [40, 40, 4]}


class ColumnBuckets:
    """A map whose value is each pixel's column // 8 in the original image: easy to check after augmentation."""

    def get(self, scan: Scan, camera: int) -> np.ndarray:
        H, W = scan.cameras[camera].hw
        return np.broadcast_to((np.arange(W) // 8).astype(np.uint16), (H, W)).copy()


def test_a_named_map_follows_crop_resize_and_flip(camera_world: Path):
    scan = open_dataset(camera_world, split="all")[0]
    maps = {"column": [ColumnBuckets().get(scan, c) for c in range(len(scan.cameras))]}
    views = pair_views(scan, PairingConfig(crop_size=(48, 80), flip=1.0, crop_min_pairs=16),
                       rng=np.random.default_rng(3), maps=maps)
    plain = pair_views(scan, PairingConfig())
    original = {(int(v), int(p)): u for p, v, u in zip(plain.point, plain.view, plain.uv[:, 0])}
    got = views.maps["column"][views.view, *views.pixels.T]
    expected = np.array([original[(int(v), int(p))] // 8 for p, v in zip(views.point, views.view)])
    assert views.maps["column"].shape == views.images.shape[:3]
    assert len(got) > 50 and np.mean(got == expected) > 0.95  # nearest resampling can move a boundary by a pixel
    assert views.superpixels is None and views.classes is None


def test_a_map_per_camera_is_required(camera_world: Path):
    scan = open_dataset(camera_world, split="all")[0]
    with pytest.raises(DataError, match=f"1 'column' maps for {len(scan.cameras)} cameras"):
        pair_views(scan, PairingConfig(), maps={"column": [ColumnBuckets().get(scan, 0)]})


def test_pair_builder_carries_a_pixel_map_into_the_batch(camera_world: Path):
    spec = create_backbone("waffleiron_4_32", **SMALL_WI)
    builders = [PairBuilder(PairingConfig(resize=(45, 80)), maps=[PixelMap("superpixels", ColumnBuckets())])]
    samples = ScanSamples(open_dataset(camera_world, split="all"), spec.prep, builders, seed=5)
    sample = samples[(0, 0)]
    assert sample["superpixels"].dtype == np.uint16
    batch = ScanCollate(spec.prep, builders)([samples[(i, 0)] for i in range(2)])
    maps = batch["superpixels"]
    assert maps.dtype == torch.int32 and maps.shape == batch["images"].shape[:3]
    # whole images resized from 160 to 80 columns: output column c comes from input column 2c (+1)
    assert torch.equal(maps[:, 0, :], (torch.arange(80) * 2 // 8).expand(len(maps), 80).int())
