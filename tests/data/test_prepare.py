"""`lidarssl prepare`: index every split once, check the files, report problems grouped, resume when rerun."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lidarssl.cli import PREPARE_TARGETS, main, run_prepare
from lidarssl.data import prepare
from lidarssl.data.prepare import PrepareJob
from lidarssl.errors import DataError


@pytest.fixture
def kitti(tmp_path: Path) -> Path:
    """SemanticKITTI layout: train sequence 00 with 20 labelled scans, val sequence 08 with 2."""
    for seq, n in (("00", 20), ("08", 2)):
        folder = tmp_path / "kitti" / "dataset" / "sequences" / seq
        (folder / "velodyne").mkdir(parents=True)
        (folder / "labels").mkdir()
        for f in range(n):
            np.zeros((5, 4), "<f4").tofile(folder / "velodyne" / f"{f:06d}.bin")
            np.full(5, 40, "<u4").tofile(folder / "labels" / f"{f:06d}.label")
    return tmp_path / "kitti"


def run(root: Path, *extra: str, target: str = "auto") -> tuple[int, list[str]]:
    lines: list[str] = []
    job = PrepareJob(target=target, root=root, workers=2, log=lines.append)
    for item in extra:
        key, _, value = item.partition("=")
        setattr(job, key, value if key != "refresh" else True)
    return run_prepare(job), lines


def test_clean_dataset_indexes_every_split(kitti):
    problems, lines = run(kitti)
    assert problems == 0 and lines[-1] == "all files present, of plausible size and readable"
    assert lines[0] == f"preparing semantickitti dataset {kitti}: splits train, val, test"
    assert any(line.startswith("  test: skipped (") for line in lines)
    progress = [line for line in lines if line.startswith("  train: checked")]
    assert progress[0] == "  train: checked 2/20 frames (10%)" and len(progress) == 10
    assert (kitti / ".lidarssl_index" / "semantickitti-train.json").is_file()
    _, again = run(kitti)
    assert "  train: all 20 frames were checked before" in again and not any("checked 2/" in x for x in again)


def test_problems_are_grouped_with_counts(kitti, capsys):
    seq = kitti / "dataset" / "sequences" / "00"
    for f in (3, 4, 5):
        (seq / "labels" / f"{f:06d}.label").unlink()
    (seq / "velodyne" / "000007.bin").write_bytes(b"\0" * 30)  # not a whole 16-byte point
    np.full(4, 40, "<u4").tofile(seq / "labels" / "000009.label")  # 4 labels for 5 points
    assert main(["prepare", "semantickitti", "--root", str(kitti), "--workers", "2"]) == 2
    out, err = capsys.readouterr()
    assert "5 problem files:\n  missing label file: 3\n" in out
    assert f"    {seq / 'labels' / '000003.label'}\n" in out
    assert "  point file not a whole number of 16-byte points (truncated?): 1\n" in out
    assert "  label file with a label count other than its scan's point count: 1\n" in out
    assert "5 problem files in" in err and f"rerun `lidarssl prepare semantickitti --root {kitti}`" in err
    # files fixed in place are checked again on the next run, though their frames were done
    (seq / "velodyne" / "000007.bin").write_bytes(b"\0" * 80)
    np.full(5, 40, "<u4").tofile(seq / "labels" / "000009.label")
    problems, lines = run(kitti, "split=train")
    assert problems == 3 and "  train: rechecked the frames with problems in the last run" in lines
    assert not any("checked 2/20" in line for line in lines)
    # files added to a folder make the whole split be checked again
    for f in (3, 4, 5):
        np.full(5, 40, "<u4").tofile(seq / "labels" / f"{f:06d}.label")
    problems, lines = run(kitti, "split=train")
    assert problems == 0 and "  train: checked 2/20 frames (10%)" in lines


def test_interrupted_run_resumes(kitti, monkeypatch):
    calls = {"n": 0}
    real = prepare.check_file

    def flaky(check):
        calls["n"] += 1
        if calls["n"] == 9:  # in the fifth tenth of train (two files per frame)
            raise KeyboardInterrupt
        return real(check)

    monkeypatch.setattr(prepare, "check_file", flaky)
    with pytest.raises(KeyboardInterrupt):
        run(kitti, "split=train")
    monkeypatch.setattr(prepare, "check_file", real)
    problems, lines = run(kitti, "split=train")
    assert problems == 0 and "  train: resuming the check at frame 4/20" in lines
    assert [x for x in lines if "checked" in x][0] == "  train: checked 6/20 frames (30%)"
    _, fresh = run(kitti, "split=train", "refresh=1")
    assert "  train: checked 2/20 frames (10%)" in fresh


def test_named_split_and_synthetic_target(tiny_world):
    problems, lines = run(tiny_world, "split=train@50%", target="synthetic")
    assert problems == 0 and "  train@50%: 2 frames" in lines


def test_errors_and_new_targets(tmp_path, monkeypatch, capsys):
    with pytest.raises(DataError, match=r"unknown prepare target 'superpixel'; choose one of \['auto'"):
        run(tmp_path, target="superpixel")
    with pytest.raises(DataError, match="nowhere: no such dataset folder"):
        run(tmp_path / "nowhere")
    assert main(["prepare", "kitti", "--root", str(tmp_path), "--split", "training"]) == 2
    assert "not a KITTI object folder" in capsys.readouterr().err
    seen = []
    monkeypatch.setitem(PREPARE_TARGETS, "teacher-features", lambda job: seen.append(job) or 0)
    assert main(["prepare", "teacher-features", "model=dinov2", "--root", str(tmp_path), "--workers", "3"]) == 0
    assert seen[0].options == {"model": "dinov2"} and seen[0].workers == 3 and seen[0].split is None


def test_prepare_opens_every_frame_file(kitti, tiny_world, tmp_path, capsys):
    # out-of-map label ids pass a size check: prepare reads the labels and maps them
    seq = kitti / "dataset" / "sequences" / "00"
    np.full(5, 77, "<u4").tofile(seq / "labels" / "000002.label")
    problems, lines = run(kitti)
    assert problems == 1 and "  label ids outside the class map: 1" in lines
    assert any("raw label ids [77] are not in the semantickitti class map" in line for line in lines)
    # a half-size npz keeps a plausible size: prepare opens it
    import json
    import shutil

    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    entry = json.loads((world / "index.json").read_text())["frames"][0]
    path = world / entry["lidar"]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert main(["prepare", "synthetic", "--root", str(world), "--workers", "2"]) == 2
    out = capsys.readouterr().out
    assert "  frame files that cannot be read (damaged or truncated): 1\n" in out
    assert f"    {path}: unreadable npz (BadZipFile: File is not a zip file)" in out
