"""Sparse-convolution backbones: contract, parameter counts, OpenPCDet names, batching, layer ids, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lidarssl.errors import ConfigError, DataError
from lidarssl.models.backbones import create_backbone
from lidarssl.models.backbones.sparse_prep import sparse_input
from lidarssl.models.backbones.voxelnet import VoxelNet
from lidarssl.models.sparse import functional as SF

TINY = ["minkunet_tiny", "spvcnn_tiny", "voxelnet_tiny"]


def planes_scan(rng: np.random.Generator, n: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    """Points on a ground plane, two walls and a slanted roof, plus a few far outside every test grid."""
    k = n // 4
    ground = np.c_[rng.uniform(-15, 15, (k, 2)), rng.normal(-1.7, 0.02, k)]
    wall_x = np.c_[np.full(k, 8.0), rng.uniform(-10, 10, k), rng.uniform(-1.7, 2.5, k)]
    wall_y = np.c_[rng.uniform(-12, 4, k), np.full(k, -6.0), rng.uniform(-1.7, 2.5, k)]
    u = rng.uniform(0, 1, (n - 3 * k - 5, 2))
    roof = np.c_[-10 + 6 * u[:, 0], 3 + 5 * u[:, 1], 1.0 + 0.5 * u[:, 1]]
    far = rng.uniform(200, 300, (5, 3))
    points = np.r_[ground, wall_x, wall_y, roof, far].astype(np.float32)
    return points, rng.uniform(0, 255, n).astype(np.float32)


def tiny(name: str, **overrides: object):
    torch.manual_seed(0)
    return create_backbone(name, **overrides)


@pytest.mark.parametrize("name", TINY)
def test_forward_backward_one_row_per_kept_point(name: str) -> None:
    spec = tiny(name)
    rng = np.random.default_rng(0)
    scans = [planes_scan(rng, n) for n in (1500, 900)]
    samples = [spec.prep(*s, rng) for s in scans]
    for (points, _), s in zip(scans, samples):
        assert len(s["kept"]) == len(points) - 5  # everything but the far points
    batch = spec.collate(samples)
    out = spec.model.train()(batch)
    assert out.shape == (len(batch["kept"]), spec.model.out_channels)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in spec.model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing}"


@pytest.mark.parametrize("name", TINY)
def test_a_scan_alone_and_in_a_batch_agree_in_eval(name: str) -> None:
    spec = tiny(name)
    rng = np.random.default_rng(1)
    a, b = spec.prep(*planes_scan(rng, 1200)), spec.prep(*planes_scan(rng, 700))
    model = spec.model.eval()
    with torch.no_grad():
        alone = model(spec.collate([a]))
        together = model(spec.collate([b, a]))
    torch.testing.assert_close(together[len(b["kept"]) :], alone, rtol=1e-4, atol=1e-5)


# Full presets: (name, expected parameters, source). Instantiating is parameter allocation only.
FULL = [
    ("res16unet34c", 37.8e6, "SLidR note: Res16UNet34C, about 37.8M"),
    ("minkunet34", 37.8e6, "ALSO note: MinkUNet34 has Res16UNet34C's layout"),
    ("minkunet18", 21.7e6, "SPVNAS paper: MinkUNet 21.7M"),
    ("spvcnn", 21.8e6, "SPVNAS paper: SPVCNN 21.8M"),
]


@pytest.mark.parametrize(("name", "expected", "source"), FULL)
def test_full_preset_parameter_counts(name: str, expected: float, source: str) -> None:
    model = create_backbone(name).model
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - expected) / expected < 0.01, f"{name}: {count} parameters, {source}"
    assert model.out_channels == 96


def _openpcdet_voxelnet_layout(c_in: int) -> list[tuple[str, tuple[int, ...]]]:
    """OpenPCDet VoxelBackBone8x state_dict: SparseSequential indices of (conv, BatchNorm1d, ReLU)."""

    def conv_bn(prefix: str, cout: int, cin: int, kernel: tuple[int, int, int] = (3, 3, 3)):
        bn = [(f"{prefix}.1.{n}", (cout,)) for n in ("weight", "bias", "running_mean", "running_var")]
        return [(f"{prefix}.0.weight", (cout, *kernel, cin)), *bn, (f"{prefix}.1.num_batches_tracked", ())]

    layout = conv_bn("conv_input", 16, c_in) + conv_bn("conv1.0", 16, 16)
    for stage, cin, cout in (("conv2", 16, 32), ("conv3", 32, 64), ("conv4", 64, 64)):
        layout += conv_bn(f"{stage}.0", cout, cin)
        layout += conv_bn(f"{stage}.1", cout, cout) + conv_bn(f"{stage}.2", cout, cout)
    return layout + conv_bn("conv_out", 128, 64, (3, 1, 1))


def test_voxelnet_state_dict_is_openpcdet_backbone_3d() -> None:
    spec = create_backbone("voxelnet")
    got = [(k, tuple(v.shape)) for k, v in spec.model.state_dict().items()]
    assert got == _openpcdet_voxelnet_layout(4)
    assert spec.model.out_channels == 256 and spec.model.bev_shape == (128, 128)  # SLidR: 128x128 BEV
    assert spec.model.spatial_shape == (41, 1024, 1024)  # OpenPCDet adds one z layer
    bn = spec.model.conv2[0][1]
    assert (bn.eps, bn.momentum) == (1e-3, 0.01)
    kitti = create_backbone("voxelnet_kitti").model
    assert kitti.spatial_shape == (41, 1600, 1408) and kitti.bev_shape == (200, 176)


def test_voxelnet_bev_map_and_point_samples() -> None:
    spec = tiny("voxelnet_tiny")
    rng = np.random.default_rng(2)
    batch = spec.collate([spec.prep(*planes_scan(rng, 800)), spec.prep(*planes_scan(rng, 600))])
    model = spec.model.eval()
    with torch.no_grad():
        bev = model.forward_bev(batch)
        points = model(batch)
    assert bev.shape == (2, model.out_channels, *model.bev_shape)
    # A point at the centre of a BEV cell takes exactly that cell's features.
    cell = batch["point_coords"][:, 1:].div(8).floor().long()
    centred = dict(batch, point_coords=torch.cat([batch["point_coords"][:, :1], cell * 8.0 + 4.0], 1))
    with torch.no_grad():
        at_centres = model.sample_bev(bev, centred)
    expected = bev[batch["batch_index"], :, cell[:, 0], cell[:, 1]]
    torch.testing.assert_close(at_centres, expected)
    assert points.shape == (len(batch["kept"]), model.out_channels)


@pytest.mark.parametrize("name", [*TINY, "res16unet34c"])
def test_layer_ids_cover_every_parameter(name: str) -> None:
    model = create_backbone(name).model
    ids = {n: model.layer_id(n) for n, _ in model.named_parameters()}
    assert set(ids.values()) == set(range(model.num_layers + 1))
    first, last = next(iter(ids)), list(ids)[-1]
    assert ids[first] == 0
    assert ids[last] == model.num_layers
    with pytest.raises(ValueError, match="not a parameter"):
        model.layer_id("classifier.weight")


def test_spvcnn_point_transforms_sit_at_their_stage() -> None:
    model = create_backbone("spvcnn_tiny").model
    assert [model.layer_id(f"point_transforms.{i}.0.weight") for i in range(3)] == [4, 6, 8]


def test_bad_grids_and_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="multiples of 8"):
        create_backbone("voxelnet_tiny", range_min=(-25.6, -25.2, -3.2))  # 126 voxels in y
    with pytest.raises(ConfigError, match="at least 24 voxels in z"):
        create_backbone("voxelnet_tiny", range_min=(-25.6, -25.6, -1.0), range_max=(25.6, 25.6, 1.0))
    with pytest.raises(ConfigError, match="whole number"):
        create_backbone("minkunet_tiny", voxel_size=(0.3, 0.3, 0.3))
    with pytest.raises(ConfigError, match="no option"):
        create_backbone("spvcnn_tiny", depth=3)
    with pytest.raises(ConfigError, match="width"):
        create_backbone("minkunet_tiny", width=0)


def test_u_net_grid_is_padded_so_no_voxel_loses_its_parent() -> None:
    spec = tiny("minkunet_tiny", range_min=(-25.4, -25.6, -3.0))  # 254 x 256 x 31 voxels
    assert spec.model.spatial_shape == (32, 256, 256)
    rng = np.random.default_rng(3)
    points, intensity = planes_scan(rng, 600)
    points[:3] = [[25.5, 25.5, 3.1], [-25.3, -25.5, -2.9], [25.5, -25.5, 3.1]]  # in the last voxels
    batch = spec.collate([spec.prep(points, intensity)])
    with torch.no_grad():
        levels = spec.model.eval().encode(sparse_input(batch, spec.model.spatial_shape, 1))
    centres = batch["voxel_coords"][:, 1:].float() + 0.5
    bidx = batch["voxel_coords"][:, 0]
    for level in levels:  # every input voxel has its site at strides 1, 2, 4, 8 and 16
        assert (SF.lookup(level, SF.point_sites(level, bidx, centres)) >= 0).all()


def test_empty_crop_is_a_data_error_naming_the_range() -> None:
    spec = create_backbone("spvcnn_tiny")
    with pytest.raises(DataError, match=r"range_max=\[25.6, 25.6, 3.2\]"):
        spec.prep(np.full((10, 3), 100.0, dtype=np.float32), np.ones(10, dtype=np.float32))


def test_voxelnet_rejects_a_batch_from_another_backbone() -> None:
    spec = create_backbone("voxelnet_tiny")
    other = create_backbone("minkunet_tiny")
    points, intensity = planes_scan(np.random.default_rng(4), 300)
    with pytest.raises(DataError, match="channels"):
        spec.model(other.collate([other.prep(points, intensity)]))
    assert isinstance(spec.model, VoxelNet)
