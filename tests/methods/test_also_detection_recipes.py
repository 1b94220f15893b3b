"""ALSO's KITTI-360 and ONCE recipes run as shipped (grid, reader options, split) on tiny worlds in those layouts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lidarssl.config import load_config
from lidarssl.methods.config import PretrainConfig
from lidarssl.methods.pretrain import open_pretrain_dataset, run_pretraining
from lidarssl.models.backbones import create_backbone
from lidarssl.synthetic import write_kitti360, write_once


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _write(recipe: str, root: Path) -> None:
    if recipe == "also-voxelnet-kitti360":  # its chain needs the stereo pair; the recipe reads no image
        write_kitti360({"seed": 3, "lidar": "kitti", "cameras": "kitti360", "image_size": [32, 9], "num_frames": 2},
                       root, 4)
    else:  # two raw_small scans, then a val sequence
        write_once({"seed": 3, "lidar": "once", "cameras": "none", "num_frames": 2}, root, 4)


# BEV map (H, W) of each recipe's grid: KITTI's 1600 x 1408 voxels and ONCE's 1504 x 1504, at stride 8
BEV = {"also-voxelnet-kitti360": (200, 176), "also-voxelnet-once": (188, 188)}


@pytest.mark.parametrize("recipe", sorted(BEV))
def test_recipe_pretrains_on_its_layout(recipe: str, tmp_path: Path):
    root = tmp_path / "data"
    _write(recipe, root)
    cfg = load_config(PretrainConfig, recipe, [
        f"data.root={root}", f"out={tmp_path / 'run'}", "data.num_workers=0", "trainer.batch_size=2",
        "optim.epochs=1", "trainer.progress_bar=false", "trainer.accelerator=cpu", "method.options.queries=256"])
    model = create_backbone(cfg.backbone.name, **cfg.backbone.options).model
    assert model.bev_shape == BEV[recipe] and model.out_channels == 256  # ALSO's NUM_BEV_FEATURES: 256
    dataset = open_pretrain_dataset(cfg)
    assert len(dataset) == 2 and dataset[0].cameras == []  # the recipe's split, read without cameras
    result = run_pretraining(cfg)
    assert math.isfinite(result.loss) and (tmp_path / "run" / "backbone.safetensors").is_file()
