"""Convert a seed project's checkpoint to a lidarssl backbone preset, its heads and a record of every key.

Per network family (see :func:`~lidarssl.zoo.formats.network_family`):

* ``waffleiron``: WaffleIron's ``Segmenter`` keeps its names (``embed.*``, ``waffleiron.*``); depth, width and
  norm are read from the tensors. The ``classif`` head becomes ScaLR's distillation head (``head.weight``),
  or a segmentation head (``head.0`` BatchNorm, ``head.1`` linear: :class:`SegmentationModule`'s names).
* ``res16``: SLidR's MinkowskiEngine Res16UNet34C. ``conv0p1s1``/``bn0`` become ``stem.0``/``stem.1``,
  ``conv{i}p*s2``/``bn{i}`` ``stage{i}.0.net.{0,1}``, ``block{b}.{j}`` ``stage{b}.{j+1}`` (b <= 4) or
  ``up{b-4}.1.{j}``, ``convtr{k}p*s2``/``bntr{k}`` ``up{k-3}.0.net.{0,1}``; inside blocks ``conv1, norm1, conv2,
  norm2`` become ``net.0, net.1, net.3, net.4``. ``final`` (1x1 conv) becomes the point head ``head``.
* ``unet``: torchsparse-named U-Nets (ALSO's MinkUNet and SPVCNN, SegContrast/NCLR's MinkowskiEngine
  MinkUNet) keep their names; ``classifier``/``final`` become ``head``.
* ``voxelbackbone``: OpenPCDet's VoxelBackBone8x keeps its names; SLidR's ``final`` 1x1 conv becomes ``final``.

MinkowskiEngine BatchNorms lose their ``.bn.``; every ``.kernel`` becomes ``.weight`` in lidarssl's layout
(:mod:`lidarssl.zoo.kernels`). The result is checked against the preset built on the meta device (no memory).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from lidarssl.errors import CheckpointError, ConfigError
from lidarssl.models.backbones import create_backbone
from lidarssl.zoo.formats import FORMATS, Record, Unwrapped, network_family, unwrap
from lidarssl.zoo.kernels import LAYOUT_NAMES, spconv_layout, to_ours
from lidarssl.zoo.origins import ORIGINS, guess_origin
from lidarssl.zoo.reading import Source

__all__ = ["Conversion", "Head", "convert"]

_L18 = (2, 2, 2, 2, 2, 2, 2, 2)
_L34 = (2, 3, 4, 6, 2, 2, 2, 2)
_L1 = (1, 1, 1, 1, 1, 1, 1, 1)

#: The network families each --format may hold.
_FAMILIES = {
    "scalr": {"waffleiron"}, "waffleiron": {"waffleiron"}, "slidr": {"res16", "voxelbackbone"},
    "stslidr": {"res16", "voxelbackbone"}, "also": {"unet", "voxelbackbone"},
    "nclr": {"res16", "unet", "voxelbackbone"}, "openpcdet": {"voxelbackbone"},
    "lidarssl": {"waffleiron", "res16", "unet", "voxelbackbone"},
}  # fmt: skip

_WAFFLEIRON_PRESETS = {(48, 768, True): "waffleiron_48_768", (48, 384, False): "waffleiron_48_384",
                       (48, 256, False): "waffleiron_48_256", (12, 64, False): "waffleiron_12_64",
                       (4, 32, False): "waffleiron_4_32"}  # fmt: skip
# (layers, stem convs, point branch) -> (preset, its default width); SLidR's Res16UNet34C is res16unet34c.
_UNET_PRESETS = {(_L34, 1, False): ("minkunet34", 1.0), (_L18, 1, False): ("minkunet18", 1.0),
                 (_L18, 2, False): ("minkunet18_sc", 1.0), (_L18, 2, True): ("spvcnn", 1.0),
                 (_L1, 1, False): ("minkunet_tiny", 0.25), (_L1, 2, True): ("spvcnn_tiny", 0.25)}  # fmt: skip
_HALF = {"minkunet34": "minkunet34_half", "spvcnn": "spvcnn_half"}
_FEATURES = {1: ["intensity"], 4: ["x", "y", "z", "intensity"]}
_VOXELNETS = ("voxelnet", "voxelnet_kitti", "voxelnet_tiny")
_DDP = "DDP prefix 'module.' removed"


@dataclass
class Head:
    """One head of a release, as stored in ``head.safetensors``.

    Attributes:
        name: key prefix in the file (``head``, ``pixel_head``, ``teacher``, ``final``).
        kind: ``segmentation`` (BatchNorm? + linear over classes), ``scalr_distillation``, ``projection``
            (a pretext point head), ``classifier`` (a downstream head of a sparse network), ``image_encoder``,
            ``pixel_head`` or ``voxelnet_final``.
        tensors: the head's tensors, keys with ``name`` as prefix.
        meta: widths and what the head is for.
    """

    name: str
    kind: str
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Conversion:
    """A checkpoint converted to a lidarssl preset; see :func:`convert`."""

    format: str
    container: str
    role: str
    network: str
    layout: str
    preset: str
    options: dict[str, Any]
    backbone: dict[str, torch.Tensor]
    heads: list[Head]
    records: list[Record]
    origin: str | None
    origin_options: dict[str, Any]
    notes: list[str]


class _Keys:
    """Records where each source key goes, and the tensors that go there."""

    def __init__(self, u: Unwrapped, label: str) -> None:
        self.u, self.label = u, label
        self.records: list[Record] = list(u.records)
        self.backbone: dict[str, torch.Tensor] = {}

    def source(self, key: str) -> str:
        return self.u.sources.get(key) or self.u.image_sources[key]

    def put(self, key: str, target: str, tensor: torch.Tensor, file: str, notes: list[str],
            permuted: bool = False, into: dict[str, torch.Tensor] | None = None) -> None:
        source = self.source(key)
        inner = source.rsplit("/", 1)[-1]
        if inner != key:
            prefix = inner[: len(inner) - len(key)]
            notes = ([_DDP] if prefix == "module." else [f"prefix '{prefix}' removed"]) + notes
        action = "permuted" if permuted else ("renamed" if inner != target else "loaded")
        self.records.append(Record(source, action, target, file, "; ".join(notes)))
        (self.backbone if into is None else into)[target] = tensor.detach()

    def ignore(self, key: str, why: str) -> None:
        self.records.append(Record(self.source(key), "ignored", note=why))

    def kernel(self, key: str, tensor: torch.Tensor, layout: str) -> torch.Tensor:
        try:
            return to_ours(tensor, layout)
        except ValueError as exc:
            raise CheckpointError(f"{self.label}: {self.source(key)} {tuple(tensor.shape)}: {exc} "
                                  f"(expected {LAYOUT_NAMES.get(layout, layout)})") from None  # fmt: skip


# ---------------------------------------------------------------------------------------------- WaffleIron


def _waffleiron(u: Unwrapped, label: str) -> dict[str, Any]:
    ks = _Keys(u, label)
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


def _waffleiron_head(ks: _Keys, u: Unwrapped, channels: int) -> Head:
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


# ---------------------------------------------------------------------------------------------- sparse U-Nets

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


def _convert_sparse_key(ks: _Keys, key: str, layout: str) -> tuple[str, torch.Tensor, list[str], bool]:
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


def _linear_head(ks: _Keys, keys: list[str], prefix: str, kind: str) -> Head | None:
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


def _sparse(u: Unwrapped, label: str, family: str, fmt: str, origin: str | None, hints: str) -> dict[str, Any]:
    ks = _Keys(u, label)
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


def _voxelnet_final(ks: _Keys, keys: list[str], layout: str) -> Head:
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        name, tensor, notes, permuted = _convert_sparse_key(ks, key, layout)
        ks.put(key, name, tensor, "head", notes, permuted, into=out)
    w = out.get("final.weight")
    c = (int(w.shape[-1]), int(w.shape[0])) if w is not None else (None, None)
    return Head("final", "voxelnet_final", out, {
        "in_channels": c[0], "out_channels": c[1],
        "description": f"SLidR's final 1x1 sparse conv ({c[0]} -> {c[1]}, before height compression)"})


# ---------------------------------------------------------------------------------------------- SLidR image branch


def _image_branch(ks: _Keys, u: Unwrapped, notes: list[str]) -> list[Head]:
    """SLidR's ``model_images``: a torchvision ResNet-50 (``encoder.*``) becomes ``teacher.*`` and ``decoder.0`` the
    pixel head. An encoder of another architecture (SLidR's unreleased ViT option) is left out, recorded."""
    from lidarssl.models.teachers import create_teacher

    config = u.config or {}
    name = "resnet50" if _find(config, "decoder") == "ppkt" else "resnet50_dilated"
    encoder = {k.removeprefix("encoder."): v for k, v in u.images.items() if k.startswith("encoder.")}
    with torch.device("meta"):
        problems = _diff(create_teacher(name).encoder.state_dict(), encoder) if encoder else ""
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


def _slidr_options(u: Unwrapped, preset: str, notes: list[str]) -> dict[str, Any]:
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


# ---------------------------------------------------------------------------------------------- entry point


def _diff(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str:
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]  # fmt: skip
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape (file vs preset)", mismatched)):
        if keys:
            parts.append(f"{what}: {', '.join(keys[:4])}" + (f", ... ({len(keys)} in all)" if len(keys) > 4 else ""))
    return "; ".join(parts)


def _check_preset(c: Conversion, label: str) -> None:
    try:
        with torch.device("meta"):
            model = create_backbone(c.preset, **c.options).model
    except ConfigError as exc:
        raise CheckpointError(f"{label}: {c.network}: preset {c.preset} with {c.options} cannot be built "
                              f"({exc})") from None
    problems = _diff(model.state_dict(), c.backbone)
    if problems:
        raise CheckpointError(f"{label}: a {c.network} whose shapes match no lidarssl preset (closest: {c.preset} "
                              f"{c.options or ''}): {problems}")  # fmt: skip
    width = model.out_channels
    for head in c.heads:
        if head.kind in ("segmentation", "scalr_distillation", "projection", "classifier"):
            c_in = head.meta.get("in_channels")
            if c_in is not None and c_in != width:
                raise CheckpointError(f"{label}: the {head.kind} head takes {c_in} channels, the backbone gives "
                                      f"{width}")


def convert(source: Source, fmt: str = "auto", origin: str | None = None) -> Conversion:
    """Convert a checkpoint read by :func:`~lidarssl.zoo.reading.read_source` to a lidarssl preset.

    Args:
        source: the checkpoint.
        fmt: ``auto`` or a key of :data:`~lidarssl.zoo.formats.FORMATS`: the format to read it as, when its
            container fits more than one (a ScaLR ``net`` is also a WaffleIron one; a flat torchsparse dict may
            be ALSO's or NCLR's).
        origin: the origin (a key of :data:`~lidarssl.zoo.origins.ORIGINS`) instead of guessing it from the
            file name and head.

    Raises:
        CheckpointError: unknown format or network, shapes that match no preset, inconsistent heads.
        ConfigError: unknown ``fmt`` or ``origin``.
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise ConfigError(f"unknown format '{fmt}'; choose auto or one of {', '.join(FORMATS)}")
    if origin is not None and origin not in ORIGINS:
        raise ConfigError(f"unknown origin '{origin}'; known: {', '.join(ORIGINS)}")
    label = source.label
    u = unwrap(source.content, label, source.metadata)
    family = network_family(u.state)
    if fmt != "auto" and fmt != u.format:
        if family not in _FAMILIES[fmt]:
            raise CheckpointError(f"{label}: --format {fmt} holds {', '.join(sorted(_FAMILIES[fmt]))} networks, but "
                                  f"the file is a {u.format} checkpoint of a {family} network; use --format auto")
        u.format = fmt
    notes: list[str] = [f"{other}: another checkpoint beside it, not imported (import it by its path)"
                        for other in source.others]
    hints = source.hints + " " + str(u.config or "").lower()
    protocol = next((p for p in ("linear_probing", "finetuning") if p in hints), None)
    if family == "waffleiron":
        parts = _waffleiron(u, label)
        head = parts["heads"][0] if parts["heads"] else None
        classes = head.meta.get("classes") if head else None
        project = "scalr" if u.format == "scalr" else "waffleiron"
        if origin is None and u.role == "downstream":
            origin = guess_origin(project, hints, classes, protocol)
            if origin is None:
                notes.append(f"origin unknown (a {classes}-class head): pass --origin (e.g. scalr-panda64 or "
                             "scalr-pandagt) so that `lidarssl evaluate` uses its preprocessing")
        if u.role == "pretraining" and parts["preset"] == "waffleiron_48_768":
            notes.append("a pretrained backbone: probe it with the recipe of its protocol, e.g. "
                         "configs/scalr-wi48x768-nuscenes-probe.yaml for ScaLR's nuScenes linear probing")
    else:
        if origin is None:
            project = "slidr" if u.format == "stslidr" else u.format
            origin = guess_origin(project, hints) if project in ("slidr", "also", "nclr") else None
            if family == "voxelbackbone":  # the sparse U-Nets' origins do not describe a VoxelNet's input
                origin = {"slidr": "slidr-voxelnet-nuscenes", "also-kitti": "also-kitti"}.get(
                    project if project == "slidr" else str(origin))
        parts = _sparse(u, label, family, u.format, origin, hints)
        if u.images:
            parts["heads"] += _image_branch(parts["keys"], u, notes)
    ks: _Keys = parts["keys"]
    origin_options = dict(ORIGINS[origin].backbone_options) if origin else {}
    origin_options.update(_slidr_options(u, parts["preset"], notes))
    named = (u.lidarssl or {}).get("backbone")
    if named and named != parts["preset"]:  # lidarssl's own file: keep its preset when the shapes are the same
        options = dict(u.lidarssl.get("options") or {})
        try:
            with torch.device("meta"):
                same = not _diff(create_backbone(named, **options).model.state_dict(), ks.backbone)
        except ConfigError:
            same = False
        if same:
            parts["preset"], parts["options"] = named, options
        else:
            notes.append(f"the file names preset {named}, but its shapes are {parts['preset']}'s")
    conversion = Conversion(
        format=u.format, container=u.container, role=u.role, network=parts["network"], layout=parts["layout"],
        preset=parts["preset"], options=parts["options"], backbone=ks.backbone, heads=parts["heads"],
        records=ks.records, origin=origin, origin_options=origin_options,
        notes=notes + (list(ORIGINS[origin].notes) if origin else []),
    )  # fmt: skip
    if u.format in ("slidr", "stslidr") and u.config is not None:
        for record in conversion.records:
            if record.source == "config":
                record.note = "training config (voxel_size, cylindrical_coordinates and decoder read from it)"
    _check_preset(conversion, label)
    return conversion
