"""Named splits: label fractions by scene or frame, SLidR's pretraining split, frame lists, and `info`."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from lidarssl.cli import main
from lidarssl.data.datasets import open_dataset
from lidarssl.data.splits import SplitView, parse_split
from lidarssl.errors import DataError


def write_kitti(root: Path, frames: dict[str, int]) -> Path:
    """A SemanticKITTI layout with ``frames[seq]`` 3-point scans per sequence, all labelled road."""
    for seq, n in frames.items():
        folder = root / "dataset" / "sequences" / seq
        (folder / "velodyne").mkdir(parents=True)
        (folder / "labels").mkdir()
        for f in range(n):
            np.full((3, 4), f, "<f4").tofile(folder / "velodyne" / f"{f:06d}.bin")
            np.full(3, 40, "<u4").tofile(folder / "labels" / f"{f:06d}.label")
    return root


@pytest.fixture(scope="module")
def kitti(tmp_path_factory) -> Path:
    return write_kitti(tmp_path_factory.mktemp("kitti"), {"00": 25, "01": 5, "08": 2})


@pytest.fixture(scope="module")
def nuscenes(tmp_path_factory) -> Path:
    from lidarssl.synthetic import write_nuscenes

    root = tmp_path_factory.mktemp("nuscenes")
    write_nuscenes({"seed": 1, "lidar": "nuscenes", "cameras": "none"}, root, 6, frames_per_sequence=1,
                   val_fraction=0.2)
    return root


def ids(dataset) -> list[str]:
    return [dataset[i].frame_id for i in range(len(dataset))]


def test_parse_split_grammar(tmp_path):
    assert parse_split("train") == ("train", None)
    base, sel = parse_split("train@0.1%")
    assert base == "train" and sel.step == 1000 and sel.rule is None
    assert parse_split("val@10%-scenes")[1].rule == "scenes" and parse_split("train@25%-frames")[1].step == 4
    assert parse_split(f"train@{tmp_path}/list.npy")[1].list_file == tmp_path / "list.npy"
    with pytest.raises(DataError, match=r"3% is not 100/k for a whole k; use one of 0.1%, 1%, 5%"):
        parse_split("train@3%")
    with pytest.raises(DataError, match=r"expected 'train@<p>%'"):
        parse_split("train@half")
    with pytest.raises(DataError, match="no base split before '@'"):
        parse_split("@1%")


def test_frame_fractions_follow_scalr(kitti):
    """SemanticKITTI counts frames by default: sorted(train)[::k]."""
    ten = open_dataset(kitti, "train@10%")
    assert isinstance(ten, SplitView) and ten.rule == "every 10th frame of the sorted list"
    assert [f"{s}/{f}" for s, f in ten.frames] == ["00/000000", "00/000010", "00/000020"]
    assert len(open_dataset(kitti, "train@1%")) == 1 and len(open_dataset(kitti, "train@100%")) == 30
    assert len(open_dataset(kitti, "val@50%")) == 1
    assert ten[2].frame_id == "00/000020" and ten.sequences_dir.name == "sequences"  # base attributes show through
    with pytest.raises(IndexError, match="out of range"):
        ten[3]


def test_scene_fractions_follow_slidr(kitti, tiny_world):
    """Every k-th scene counts as SLidR does: the k-th, 2k-th, ...; synthetic worlds count scenes by default."""
    assert {s for s, _ in open_dataset(kitti, "train@50%-scenes").frames} == {"01"}
    with pytest.raises(DataError, match=r"every 10th scene of 2 scenes keeps none; use 'train@10%-frames'"):
        open_dataset(kitti, "train@10%-scenes")
    half = open_dataset(tiny_world, "train@50%")
    assert half.rule == "every 2nd scene (1 of 2)" and len(half) == 2
    assert {f["sequence"] for f in half.frames} == {1}
    assert len(open_dataset(tiny_world, "train@50%-frames")) == 2


def test_nuscenes_fraction_and_slidr_pretraining_split(nuscenes, tmp_path):
    assert [f[0] for f in open_dataset(nuscenes, "train@50%").frames] == ["scene-0002", "scene-0004"]
    with pytest.raises(DataError, match=r"splits.json: split 'parametrizing' .* needs the key 'verifying' "
                                        r"\(SLidR's 100 held-out scene names.* and 'train' \(the 700"):
        open_dataset(nuscenes, "parametrizing")
    lists = json.loads((nuscenes / "splits.json").read_text())
    lists["verifying"] = ["scene-0002", "scene-0005"]
    (tmp_path / "splits.json").write_text(json.dumps(lists))
    pre = open_dataset(nuscenes, "parametrizing", splits=tmp_path / "splits.json")
    assert [f[0] for f in pre.frames] == ["scene-0001", "scene-0003", "scene-0004"]
    assert pre.rule == "train minus 2 'verifying' scenes"
    held = open_dataset(nuscenes, "verifying", splits=tmp_path / "splits.json")  # any list of the file is a split
    assert [f[0] for f in held.frames] == ["scene-0002", "scene-0005"]
    assert [f[0] for f in open_dataset(nuscenes, "parametrizing@50%", splits=lists).frames] == ["scene-0003"]


def test_scene_lists_for_other_readers(tiny_world, tmp_path):
    (tmp_path / "lists.json").write_text(json.dumps({"verifying": ["0"], "mine": ["2"]}))
    mine = open_dataset(tiny_world, "mine", splits=tmp_path / "lists.json")
    assert {f["sequence"] for f in mine.frames} == {2} and len(mine) == 2
    pre = open_dataset(tiny_world, "parametrizing", splits=tmp_path / "lists.json")
    assert {f["sequence"] for f in pre.frames} == {1}
    with pytest.raises(DataError, match=r"unknown split 'nope'; choose one of \['train', 'val', 'all'\]"):
        open_dataset(tiny_world, "nope", splits=tmp_path / "lists.json")


def test_frame_list_files(kitti, nuscenes, tmp_path):
    """ScaLR's lists name frames by lidar file (any prefix), lidarseg file and token."""
    (tmp_path / "a.json").write_text(json.dumps([["/data/kitti/dataset/sequences/00/velodyne/000003.bin", "x"]]))
    (tmp_path / "b.txt").write_text("01/000004\n\n00/000001\n")
    assert ids(open_dataset(kitti, f"train@{tmp_path}/a.json")) == ["00/000003"]
    assert ids(open_dataset(kitti, f"train@{tmp_path}/b.txt")) == ["00/000001", "01/000004"]
    base = open_dataset(nuscenes, "train")
    rows = np.array([[base.frames[i][2]["lidar"]["file"], "lidarseg.bin", "tok"] for i in (1, 3)])
    np.save(tmp_path / "scalr.npy", rows)
    assert open_dataset(nuscenes, f"train@{tmp_path}/scalr.npy").indices == [1, 3]
    np.save(tmp_path / "objects.npy", np.array([["a", 1]], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"objects.npy: holds pickled Python objects.*convert it once to JSON"):
        open_dataset(nuscenes, f"train@{tmp_path}/objects.npy")
    with pytest.raises(DataError, match=r"a.json: none of its 2 entries .* names a frame of split .val."):
        open_dataset(kitti, f"val@{tmp_path}/a.json")
    with pytest.raises(DataError, match=r"missing.txt: frame list not found"):
        open_dataset(kitti, f"train@{tmp_path}/missing.txt")


def test_split_view_pickles_for_dataloader_workers(tiny_world):
    view = open_dataset(tiny_world, "train@50%")
    copy = pickle.loads(pickle.dumps(view))
    assert copy.indices == view.indices and copy[0].frame_id == view[0].frame_id


def test_info_lists_named_splits(kitti, capsys):
    assert main(["info", str(kitti), "--split", "train@10%", "--max-frames", "1"]) == 0
    out = capsys.readouterr().out
    assert "(1 frames summarised of 3)" in out
    assert "train 30, val 2, test -" in out
    assert "train@10%            3  every 10th frame of the sorted list" in out
    assert "train@0.1%           1  every 1000th frame" in out
    assert "parametrizing        -  needs 'verifying'" in out
