"""Full-size checkpoints in each original layout convert to exactly the keys and shapes of their preset.

Tensors are ``torch.empty`` (no memory touched) and converted in memory; each preset is built once, on the
meta device. The tiny-width tests of test_import.py check values and strict loading.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lidarssl.models.backbones import create_backbone
from lidarssl.zoo.convert import convert
from lidarssl.zoo.reading import Source

L18 = (2,) * 8


def _cases(o):
    """(file name, content, preset, expected number of backbone tensors) per release layout."""
    wi = o.waffleiron
    return {
        "scalr": ("WI_768-DINOv2_ViT_L_14-NS_KI_PD-pretrained.tar.gz",
                  {"model_point": {f"module.{k}": v for k, v in
                                   wi(768, 48, True, head="conv", classes=1024, make=torch.empty).items()}},
                  "waffleiron_48_768", 693),
        "waffleiron_nuscenes": ("waffleiron_nuscenes.tar.gz",
                                {"net": wi(384, 48, False, head="conv", classes=16, make=torch.empty)},
                                "waffleiron_48_384", None),
        "waffleiron_kitti": ("waffleiron_kitti.tar.gz",
                             {"net": wi(256, 48, False, head="conv", classes=19, make=torch.empty)},
                             "waffleiron_48_256", None),
        "slidr": ("minkunet_slidr_1gpu.pt", {"model_points": o.me_res16unet(make=torch.empty)}, "res16unet34c", 372),
        "also_minkunet34": ("pretrained_backbone_also_nuscenes_minkunet_epoch_199.ckpt",
                            o.sparse_unet(layers=(2, 3, 4, 6, 2, 2, 2, 2), make=torch.empty), "minkunet34", 372),
        "also_spvcnn": ("pretrained_backbone_also_nuscenes_spvcnn_epoch_199.ckpt",
                        o.sparse_unet(stem_convs=2, spvcnn=True, make=torch.empty), "spvcnn", 315),
        "also_minkunet18sc": ("pretrained_backbone_also_semantickitti_minkunetsc_epoch_49.ckpt",
                              o.sparse_unet(stem_convs=2, c_in=4, make=torch.empty), "minkunet18_sc", 294),
        "nclr_minkunet18": ("model_49.pt", {"state_dict": {f"encoder.{k}": v for k, v in o.sparse_unet(
            stem_convs=2, minkowski=True, head="final", head_out=64, make=torch.empty).items()}}, "minkunet18_sc", 294),
        "slidr_voxelnet": ("voxelnet_slidr.pt", {"model_points": o.voxelbackbone8x(layout="spconv1", final=64,
                                                                                  make=torch.empty)}, "voxelnet", 72),
        "pvrcnn": ("pvrcnn_slidr.pt", {"model_state": {f"backbone_3d.{k}": v for k, v in o.voxelbackbone8x(
            make=torch.empty).items()}}, "voxelnet_kitti", 72),
    }  # fmt: skip


@pytest.mark.parametrize("case", ["scalr", "waffleiron_nuscenes", "waffleiron_kitti", "slidr", "also_minkunet34",
                                  "also_spvcnn", "also_minkunet18sc", "nclr_minkunet18", "slidr_voxelnet", "pvrcnn"])
def test_full_size_checkpoint_matches_its_preset(originals, case) -> None:
    name, content, preset, count = _cases(originals)[case]
    c = convert(Source(Path(name), "0" * 64, 0, None, content))
    assert c.preset == preset
    features = {"features": ["x", "y", "z", "intensity"]} if case == "also_minkunet18sc" else {}
    assert c.options == features
    with torch.device("meta"):
        own = create_backbone(preset, **features).model.state_dict()
    assert {k: tuple(v.shape) for k, v in c.backbone.items()} == {k: tuple(v.shape) for k, v in own.items()}
    if count is not None:
        assert len(c.backbone) == count
