"""3D backbones behind one contract (see :mod:`lidarssl.models.backbones.base`).

``create_backbone("waffleiron_48_768", fov_min=..., grid_shapes=...)`` returns the module, its numpy
preprocessing and its collate; :func:`list_backbones` names the presets.
"""

from lidarssl.models.backbones.base import (
    COMMON_KEYS,
    Backbone,
    BackboneSpec,
    Batch,
    Preprocessor,
    Sample,
    create_backbone,
    list_backbones,
    register_backbone,
)
from lidarssl.models.backbones.waffleiron import WaffleIron, WaffleIronSegmenter
from lidarssl.models.backbones.waffleiron_prep import WaffleIronPrep

# Sparse-convolution presets (spconv); importing the modules registers them.
from lidarssl.models.backbones import minkunet, spvcnn, voxelnet  # noqa: F401

__all__ = [
    "COMMON_KEYS",
    "Backbone",
    "BackboneSpec",
    "Batch",
    "Preprocessor",
    "Sample",
    "WaffleIron",
    "WaffleIronPrep",
    "WaffleIronSegmenter",
    "create_backbone",
    "list_backbones",
    "register_backbone",
]
