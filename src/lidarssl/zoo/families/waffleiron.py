"""WaffleIron's ``Segmenter`` (ScaLR, WaffleIron): names kept, depth, width and norm read from the tensors."""

from __future__ import annotations

from typing import Any

from lidarssl.errors import CheckpointError
from lidarssl.zoo.families.keys import Head, Keys
from lidarssl.zoo.formats import Unwrapped

__all__ = ["convert_waffleiron"]

_WAFFLEIRON_PRESETS = {(48, 768, True): "waffleiron_48_768", (48, 384, False): "waffleiron_48_384",
                       (48, 256, False): "waffleiron_48_256", (12, 64, False): "waffleiron_12_64",
                       (4, 32, False): "waffleiron_4_32"}  # fmt: skip


def convert_waffleiron(u: Unwrapped, label: str) -> dict[str, Any]:
    ks = Keys(u, label)
    state = u.state
    if any(".new_" in k or k.startswith("embed.new") for k in state):
        raise CheckpointError(f"{label}: a compressed WaffleIron (compress() folded its norms into convs); "
                              "import the checkpoint saved before compress()")  # fmt: skip
    head_keys = [k for k in state if k.startswith("classif.")]
    for key, tensor in state.items():
        if key.startswith(("embed.", "waffleiron.")):
            ks.put(key, key, tensor, "backbone", [])
        elif key not in head_keys:
            ks.ignore(key, "not part of WaffleIron's Segmenter")
    b = ks.backbone
    for needed in ("embed.norm.weight", "embed.conv1.weight", "waffleiron.channel_mix.0.mlp.0.weight"):
        if needed not in b:
            raise CheckpointError(f"{label}: WaffleIron checkpoint without '{needed}'; it matches no preset")
    c_in, channels = int(b["embed.norm.weight"].shape[0]), int(b["embed.conv1.weight"].shape[0])
    if c_in != 5:
        raise CheckpointError(
            f"{label}: the WaffleIron embedding takes {c_in} input features; lidarssl's WaffleIron preprocessing "
            "provides 5 (intensity, x, y, z, radius), ScaLR's and WaffleIron's nuScenes input"
        )
    depth = 1 + max(int(k.split(".")[2]) for k in b if k.startswith("waffleiron.channel_mix."))
    layernorm = "waffleiron.channel_mix.0.norm.running_mean" not in b
    preset = _WAFFLEIRON_PRESETS.get((depth, channels, layernorm))
    options: dict[str, Any] = {} if preset else {"depth": depth, "channels": channels, "layernorm": layernorm}
    norm = "LayerNorm" if layernorm else "BatchNorm"
    network = f"WaffleIron {depth}x{channels} ({norm})"
    heads: list[Head] = []
    if head_keys:
        heads.append(_waffleiron_head(ks, u, channels))
        network += f" + {heads[0].meta['description']}"
    return {"keys": ks, "network": network, "layout": "dense", "preset": preset or "waffleiron", "options": options,
            "heads": heads, "channels": channels}  # fmt: skip


def _waffleiron_head(ks: Keys, u: Unwrapped, channels: int) -> Head:
    state, out = u.state, {}
    squeeze = "Conv1d kernel (K, C, 1) squeezed to a linear weight (K, C)"
    if "classif.1.weight" in state:  # ScaLR's downstream head: BatchNorm1d then Conv1d
        for key in state:
            if key.startswith("classif.0."):
                ks.put(key, "head.0." + key.removeprefix("classif.0."), state[key], "head", [], into=out)
        ks.put("classif.1.weight", "head.1.weight", state["classif.1.weight"].squeeze(-1), "head", [squeeze], True, out)
        ks.put("classif.1.bias", "head.1.bias", state["classif.1.bias"], "head", [], into=out)
        k = int(out["head.1.weight"].shape[0])
        return Head("head", "segmentation", out, {"classes": k, "in_channels": channels, "norm": True,
                                                  "description": f"BatchNorm + linear head ({k} classes)"})
    weight = state.get("classif.weight")
    if weight is None or "classif.bias" not in state:
        raise CheckpointError(f"{ks.label}: WaffleIron head keys {sorted(k for k in state if k.startswith('classif'))} "
                              "are neither a Conv1d head (classif.weight, classif.bias) nor ScaLR's BatchNorm + Conv1d")
    k = int(weight.shape[0])
    if u.role == "pretraining":  # ScaLR's distillation head, towards the teacher's features
        ks.put("classif.weight", "head.weight", weight.squeeze(-1), "head", [squeeze], True, out)
        ks.put("classif.bias", "head.bias", state["classif.bias"], "head", [], into=out)
        teacher = {384: "dinov2_vits14", 768: "dinov2_vitb14", 1024: "dinov2_vitl14", 1536: "dinov2_vitg14"}.get(k)
        return Head("head", "scalr_distillation", out, {"in_channels": channels, "out_channels": k, "teacher": teacher,
                                                        "description": f"ScaLR distillation head (-> {k})"})
    ks.put("classif.weight", "head.1.weight", weight.squeeze(-1), "head", [squeeze], True, out)
    ks.put("classif.bias", "head.1.bias", state["classif.bias"], "head", [], into=out)
    return Head("head", "segmentation", out, {"classes": k, "in_channels": channels, "norm": False,
                                              "description": f"linear head ({k} classes)"})
