"""3D backbones behind one contract (see :mod:`lidarssl.models.backbones.base`).

``create_backbone("waffleiron_48_768", fov_min=..., grid_shapes=...)`` returns the module, its numpy
preprocessing and its collate; :func:`list_backbones` names the presets.
"""

# Importing the preset modules registers them.
from lidarssl.models.backbones import minkunet, spvcnn, voxelnet, waffleiron  # noqa: F401
from lidarssl.models.backbones.base import (
    Backbone,
    BackboneSpec,
    create_backbone,
    list_backbones,
    register_backbone,
)

__all__ = ["Backbone", "BackboneSpec", "create_backbone", "list_backbones", "register_backbone"]
