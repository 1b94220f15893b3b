"""ONCE reader: splits, cameras, the files it needs and the one-line errors when they are wrong.

No real ONCE sample exists here; the folder is a tiny synthetic world written in the layout of ONCE's devkit as
OpenPCDet reads it (see tests/synthetic/test_writers_kitti360_once.py for the round trip).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lidarssl.cli import run_prepare
from lidarssl.data.datasets import open_dataset
from lidarssl.data.formats import ONCE
from lidarssl.data.formats.once import CAMERAS
from lidarssl.data.prepare import PrepareJob
from lidarssl.errors import DataError
from lidarssl.synthetic import write_once


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """Sequence 000000 in raw_small (3 frames), 000001 in val (annotated every frame)."""
    root = tmp_path_factory.mktemp("once")
    write_once({"seed": 8, "lidar": "once", "cameras": "once", "image_size": [32, 17], "num_frames": 3},
               root, 6, label_every=1)
    return root


@pytest.fixture
def root(written: Path, tmp_path: Path) -> Path:
    """A private copy to corrupt."""
    return Path(shutil.copytree(written, tmp_path / "once"))


def _frame_ids(root: Path, seq: str) -> list[str]:
    return [f["frame_id"] for f in json.loads((root / "data" / seq / f"{seq}.json").read_text())["frames"]]


def test_splits_cameras_and_recognition(root):
    dataset = open_dataset(root, "raw_small")
    assert isinstance(dataset, ONCE) and len(dataset) == 3
    scan = dataset[0]
    assert scan.frame_id == f"000000/{_frame_ids(root, '000000')[0]}"
    assert [c.name for c in scan.cameras] == list(CAMERAS) and scan.cameras[0].hw == (17, 32)
    assert len(ONCE(root, "val", with_images=False)) == 3
    assert ONCE.detect(root) and not ONCE.detect(root / "ImageSets")


def test_sequence_without_its_json(root):
    path = root / "data" / "000001" / "000001.json"
    path.unlink()
    with pytest.raises(DataError, match=rf"^{path}: sequence JSON not found \(every ONCE sequence folder data/<seq>/ "
                                        r"holds <seq>.json with its calibration, poses and frame list\)$"):
        ONCE(root, "val")
    path.write_text("{not json")
    with pytest.raises(DataError, match=rf"^{path}: not valid JSON \("):
        ONCE(root, "val")


def test_missing_split_list_and_layout(root, tmp_path):
    with pytest.raises(DataError, match=rf"^{root}/ImageSets/test.txt: sequence list of split 'test' not found$"):
        ONCE(root, "test")
    (root / "ImageSets" / "train.txt").write_text("000000\n")  # a raw sequence: no annotated frame
    with pytest.raises(DataError, match=rf"^{root}/ImageSets/train.txt: its sequences hold no annotated frames; "):
        ONCE(root, "train")
    with pytest.raises(DataError, match=rf"^{tmp_path}: not a ONCE folder \(no data/\); expected "):
        ONCE(tmp_path)


def test_calibration_and_pose_errors(root):
    path = root / "data" / "000000" / "000000.json"
    doc = json.loads(path.read_text())
    del doc["calib"]["cam03"]
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=rf"^{path}: no calibration for camera 'cam03'; the file has \['cam01', "
                                        r"'cam05', 'cam06', 'cam07', 'cam08', 'cam09'\]$"):
        ONCE(root)[0]  # all seven cameras by default
    doc["frames"][1]["pose"][3] = 2.0  # qw: the quaternion is no longer a rotation
    doc["calib"]["cam01"]["distortion"] = [0.1, 0.2]
    path.write_text(json.dumps(doc))
    reader = ONCE(root, cameras=("cam01", "cam05"))
    with pytest.raises(DataError, match=rf"^{path}: pose of frame '{doc['frames'][1]['frame_id']}' quaternion .* has "
                                        r"norm 2.\d+, not 1: not a rotation"):
        reader[1]
    with pytest.raises(DataError, match=rf"^{path} calib 'cam01': distortion must be 4 / 5 / 8 / 12 / 14 finite "
                                        r"numbers"):
        reader[0]
    assert len(ONCE(root, with_images=False)[0]) > 0  # without images the calibration is not needed


def test_scan_of_the_wrong_record_size(root):
    scan = root / "data" / "000000" / "lidar_roof" / f"{_frame_ids(root, '000000')[2]}.bin"
    data = scan.read_bytes()
    scan.write_bytes(data + b"\0" * 8)
    with pytest.raises(DataError, match=rf"^{scan}: {len(data) + 8} bytes is not a whole number of 16-byte points "
                                        r"\(float32 x 4\); the file is truncated or not in this format$"):
        ONCE(root, with_images=False)[2]
    assert np.isfinite(ONCE(root, with_images=False)[1].points).all()


def test_prepare_lists_missing_files(root):
    ids = _frame_ids(root, "000000")
    (root / "data" / "000000" / "lidar_roof" / f"{ids[0]}.bin").unlink()
    (root / "data" / "000000" / "cam09" / f"{ids[1]}.jpg").unlink()
    lines: list[str] = []
    job = PrepareJob(target="auto", root=root, workers=2, log=lines.append)
    assert run_prepare(job) == 2
    assert lines[0] == f"preparing once dataset {root}: splits raw_small, raw_medium, raw_large, train, val, test"
    assert "  missing point file: 1" in lines and "  missing camera image: 1" in lines
    assert any(line.startswith("  raw_medium: skipped (") for line in lines)
