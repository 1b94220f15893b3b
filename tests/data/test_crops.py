"""ScaLR's student input: one camera's frustum, capped at N points around a random seed; evaluation uncropped."""

from pathlib import Path

import numpy as np
import pytest

from lidarssl.config import load_config
from lidarssl.data.crops import InputCrop, cap_points, cuboid_points
from lidarssl.data.datasets import open_dataset
from lidarssl.data.geometry import project
from lidarssl.data.loader import LabelBuilder, ScanCollate, ScanSamples
from lidarssl.data.pairing import PairBuilder, PairingConfig
from lidarssl.errors import DataError
from lidarssl.methods.config import PretrainConfig
from lidarssl.models.backbones import create_backbone


def test_cap_keeps_the_nearest_points_of_a_random_seed():
    points = np.stack([np.arange(100.0), np.zeros(100), np.zeros(100)], 1)
    subset = np.arange(0, 100, 2)
    kept = cap_points(points, subset, 10, np.random.default_rng(0))
    assert len(kept) == 10 and set(kept) <= set(subset)
    assert np.ptp(points[kept, 0]) == 18  # ten consecutive even points: a ball around the seed, not a random draw
    assert np.array_equal(cap_points(points, subset, 500, np.random.default_rng(0)), subset)


def test_cuboid_keeps_a_vertical_box_of_the_drawn_share_of_the_extent():
    """DepthContrast's randomcuboidLidar: each xy side a share in [0.5, 1.0] of the extent, sides within the aspect
    bound, z untouched, the centre redrawn until the box holds more than min_points points."""
    g = np.random.default_rng(0)
    points = np.concatenate([g.uniform([0, 0, -2], [100, 40, 2], (20000, 3))])
    subset = np.arange(len(points))
    for seed in range(20):
        kept = cuboid_points(points, subset, (0.5, 1.0), 0.75, 2000, np.random.default_rng(seed))
        xy = points[kept, :2]
        span = np.ptp(xy, axis=0) / np.array([100.0, 40.0])  # share of the extent kept per axis
        # a box centred on a point of the cloud keeps at least half of its side on each axis, at most the side
        assert np.all(span <= 1.0 + 1e-9) and np.all(span >= 0.25 - 0.01) and len(kept) > 2000
        box = np.all((points[:, :2] >= xy.min(0)) & (points[:, :2] <= xy.max(0)), axis=1)
        assert np.array_equal(np.flatnonzero(box), np.sort(kept))  # every point of the box, nothing else
        assert np.ptp(points[kept, 2]) > 3.9  # no crop in z
    assert len(cuboid_points(points, subset[:0], (0.5, 1.0), 0.75, 10, g)) == 0


def test_scalr_batch_holds_only_frustum_points_at_most_the_cap(camera_world: Path, one_thread):
    cfg = load_config(PretrainConfig, "scalr-wi48x768-mixture")
    assert cfg.crop == InputCrop(frustum=True, max_points=20000, after_voxels=True) and cfg.pairing.cameras == "one"
    dataset = open_dataset(camera_world, split="train")
    spec = create_backbone("waffleiron_4_32", fov_min=[-40, -40, -4], fov_max=[40, 40, 4])
    crop = InputCrop(frustum=True, max_points=300)
    builders = [PairBuilder(PairingConfig(cameras="one"))]
    samples = ScanSamples(dataset, spec.prep, builders, seed=3, crop=crop)
    batch = ScanCollate(spec.prep, builders)([samples[(i, 0)] for i in range(len(dataset))])
    for i in range(len(dataset)):
        sample = samples[(i, 1)]
        scan = dataset[i]
        kept = sample["kept"]
        assert 0 < len(kept) <= 300 < len(scan)
        # every kept point is seen by the one paired camera (no augmentation here: its extrinsic is the scan's)
        paired = next(c for c in scan.cameras if np.allclose(c.lidar_to_cam, sample["lidar_to_cam"][0], atol=1e-5))
        assert len(sample["images"]) == 1
        assert project(scan.points[kept], paired.K, paired.lidar_to_cam, paired.hw, 1.0).valid.all()
    assert len(batch["offsets"]) == len(dataset) + 1
    assert int(batch["offsets"][-1]) <= 300 * len(dataset)


def test_crop_draws_the_camera_that_pairing_uses(camera_world: Path):
    dataset = open_dataset(camera_world, split="train")
    spec = create_backbone("waffleiron_4_32", fov_min=[-40, -40, -4], fov_max=[40, 40, 4])
    samples = ScanSamples(dataset, spec.prep, [PairBuilder(PairingConfig(cameras="all"))], seed=0,
                          crop=InputCrop(frustum=True))
    for epoch in range(3):
        sample = samples[(0, epoch)]
        scan = dataset[0]
        cams = [c for c in scan.cameras
                if project(scan.points[sample["kept"]], c.K, c.lidar_to_cam, c.hw, 1.0).valid.all()]
        assert len(sample["images"]) == 1  # the crop's camera overrides pairing.cameras: all
        assert any(np.allclose(sample["lidar_to_cam"][0], c.lidar_to_cam, atol=1e-5) for c in cams)


def test_evaluation_samples_are_never_cropped(camera_world: Path):
    dataset = open_dataset(camera_world, split="val")
    # a field of view that holds every return: the 50 cropped points may all lie beyond 40 m
    spec = create_backbone("waffleiron_4_32", fov_min=[-150, -150, -10], fov_max=[150, 150, 20])
    crop = InputCrop(max_points=50)
    train = ScanSamples(dataset, spec.prep, [LabelBuilder()], crop=crop)
    val = ScanSamples(dataset, spec.prep, [LabelBuilder()], crop=crop, train=False)
    assert len(train[(0, 0)]["kept"]) <= 50 < len(val[0]["kept"])
    assert len(val[0]["nearest"]) == len(dataset[0])  # every original point is scored


def test_frustum_needs_cameras(tiny_world: Path):
    dataset = open_dataset(tiny_world, split="train")
    spec = create_backbone("waffleiron_4_32", fov_min=[-40, -40, -4], fov_max=[40, 40, 4])
    samples = ScanSamples(dataset, spec.prep, [], crop=InputCrop(frustum=True))
    with pytest.raises(DataError, match="crop.frustum needs camera views; set crop.frustum: false"):
        samples[(0, 0)]


def _duplicated_scan() -> "Scan":
    """600 voxel centres of 0.1 m voxels, each returned 4 times (jitter inside the voxel)."""
    from lidarssl.data.scan import Scan

    rng = np.random.default_rng(0)
    centres = np.stack([rng.integers(-150, 150, 600), rng.integers(-150, 150, 600), rng.integers(-10, 10, 600)], 1)
    centres = np.unique(centres, axis=0) * 0.1 + 0.05
    points = np.repeat(centres, 4, axis=0) + rng.uniform(-0.04, 0.04, (4 * len(centres), 3))
    return Scan(points=points.astype(np.float32), intensity=np.zeros(len(points), np.float32))


@pytest.mark.parametrize("after_voxels", [False, True])
def test_cap_after_voxels_counts_the_points_voxel_subsampling_keeps(after_voxels: bool):
    # ScaLR's pc_dataset.py voxelises (0.1 m) first, then LimitNumPoints caps the voxelised scan
    scan = _duplicated_scan()
    spec = create_backbone("waffleiron_4_32", fov_min=[-20, -20, -4], fov_max=[20, 20, 4])
    crop = InputCrop(max_points=100, after_voxels=after_voxels)
    samples = ScanSamples([scan], spec.prep, [], seed=1, crop=crop)
    kept = samples[(0, 0)]["kept"]
    voxels = {tuple(v) for v in np.floor(scan.points[kept] / 0.1).astype(int)}
    assert len(voxels) == len(kept)  # one point per voxel either way
    if after_voxels:
        assert len(kept) == 100  # the cap counts voxels: exactly max_points survive
    else:
        assert len(kept) <= 100 // 2  # capping the raw returns first leaves about a quarter after voxelising
