"""Sparse convolution networks: SLidR's MinkowskiEngine Res16UNet (``res16``), torchsparse-named U-Nets (``unet``:
ALSO's MinkUNet and SPVCNN, SegContrast/NCLR's MinkUNet) and OpenPCDet's VoxelBackBone8x (``voxelbackbone``). They
share the kernel layouts (:mod:`lidarssl.zoo.kernels`), the key suffixes and the linear heads."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import torch

from lidarssl.errors import CheckpointError
from lidarssl.zoo.families.keys import Head, Keys
from lidarssl.zoo.formats import Unwrapped
from lidarssl.zoo.kernels import LAYOUT_NAMES, spconv_layout
from lidarssl.zoo.origins import ORIGINS

__all__ = ["ALSO_SECOND_GRIDS", "convert_sparse"]

_L18 = (2, 2, 2, 2, 2, 2, 2, 2)
_L34 = (2, 3, 4, 6, 2, 2, 2, 2)
_L1 = (1, 1, 1, 1, 1, 1, 1, 1)
# (layers, stem convs, point branch) -> (preset, its default width); SLidR's Res16UNet34C is res16unet34c.
_UNET_PRESETS = {(_L34, 1, False): ("minkunet34", 1.0), (_L18, 1, False): ("minkunet18", 1.0),
                 (_L18, 2, False): ("minkunet18_sc", 1.0), (_L18, 2, True): ("spvcnn", 1.0),
                 (_L1, 1, False): ("minkunet_tiny", 0.25), (_L1, 2, True): ("spvcnn_tiny", 0.25)}  # fmt: skip
_HALF = {"minkunet34": "minkunet34_half", "spvcnn": "spvcnn_half"}
_FEATURES = {1: ["intensity"], 4: ["x", "y", "z", "intensity"]}
_VOXELNETS = ("voxelnet", "voxelnet_kitti", "voxelnet_tiny")

_BLOCK_PARTS = {"conv1": "net.0", "norm1": "net.1", "conv2": "net.3", "norm2": "net.4",
                "downsample.0": "downsample.0", "downsample.1": "downsample.1"}  # fmt: skip


def _res16_block(m: re.Match) -> str:
    b, j, part, rest = int(m[1]), int(m[2]), _BLOCK_PARTS[m[3]], m[4]
    where = f"stage{b}.{j + 1}" if b <= 4 else f"up{b - 4}.1.{j}"
    return f"{where}.{part}.{rest}"


_RES16: list[tuple[re.Pattern, Callable[[re.Match], str]]] = [
    (re.compile(r"conv0p1s1\.(.+)"), lambda m: f"stem.0.{m[1]}"),
    (re.compile(r"bn0\.(.+)"), lambda m: f"stem.1.{m[1]}"),
    (re.compile(r"conv([1-4])p\d+s2\.(.+)"), lambda m: f"stage{m[1]}.0.net.0.{m[2]}"),
    (re.compile(r"bn([1-4])\.(.+)"), lambda m: f"stage{m[1]}.0.net.1.{m[2]}"),
    (re.compile(r"convtr([4-7])p\d+s2\.(.+)"), lambda m: f"up{int(m[1]) - 3}.0.net.0.{m[2]}"),
    (re.compile(r"bntr([4-7])\.(.+)"), lambda m: f"up{int(m[1]) - 3}.0.net.1.{m[2]}"),
    (re.compile(r"block([1-8])\.(\d+)\.(conv1|norm1|conv2|norm2|downsample\.[01])\.(.+)"), _res16_block),
]


def _res16_name(name: str) -> str | None:
    for pattern, target in _RES16:
        m = pattern.fullmatch(name)
        if m:
            return target(m)
    return None


def _sparse_layout(family: str, state: Mapping[str, torch.Tensor], label: str) -> str:
    if family == "res16" or any(".bn." in k for k in state):
        return "minkowski"
    if any(k.endswith(".kernel") for k in state):
        return "torchsparse14"
    first = "conv_input.0.weight" if family == "voxelbackbone" else "stem.0.weight"
    w = state[first]
    if family == "voxelbackbone":
        layout = spconv_layout(w, 16)
    elif w.dim() == 5 and w.shape[1:4] == (3, 3, 3):
        layout = "spconv2"
    elif w.dim() == 5 and w.shape[:3] == (3, 3, 3):  # a stem's input is narrower than its output
        layout = "spconv1" if w.shape[3] <= w.shape[4] else "spconv21_native"
    else:
        layout = None
    if layout is None:
        raise CheckpointError(f"{label}: cannot tell the kernel layout of {first} {tuple(w.shape)}; expected one of "
                              f"{'; '.join(LAYOUT_NAMES.values())}")  # fmt: skip
    return layout


def _convert_sparse_key(ks: Keys, key: str, layout: str) -> tuple[str, torch.Tensor, list[str], bool]:
    """A sparse network key and tensor with lidarssl's suffixes and kernel layout."""
    tensor, notes, permuted = ks.u.state[key], [], False
    name = key
    if ".bn." in name:
        name = name.replace(".bn.", ".")
        notes.append("MinkowskiEngine BatchNorm: '.bn.' dropped")
    if name.endswith(".kernel"):
        name = name.removesuffix(".kernel") + ".weight"
        tensor, permuted = ks.kernel(key, tensor, layout), True
        notes.append(f"{layout} kernel -> (C_out, kz, ky, kx, C_in)")
    elif name.endswith(".weight") and tensor.dim() == 5 and layout != "spconv2":
        tensor, permuted = ks.kernel(key, tensor, layout), True
        notes.append(f"{layout} kernel -> (C_out, kz, ky, kx, C_in)")
    return name, tensor, notes, permuted


def _linear_head(ks: Keys, keys: list[str], prefix: str, kind: str) -> Head | None:
    """``classifier``/``final`` heads of sparse networks, as ``head.*``: a Linear (``.0.weight``), an ME 1x1
    conv (``.kernel``, ``.bias`` (1, C)), or a BatchNorm1d + Linear (``.0.running_mean``, ``.1.weight``)."""
    state, out = ks.u.state, {}
    if not keys:
        return None
    if f"{prefix}.kernel" in state:  # MinkowskiEngine 1x1 conv with bias (SLidR's final)
        kernel = state[f"{prefix}.kernel"]
        kernel = kernel[0] if kernel.dim() == 3 else kernel
        ks.put(f"{prefix}.kernel", "head.weight", kernel.t().contiguous(), "head",
               ["MinkowskiEngine 1x1 kernel (C_in, C_out) transposed to a linear weight"], True, out)
        if f"{prefix}.bias" in state:
            ks.put(f"{prefix}.bias", "head.bias", state[f"{prefix}.bias"].reshape(-1), "head",
                   ["MinkowskiEngine bias (1, C) -> (C,)"], True, out)
    elif f"{prefix}.1.weight" in state and f"{prefix}.0.running_mean" in state:  # BatchNorm1d + Linear
        for key in keys:
            ks.put(key, "head." + key.removeprefix(f"{prefix}."), state[key], "head", [], into=out)
    elif f"{prefix}.0.weight" in state and state[f"{prefix}.0.weight"].dim() == 2:  # Sequential(Linear)
        for key in keys:
            ks.put(key, "head." + key.removeprefix(f"{prefix}.0."), state[key], "head", [], into=out)
    else:
        for key in keys:
            ks.ignore(key, f"'{prefix}' head of an unknown layout")
        return None
    for key in keys:
        if not any(r.source == ks.source(key) for r in ks.records):
            ks.ignore(key, f"not part of the '{prefix}' head")
    weight = out.get("head.weight", out.get("head.1.weight"))
    k, c = (int(weight.shape[0]), int(weight.shape[1])) if weight is not None else (None, None)
    what = "classifier" if kind == "classifier" else "projection head"
    return Head("head", kind, out, {"in_channels": c, "out_channels": k, "norm": "head.0.running_mean" in out,
                                    "description": f"{what} ({c} -> {k})"})


def _unet_preset(fmt: str, family: str, b: Mapping[str, torch.Tensor], label: str, network: str) -> tuple[str, dict]:
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


def convert_sparse(u: Unwrapped, label: str, family: str, fmt: str, origin: str | None, hints: str) -> dict[str, Any]:
    ks = Keys(u, label)
    layout = _sparse_layout(family, u.state, label)
    head_prefixes = ("final",) if family == "voxelbackbone" else ("final", "classifier")
    heads_keys: dict[str, list[str]] = {p: [] for p in head_prefixes}
    for key in u.state:
        prefix = key.split(".")[0]
        if prefix in heads_keys:
            heads_keys[prefix].append(key)
            continue
        name, tensor, notes, permuted = _convert_sparse_key(ks, key, layout)
        if family == "res16":
            mapped = _res16_name(name)
            if mapped is None:
                ks.ignore(key, "not part of the Res16UNet34C layout")
                continue
            name, notes = mapped, notes + ["Res16UNet34C name -> lidarssl name"]
        ks.put(key, name, tensor, "backbone", notes, permuted)
    b = ks.backbone
    names = {"res16": "MinkowskiEngine Res16UNet", "unet": "sparse U-Net", "voxelbackbone": "VoxelBackBone8x"}
    network = names[family]
    if family == "voxelbackbone":
        preset, options = _voxelnet_preset(u, b, label, origin, hints)
    else:
        network = f"{network} ({'SPVCNN' if any(k.startswith('point_transforms.') for k in b) else 'MinkUNet'})"
        preset, options = _unet_preset(fmt, family, b, label, network)
    heads = []
    kind = "classifier" if u.role == "downstream" else "projection"
    for prefix, keys in heads_keys.items():
        if family == "voxelbackbone" and keys:
            heads.append(_voxelnet_final(ks, keys, layout))
        else:
            head = _linear_head(ks, keys, prefix, kind)
            if head is not None:
                heads.append(head)
    for head in heads:
        network += f" + {head.meta['description']}"
    return {"keys": ks, "network": network, "layout": layout, "preset": preset, "options": options, "heads": heads}


def _voxelnet_preset(u: Unwrapped, b: Mapping[str, torch.Tensor], label: str, origin: str | None,
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


def _voxelnet_final(ks: Keys, keys: list[str], layout: str) -> Head:
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        name, tensor, notes, permuted = _convert_sparse_key(ks, key, layout)
        ks.put(key, name, tensor, "head", notes, permuted, into=out)
    w = out.get("final.weight")
    c = (int(w.shape[-1]), int(w.shape[0])) if w is not None else (None, None)
    return Head("final", "voxelnet_final", out, {
        "in_channels": c[0], "out_channels": c[1],
        "description": f"SLidR's final 1x1 sparse conv ({c[0]} -> {c[1]}, before height compression)"})
