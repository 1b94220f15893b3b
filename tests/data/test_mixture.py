"""Mixtures of datasets: concatenation, per-epoch weighted draws, per-member normalisation and crop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lidarssl.data.datasets import open_dataset
from lidarssl.data.mixture import DEFAULT_INTENSITY, MixtureDataset, MixtureMember
from lidarssl.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def kitti(tmp_path_factory) -> Path:
    """A SemanticKITTI layout, train sequence 00 of 4 scans of 50 points spread over +-40 m, labelled road."""
    rng = np.random.default_rng(1)
    folder = tmp_path_factory.mktemp("kitti") / "dataset" / "sequences" / "00"
    (folder / "velodyne").mkdir(parents=True)
    (folder / "labels").mkdir()
    for f in range(4):
        pts = np.column_stack([rng.uniform(-40, 40, (50, 3)), rng.uniform(0, 1, 50)]).astype("<f4")
        pts.tofile(folder / "velodyne" / f"{f:06d}.bin")
        np.full(50, 40, "<u4").tofile(folder / "labels" / f"{f:06d}.label")
    return folder.parents[2]


def test_unit_weights_concatenate(tiny_world, kitti):
    mix = MixtureDataset([{"root": tiny_world, "split": "train"}, MixtureMember(root=kitti)])
    assert len(mix) == 4 + 4 and mix.counts == [4, 4] and mix.names == ["synthetic", "semantickitti"]
    assert [mix.locate(i) for i in range(len(mix))] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3)]
    assert mix[5].frame_id == "00/000001" and mix[5].dataset == "semantickitti"
    assert mix.class_map.name == "nuscenes"  # the first member's
    mix.set_epoch(7)
    assert [mix.locate(i) for i in range(len(mix))][4:] == [(1, 0), (1, 1), (1, 2), (1, 3)]


def test_weights_draw_per_epoch_deterministically(tiny_world, kitti):
    members = [{"root": tiny_world, "split": "all", "weight": 0.5}, {"root": kitti, "weight": 2.5}]
    mix = MixtureDataset(members, seed=3)
    assert mix.counts == [3, 10] and len(mix) == 13
    plans = []
    for epoch in range(6):
        mix.set_epoch(epoch)
        plan = [mix.locate(i) for i in range(len(mix))]
        assert len({j for k, j in plan if k == 0}) == 3  # half of the 6 frames, none twice
        kitti_counts = np.bincount([j for k, j in plan if k == 1], minlength=4)
        assert sorted(kitti_counts.tolist()) == [2, 2, 3, 3]  # every scan twice, two of them a third time
        plans.append(plan)
    assert len({tuple(p) for p in plans}) > 1  # each epoch draws anew
    again = MixtureDataset(members, seed=3)
    again.set_epoch(4)
    assert [again.locate(i) for i in range(len(again))] == plans[4]  # same (seed, epoch), same scans


def test_intensity_normalised_per_member(tiny_world, kitti):
    mix = MixtureDataset([{"root": tiny_world, "split": "val"},
                          {"root": kitti, "intensity_mean": 0.5, "intensity_std": 0.25}])
    mean, std = DEFAULT_INTENSITY["synthetic"]
    raw = open_dataset(tiny_world, "val")[0]
    np.testing.assert_allclose(mix[0].intensity, (raw.intensity - mean) / std, rtol=1e-6)
    raw_k = open_dataset(kitti, "train")[0]
    np.testing.assert_allclose(mix[2].intensity, (raw_k.intensity - 0.5) / 0.25, rtol=1e-6)
    assert mix.stats == [DEFAULT_INTENSITY["synthetic"], (0.5, 0.25)]


def test_field_of_view_crop_cuts_every_point_field(kitti):
    box = ((-20.0, -20.0, -10.0), (20.0, 20.0, 10.0))
    mix = MixtureDataset([{"root": kitti, "fov": [list(box[0]), list(box[1])]}])
    raw, scan = open_dataset(kitti, "train")[1], mix[1]
    inside = np.all((raw.points >= box[0]) & (raw.points <= box[1]), axis=1)
    assert 0 < len(scan) == inside.sum() < len(raw)
    np.testing.assert_array_equal(scan.points, raw.points[inside])
    assert len(scan.labels) == len(scan.raw_labels) == len(scan.instance) == len(scan)


def test_bad_members_are_named(tmp_path, tiny_world):
    with pytest.raises(DataError, match=r"mixture member 1 \(root .*missing, split 'train'\): .*missing: no such"):
        MixtureDataset([{"root": tiny_world}, {"root": tmp_path / "missing"}])
    with pytest.raises(ConfigError, match=r"mixture member 0: 'wieght': Extra inputs are not permitted"):
        MixtureDataset([{"root": tiny_world, "wieght": 2}])
    with pytest.raises(ConfigError, match=r"mixture member 0: 'weight': Input should be greater than 0"):
        MixtureDataset([{"root": tiny_world, "weight": 0}])
    with pytest.raises(ConfigError, match="give both intensity_mean and intensity_std"):
        MixtureDataset([{"root": tiny_world, "intensity_mean": 1.0}])
    with pytest.raises(ConfigError, match=r"fov minimum \[0.0, 0.0, 0.0\] must be below its maximum"):
        MixtureDataset([{"root": tiny_world, "fov": [[0, 0, 0], [1, 1, 0]]}])
    with pytest.raises(DataError, match=r"mixture member 0 \(.*\): split 'nope'|unknown split 'nope'"):
        MixtureDataset([{"root": tiny_world, "split": "nope"}])
    with pytest.raises(ConfigError, match="at least one member"):
        MixtureDataset([])
