"""The oracle teacher of the known-answer tests: its features are a fixed embedding of each pixel's class.

With it, what an image-to-lidar method can transfer is known exactly: a student that learns the task must
separate the classes its points saw. It reads the per-pixel class images a synthetic world stores
(``class_images/``), which the pairing adds to the batch as ``pixel_classes``, never camera pixels; a real
dataset has no class images, and the pairing says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lidarssl.errors import CheckpointError, ConfigError
from lidarssl.models.teachers.base import Release, Teacher, check_options, register_teacher

__all__ = ["OracleTeacher"]

#: nuScenes-lidarseg training classes, plus one channel for unlabelled pixels (sky included).
NUM_CLASSES = 16


class OracleTeacher(Teacher):
    """Features ``one_hot(class)`` (17 channels) at every pixel; no network, no weights.

    Args:
        name: registry name.
        image_size: unused (accepted so recipes can keep it); the features have the class image's size.
        upsample: unused, the features are at full resolution already.
        align_corners: unused.
    """

    def __init__(self, name: str, image_size: tuple[int, int] | None = None, upsample: bool = False,
                 align_corners: bool = False) -> None:
        super().__init__(name, image_size=image_size, upsample=upsample, align_corners=align_corners)
        self.out_channels = NUM_CLASSES + 1
        self.stride = 1
        self.encoder = nn.Identity()

    def embed(self, classes: torch.Tensor) -> torch.Tensor:
        """(V, H, W) class ids (``NUM_CLASSES`` for unlabelled) -> (V, 17, H, W) float features."""
        return F.one_hot(classes.long().clamp(0, NUM_CLASSES), NUM_CLASSES + 1).permute(0, 3, 1, 2).float()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise ConfigError("teacher 'oracle' reads the class images of a synthetic world, not camera pixels: use it "
                          "only for pretraining on a synthetic world with online features (no data.teacher_cache)")

    def feature_size(self, height: int, width: int) -> tuple[int, int]:
        return height, width

    def releases(self) -> list[Release]:
        return []

    def convert(self, checkpoint: Mapping[str, Any], source: str) -> dict[str, torch.Tensor]:
        raise CheckpointError(f"{source}: teacher 'oracle' has no weights; set teacher.weights: none")


@register_teacher
def oracle(weights: str | Path | None = None, **options: Any) -> OracleTeacher:
    """Known-answer teacher: a one-hot embedding of each pixel's class, from a synthetic world's class images."""
    check_options(OracleTeacher, "oracle", options)
    if weights is not None:
        raise CheckpointError(f"{weights}: teacher 'oracle' has no weights; set teacher.weights: none")
    return OracleTeacher("oracle", **options).freeze()
