"""A run recognises its dataset's format once, for the recipe's check and every split it opens."""

from pathlib import Path

import pytest

from lidarssl.config import load_config
from lidarssl.data.formats.synthetic import SyntheticDataset
from lidarssl.downstream.config import SegmentationConfig
from lidarssl.downstream.train import segmentation_data
from lidarssl.errors import ConfigError
from lidarssl.models.backbones import create_backbone
from lidarssl.registry import READERS

RECIPE = ["recipe.kind=train", "recipe.method=scratch", "recipe.backbone=waffleiron_4_32"]


@pytest.fixture
def detections(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    detect = SyntheticDataset.detect.__func__

    def counted(cls, root: Path) -> bool:
        calls.append(root)
        return detect(cls, root)

    monkeypatch.setattr(SyntheticDataset, "detect", classmethod(counted))
    assert READERS["synthetic"] is SyntheticDataset
    return calls


def test_segmentation_data_detects_the_format_once(tiny_world: Path, tmp_path: Path, detections: list[Path]):
    cfg = load_config(SegmentationConfig, None, [f"data.root={tiny_world}", f"out={tmp_path}", "data.num_workers=0",
                                                 *RECIPE, "recipe.dataset=synthetic"])
    data, class_map = segmentation_data(cfg, create_backbone("waffleiron_4_32"))
    assert detections == [tiny_world]  # recipe check, train split and val split
    assert class_map.classes


def test_the_one_detection_still_checks_the_recipe_dataset(tiny_world: Path, tmp_path: Path, detections: list[Path]):
    cfg = load_config(SegmentationConfig, None, [f"data.root={tiny_world}", f"out={tmp_path}", *RECIPE,
                                                 "recipe.dataset=semantickitti"])
    with pytest.raises(ConfigError, match="is synthetic, but this recipe's protocol is written for semantickitti"):
        segmentation_data(cfg, create_backbone("waffleiron_4_32"))
    assert detections == [tiny_world]
