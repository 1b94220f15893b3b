"""`extract_features` and `lidarssl features`: every original point gets a row, kept points the backbone's own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lidarssl.checkpoints import load_weights, save_weights
from lidarssl.cli import main
from lidarssl.data.datasets import open_dataset
from lidarssl.errors import CheckpointError, DataError
from lidarssl.features import cosine_similarity, extract_features, load_backbone, parse_frames
from lidarssl.models.backbones import create_backbone


@pytest.fixture(scope="module")
def weights(seg_run: Path) -> Path:
    return seg_run / "backbone.safetensors"


def _reference(weights: Path, scan) -> tuple[np.ndarray, np.ndarray]:
    """The backbone's output on the scan's kept points, computed here without lidarssl.features."""
    state, meta = load_weights(weights)
    spec = create_backbone(meta["backbone"], **meta["options"])
    spec.model.load_state_dict(state)
    spec.model.eval()
    sample = spec.prep(scan.points, scan.intensity, None)
    with torch.no_grad():
        out = spec.model(spec.collate([sample])).numpy()
    return out, sample["kept"]


def test_one_row_per_point_and_the_backbones_output_at_kept_points(weights: Path, camera_world: Path):
    scan = open_dataset(camera_world, split="val")[0]
    feats = extract_features(weights, scan, device="cpu")
    out, kept = _reference(weights, scan)
    assert feats.shape == (len(scan), out.shape[1]) and feats.dtype == np.float32
    assert len(kept) < 0.8 * len(scan)  # the 0.4 m voxels drop points, so the spreading is exercised
    np.testing.assert_allclose(feats[kept], out, rtol=1e-5, atol=1e-5)
    # a dropped point has its nearest kept point's feature (brute-force nearest neighbour)
    dropped = np.setdiff1d(np.arange(len(scan)), kept)[::97]
    d = np.linalg.norm(scan.points[dropped, None] - scan.points[kept][None], axis=2)
    np.testing.assert_allclose(feats[dropped], out[np.argmin(d, axis=1)], rtol=1e-5, atol=1e-5)


def test_a_dataset_gives_one_array_per_frame(weights: Path, camera_world: Path):
    dataset = open_dataset(camera_world, split="train")
    arrays_ = extract_features(weights, camera_world, split="train", device="cpu")
    assert [len(a) for a in arrays_] == [len(dataset[i]) for i in range(len(dataset))]
    one = extract_features(weights, dataset, frames=[1], device="cpu")
    np.testing.assert_array_equal(one[0], arrays_[1])


def test_options_come_from_the_metadata_else_from_the_runs_config(weights: Path, tmp_path: Path):
    state, meta = load_weights(weights)
    assert meta["options"]["voxel_size"] == 0.4
    alone = tmp_path / "alone" / "w.safetensors"  # no config.yaml beside it: the metadata says
    alone.parent.mkdir()
    shutil.copy(weights, alone)
    assert load_backbone(alone)[0].prep.voxel_size == 0.4
    old = tmp_path / "old" / "backbone.safetensors"  # a file without stored options, in its run directory
    save_weights(old, state, {"backbone": meta["backbone"]})
    shutil.copy(weights.parent / "config.yaml", old.parent / "config.yaml")
    assert load_backbone(old)[0].prep.voxel_size == 0.4


def test_weights_of_another_backbone_than_the_one_named(weights: Path, camera_world: Path):
    scan = open_dataset(camera_world, split="val")[0]
    with pytest.raises(CheckpointError) as err:
        extract_features(weights, scan, backbone="minkunet_tiny")
    assert str(err.value) == (f"{weights}: weights of backbone 'waffleiron_4_32', not 'minkunet_tiny'; "
                              "name backbone=waffleiron_4_32 or pass the weights file of a minkunet_tiny")


def test_weights_that_name_no_backbone(weights: Path, tmp_path: Path):
    bare = save_weights(tmp_path / "bare.safetensors", load_weights(weights)[0], {})
    with pytest.raises(CheckpointError, match="the metadata names no backbone; pass backbone=NAME"):
        load_backbone(bare)
    assert load_backbone(bare, backbone="waffleiron_4_32", options={"voxel_size": 0.4,
                         "grid_shapes": [[32, 32], [32, 8], [32, 8]]})[0].name == "waffleiron_4_32"


def test_features_command_writes_one_npy_per_frame(weights: Path, camera_world: Path, tmp_path: Path, capsys):
    out = tmp_path / "feats"
    assert main(["features", str(weights), str(camera_world), "--out", str(out), "--split", "val",
                 "--dtype", "float16", "--device", "cpu"]) == 0
    assert "wrote 32-channel features of 2 frames" in capsys.readouterr().out
    index = json.loads((out / "index.json").read_text())
    assert index["backbone"] == "waffleiron_4_32" and index["channels"] == 32
    expected = extract_features(weights, camera_world, split="val", device="cpu")
    for entry, ref in zip(index["frames"], expected, strict=True):
        saved = np.load(out / entry["file"])
        assert saved.dtype == np.float16 and saved.shape == ref.shape == (entry["points"], 32)
        np.testing.assert_allclose(saved, ref, rtol=2e-3, atol=2e-3)
    assert not list(out.rglob("*.tmp"))


def test_features_command_names_the_wrong_backbone_in_one_line(weights: Path, camera_world: Path, tmp_path: Path,
                                                               capsys):
    assert main(["features", str(weights), str(camera_world), "--out", str(tmp_path / "f"),
                 "--backbone", "waffleiron_12_64"]) == 2
    err = capsys.readouterr().err
    assert err == (f"lidarssl features: error: {weights}: weights of backbone 'waffleiron_4_32', not "
                   "'waffleiron_12_64'; name backbone=waffleiron_4_32 or pass the weights file of a waffleiron_12_64\n")
    assert not (tmp_path / "f").exists()


def test_parse_frames():
    assert parse_frames(None, 4) == [0, 1, 2, 3]
    assert parse_frames("0,2", 4) == [0, 2]
    assert parse_frames("1:3", 4) == [1, 2]
    assert parse_frames("::2", 5) == [0, 2, 4]
    with pytest.raises(DataError) as err:
        parse_frames("0,7", 4)
    assert str(err.value) == "frames '0,7': frame 7 is out of range: the dataset has 4 frames (0..3)"
    with pytest.raises(DataError, match="expected indices and ranges such as 3, 0,4,7 or 2:10"):
        parse_frames("first", 4)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(2, 40), st.integers(1, 8)),
              elements=st.floats(-100, 100, width=32)), st.data())
def test_a_point_is_most_similar_to_itself(features: np.ndarray, data):
    query = data.draw(st.integers(0, len(features) - 1))
    sim = cosine_similarity(features, query)
    assert sim.shape == (len(features),)
    if np.linalg.norm(features[query]) > 1e-3:
        assert sim[query] == pytest.approx(1.0, abs=1e-5)
        assert sim[query] >= sim.max() - 1e-6
        assert np.all(sim <= 1.0 + 1e-5) and np.all(sim >= -1.0 - 1e-5)
