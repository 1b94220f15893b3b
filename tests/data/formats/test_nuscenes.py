"""nuScenes reader on the real keyframe and the mmdet3d lidarseg fixture, against shared/data/real/README.md.

The real samples come without the v1.0 JSON tables, so each test builds a table fixture in its tmp folder:
the keyframe's tables from ``nuscenes/calib/<sample token>.json`` (real sample and sample_data tokens, every
other token synthetic) and symlinks to the real lidar and camera files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from lidarssl.data.datasets import open_dataset
from lidarssl.data.formats import NuScenes
from lidarssl.data.formats._common import pose_from_quaternion
from lidarssl.data.geometry import (
    project_scan,
    quaternion_to_rotation,
    rotation_to_quaternion,
)
from lidarssl.data.labels import load_class_map
from lidarssl.errors import DataError
from lidarssl.synthetic.writers import NuScenesTables
from lidarssl.viz.overlay import save_overlay

pytestmark = pytest.mark.real

SAMPLE = "ca9a282c9e77460f8360f564131a8af5"
LIDAR_TOKEN = "9d9bf11fb0e144c8b446d54a8a00184f"  # printed for this sample by public tutorials
# Points with depth > 0.1 m inside each 1600x900 image, no occlusion test (README section 7).
IN_IMAGE = {"CAM_FRONT": 3067, "CAM_FRONT_RIGHT": 3079, "CAM_FRONT_LEFT": 3704, "CAM_BACK": 4826,
            "CAM_BACK_LEFT": 4097, "CAM_BACK_RIGHT": 3379}
IN_ANY_IMAGE = 20206
# Translation error of the static lidar -> camera chain that ignores the ego motion, metres.
EGO_MOTION = {"CAM_FRONT": 0.330, "CAM_FRONT_RIGHT": 0.256, "CAM_FRONT_LEFT": 0.401, "CAM_BACK": 0.097,
              "CAM_BACK_LEFT": 0.005, "CAM_BACK_RIGHT": 0.186}
TINY_LABELS = {24: 15, 28: 12, 31: 9, 17: 2, 27: 1, 30: 1}  # lidarseg histogram of the 40-point cut
FIXTURE_NOTE = "lidarssl test fixture; tokens other than the real sample and sample_data tokens are synthetic"


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)


def _pose(record: dict) -> np.ndarray:
    return pose_from_quaternion(record["translation"], record["rotation_wxyz"], "calib json", "pose")


@pytest.fixture(scope="module")
def calib(real_root) -> dict:
    return json.loads((real_root / "nuscenes" / "calib" / f"{SAMPLE}.json").read_text())


def build_keyframe(real_root: Path, calib: dict, root: Path) -> Path:
    """v1.0-mini tables for the real keyframe (scene-0061) in ``root``, linking to its real files."""
    src = real_root / "nuscenes"
    tables = NuScenesTables("v1.0-mini", namespace="lidarssl-test-fixture")
    log = tables.add_log("n015-2018-07-24-11-22-45+0800", "n015", "2018-07-24", "singapore-onenorth")
    scene = tables.add_scene("scene-0061", log, FIXTURE_NOTE)
    sample = tables.add_sample(scene, calib["timestamp_us"], token=SAMPLE)
    lidar = calib["lidar"]
    _link(src / lidar["file"], root / lidar["file"])
    tables.add_sample_data(sample, tables.add_calibrated_sensor("LIDAR_TOP", _pose(lidar["lidar2ego"])),
                           lidar["file"], calib["timestamp_us"], _pose(lidar["ego2global"]), token=LIDAR_TOKEN)
    for name, cam in calib["cameras"].items():
        _link(src / cam["file"], root / cam["file"])
        cs = tables.add_calibrated_sensor(name, _pose(cam["cam2ego"]), np.array(cam["camera_intrinsic"]))
        # the camera's ego pose at its own timestamp: what makes the chain fold in the ego motion
        tables.add_sample_data(sample, cs, cam["file"], cam["timestamp_us"],
                               _pose(cam["ego2global_at_cam_time_derived"]), width=cam["width"],
                               height=cam["height"], token=cam["sample_data_token"])
    tables.write(root)
    return root


@pytest.fixture
def make_keyframe(real_root, calib, tmp_path) -> Callable[[], Path]:
    """``make()`` builds the keyframe's table fixture in tmp_path and returns its root."""
    return lambda: build_keyframe(real_root, calib, tmp_path / "nuscenes")


@pytest.fixture(scope="module")
def keyframe(real_root, calib, tmp_path_factory):
    root = build_keyframe(real_root, calib, tmp_path_factory.mktemp("keyframe") / "nuscenes")
    return NuScenes(root, "mini_train", with_labels=False)[0]


def test_quaternion_helpers_match_the_real_matrices(calib):
    # The calib file holds both forms of each pose: w, x, y, z quaternions must give its matrices.
    records = [calib["lidar"]["lidar2ego"], calib["lidar"]["ego2global"]]
    records += [cam["cam2ego"] for cam in calib["cameras"].values()]
    for rec in records:
        R = np.array(rec["matrix"])[:3, :3]
        np.testing.assert_allclose(quaternion_to_rotation(rec["rotation_wxyz"]), R, atol=2e-7)
        q = rotation_to_quaternion(quaternion_to_rotation(rec["rotation_wxyz"]))
        np.testing.assert_allclose(q * np.sign(rec["rotation_wxyz"][0]), rec["rotation_wxyz"], atol=1e-12)


def test_keyframe_points(keyframe, calib):
    assert keyframe.dataset == "nuscenes" and keyframe.frame_id == SAMPLE
    assert keyframe.points.shape == (34688, 3) and keyframe.points.dtype == np.float32
    assert keyframe.intensity.min() == 0 and keyframe.intensity.max() == 255
    assert np.array_equal(keyframe.intensity, np.round(keyframe.intensity))
    assert np.array_equal(np.unique(keyframe.ring), np.arange(32))
    assert keyframe.timestamp == pytest.approx(1532402927.647951) and not keyframe.time.any()
    assert keyframe.labels is None
    lidar = calib["lidar"]
    lidar_to_global = np.array(lidar["ego2global"]["matrix"]) @ np.array(lidar["lidar2ego"]["matrix"])
    np.testing.assert_allclose(keyframe.ego_pose, lidar_to_global, atol=1e-5)


def test_points_per_camera_need_the_ego_motion_chain(keyframe):
    projections = project_scan(keyframe, min_depth=0.1)
    assert {cam.name: int(p.valid.sum()) for cam, p in zip(keyframe.cameras, projections)} == IN_IMAGE
    assert int(np.any([p.valid for p in projections], axis=0).sum()) == IN_ANY_IMAGE


def test_extrinsics_fold_in_the_ego_motion(keyframe, calib):
    lidar2ego = np.array(calib["lidar"]["lidar2ego"]["matrix"])
    static_error = {}
    for cam in keyframe.cameras:
        given = calib["cameras"][cam.name]
        # mmdet3d's lidar2cam includes the ego motion; ours, rebuilt from the tables, must agree
        np.testing.assert_allclose(cam.lidar_to_cam, np.array(given["lidar2cam"]), atol=2e-6)
        assert cam.timestamp == pytest.approx(given["timestamp_us"] * 1e-6) and cam.hw == (900, 1600)
        static = np.linalg.inv(np.array(given["cam2ego"]["matrix"])) @ lidar2ego
        static_error[cam.name] = np.linalg.norm(static[:3, 3] - cam.lidar_to_cam[:3, 3])
    # What the static chain inv(cam2ego) @ lidar2ego would get wrong: about the ego motion between the two
    # timestamps that the README measures per camera (0.328, 0.255, 0.399, 0.096, 0.005, 0.185 m).
    assert static_error == pytest.approx(EGO_MOTION, abs=0.003)


def test_overlay_for_a_person_to_check(keyframe, tmp_path):
    out = save_overlay(keyframe, tmp_path / "nuscenes_cam_front.png", camera="CAM_FRONT", min_depth=0.1)
    assert out.stat().st_size > 100_000


def test_splits_versions_and_layout_detection(make_keyframe):
    root = make_keyframe()
    for split in ("mini_train", "train", "all"):
        assert NuScenes(root, split, with_labels=False).frames[0][:2] == ["scene-0061", SAMPLE]
    assert len(NuScenes(root, "mine", splits={"mine": ["scene-0061", "scene-9999"]}, with_labels=False)) == 1
    (root / "splits.json").write_text(json.dumps({"mine": ["scene-0061"]}))
    assert len(NuScenes(root, "mine", with_labels=False)) == 1
    with pytest.raises(DataError, match=r"no scene of split 'mini_val' \(scene-0103, scene-0916\) in v1.0-mini"):
        NuScenes(root, "mini_val", with_labels=False)
    with pytest.raises(DataError, match=r"split 'test' of v1.0-mini needs its scene list; export the devkit"):
        NuScenes(root, "test", with_labels=False)
    with pytest.raises(DataError, match=r"v1.0-trainval: no such nuScenes table folder"):
        NuScenes(root, "all", version="v1.0-trainval")
    dataset = open_dataset(root, split="all", with_labels=False)
    assert isinstance(dataset, NuScenes) and dataset.version == "v1.0-mini"


def test_camera_subset_and_no_images(make_keyframe):
    root = make_keyframe()
    scan = NuScenes(root, cameras=("CAM_BACK", "CAM_FRONT"), with_labels=False)[0]
    assert [c.name for c in scan.cameras] == ["CAM_BACK", "CAM_FRONT"]
    assert NuScenes(root, with_images=False, with_labels=False)[0].cameras == []


def test_missing_files_name_the_file(make_keyframe, calib):
    root = make_keyframe()
    (root / calib["cameras"]["CAM_BACK"]["file"]).unlink()
    with pytest.raises(DataError, match=r"CAM_BACK__1532402927637525.jpg: camera image not found"):
        NuScenes(root, with_labels=False)[0]
    with pytest.warns(UserWarning, match="CAM_BACK__1532402927637525.jpg"):
        scan = NuScenes(root, with_labels=False, on_missing_camera="skip")[0]
    assert len(scan.cameras) == 5
    (root / calib["lidar"]["file"]).unlink()
    with pytest.raises(DataError, match=r"LIDAR_TOP__1532402927647951.pcd.bin: point file not found"):
        NuScenes(root, with_labels=False)[0]
    (root / "v1.0-mini" / "ego_pose.json").unlink()
    with pytest.raises(DataError, match=r"v1.0-mini/ego_pose.json: nuScenes table not found"):
        NuScenes(root, with_labels=False, refresh=True)


def test_bad_tables_name_the_table(make_keyframe):
    root = make_keyframe()
    path = root / "v1.0-mini" / "calibrated_sensor.json"
    table = json.loads(path.read_text())
    table[0]["rotation"] = [2.0, 0.0, 0.0, 0.0]  # a scaling, not a rotation
    path.write_text(json.dumps(table))
    with pytest.raises(DataError, match=r"calibrated_sensor.json: calibration \w+ \(of sample_data 9d9bf11f\w+\) "
                                        r"quaternion \[2.0, 0.0, 0.0, 0.0\] has norm 2.0000, not 1"):
        NuScenes(root, with_labels=False)
    del table[1]
    path.write_text(json.dumps(table))
    with pytest.raises(DataError, match=r"calibrated_sensor.json: no record with token '\w+' \(referred to by "
                                        r"sample_data e3d495d4ac534d54b321f50006683844\)"):
        NuScenes(root, with_labels=False)
    path.write_text(json.dumps([{"token": "x"}]))
    with pytest.raises(DataError, match=r"calibrated_sensor.json: record 0 lacks fields \['camera_intrinsic', "):
        NuScenes(root, with_labels=False)


def test_labels_need_lidarseg(make_keyframe):
    root = make_keyframe()  # the keyframe has no lidarseg file: the table fixture lists none
    with pytest.raises(DataError, match=r"lidarseg.json: no record for the LIDAR_TOP keyframe 9d9bf11f"):
        NuScenes(root)


# --- mmdet3d's tiny lidarseg fixture ----------------------------------------------------------------------------

TINY_KEY = "samples/LIDAR_TOP/n015-2018-08-02-17-16-37+0800__LIDAR_TOP__1533201470948018.pcd.bin"
TINY_LABEL = "lidarseg/v1.0-trainval/5f6c1e0a0c3b444b97e78d2aa3fa34d2_lidarseg.bin"
TINY_SWEEPS = ("sweeps/LIDAR_TOP/n015-2018-08-02-17-16-37+0800__LIDAR_TOP__1533201470898274.pcd.bin",  # 100 pts
               "sweeps/LIDAR_TOP/n008-2018-09-18-12-07-26-0400__LIDAR_TOP__1537287083900561.pcd.bin")  # 400 pts
# LIDAR_TOP turned 90 degrees about z on the ego (as in nuScenes); the ego drives 0.5 m along x per sweep.
TINY_CALIB = np.array([[0.0, -1.0, 0.0, 0.94], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.84], [0, 0, 0, 1]])


def _tiny(real_root: Path, root: Path, key_file: str = TINY_KEY) -> Path:
    """v1.0-trainval tables for the 40-point keyframe, its lidarseg file and two earlier sweeps."""
    src = real_root / "nuscenes_mmdet3d_tiny"
    for rel in {key_file, TINY_LABEL, *TINY_SWEEPS}:
        _link(src / rel, root / rel)
    tables = NuScenesTables("v1.0-trainval", namespace="lidarssl-test-tiny")
    scene = tables.add_scene("scene-0001", tables.add_log("n015-2018-08-02-17-16-37+0800", "n015", "2018-08-02",
                                                          "singapore-onenorth"), FIXTURE_NOTE)
    cs = tables.add_calibrated_sensor("LIDAR_TOP", TINY_CALIB)
    t_key = 1533201470948018
    sample = tables.add_sample(scene, t_key)
    for k, rel in reversed(list(enumerate(TINY_SWEEPS, 1))):  # oldest first, so prev/next chain in time order
        ego = np.eye(4)
        ego[0, 3] = 10.0 - 0.5 * k
        tables.add_sample_data(sample, cs, rel, t_key - 50_000 * k, ego, is_key_frame=False)
    ego = np.eye(4)
    ego[0, 3] = 10.0
    lidar = tables.add_sample_data(sample, cs, key_file, t_key, ego, token="5f6c1e0a0c3b444b97e78d2aa3fa34d2")
    tables.add_lidarseg(lidar, TINY_LABEL)
    tables.write(root)
    return root


def test_tiny_lidarseg_labels(real_root, tmp_path):
    scan = NuScenes(_tiny(real_root, tmp_path), "all", with_images=False)[0]
    assert scan.points.shape == (40, 3) and scan.raw_labels.dtype == np.uint8
    ids, counts = np.unique(scan.raw_labels, return_counts=True)
    assert dict(zip(ids.tolist(), counts.tolist())) == TINY_LABELS
    c = load_class_map("nuscenes").classes.index
    ids, counts = np.unique(scan.labels, return_counts=True)
    assert dict(zip(ids.tolist(), counts.tolist())) == {c("driveable_surface"): 15, c("manmade"): 12, 255: 9,
                                                        c("car"): 2, c("terrain"): 1, c("vegetation"): 1}
    ego = scan.raw_labels == 31  # vehicle.ego returns lie within a metre of the sensor
    assert np.linalg.norm(scan.points[ego, :2], axis=1).max() < 1.0


def test_tiny_sweeps_move_into_the_keyframe(real_root, tmp_path):
    root = _tiny(real_root, tmp_path)
    src = real_root / "nuscenes_mmdet3d_tiny"
    raw = [np.fromfile(src / rel, np.float32).reshape(-1, 5) for rel in (TINY_KEY, *TINY_SWEEPS)]
    scan = NuScenes(root, "all", sweeps=2, with_images=False)[0]
    assert len(scan) == 540 and len(NuScenes(root, "all", sweeps=1, with_images=False)[0]) == 140
    parts = np.split(np.arange(540), [40, 140])
    # The ego moved +0.5 m along its x per sweep; in the 90-degree-turned lidar frame, the older sweeps'
    # static points therefore sit 0.5 m and 1 m further along the lidar's +y.
    for k, idx in enumerate(parts):
        np.testing.assert_allclose(scan.points[idx], raw[k][:, :3] + [0.0, 0.5 * k, 0.0], atol=1e-5)
        np.testing.assert_array_equal(scan.intensity[idx], raw[k][:, 3])
        np.testing.assert_array_equal(scan.ring[idx], raw[k][:, 4].astype(np.uint8))
        np.testing.assert_allclose(scan.time[idx], -0.05 * k, atol=1e-7)
    assert not scan.raw_labels[40:].any() and np.all(scan.labels[40:] == 255)  # sweeps have no labels


def test_label_count_must_match(real_root, tmp_path):
    root = _tiny(real_root, tmp_path, key_file=TINY_SWEEPS[0])  # a 100-point scan with the 40 labels
    with pytest.raises(DataError, match=r"5f6c1e0a0c3b444b97e78d2aa3fa34d2_lidarseg.bin: holds 40 uint8 labels "
                                        r"but its scan has 100 points"):
        NuScenes(root, "all", with_images=False)[0]


def test_category_table_must_match_the_class_map(real_root, tmp_path):
    root = _tiny(real_root, tmp_path)
    path = root / "v1.0-trainval" / "category.json"
    table = json.loads(path.read_text())
    table[17]["name"], table[23]["name"] = table[23]["name"], table[17]["name"]
    path.write_text(json.dumps(table))
    with pytest.raises(DataError, match=r"category.json: lidarseg indices \[\(17, 'vehicle.truck'\), "
                                        r"\(23, 'vehicle.car'\)\] differ"):
        NuScenes(root, "all")
