"""Weights on disk: safetensors plus JSON metadata, written atomically, loaded with a full key report.

A backbone file ``NAME.safetensors`` holds tensors only (loading it cannot run code); its metadata (the
backbone preset and options it was built with, the method that trained it) is stored in the safetensors
header, so one file is the whole backbone.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from lidarssl.errors import CheckpointError
from lidarssl.io import atomic_write

__all__ = ["save_weights", "load_weights", "read_metadata", "load_state_dict_strict", "check_backbone_options",
           "load_torch_file"]


def save_weights(path: str | Path, state: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> Path:
    """Save tensors and JSON-serialisable ``metadata`` to a safetensors file, atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    bad = next((k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise CheckpointError(f"{path}: not written: weight {bad} holds NaN or infinite values (a diverged run); "
                              "lower optim.lr and train again")
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


def load_torch_file(path: str | Path, label: str | None = None, allowed_globals: Sequence[Any] = ()) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, ``allowed_globals`` added to what it may rebuild.

    Any file that cannot be read so, whatever torch raises for it (random bytes give a dozen exception types),
    is one :class:`CheckpointError` naming ``label`` (default: the path) and what the file seems to be; the
    message never repeats torch's advice to load with ``weights_only=False``, which would run the file's code.
    """
    path = Path(path)
    label = label or str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols it then refuses anyway
            with torch.serialization.safe_globals(list(allowed_globals)):
                return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- torch.load of damaged bytes raises any type; each becomes one line
        text = str(exc)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            raise CheckpointError(f"{label}: refused: unpickling it would call {found.group(1)}, which is code, not "
                                  "weights (lidarssl reads checkpoints with torch.load(weights_only=True) only)") from None
        raise CheckpointError(f"{label}: {_unreadable(path, exc)}") from None


def _unreadable(path: Path, exc: BaseException) -> str:
    """What is wrong with a file torch.load refused, from its first bytes: torch.save writes a zip archive."""
    try:
        with path.open("rb") as f:
            head = f.read(512)
    except OSError as e:
        return f"cannot read it ({e.strerror or type(e).__name__})"
    if not head:
        return "empty file; expected a .pt/.pth/.ckpt file written by torch.save"
    if head.startswith(b"PK\x03\x04"):
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        first = next((line for line in lines if line.startswith("Unsupported")), lines[0] if lines else "")
        first = first.split(". ")[0]
        detail = first[:160] if first and "weights_only" not in first else type(exc).__name__
        return f"not a readable checkpoint, damaged or truncated ({detail})"
    if head.startswith(b"\x80\x02\x8a\x0a"):  # the magic number of torch.save's legacy (pre-zip) format
        kind = "an old-format torch.save file, damaged or truncated"
    elif head[:1] == b"\x80":
        kind = f"a plain pickle (protocol {head[1]})" if len(head) > 1 else "a truncated pickle"
    elif all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        kind = "a text file"
    else:
        kind = f"{path.stat().st_size} bytes that are neither a zip archive nor a pickle"
    return f"not a PyTorch checkpoint ({kind}); expected a .pt/.pth/.ckpt file written by torch.save"


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
