"""Tests of lidarssl.metrics against hand-computed confusion matrices."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lidarssl.errors import DataError
from lidarssl.metrics import (
    ConfusionMatrix,
    format_iou_table,
    iou_per_class,
    mean_accuracy,
    miou,
    overall_accuracy,
)

# Four classes; class 3 is predicted only on an ignored point, so it is absent from both after ignoring.
TARGET = np.array([0, 0, 0, 1, 1, 2, 255, 255])
PRED = np.array([0, 0, 1, 1, 2, 2, 3, 0])
EXPECTED = np.array(
    [
        [2, 1, 0, 0],
        [0, 1, 1, 0],
        [0, 0, 1, 0],
        [0, 0, 0, 0],
    ]
)


def test_hand_computed_case() -> None:
    cm = ConfusionMatrix(4, ignore_index=255)
    cm.update(PRED, TARGET)
    m = cm.compute()
    assert m.dtype == np.int64
    np.testing.assert_array_equal(m, EXPECTED)
    # IoU: class 0 = 2 / (2 + 0 + 1), class 1 = 1 / (1 + 1 + 1), class 2 = 1 / (1 + 1 + 0), class 3 absent.
    iou = iou_per_class(cm)
    np.testing.assert_allclose(iou[:3], [2 / 3, 1 / 3, 1 / 2])
    assert np.isnan(iou[3])
    assert miou(cm) == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)  # class 3 left out of the mean
    assert overall_accuracy(cm) == pytest.approx(4 / 6)
    assert mean_accuracy(cm) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)  # recall of classes 0, 1, 2


def test_predicted_class_absent_from_ground_truth_scores_zero() -> None:
    m = np.zeros((3, 3), np.int64)
    m[0, 0], m[0, 2] = 1, 1  # two class-0 points, one predicted as class 2
    iou = iou_per_class(m)
    assert iou[0] == pytest.approx(0.5) and np.isnan(iou[1]) and iou[2] == 0.0
    assert miou(m) == pytest.approx(0.25)
    assert mean_accuracy(m) == pytest.approx(0.5)  # only class 0 is in the ground truth


def test_torch_numpy_and_shapes_agree() -> None:
    a = ConfusionMatrix(4)
    a.update(torch.from_numpy(PRED).reshape(2, 4), torch.from_numpy(TARGET).reshape(2, 4))
    b = ConfusionMatrix(4)
    b.update(PRED.astype(np.int32), torch.from_numpy(TARGET).to(torch.uint8))
    np.testing.assert_array_equal(a.matrix, EXPECTED)
    np.testing.assert_array_equal(b.matrix, EXPECTED)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_tensors() -> None:
    cm = ConfusionMatrix(4)
    cm.update(torch.from_numpy(PRED).cuda(), torch.from_numpy(TARGET).cuda())
    np.testing.assert_array_equal(cm.matrix, EXPECTED)


def test_accumulate_reset_and_merge() -> None:
    cm = ConfusionMatrix(4)
    cm.update(PRED[:4], TARGET[:4])
    cm.update(PRED[4:], TARGET[4:])
    np.testing.assert_array_equal(cm.matrix, EXPECTED)

    other = ConfusionMatrix(4)
    other.update(PRED, TARGET)
    merged = cm + other
    np.testing.assert_array_equal(merged.matrix, 2 * EXPECTED)
    np.testing.assert_array_equal(cm.matrix, EXPECTED)  # + leaves its operands alone
    cm += other
    np.testing.assert_array_equal(cm.matrix, 2 * EXPECTED)

    snapshot = cm.compute()
    cm.reset()
    assert cm.matrix.sum() == 0 and snapshot.sum() == 2 * EXPECTED.sum()
    with pytest.raises(DataError, match="cannot merge confusion matrices of 4 and 3 classes"):
        cm += ConfusionMatrix(3)


def test_no_ignore_index() -> None:
    cm = ConfusionMatrix(3, ignore_index=None)
    cm.update(np.array([0, 1, 2]), np.array([0, 1, 1]))
    assert cm.matrix.sum() == 3


@pytest.mark.parametrize(
    ("pred", "target", "message"),
    [
        ([0, 1], [0, 4], r"target holds class id 4, outside 0..3 \(ignore_index=255\)"),
        ([0, 7], [0, 1], "prediction holds class id 7, outside 0..3"),
        ([-1, 0], [0, 1], "prediction holds class id -1"),
        ([0, 255], [0, 1], "prediction holds class id 255"),
        ([0, 1, 2], [0, 1], r"prediction shape \(3,\) differs from target shape \(2,\)"),
    ],
)
@pytest.mark.parametrize("backend", [np.array, torch.tensor])
def test_bad_ids_raise(pred: list, target: list, message: str, backend: object) -> None:
    cm = ConfusionMatrix(4)
    with pytest.raises(DataError, match=message):
        cm.update(backend(pred), backend(target))  # type: ignore[operator]
    assert cm.matrix.sum() == 0  # a failed update counts nothing


def test_empty_matrix_is_nan_without_warnings() -> None:
    cm = ConfusionMatrix(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(miou(cm)) and np.isnan(overall_accuracy(cm)) and np.isnan(mean_accuracy(cm))
        assert np.isnan(iou_per_class(cm)).all()


def test_format_iou_table() -> None:
    cm = ConfusionMatrix(4)
    cm.update(PRED, TARGET)
    table = format_iou_table(cm, ["car", "pedestrian", "road", "vegetation"])
    lines = table.splitlines()
    assert lines[0].split() == ["class", "IoU"]
    rows = {line.split()[0]: line.split()[1] for line in lines[2:6]}
    assert rows == {"car": "66.7", "pedestrian": "33.3", "road": "50.0", "vegetation": "-"}
    assert [line.split() for line in lines[-3:]] == [["mIoU", "50.0"], ["oAcc", "66.7"], ["mAcc", "72.2"]]
    # several runs side by side, one column each
    other = ConfusionMatrix(4)
    other.update(TARGET, TARGET)
    both = format_iou_table({"pretrained": other, "random": cm}, ["car", "pedestrian", "road", "vegetation"]).splitlines()
    assert both[0].split() == ["class", "pretrained", "random"]
    assert both[2].split() == ["car", "100.0", "66.7"]
    assert both[-3].split() == ["mIoU", "100.0", "50.0"]
    with pytest.raises(DataError, match="2 class names given for a confusion matrix of 4 classes"):
        format_iou_table(cm, ["car", "road"])


def test_variance_spread_of_known_spectra():
    from lidarssl.metrics import variance_spread

    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(8, 8)))[0]
    # variances 9, 1, 0, ... along orthogonal directions: share 0.9, rank exp(-(0.9 ln 0.9 + 0.1 ln 0.1))
    coords = np.zeros((4, 8))
    coords[:, :2] = [[3, 1], [3, -1], [-3, 1], [-3, -1]]  # uncorrelated, variances 9 and 1
    share, rank = variance_spread(coords @ basis.T + 5.0)  # a shift changes nothing
    assert share == pytest.approx(0.9, abs=1e-6) and rank == pytest.approx(np.exp(-(0.9 * np.log(0.9) + 0.1 * np.log(0.1))), abs=1e-5)
    share, rank = variance_spread(rng.normal(size=(50000, 4)))  # isotropic: every direction alike
    assert share < 0.27 and rank > 3.95
    with pytest.raises(ValueError, match=r"\(N, C\) features with N >= 2"):
        variance_spread(np.zeros((1, 4)))
