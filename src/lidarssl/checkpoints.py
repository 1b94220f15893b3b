"""Weights on disk: safetensors plus JSON metadata, written atomically, loaded with a full key report.

A backbone file ``NAME.safetensors`` holds tensors only (loading it cannot run code); its metadata (the
backbone preset and options it was built with, the method that trained it) is stored in the safetensors
header, so one file is the whole backbone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from lidarssl.errors import CheckpointError
from lidarssl.io import atomic_write

__all__ = ["save_weights", "load_weights", "read_metadata", "load_state_dict_strict", "check_backbone_options"]


def save_weights(path: str | Path, state: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> Path:
    """Save tensors and JSON-serialisable ``metadata`` to a safetensors file, atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    header = {"lidarssl": json.dumps(dict(metadata))}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The lidarssl metadata stored in a weights file."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a safetensors weights file ({exc})") from None
    if "lidarssl" not in meta:
        raise CheckpointError(f"{path}: no lidarssl metadata; was it written by lidarssl?")
    return json.loads(meta["lidarssl"])


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a weights file written by :func:`save_weights`."""
    meta = read_metadata(path)
    return load_file(str(path)), meta


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    return path


def load_state_dict_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``module`` or raise one error listing missing, unexpected and mismatched keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch (file vs model)", mismatched)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(f"{source}: weights do not match the model; " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


#: Backbone options that set the scale the weights were learned at; a different value loads without a shape error
#: but means something else. (The field of view and intensity normalisation may legitimately change between
#: pretraining and finetuning on another dataset.)
RESOLUTION_OPTIONS = ("voxel_size",)


def check_backbone_options(path: str | Path, meta: Mapping[str, Any], options: Mapping[str, Any]) -> None:
    """Refuse weights learned at another resolution (:data:`RESOLUTION_OPTIONS`) than ``options`` set, when both
    the file's metadata and ``options`` set it. Files without stored options are not checked."""
    stored = meta.get("options") or {}
    ours = json.loads(json.dumps(dict(options)))
    keys = [k for k in RESOLUTION_OPTIONS if k in stored and k in ours and stored[k] != ours[k]]
    if keys:
        shown = ", ".join(f"{k}: {stored[k]!r} in the file, {ours[k]!r} here" for k in keys)
        raise CheckpointError(f"{path}: weights learned with other backbone options ({shown}); set "
                              f"{', '.join(f'backbone.options.{k}={stored[k]}' for k in keys)} as in the run "
                              "that wrote them")
