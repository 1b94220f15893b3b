"""Frozen image teachers: DINOv2 and DINO ViTs and ResNet-50s, built with timm/torchvision, weights from local files.

``create_teacher("dinov2_vitl14", weights="dinov2_vitl14_pretrain.pth", image_size=(224, 448))`` returns a
frozen :class:`Teacher` mapping (B, 3, H, W) RGB images (uint8 0..255 or float 0..1) to (B, C, h, w)
features; :func:`list_teachers` names the variants. ``weights=None`` builds a random teacher.
"""

from lidarssl.models.teachers.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Release,
    Teacher,
    create_teacher,
    list_teachers,
    read_checkpoint,
    register_teacher,
)
from lidarssl.models.teachers.resnet import FORMATS, ResNetTeacher, detect_format
from lidarssl.models.teachers.vit import ViTSpec, ViTTeacher, convert_dinov2, interpolate_pos_embed

__all__ = [
    "FORMATS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Release",
    "ResNetTeacher",
    "Teacher",
    "ViTSpec",
    "ViTTeacher",
    "convert_dinov2",
    "create_teacher",
    "detect_format",
    "interpolate_pos_embed",
    "list_teachers",
    "read_checkpoint",
    "register_teacher",
]
