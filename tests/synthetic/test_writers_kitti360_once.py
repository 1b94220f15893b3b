"""Synthetic data written in the KITTI-360 and ONCE layouts and read back by their readers.

No real KITTI-360 or ONCE sample can be downloaded here: the layouts the writers produce and the readers expect
come from the datasets' documentation and tools (kitti360Scripts' calibration loaders and projection, the ONCE
devkit as OpenPCDet reads it, ALSO's dataset code), so these round trips check that reader and writer agree on
those conventions, and that every camera projects the points onto the pixels the synthetic cameras saw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lidarssl.data.datasets import detect_format
from lidarssl.data.formats import KITTI360, ONCE
from lidarssl.data.formats.kitti360 import read_timestamps
from lidarssl.data.geometry import project
from lidarssl.data.scan import Scan
from lidarssl.errors import ConfigError, DataError
from lidarssl.synthetic import SyntheticWorld, write_kitti360, write_once
from lidarssl.synthetic.plan import Generation
from lidarssl.synthetic.writers.once import BOX_CLASSES, MIN_BOX_POINTS

PER_SEQUENCE = 3
DISTORTION = (-0.35, 0.1, 0.002, -0.002, 0.0)  # corners move by ~10 % of the image


def _originals(world: SyntheticWorld, frames: int, **plan) -> list[Scan]:
    return [f.scan for f in Generation(world, frames, frames_per_sequence=PER_SEQUENCE, **plan).frames()]


def _same_projection(got: Scan, want: Scan) -> None:
    """Every camera of ``want`` projects ``want``'s points onto the same pixels as ``got``'s camera of that name."""
    assert [c.name for c in got.cameras] == [c.name for c in want.cameras]
    for cw in want.cameras:
        cg = got.camera(cw.name)
        a = project(want.points, cw.K, cw.lidar_to_cam, cw.hw)
        b = project(got.points, cg.K, cg.lidar_to_cam, cg.hw)
        assert a.valid.sum() > 0 and np.array_equal(a.valid, b.valid)
        assert np.abs(a.uv[a.valid] - b.uv[b.valid]).max() < 1e-3  # pixels


# --- KITTI-360 --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k360_world() -> SyntheticWorld:
    return SyntheticWorld(seed=31, lidar="kitti", cameras="kitti360", num_frames=PER_SEQUENCE, image_size=(64, 18))


@pytest.fixture(scope="module")
def k360(k360_world, tmp_path_factory) -> tuple[Path, list[Scan]]:
    root = tmp_path_factory.mktemp("kitti360")
    write_kitti360(k360_world, root, 2 * PER_SEQUENCE, frames_per_sequence=PER_SEQUENCE)
    return root, _originals(k360_world, 2 * PER_SEQUENCE)


def test_kitti360_round_trip(k360, tmp_path):
    root, originals = k360
    assert detect_format(root) == "kitti360"
    train, val = KITTI360(root, "train", cache_dir=tmp_path), KITTI360(root, "val", cache_dir=tmp_path)
    every = KITTI360(root, "all", cache_dir=tmp_path)
    seq0, seq2 = "2013_05_28_drive_0000_sync", "2013_05_28_drive_0002_sync"
    # two windows per drive overlap by one frame: each scan is listed once
    assert train.frames == [[seq0, f"{k:010d}"] for k in range(PER_SEQUENCE)]
    assert val.frames == [[seq2, f"{k:010d}"] for k in range(PER_SEQUENCE)]
    assert every.frames == train.frames + val.frames
    for got, want in zip(every, originals):
        assert got.dataset == "kitti360" and got.labels is None
        assert np.array_equal(got.points, want.points)
        np.testing.assert_allclose(got.intensity * 255, want.intensity, atol=1e-4)  # reflectance in 0..1
        np.testing.assert_allclose(got.ego_pose, want.ego_pose, atol=1e-8)  # the synthetic global frame
        assert got.timestamp == pytest.approx(want.timestamp, abs=1e-6)
        for cw in want.cameras:
            cg = got.camera(cw.name)
            np.testing.assert_allclose(cg.lidar_to_cam, cw.lidar_to_cam, atol=1e-9)
            np.testing.assert_allclose(cg.K, cw.K, atol=1e-9)
            assert np.array_equal(cg.image, cw.image)  # PNG
        _same_projection(got, want)


def test_kitti360_tables_follow_the_devkit(k360):
    """cam0_to_world (rectified image_00 -> world) is the devkit's pose @ cam_to_pose @ inv(R_rect) of the files."""
    root, originals = k360
    reader = KITTI360(root, "all", with_images=False, refresh=True)
    rows = np.loadtxt(root / "data_poses/2013_05_28_drive_0000_sync/cam0_to_world.txt")
    assert rows.shape == (PER_SEQUENCE, 17) and list(rows[:, 0]) == list(range(PER_SEQUENCE))
    K, lidar_to_cam = reader.camera_calibration("image_00")
    for row, scan in zip(rows, reader):
        np.testing.assert_allclose(row[1:].reshape(4, 4) @ lidar_to_cam, scan.ego_pose, atol=1e-8)
    stamps = read_timestamps(root / "data_3d_raw/2013_05_28_drive_0002_sync/velodyne_points/timestamps.txt")
    np.testing.assert_allclose(stamps, [s.timestamp for s in originals[PER_SEQUENCE:]], atol=1e-6)


def test_kitti360_writer_needs_the_triggered_stereo_pair(tmp_path):
    with pytest.raises(ConfigError, match=r"runs through image_00 and image_01; this world has \['image_2'\]: "
                                          r"use cameras='kitti360'"):
        write_kitti360({"seed": 1, "lidar": "kitti", "cameras": "kitti", "num_frames": 1}, tmp_path / "a", 1)
    with pytest.raises(ConfigError, match=r"KITTI-360 has 9 train/val drives; this plan makes 10 sequences"):
        write_kitti360({"seed": 1, "cameras": "kitti360", "num_frames": 1}, tmp_path / "b", 10)
    # the nuScenes-like lidar fires the cameras 50 ms before its sweep while the ego speed varies
    world = SyntheticWorld(seed=2, lidar="nuscenes", cameras="kitti360", num_frames=3, image_size=(32, 9))
    with pytest.raises(ConfigError, match=r"camera 'image_00' moves against the lidar .* KITTI-360 keeps one "
                                          r"calibration; use lidar='kitti'"):
        write_kitti360(world, tmp_path / "c", 3)


# --- ONCE -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def once_world() -> SyntheticWorld:
    return SyntheticWorld(seed=41, lidar="once", cameras="once", num_frames=PER_SEQUENCE, image_size=(64, 34))


@pytest.fixture(scope="module")
def once(once_world, tmp_path_factory) -> tuple[Path, list[Scan]]:
    """Three sequences: raw_small, train and val; every second frame of train and val annotated; a lens."""
    root = tmp_path_factory.mktemp("once")
    plan = {"val_fraction": 0.34}
    write_once(once_world, root, 3 * PER_SEQUENCE, frames_per_sequence=PER_SEQUENCE, label_every=2,
               distortion=DISTORTION, jpeg_quality=95, **plan)
    return root, _originals(once_world, 3 * PER_SEQUENCE, **plan)


def _annotated(scan: Scan) -> bool:
    """Whether the writer gives this scan a box: a road user of ONCE's classes with enough points."""
    for inst in np.unique(scan.instance[scan.instance > 0]):
        sel = scan.instance == inst
        if int(np.bincount(scan.raw_labels[sel]).argmax()) in BOX_CLASSES and sel.sum() >= MIN_BOX_POINTS:
            return True
    return False


def test_once_round_trip(once, tmp_path):
    root, originals = once
    assert detect_format(root) == "once"
    for split, seq in (("raw_small", "000000"), ("train", "000001"), ("val", "000002")):
        assert (root / "ImageSets" / f"{split}.txt").read_text() == f"{seq}\n"
    raw = ONCE(root, "raw_small", cache_dir=tmp_path)
    assert [f[0] for f in raw.frames] == ["000000"] * PER_SEQUENCE
    for got, want in zip(raw, originals):
        assert got.dataset == "once" and got.frame_id == f"000000/{round(want.timestamp * 1000)}"
        assert np.array_equal(got.points, want.points) and np.array_equal(got.intensity, want.intensity)
        np.testing.assert_allclose(got.ego_pose, want.ego_pose, atol=1e-9)
        assert got.timestamp == pytest.approx(want.timestamp, abs=1e-6)
        for cw in want.cameras:
            cg = got.camera(cw.name)
            np.testing.assert_allclose(cg.lidar_to_cam, cw.lidar_to_cam, atol=1e-12)
            np.testing.assert_allclose(cg.K, cw.K, atol=1e-12)
        _same_projection(got, want)
    # labelled splits: only the annotated frames (every second one that has a box), as OpenPCDet's infos
    for split, first in (("train", PER_SEQUENCE), ("val", 2 * PER_SEQUENCE)):
        reader = ONCE(root, split, with_images=False, cache_dir=tmp_path)
        expected = [str(round(s.timestamp * 1000)) for k, s in enumerate(originals[first:first + PER_SEQUENCE])
                    if k % 2 == 0 and _annotated(s)]
        assert expected and [f[1] for f in reader.frames] == expected


def test_once_images_are_undistorted(once, tmp_path):
    """The raw JPEGs carry the lens distortion; undistorted, they are the rendered pinhole images up to the blur of
    two bilinear resamplings and JPEG at 64x34 (mean error ~8-11 grey levels, half the distorted images' 17-30)."""
    root, originals = once
    want = originals[1]
    undistorted = ONCE(root, "raw_small", cache_dir=tmp_path)[1]
    raw = ONCE(root, "raw_small", undistort=False, cache_dir=tmp_path)[1]
    for cw in want.cameras:
        name = cw.name
        if name == "cam03":  # its 40-degree field of view keeps the distortion under 2 px: blur dominates
            continue
        inner = (slice(4, -4), slice(4, -4))  # the border samples outside the raw image
        after = np.abs(undistorted.camera(name).image.astype(int) - cw.image)[inner].mean()
        before = np.abs(raw.camera(name).image.astype(int) - cw.image)[inner].mean()
        assert after < 14 and after < 0.7 * before, (name, after, before)


def test_once_writer_refusals_and_interrupted_write(tmp_path, interrupt_after_two):
    world = SyntheticWorld(seed=2, lidar="nuscenes", cameras="once", num_frames=3, image_size=(32, 17))
    with pytest.raises(ConfigError, match=r"camera 'cam01' moves against the lidar .* ONCE keeps one calibration "
                                          r"per sequence; use lidar='once'"):
        write_once(world, tmp_path / "moving", 3)
    with pytest.raises(ConfigError, match=r"cameras \['image_00', 'image_01'\] are not ONCE's \(\['cam01', 'cam03', "
                                          r"'cam05', 'cam06', 'cam07', 'cam08', 'cam09'\]\); use cameras='once' or "
                                          r"'none'"):
        write_once({"seed": 1, "cameras": "kitti360"}, tmp_path / "named", 1)
    with pytest.raises(DataError, match=r"distortion: distortion must be 4 / 5 / 8 / 12 / 14 finite numbers"):
        write_once({"seed": 1, "cameras": "none"}, tmp_path / "lens", 1, distortion=(0.1, 0.2))
    with pytest.raises(KeyboardInterrupt):
        write_once({"seed": 4, "cameras": "none", "num_frames": 3}, tmp_path / "cut", 6, progress=interrupt_after_two)
    assert len(list((tmp_path / "cut/data/000000/lidar_roof").glob("*.bin"))) == 2  # whole frames only
    assert not (tmp_path / "cut/data/000000/000000.json").exists() and not (tmp_path / "cut/ImageSets").exists()
    assert not [p for p in (tmp_path / "cut").rglob(".*")]
    with pytest.raises(DataError, match=r"cut/ImageSets/raw_small.txt: sequence list of split 'raw_small' not found"):
        ONCE(tmp_path / "cut")


@pytest.mark.parametrize("layout, dataset", [("kitti360", "kitti360"), ("once", "once")])
def test_generate_writes_the_layout_from_the_command_line(tmp_path, layout, dataset, capsys):
    from lidarssl.cli import main

    out = tmp_path / layout
    assert main(["generate", f"out={out}", "frames=2", "frames_per_sequence=2", "val_fraction=0", f"layout={layout}",
                 "image_size=[64,36]"]) == 0
    assert capsys.readouterr().out.endswith(f"inspect them with: lidarssl info {out}\n")
    assert main(["info", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"dataset: {dataset}  ")
