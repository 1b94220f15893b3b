"""The backbone contract and the registry of backbone presets.

Every backbone comes as three parts, so that every method and head works with every backbone:

* a **preprocessor** (:class:`~lidarssl.batch.Preprocessor`): pure numpy, run in DataLoader workers. It takes one scan's
  points and intensity, keeps a subset of the points (voxel subsampling, field-of-view crop), computes
  whatever the network needs (features, grid cells, neighbours, voxel coordinates) and returns ``kept``,
  the (M,) int64 indices of the input points it kept, in increasing order;
* a **collate** function (:attr:`Preprocessor.collate`) that turns a list of those samples into one batch
  of tensors holding at least :data:`~lidarssl.batch.COMMON_KEYS`;
* the **module** (:class:`Backbone`), whose ``forward(batch)`` returns an (sum M, ``out_channels``) tensor:
  one feature row per kept point, concatenated over the batch in sample order, so row ``r`` belongs to
  input point ``batch["kept"][r]`` of sample ``batch["batch_index"][r]``.

Presets are registered timm style: a function decorated with :func:`register_backbone` returns a
:class:`BackboneSpec`, and :func:`create_backbone` builds one by name with overrides.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lidarssl.batch import Batch, Preprocessor, Sample
from lidarssl.errors import ConfigError, DataError
from lidarssl.registry import BACKBONES


class Backbone(nn.Module, ABC):
    """A 3D backbone: per-point features for every kept point of a collated batch.

    Backbones that support layer-wise learning-rate decay also define ``num_layers`` and
    ``layer_id(param_name) -> int`` in ``[0, num_layers]`` (input side first); heads sit at
    ``num_layers + 1``.

    Attributes:
        out_channels: number of feature channels of :meth:`forward`'s output.
    """

    out_channels: int

    @abstractmethod
    def forward(self, batch: Batch) -> torch.Tensor:
        """Features (sum M, out_channels), one row per kept point, in batch order."""


@dataclass
class BackboneSpec:
    """A backbone preset built together, so its preprocessing and module agree on grids and features.

    Attributes:
        name: registry name of the preset.
        model: the backbone module.
        prep: the preprocessing object (for the DataLoader's dataset).
        collate: the DataLoader's ``collate_fn``.
    """

    name: str
    model: Backbone
    prep: Preprocessor
    collate: Callable[[Sequence[Sample]], Batch]


#: Decorator: register a preset function under its own name (declared in ``lidarssl.registry``); the function
#: takes keyword overrides only.
register_backbone = BACKBONES.register


def list_backbones() -> list[str]:
    """Names of the registered backbone presets, sorted."""
    return sorted(BACKBONES.names())


def create_backbone(name: str, **overrides: object) -> BackboneSpec:
    """Build a registered backbone preset.

    Args:
        name: preset name, one of :func:`list_backbones`.
        **overrides: preset parameters to change (grid shapes, field of view, drop path, ...).

    Raises:
        ConfigError: unknown preset name or override key, or a value the preset rejects.
    """
    fn = BACKBONES.get(name)
    params = inspect.signature(fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(overrides) - set(params))
        if unknown:
            raise ConfigError(f"backbone '{name}' has no option {unknown}; options: {', '.join(sorted(params))}")
    return fn(**overrides)


def collate_common(samples: Sequence[Sample]) -> Batch:
    """The :data:`~lidarssl.batch.COMMON_KEYS` of a batch; backbone collates add their own keys to this.

    Raises:
        DataError: on an empty list of samples or a sample without ``kept``.
    """
    if len(samples) == 0:
        raise DataError("cannot collate an empty list of samples")
    for i, s in enumerate(samples):
        if "kept" not in s:
            raise DataError(f"sample {i} has no 'kept' array; was it built by this backbone's preprocessor?")
    sizes = np.array([len(s["kept"]) for s in samples], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    return {
        "batch_index": torch.from_numpy(np.repeat(np.arange(len(samples), dtype=np.int64), sizes)),
        "kept": torch.from_numpy(np.concatenate([s["kept"] for s in samples]).astype(np.int64, copy=False)),
        "offsets": torch.from_numpy(offsets),
    }
