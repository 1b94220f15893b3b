"""``lidarssl import`` of every release and checkpoint layout of the seed projects, then a strict load.

Checkpoints are written in each original layout (tests/zoo/conftest.py) with tiny widths where the format
allows; VoxelBackBone8x and ResNet-50 have fixed widths. Full-size key/shape checks are in test_presets.py.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lidarssl.checkpoints import load_state_dict_strict, load_weights
from lidarssl.errors import CheckpointError
from lidarssl.models.backbones import create_backbone
from lidarssl.zoo import import_checkpoint
from lidarssl.zoo.convert import convert
from lidarssl.zoo.kernels import to_ours
from lidarssl.zoo.reading import Source


def ddp(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"module.{k}": v for k, v in state.items()}


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def strict_load(out: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The imported backbone loads strictly into the preset its metadata names; returns its tensors and meta."""
    state, meta = load_weights(out / "backbone.safetensors")
    spec = create_backbone(meta["backbone"], **meta["options"])
    load_state_dict_strict(spec.model, state, "imported")
    return state, meta


def every_key_recorded(info: dict, sources: list[str]) -> None:
    recorded = [r["source"] for r in info["keys"]]
    assert sorted(recorded) == sorted(sources)
    assert all(r["note"] for r in info["keys"] if r["action"] == "ignored")


# ------------------------------------------------------------------------------------------ ScaLR, WaffleIron


def test_scalr_pretrained_release_tarball(tmp_path: Path, originals) -> None:
    """ScaLR's pretrained release: a .tar.gz holding logs/pretraining/.../model.pth = {epoch, model_point, optim,
    scheduler, scaler}, DDP-prefixed WaffleIron with LayerNorm and the distillation head."""
    state = originals.waffleiron(16, 2, layernorm=True, head="conv", classes=24)
    ckpt = {"epoch": 24, "model_point": ddp(state), "optim": {"state": {}, "param_groups": [{"lr": 0.002}]},
            "scheduler": {"last_epoch": 3}, "scaler": {"scale": 65536.0}}
    member = "logs/pretraining/WI_768-DINOv2_ViT_L_14-NS_KI_PD/model.pth"
    tar = write_tar(tmp_path / "WI_768-DINOv2_ViT_L_14-NS_KI_PD-pretrained.tar.gz", {member: saved(ckpt)})
    result = import_checkpoint(tar, tmp_path / "scalr")
    info = result.info
    assert (info["format"], info["role"], info["preset"]) == ("scalr", "pretraining", "waffleiron")
    assert info["options"] == {"depth": 2, "channels": 16, "layernorm": True}  # read from the tensors
    assert info["source"]["member"] == member and len(info["source"]["sha256"]) == 64
    backbone, meta = strict_load(tmp_path / "scalr")
    assert meta["backbone"] == "waffleiron" and meta["options"]["layernorm"] is True
    torch.testing.assert_close(backbone["embed.conv1.weight"], state["embed.conv1.weight"])
    heads, head_meta = load_weights(tmp_path / "scalr" / "head.safetensors")
    assert set(heads) == {"head.weight", "head.bias"}
    torch.testing.assert_close(heads["head.weight"], state["classif.weight"][:, :, 0])
    assert head_meta["heads"]["head"]["kind"] == "scalr_distillation"
    every_key_recorded(info, [f"model_point/module.{k}" for k in state] + ["epoch", "optim", "scheduler", "scaler"])
    assert {r["action"] for r in info["keys"] if r["source"].startswith("model_point/")} == {"renamed", "permuted"}
    assert "ScaLR distillation head" in result.report and "optimizer state" in result.report


@pytest.mark.parametrize(("dataset", "origin", "classes"), [("nuscenes", "scalr-nuscenes", 16),
                                                            ("pandagt", "scalr-pandagt-finetuning", 17)])
def test_scalr_downstream_release(tmp_path: Path, originals, dataset, origin, classes) -> None:
    """ScaLR's linear-probing/finetuning releases: {epoch, net, ...} with classif.0 (BatchNorm1d) and classif.1
    (Conv1d); the dataset and protocol come from the member path."""
    state = originals.waffleiron(16, 2, layernorm=True, head="bn_conv", classes=classes)
    member = f"logs/finetuning/WI_768-DINOv2_ViT_L_14-NS_KI_PD/{dataset}/100p/ckpt_last.pth"
    tar = write_tar(tmp_path / f"release-{dataset}.tar.gz", {member: saved({"epoch": 25, "net": ddp(state)})})
    info = import_checkpoint(tar, tmp_path / "lp").info
    assert info["origin"]["name"] == origin
    assert info["heads"]["head"] == {"kind": "segmentation", "classes": classes, "in_channels": 16, "norm": True,
                                     "description": f"BatchNorm + linear head ({classes} classes)"}
    heads, _ = load_weights(tmp_path / "lp" / "head.safetensors")
    assert sorted(heads) == ["head.0.bias", "head.0.num_batches_tracked", "head.0.running_mean", "head.0.running_var",
                             "head.0.weight", "head.1.bias", "head.1.weight"]
    torch.testing.assert_close(heads["head.1.weight"], state["classif.1.weight"][:, :, 0])
    torch.testing.assert_close(heads["head.0.running_var"], state["classif.0.running_var"])
    strict_load(tmp_path / "lp")


def test_waffleiron_own_release(tmp_path: Path, originals) -> None:
    """WaffleIron's releases: {epoch, net, optim, scheduler, scaler, best_miou} (a numpy scalar), BatchNorm
    network and a bare Conv1d head; a preset size loads as that preset."""
    state = originals.waffleiron(32, 4, layernorm=False, head="conv", classes=19)
    ckpt = {"epoch": 44, "net": ddp(state), "optim": {}, "scheduler": {}, "scaler": {}, "best_miou": np.float64(0.68)}
    member = "pretrained_models/WaffleIron-48-256__kitti/ckpt_last.pth"
    tar = write_tar(tmp_path / "waffleiron_kitti.tar.gz", {member: saved(ckpt)})
    info = import_checkpoint(tar, tmp_path / "wi").info
    assert (info["format"], info["preset"], info["options"]) == ("waffleiron", "waffleiron_4_32", {})
    assert info["origin"]["name"] == "waffleiron-semantickitti"
    assert info["heads"]["head"]["norm"] is False and info["heads"]["head"]["classes"] == 19
    assert next(r for r in info["keys"] if r["source"] == "best_miou")["note"] == "best validation mIoU of the run"
    heads, _ = load_weights(tmp_path / "wi" / "head.safetensors")
    assert sorted(heads) == ["head.1.bias", "head.1.weight"]
    strict_load(tmp_path / "wi")


# ------------------------------------------------------------------------------------------ SLidR, ST-SLidR

TINY_PLANES = (4, 8, 16, 32, 32, 16, 12, 12)  # Res16UNet34C's planes at width 1/8


@pytest.mark.parametrize("variant", ["slidr", "stslidr", "lightning"])
def test_slidr_minkunet(tmp_path: Path, originals, variant) -> None:
    """SLidR's minkunet_slidr_1gpu.pt {model_points, model_images, epoch, config} (MinkowskiEngine Res16UNet34C),
    ST-SLidR's (nested config), and a Lightning {state_dict: model_points.*} checkpoint."""
    state = originals.me_res16unet(planes=TINY_PLANES, init_dim=4, n_out=8)
    if variant == "lightning":
        ckpt = {"state_dict": {f"model_points.{k}": v for k, v in state.items()}, "epoch": 49}
    elif variant == "stslidr":
        ckpt = {"model_points": state, "epoch": 49,
                "config": {"model": {"n_out": 8}, "dataset": {"voxel_size": 0.1, "cylindrical_coordinates": True}}}
    else:
        ckpt = {"model_points": state, "epoch": 49,
                "config": {"voxel_size": 0.1, "cylindrical_coordinates": True, "model_n_out": 8}}
    path = tmp_path / "minkunet_slidr_1gpu.pt"
    torch.save(ckpt, path)
    result = import_checkpoint(path, tmp_path / "slidr")
    info = result.info
    assert info["format"] == ("stslidr" if variant == "stslidr" else "slidr")
    assert (info["preset"], info["options"], info["kernel_layout"]) == ("res16unet34c", {"width": 0.125}, "minkowski")
    assert info["origin"]["name"] == "slidr-nuscenes"
    backbone, _ = strict_load(tmp_path / "slidr")
    # names follow SLidR's structure: block b <= 4 -> stage b (after its down conv), b >= 5 -> up (b - 4)
    torch.testing.assert_close(backbone["stem.0.weight"], to_ours(state["conv0p1s1.kernel"], "minkowski"))
    torch.testing.assert_close(backbone["stage2.1.net.0.weight"], to_ours(state["block2.0.conv1.kernel"], "minkowski"))
    torch.testing.assert_close(backbone["stage4.6.net.4.running_mean"], state["block4.5.norm2.bn.running_mean"])
    torch.testing.assert_close(backbone["up1.0.net.0.weight"], to_ours(state["convtr4p16s2.kernel"], "minkowski"))
    torch.testing.assert_close(backbone["up4.1.0.downsample.0.weight"],
                               to_ours(state["block8.0.downsample.0.kernel"], "minkowski"))
    heads, _ = load_weights(tmp_path / "slidr" / "head.safetensors")
    torch.testing.assert_close(heads["head.weight"], state["final.kernel"].t())  # SLidR's point head, as a Linear
    torch.testing.assert_close(heads["head.bias"], state["final.bias"][0])
    assert info["summary"]["permuted"] == sum(k.endswith(("kernel", "final.bias")) for k in state)
    if variant != "lightning":
        assert "cylindrical voxels" in result.report


def test_slidr_raw_release_with_image_branch(tmp_path: Path, originals) -> None:
    """minkunet_slidr_1gpu_raw.pt adds model_images: a torchvision ResNet-50 (encoder.*, fixed width) and
    decoder.0, SLidR's 1x1 conv to 64."""
    from torchvision.models import resnet50

    with torch.device("meta"):
        encoder = {k: v.shape for k, v in resnet50().state_dict().items() if not k.startswith("fc.")}
    images = {f"encoder.{k}": torch.empty(shape) for k, shape in encoder.items()}
    images |= {"decoder.0.weight": torch.randn(64, 2048, 1, 1), "decoder.0.bias": torch.randn(64)}
    state = originals.me_res16unet(planes=TINY_PLANES, init_dim=4, n_out=64)
    content = {"model_points": state, "model_images": images, "epoch": 49,
               "config": {"decoder": "dilation", "image_weights": "moco_v2"}}
    # converted in memory: the 100 MB encoder makes file round trips slow, and other tests cover the files
    c = convert(Source(tmp_path / "minkunet_slidr_1gpu_raw.pt", "0" * 64, 0, None, content))
    heads = {h.name: h for h in c.heads}
    assert heads["teacher"].meta["teacher"] == "resnet50_dilated"  # checked against its encoder's keys and shapes
    assert set(heads["teacher"].tensors) == {f"teacher.{k}" for k in encoder}
    assert heads["pixel_head"].meta["in_channels"] == 2048
    torch.testing.assert_close(heads["pixel_head"].tensors["pixel_head.proj.weight"], images["decoder.0.weight"])
    assert heads["head"].tensors["head.weight"].shape == (64, 12)
    # an encoder that is no ResNet-50 (SLidR's unreleased ViT option) is left out, the rest imports
    images["encoder.layer4.2.bn3.running_var"] = torch.empty(7)
    c = convert(Source(tmp_path / "raw.pt", "0" * 64, 0, None, content))
    assert [h.name for h in c.heads] == ["head", "pixel_head"]
    assert c.notes[0] == ("the image encoder is not a ResNet-50 (shape (file vs preset): layer4.2.bn3.running_var "
                          "(7,) vs (2048,)): left out")
    ignored = {r.note for r in c.records if r.source.startswith("model_images/encoder.")}
    assert ignored == {"image encoder of an architecture lidarssl has no teacher for (not a ResNet-50)"}


@pytest.mark.parametrize("layout", ["spconv1", "spconv21_native", "spconv2"])
def test_slidr_voxelnet(tmp_path: Path, originals, layout) -> None:
    """voxelnet_slidr.pt: OpenPCDet's VoxelBackBone8x keys without prefix plus SLidR's final 1x1 conv, in the
    spconv layout of the version that wrote it (detected from conv_input)."""
    state = originals.voxelbackbone8x(layout=layout, final=64)
    path = tmp_path / "voxelnet_slidr.pt"
    torch.save({"model_points": state, "epoch": 49, "config": {"model_points": "voxelnet"}}, path)
    info = import_checkpoint(path, tmp_path / "vn").info
    assert (info["preset"], info["kernel_layout"], info["origin"]["name"]) == ("voxelnet", layout,
                                                                               "slidr-voxelnet-nuscenes")
    backbone, _ = strict_load(tmp_path / "vn")
    torch.testing.assert_close(backbone["conv_out.0.weight"], to_ours(state["conv_out.0.weight"], layout))
    heads, meta = load_weights(tmp_path / "vn" / "head.safetensors")
    assert heads["final.weight"].shape == (64, 1, 1, 1, 128)
    assert meta["heads"]["final"]["kind"] == "voxelnet_final"
    permuted = 0 if layout == "spconv2" else 13  # 12 kernels + final
    assert info["summary"].get("permuted", 0) == permuted


def test_slidr_pvrcnn_openpcdet_checkpoint(tmp_path: Path, originals) -> None:
    """pvrcnn_slidr.pt: an OpenPCDet checkpoint; only backbone_3d has a preset, the detector is left out."""
    detector = {f"backbone_3d.{k}": v for k, v in originals.voxelbackbone8x().items()}
    detector |= {"vfe.dummy": torch.zeros(1), "backbone_2d.blocks.0.1.weight": torch.randn(128, 256, 3, 3),
                 "dense_head.conv_cls.weight": torch.randn(18, 512, 1, 1), "global_step": torch.tensor(1000)}
    path = tmp_path / "pvrcnn_slidr.pt"
    torch.save({"epoch": 80, "it": 1000, "model_state": detector, "optimizer_state": {}, "version": "pcdet+0.5.2"},
               path)
    info = import_checkpoint(path, tmp_path / "pv").info
    assert (info["format"], info["preset"]) == ("openpcdet", "voxelnet_kitti")
    ignored = {r["source"]: r["note"] for r in info["keys"] if r["action"] == "ignored"}
    assert ignored["model_state/dense_head.conv_cls.weight"] == (
        "OpenPCDet detector part 'dense_head': only backbone_3d has a lidarssl preset")
    assert {"epoch", "it", "optimizer_state", "version"} <= set(ignored)
    strict_load(tmp_path / "pv")


# ------------------------------------------------------------------------------------------ ALSO, NCLR

TINY_CS = tuple(c // 4 for c in (32, 32, 64, 128, 256, 256, 128, 96, 96))


@pytest.mark.parametrize(("name", "kwargs", "preset", "options"), [
    ("pretrained_backbone_also_nuscenes_minkunet_epoch_199.ckpt", {"layers": (2, 3, 4, 6, 2, 2, 2, 2)},
     "minkunet34", {"width": 0.25}),
    ("pretrained_backbone_also_nuscenes_spvcnn_epoch_199.ckpt", {"stem_convs": 2, "spvcnn": True},
     "spvcnn", {"width": 0.25}),
    ("pretrained_backbone_also_semantickitti_minkunetsc_epoch_49.ckpt", {"stem_convs": 2, "c_in": 4},
     "minkunet18_sc", {"width": 0.25, "features": ["x", "y", "z", "intensity"]}),
])  # fmt: skip
def test_also_torchsparse_backbones(tmp_path: Path, originals, name, kwargs, preset, options) -> None:
    """ALSO's pretrained_backbone_* files: a plain dict of torchsparse 1.4 keys (convert_models.py)."""
    state = originals.sparse_unet(cs=TINY_CS, **kwargs)
    torch.save(state, tmp_path / name)
    info = import_checkpoint(tmp_path / name, tmp_path / "also").info
    assert (info["format"], info["kernel_layout"], info["preset"], info["options"]) == (
        "also", "torchsparse14", preset, options)
    assert info["origin"]["name"] == ("also-semantickitti" if "semantickitti" in name else "also-nuscenes")
    backbone, _ = strict_load(tmp_path / "also")
    # torchsparse's even kernels run z fastest: the down conv's tap (x, y, z) = (1, 0, 0) is flat index 4
    down = state["stage1.0.net.0.kernel"]
    torch.testing.assert_close(backbone["stage1.0.net.0.weight"][:, 0, 0, 1, :], down[4].t())
    every_key_recorded(info, list(state))


def test_also_second_backbone(tmp_path: Path, originals) -> None:
    """ALSO's SECOND files: {model.backbone_3d.*, model.backbone_2d.*, model.global_step}, spconv 2.x."""
    state = {f"model.backbone_3d.{k}": v for k, v in originals.voxelbackbone8x().items()}
    state |= {"model.backbone_2d.blocks.0.1.weight": torch.randn(128, 256, 3, 3), "model.global_step": torch.tensor(5)}
    path = tmp_path / "pretrained_backbone_also_kitti3d_second_epoch_499.ckpt"
    torch.save(state, path)
    info = import_checkpoint(path, tmp_path / "second").info
    assert (info["preset"], info["origin"]["name"]) == ("voxelnet_kitti", "also-kitti")
    assert info["kernel_layout"] == "spconv2"
    note = next(r["note"] for r in info["keys"] if r["source"] == "model.backbone_2d.blocks.0.1.weight")
    assert note == "SECOND's 2D BEV backbone (BaseBEVBackbone): no home in the voxelnet preset"
    strict_load(tmp_path / "second")


# the grid of each ALSO SECOND release, transcribed from the config it was pretrained with (valeoai/ALSO
# also_selfsup/configs/cfg/<file>: quantization_params spatial_extent and voxel_size, at the lines given)
ALSO_SECOND_CONFIGS = {
    "kitti360": ("kitti360_second.yaml:33-34", [0, -40, -3, 70.4, 40, 1], [0.05, 0.05, 0.1]),
    "nuscenes": ("nuscenes_second_kitti.yaml:33-34", [0, -40, -5, 70.4, 40, 3], [0.05, 0.05, 0.1]),
    "once": ("once_raw_small_second.yaml:34-35", [-75.2, -75.2, -5.0, 75.2, 75.2, 3.0], [0.1, 0.1, 0.2]),
}


@pytest.mark.parametrize("tag,epoch", [("kitti360", 74), ("nuscenes", 99), ("once", 39)])
def test_also_second_releases_land_on_the_grid_of_their_config(tag: str, epoch: int, tmp_path: Path,
                                                               originals) -> None:
    state = {f"model.backbone_3d.{k}": v for k, v in originals.voxelbackbone8x().items()}
    path = tmp_path / f"pretrained_backbone_also_{tag}_second_epoch_{epoch}.ckpt"
    torch.save(state, path)
    import_checkpoint(path, tmp_path / tag)
    _, meta = strict_load(tmp_path / tag)
    prep = create_backbone(meta["backbone"], **meta["options"]).prep
    source, extent, voxel = ALSO_SECOND_CONFIGS[tag]
    assert [*prep.range_min, *prep.range_max] == pytest.approx(extent), source
    assert list(prep.voxel_size) == pytest.approx(voxel), source
    assert meta["backbone"] == ("voxelnet" if tag == "once" else "voxelnet_kitti")  # README: "trained for KITTI3D"


def test_nclr_checkpoints(tmp_path: Path, originals) -> None:
    """NCLR's training checkpoints {state_dict, optimizer, epoch, iters, config}: MinkowskiEngine SegContrast
    MinkUNet18 under encoder. with final.0 (Linear 96 -> 64), plus the image side it drops."""
    unet = originals.sparse_unet(cs=TINY_CS, stem_convs=2, minkowski=True, head="final", head_out=64)
    sd = {f"encoder.{k}": v for k, v in unet.items()}
    sd |= {"img_encoder.encoder.conv1.weight": torch.randn(64, 3, 7, 7), "fusion.q.weight": torch.randn(64, 64)}
    path = tmp_path / "model_49.pt"
    torch.save({"state_dict": sd, "optimizer": {}, "epoch": 49, "iters": 1000,
                "config": {"DATASET": {"NAME": "semantickitti"}}}, path)
    info = import_checkpoint(path, tmp_path / "nclr").info
    assert (info["format"], info["kernel_layout"], info["preset"]) == ("nclr", "minkowski", "minkunet18_sc")
    assert info["origin"]["name"] == "nclr-semantickitti"
    assert info["heads"]["head"]["kind"] == "projection" and info["heads"]["head"]["out_channels"] == 64
    ignored = {r["source"]: r["note"] for r in info["keys"] if r["action"] == "ignored"}
    assert ignored["state_dict/img_encoder.encoder.conv1.weight"].startswith("NCLR pretext part")
    strict_load(tmp_path / "nclr")
    # NCLR's BEVNet: encoder.backbone_3d (VoxelBackBone8x) + 2D part
    sd = {f"encoder.backbone_3d.{k}": v for k, v in originals.voxelbackbone8x().items()}
    sd |= {"encoder.backbone_2d.blocks.0.1.weight": torch.randn(128, 256, 3, 3),
           "encoder.final.weight": torch.randn(64, 512, 1, 1)}
    torch.save({"state_dict": sd, "epoch": 49}, tmp_path / "bev.pt")
    info = import_checkpoint(tmp_path / "bev.pt", tmp_path / "bev", fmt="nclr").info
    assert info["preset"] == "voxelnet" and info["heads"] == {}
    assert info["summary"]["ignored"] == 3  # backbone_2d, final, epoch


def test_format_option_checks_the_network(tmp_path: Path, originals) -> None:
    path = tmp_path / "also.ckpt"
    torch.save(originals.sparse_unet(cs=TINY_CS), path)
    assert import_checkpoint(path, tmp_path / "as_nclr", fmt="nclr").info["format"] == "nclr"
    with pytest.raises(CheckpointError) as err:
        import_checkpoint(path, tmp_path / "as_scalr", fmt="scalr")
    assert str(err.value) == (f"{path}: --format scalr holds waffleiron networks, but the file is a also checkpoint "
                              "of a unet network; use --format auto")
    assert not (tmp_path / "as_scalr").exists()


def test_overwrite_replaces_a_release_only_on_success(tmp_path: Path, originals) -> None:
    path = tmp_path / "also.ckpt"
    torch.save(originals.sparse_unet(cs=TINY_CS), path)
    out = tmp_path / "out"
    import_checkpoint(path, out)
    before = (out / "import.json").read_text()
    with pytest.raises(CheckpointError, match="already exists and is not empty"):
        import_checkpoint(path, out)
    torch.save({"state_dict": {"foo.weight": torch.zeros(1)}}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="no known network"):
        import_checkpoint(tmp_path / "bad.pt", out, overwrite=True)
    assert (out / "import.json").read_text() == before  # the failed import left the old release as it was
    import_checkpoint(path, out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary folders left
    assert json.loads((out / "import.json").read_text())["preset"] == "minkunet18"


def test_extracted_release_folder_and_its_last_checkpoint(tmp_path: Path, originals) -> None:
    """A release already untarred: the folder's one checkpoint, or its ckpt_last.pth beside ckpt_best.pth."""
    run = tmp_path / "pretrained_models" / "WaffleIron-48-384__nuscenes"
    run.mkdir(parents=True)
    state = originals.waffleiron(32, 4, layernorm=False, head="conv", classes=16)
    torch.save({"epoch": 44, "net": ddp(state)}, run / "ckpt_last.pth")
    torch.save({"epoch": 30, "net": ddp(state)}, run / "ckpt_best.pth")
    result = import_checkpoint(tmp_path / "pretrained_models", tmp_path / "wi")
    info = result.info
    assert info["source"]["member"] == "WaffleIron-48-384__nuscenes/ckpt_last.pth"
    assert info["origin"]["name"] == "waffleiron-nuscenes"
    assert info["notes"][0] == ("WaffleIron-48-384__nuscenes/ckpt_best.pth: another checkpoint beside it, not "
                                "imported (import it by its path)")
    assert "note:    WaffleIron-48-384__nuscenes/ckpt_best.pth" in result.report


def test_also_downstream_model_keeps_its_classifier(tmp_path: Path, originals) -> None:
    """ALSO's trained_model_* files (convert_models.py --downstream) keep the segmentation classifier."""
    state = originals.sparse_unet(cs=TINY_CS, head="classifier", head_out=17)
    path = tmp_path / "trained_model_nuscenes_minkunet_epoch_99.ckpt"
    torch.save(state, path)
    info = import_checkpoint(path, tmp_path / "ft").info
    assert info["role"] == "downstream" and info["heads"]["head"]["kind"] == "classifier"
    heads, _ = load_weights(tmp_path / "ft" / "head.safetensors")
    torch.testing.assert_close(heads["head.weight"], state["classifier.0.weight"])
