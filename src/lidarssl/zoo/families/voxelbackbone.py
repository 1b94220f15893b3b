"""OpenPCDet's VoxelBackBone8x (``voxelbackbone``): the preset and grid of a VoxelNet, and SLidR's ``final`` conv."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from lidarssl.errors import CheckpointError
from lidarssl.zoo.families.keys import Head, Keys, sparse_key
from lidarssl.zoo.formats import Unwrapped
from lidarssl.zoo.origins import ORIGINS

__all__ = ["ALSO_SECOND_GRIDS", "voxelnet_final", "voxelnet_preset"]

_VOXELNETS = ("voxelnet", "voxelnet_kitti", "voxelnet_tiny")


def voxelnet_preset(u: Unwrapped, b: Mapping[str, torch.Tensor], label: str, origin: str | None,
                     hints: str) -> tuple[str, dict]:
    meta = u.lidarssl or {}
    if meta.get("backbone") in _VOXELNETS:
        return meta["backbone"], dict(meta.get("options") or {})
    c_in = int(b["conv_input.0.weight"].shape[-1])
    if c_in != 4:
        raise CheckpointError(
            f"{label}: conv_input takes {c_in} input features; lidarssl's voxelnet presets take 4 (the voxel mean "
            "of x, y, z, intensity; nuScenes detectors add a time channel lidarssl has no feature for)"
        )
    # The grid is not in the weights. ALSO's SECOND releases: the grid of the config each was pretrained with;
    # other KITTI detectors (SLidR's PV-RCNN) use OpenPCDet's KITTI grid, the rest nuScenes-like ranges.
    if u.format == "also":
        tag = next((t for t in ALSO_SECOND_GRIDS if f"also_{t}_second" in hints), None)
        if tag is not None:
            preset, options = ALSO_SECOND_GRIDS[tag]
            return preset, dict(options)
    kitti = (origin is not None and ORIGINS[origin].dataset == "kitti") or "pvrcnn" in hints or (
        "kitti" in hints and "kitti360" not in hints)
    return ("voxelnet_kitti" if kitti else "voxelnet"), {}


#: ALSO's SECOND releases (pretrained_backbone_also_<tag>_second_epoch_*.ckpt): the preset and grid of the config
#: each was pretrained with (valeoai/ALSO also_selfsup/configs/cfg/, ``quantization_params``). The README marks the
#: nuScenes and KITTI-360 ones "trained for KITTI3D": they use KITTI's SECOND (second_for_pretraining_kitti.yaml)
#: and its 0.05 m grid over x 0..70.4, y +-40 m; only their z extents differ.
ALSO_SECOND_GRIDS: dict[str, tuple[str, dict[str, list[float]]]] = {
    "kitti3d": ("voxelnet_kitti", {}),  # kitti3d_second.yaml: [0, -40, -3, 70.4, 40, 1], voxels 0.05/0.05/0.1
    "kitti360": ("voxelnet_kitti", {}),  # kitti360_second.yaml:33-34: the same grid
    "nuscenes": ("voxelnet_kitti", {"range_min": [0.0, -40.0, -5.0], "range_max": [70.4, 40.0, 3.0]}),
    # ^ nuscenes_second_kitti.yaml:33-34: spatial_extent [0, -40, -5, 70.4, 40, 3], voxels 0.05/0.05/0.1
    "once": ("voxelnet", {"voxel_size": [0.1, 0.1, 0.2], "range_min": [-75.2, -75.2, -5.0],
                          "range_max": [75.2, 75.2, 3.0]}),  # once_raw_small_second.yaml:34-35
}


def voxelnet_final(ks: Keys, keys: list[str], layout: str) -> Head:
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        name, tensor, notes, permuted = sparse_key(ks, key, layout)
        ks.put(key, name, tensor, "head", notes, permuted, into=out)
    w = out.get("final.weight")
    c = (int(w.shape[-1]), int(w.shape[0])) if w is not None else (None, None)
    return Head("final", "voxelnet_final", out, {
        "in_channels": c[0], "out_channels": c[1],
        "description": f"SLidR's final 1x1 sparse conv ({c[0]} -> {c[1]}, before height compression)"})
