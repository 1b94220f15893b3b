"""Sparse convolution networks: SLidR's MinkowskiEngine Res16UNet (``res16``), torchsparse-named U-Nets (``unet``:
ALSO's MinkUNet and SPVCNN, SegContrast/NCLR's MinkUNet) and OpenPCDet's VoxelBackBone8x (``voxelbackbone``). They
share the kernel layouts (:mod:`lidarssl.zoo.kernels`), the key suffixes and the linear heads; each family's own
part is in its module."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from lidarssl.errors import CheckpointError
from lidarssl.zoo.families.keys import Head, Keys, sparse_key
from lidarssl.zoo.families.res16 import res16_name
from lidarssl.zoo.families.unet import unet_preset
from lidarssl.zoo.families.voxelbackbone import voxelnet_final, voxelnet_preset
from lidarssl.zoo.formats import Unwrapped
from lidarssl.zoo.kernels import LAYOUT_NAMES, spconv_layout

__all__ = ["convert_sparse"]


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
        name, tensor, notes, permuted = sparse_key(ks, key, layout)
        if family == "res16":
            mapped = res16_name(name)
            if mapped is None:
                ks.ignore(key, "not part of the Res16UNet34C layout")
                continue
            name, notes = mapped, notes + ["Res16UNet34C name -> lidarssl name"]
        ks.put(key, name, tensor, "backbone", notes, permuted)
    b = ks.backbone
    names = {"res16": "MinkowskiEngine Res16UNet", "unet": "sparse U-Net", "voxelbackbone": "VoxelBackBone8x"}
    network = names[family]
    if family == "voxelbackbone":
        preset, options = voxelnet_preset(u, b, label, origin, hints)
    else:
        network = f"{network} ({'SPVCNN' if any(k.startswith('point_transforms.') for k in b) else 'MinkUNet'})"
        preset, options = unet_preset(fmt, family, b, label, network)
    heads = []
    kind = "classifier" if u.role == "downstream" else "projection"
    for prefix, keys in heads_keys.items():
        if family == "voxelbackbone" and keys:
            heads.append(voxelnet_final(ks, keys, layout))
        else:
            head = _linear_head(ks, keys, prefix, kind)
            if head is not None:
                heads.append(head)
    for head in heads:
        network += f" + {head.meta['description']}"
    return {"keys": ks, "network": network, "layout": layout, "preset": preset, "options": options, "heads": heads}
