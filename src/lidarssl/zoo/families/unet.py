"""Sparse U-Nets (``unet``, and ``res16`` once renamed): the lidarssl preset a MinkUNet or SPVCNN's shapes match."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lidarssl.errors import CheckpointError

__all__ = ["unet_preset"]

_L18 = (2, 2, 2, 2, 2, 2, 2, 2)
_L34 = (2, 3, 4, 6, 2, 2, 2, 2)
_L1 = (1, 1, 1, 1, 1, 1, 1, 1)
# (layers, stem convs, point branch) -> (preset, its default width); SLidR's Res16UNet34C is res16unet34c.
_UNET_PRESETS = {(_L34, 1, False): ("minkunet34", 1.0), (_L18, 1, False): ("minkunet18", 1.0),
                 (_L18, 2, False): ("minkunet18_sc", 1.0), (_L18, 2, True): ("spvcnn", 1.0),
                 (_L1, 1, False): ("minkunet_tiny", 0.25), (_L1, 2, True): ("spvcnn_tiny", 0.25)}  # fmt: skip
_HALF = {"minkunet34": "minkunet34_half", "spvcnn": "spvcnn_half"}
_FEATURES = {1: ["intensity"], 4: ["x", "y", "z", "intensity"]}


def unet_preset(fmt: str, family: str, b: Mapping[str, torch.Tensor], label: str, network: str) -> tuple[str, dict]:
    stem = sorted({int(k.split(".")[1]) for k in b if k.startswith("stem.") and k.endswith(".weight")
                   and b[k].dim() == 5})  # fmt: skip
    layers = tuple(len({k.split(".")[1] for k in b if k.startswith(f"stage{i}.") and k.split(".")[1] != "0"})
                   for i in range(1, 5))
    layers += tuple(len({k.split(".")[2] for k in b if k.startswith(f"up{i}.1.")}) for i in range(1, 5))
    point_branch = any(k.startswith("point_transforms.") for k in b)
    found = _UNET_PRESETS.get((layers, len(stem), point_branch))
    if found is None:
        raise CheckpointError(
            f"{label}: a {network} with {len(stem)} stem conv(s), blocks per level {list(layers)}"
            f"{' and a point branch' if point_branch else ''} matches no lidarssl preset (MinkUNet34/Res16UNet34C: "
            f"{list(_L34)}, MinkUNet18: {list(_L18)}, MinkUNet18SC and SPVCNN: two stem convs)"
        )
    preset, default_width = found
    if preset == "minkunet34" and fmt in ("slidr", "stslidr"):
        preset = "res16unet34c"  # SLidR's Res16UNet34C: MinkUNet34's layout on SLidR's cylindrical voxels
    width = float(b["stem.0.weight"].shape[0]) / 32
    if width == 0.5 and preset in _HALF:
        preset, default_width = _HALF[preset], 0.5
    options: dict[str, Any] = {} if width == default_width else {"width": width}
    c_in = int(b["stem.0.weight"].shape[-1])
    if c_in not in _FEATURES:
        raise CheckpointError(f"{label}: the first conv takes {c_in} input features; lidarssl's sparse presets "
                              "take 1 (intensity) or 4 (x, y, z, intensity)")  # fmt: skip
    if c_in != 1:
        options["features"] = _FEATURES[c_in]
    return preset, options
