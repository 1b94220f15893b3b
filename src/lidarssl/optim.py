"""Optimisation shared by every training module: AdamW parameter groups and the per-iteration schedule."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["optimizer_and_schedule", "param_groups", "warmup_cosine"]


def param_groups(
    named: Iterable[tuple[str, nn.Parameter]],
    weight_decay: float,
    layer_of: Callable[[str], int] | None = None,
    num_layers: int = 0,
    layer_decay: float = 1.0,
    decay_all: bool = False,
    lr_scale: float = 1.0,
) -> list[dict]:
    """Optimiser groups: no weight decay on 1-D parameters (norms, biases) unless ``decay_all`` (as every
    original does: plain ``SGD(params, weight_decay=...)``, ``AdamW(params, ...)``), and optional
    layer-wise learning-rate decay ``lr_scale = layer_decay ** (num_layers - layer_of(name))``.

    Args:
        named: (name, parameter) pairs; frozen parameters are skipped.
        weight_decay: decay of the parameters of rank >= 2.
        layer_of: depth of a parameter, from 0 (input) to ``num_layers`` (head); required when
            ``layer_decay < 1``.
        num_layers: depth of the head.
        layer_decay: multiplicative decay of the learning rate per layer below the head.
        decay_all: decay every parameter, 1-D ones included.
        lr_scale: factor of every group's learning rate (a head's own rate, SLidR's ``lr_head``).
    """
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in named:
        if not p.requires_grad:
            continue
        layer = layer_of(name) if layer_of is not None else num_layers
        no_decay = p.ndim <= 1 and not decay_all
        group = groups.setdefault((layer, no_decay), {
            "params": [], "weight_decay": 0.0 if no_decay else weight_decay,
            "lr_scale": lr_scale * layer_decay ** (num_layers - layer),
        })
        group["params"].append(p)
    return list(groups.values())


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                  min_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration schedule: linear warmup to each group's ``lr * lr_scale``, then cosine decay to
    ``min_ratio`` of it at ``total_steps``."""
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    lambdas = [lambda step, s=g.get("lr_scale", 1.0): s * factor(step) for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


def optimizer_and_schedule(groups: list[dict], o: Any, trainer: Any) -> dict[str, Any]:
    """What ``configure_optimizers`` of pretraining and segmentation returns: SGD or AdamW over ``groups``, then
    warmup and cosine decay stepped per epoch or per iteration.

    Args:
        groups: parameter groups (:func:`param_groups`).
        o: the settings: ``optimizer``, ``lr``, ``momentum``, ``dampening`` (SGD), ``schedule``, ``warmup_epochs``
            and ``min_lr``.
        trainer: the Lightning trainer (``max_epochs``, ``estimated_stepping_batches``).
    """
    if o.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, dampening=o.dampening)
    else:
        optimizer = torch.optim.AdamW(groups, lr=o.lr)
    if o.schedule == "epoch":  # SLidR's CosineAnnealingLR(T_max=num_epochs), ALSO's per-epoch cosine
        total, warmup, interval = max(1, trainer.max_epochs), int(round(o.warmup_epochs)), "epoch"
    else:
        total, interval = max(1, trainer.estimated_stepping_batches), "step"
        warmup = int(round(o.warmup_epochs * total / max(1, trainer.max_epochs)))
    scheduler = warmup_cosine(optimizer, total, warmup, o.min_lr / o.lr)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}


def scaled_lr(lr: float, base_batch: int, batch_size: int, devices: int = 1, num_nodes: int = 1,
              accumulate: int = 1) -> float:
    """``lr`` meant for ``base_batch`` scans per step, scaled linearly to the run's global batch
    (``batch_size x devices x num_nodes x accumulate``), the usual rule for these optimisers and sizes."""
    return lr * batch_size * devices * num_nodes * accumulate / base_batch
