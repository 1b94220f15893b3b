"""A small semantic image teacher trained here, standing in for DINOv2 where no pretrained weights can be downloaded.

``resnet18_semantic`` is torchvision's ResNet-18 (He et al., "Deep Residual Learning for Image Recognition",
CVPR 2016) cut after ``layer3``, whose first block keeps stride 1 so the 256-channel map is at output stride 8.
Its weights come from ``lidarssl prepare teacher --root WORLD`` (:mod:`lidarssl.methods.semantic_teacher`),
which trains it with a 1x1 classifier on the camera images and per-pixel class images of a synthetic world's
training split; the classifier is dropped when the teacher loads the file, so what the 3D student sees are the
semantic features before it, as it would see DINOv2's.

Weight files: ``.safetensors`` (or ``torch.save``) with torchvision's key names (``conv1.weight``,
``layer3.0.conv1.weight``, ...), optionally with ``head.*`` keys, which are dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet18 as tv_resnet18

from lidarssl.errors import CheckpointError
from lidarssl.models.teachers.base import Release, Teacher, build, check_options, key_sample, register_teacher

__all__ = ["SemanticResNetTeacher"]

_LAYERS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")


class SemanticResNetTeacher(Teacher):
    """ResNet-18 up to layer3 at output stride 8 (256 channels), trained here for semantic segmentation.

    Args:
        name: registry name.
        image_size: ``(H, W)`` to resize inputs to, or ``None`` to keep their size.
        upsample: resize the features to the input's ``(H, W)``.
        align_corners: ``align_corners`` of that upsampling.
        pre_relu: return layer3's output before its last ReLU (signed features, as DINOv2's ``x_pre_norm``).
    """

    def __init__(self, name: str, image_size: tuple[int, int] | None = None, upsample: bool = False,
                 align_corners: bool = False, pre_relu: bool = False) -> None:
        super().__init__(name, image_size=image_size, upsample=upsample, align_corners=align_corners)
        self.pre_relu = pre_relu
        self.out_channels = 256
        self.stride = 8
        net = tv_resnet18(weights=None)
        # layer3 without its stride: a finer map for small objects, at the cost of a smaller receptive field
        net.layer3[0].conv1.stride = (1, 1)
        net.layer3[0].downsample[0].stride = (1, 1)
        self.encoder = nn.Sequential(OrderedDict((layer, getattr(net, layer)) for layer in _LAYERS))

    def feature_size(self, height: int, width: int) -> tuple[int, int]:
        h, w = self.network_size(height, width)
        for _ in range(3):  # conv1, maxpool, layer2: each rounds up
            h, w = -(-h // 2), -(-w // 2)
        return h, w

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pre_relu:
            return self.encoder(x)
        x = self.encoder[:-1](x)
        *blocks, last = self.encoder.layer3
        for block in blocks:
            x = block(x)
        # torchvision's BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), without that last relu
        out = last.bn2(last.conv2(last.relu(last.bn1(last.conv1(x)))))
        return out + (last.downsample(x) if last.downsample is not None else x)

    def releases(self) -> list[Release]:
        return [Release("resnet18_semantic.safetensors", "(no download: it is trained here)", "lidarssl",
                        "make it with `lidarssl prepare teacher --root WORLD out=FILE` on a synthetic world")]

    def convert(self, checkpoint: Mapping[str, Any], source: str) -> dict[str, torch.Tensor]:
        if "conv1.weight" not in checkpoint:
            raise CheckpointError(f"{source}: not a resnet18_semantic weights file (no conv1.weight); keys: "
                                  f"{key_sample(checkpoint)}. Make one with `lidarssl prepare teacher --root WORLD`")
        return {k: v for k, v in checkpoint.items() if not str(k).startswith("head.")}


@register_teacher
def resnet18_semantic(weights: str | Path | None = None, **options: Any) -> SemanticResNetTeacher:
    """ResNet-18 to layer3 at output stride 8 (256 channels), trained on a synthetic world's class images."""
    check_options(SemanticResNetTeacher, "resnet18_semantic", options)
    return build(SemanticResNetTeacher("resnet18_semantic", **options), weights)  # type: ignore[return-value]
