"""3D backbones behind one contract (see :mod:`lidarssl.models.backbones.base`).

``create_backbone("waffleiron_48_768", fov_min=..., grid_shapes=...)`` returns the module, its numpy
preprocessing and its collate; :func:`list_backbones` names the presets. A preset is a function decorated with
``@register_backbone`` in a module here, and one line in :mod:`lidarssl.registry` declaring its name. Importing
this package loads no backbone (nor torch): the names below are imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = ["Backbone", "BackboneSpec", "create_backbone", "list_backbones", "register_backbone"]

if TYPE_CHECKING:
    from lidarssl.models.backbones.base import (
        Backbone,
        BackboneSpec,
        create_backbone,
        list_backbones,
        register_backbone,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module("lidarssl.models.backbones.base"), name)
    raise AttributeError(f"module 'lidarssl.models.backbones' has no attribute '{name}'")
