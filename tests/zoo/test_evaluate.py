"""``lidarssl evaluate RELEASE``: an imported segmentation release scored with its origin's preprocessing."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lidarssl.cli import main
from lidarssl.data.datasets import open_dataset
from lidarssl.errors import ConfigError, DataError
from lidarssl.models.backbones.waffleiron_prep import WaffleIronPrep
from lidarssl.zoo import import_checkpoint
from lidarssl.zoo.evaluate import evaluate_release
from lidarssl.zoo.origins import SeedVoxelPrep

QUICK = ["data.num_workers=0", "trainer.batch_size=2", "trainer.progress_bar=false"]
CAR, VEGETATION = 3, 15  # nuScenes training ids


def test_seed_voxels_keep_the_first_point_of_each_voxel_anchored_at_the_scan_minimum() -> None:
    """ScaLR/WaffleIron: voxels of 0.1 m from the scan's minimum corner (not from 0), first point of each, then
    the field-of-view crop 1e-4 m inside its faces."""
    inner = WaffleIronPrep(fov_min=(-2, -2, -2), fov_max=(2, 2, 2), grid_shapes=((4, 4),), dim_proj=(2,),
                           voxel_size=None, num_neighbors=2)
    prep = SeedVoxelPrep(inner, voxel_size=0.1)
    points = np.array([
        [0.05, 0.00, 0.00],  # minimum corner at x = 0.05: voxels [0.05, 0.15), [0.15, 0.25) ... along x
        [0.14, 0.00, 0.00],  # same voxel as point 0 (an absolute grid at 0 would split them at 0.10)
        [0.16, 0.00, 0.00],  # next voxel
        [0.30, 0.05, 0.00],
        [0.30, 0.05, 0.05],  # same voxel as point 3: dropped
        [1.99995, 0.5, 0.5],  # inside the field of view but within 1e-4 m of its face: cropped
        [1.2, 1.2, 1.2],
    ], dtype=np.float32)  # fmt: skip
    sample = prep(points, np.arange(7, dtype=np.float32))
    assert sample["kept"].tolist() == [0, 2, 3, 6]
    np.testing.assert_array_equal(sample["feats"][:, 0], [0, 2, 3, 6])  # the kept points' own intensities
    random = prep(points, np.zeros(7, dtype=np.float32), rng=np.random.default_rng(0))
    assert len(random["kept"]) == 4 and {0, 1} & set(random["kept"].tolist())


def scalr_release(tmp_path: Path, originals, head: str, bias_class: int, classes: int = 16,
                  member: str = "logs/linear_probing/WI_768-DINOv2_ViT_L_14-NS_KI_PD/nuscenes/ckpt_last.pth") -> Path:
    """A tiny ScaLR-layout release whose head ignores the features and predicts ``bias_class`` everywhere."""
    torch.manual_seed(0)
    state = originals.waffleiron(8, 2, layernorm=True, head=head, classes=classes)
    weight, bias = ("classif.1.weight", "classif.1.bias") if head == "bn_conv" else ("classif.weight", "classif.bias")
    state[weight] = torch.zeros_like(state[weight])
    state[bias] = torch.nn.functional.one_hot(torch.tensor(bias_class), classes).float() * 5
    buf = io.BytesIO()
    torch.save({"epoch": 19, "net": {f"module.{k}": v for k, v in state.items()}}, buf)
    path = tmp_path / "release.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(member)
        info.size = len(buf.getvalue())
        tar.addfile(info, io.BytesIO(buf.getvalue()))
    return path


def expected_confusion(world: Path, predicted: int) -> np.ndarray:
    """Every labelled point of the val split, each predicted as ``predicted``."""
    val = open_dataset(world, split="val")
    conf = np.zeros((16, 16), dtype=np.int64)
    for i in range(len(val)):
        labels = val[i].labels
        counts = np.bincount(labels[labels != 255], minlength=16)
        conf[:, predicted] += counts
    return conf


def test_linear_probing_release_scores_every_point(tmp_path: Path, originals, tiny_world: Path, capsys) -> None:
    release = tmp_path / "lp"
    import_checkpoint(scalr_release(tmp_path, originals, "bn_conv", CAR), release)
    score = evaluate_release(release, [f"data.root={tiny_world}", *QUICK])
    assert score.origin == "scalr-nuscenes" and score.published == {"linear_probing": 67.8, "finetuning": 78.4}
    np.testing.assert_array_equal(score.confusion, expected_confusion(tiny_world, CAR))  # points outside the FOV too
    written = json.loads((release / "eval-val" / "metrics.json").read_text())
    assert written["mIoU"] == round(score.miou, 2) and written["origin"] == "scalr-nuscenes"
    # the CLI: `lidarssl evaluate` on a release folder
    assert main(["evaluate", str(release), f"data.root={tiny_world}", *QUICK, f"out={tmp_path / 'cli'}"]) == 0
    out = capsys.readouterr().out
    assert f"release {release} (scalr-nuscenes): mIoU {score.miou:.1f}; published linear_probing 67.8" in out
    assert "car" in out and (tmp_path / "cli" / "metrics.json").is_file()


def test_waffleiron_release_without_head_norm(tmp_path: Path, originals, tiny_world: Path) -> None:
    release = tmp_path / "wi"
    member = "pretrained_models/WaffleIron-48-384__nuscenes/ckpt_last.pth"
    import_checkpoint(scalr_release(tmp_path, originals, "conv", VEGETATION, member=member), release)
    # a bare Conv1d head (WaffleIron's own): BatchNorm-free, raw intensity, +-50 m field of view
    score = evaluate_release(release, [f"data.root={tiny_world}", *QUICK])
    assert score.origin == "waffleiron-nuscenes"
    np.testing.assert_array_equal(score.confusion, expected_confusion(tiny_world, VEGETATION))


def test_what_evaluate_refuses(tmp_path: Path, originals, tiny_world: Path) -> None:
    pretrained = tmp_path / "pretrained"
    torch.save({"model_point": originals.waffleiron(8, 2, True, head="conv", classes=32)}, tmp_path / "model.pth")
    import_checkpoint(tmp_path / "model.pth", pretrained)
    with pytest.raises(ConfigError) as err:
        evaluate_release(pretrained, [f"data.root={tiny_world}"])
    assert str(err.value) == (
        f"{pretrained}: the release has a scalr_distillation head, not a segmentation head; evaluate scores "
        f"linear-probing and finetuning releases (probe this backbone first: lidarssl probe RECIPE "
        f"pretrained={pretrained / 'backbone.safetensors'})")
    # a 17-class PandaSet head whose sensor the file name does not tell
    unknown = tmp_path / "unknown"
    release = scalr_release(tmp_path, originals, "bn_conv", 0, classes=17, member="ckpt_last.pth")
    info = import_checkpoint(release, unknown).info
    assert info["origin"] is None and info["notes"][0].startswith("origin unknown (a 17-class head)")
    with pytest.raises(ConfigError, match=r"the release's origin is unknown, so is its preprocessing; pass "
                                          r"origin=NAME \(one of scalr-nuscenes, "):
        evaluate_release(unknown, [f"data.root={tiny_world}"])
    with pytest.raises(DataError) as err:
        evaluate_release(unknown, [f"data.root={tiny_world}", "origin=scalr-panda64", *QUICK])
    assert str(err.value) == f"{tiny_world} (synthetic) has 16 classes, the release's head 17"
    with pytest.raises(ConfigError, match="data.root=DATASET does not exist; set it to the pandaset dataset folder"):
        evaluate_release(unknown, ["origin=scalr-panda64"])
