"""KITTI object reader on the real frames, against the numbers in shared/data/real/README.md section 7."""

from __future__ import annotations

import numpy as np
import pytest

from lidarssl.data.formats import KITTIObject
from lidarssl.data.formats._common import homogeneous, read_kitti_calib
from lidarssl.data.geometry import project_scan
from lidarssl.errors import DataError
from lidarssl.viz.overlay import save_overlay

pytestmark = pytest.mark.real

# frame: (points, image (H, W), fx, points with depth > 0.1 m inside image_2 through P2 @ R0_rect @ Tr_velo_to_cam)
MEASURED = {
    "000000": (115384, (370, 1224), 707.0493, 20285),
    "000001": (120268, (375, 1242), 721.5377, 18630),
}
MEASURED_REDUCED = {"000008": (17238, (375, 1242), 721.5377, 17238)}


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("index")


@pytest.fixture(scope="module")
def scans(real_root, index_dir):
    full = KITTIObject(real_root / "kitti", cache_dir=index_dir)
    reduced = KITTIObject(real_root / "kitti", velodyne_reduced=True, cache_dir=index_dir)
    return {scan.frame_id: scan for reader in (full, reduced) for scan in reader}


@pytest.mark.parametrize("stem", sorted({**MEASURED, **MEASURED_REDUCED}))
def test_points_image_and_projection_match_measured(scans, stem):
    n, hw, fx, in_image = {**MEASURED, **MEASURED_REDUCED}[stem]
    scan = scans[stem]
    assert scan.dataset == "kitti" and scan.labels is None
    assert scan.points.shape == (n, 3) and scan.points.dtype == np.float32
    assert scan.intensity.dtype == np.float32 and 0 <= scan.intensity.min() and scan.intensity.max() < 1
    (cam,) = scan.cameras
    assert cam.name == "image_2" and cam.hw == hw and cam.image.dtype == np.uint8
    assert cam.K[0, 0] == pytest.approx(fx)
    assert int(project_scan(scan, min_depth=0.1)[0].valid.sum()) == in_image


def test_extrinsic_equals_the_kitti_chain(real_root, scans):
    calib = read_kitti_calib(real_root / "kitti/training/calib/000000.txt")
    chain = (calib["P2"].reshape(3, 4) @ homogeneous(calib["R0_rect"].reshape(3, 3))
             @ homogeneous(calib["Tr_velo_to_cam"].reshape(3, 4)))
    cam = scans["000000"].cameras[0]
    np.testing.assert_allclose(cam.K @ cam.lidar_to_cam[:3], chain, rtol=0, atol=1e-9)


def test_overlay_for_a_person_to_check(scans, tmp_path_factory):
    # Points should sit on the pedestrian, the road and the buildings; the PNG stays in pytest's tmp folder.
    out = save_overlay(scans["000000"], tmp_path_factory.mktemp("overlays") / "kitti_000000.png", min_depth=0.1)
    assert out.stat().st_size > 100_000


# --- on a writable copy ---------------------------------------------------------------------------------------------


def _replace_line(path, key, values):
    lines = [f"{key}: {values}" if line.startswith(f"{key}:") else line for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")


def test_noisy_r0_rect_is_orthonormalised(writable_copy):
    root = writable_copy("kitti")
    calib = root / "training/calib/000001.txt"
    R0 = read_kitti_calib(calib)["R0_rect"]
    _replace_line(calib, "R0_rect", " ".join(f"{v:.3f}" for v in R0))  # off a rotation by ~5e-4
    K, lidar_to_cam = KITTIObject(root).camera_calibration("000001")
    # What is left is Tr_velo_to_cam's own text noise (~1e-7), far below the 5e-4 of the rounded R0_rect.
    np.testing.assert_allclose(lidar_to_cam[:3, :3].T @ lidar_to_cam[:3, :3], np.eye(3), atol=1e-6)
    scan = KITTIObject(root)[1]
    assert abs(int(project_scan(scan, min_depth=0.1)[0].valid.sum()) - MEASURED["000001"][3]) < 50


def test_non_rigid_calibration(writable_copy):
    root = writable_copy("kitti")
    calib = root / "training/calib/000000.txt"
    _replace_line(calib, "R0_rect", "2 0 0 0 1 0 0 0 1")
    with pytest.raises(DataError, match=r"calib/000000.txt: field 'R0_rect' must be a rigid transform"):
        KITTIObject(root)[0]
    _replace_line(calib, "R0_rect", "1 0 0 0 1 0 0 0 1")
    _replace_line(calib, "Tr_velo_to_cam", "1 0 0 0 0 1 0 0 0 0 -1 0")  # a reflection
    with pytest.raises(DataError, match=r"calib/000000.txt: field 'Tr_velo_to_cam' must be a rigid transform"):
        KITTIObject(root)[0]
    _replace_line(calib, "Tr_velo_to_cam", "1 0 0")
    with pytest.raises(DataError, match=r"calibration 'Tr_velo_to_cam' must be 12 finite numbers"):
        KITTIObject(root)[0]


def test_truncated_scan(writable_copy, truncate):
    root = writable_copy("kitti")
    truncate(root / "training/velodyne/000001.bin", 4)
    with pytest.raises(DataError, match=r"velodyne/000001.bin: 1924284 bytes is not a whole number of 16-byte"):
        KITTIObject(root)[1]


def test_missing_image_is_an_error_or_skipped(writable_copy):
    root = writable_copy("kitti")
    (root / "training/image_2/000001.png").unlink()
    with pytest.raises(DataError, match=r"image_2/000001.png: camera image not found"):
        KITTIObject(root)[1]
    with pytest.warns(UserWarning, match="000001.png"):
        scan = KITTIObject(root, on_missing_camera="skip")[1]
    assert scan.cameras == [] and len(scan) == MEASURED["000001"][0]


def test_image_set_splits(writable_copy):
    root = writable_copy("kitti")
    with pytest.raises(DataError, match=r"ImageSets/val.txt: frame list of split 'val'"):
        KITTIObject(root, "val")
    (root / "ImageSets").mkdir()
    (root / "ImageSets/val.txt").write_text("000001\n")
    reader = KITTIObject(root, "val")
    assert reader.frames == [["000001"]] and reader[0].frame_id == "000001"


def test_wrong_layout(tmp_path):
    with pytest.raises(DataError, match=r"not a KITTI object folder \(no training/\); expected <root>/training/velo"):
        KITTIObject(tmp_path)
    (tmp_path / "training/velodyne").mkdir(parents=True)
    with pytest.raises(DataError, match=r"velodyne: no .bin scans"):
        KITTIObject(tmp_path)
