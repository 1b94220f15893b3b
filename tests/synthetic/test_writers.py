"""Synthetic data written in the nuScenes, SemanticKITTI and PandaSet layouts and read back by their readers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lidarssl.data.formats import NuScenes, PandaSet, SemanticKITTI
from lidarssl.data.geometry import project
from lidarssl.data.labels import load_class_map
from lidarssl.data.scan import Scan
from lidarssl.errors import ConfigError, DataError
from lidarssl.synthetic import (
    SyntheticWorld,
    write_nuscenes,
    write_pandaset,
    write_semantickitti,
)
from lidarssl.synthetic.plan import Generation
from lidarssl.synthetic.writers import (
    NUSCENES_TO_PANDASET,
    NUSCENES_TO_SEMANTICKITTI,
    PANDASET_CAMERA_NAMES,
)
from lidarssl.synthetic.writers.nuscenes import TABLES

FRAMES, PER_SEQUENCE = 10, 5  # two sequences: train, then val
NUSCENES = load_class_map("nuscenes")


@pytest.fixture(scope="module")
def nus_world() -> SyntheticWorld:
    return SyntheticWorld(seed=21, num_frames=PER_SEQUENCE, image_size=(64, 36))


@pytest.fixture(scope="module")
def kitti_world() -> SyntheticWorld:
    return SyntheticWorld(seed=23, lidar="kitti", cameras="kitti", num_frames=PER_SEQUENCE, image_size=(96, 32))


def _originals(world: SyntheticWorld) -> list[Scan]:
    return [f.scan for f in Generation(world, FRAMES, frames_per_sequence=PER_SEQUENCE).frames()]


@pytest.fixture(scope="module")
def nus_scans(nus_world) -> list[Scan]:
    return _originals(nus_world)


def _same_projection(got: Scan, want: Scan, names: dict[str, str] | None = None) -> None:
    """Every camera of ``want`` projects ``want``'s points onto the same pixels as ``got``'s camera does."""
    names = names or {c.name: c.name for c in want.cameras}
    assert sorted(c.name for c in got.cameras) == sorted(names.values())
    for cw in want.cameras:
        cg = got.camera(names[cw.name])
        a = project(want.points, cw.K, cw.lidar_to_cam, cw.hw)
        b = project(got.points, cg.K, cg.lidar_to_cam, cg.hw)
        assert a.valid.sum() > 0 and np.array_equal(a.valid, b.valid)
        assert np.abs(a.uv[a.valid] - b.uv[b.valid]).max() < 1e-3  # pixels
        assert cg.image.shape == cw.image.shape and np.abs(cg.image.astype(int) - cw.image).mean() < 8  # JPEG


def _expected_merges(target: str, table: dict[int, int]) -> dict[str, str]:
    """nuScenes training class -> target training class (or 'ignore') through ``table``; one per class."""
    cmap = load_class_map(target)
    out: dict[str, set[str]] = {}
    for raw, train in NUSCENES.learning_map.items():
        t = cmap.lookup_table[table[raw]]
        out.setdefault(NUSCENES.classes[train], set()).add(cmap.classes[t] if t != cmap.ignore_index else "ignore")
    assert all(len(v) == 1 for v in out.values()), out  # every nuScenes class lands in exactly one class
    return {k: v.pop() for k, v in out.items()}


# --- nuScenes ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nus_root(nus_world, tmp_path_factory) -> tuple[Path, list[tuple[int, int]]]:
    root = tmp_path_factory.mktemp("nuscenes")
    calls: list[tuple[int, int]] = []
    write_nuscenes(nus_world, root, FRAMES, frames_per_sequence=PER_SEQUENCE, jpeg_quality=90,
                   progress=lambda done, total: calls.append((done, total)))
    return root, calls


def test_nuscenes_round_trip(nus_root, nus_scans):
    root, calls = nus_root
    assert calls == [(k, FRAMES) for k in range(1, FRAMES + 1)]
    assert json.loads((root / "splits.json").read_text()) == {"train": ["scene-0001"], "val": ["scene-0002"]}
    train, val = NuScenes(root, "train"), NuScenes(root, "val")
    assert len(train) == len(val) == PER_SEQUENCE and train.version == "v1.0-trainval"
    for got, want in zip([*train, *val], nus_scans):
        assert np.array_equal(got.points, want.points) and np.array_equal(got.intensity, want.intensity)
        assert np.array_equal(got.ring, want.ring)
        assert np.array_equal(got.raw_labels, want.raw_labels) and np.array_equal(got.labels, want.labels)
        np.testing.assert_allclose(got.ego_pose, want.ego_pose, atol=1e-9)
        assert got.timestamp == pytest.approx(want.timestamp, abs=1e-6)
        for cg, cw in zip(got.cameras, want.cameras):
            assert cg.name == cw.name and cg.timestamp == pytest.approx(cw.timestamp, abs=1e-6)
            np.testing.assert_allclose(cg.lidar_to_cam, cw.lidar_to_cam, atol=1e-9)
        _same_projection(got, want)


def test_nuscenes_sweeps_are_earlier_keyframes(nus_root, nus_scans):
    root, _ = nus_root
    got = NuScenes(root, "train", sweeps=1)[2]
    now, before = nus_scans[2], nus_scans[1]
    assert len(got) == len(now) + len(before)
    T = np.linalg.inv(now.ego_pose) @ before.ego_pose  # sweep lidar -> keyframe lidar through the global frame
    np.testing.assert_allclose(got.points[len(now):], before.points @ T[:3, :3].T + T[:3, 3], atol=1e-4)
    assert np.allclose(got.time[len(now):], -0.1) and np.all(got.labels[len(now):] == 255)


def test_nuscenes_tables_are_what_the_devkit_loads(nus_root):
    """The consistency nuscenes-devkit's NuScenes() relies on when it loads and reverse-indexes the tables."""
    root, _ = nus_root
    version = root / "v1.0-trainval"
    t = {name: json.loads((version / f"{name}.json").read_text()) for name in TABLES}
    token = {name: {r["token"]: r for r in records} for name, records in t.items()}
    assert all(len(token[n]) == len(t[n]) for n in TABLES)  # unique tokens
    assert t["instance"] == [] and t["sample_annotation"] == [] and len(t["visibility"]) == 4
    assert sorted((c["index"], c["name"]) for c in t["category"]) == sorted(NUSCENES.raw_names.items())
    for sd in t["sample_data"]:
        sensor = token["sensor"][token["calibrated_sensor"][sd["calibrated_sensor_token"]]["sensor_token"]]
        assert sd["ego_pose_token"] in token["ego_pose"] and sd["sample_token"] in token["sample"]
        assert (root / sd["filename"]).is_file() and sd["is_key_frame"]
        assert (sd["width"] > 0) == (sensor["modality"] == "camera")
    channels = {s["channel"] for s in t["sensor"]}
    assert channels == {"LIDAR_TOP", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT",
                        "CAM_FRONT_LEFT"}
    for scene in t["scene"]:
        chain, tok = [], scene["first_sample_token"]
        while tok:
            chain.append(tok)
            tok = token["sample"][tok]["next"]
        assert len(chain) == scene["nbr_samples"] == PER_SEQUENCE and chain[-1] == scene["last_sample_token"]
    (the_map,) = t["map"]
    assert sorted(the_map["log_tokens"]) == sorted(token["log"]) and (root / the_map["filename"]).is_file()
    label_files = list((root / "lidarseg" / "v1.0-trainval").glob("*.bin"))
    assert len(label_files) == len(t["lidarseg"]) == FRAMES
    assert all(r["token"] == r["sample_data_token"] in token["sample_data"] for r in t["lidarseg"])


def test_nuscenes_writer_refuses_an_existing_dataset(nus_root, nus_world):
    root, _ = nus_root
    with pytest.raises(DataError, match=r"v1.0-trainval: already holds nuScenes v1.0-trainval tables"):
        write_nuscenes(nus_world, root, 1)


def test_interrupted_nuscenes_write_leaves_no_tables(tmp_path, interrupt_after_two):
    with pytest.raises(KeyboardInterrupt):
        write_nuscenes({"seed": 4, "cameras": "none", "num_frames": 3}, tmp_path, 3, progress=interrupt_after_two)
    assert not (tmp_path / "v1.0-trainval").exists() and not [p for p in tmp_path.rglob(".*")]
    assert len(list((tmp_path / "samples" / "LIDAR_TOP").glob("*.pcd.bin"))) == 2  # whole frames only
    with pytest.raises(DataError, match="not a nuScenes folder"):
        NuScenes(tmp_path)


# --- SemanticKITTI ----------------------------------------------------------------------------------------------


def test_semantickitti_round_trip(kitti_world, tmp_path):
    originals = _originals(kitti_world)
    write_semantickitti(kitti_world, tmp_path, FRAMES, frames_per_sequence=PER_SEQUENCE)
    train = SemanticKITTI(tmp_path, "train", cache_dir=tmp_path / "index")
    val = SemanticKITTI(tmp_path, "val", cache_dir=tmp_path / "index")
    assert [f[0] for f in train.frames] == ["00"] * 5 and [f[0] for f in val.frames] == ["08"] * 5
    table = np.array([NUSCENES_TO_SEMANTICKITTI[k] for k in range(32)])
    for k, (got, want) in enumerate(zip([*train, *val], originals)):
        first = originals[0 if k < PER_SEQUENCE else PER_SEQUENCE]
        assert np.array_equal(got.points, want.points)
        np.testing.assert_allclose(got.intensity * 255, want.intensity, atol=1e-4)  # remission in 0..1
        assert np.array_equal(got.raw_labels, table[want.raw_labels]) and np.array_equal(got.instance, want.instance)
        assert np.array_equal(got.labels, train.class_map.map(table[want.raw_labels]))
        np.testing.assert_allclose(got.ego_pose, np.linalg.inv(first.ego_pose) @ want.ego_pose, atol=1e-9)
        assert got.timestamp == pytest.approx(want.timestamp - first.timestamp, abs=1e-6)
        np.testing.assert_allclose(got.camera("image_2").lidar_to_cam, want.cameras[0].lidar_to_cam, atol=1e-9)
        _same_projection(got, want)


def test_semantickitti_label_merges():
    assert _expected_merges("semantickitti", NUSCENES_TO_SEMANTICKITTI) == {
        "barrier": "fence", "bicycle": "bicycle", "bus": "other-vehicle", "car": "car",
        "construction_vehicle": "other-vehicle", "motorcycle": "motorcycle", "pedestrian": "person",
        "traffic_cone": "ignore", "trailer": "other-vehicle", "truck": "truck", "driveable_surface": "road",
        "other_flat": "other-ground", "sidewalk": "sidewalk", "terrain": "terrain", "manmade": "building",
        "vegetation": "vegetation"}


def test_semantickitti_needs_one_calibration_per_sequence(tmp_path):
    # nuScenes-like lidar: the front camera fires 35 ms before the sweep, while the ego speed varies.
    world = SyntheticWorld(seed=2, lidar="nuscenes", cameras="kitti", num_frames=3, image_size=(48, 16))
    with pytest.raises(ConfigError, match=r"camera 'image_2' moves against the lidar .* \(it fires -34.9 ms from "
                                          r"the sweep\), .* use lidar='kitti'"):
        write_semantickitti(world, tmp_path, 6, frames_per_sequence=3)
    with pytest.raises(ConfigError, match=r"camera 'image_2' is not in this world \(\[\]\)"):
        write_semantickitti({"seed": 2, "cameras": "none"}, tmp_path / "none", 1)
    with pytest.raises(ConfigError, match=r"SemanticKITTI has 1 val sequence\(s\) \(08\); this plan makes 2"):
        write_semantickitti(world, tmp_path / "many", 4, frames_per_sequence=1, val_fraction=0.5)


# --- PandaSet ---------------------------------------------------------------------------------------------------


def test_pandaset_round_trip(nus_world, nus_scans, tmp_path):
    pytest.importorskip("pandas")
    write_pandaset(nus_world, tmp_path, FRAMES, frames_per_sequence=PER_SEQUENCE, jpeg_quality=90)
    train = PandaSet(tmp_path, "train", cache_dir=tmp_path / "index")
    val = PandaSet(tmp_path, "val", cache_dir=tmp_path / "index")
    assert {f[0] for f in train.frames} == {"001"} and {f[0] for f in val.frames} == {"002"}
    table = np.array([NUSCENES_TO_PANDASET[k] for k in range(32)])
    for k, (got, want) in enumerate(zip([*train, *val], nus_scans)):
        first = nus_scans[0 if k < PER_SEQUENCE else PER_SEQUENCE]
        np.testing.assert_allclose(got.points, want.points, atol=1e-4)
        assert np.array_equal(got.intensity, want.intensity) and not got.time.any()
        assert np.array_equal(got.raw_labels, table[want.raw_labels])
        assert np.array_equal(got.labels, train.class_map.map(table[want.raw_labels]))
        np.testing.assert_allclose(got.ego_pose, np.linalg.inv(first.ego_pose) @ want.ego_pose, atol=1e-9)
        assert got.timestamp == pytest.approx(want.timestamp)
        for cw in want.cameras:
            cg = got.camera(PANDASET_CAMERA_NAMES[cw.name])
            np.testing.assert_allclose(cg.lidar_to_cam, cw.lidar_to_cam, atol=1e-9)
            assert cg.timestamp == pytest.approx(cw.timestamp)
        _same_projection(got, want, PANDASET_CAMERA_NAMES)


def test_pandaset_label_merges():
    assert _expected_merges("pandaset", NUSCENES_TO_PANDASET) == {
        "barrier": "barrier", "bicycle": "bicycle", "bus": "bus", "car": "car",
        "construction_vehicle": "other-vehicle", "motorcycle": "motorcycle", "pedestrian": "pedestrian",
        "traffic_cone": "cone", "trailer": "other-vehicle", "truck": "truck", "driveable_surface": "road",
        "other_flat": "ground", "sidewalk": "sidewalk", "terrain": "ground", "manmade": "manmade",
        "vegetation": "vegetation"}


def test_pandaset_writer_refuses_unnamed_cameras_and_a_full_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"cameras \['image_2'\] have no PandaSet name"):
        write_pandaset({"seed": 1, "cameras": "kitti"}, tmp_path, 1)
    (tmp_path / "something").write_text("x")
    with pytest.raises(DataError, match=r"already holds files; write into an empty folder"):
        write_pandaset({"seed": 1, "cameras": "none"}, tmp_path, 1)
