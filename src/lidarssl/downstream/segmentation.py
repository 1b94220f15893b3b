"""Lidar semantic segmentation: a backbone, a per-point head, and three ways to train them.

* ``scratch``: backbone and head train from random initialisation;
* ``probe``: linear probing; the backbone is frozen and kept in eval mode (its norm statistics too), only
  the head trains;
* ``finetune``: the backbone starts from pretrained weights (layer-wise learning-rate decay, when set,
  applies here and in ``scratch``).

Evaluation scores **every original point**: points the backbone dropped take the prediction of their
nearest kept point (see :class:`~lidarssl.data.loader.LabelBuilder`).
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lidarssl.batch import Batch
from lidarssl.errors import ConfigError
from lidarssl.losses import lovasz_softmax
from lidarssl.metrics import (
    ConfusionMatrix,
    iou_per_class,
    mean_accuracy,
    miou,
    overall_accuracy,
)
from lidarssl.models.backbones.base import Backbone
from lidarssl.optim import optimizer_and_schedule, param_groups

__all__ = ["SegmentationModule", "Mode", "Head"]

Mode = Literal["scratch", "probe", "finetune"]
Head = Literal["bn-linear", "linear"]


def make_head(kind: Head, channels: int, num_classes: int) -> nn.Module:
    """``bn-linear``: BatchNorm then a zero-initialised linear layer (ScaLR's downstream ``classif``), a probe
    that starts from uniform predictions whatever the scale of the features; ``linear``: a 1x1 linear layer
    with PyTorch's default initialisation (SLidR's ``final`` convolution, ``downstream/model_builder.py``)."""
    if kind == "linear":
        return nn.Linear(channels, num_classes)
    head = nn.Sequential(nn.BatchNorm1d(channels), nn.Linear(channels, num_classes))
    nn.init.zeros_(head[1].weight)
    nn.init.zeros_(head[1].bias)
    return head


class SegmentationModule(L.LightningModule):
    """Backbone + head, trained with cross-entropy (+ Lovász-softmax) under one seed's downstream protocol.

    Args:
        backbone: any backbone of the registry (per-point features out).
        class_names: names of the training classes.
        mode: ``scratch``, ``probe`` or ``finetune``.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW weight decay of parameters of rank >= 2.
        warmup_epochs: linear warmup length, in epochs (may be fractional).
        min_lr: learning rate at the end of the cosine decay.
        layer_decay: layer-wise learning-rate decay of the backbone when it trains (1 = none); ScaLR's
            ``finetune.py`` applies it with or without pretrained weights.
        lovasz_weight: weight of the Lovász-softmax term.
        ignore_index: training id of unlabelled points.
        head: head type (:func:`make_head`).
        optimizer: ``adamw`` or ``sgd`` (with ``momentum`` and ``dampening``).
        head_lr: learning rate of the head (SLidR's ``lr_head``); ``None``: ``lr``.
        decay_all: weight decay on every parameter, 1-D ones included (the originals).
        schedule: cosine stepped per ``iteration`` (ScaLR) or per ``epoch`` (SLidR, ALSO).
        loss: ``ce+lovasz`` or ``ce``.
        loss_support: ``point``: the loss covers every kept point; ``voxel``: one row per voxel, its
            representative point's (SLidR's downstream: ``unique_labels = points_labels[indexes]``).
    """

    def __init__(
        self,
        backbone: Backbone,
        class_names: tuple[str, ...],
        mode: Mode = "scratch",
        lr: float = 1e-3,
        weight_decay: float = 3e-3,
        warmup_epochs: float = 1.0,
        min_lr: float = 1e-5,
        layer_decay: float = 1.0,
        lovasz_weight: float = 1.0,
        ignore_index: int = 255,
        head: Head = "bn-linear",
        optimizer: Literal["adamw", "sgd"] = "adamw",
        momentum: float = 0.9,
        dampening: float = 0.1,
        head_lr: float | None = None,
        decay_all: bool = False,
        schedule: Literal["iteration", "epoch"] = "iteration",
        loss: Literal["ce+lovasz", "ce"] = "ce+lovasz",
        loss_support: Literal["point", "voxel"] = "point",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = backbone
        self.class_names = tuple(class_names)
        self.head = make_head(head, backbone.out_channels, len(class_names))
        if mode == "probe":
            self.backbone.requires_grad_(False)
            self.backbone.eval()  # Lightning keeps each module's mode (it never calls train() at fit start)
        self.val_confusion = ConfusionMatrix(len(class_names), ignore_index)
        self.last_confusion: np.ndarray | None = None

    def train(self, mode: bool = True) -> SegmentationModule:
        super().train(mode)
        if self.hparams.mode == "probe":
            self.backbone.eval()  # frozen features: norm layers keep their pretrained statistics
        return self

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits (sum M, num_classes) of the kept points."""
        return self.head(self.backbone(batch))

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ignore = self.hparams.ignore_index
        if not bool((labels != ignore).any()):  # a cropped batch may hold no labelled point: no signal, not NaN
            return logits.float().sum() * 0.0
        loss = F.cross_entropy(logits.float(), labels, ignore_index=ignore)
        if self.hparams.loss == "ce+lovasz" and self.hparams.lovasz_weight:
            loss = loss + self.hparams.lovasz_weight * lovasz_softmax(logits.float().softmax(1), labels, ignore)
        return loss

    def _supported(self, logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and labels the loss covers: every kept point, or each voxel's representative point."""
        if self.hparams.loss_support == "point":
            return logits, batch["labels"]
        if "voxel_point" not in batch:
            raise ConfigError("optim.loss_support=voxel needs a voxel backbone (minkunet, res16unet34c, ...); this "
                              "backbone keeps points, not voxels: set optim.loss_support=point")
        rows = batch["voxel_point"]
        return logits[rows], batch["labels"][rows]

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = self._loss(*self._supported(self(batch), batch))
        if not torch.isfinite(loss):
            from lidarssl.runs import non_finite

            raise non_finite(self.trainer, "loss")
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=int(batch["offsets"].shape[0] - 1))
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        logits = self(batch)
        self.log("val/loss", self._loss(*self._supported(logits, batch)), batch_size=int(batch["offsets"].shape[0] - 1),
                 sync_dist=True)
        pred = logits.argmax(1)[batch["nearest"]]  # every original point takes its nearest kept point's class
        self.val_confusion.update(pred, batch["point_labels"])

    def on_validation_epoch_start(self) -> None:
        self.val_confusion.reset()

    def on_validation_epoch_end(self) -> None:
        conf = torch.from_numpy(self.val_confusion.compute()).to(self.device)
        if self.trainer.world_size > 1:
            torch.distributed.all_reduce(conf)
        conf_np = conf.cpu().numpy()
        self.last_confusion = conf_np
        self.log_dict({"val/mIoU": 100 * miou(conf_np), "val/oAcc": 100 * overall_accuracy(conf_np),
                       "val/mAcc": 100 * mean_accuracy(conf_np)}, prog_bar=True)
        for name, iou in zip(self.class_names, iou_per_class(conf_np)):
            if not np.isnan(iou):
                self.log(f"val_iou/{name}", 100 * float(iou))

    def configure_optimizers(self):
        hp = self.hparams
        head = [(f"head.{n}", p) for n, p in self.head.named_parameters()]
        head_scale = (hp.head_lr / hp.lr) if hp.head_lr is not None else 1.0
        depth = getattr(self.backbone, "num_layers", 0) + 1
        groups = []
        if hp.mode != "probe":
            backbone = [(f"backbone.{n}", p) for n, p in self.backbone.named_parameters()]
            layer_of = self._layer_of if hp.layer_decay < 1 else None
            groups += param_groups(backbone, hp.weight_decay, layer_of, depth, hp.layer_decay, hp.decay_all)
        groups += param_groups(head, hp.weight_decay, None, depth, hp.layer_decay, hp.decay_all, head_scale)
        return optimizer_and_schedule(groups, hp, self.trainer)

    def _layer_of(self, name: str) -> int:
        """Depth of a parameter for layer-wise decay: the backbone says for its own, the head is on top."""
        if name.startswith("backbone."):
            layer_id = getattr(self.backbone, "layer_id", None)
            if layer_id is None:
                raise ValueError(f"{type(self.backbone).__name__} defines no layer_id(); use layer_decay=1")
            return layer_id(name.removeprefix("backbone."))
        return getattr(self.backbone, "num_layers", 0) + 1
