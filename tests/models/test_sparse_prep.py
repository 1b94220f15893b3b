"""Sparse preprocessing: cartesian and cylindrical grids, cropping, voxel features, collate, errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from lidarssl.errors import ConfigError, DataError
from lidarssl.models.backbones.sparse_prep import SparsePrep, sparse_input

GRID = {"voxel_size": (0.5, 0.5, 0.5), "range_min": (-8.0, -8.0, -2.0), "range_max": (8.0, 8.0, 2.0)}


def test_cartesian_voxels_crop_and_maps() -> None:
    prep = SparsePrep(**GRID, features=("intensity", "z"), voxel_features="mean")
    points = np.array(
        [[0.1, 0.1, 0.1], [0.2, 0.3, 0.4], [-7.9, 7.9, -1.9], [9.0, 0.0, 0.0], [0.0, 0.0, 2.0], [np.nan, 0, 0]],
        dtype=np.float32,
    )  # fmt: skip
    intensity = np.array([1.0, 3.0, 5.0, 7.0, 9.0, 11.0], dtype=np.float32)
    s = prep(points, intensity)
    np.testing.assert_array_equal(s["kept"], [0, 1, 2])  # outside x, at z max and NaN are cropped
    assert prep.grid_shape == (32, 32, 8) and prep.spatial_shape == (8, 32, 32)
    np.testing.assert_array_equal(s["point2voxel"][0], s["point2voxel"][1])  # same voxel
    v = s["point2voxel"][0]
    np.testing.assert_allclose(s["voxel_feats"][v], [2.0, 0.25], rtol=1e-6)  # mean of intensity and z
    # floor(point_coords) is the voxel, in (z, y, x) order.
    np.testing.assert_array_equal(np.floor(s["point_coords"]).astype(np.int32), s["voxel_coords"][s["point2voxel"]])
    np.testing.assert_array_equal(s["voxel_coords"][s["point2voxel"][2]], [0, 31, 0])


def test_first_point_features_and_random_representative() -> None:
    prep = SparsePrep(**GRID, voxel_features="first", intensity_mean=1.0, intensity_std=2.0)
    points = np.zeros((50, 3), dtype=np.float32) + 0.1  # one voxel
    intensity = np.arange(50, dtype=np.float32)
    assert prep(points, intensity)["voxel_feats"][0, 0] == pytest.approx(-0.5)  # lowest index, normalised
    drawn = {float(prep(points, intensity, np.random.default_rng(s))["voxel_feats"][0, 0]) for s in range(8)}
    assert len(drawn) > 1


def test_cylindrical_grid_wraps_phi() -> None:
    prep = SparsePrep(
        coordinates="cylindrical", voxel_size=(0.5, 1.0, 0.5), range_min=(0.0, -180.0, -2.0),
        range_max=(10.0, 180.0, 2.0),
    )  # fmt: skip
    points = np.array([[-3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [3.0, -1e-9, 0.0], [11.0, 0.0, 0.0]], dtype=np.float32)
    s = prep(points, np.ones(4, dtype=np.float32))
    np.testing.assert_array_equal(s["kept"], [0, 1, 2])  # beyond rho max cropped
    coords = s["voxel_coords"][s["point2voxel"]]  # (z, phi, rho)
    np.testing.assert_array_equal(coords[:, 2], [6, 6, 6])  # rho 3 m
    np.testing.assert_array_equal(coords[:, 1], [0, 270, 179])  # phi 180 wraps to -180, 90, just below 0
    assert prep.spatial_shape == (8, 360, 20)


def test_collate_offsets_voxel_rows() -> None:
    prep = pickle.loads(pickle.dumps(SparsePrep(**GRID)))  # runs in DataLoader workers
    rng = np.random.default_rng(0)
    scans = [(rng.uniform(-7, 7, (n, 3)) * [1, 1, 0.2]).astype(np.float32) for n in (30, 20)]
    samples = [prep(points, np.ones(len(points), np.float32)) for points in scans]
    b = prep.collate(samples)
    nv0 = len(samples[0]["voxel_coords"])
    assert b["voxel_coords"].dtype == torch.int32 and b["voxel_coords"].shape[1] == 4
    assert (b["voxel_coords"][:nv0, 0] == 0).all() and (b["voxel_coords"][nv0:, 0] == 1).all()
    np.testing.assert_array_equal(b["point2voxel"][30:].numpy(), samples[1]["point2voxel"] + nv0)
    x = sparse_input(b, prep.spatial_shape, 1)
    assert x.batch_size == 2 and x.features.shape == (len(b["voxel_coords"]), 1)


def test_errors_name_the_problem() -> None:
    prep = SparsePrep(**GRID)
    with pytest.raises(DataError, match=r"range_min=\[-8.0, -8.0, -2.0\]"):
        prep(np.full((5, 3), 50.0, dtype=np.float32), np.ones(5, np.float32))
    with pytest.raises(DataError, match="points"):
        prep(np.zeros((5, 2), np.float32), np.ones(5, np.float32))
    with pytest.raises(ConfigError, match="whole number"):
        SparsePrep(voxel_size=(0.3, 0.3, 0.3), range_min=(-8.0, -8.0, -2.0), range_max=(8.0, 8.0, 2.0))
    with pytest.raises(ConfigError, match="features"):
        SparsePrep(**GRID, features=("intensity", "colour"))
    with pytest.raises(ConfigError, match="voxel_features"):
        SparsePrep(**GRID, voxel_features="max")
    b = prep.collate([prep(np.zeros((3, 3), np.float32), np.ones(3, np.float32))])
    with pytest.raises(DataError, match="network grid"):
        sparse_input(b, (2, 2, 2), 1)
    with pytest.raises(DataError, match="channels"):
        sparse_input(b, prep.spatial_shape, 4)
    with pytest.raises(DataError, match="collate"):
        sparse_input({"offsets": b["offsets"]}, prep.spatial_shape, 1)
