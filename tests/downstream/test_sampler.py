import numpy as np
import pytest

from lidarssl.data.loader import EpochSampler
from lidarssl.data.transforms import PointAugment
from lidarssl.errors import DataError


def test_order_depends_only_on_seed_and_epoch():
    a, b = EpochSampler(10, True, seed=3), EpochSampler(10, True, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert [i for i, _ in a] != [i for i, _ in b]
    assert sorted(i for i, _ in a) == list(range(10)) and {e for _, e in a} == {2}


def test_ranks_get_disjoint_equal_shards():
    shards = [list(EpochSampler(7, True, seed=0, rank=r, world_size=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 4
    assert set(i for s in shards for i, _ in s) == set(range(7))


def test_empty_split_is_an_error():
    with pytest.raises(DataError, match="empty"):
        EpochSampler(0, True, seed=0)


def test_augment_is_rigid_up_to_scale_and_seeded():
    pts = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    aug = PointAugment(scale=(0.9, 1.1))
    a = aug(pts, np.random.default_rng(1))
    assert np.array_equal(a, aug(pts, np.random.default_rng(1)))
    ratio = np.linalg.norm(a, axis=1) / np.linalg.norm(pts, axis=1)
    assert np.allclose(ratio, ratio[0], rtol=1e-5) and 0.9 <= ratio[0] <= 1.1
    assert np.allclose(a[:, 2], pts[:, 2] * ratio[0], atol=1e-5)  # rotation and flips keep z
