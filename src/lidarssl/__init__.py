"""lidarssl: self-supervised pretraining of 3D lidar backbones, with linear probing and finetuning.

The names a user calls, timm style::

    import lidarssl
    lidarssl.list_backbones()                         # registered presets
    spec = lidarssl.create_backbone("waffleiron_48_768")
    teacher = lidarssl.create_teacher("dinov2_vitl14", weights="dinov2_vitl14_pretrain.pth")
    dataset = lidarssl.open_dataset("/data/sets/nuscenes", split="train@1%")
    scan = dataset[0]                                 # a lidarssl.Scan with its CameraViews
    feats = lidarssl.extract_features("runs/scalr/backbone.safetensors", scan)   # (N, C), every point
    config = lidarssl.load_config(lidarssl.PretrainConfig, "scalr-wi-synthetic")

They are imported on first use, so ``import lidarssl`` (and ``lidarssl --help``) stays fast.
"""

from __future__ import annotations

from importlib import import_module, metadata
from typing import TYPE_CHECKING, Any

try:
    __version__ = metadata.version("lidarssl")
except metadata.PackageNotFoundError:  # a source tree on sys.path without installing it
    __version__ = "0+unknown"

#: Public name -> module that defines it.
_EXPORTS = {
    "create_backbone": "lidarssl.models.backbones",
    "list_backbones": "lidarssl.models.backbones",
    "create_teacher": "lidarssl.models.teachers",
    "list_teachers": "lidarssl.models.teachers",
    "list_methods": "lidarssl.methods",
    "open_dataset": "lidarssl.data.datasets",
    "extract_features": "lidarssl.features",
    "Scan": "lidarssl.data.scan",
    "CameraView": "lidarssl.data.scan",
    "load_config": "lidarssl.config",
    "SegmentationConfig": "lidarssl.downstream.config",
    "PretrainConfig": "lidarssl.methods.config",
}

__all__ = ["CameraView", "PretrainConfig", "Scan", "SegmentationConfig", "__version__", "create_backbone",
           "create_teacher", "extract_features", "list_backbones", "list_methods", "list_teachers", "load_config",
           "open_dataset"]

if TYPE_CHECKING:
    from lidarssl.config import load_config
    from lidarssl.data.datasets import open_dataset
    from lidarssl.data.scan import CameraView, Scan
    from lidarssl.downstream.config import SegmentationConfig
    from lidarssl.features import extract_features
    from lidarssl.methods import list_methods
    from lidarssl.methods.config import PretrainConfig
    from lidarssl.models.backbones import create_backbone, list_backbones
    from lidarssl.models.teachers import create_teacher, list_teachers


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lidarssl' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(__all__)
