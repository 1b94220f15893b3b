"""ResNet-50 teachers (torchvision's network) with the self-supervised weight formats of SLidR, PPKT and NCLR.

Two variants, both without the average pool and classifier:

* ``resnet50_dilated``: SLidR's and ST-SLidR's encoder. The strides of layer2, layer3 and layer4 are
  replaced by dilation (2, 4, 8), so layer4 gives 2048 channels at stride 4 (56x104 for 224x416).
* ``resnet50``: the plain encoder, 2048 channels at stride 32; PPKT's teacher, and NCLR's (DINO weights).

Weight files are recognised from their keys (``format=`` overrides the guess):

* ``moco``: ``{"state_dict": {"module.encoder_q.*", "module.encoder_k.*", "module.queue", ...}}``; the query
  encoder is kept and its ``fc`` projection head dropped (MoCo v1 and v2).
* ``swav``: flat ``module.*`` keys; ``projection_head.*`` and ``prototypes.*`` dropped (SwAV, DeepCluster-v2).
* ``dino``: flat torchvision keys without ``fc`` (DINO ResNet-50).
* ``obow``: ``{"network": {torchvision keys}}``; ``fc`` dropped if present (oBoW feature extractor).
* ``torchvision``: flat torchvision keys with the ImageNet classifier ``fc``, which is dropped.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet50 as tv_resnet50

from lidarssl.errors import CheckpointError, ConfigError
from lidarssl.models.teachers.base import (
    Release,
    Teacher,
    build,
    check_options,
    key_sample,
    register_teacher,
)

__all__ = ["FORMATS", "ResNetTeacher", "detect_format"]

_FB = "https://dl.fbaipublicfiles.com"
#: The official file of each weight format.
FORMATS: dict[str, Release] = {
    "moco": Release("moco_v2_800ep_pretrain.pth.tar",
                    f"{_FB}/moco/moco_checkpoints/moco_v2_800ep/moco_v2_800ep_pretrain.pth.tar",
                    "facebookresearch/moco"),
    "swav": Release("swav_800ep_pretrain.pth.tar", f"{_FB}/deepcluster/swav_800ep_pretrain.pth.tar",
                    "facebookresearch/swav"),
    "dino": Release("dino_resnet50_pretrain.pth", f"{_FB}/dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth",
                    "facebookresearch/dino"),
    "obow": Release("ImageNetFull_ResNet50_OBoW_full_feature_extractor.zip",
                    "https://github.com/valeoai/obow/releases/download/v0.1.0/"
                    "ImageNetFull_ResNet50_OBoW_full_feature_extractor.zip",
                    "valeoai/obow (v0.1.0)",
                    "unzip it and use tochvision_resnet50_student_K8192_epoch200.pth.tar from inside "
                    "(SLidR renames it weights/obow.pt)"),
    "torchvision": Release("resnet50-0676ba61.pth", "https://download.pytorch.org/models/resnet50-0676ba61.pth",
                           "pytorch/vision (ResNet50_Weights.IMAGENET1K_V1, what SLidR's 'imagenet' loads)"),
}  # fmt: skip
# SLidR's `image_weights` names, accepted so its configs translate one to one.
_ALIASES = {"moco_v1": "moco", "moco_v2": "moco", "deepcluster_v2": "swav", "imagenet": "torchvision"}
_LAYERS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def detect_format(checkpoint: Mapping[str, Any]) -> str | None:
    """The weight format of a ResNet-50 checkpoint from its keys, or ``None`` when none fits."""
    if isinstance(checkpoint.get("network"), Mapping):
        return "obow"
    inner = checkpoint.get("state_dict")
    if isinstance(inner, Mapping) and any(str(k).startswith("module.encoder_q.") for k in inner):
        return "moco"
    if "module.conv1.weight" in checkpoint:
        return "swav"
    if "conv1.weight" in checkpoint:
        return "torchvision" if "fc.weight" in checkpoint else "dino"
    return None


def _strip(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k.removeprefix(prefix): v for k, v in state.items()}


def _drop(state: Mapping[str, Any], *prefixes: str) -> dict[str, Any]:
    return {k: v for k, v in state.items() if not k.startswith(prefixes)}


class ResNetTeacher(Teacher):
    """A frozen torchvision ResNet-50 without pool and classifier: layer4's 2048-channel map.

    Args:
        name: registry name.
        dilated: replace the strides of layer2-4 by dilation (output stride 4) instead of stride 32.
        format: weight format of the file to load (see the module docstring; SLidR's names ``moco_v2``,
            ``moco_v1``, ``deepcluster_v2``, ``imagenet`` are accepted too), or ``None`` to detect it.
        image_size: ``(H, W)`` to resize inputs to, or ``None`` to keep their size.
        upsample: resize the features to the input's ``(H, W)``.
        align_corners: ``align_corners`` of that upsampling.
    """

    def __init__(
        self,
        name: str,
        dilated: bool,
        format: str | None = None,  # noqa: A002 - the config key users write
        image_size: tuple[int, int] | None = None,
        upsample: bool = False,
        align_corners: bool = False,
    ) -> None:
        super().__init__(name, image_size=image_size, upsample=upsample, align_corners=align_corners)
        if format is not None:
            format = _ALIASES.get(format, format)
            if format not in FORMATS:
                known = sorted([*FORMATS, *_ALIASES])
                raise ConfigError(f"teacher '{name}': unknown weights format '{format}'; known: {', '.join(known)}")
        self.format = format
        self.dilated = dilated
        self.out_channels = 2048
        self.stride = 4 if dilated else 32
        net = tv_resnet50(weights=None, replace_stride_with_dilation=[dilated] * 3)
        # Keys stay torchvision's (conv1.weight, layer1.0.bn1.weight, ...), so weight files map by name.
        self.encoder = nn.Sequential(OrderedDict((layer, getattr(net, layer)) for layer in _LAYERS))

    def feature_size(self, height: int, width: int) -> tuple[int, int]:
        # Every stride-2 stage (conv1, maxpool, then layer2-4 unless dilated) rounds up.
        halvings = int(math.log2(self.stride))
        h, w = self.network_size(height, width)
        for _ in range(halvings):
            h, w = -(-h // 2), -(-w // 2)
        return h, w

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def releases(self) -> list[Release]:
        return [FORMATS[self.format]] if self.format else list(FORMATS.values())

    def convert(self, checkpoint: Mapping[str, Any], source: str) -> dict[str, torch.Tensor]:
        found = detect_format(checkpoint)
        fmt = self.format or found
        if fmt is None:
            looks = " (this looks like a ViT checkpoint)" if {"pos_embed", "cls_token"} & set(checkpoint) else ""
            raise CheckpointError(
                f"{source}: not a ResNet-50 weights file in a known layout{looks}; keys: {key_sample(checkpoint)}. "
                f"Teacher '{self.name}' expects one of: {'; '.join(r.describe() for r in FORMATS.values())}"
            )
        if fmt == "moco":
            inner = checkpoint.get("state_dict")
            if not isinstance(inner, Mapping):
                raise CheckpointError(f"{source}: format 'moco' expects a 'state_dict' entry holding "
                                      f"module.encoder_q.* keys; top-level keys: {key_sample(checkpoint)}")  # fmt: skip
            # Selecting the query encoder by prefix leaves out the key encoder and the queue.
            prefix = "module.encoder_q."
            state = {k.removeprefix(prefix): v for k, v in inner.items() if k.startswith(prefix)}
            return _drop(state, "fc.")
        if fmt == "swav":
            return _drop(_strip(checkpoint, "module."), "projection_head.", "prototypes.")
        if fmt == "obow":
            network = checkpoint.get("network")
            if not isinstance(network, Mapping):
                raise CheckpointError(f"{source}: format 'obow' expects a 'network' entry; "
                                      f"top-level keys: {key_sample(checkpoint)}")  # fmt: skip
            return _drop(_strip(network, "module."), "fc.")
        if fmt == "torchvision":
            return _drop(checkpoint, "fc.")
        return dict(checkpoint)  # dino: the backbone as it is


def _build(name: str, dilated: bool, weights: str | Path | None, options: dict[str, Any]) -> ResNetTeacher:
    check_options(ResNetTeacher, name, options)
    return build(ResNetTeacher(name, dilated, **options), weights)  # type: ignore[return-value]


@register_teacher
def resnet50_dilated(weights: str | Path | None = None, **options: Any) -> ResNetTeacher:
    """ResNet-50 dilated to output stride 4 (2048 channels): SLidR's and ST-SLidR's teacher."""
    return _build("resnet50_dilated", True, weights, options)


@register_teacher
def resnet50(weights: str | Path | None = None, **options: Any) -> ResNetTeacher:
    """Plain ResNet-50 at output stride 32 (2048 channels): PPKT's teacher, and NCLR's with DINO weights."""
    return _build("resnet50", False, weights, options)
