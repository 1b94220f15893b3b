"""What every converter shares: the record of where each source key goes, the heads it finds, a state dict diff."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from lidarssl.errors import CheckpointError
from lidarssl.zoo.formats import Record, Unwrapped
from lidarssl.zoo.kernels import LAYOUT_NAMES, to_ours

__all__ = ["Head", "Keys", "diff", "sparse_key"]

DDP = "DDP prefix 'module.' removed"


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



class Keys:
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
            notes = ([DDP] if prefix == "module." else [f"prefix '{prefix}' removed"]) + notes
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


def diff(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str:
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                  for k in own if k in state and state[k].shape != own[k].shape]  # fmt: skip
    parts = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape (file vs preset)", mismatched)):
        if keys:
            parts.append(f"{what}: {', '.join(keys[:4])}" + (f", ... ({len(keys)} in all)" if len(keys) > 4 else ""))
    return "; ".join(parts)


def sparse_key(ks: Keys, key: str, layout: str) -> tuple[str, torch.Tensor, list[str], bool]:
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
