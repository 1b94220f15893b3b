"""The native on-disk layout: round trip, splits, atomicity, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lidarssl.data.formats import SyntheticDataset
from lidarssl.errors import ConfigError, DataError
from lidarssl.synthetic import SyntheticWorld, write_dataset


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticWorld, Path, list[tuple[int, int]]]:
    world = SyntheticWorld(seed=11, num_frames=3, image_size=(96, 54))
    root = tmp_path_factory.mktemp("native")
    calls: list[tuple[int, int]] = []
    write_dataset(world, root, 5, progress=lambda done, total: calls.append((done, total)))
    return world, root, calls


def test_round_trip_gives_back_the_same_scans(written) -> None:
    world, root, calls = written
    assert calls == [(k, 5) for k in range(1, 6)]
    index = json.loads((root / "index.json").read_text())
    assert index["format"] == "lidarssl-synthetic" and index["class_map"] == "nuscenes" and index["lidar"] == "nuscenes"
    assert index["cameras"] == world.camera_names
    assert [s["split"] for s in index["sequences"]] == ["train", "val"]
    ds = SyntheticDataset(root, "all")
    assert len(ds) == 5 and ds.camera_names == world.camera_names and ds.class_map.name == "nuscenes"
    assert len(SyntheticDataset(root, "train")) == 3 and len(SyntheticDataset(root)) == 3
    assert len(SyntheticDataset(root, "val")) == 2
    # Sequence 0 is the given world itself: frame by frame the same scans.
    for i in range(3):
        got, want = ds[i], world.scan(i)
        assert got.frame_id == want.frame_id and got.dataset == "synthetic"
        for field in ("points", "intensity", "ring", "raw_labels", "labels", "instance", "ego_pose", "sensor_origin"):
            a, b = getattr(got, field), getattr(want, field)
            assert a.dtype.kind == b.dtype.kind and np.array_equal(a, b), field
        assert got.timestamp == want.timestamp
        for cg, cw in zip(got.cameras, want.cameras):
            assert cg.name == cw.name and cg.timestamp == cw.timestamp
            assert np.array_equal(cg.K, cw.K) and np.array_equal(cg.lidar_to_cam, cw.lidar_to_cam)
            assert cg.image.shape == cw.image.shape
            assert np.abs(cg.image.astype(int) - cw.image).mean() < 5.0  # JPEG loss only (busier tiny images lose more)
    # The held-out sequence has its own seed, hence another street.
    val = SyntheticDataset(root, "val")[0]
    assert val.frame_id == "seed12/000000"


def test_lidar_only_reading_decodes_no_image(written, monkeypatch: pytest.MonkeyPatch) -> None:
    _, root, _ = written
    full = SyntheticDataset(root, "all")[1]
    monkeypatch.setattr("PIL.Image.open", lambda *a, **k: pytest.fail("an image was opened"))
    lidar = SyntheticDataset(root, "all", with_images=False)[1]
    assert lidar.cameras == [] and full.cameras
    for field in ("points", "intensity", "labels", "ego_pose"):
        assert np.array_equal(getattr(lidar, field), getattr(full, field)), field


def test_no_temporary_files_are_left(written) -> None:
    _, root, _ = written
    assert not [p for p in root.rglob("*") if p.name.startswith(".")]


def test_existing_dataset_is_not_overwritten_silently(written, tmp_path: Path) -> None:
    world, root, _ = written
    with pytest.raises(DataError, match="already exists"):
        write_dataset(world, root, 1)
    small = SyntheticWorld(seed=2, num_frames=2, cameras="none")
    write_dataset(small, tmp_path, 2)
    write_dataset(small.params, tmp_path, 2, overwrite=True)
    assert len(SyntheticDataset(tmp_path, "all")) == 2


def test_missing_index_names_the_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        SyntheticDataset(tmp_path)
    assert "index.json" in str(e.value) and "lidarssl generate" in str(e.value)
    with pytest.raises(DataError, match="no such folder"):
        SyntheticDataset(tmp_path / "nowhere")
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(DataError, match="unreadable JSON"):
        SyntheticDataset(tmp_path)
    with pytest.raises(DataError, match="unknown split 'test'"):
        SyntheticDataset(tmp_path, split="test")


def test_missing_files_name_the_file(tmp_path: Path) -> None:
    world = SyntheticWorld(seed=3, num_frames=2, image_size=(48, 27))
    write_dataset(world, tmp_path, 2)
    ds = SyntheticDataset(tmp_path, "all")
    index = json.loads((tmp_path / "index.json").read_text())
    lidar = tmp_path / index["frames"][0]["lidar"]
    image = tmp_path / index["frames"][1]["cameras"]["CAM_BACK"]
    lidar.unlink()
    image.unlink()
    with pytest.raises(DataError) as e:
        ds[0]
    assert str(lidar) in str(e.value) and "lidarssl generate" in str(e.value)
    with pytest.raises(DataError) as e:
        ds[1]
    assert str(image) in str(e.value)


def test_interrupted_run_leaves_no_index_and_no_partial_files(tmp_path: Path, interrupt_after_two) -> None:
    with pytest.raises(KeyboardInterrupt):
        write_dataset(SyntheticWorld(seed=4, num_frames=3, image_size=(48, 27)), tmp_path, 3, progress=interrupt_after_two)
    assert not (tmp_path / "index.json").exists()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]
    assert len(list((tmp_path / "lidar").glob("*.npz"))) == 2  # whole frames only
    with pytest.raises(DataError, match="interrupted"):
        SyntheticDataset(tmp_path)


def test_unknown_generator_parameter_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="generator parameters"):
        write_dataset({"seed": 0, "lidar_model": "x"}, tmp_path, 1)
