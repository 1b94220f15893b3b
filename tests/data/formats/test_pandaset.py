"""PandaSet reader on the real sequence 002, against the numbers in shared/data/real/README.md section 7."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lidarssl.data.formats import PandaSet
from lidarssl.data.geometry import project_scan
from lidarssl.data.labels import load_class_map
from lidarssl.errors import DataError
from lidarssl.viz.overlay import save_overlay

pd = pytest.importorskip("pandas")  # PandaSet's own file format is a pickled DataFrame
pytestmark = pytest.mark.real

SEQ = "pandaset/002"
# Frame 00: rows per sensor, semseg histogram over both sensors, and points (world, depth > 0.1 m, no occlusion
# test) inside each 1920x1080 image.
ROWS = {"pandar64": 106169, "pandargt": 60599}
RAW_HISTOGRAM = {41: 45585, 7: 34211, 42: 33372, 13: 29754, 5: 11347, 14: 2295, 11: 2251, 19: 2036, 15: 1480,
                 8: 1460, 18: 1113, 4: 907, 31: 502, 10: 191, 36: 160, 37: 64, 6: 25, 30: 10, 34: 5}
IN_IMAGE = {"back_camera": 24387, "front_camera": 68638, "front_left_camera": 39575,
            "front_right_camera": 42737, "left_camera": 26721, "right_camera": 26532}
FRAME_TIMESTAMP = 1557539956.500022


@pytest.fixture(scope="module")
def scans(real_root, tmp_path_factory):
    index = tmp_path_factory.mktemp("index")
    return {sensor: PandaSet(real_root / "pandaset", sensor=sensor, cache_dir=index)[0] for sensor in ROWS}


def test_frames_and_split(real_root, cache_dir):
    # Sequence 002 starts at latitude 37.776, north of 37.6: a training sequence under ScaLR's rule.
    assert PandaSet(real_root / "pandaset", cache_dir=cache_dir).frames[0] == ["002", "00"]
    with pytest.raises(DataError, match=r"no labelled PandaSet frames in split 'val'"):
        PandaSet(real_root / "pandaset", "val", cache_dir=cache_dir)


@pytest.mark.parametrize("sensor", sorted(ROWS))
def test_shapes_dtypes_and_times(scans, sensor):
    scan = scans[sensor]
    n = ROWS[sensor]
    assert scan.dataset == f"pandaset-{sensor}" and scan.frame_id == "002/00"
    assert scan.points.shape == (n, 3) and scan.points.dtype == np.float32
    assert scan.intensity.dtype == np.float32 and scan.intensity.min() >= 0 and scan.intensity.max() <= 255
    assert scan.timestamp == pytest.approx(FRAME_TIMESTAMP)
    assert scan.time.dtype == np.float32 and -0.2 < scan.time.min() and scan.time.max() < 0.1
    assert [c.name for c in scan.cameras] == sorted(IN_IMAGE) and all(c.hw == (1080, 1920) for c in scan.cameras)
    for cam in scan.cameras:  # cameras fire about 50 ms before the lidar frame time
        assert -0.1 < cam.timestamp - scan.timestamp < 0


def test_semseg_histogram_matches_measured(scans):
    raw = np.concatenate([scans[s].raw_labels for s in ROWS])
    ids, counts = np.unique(raw, return_counts=True)
    assert dict(zip(ids.tolist(), counts.tolist())) == RAW_HISTOGRAM
    cmap = load_class_map("pandaset")
    assert sum(int(np.sum(scans[s].labels == cmap.classes.index("car"))) for s in ROWS) == RAW_HISTOGRAM[13]
    ignored = sum(int(np.sum(scans[s].labels == 255)) for s in ROWS)
    assert ignored == RAW_HISTOGRAM[4]  # only Reflection, of the classes present, is ignored


def test_class_map_targets(real_root, cache_dir):
    cmap = PandaSet(real_root / "pandaset", cache_dir=cache_dir).class_map
    assert cmap.num_classes == 17 and cmap.classes[0] == "road" and cmap.classes[-1] == "driveway"
    names = json.loads((real_root / SEQ / "annotations/semseg/classes.json").read_text())
    assert {int(k): v for k, v in names.items()} == {k: v for k, v in cmap.raw_names.items() if k}
    by_name = {cmap.raw_names[k]: k for k in cmap.raw_names}
    mapped = {name: cmap.map(np.array([by_name[name]]))[0] for name in
              ("Road", "Lane Line Marking", "Pickup Truck", "Pedestrian with Object", "Pylons", "Building",
               "Other Static Object", "Towed Object", "Emergency Vehicle", "Motorized Scooter", "Reflection",
               "Rolling Containers", "Animals - Bird", "Driveway", "Ground")}
    c = cmap.classes.index
    assert mapped == {"Road": c("road"), "Lane Line Marking": c("road-marking"), "Pickup Truck": c("truck"),
                      "Pedestrian with Object": c("pedestrian"), "Pylons": c("cone"), "Building": c("manmade"),
                      "Other Static Object": c("manmade"), "Towed Object": c("other-vehicle"),
                      "Emergency Vehicle": 255, "Motorized Scooter": 255, "Reflection": 255,
                      "Rolling Containers": 255, "Animals - Bird": 255, "Driveway": c("driveway"),
                      "Ground": c("ground")}


def test_points_per_camera_match_measured(scans):
    # The README counts both sensors' world points; the reader splits them, so the two sensors' counts add up.
    counts = {name: 0 for name in IN_IMAGE}
    for scan in scans.values():
        for cam, proj in zip(scan.cameras, project_scan(scan, min_depth=0.1)):
            counts[cam.name] += int(proj.valid.sum())
    assert counts == IN_IMAGE


def test_points_are_in_the_lidar_pose_frame(scans, real_root):
    both = np.concatenate([scans[s].points for s in ROWS])
    road = np.concatenate([scans[s].raw_labels for s in ROWS]) == 7
    assert np.median(both[road, 2]) == pytest.approx(-0.28, abs=0.005)
    assert np.median(np.linalg.norm(both[:, :2], axis=1)) == pytest.approx(18.2, abs=0.05)
    pose = json.loads((real_root / SEQ / "lidar/poses.json").read_text())[0]
    np.testing.assert_allclose(scans["pandar64"].ego_pose[:3, 3], [pose["position"][k] for k in "xyz"])


def test_z_shift_moves_points_and_keeps_the_cameras(real_root, scans, cache_dir):
    shifted = PandaSet(real_root / "pandaset", sensor="pandargt", z_shift=-1.6, cache_dir=cache_dir,
                       cameras=("front_camera",), with_labels=False)[0]
    base = scans["pandargt"]
    np.testing.assert_allclose(shifted.points, base.points + np.float32([0, 0, -1.6]), atol=1e-4)
    np.testing.assert_allclose(shifted.sensor_origin, [0, 0, -1.6], atol=1e-6)
    np.testing.assert_allclose(shifted.ego_pose @ [0, 0, -1.6, 1], base.ego_pose @ [0, 0, 0, 1], atol=1e-9)
    assert int(project_scan(shifted, min_depth=0.1)[0].valid.sum()) == int(
        project_scan(base, min_depth=0.1)[base.cameras.index(base.camera("front_camera"))].valid.sum())


def test_overlay_for_a_person_to_check(scans, tmp_path_factory):
    scan = scans["pandar64"]
    out = save_overlay(scan, tmp_path_factory.mktemp("overlays") / "pandaset_front.png", camera="front_camera",
                       class_names=load_class_map("pandaset").classes, min_depth=0.1)
    assert out.stat().st_size > 100_000


# --- on a writable copy ---------------------------------------------------------------------------------------------


def test_missing_image_is_an_error_or_skipped(writable_copy):
    root = writable_copy("pandaset")
    (root / "002/camera/left_camera/00.jpg").unlink()
    with pytest.raises(DataError, match=r"left_camera/00.jpg: camera image not found"):
        PandaSet(root)[0]
    with pytest.warns(UserWarning, match="left_camera/00.jpg"):
        scan = PandaSet(root, on_missing_camera="skip")[0]
    assert len(scan.cameras) == 5 and "left_camera" not in [c.name for c in scan.cameras]


def test_label_rows_must_match_lidar_rows(writable_copy):
    root = writable_copy("pandaset")
    path = root / "002/annotations/semseg/00.pkl.gz"
    pd.read_pickle(path).iloc[:-3].to_pickle(path)
    with pytest.raises(DataError, match=r"semseg/00.pkl.gz: expected a 'class' column with one row per lidar row "
                                        r"\(166768\), got a 'class' column and 166765 rows$"):
        PandaSet(root)[0]


def test_unknown_raw_label(writable_copy):
    root = writable_copy("pandaset")
    path = root / "002/annotations/semseg/00.pkl.gz"
    table = pd.read_pickle(path)
    table.iloc[:2, 0] = [43, 99]
    table.to_pickle(path)
    with pytest.raises(DataError, match=r"semseg/00.pkl.gz: raw label ids \[43, 99\] are not in the pandaset"):
        PandaSet(root)[0]


def test_renamed_class_table_is_refused(writable_copy):
    root = writable_copy("pandaset")
    path = root / "002/annotations/semseg/classes.json"
    names = json.loads(path.read_text())
    names["13"], names["14"] = names["14"], names["13"]
    path.write_text(json.dumps(names))
    with pytest.raises(DataError, match=r"classes.json: classes \[\(13, 'Pickup Truck'\), \(14, 'Car'\)\] differ"):
        PandaSet(root)[0]


def test_damaged_files(writable_copy, truncate):
    root = writable_copy("pandaset")
    truncate(root / "002/lidar/00.pkl.gz", 1000)
    with pytest.raises(DataError, match=r"lidar/00.pkl.gz: cannot read the lidar frame"):
        PandaSet(root)[0]


def test_bad_pose(writable_copy):
    root = writable_copy("pandaset")
    path = root / "002/camera/front_camera/poses.json"
    poses = json.loads(path.read_text())
    poses[0]["heading"]["w"] *= 2
    path.write_text(json.dumps(poses))
    with pytest.raises(DataError, match=r"front_camera/poses.json: heading quaternion .* not a rotation"):
        PandaSet(root)[0]


def test_wrong_layout_and_options(tmp_path, writable_copy):
    with pytest.raises(DataError, match=r"not a PandaSet folder; expected <root>/<sequence>/lidar/NN.pkl.gz"):
        PandaSet(tmp_path)
    root = writable_copy("pandaset")
    with pytest.raises(DataError, match=r"'sensor' must be one of \['pandar64', 'pandargt'\], got 'gt'"):
        PandaSet(root, sensor="gt")
