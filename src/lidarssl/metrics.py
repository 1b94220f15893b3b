"""Semantic segmentation metrics from a confusion matrix (rows = ground truth, columns = prediction).

A class absent from both the ground truth and the predictions has no IoU (NaN) and is left out of the
mean; a class that is predicted but absent from the ground truth scores IoU 0 and counts. Also the spread of
a representation's variance over directions (:func:`variance_spread`), which tells a collapsed one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from lidarssl.errors import DataError

__all__ = [
    "ConfusionMatrix",
    "format_iou_table",
    "iou_per_class",
    "mean_accuracy",
    "miou",
    "overall_accuracy",
    "variance_spread",
]

ArrayLike = torch.Tensor | np.ndarray


class ConfusionMatrix:
    """Accumulates a (C, C) int64 confusion matrix over batches of class ids.

    For distributed evaluation, sum ``matrix`` over processes (``all_reduce`` of
    ``torch.from_numpy(cm.matrix)``) or merge accumulators with ``+``.

    Args:
        num_classes: number of classes C; valid ids are 0..C-1.
        ignore_index: ground-truth id whose points are skipped (their prediction is not checked).
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        if num_classes < 1:
            raise DataError(f"ConfusionMatrix needs num_classes >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def reset(self) -> None:
        """Zero the counts."""
        self.matrix[:] = 0

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add a batch of predicted and ground-truth class ids (any shape, the same for both).

        Torch tensors are counted on their own device, so only the (C, C) counts leave a GPU.
        """
        if tuple(pred.shape) != tuple(target.shape):
            raise DataError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
        C = self.num_classes
        if isinstance(pred, torch.Tensor) or isinstance(target, torch.Tensor):
            t = torch.as_tensor(target).reshape(-1).long()
            p = torch.as_tensor(pred, device=t.device).reshape(-1).long()
            if self.ignore_index is not None:
                keep = t != self.ignore_index
                p, t = p[keep], t[keep]
            self._check_range(p, t)
            counts = torch.bincount(t * C + p, minlength=C * C).cpu().numpy()
        else:
            t = np.asarray(target).reshape(-1).astype(np.int64)
            p = np.asarray(pred).reshape(-1).astype(np.int64)
            if self.ignore_index is not None:
                keep = t != self.ignore_index
                p, t = p[keep], t[keep]
            self._check_range(p, t)
            counts = np.bincount(t * C + p, minlength=C * C)
        self.matrix += counts.reshape(C, C)

    def _check_range(self, p: ArrayLike, t: ArrayLike) -> None:
        # Without this check an id >= C would silently land in another class's cell.
        for name, ids in (("prediction", p), ("target", t)):
            if len(ids) == 0:
                continue
            lo, hi = map(int, torch.aminmax(ids) if isinstance(ids, torch.Tensor) else (ids.min(), ids.max()))
            if lo < 0 or hi >= self.num_classes:
                bad = lo if lo < 0 else hi
                raise DataError(
                    f"{name} holds class id {bad}, outside 0..{self.num_classes - 1} "
                    f"(ignore_index={self.ignore_index}); check the label mapping and num_classes"
                )

    def compute(self) -> np.ndarray:
        """A copy of the (C, C) int64 matrix, rows = ground truth, columns = prediction."""
        return self.matrix.copy()

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        if other.num_classes != self.num_classes:
            raise DataError(f"cannot merge confusion matrices of {self.num_classes} and {other.num_classes} classes")
        self.matrix += other.matrix
        return self

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        out = ConfusionMatrix(self.num_classes, self.ignore_index)
        out.matrix = self.matrix.copy()
        out += other
        return out


def _matrix(conf: ConfusionMatrix | np.ndarray) -> np.ndarray:
    m = conf.matrix if isinstance(conf, ConfusionMatrix) else np.asarray(conf)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise DataError(f"a confusion matrix must be square (C, C), got shape {m.shape}")
    return m.astype(np.float64)


def _nanmean(x: np.ndarray) -> float:
    # np.nanmean warns on an all-NaN input; an empty evaluation is simply NaN.
    x = x[~np.isnan(x)]
    return float(x.mean()) if len(x) else float("nan")


def iou_per_class(conf: ConfusionMatrix | np.ndarray) -> np.ndarray:
    """(C,) IoU = TP / (TP + FP + FN) per class; NaN for classes absent from prediction and ground truth."""
    m = _matrix(conf)
    tp = np.diag(m)
    union = m.sum(0) + m.sum(1) - tp
    iou = np.full(len(m), np.nan)
    np.divide(tp, union, out=iou, where=union > 0)
    return iou


def miou(conf: ConfusionMatrix | np.ndarray) -> float:
    """Mean IoU over the classes that have one (see :func:`iou_per_class`)."""
    return _nanmean(iou_per_class(conf))


def overall_accuracy(conf: ConfusionMatrix | np.ndarray) -> float:
    """Fraction of counted points whose prediction is right (NaN when nothing was counted)."""
    m = _matrix(conf)
    total = m.sum()
    return float(np.trace(m) / total) if total > 0 else float("nan")


def mean_accuracy(conf: ConfusionMatrix | np.ndarray) -> float:
    """Per-class recall TP / (TP + FN), averaged over the classes present in the ground truth."""
    m = _matrix(conf)
    support = m.sum(1)
    present = support > 0
    return _nanmean(np.diag(m)[present] / support[present])


def format_iou_table(conf: ConfusionMatrix | np.ndarray | Mapping[str, ConfusionMatrix | np.ndarray],
                     class_names: Sequence[str]) -> str:
    """A plain-text table of per-class IoU and the mIoU, oAcc and mAcc summary, in percent.

    ``conf`` is one confusion matrix, or several by column title (e.g. ``{"pretrained": a, "random": b}``)
    to compare runs side by side. Classes without an IoU (absent from prediction and ground truth) show ``-``.
    """
    columns = dict(conf) if isinstance(conf, Mapping) else {"IoU": conf}
    ious = {title: iou_per_class(c) for title, c in columns.items()}
    for iou in ious.values():
        if len(class_names) != len(iou):
            raise DataError(f"{len(class_names)} class names given for a confusion matrix of {len(iou)} classes")

    def pct(x: float) -> str:
        return "-" if np.isnan(x) else f"{100 * x:.1f}"

    width = max([len("class"), len("mIoU"), *(len(n) for n in class_names)])
    cells = [max(6, len(t)) for t in columns]
    rule = "-" * (width + sum(c + 2 for c in cells))

    def row(name: str, values: Sequence[str]) -> str:
        return f"{name:<{width}}" + "".join(f"  {v:>{c}}" for v, c in zip(values, cells))

    lines = [row("class", list(columns)), rule]
    lines += [row(name, [pct(iou[k]) for iou in ious.values()]) for k, name in enumerate(class_names)]
    lines.append(rule)
    for label, fn in (("mIoU", miou), ("oAcc", overall_accuracy), ("mAcc", mean_accuracy)):
        lines.append(row(label, [pct(fn(c)) for c in columns.values()]))
    return "\n".join(lines)


def variance_spread(features: np.ndarray | torch.Tensor) -> tuple[float, float]:
    """How the variance of (N, C) features spreads over directions: the share of the first principal
    component, and the effective rank ``exp(entropy of the normalised PCA eigenvalues)`` (1: one direction
    holds it all; C: spread evenly). A collapsed representation scores a share near 1 and a rank near 1."""
    x = torch.as_tensor(features).double()
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"variance_spread needs (N, C) features with N >= 2, got shape {tuple(x.shape)}")
    x = x - x.mean(0)
    eig = torch.linalg.svdvals(x) ** 2
    total = float(eig.sum())
    if total == 0:
        return 1.0, 1.0
    p = eig / total
    p = p[p > 0]
    return float(p[0]), float(torch.exp(-(p * p.log()).sum()))
