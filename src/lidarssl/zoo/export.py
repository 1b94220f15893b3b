"""``lidarssl export``: a lidarssl backbone as an OpenPCDet pretrained model or a plain state dict.

OpenPCDet's ``Detector3DTemplate.load_params_from_file`` (``--pretrained_model``) reads
``torch.load(f)["model_state"]`` and keeps the keys its detector has *with the same shape*, skipping the rest
with a log line only. lidarssl's VoxelNet presets carry VoxelBackBone8x's names and spconv 2.x kernels, so
an export is their state dict under ``backbone_3d.``. What OpenPCDet would skip silently is checked here:
a backbone that is not a VoxelBackBone8x is refused, and an input width other than the target config's
(``conv_input``: 4 channels for KITTI's x, y, z, intensity, 5 for nuScenes configs that add time) is warned
about.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lidarssl.checkpoints import load_weights
from lidarssl.errors import CheckpointError, ConfigError
from lidarssl.io import atomic_write
from lidarssl.models.backbones import create_backbone
from lidarssl.zoo.formats import EXPORT_LAYOUTS, EXPORT_TARGETS
from lidarssl.zoo.kernels import LAYOUT_NAMES, from_ours
from lidarssl.zoo.release import lidarssl_version

__all__ = ["EXPORT_LAYOUTS", "EXPORT_TARGETS", "ExportResult", "export_backbone"]

#: The presets OpenPCDet's VoxelBackBone8x holds.
VOXELNETS = ("voxelnet", "voxelnet_kitti", "voxelnet_tiny")


@dataclass
class ExportResult:
    """What :func:`export_backbone` wrote, and what the user should know about it."""

    out: Path
    keys: int
    backbone: str
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _weights_file(path: Path) -> Path:
    """A backbone file, or the ``backbone.safetensors`` of a run or import folder."""
    if path.is_dir():
        inner = path / "backbone.safetensors"
        if not inner.is_file():
            raise CheckpointError(f"{path}: folder without backbone.safetensors; give the weights file")
        return inner
    return path


def export_backbone(weights: str | Path, to: str, out: str | Path, target_channels: int | None = None,
                    layout: str = "spconv2") -> ExportResult:  # fmt: skip
    """Export a lidarssl backbone file.

    Args:
        weights: a ``backbone.safetensors`` (or a folder holding one) written by pretrain, train or import.
        to: ``openpcdet`` (``{"model_state": {"backbone_3d.*"}, "version"}``, spconv 2.x kernels) or ``state_dict``
            (the backbone's own keys, plain tensors).
        out: the file to write (atomically).
        target_channels: input features of the OpenPCDet config it is for; a different ``conv_input`` width
            gives a warning, since OpenPCDet would skip that layer.
        layout: kernel layout of a ``state_dict`` export: ``spconv2`` (OpenPCDet, spconv >= 2) or ``spconv1``.

    Raises:
        CheckpointError: unreadable file, or a backbone VoxelBackBone8x cannot hold.
        ConfigError: unknown target or layout.
    """
    if to not in EXPORT_TARGETS:
        raise ConfigError(f"unknown export target '{to}'; choose one of {', '.join(EXPORT_TARGETS)}")
    if layout not in EXPORT_LAYOUTS:
        raise ConfigError(f"unknown kernel layout '{layout}'; choose one of {', '.join(EXPORT_LAYOUTS)}")
    if to == "openpcdet" and layout != "spconv2":
        raise ConfigError("OpenPCDet loads spconv 2.x kernels; --layout applies to --to state_dict only")
    path = _weights_file(Path(weights).expanduser())
    state, meta = load_weights(path)
    name, options = meta.get("backbone"), dict(meta.get("options") or {})
    result = ExportResult(Path(out), len(state), str(name))
    if to == "openpcdet":
        payload = _openpcdet(path, state, name, options, target_channels, result)
    else:
        kernels = {k for k, v in state.items() if k.endswith(".weight") and v.dim() == 5}
        payload = {k: (from_ours(v, layout) if k in kernels else v.clone()).contiguous() for k, v in state.items()}
        result.notes.append(f"{len(kernels)} sparse kernels in {LAYOUT_NAMES[layout]}" if kernels
                            else "no sparse kernels (a dense backbone): tensors as they are")  # fmt: skip
    atomic_write(out, lambda tmp: torch.save(payload, tmp))
    return result


def _openpcdet(path: Path, state: dict[str, torch.Tensor], name: Any, options: dict[str, Any],
               target_channels: int | None, result: ExportResult) -> dict[str, Any]:  # fmt: skip
    if name not in VOXELNETS:
        what = f"backbone '{name}'" if name else "a backbone without a preset name"
        raise CheckpointError(
            f"{path}: {what} cannot go to OpenPCDet: its VoxelBackBone8x (backbone_3d) holds only lidarssl's "
            f"VoxelNet presets ({', '.join(VOXELNETS)}); export it with --to state_dict"
        )
    with torch.device("meta"):
        own = create_backbone(name, **options).model.state_dict()
    bad = [k for k in own if k not in state or state[k].shape != own[k].shape] + [k for k in state if k not in own]
    if bad:
        raise CheckpointError(f"{path}: not a VoxelBackBone8x state dict ({len(bad)} keys differ from preset "
                              f"{name}, e.g. {bad[0]}); OpenPCDet would skip them")  # fmt: skip
    c_in = int(state["conv_input.0.weight"].shape[-1])
    if target_channels is not None and target_channels != c_in:
        result.warnings.append(
            f"conv_input takes {c_in} input channels but the target config feeds {target_channels}: OpenPCDet skips "
            "backbone_3d.conv_input.0.weight (shape differs) and trains that first layer from scratch"
        )
    elif target_channels is None:
        result.notes.append(f"conv_input takes {c_in} input channels; OpenPCDet loads it only where the config's "
                            "point features number the same (pass --target-channels to check)")  # fmt: skip
    model_state = {f"backbone_3d.{k}": v.clone().contiguous() for k, v in state.items()}
    return {"model_state": model_state, "version": f"lidarssl {lidarssl_version()}",
            "lidarssl": {"backbone": name, "options": options}}  # fmt: skip
