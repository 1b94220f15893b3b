"""KITTI-360 reader: splits, poses, the files it needs and the one-line errors when they are wrong.

No real KITTI-360 sample exists here; the folder is a tiny synthetic world written in the layout of KITTI-360's
documentation and devkit (see tests/synthetic/test_writers_kitti360_once.py for the round trip).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lidarssl.cli import run_prepare
from lidarssl.data.datasets import open_dataset
from lidarssl.data.formats import KITTI360
from lidarssl.data.prepare import PrepareJob
from lidarssl.errors import DataError
from lidarssl.synthetic import write_kitti360

SEQ = "2013_05_28_drive_0000_sync"


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kitti360")
    write_kitti360({"seed": 7, "lidar": "kitti", "cameras": "kitti360", "image_size": [32, 9], "num_frames": 3},
                   root, 6)
    return root


@pytest.fixture
def root(written: Path, tmp_path: Path) -> Path:
    """A private copy to corrupt."""
    return Path(shutil.copytree(written, tmp_path / "kitti360"))


def test_splits_and_recognition(root):
    dataset = open_dataset(root, "train")
    assert isinstance(dataset, KITTI360) and len(dataset) == 3
    assert len(KITTI360(root, "val")) == 3 and len(KITTI360(root, "all")) == 6
    scan = dataset[1]
    assert scan.frame_id == f"{SEQ}/0000000001" and [c.name for c in scan.cameras] == ["image_00", "image_01"]
    assert len(open_dataset(root, "val@50%-frames")) == 2  # named splits on top (every second sorted frame)


def test_frames_without_a_pose_are_left_out_unless_poses_are_off(root):
    poses = root / "data_poses" / SEQ / "poses.txt"
    lines = poses.read_text().splitlines()
    poses.write_text("\n".join(lines[:1] + lines[2:]) + "\n")  # frame 1 has no pose
    with pytest.warns(UserWarning, match=r"kitti360 train: 1 of 3 scans have no pose in data_poses/<seq>/poses.txt "
                                         r"and are left out \(with_poses=False keeps them\)"):
        reader = KITTI360(root, "train")
    assert [f[1] for f in reader.frames] == ["0000000000", "0000000002"]
    everything = KITTI360(root, "train", with_poses=False)
    assert len(everything) == 3 and np.array_equal(everything[1].ego_pose, np.eye(4))


def test_missing_calibration_files(root):
    (root / "calibration" / "calib_cam_to_velo.txt").unlink()
    with pytest.raises(DataError, match=rf"^{root}/calibration/calib_cam_to_velo.txt: camera-to-Velodyne "
                                        r"calibration not found$"):
        KITTI360(root)[0]
    assert len(KITTI360(root, with_poses=False, with_images=False)[0]) > 0  # the scan alone needs no calibration
    (root / "calibration" / "perspective.txt").unlink()
    with pytest.raises(DataError, match=rf"^{root}/calibration/perspective.txt: perspective camera calibration not "
                                        r"found$"):
        KITTI360(root, with_poses=False)[0]
    (root / "calibration" / "calib_cam_to_pose.txt").unlink()
    with pytest.raises(DataError, match=rf"^{root}/calibration/calib_cam_to_pose.txt: camera-to-pose calibration "
                                        r"not found$"):
        KITTI360(root, with_images=False, refresh=True)[0]


def test_missing_or_malformed_pose_file(root):
    poses = root / "data_poses" / SEQ / "poses.txt"
    poses.unlink()
    with pytest.raises(DataError, match=rf"^{poses}: pose file not found; pass with_poses=False to read the scans "
                                        r"without ego poses$"):
        KITTI360(root, "train")
    poses.write_text("0 1 0 0 0 0 1 0 0 0 0 1\n")
    with pytest.raises(DataError, match=rf"^{poses}: line 1 \(a frame index and a 3x4 pose\) must be 13 finite "
                                        r"numbers, got 12$"):
        KITTI360(root, "train", refresh=True)


def test_calibration_keys_and_rigid_transforms(root):
    perspective = root / "calibration" / "perspective.txt"
    text = perspective.read_text()
    perspective.write_text("calib_time: 09-Jan-2012 14:00:15\n" + text)  # a non-numeric line is fine
    assert len(KITTI360(root, with_poses=False)[0].cameras) == 2
    perspective.write_text("\n".join(line for line in text.splitlines() if not line.startswith("P_rect_01")))
    with pytest.raises(DataError, match=rf"^{perspective}: key 'P_rect_01' missing; the file has \['P_rect_00', "
                                        r"'R_rect_00', 'R_rect_01', 'S_rect_00', 'S_rect_01'\]$"):
        KITTI360(root, with_poses=False)[0]
    velo = root / "calibration" / "calib_cam_to_velo.txt"
    velo.write_text("2 0 0 0 0 1 0 0 0 0 1 0\n")
    with pytest.raises(DataError, match=rf"^{velo}: field 'cam_to_velo' must be a rigid transform"):
        KITTI360(root, with_images=False)[0]


def test_scan_of_the_wrong_record_size(root):
    scan = root / "data_3d_raw" / SEQ / "velodyne_points" / "data" / "0000000001.bin"
    data = scan.read_bytes()
    scan.write_bytes(data[:-4])
    with pytest.raises(DataError, match=rf"^{scan}: {len(data) - 4} bytes is not a whole number of 16-byte points "
                                        r"\(float32 x 4\); the file is truncated or not in this format$"):
        KITTI360(root)[1]


def test_window_lists_and_layout(root, tmp_path):
    windows = root / "data_3d_semantics" / "train" / "2013_05_28_drive_val.txt"
    windows.write_text("data_3d_semantics/train/2013_05_28_drive_0002_sync/static/oops.ply\n")
    with pytest.raises(DataError, match=rf"^{windows}: line 1 is not a window 'data_3d_semantics/train/<seq>/static/"
                                        r"SSSSSSSSSS_EEEEEEEEEE.ply': "):
        KITTI360(root, "val")
    windows.unlink()
    with pytest.raises(DataError, match=rf"^{windows}: window list of split 'val' \(from KITTI-360's "
                                        r"data_3d_semantics download; split='all' reads every scan\) not found$"):
        KITTI360(root, "val")
    with pytest.raises(DataError, match=rf"^{tmp_path}: not a KITTI-360 folder \(no data_3d_raw/\); expected "):
        KITTI360(tmp_path)
    assert not KITTI360.detect(tmp_path) and KITTI360.detect(root)


def test_prepare_lists_missing_and_truncated_files(root):
    data = root / "data_3d_raw" / SEQ / "velodyne_points" / "data"
    (data / "0000000002.bin").unlink()
    (data / "0000000000.bin").write_bytes(b"\0" * 20)
    (root / "data_2d_raw" / SEQ / "image_01" / "data_rect" / "0000000001.png").unlink()
    lines: list[str] = []
    problems = run_prepare(PrepareJob(target="kitti360", root=root, workers=2, log=lines.append))
    assert problems == 3
    assert lines[0] == f"preparing kitti360 dataset {root}: splits train, val, all"
    assert "  missing point file: 1" in lines and "  missing camera image: 1" in lines
    assert "  point file not a whole number of 16-byte points (truncated?): 1" in lines
