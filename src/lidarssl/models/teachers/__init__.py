"""Frozen image teachers: DINOv2 and DINO ViTs and ResNet-50s, built with timm/torchvision, weights from local files.

``create_teacher("dinov2_vitl14", weights="dinov2_vitl14_pretrain.pth", image_size=(224, 448))`` returns a
frozen :class:`Teacher` mapping (B, 3, H, W) RGB images (uint8 0..255 or float 0..1) to (B, C, h, w)
features; :func:`list_teachers` names the variants. ``weights=None`` builds a random teacher. A variant is a
function decorated with ``@register_teacher`` in a module here, and one line in :mod:`lidarssl.registry`
declaring its name. Importing this package loads no teacher (nor torch): the names below are imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = ["Teacher", "create_teacher", "list_teachers", "register_teacher"]

if TYPE_CHECKING:
    from lidarssl.models.teachers.base import Teacher, create_teacher, list_teachers, register_teacher


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module("lidarssl.models.teachers.base"), name)
    raise AttributeError(f"module 'lidarssl.models.teachers' has no attribute '{name}'")
