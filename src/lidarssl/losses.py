"""Lovász-softmax loss (Berman, Rannen Triki and Blaschko, CVPR 2018), written from its definition.

For one class c with ground-truth set G, the Jaccard loss of a set M of mispredicted points is
``Delta(M) = |M| / |G ∪ M|`` (equal to 1 - IoU of the prediction whose errors are M). Delta is submodular,
so its Lovász extension is computed greedily: sort the per-point errors ``m`` in decreasing order, take the
discrete differences ``g_i = Delta(M_i) - Delta(M_{i-1})`` of Delta along that order (``M_i`` = the first i
points), and return ``sum_i m_(i) g_i``. The extension is piecewise linear in ``m``, equals the Jaccard loss
at 0/1 error vectors, and is differentiable almost everywhere, so it serves as a surrogate for 1 - IoU.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from lidarssl.errors import DataError

__all__ = ["LovaszSoftmax", "lovasz_grad", "lovasz_softmax"]


def lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Jaccard loss extension along a sorted order of points.

    Args:
        gt_sorted: (N, ...) 0/1 ground-truth indicator of one class per point, in the order of decreasing
            error; extra trailing dimensions are independent columns (one per class).

    Returns:
        Same shape, float: ``g_i = Delta(M_i) - Delta(M_{i-1})`` with ``M_i`` the first i points.
    """
    gt = gt_sorted.float()
    positives = gt.sum(0)
    # |G ∩ complement(M_i)| and |G ∪ M_i| for i = 1..N: the union is at least i >= 1, never zero.
    intersection = positives - gt.cumsum(0)
    union = positives + (1.0 - gt).cumsum(0)
    jaccard = 1.0 - intersection / union
    grad = jaccard.clone()
    grad[1:] = jaccard[1:] - jaccard[:-1]
    return grad


def lovasz_softmax(
    probs: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int | None = 255,
    classes: Literal["present", "all"] = "present",
) -> torch.Tensor:
    """Lovász-softmax loss of per-point class probabilities.

    Args:
        probs: (N, C) class probabilities (softmax outputs), one row per point.
        labels: (N,) ground-truth class ids in 0..C-1, or ``ignore_index``.
        ignore_index: label of points that take no part in the loss.
        classes: ``"present"`` averages over the classes found in ``labels`` (after ignoring), ``"all"``
            over all C classes (a class absent from the labels then contributes the largest probability
            any point gives it: its Jaccard loss is 1 as soon as one point predicts it).

    Returns:
        Scalar loss; 0 (still attached to the graph) when no point or class counts.
    """
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise DataError(
            f"lovasz_softmax expects probs (N, C) and labels (N,), got {tuple(probs.shape)} and {tuple(labels.shape)}"
        )
    if classes not in ("present", "all"):
        raise ValueError(f"classes must be 'present' or 'all', got {classes!r}")
    if ignore_index is not None:
        keep = labels != ignore_index
        probs, labels = probs[keep], labels[keep]
    num_classes = probs.shape[1]
    if labels.numel() == 0:
        return probs.sum() * 0.0
    lo, hi = map(int, torch.aminmax(labels))
    if lo < 0 or hi >= num_classes:
        raise DataError(
            f"labels hold class id {lo if lo < 0 else hi}, outside 0..{num_classes - 1} (ignore_index={ignore_index})"
        )
    # The sorted cumulative sums run over every point: float16 would lose counts, so work in float32.
    fg = nn.functional.one_hot(labels.long(), num_classes).float()
    errors = (fg - probs.float()).abs()
    errors_sorted, perm = torch.sort(errors, dim=0, descending=True)
    per_class = (errors_sorted * lovasz_grad(fg.gather(0, perm))).sum(0)
    if classes == "present":
        per_class = per_class[fg.sum(0) > 0]
    return per_class.mean()


class LovaszSoftmax(nn.Module):
    """Module form of :func:`lovasz_softmax`.

    Args:
        ignore_index: label of points that take no part in the loss.
        classes: ``"present"`` or ``"all"``, see :func:`lovasz_softmax`.
        from_logits: apply a softmax over the class dimension first, so the module takes a head's logits.
    """

    def __init__(
        self,
        ignore_index: int | None = 255,
        classes: Literal["present", "all"] = "present",
        from_logits: bool = False,
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.classes = classes
        self.from_logits = from_logits

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        probs = inputs.float().softmax(dim=1) if self.from_logits else inputs
        return lovasz_softmax(probs, labels, self.ignore_index, self.classes)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, classes={self.classes!r}, from_logits={self.from_logits}"
