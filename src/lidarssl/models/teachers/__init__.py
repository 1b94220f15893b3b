"""Frozen image teachers: DINOv2 and DINO ViTs and ResNet-50s, built with timm/torchvision, weights from local files.

``create_teacher("dinov2_vitl14", weights="dinov2_vitl14_pretrain.pth", image_size=(224, 448))`` returns a
frozen :class:`Teacher` mapping (B, 3, H, W) RGB images (uint8 0..255 or float 0..1) to (B, C, h, w)
features; :func:`list_teachers` names the variants. ``weights=None`` builds a random teacher.
"""

# Importing the variant modules registers them.
from lidarssl.models.teachers import oracle, resnet, semantic, vit  # noqa: F401
from lidarssl.models.teachers.base import (
    Teacher,
    create_teacher,
    list_teachers,
    register_teacher,
)

__all__ = ["Teacher", "create_teacher", "list_teachers", "register_teacher"]
