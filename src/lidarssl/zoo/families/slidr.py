"""SLidR's and ST-SLidR's extras: the image branch (a ResNet-50 teacher and the pixel head) and the voxelisation
read from the stored training config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lidarssl.zoo.families.keys import Head, Keys, diff
from lidarssl.zoo.formats import Unwrapped

__all__ = ["image_branch", "slidr_options"]


def image_branch(ks: Keys, u: Unwrapped, notes: list[str]) -> list[Head]:
    """SLidR's ``model_images``: a torchvision ResNet-50 (``encoder.*``) becomes ``teacher.*`` and ``decoder.0`` the
    pixel head. An encoder of another architecture (SLidR's unreleased ViT option) is left out, recorded."""
    from lidarssl.models.teachers import create_teacher

    config = u.config or {}
    name = "resnet50" if _find(config, "decoder") == "ppkt" else "resnet50_dilated"
    encoder = {k.removeprefix("encoder."): v for k, v in u.images.items() if k.startswith("encoder.")}
    with torch.device("meta"):
        problems = diff(create_teacher(name).encoder.state_dict(), encoder) if encoder else ""
    if problems:
        notes.append(f"the image encoder is not a ResNet-50 ({problems}): left out")
    teacher: dict[str, torch.Tensor] = {}
    pixel: dict[str, torch.Tensor] = {}
    for key, tensor in u.images.items():
        if key.startswith("encoder.") and problems:
            ks.ignore(key, "image encoder of an architecture lidarssl has no teacher for (not a ResNet-50)")
        elif key.startswith("encoder."):
            ks.put(key, "teacher." + key.removeprefix("encoder."), tensor, "head", ["ResNet-50 encoder"], into=teacher)
        elif key.startswith("decoder.0."):
            ks.put(key, "pixel_head.proj." + key.removeprefix("decoder.0."), tensor, "head",
                   ["SLidR decoder 1x1 conv -> pixel head"], into=pixel)
        else:
            ks.ignore(key, "not part of SLidR's image branch (encoder, decoder.0)")
    heads = []
    if teacher:
        meta = {"teacher": name, "weights": _find(config, "image_weights"), "description": f"image encoder ({name})"}
        heads.append(Head("teacher", "image_encoder", teacher, meta))
    w = pixel.get("pixel_head.proj.weight")
    if w is not None:
        heads.append(Head("pixel_head", "pixel_head", pixel, {"in_channels": int(w.shape[1]),
                          "out_channels": int(w.shape[0]), "description": "pixel head (1x1 conv)"}))  # fmt: skip
    return heads


def _find(config: Mapping[str, Any], key: str) -> Any:
    """A config value by key, at any depth (SLidR's config is flat, ST-SLidR's nested)."""
    if key in config:
        return config[key]
    for value in config.values():
        if isinstance(value, Mapping):
            found = _find(value, key)
            if found is not None:
                return found
    return None


def slidr_options(u: Unwrapped, preset: str, notes: list[str]) -> dict[str, Any]:
    """SLidR's voxelisation from its stored config (voxel_size, cylindrical_coordinates), checked against
    the preset's."""
    config = u.config or {}
    voxel, cylindrical = _find(config, "voxel_size"), _find(config, "cylindrical_coordinates")
    if preset != "res16unet34c" or (voxel is None and cylindrical is None):
        return {}
    voxel = float(voxel if voxel is not None else 0.1)
    if cylindrical is False:
        notes.append(f"config: cartesian voxels of {voxel} m (cylindrical_coordinates: false)")
        return {"coordinates": "cartesian", "voxel_size": [voxel] * 3, "range_min": [-51.2, -51.2, -5.0],
                "range_max": [51.2, 51.2, 3.0]}  # fmt: skip
    notes.append(f"config: cylindrical voxels of {voxel} m in rho and z, 1 degree in phi (matches the preset)"
                 if voxel == 0.1 else f"config: cylindrical voxels of {voxel} m in rho and z")
    return {} if voxel == 0.1 else {"voxel_size": [voxel, 1.0, voxel]}
