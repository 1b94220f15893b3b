"""A linear probe on fixed per-point features: a BN + linear head trained on frozen features computed once.

Used by ``six_methods.py`` for every backbone (its features at the kept points of each train scan, every point of
each val scan) and by ``teacher_ceiling.py`` for the teacher's features at the paired points, so that the
backbones and their teacher's ceiling are probed by one head, optimiser and schedule. Computing the features once
makes a probe to convergence cheap (seconds per epoch, against a backbone forward per step for the
``probe-wi-synthetic`` recipe, whose train augmentations this probe does without).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def linear_probe(x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor, class_map, epochs: int = 30,
                 seed: int = 0):
    """Val confusion matrix of a BN + linear head trained on fixed (P, C) features ``x`` with labels ``y``
    (AdamW, lr 0.01 with cosine decay, batches of about 8192 points)."""
    from lidarssl.metrics import ConfusionMatrix

    torch.manual_seed(seed)
    head = nn.Sequential(nn.BatchNorm1d(x.shape[1]), nn.Linear(x.shape[1], class_map.num_classes))
    steps_per_epoch = max(1, len(x) // 8192)
    optimizer = torch.optim.AdamW(head.parameters(), lr=0.01, weight_decay=0.003)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    for _ in range(epochs):
        for rows in torch.randperm(len(x)).chunk(steps_per_epoch):
            loss = nn.functional.cross_entropy(head(x[rows]), y[rows], ignore_index=class_map.ignore_index)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    head.eval()
    conf = ConfusionMatrix(class_map.num_classes, class_map.ignore_index)
    with torch.no_grad():
        conf.update(head(xv).argmax(1), yv)
    return conf


def backbone_features(weights: Path, world: Path, split: str, options: Mapping[str, Any],
                      every_point: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, C) features of a frozen backbone (eval mode, no augmentation) and (P,) labels over ``split``: at the
    points the backbone keeps, or at ``every_point`` (a dropped point takes its nearest kept point's feature, as
    evaluation spreads predictions)."""
    from lidarssl.data.datasets import open_dataset
    from lidarssl.features import FeatureExtractor

    extractor = FeatureExtractor(weights, options=options, device="cpu")
    dataset = open_dataset(world, split=split)
    feats, labels = [], []
    for i in range(len(dataset)):
        scan = dataset[i]
        if every_point:
            f = torch.from_numpy(extractor(scan).features)
            rows = np.arange(len(scan))
        else:
            f, rows = extractor.kept_features(scan)
        feats.append(f)
        labels.append(torch.from_numpy(scan.labels[rows].astype(np.int64)))
    return torch.cat(feats), torch.cat(labels)


def probe_backbone(weights: Path, world: Path, options: Mapping[str, Any], epochs: int, seed: int):
    """Val confusion matrix (every val point) of :func:`linear_probe` on a frozen backbone's features, and the
    (P, C) val features."""
    from lidarssl.data.datasets import open_dataset

    class_map = open_dataset(world, split="train").class_map
    x, y = backbone_features(weights, world, "train", options, every_point=False)
    xv, yv = backbone_features(weights, world, "val", options, every_point=True)
    return linear_probe(x, y, xv, yv, class_map, epochs, seed), xv
