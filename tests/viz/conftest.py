"""Tiny runs (pretraining, segmentation) on the shared ``camera_world`` for the feature and figure tests."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_BACKBONE = ["backbone.name=waffleiron_4_32", "backbone.options.voxel_size=0.4",
                 "backbone.options.grid_shapes=[[32,32],[32,8],[32,8]]"]


def _pretrain(root: Path, out: Path, method: str, *extra: str) -> Path:
    from lidarssl.config import load_config
    from lidarssl.methods.config import PretrainConfig
    from lidarssl.methods.pretrain import run_pretraining

    config = load_config(PretrainConfig, None, [
        f"out={out}", f"data.root={root}", "data.num_workers=0", f"method.name={method}", *TINY_BACKBONE,
        "optim.epochs=1", "trainer.batch_size=2", "trainer.progress_bar=false", *extra])
    run_pretraining(config)
    return out


@pytest.fixture(scope="session")
def scalr_run(camera_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch ScaLR pretraining run (random DINO ViT-S/16 teacher, images resized to 48x96)."""
    return _pretrain(camera_world, tmp_path_factory.mktemp("scalr"), "scalr", "teacher.name=dino_vits16",
                     "pairing.resize=[48,96]")


@pytest.fixture(scope="session")
def ppkt_run(camera_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch PPKT pretraining run: its pixels go through a trainable pixel head."""
    return _pretrain(camera_world, tmp_path_factory.mktemp("ppkt"), "ppkt", "teacher.name=resnet50",
                     "pairing.crop_size=[48,80]", "method.options.max_pairs=256")


@pytest.fixture(scope="session")
def seg_run(camera_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch segmentation run from scratch."""
    from lidarssl.config import SegmentationConfig, load_config
    from lidarssl.downstream.train import run_segmentation

    out = tmp_path_factory.mktemp("seg")
    config = load_config(SegmentationConfig, None, [
        f"data.root={camera_world}", f"out={out}", "data.num_workers=0", *TINY_BACKBONE, "optim.epochs=1",
        "trainer.batch_size=2", "trainer.progress_bar=false"])
    run_segmentation(config, mode="scratch")
    return out
