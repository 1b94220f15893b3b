"""``lidarssl export``: OpenPCDet's loading rule on the export, refusals and warnings, and export -> import round
trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lidarssl.checkpoints import load_weights, save_weights
from lidarssl.cli import main
from lidarssl.errors import CheckpointError
from lidarssl.models.backbones import create_backbone
from lidarssl.zoo import export_backbone, import_checkpoint
from lidarssl.zoo.kernels import from_ours


@pytest.fixture
def voxelnet_weights(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A VoxelNet backbone file as `lidarssl pretrain` writes it, random weights and statistics."""
    spec = create_backbone("voxelnet_tiny")
    torch.manual_seed(0)
    state = {k: (torch.randn_like(v) if v.is_floating_point() else v + 3) for k, v in spec.model.state_dict().items()}
    path = save_weights(tmp_path / "pretrain" / "backbone.safetensors", state, {"backbone": "voxelnet_tiny",
                                                                                 "method": "also"})
    return path, state


def openpcdet_load(model_state: dict[str, torch.Tensor], checkpoint: Path) -> tuple[set[str], set[str]]:
    """OpenPCDet's Detector3DTemplate.load_params_from_file: torch.load(f)["model_state"], then keep the keys
    the model has with an equal shape; the rest is skipped with a log line. Returns (loaded, not loaded) keys of
    the model."""
    disk = torch.load(checkpoint, map_location="cpu", weights_only=True)["model_state"]
    loaded = {k for k, v in disk.items() if k in model_state and model_state[k].shape == v.shape}
    return loaded, set(model_state) - loaded


def test_openpcdet_export_loads_into_a_detector(voxelnet_weights, tmp_path: Path, originals) -> None:
    path, state = voxelnet_weights
    out = tmp_path / "second_pretrained.pth"
    result = export_backbone(path, "openpcdet", out, target_channels=4)
    assert result.warnings == [] and result.keys == 72
    ckpt = torch.load(out, map_location="cpu", weights_only=True)  # plain tensors and strings only
    assert set(ckpt) == {"model_state", "version", "lidarssl"} and ckpt["version"].startswith("lidarssl ")
    assert all(type(v) is torch.Tensor for v in ckpt["model_state"].values())
    # a SECOND detector whose backbone_3d is OpenPCDet's VoxelBackBone8x for 4 point features (KITTI), written
    # from OpenPCDet's definition, plus detector parts the export does not have
    detector = {f"backbone_3d.{k}": v for k, v in originals.voxelbackbone8x(c_in=4, make=torch.empty).items()}
    detector |= {"vfe.dummy": torch.empty(1), "backbone_2d.blocks.0.1.weight": torch.empty(128, 256, 3, 3),
                 "dense_head.conv_cls.weight": torch.empty(18, 512, 1, 1)}
    loaded, skipped = openpcdet_load(detector, out)
    assert loaded == {k for k in detector if k.startswith("backbone_3d.")} and len(loaded) == 72
    assert skipped == {"vfe.dummy", "backbone_2d.blocks.0.1.weight", "dense_head.conv_cls.weight"}
    for key in ("conv_input.0.weight", "conv_out.0.weight", "conv4.2.1.running_var"):
        torch.testing.assert_close(ckpt["model_state"][f"backbone_3d.{key}"], state[key])


def test_openpcdet_export_warns_about_the_input_width(voxelnet_weights, tmp_path: Path, originals, capsys) -> None:
    path, _ = voxelnet_weights
    out = tmp_path / "nuscenes.pth"
    assert main(["export", str(path), "--to", "openpcdet", "--out", str(out), "--target-channels", "5"]) == 0
    warning = ("lidarssl export: warning: conv_input takes 4 input channels but the target config feeds 5: OpenPCDet "
               "skips backbone_3d.conv_input.0.weight (shape differs) and trains that first layer from scratch\n")
    captured = capsys.readouterr()
    assert captured.err == warning and f"exported 72 tensors of voxelnet_tiny to {out} (openpcdet)" in captured.out
    # which is what OpenPCDet does with a nuScenes config (5 point features)
    detector = {f"backbone_3d.{k}": v for k, v in originals.voxelbackbone8x(c_in=5, make=torch.empty).items()}
    _, skipped = openpcdet_load(detector, out)
    assert skipped == {"backbone_3d.conv_input.0.weight"}


def test_openpcdet_export_refuses_other_backbones(tmp_path: Path, capsys) -> None:
    spec = create_backbone("minkunet_tiny")
    path = save_weights(tmp_path / "backbone.safetensors", spec.model.state_dict(), {"backbone": "minkunet_tiny"})
    out = tmp_path / "x.pth"
    with pytest.raises(CheckpointError) as err:
        export_backbone(path, "openpcdet", out)
    assert str(err.value) == (
        f"{path}: backbone 'minkunet_tiny' cannot go to OpenPCDet: its VoxelBackBone8x (backbone_3d) holds only "
        "lidarssl's VoxelNet presets (voxelnet, voxelnet_kitti, voxelnet_tiny); export it with --to state_dict")
    assert main(["export", str(tmp_path), "--to", "openpcdet", "--out", str(out)]) == 2  # a folder: its backbone
    assert capsys.readouterr().err == f"lidarssl export: error: {err.value}\n"
    assert not out.exists()
    # a voxelnet-named file whose tensors are not VoxelBackBone8x's
    state = create_backbone("voxelnet_tiny").model.state_dict()
    state["conv2.0.0.weight"] = torch.zeros(8, 3, 3, 3, 16)
    bad = save_weights(tmp_path / "bad.safetensors", state, {"backbone": "voxelnet_tiny"})
    with pytest.raises(CheckpointError, match=r"not a VoxelBackBone8x state dict \(1 keys differ from preset "
                                              r"voxelnet_tiny, e.g. conv2.0.0.weight\); OpenPCDet would skip them"):
        export_backbone(bad, "openpcdet", out)


def test_export_then_import_round_trips(voxelnet_weights, tmp_path: Path) -> None:
    path, state = voxelnet_weights
    export_backbone(path, "openpcdet", tmp_path / "pcdet.pth")
    info = import_checkpoint(tmp_path / "pcdet.pth", tmp_path / "back").info
    assert (info["format"], info["preset"], info["kernel_layout"]) == ("openpcdet", "voxelnet_tiny", "spconv2")
    back, meta = load_weights(tmp_path / "back" / "backbone.safetensors")
    assert meta["backbone"] == "voxelnet_tiny" and back.keys() == state.keys()
    for k in state:
        assert torch.equal(back[k], state[k]), k
    # plain state dict with spconv 1.x kernels, for spconv 1.x users: converted back on import
    export_backbone(path, "state_dict", tmp_path / "plain.pth", layout="spconv1")
    plain = torch.load(tmp_path / "plain.pth", weights_only=True)
    torch.testing.assert_close(plain["conv_out.0.weight"], from_ours(state["conv_out.0.weight"], "spconv1"))
    info = import_checkpoint(tmp_path / "plain.pth", tmp_path / "back1").info
    assert (info["format"], info["kernel_layout"]) == ("lidarssl", "spconv1")
    back, _ = load_weights(tmp_path / "back1" / "backbone.safetensors")
    assert all(torch.equal(back[k], state[k]) for k in state)


@pytest.mark.parametrize("preset", ["minkunet_tiny", "spvcnn_tiny", "waffleiron_4_32"])
def test_state_dict_export_round_trips_every_family(tmp_path: Path, preset) -> None:
    spec = create_backbone(preset)
    state = spec.model.state_dict()
    path = save_weights(tmp_path / "backbone.safetensors", state, {"backbone": preset})
    result = export_backbone(path, "state_dict", tmp_path / "plain.pth")
    assert result.keys == len(state)
    info = import_checkpoint(tmp_path / "plain.pth", tmp_path / "back").info
    assert (info["format"], info["preset"], info["options"]) == ("lidarssl", preset, {})
    # lidarssl's own backbone file imports too, keeping its preset name
    assert import_checkpoint(path, tmp_path / "back2").info["preset"] == preset
    back, _ = load_weights(tmp_path / "back" / "backbone.safetensors")
    assert all(torch.equal(back[k], state[k]) for k in state)
