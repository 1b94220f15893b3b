"""The readers' shared parts: the cached JSON frame index and the calibration and label helpers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from lidarssl.data.formats import KITTIObject, SemanticKITTI
from lidarssl.data.formats._common import repair_rotation
from lidarssl.data.labels import load_class_map
from lidarssl.errors import DataError


def _no_listing(self):
    raise AssertionError("the frame index should have come from the cache")


@pytest.mark.real
def test_index_is_cached_as_json_in_cache_dir(real_root, cache_dir, monkeypatch):
    reader = SemanticKITTI(real_root / "semantic_kitti", cache_dir=cache_dir)
    assert reader.index_path == cache_dir / "semantickitti-train.json"
    doc = json.loads(reader.index_path.read_text())
    assert doc["frames"] == reader.frames and doc["split"] == "train" and doc["root"] == str(reader.root)
    monkeypatch.setattr(SemanticKITTI, "_list_frames", _no_listing)
    assert SemanticKITTI(real_root / "semantic_kitti", cache_dir=cache_dir).frames == reader.frames


@pytest.mark.real
def test_read_only_root_falls_back_to_the_user_cache(real_root, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    reader = KITTIObject(real_root / "kitti")
    assert reader.index_path is not None and reader.index_path.is_relative_to(tmp_path / "xdg" / "lidarssl" / "index")
    assert not (real_root / "kitti" / ".lidarssl_index").exists()
    monkeypatch.setattr(KITTIObject, "_list_frames", _no_listing)
    assert KITTIObject(real_root / "kitti").frames == [["000000"], ["000001"]]


@pytest.mark.real
def test_writable_root_holds_its_index_and_sees_new_files(writable_copy):
    root = writable_copy("semantic_kitti")
    reader = SemanticKITTI(root)
    assert reader.index_path == root / ".lidarssl_index" / "semantickitti-train.json"
    seq = root / "dataset/sequences/00"
    shutil.copyfile(seq / "velodyne/000001.bin", seq / "velodyne/000005.bin")
    assert SemanticKITTI(root, with_labels=False).frames[-1] == ["00", "000005"]


@pytest.mark.real
def test_damaged_or_foreign_index_is_rebuilt(writable_copy):
    root = writable_copy("kitti")
    index = KITTIObject(root).index_path
    index.write_text("{not json")
    assert len(KITTIObject(root)) == 2
    doc = json.loads(index.read_text())
    doc["version"] = -1
    doc["frames"] = [["999999"]]
    index.write_text(json.dumps(doc))
    assert KITTIObject(root).frames == [["000000"], ["000001"]]
    assert KITTIObject(root, refresh=True).frames == [["000000"], ["000001"]]


@pytest.mark.real
def test_indexing(real_root, cache_dir):
    reader = KITTIObject(real_root / "kitti", velodyne_reduced=True, with_images=False, cache_dir=cache_dir)
    assert len(reader) == 1 and reader[-1].frame_id == "000008" and reader[0].cameras == []
    with pytest.raises(IndexError):
        reader[1]


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: no such dataset folder"):
        SemanticKITTI(tmp_path / "nowhere")


def test_repair_rotation_keeps_good_fixes_noisy_refuses_wrong():
    c, s = np.cos(0.3), np.sin(0.3)
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    assert repair_rotation("f", "R", R) is R
    fixed = repair_rotation("f", "R", np.round(R, 3))
    np.testing.assert_allclose(fixed.T @ fixed, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(fixed, R, atol=1e-3)
    with pytest.raises(DataError, match=r"f: field 'R' must be a rigid transform"):
        repair_rotation("f", "R", 1.1 * R)
    with pytest.raises(DataError, match=r"f: field 'R' must be a rigid transform"):
        repair_rotation("f", "R", np.diag([1.0, 1.0, -1.0]))


def test_class_map_refuses_gap_ids():
    cmap = load_class_map("semantickitti")
    assert cmap.map(np.array([10, 252, 0]), "x.label").tolist() == [0, 0, 255]
    with pytest.raises(DataError, match=r"x.label: raw label ids \[-1, 2, 260\]"):
        cmap.map(np.array([2, 10, 260, -1]), "x.label")
