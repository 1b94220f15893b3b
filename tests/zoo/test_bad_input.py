"""Bad input to ``lidarssl import``: one line naming the file and what was expected, nothing written in DIR,
and no code from a checkpoint ever runs."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import pytest
import torch

from lidarssl.cli import main
from lidarssl.errors import CheckpointError
from lidarssl.zoo import import_checkpoint

CODE = "lidarssl import: error: "


class RunsCode:
    """Unpickling this would call os.system (touch a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def tar_of(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def refused(path: Path, out: Path, capsys, **kwargs) -> str:
    """The error of importing ``path`` (API and CLI agree), after checking nothing was written."""
    with pytest.raises(CheckpointError) as err:
        import_checkpoint(path, out, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    assert main(["import", str(path), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"{CODE}{message}\n"
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]  # no temporary folder left
    return message


def test_truncated_checkpoint(tmp_path: Path, capsys) -> None:
    data = saved({"model_points": {"conv0p1s1.kernel": torch.randn(27, 1, 32)}})
    path = tmp_path / "minkunet_slidr_1gpu.pt"
    path.write_bytes(data[: len(data) // 2])
    message = refused(path, tmp_path / "out", capsys)
    assert message.startswith(f"{path}: not a readable checkpoint, damaged or truncated (")


def test_corrupt_tarball(tmp_path: Path, capsys) -> None:
    good = tar_of(tmp_path / "good.tar.gz", {"logs/ckpt_last.pth": saved({"net": {}}) * 50})
    path = tmp_path / "WI_768-DINOv2_ViT_L_14-NS_KI_PD-linear_probing-nuscenes.tar.gz"
    path.write_bytes(good.read_bytes()[:300])
    message = refused(path, tmp_path / "out", capsys)
    assert message.startswith(f"{path}: truncated or corrupt tar archive (")


@pytest.mark.parametrize(("members", "links", "expected"), [
    ({"../evil.pth": b"x"}, None, "unsafe tar member '../evil.pth' escapes the extraction folder; refusing the whole "
                                  "archive"),
    ({"/tmp/abs.pth": b"x"}, None, "unsafe tar member '/tmp/abs.pth' escapes the extraction folder; refusing the "
                                   "whole archive"),
    ({"logs/a/../../../x.pth": b"x"}, None, "unsafe tar member 'logs/a/../../../x.pth' escapes the extraction "
                                            "folder; refusing the whole archive"),
    ({}, {"logs/model.pth": "../../outside.pth"}, "unsafe tar member 'logs/model.pth' links to '../../outside.pth' "
                                                  "outside the extraction folder; refusing the whole archive"),
])  # fmt: skip
def test_tar_members_escaping_the_folder(tmp_path: Path, capsys, members, links, expected) -> None:
    members = {"logs/pretraining/WI_768/model.pth": saved({"epoch": 1}), **members}
    path = tar_of(tmp_path / "release.tar.gz", members, links)
    assert refused(path, tmp_path / "out", capsys) == f"{path}: {expected}"
    assert not (tmp_path.parent / "evil.pth").exists() and not Path("/tmp/abs.pth").exists()


def test_tar_with_several_checkpoints(tmp_path: Path, capsys) -> None:
    path = tar_of(tmp_path / "two.tar.gz", {"a/epoch_10.pth": saved({}), "b/ckpt_best.pth": saved({})})
    assert refused(path, tmp_path / "out", capsys) == (
        f"{path}: holds several checkpoints (a/epoch_10.pth, b/ckpt_best.pth); import the one you want by its path")


def test_pickle_that_would_run_code(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.pt"
    torch.save({"model_points": {"conv0p1s1.kernel": torch.randn(27, 1, 32)}, "config": RunsCode(marker)}, path)
    assert refused(path, tmp_path / "out", capsys) == (
        f"{path}: refused: unpickling it would call posix.system, which is code, not weights "
        "(lidarssl reads checkpoints with torch.load(weights_only=True) only)")
    tarball = tar_of(tmp_path / "release.tar.gz", {"logs/model.pth": path.read_bytes()})
    assert refused(tarball, tmp_path / "out", capsys).startswith(f"{tarball}:logs/model.pth: refused: unpickling it "
                                                                 "would call posix.system")
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps({"x": RunsCode(marker)}))
    assert refused(raw, tmp_path / "out", capsys) == (f"{raw}: not a PyTorch checkpoint (a plain pickle (protocol "
                                                      "4)); expected a .pt/.pth/.ckpt file written by torch.save")
    assert not marker.exists()


def test_unknown_network(tmp_path: Path, capsys) -> None:
    path = tmp_path / "resnet.pth"
    torch.save({"state_dict": {"conv1.weight": torch.randn(8, 3, 3, 3)}, "epoch": 3}, path)
    assert refused(path, tmp_path / "out", capsys) == (
        f"{path}: no known network in this checkpoint (top-level keys: state_dict, epoch); expected ScaLR or "
        "WaffleIron (net / model_point with embed.*, waffleiron.*), SLidR (model_points with conv0p1s1.kernel or "
        "conv_input.0.weight), ALSO (stem.0.kernel ... or model.backbone_3d.*), NCLR (state_dict with encoder.*) or "
        "OpenPCDet (model_state with backbone_3d.*)")
    torch.save([torch.zeros(1)], path)
    expected = f"{path}: holds a list, expected a dict of tensors or of state dicts"
    assert refused(path, tmp_path / "out", capsys) == expected


def test_shapes_that_match_no_preset(tmp_path: Path, capsys, originals) -> None:
    # a MinkowskiEngine Res16UNet with a 5^3 stem (the MinkowskiEngine examples' MinkUNet), tiny widths
    state = originals.me_res16unet(planes=(4, 8, 16, 32, 32, 16, 12, 12), init_dim=4)
    state["conv0p1s1.kernel"] = torch.randn(125, 1, 4)
    path = tmp_path / "minkunet.pt"
    torch.save({"model_points": state}, path)
    assert refused(path, tmp_path / "out", capsys) == (
        f"{path}: a MinkowskiEngine Res16UNet (MinkUNet) + projection head (12 -> 64) whose shapes match no lidarssl "
        "preset (closest: res16unet34c {'width': 0.125}): shape (file vs preset): stem.0.weight (4, 5, 5, 5, 1) vs "
        "(4, 3, 3, 3, 1)")
    # block counts of no preset
    state = originals.sparse_unet(cs=(8, 8, 16, 32, 64, 64, 32, 24, 24), layers=(3, 3, 3, 3, 2, 2, 2, 2))
    torch.save(state, path)
    assert refused(path, tmp_path / "out", capsys) == (
        f"{path}: a sparse U-Net (MinkUNet) with 1 stem conv(s), blocks per level [3, 3, 3, 3, 2, 2, 2, 2] matches "
        "no lidarssl preset (MinkUNet34/Res16UNet34C: [2, 3, 4, 6, 2, 2, 2, 2], MinkUNet18: [2, 2, 2, 2, 2, 2, 2, 2], "
        "MinkUNet18SC and SPVCNN: two stem convs)")
    # a WaffleIron whose embedding takes 3 features (WaffleIron's KITTI 40cm-BEV config: intensity, height, radius)
    torch.save({"net": originals.waffleiron(8, 2, False, head="conv", c_in=3)}, path)
    assert refused(path, tmp_path / "out", capsys) == (
        f"{path}: the WaffleIron embedding takes 3 input features; lidarssl's WaffleIron preprocessing provides 5 "
        "(intensity, x, y, z, radius), ScaLR's and WaffleIron's nuScenes input")


def test_missing_file_and_busy_folder(tmp_path: Path, capsys, originals) -> None:
    missing = tmp_path / "nothing.pt"
    assert refused(missing, tmp_path / "out", capsys) == (
        f"{missing}: file not found; expected a checkpoint (.pt, .pth, .ckpt) or a release .tar.gz")
    path = tmp_path / "also.ckpt"
    torch.save(originals.sparse_unet(cs=(8, 8, 16, 32, 64, 64, 32, 24, 24)), path)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep me")
    with pytest.raises(CheckpointError) as err:
        import_checkpoint(path, busy)
    assert str(err.value) == f"{busy} already exists and is not empty; choose another --out or pass --overwrite"
    assert sorted(p.name for p in busy.iterdir()) == ["mine.txt"]
