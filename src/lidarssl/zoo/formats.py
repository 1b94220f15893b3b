"""Which release or training-checkpoint format a file is, and where its network's tensors sit.

A checkpoint is a container (ScaLR's ``{"epoch", "net", "optim", ...}``, SLidR's ``{"model_points", ...}``,
a Lightning ``{"state_dict": ...}``, OpenPCDet's ``{"model_state": ...}``, ALSO's plain dict) around one
or more state dicts whose keys carry wrapper prefixes (``module.`` from DDP, ``encoder.``, ``backbone_3d.``).
:func:`unwrap` finds the lidar network's tensors, removes the prefixes and says what every other entry is,
and :func:`network_family` names the network from its keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # torch is imported on use: `lidarssl import --help` lists the formats without it
    import torch

from lidarssl.errors import CheckpointError

__all__ = ["COMMANDS", "EXPORT_LAYOUTS", "EXPORT_TARGETS", "FORMATS", "Record", "Unwrapped", "network_family", "unwrap"]

#: Formats ``lidarssl import --format`` accepts, with what each covers.
FORMATS = {
    "scalr": "ScaLR: pretrained (model_point) or linear-probing/finetuning (net) WaffleIron, .pth or release .tar.gz",
    "waffleiron": "WaffleIron's own segmentation checkpoints (net, classif head)",
    "slidr": "SLidR: model_points (+ model_images) of MinkowskiEngine Res16UNet34C or spconv VoxelNet",
    "stslidr": "ST-SLidR: as SLidR, with a nested config",
    "also": "ALSO: torchsparse MinkUNet/SPVCNN backbones, SECOND backbones (model.backbone_3d.*)",
    "nclr": "NCLR training checkpoints (state_dict with encoder.*)",
    "openpcdet": "OpenPCDet checkpoints and exports (model_state with backbone_3d.*)",
    "lidarssl": "lidarssl's own files: backbone.safetensors, plain state_dict exports",
}

EXPORT_TARGETS = ("openpcdet", "state_dict")
#: One-line help of the zoo's commands: ``lidarssl --help`` shows them without importing the zoo's code.
COMMANDS = {"import": f"convert a seed release or checkpoint ({', '.join(f for f in FORMATS if f != 'lidarssl')}) "
                      "into a lidarssl backbone folder",
            "export": "export a backbone for OpenPCDet (--pretrained_model) or as a plain state dict"}
#: Kernel layouts of the plain state-dict export.
EXPORT_LAYOUTS = ("spconv2", "spconv1")

Action = Literal["loaded", "renamed", "permuted", "ignored"]


@dataclass
class Record:
    """Where one source entry went.

    Attributes:
        source: the key in the file, containers joined by ``/`` (``net/module.embed.norm.weight``).
        action: ``loaded`` (same name, same tensor), ``renamed`` (new name, same tensor), ``permuted`` (tensor
            rearranged: kernel layout, transpose or squeeze; maybe renamed too) or ``ignored``.
        target: the key in ``backbone.safetensors`` or ``head.safetensors``.
        file: ``backbone`` or ``head``.
        note: why (the rule applied, or the reason it was left out).
    """

    source: str
    action: Action
    target: str | None = None
    file: str | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "action": self.action, "target": self.target, "file": self.file,
                "note": self.note}  # fmt: skip


@dataclass
class Unwrapped:
    """A checkpoint's lidar network, prefixes removed.

    Attributes:
        format: the format (a key of :data:`FORMATS`).
        container: how the file is organised, for the report.
        role: ``pretraining``, ``downstream`` (a segmentation model) or ``detector``.
        state: the network's tensors by their key without wrapper prefixes.
        sources: the source key (as in :class:`Record`) of each ``state`` key.
        records: every entry that is not in ``state``, with the reason.
        images: SLidR's image branch (``model_images``) by key, if the file has one.
        image_sources: source keys of ``images``.
        config: the training config stored in the file, if any.
        lidarssl: lidarssl's own metadata (preset and options), for files lidarssl wrote.
    """

    format: str
    container: str
    role: str
    state: dict[str, torch.Tensor]
    sources: dict[str, str]
    records: list[Record] = field(default_factory=list)
    images: dict[str, torch.Tensor] = field(default_factory=dict)
    image_sources: dict[str, str] = field(default_factory=dict)
    config: Mapping[str, Any] | None = None
    lidarssl: dict[str, Any] | None = None


# Reasons for the usual non-model entries of the seeds' checkpoints.
_TOP_LEVEL = {
    "epoch": "training progress (epoch)", "it": "training progress (iteration)", "iters": "training progress",
    "global_step": "training progress", "optim": "optimizer state", "optimizer": "optimizer state",
    "optimizer_state": "optimizer state", "optimizer_states": "optimizer state",
    "scheduler": "learning-rate scheduler state", "lr_schedulers": "learning-rate scheduler state",
    "scaler": "fp16 gradient-scaler state", "best_miou": "best validation mIoU of the run",
    "version": "OpenPCDet version string", "config": "training config", "hyper_parameters": "Lightning hyperparameters",
    "hparams_name": "Lightning hyperparameters", "pytorch-lightning_version": "Lightning version",
    "callbacks": "Lightning callback states", "loops": "Lightning loop states", "lidarssl": "lidarssl export metadata",
}  # fmt: skip


def network_family(keys: Any) -> str | None:
    """The network a set of (prefix-free) keys belongs to.

    ``waffleiron`` (WaffleIron's Segmenter: ``embed.*``, ``waffleiron.*``), ``res16`` (MinkowskiEngine
    Res16UNet: ``conv0p1s1.kernel``), ``unet`` (torchsparse-named U-Nets, ALSO's MinkUNet and SPVCNN,
    SegContrast's, lidarssl's: ``stem.0.*``) or ``voxelbackbone`` (OpenPCDet's VoxelBackBone8x:
    ``conv_input.0.weight``); ``None`` for anything else.
    """
    keys = set(keys)
    if any(k.startswith("embed.") for k in keys) and any(k.startswith("waffleiron.") for k in keys):
        return "waffleiron"
    if "conv0p1s1.kernel" in keys:
        return "res16"
    if "stem.0.kernel" in keys or "stem.0.weight" in keys:
        return "unet"
    if "conv_input.0.weight" in keys:
        return "voxelbackbone"
    return None


def _tensors(mapping: Mapping[str, Any]) -> bool:
    import torch

    return len(mapping) > 0 and all(isinstance(v, torch.Tensor) for v in mapping.values())


def _sample(keys: Any, limit: int = 5) -> str:
    keys = [str(k) for k in keys]
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} keys)" if len(keys) > limit else "")


class _Builder:
    """Collects the network's tensors and the records of everything else."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.state: dict[str, torch.Tensor] = {}
        self.sources: dict[str, str] = {}
        self.records: list[Record] = []
        self.images: dict[str, torch.Tensor] = {}
        self.image_sources: dict[str, str] = {}

    def take(self, mapping: Mapping[str, Any], where: str, strip: tuple[str, ...] = ("module.",),
             keep: str | None = None, others: Any = None, images: bool = False) -> None:
        """Add ``mapping``'s tensors: wrapper prefixes ``strip`` removed; only keys under ``keep`` (removed too)
        when given, the rest recorded as ignored with ``others(key)``'s reason."""
        import torch

        for key, value in mapping.items():
            source = f"{where}{key}"
            if not isinstance(value, torch.Tensor):
                self.records.append(Record(source, "ignored", note=f"not a tensor ({type(value).__name__})"))
                continue
            name = str(key)
            for prefix in strip:
                name = name.removeprefix(prefix)
            if keep is not None:
                if not name.startswith(keep):
                    self.records.append(Record(source, "ignored", note=others(name) if others else "not the network"))
                    continue
                name = name[len(keep):]
            if name in (self.images if images else self.state):
                raise CheckpointError(f"{self.label}: key '{name}' appears twice once prefixes are removed "
                                      f"({source}); expected one network per container")
            (self.images if images else self.state)[name] = value
            (self.image_sources if images else self.sources)[name] = source

    def skip(self, key: str, why: str) -> None:
        self.records.append(Record(key, "ignored", note=why))


def _detector_part(key: str) -> str:
    module = key.split(".")[0]
    return f"OpenPCDet detector part '{module}': only backbone_3d has a lidarssl preset"


def unwrap(content: Mapping[str, Any], label: str, metadata: Mapping[str, str] | None = None) -> Unwrapped:
    """Find the lidar network of a checkpoint's ``content``.

    Raises:
        CheckpointError: no known network in the file (the message lists what was found).
    """
    b = _Builder(label)
    consumed: set[str] = set()
    fmt = role = container = None
    config = content.get("config") if isinstance(content.get("config"), Mapping) else None
    lidarssl_meta = content.get("lidarssl") if isinstance(content.get("lidarssl"), Mapping) else None
    if metadata and "lidarssl" in metadata:  # a lidarssl .safetensors file
        import json

        lidarssl_meta = json.loads(metadata["lidarssl"])

    def use(key: str) -> Mapping[str, Any]:
        consumed.add(key)
        return content[key]

    if isinstance(content.get("model_state"), Mapping):
        fmt, role, container = "openpcdet", "detector", "OpenPCDet checkpoint {model_state, ...}"
        b.take(use("model_state"), "model_state/", strip=(), keep="backbone_3d.", others=_detector_part)
    elif isinstance(content.get("net"), Mapping):
        net = use("net")
        fmt = "scalr" if any(str(k).removeprefix("module.").startswith("classif.0.") for k in net) else "waffleiron"
        role, container = "downstream", "WaffleIron/ScaLR segmentation checkpoint {epoch, net, optim, ...}"
        b.take(net, "net/")
    elif isinstance(content.get("model_point"), Mapping) or isinstance(content.get("model_points"), Mapping):
        key = "model_points" if isinstance(content.get("model_points"), Mapping) else "model_point"
        points = use(key)
        if network_family(str(k).removeprefix("module.") for k in points) == "waffleiron":
            fmt, role = "scalr", "pretraining"
            container = f"ScaLR distillation checkpoint {{{key}, optim, ...}}"
        else:
            nested = isinstance(config, Mapping) and any(isinstance(v, Mapping) for v in config.values())
            fmt, role = ("stslidr" if nested else "slidr"), "pretraining"
            container = "SLidR/ST-SLidR checkpoint {model_points, model_images, epoch, config}"
            if isinstance(content.get("model_images"), Mapping):
                b.take(use("model_images"), "model_images/", images=True)
        b.take(points, f"{key}/")
    elif isinstance(content.get("state_dict"), Mapping):
        sd = use("state_dict")
        keys = [str(k) for k in sd]
        if any(k.startswith("model_points.") for k in keys):
            fmt, role, container = "slidr", "pretraining", "SLidR Lightning checkpoint {state_dict: model_points.*}"
            b.take({k: v for k, v in sd.items() if str(k).startswith("model_images.")}, "state_dict/",
                   strip=("model_images.",), images=True)
            b.take({k: v for k, v in sd.items() if not str(k).startswith("model_images.")}, "state_dict/",
                   strip=(), keep="model_points.", others=lambda k: "SLidR pretraining part, not the lidar network")
        elif any(k.startswith("encoder.") for k in keys):
            fmt, role, container = "nclr", "pretraining", "NCLR training checkpoint {state_dict: encoder.*, ...}"
            bev = any(k.startswith("encoder.backbone_3d.") for k in keys)

            def nclr_part(k: str) -> str:
                if k.startswith(("backbone_2d.", "final.")) and bev:
                    return "NCLR BEVNet 2D part (BEV backbone, 1x1 head): no home in the voxelnet preset"
                return "NCLR pretext part (image encoder, fusion, score heads): pretraining only"

            b.take(sd, "state_dict/", strip=(), keep="encoder.backbone_3d." if bev else "encoder.",
                   others=lambda k: nclr_part(k.removeprefix("encoder.")))
        elif any(k.startswith("backbone.") for k in keys):
            fmt, role = "also", "pretraining"
            container = "ALSO Lightning checkpoint {state_dict: backbone.*, decoder.*}"
            b.take(sd, "state_dict/", strip=(), keep="backbone.",
                   others=lambda k: "ALSO occupancy decoder: pretext only")
        elif any(k.startswith("net.") for k in keys):
            fmt, role, container = "also", "downstream", "ALSO downstream Lightning checkpoint {state_dict: net.*}"
            b.take(sd, "state_dict/", strip=(), keep="net.", others=lambda k: "not the segmentation network")
        elif any(k.startswith("model.") for k in keys):
            fmt, role, container = "slidr", "downstream", "SLidR downstream Lightning checkpoint {state_dict: model.*}"
            b.take(sd, "state_dict/", strip=(), keep="model.", others=lambda k: "not the segmentation network")
    elif _tensors(content):
        keys = [str(k) for k in content]
        consumed.update(content)
        if any(k.startswith("model.backbone_3d.") for k in keys):
            fmt, role = "also", "pretraining"
            container = "ALSO SECOND backbone {model.backbone_3d.*, model.backbone_2d.*}"

            def second_part(k: str) -> str:
                if k.startswith("model.backbone_2d."):
                    return "SECOND's 2D BEV backbone (BaseBEVBackbone): no home in the voxelnet preset"
                return "OpenPCDet detector state, not backbone_3d"

            b.take(content, "", strip=(), keep="model.backbone_3d.", others=second_part)
        elif any(k.startswith("backbone_3d.") for k in keys):
            fmt, role, container = "openpcdet", "detector", "flat OpenPCDet state dict {backbone_3d.*, ...}"
            b.take(content, "", strip=(), keep="backbone_3d.", others=_detector_part)
        else:
            b.take(content, "")
            family = network_family(b.state)
            ours = lidarssl_meta is not None or any(v.dim() == 5 for k, v in b.state.items() if k.endswith(".weight"))
            if family == "unet" and not ours:
                fmt = "also"
                container = "ALSO backbone file (plain state dict, pretrained_backbone_* / trained_model_*)"
                # ALSO's convert_models.py moves the pretext projection out of pretrained_backbone_* files: a
                # classifier left in the backbone file is a downstream head (trained_model_*)
                role = "downstream" if any(k.startswith("classifier.") for k in b.state) else "pretraining"
            elif family is not None:
                fmt, role, container = "lidarssl", "pretraining", "plain state dict (lidarssl export or backbone file)"
    if fmt is None or network_family(b.state) is None:
        found = _sample(content.keys())
        inner = f"; network keys: {_sample(b.state)}" if b.state else ""
        raise CheckpointError(
            f"{label}: no known network in this checkpoint (top-level keys: {found}{inner}); expected ScaLR or "
            "WaffleIron (net / model_point with embed.*, waffleiron.*), SLidR (model_points with conv0p1s1.kernel or "
            "conv_input.0.weight), ALSO (stem.0.kernel ... or model.backbone_3d.*), NCLR (state_dict with encoder.*) "
            "or OpenPCDet (model_state with backbone_3d.*)"
        )
    for key, value in content.items():
        if key not in consumed:
            b.skip(str(key), _TOP_LEVEL.get(str(key), f"not a model state ({type(value).__name__})"))
    return Unwrapped(fmt, container, role, b.state, b.sources, b.records, b.images, b.image_sources, config,
                     dict(lidarssl_meta) if lidarssl_meta else None)  # fmt: skip
