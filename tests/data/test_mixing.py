"""WaffleIron's PolarMix and instance CutMix (datasets/semantic_kitti.py), on synthetic SemanticKITTI-like scans."""

from pathlib import Path

import numpy as np
import pytest

from lidarssl.config import SegmentationConfig, load_config
from lidarssl.data.labels import load_class_map
from lidarssl.data.loader import LabelBuilder, ScanSamples
from lidarssl.data.mixing import INSTANCE_CLASSES, InstanceBank, ScanMixer, cutmix, polar_mix
from lidarssl.data.scan import Scan
from lidarssl.errors import ConfigError, DataError
from lidarssl.models.backbones import create_backbone

CLASSES = load_class_map("semantickitti").classes
ROAD, PERSON, BICYCLE, CAR = (CLASSES.index(c) for c in ("road", "person", "bicycle", "car"))


def _scan(seed: int, instances: bool = True) -> Scan:
    """A 40 m x 40 m road with a person (instance 1), a bicycle (2) and a car (3) standing on it."""
    rng = np.random.default_rng(seed)
    road = np.column_stack([rng.uniform(-20, 20, (3000, 2)), np.full(3000, -1.7)])
    parts, labels, ids = [road], [np.full(3000, ROAD)], [np.zeros(3000, int)]
    for ident, (cls, centre) in enumerate(((PERSON, (5, 3)), (BICYCLE, (-6, 4)), (CAR, (8, -8))), 1):
        obj = np.column_stack([rng.normal(centre, 0.3, (50, 2)), rng.uniform(-1.7, 0.0, 50)])
        parts.append(obj)
        labels.append(np.full(50, cls))
        ids.append(np.full(50, ident))
    points = np.concatenate(parts).astype(np.float32)
    return Scan(points=points, intensity=rng.uniform(0, 1, len(points)).astype(np.float32),
                labels=np.concatenate(labels), instance=np.concatenate(ids).astype(np.int32) if instances else None,
                source=f"scan{seed}", dataset="semantickitti")


class _Dataset:
    class_map = load_class_map("semantickitti")
    root = Path("synthetic")

    def __init__(self, n: int = 4, instances: bool = True) -> None:
        self.scans = [_scan(i, instances) for i in range(n)]

    def __len__(self) -> int:
        return len(self.scans)

    def __getitem__(self, index: int) -> Scan:
        return self.scans[index]


def test_bank_holds_centred_instances_of_the_instance_classes():
    calls = []
    bank = InstanceBank.build(_Dataset(), [CLASSES.index(c) for c in INSTANCE_CLASSES],
                              progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]  # one pass over the split, reported
    assert len(bank.instances[PERSON]) == len(bank.instances[BICYCLE]) == 4  # one per scan; no car (not banked)
    assert CAR not in bank.instances
    pts, inten = bank.instances[PERSON][0]
    assert np.allclose(pts[:, :2].mean(0), 0, atol=1e-5) and pts[:, 2].min() == 0 and len(inten) == 50


def test_cutmix_pastes_labelled_instances_on_distinct_surface_voxels():
    data = _Dataset()
    mixer = ScanMixer.for_dataset(data, polarmix=False, instance_cutmix=True)
    scan = data[0]
    rng = np.random.default_rng(1)
    points, intensity, labels = cutmix(scan.points, scan.intensity, scan.labels, mixer.bank, mixer.surface_ids, rng)
    n = len(scan)
    assert np.array_equal(points[:n], scan.points) and np.array_equal(labels[:n], scan.labels)  # the scan is kept
    pasted, pasted_labels = points[n:], labels[n:]
    assert len(pasted) > 0 and len(pasted) % 50 == 0 and len(intensity) == len(points)
    assert set(pasted_labels) <= {CLASSES.index(c) for c in INSTANCE_CLASSES if c in ("person", "bicycle")}
    # instance by instance (50 points each): one class, set down on the road (its base at road height), each on
    # its own 1 m voxel of the road, within the scan's extent
    bases = []
    for k in range(0, len(pasted), 50):
        inst, lab = pasted[k:k + 50], pasted_labels[k:k + 50]
        assert len(set(lab)) == 1
        assert abs(inst[:, 2].min() - (-1.7)) < 0.2  # scaled by at most 10 %: the base stays on the road
        bases.append(inst[:, :2].mean(0))
    assert len({tuple(np.floor(b).astype(int)) for b in bases}) >= len(bases) * 0.9  # distinct spots (+- 10 % scale)
    assert np.all(np.abs(pasted[:, :2]) < 21.5)


def test_polarmix_swaps_a_half_and_adds_the_instances_three_times():
    data = _Dataset()
    a, b = data[0], data[1]
    objects = np.isin(b.labels, [CLASSES.index(c) for c in INSTANCE_CLASSES])
    swaps = set()
    for seed in range(8):
        rng = np.random.default_rng(seed)
        swap = np.random.default_rng(seed).uniform() < 0.5
        swaps.add(swap)
        points, intensity, labels = polar_mix(a.points, a.intensity, a.labels, b, [PERSON, BICYCLE], rng)
        extra = 3 * objects.sum()
        assert len(points) == len(labels) == len(intensity)
        copies = points[-extra:].reshape(3, -1, 3)
        np.testing.assert_array_equal(copies[0], b.points[objects])  # as they are, then two rotations about z
        for c in copies[1:]:
            np.testing.assert_allclose(np.linalg.norm(c[:, :2], axis=1), np.linalg.norm(b.points[objects][:, :2],
                                                                                         axis=1), rtol=1e-5)
            np.testing.assert_array_equal(c[:, 2], b.points[objects][:, 2])
        assert np.array_equal(labels[-extra:], np.tile(b.labels[objects], 3))
        base = points[:len(points) - extra]
        if swap:  # half of the directions of a, the other half of b's
            from_a = np.isin(base.view("V12").ravel(), a.points.view("V12").ravel())
            from_b = np.isin(base.view("V12").ravel(), b.points.view("V12").ravel())
            assert from_a.any() and from_b.any() and np.all(from_a | from_b)
            assert 0.3 < from_a.mean() < 0.7
        else:
            np.testing.assert_array_equal(base, a.points)
    assert swaps == {True, False}


def test_mixed_training_samples_keep_no_duplicate_and_stay_in_the_field_of_view():
    data = _Dataset()
    mixer = ScanMixer.for_dataset(data, polarmix=True, instance_cutmix=True)
    spec = create_backbone("waffleiron_4_32", fov_min=[-15, -15, -4], fov_max=[15, 15, 4])
    samples = ScanSamples(data, spec.prep, [LabelBuilder()], seed=0, mix=mixer)
    grown = False
    for epoch in range(3):
        sample = samples[(0, epoch)]
        xyz = sample["feats"][:, 1:4]
        # PolarMix may add an instance twice (from the swapped half and as an object): voxel subsampling keeps one
        assert len(np.unique(xyz, axis=0)) == len(xyz) == len(sample["labels"])
        assert np.all((xyz > [-15, -15, -4]) & (xyz < [15, 15, 4]))  # pasted objects outside are cropped
        grown |= bool(np.isin(sample["labels"], [PERSON, BICYCLE]).sum() > 100)  # more than scan 0's own
    assert grown
    val = ScanSamples(data, spec.prep, [LabelBuilder()], train=False, mix=mixer)[0]
    assert len(val["point_labels"]) == len(data[0])  # evaluation scans are never mixed


def test_mixing_needs_instance_labels():
    with pytest.raises(DataError) as err:
        ScanMixer.for_dataset(_Dataset(instances=False), polarmix=True, instance_cutmix=False)
    assert str(err.value) == ("scan0: augment.polarmix needs instance labels, which semantickitti does not provide; "
                              "set augment.polarmix: false")


def test_waffleiron_semantickitti_recipe_mixes_and_pretraining_refuses_mixing(tmp_path: Path):
    augment = load_config(SegmentationConfig, "seg-wi48x256-semantickitti").augment
    assert augment.polarmix and augment.instance_cutmix
    from lidarssl.methods.config import PretrainConfig
    from lidarssl.methods.pretrain import run_pretraining

    config = load_config(PretrainConfig, "scalr-wi-synthetic", ["augment.polarmix=true", f"out={tmp_path / 'r'}"])
    with pytest.raises(ConfigError, match=r"^augment.polarmix and augment.instance_cutmix mix labelled scans"):
        run_pretraining(config)
