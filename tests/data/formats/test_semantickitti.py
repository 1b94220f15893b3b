"""SemanticKITTI reader on the real sequence-00 scans, against the numbers in shared/data/real/README.md section 7."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lidarssl.data.formats import SemanticKITTI
from lidarssl.data.formats._common import homogeneous, read_kitti_calib
from lidarssl.data.geometry import project, project_scan
from lidarssl.errors import DataError

pytestmark = pytest.mark.real

SEQ = "semantic_kitti/dataset/sequences/00"

# Raw semantic-id histograms (README section 7).
RAW_HISTOGRAMS = {
    "000000": {40: 34228, 70: 27123, 48: 26360, 50: 18268, 10: 4234, 44: 3268, 72: 2964, 0: 2184, 52: 1471,
               99: 1227, 71: 1192, 60: 1053, 80: 532, 51: 370, 81: 102, 255: 88, 1: 4},
    "000001": {40: 33233, 70: 27116, 48: 26040, 50: 19180, 10: 4387, 44: 3831, 72: 2765, 0: 2170, 52: 1447,
               71: 1242, 99: 1168, 60: 868, 80: 585, 51: 386, 81: 100, 255: 73, 1: 14},
}
NUM_POINTS = {"000000": 124668, "000001": 124605}
# Points with depth > 0.1 m inside the 1241x376 image_2 field of view through P2 @ Tr.
IN_IMAGE_2 = {"000000": 19369, "000001": 19154}


@pytest.fixture(scope="module")
def reader(real_root, tmp_path_factory) -> SemanticKITTI:
    return SemanticKITTI(real_root / "semantic_kitti", "train", cache_dir=tmp_path_factory.mktemp("index"))


@pytest.fixture(scope="module")
def scans(reader):
    return {scan.frame_id.split("/")[1]: scan for scan in reader}


def test_frames_shapes_and_dtypes(reader, scans):
    assert [f[0] for f in reader.frames] == ["00"] * len(reader)
    assert set(NUM_POINTS) <= set(scans)
    for stem, n in NUM_POINTS.items():
        scan = scans[stem]
        assert scan.frame_id == f"00/{stem}" and scan.dataset == "semantickitti"
        assert scan.points.shape == (n, 3) and scan.points.dtype == np.float32
        assert scan.intensity.shape == (n,) and 0 <= scan.intensity.min() and scan.intensity.max() <= 1
        assert scan.labels.dtype == np.int64 and scan.raw_labels.shape == scan.instance.shape == (n,)
        assert np.abs(scan.points[:, :2]).max() < 80
        assert scan.cameras == []  # sequence 00 has no image_2 here, which is not an error
        np.testing.assert_array_equal(scan.ego_pose, np.eye(4))  # no poses.txt


@pytest.mark.parametrize("stem", sorted(RAW_HISTOGRAMS))
def test_raw_histogram_matches_measured(scans, stem):
    ids, counts = np.unique(scans[stem].raw_labels, return_counts=True)
    assert dict(zip(ids.tolist(), counts.tolist())) == RAW_HISTOGRAMS[stem]
    assert len(np.setdiff1d(np.unique(scans[stem].instance), [0])) == 14


@pytest.mark.parametrize("stem", sorted(RAW_HISTOGRAMS))
def test_learning_map_folds_classes(reader, scans, stem):
    raw = RAW_HISTOGRAMS[stem]
    counts = np.bincount(scans[stem].labels, minlength=256)
    names = reader.class_map.classes
    assert counts[names.index("road")] == raw[40] + raw[60]  # lane-marking joins road
    assert counts[names.index("motorcyclist")] == raw[255]  # moving-motorcyclist folds into motorcyclist
    assert counts[names.index("parking")] == raw[44] and counts[names.index("car")] == raw[10]
    assert counts[255] == raw[0] + raw[1] + raw[52] + raw[99]  # unlabeled, outlier, other-structure, other-object


def test_class_map_is_the_standard_one(reader):
    cmap = reader.class_map
    assert cmap.num_classes == 19 and cmap.classes[0] == "car" and cmap.classes[-1] == "traffic-sign"
    assert len(cmap.raw_names) == 34
    raw = np.array([252, 253, 254, 255, 256, 257, 258, 259, 13, 16, 60, 52, 99, 0, 1])
    assert cmap.map(raw).tolist() == [0, 6, 5, 7, 4, 4, 3, 4, 4, 4, 8, 255, 255, 255, 255]


def test_calibration_reproduces_p2_tr_projection(reader, scans, real_root):
    K, lidar_to_cam = reader.camera_calibration("00")
    calib = read_kitti_calib(real_root / SEQ / "calib.txt")
    P2_Tr = calib["P2"].reshape(3, 4) @ homogeneous(calib["Tr"].reshape(3, 4))
    np.testing.assert_allclose(K @ lidar_to_cam[:3], P2_Tr, rtol=0, atol=1e-9)
    for stem, expected in IN_IMAGE_2.items():
        assert int(project(scans[stem].points, K, lidar_to_cam, (376, 1241), min_depth=0.1).valid.sum()) == expected


# --- on a writable copy ---------------------------------------------------------------------------------------------


def _with_images(root, stems):
    image_dir = root / "dataset/sequences/00/image_2"
    image_dir.mkdir()
    for stem in stems:
        Image.new("RGB", (1241, 376)).save(image_dir / f"{stem}.png")


def test_image_2_becomes_a_camera(writable_copy):
    root = writable_copy("semantic_kitti")
    _with_images(root, ["000000", "000001"])
    scan = SemanticKITTI(root)[0]
    (cam,) = scan.cameras
    assert cam.name == "image_2" and cam.hw == (376, 1241)
    assert int(project_scan(scan, min_depth=0.1)[0].valid.sum()) == IN_IMAGE_2["000000"]
    assert SemanticKITTI(root, with_images=False)[0].cameras == []


def test_missing_image_is_an_error_or_skipped(writable_copy):
    root = writable_copy("semantic_kitti")
    _with_images(root, ["000001"])
    with pytest.raises(DataError, match=r"image_2/000000.png: camera image not found"):
        SemanticKITTI(root)[0]
    with pytest.warns(UserWarning, match="000000.png"):
        assert SemanticKITTI(root, on_missing_camera="skip")[0].cameras == []


def test_poses_and_times_are_used(writable_copy):
    root = writable_copy("semantic_kitti")
    seq = root / "dataset/sequences/00"
    # Camera 0 one metre forward (its z axis) in frame 1: the lidar moves ~1 m along its own x (forward).
    (seq / "poses.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0 0 0 1 0 0 0 0 1 1\n")
    (seq / "times.txt").write_text("0.0\n0.103\n")
    scans = list(SemanticKITTI(root))
    np.testing.assert_allclose(scans[0].ego_pose, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(scans[1].ego_pose[:3, :3], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(scans[1].ego_pose[:3, 3], [1, 0, 0], atol=0.02)
    assert scans[1].timestamp == pytest.approx(0.103)


def test_truncated_scan(writable_copy, truncate):
    root = writable_copy("semantic_kitti")
    truncate(root / SEQ.removeprefix("semantic_kitti/") / "velodyne/000000.bin", 6)
    with pytest.raises(DataError, match=r"velodyne/000000.bin: 1994682 bytes is not a whole number of 16-byte"):
        SemanticKITTI(root)[0]


def test_label_count_mismatch(writable_copy, truncate):
    root = writable_copy("semantic_kitti")
    truncate(root / "dataset/sequences/00/labels/000001.label", 8)
    with pytest.raises(DataError, match=r"labels/000001.label: holds 124603 uint32 labels but its scan has 124605"):
        SemanticKITTI(root)[1]


def test_unknown_raw_label(writable_copy):
    root = writable_copy("semantic_kitti")
    path = root / "dataset/sequences/00/labels/000000.label"
    packed = np.fromfile(path, "<u4")
    packed[:3] = [5, 12 | (7 << 16), 300]  # ids inside the table's range but not SemanticKITTI ids, and one beyond
    packed.tofile(path)
    with pytest.raises(DataError, match=r"000000.label: raw label ids \[5, 12, 300\] are not in the semantickitti"):
        SemanticKITTI(root)[0]


def test_missing_labels(writable_copy):
    root = writable_copy("semantic_kitti")
    (root / "dataset/sequences/00/labels/000000.label").unlink()
    with pytest.raises(DataError, match=r"000000.label: label file not found"):
        SemanticKITTI(root)[0]
    assert SemanticKITTI(root, with_labels=False)[0].labels is None


def test_non_rigid_calibration(writable_copy):
    root = writable_copy("semantic_kitti")
    calib = root / "dataset/sequences/00/calib.txt"
    lines = calib.read_text().splitlines()
    lines[-1] = "Tr: 1 0 0 0 0 2 0 0 0 0 1 0"
    calib.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"calib.txt: field 'Tr' must be a rigid transform"):
        SemanticKITTI(root).camera_calibration("00")


def test_wrong_layout_and_split(writable_copy, tmp_path):
    with pytest.raises(DataError, match=r"not a SemanticKITTI folder; expected <root>/dataset/sequences/XX/velodyne"):
        SemanticKITTI(tmp_path)
    root = writable_copy("semantic_kitti")
    with pytest.raises(DataError, match=r"no scans of split 'val' \(sequences 08\)"):
        SemanticKITTI(root, "val")
    with pytest.raises(DataError, match=r"unknown split 'valid'"):
        SemanticKITTI(root, "valid")
