"""WaffleIron (Puy et al., ICCV 2023): a point backbone that mixes features on 2D grids.

Written from the paper and the original code (github.com/valeoai/WaffleIron, ``waffleiron/backbone.py``).
Parameter names, shapes and initialisation are those of the original channel-first implementation, so its
released checkpoints (and ScaLR's) load with ``strict=True``. The computation is reorganised for speed and memory:

* **Point-major, concatenated batches.** Features are (P, C) rows of all kept points of the batch, with
  no padding: 1x1 convolutions are single GEMMs (:class:`PointConv`), BatchNorm statistics come from real
  points only, and scatter/gather into grids move whole rows.
* **Channels-last grids.** A plane's grid is built as (B*H*W, C) rows, which *is* a channels-last
  (B, C, H, W) tensor; CPU depthwise convolutions run ~9x faster than on channels-first grids. Grids are
  processed in channel chunks of at most 16 MiB on CPU, which glibc serves from reusable heap memory
  instead of fresh pages (page faults cost as much as the convolutions themselves).
* **Small autograd footprint.** Norms store only their normalised output (their affine parameters are
  folded into the next linear map, as is LayerScale); the embedding's (P, K, C) neighbour activations
  are never stored; grids larger than the point set are recomputed in backward. These autograd
  functions live in :mod:`~lidarssl.models.backbones.waffleiron_ops`. A block keeps three (P, C) tensors
  for backward, in one allocation, plus its two grids when they are smaller than the point set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from lidarssl.batch import Batch
from lidarssl.errors import ConfigError, DataError
from lidarssl.models.backbones.base import Backbone, BackboneSpec, register_backbone
from lidarssl.models.backbones.waffleiron_ops import (
    GridMix,
    LayerScale,
    Plane,
    PointBatchNorm2d,
    PointConv,
    PointConv2d,
    apply_fp32,
    folded_linear_relu,
    make_norm,
    neighbor_max_pool,
    norm_affine,
    normalize,
)
from lidarssl.models.backbones.waffleiron_prep import (
    FEATURE_NAMES,
    WaffleIronPrep,
    check_grid_shapes,
)

# Grids with at most this many cells per point are kept for backward rather than recomputed: storing
# them costs less memory than the block's own point features.
_STORE_GRIDS_UP_TO = 1.0


class Embedding(nn.Module):
    """Point embedding: a point branch and a max-pooled branch over kNN relative features.

    ``x = BN(feats)``; point branch ``conv1(x)``; neighbour branch: ``x[neighbours] - x`` through BN2d,
    1x1 conv, BN2d, ReLU, 1x1 conv, max over neighbours; output ``final(cat[point, neighbour])``.
    """

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(in_channels)
        self.conv1 = PointConv(in_channels, channels)
        self.conv2 = nn.Sequential(
            PointBatchNorm2d(in_channels),
            PointConv2d(in_channels, channels, bias=False),
            PointBatchNorm2d(channels),
            nn.ReLU(inplace=True),
            PointConv2d(channels, channels, bias=False),
        )
        self.final = PointConv(2 * channels, channels)

    def forward(self, feats: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
        """Embed (P, C_in) features given (P, K + 1) neighbour rows (self first) into (P, C)."""
        x = self.norm(feats)
        relative = self.conv2[0](x[neighbors[:, 1:]] - x.unsqueeze(1))  # (P, K, C_in)
        neigh = neighbor_max_pool(relative, self.conv2[1], self.conv2[2], self.conv2[4])
        return self.final(torch.cat([self.conv1(x), neigh], dim=1))


def _add_residual(x: torch.Tensor, y: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """``x + y * keep``, written into ``y``: a branch's fresh output that no backward reads.

    In place, a block frees the residual stream it received instead of allocating a new one; fewer
    (P, C) allocations leave fewer holes in the heap, which stay resident after they are freed.
    """
    if y.dtype != x.dtype:  # a half-precision branch under autocast: the stream stays float32
        return x + y if keep is None else torch.addcmul(x, y, keep)
    return (y if keep is None else y.mul_(keep)).add_(x)


class ChannelMix(nn.Module):
    """``x + DropPath(LayerScale(conv(ReLU(conv(Norm(x))))))`` on (P, C) rows."""

    def __init__(self, channels: int, layernorm: bool) -> None:
        super().__init__()
        self.norm = make_norm(channels, layernorm)
        self.mlp = nn.Sequential(PointConv(channels, channels), nn.ReLU(inplace=True), PointConv(channels, channels))
        self.scale = LayerScale(channels)

    def forward(
        self, x: torch.Tensor, keep: torch.Tensor | None = None, saved: Sequence[torch.Tensor] = ()
    ) -> torch.Tensor:
        """Mix channels of (P, C) ``x``; ``keep`` is the (P, 1) DropPath gain of each point or ``None``.

        ``saved``: two (P, C) tensors that receive the two tensors kept for backward, or none.
        """
        saved = saved or (None, None)
        h = folded_linear_relu(normalize(self.norm, x, saved[0]), self.norm, self.mlp[0], saved[1])
        fc2, gain = self.mlp[2], self.scale.gain
        weight, bias = fc2.weight.flatten(1) * gain.unsqueeze(1), fc2.bias * gain
        return _add_residual(x, F.linear(h, weight, bias), keep)


class SpatialMix(nn.Module):
    """``x + DropPath(gather(LayerScale(dwconv(ReLU(dwconv(cell_mean(Norm(x))))))))`` on one plane.

    Args:
        channels: C.
        layernorm: LayerNorm instead of BatchNorm.
        recompute_grid: recompute in backward the grids (cell means and conv1 output) that are larger
            than the block's point features, instead of keeping them from forward to backward. Costs
            one scatter and one depthwise conv; grids smaller than the points are always kept.
    """

    def __init__(self, channels: int, layernorm: bool, recompute_grid: bool = True) -> None:
        super().__init__()
        self.norm = make_norm(channels, layernorm)
        self.ffn = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
        )
        self.scale = LayerScale(channels)
        self.recompute_grid = recompute_grid

    def forward(
        self, x: torch.Tensor, plane: Plane, keep: torch.Tensor | None = None, saved: Sequence[torch.Tensor] = ()
    ) -> torch.Tensor:
        """Mix (P, C) ``x`` spatially on ``plane``; ``keep`` is the (P, 1) DropPath gain or ``None``.

        ``saved``: one (P, C) tensor that receives the normalised points kept for backward, or none. (A
        sequence: module hooks wrap tensor arguments, and this one is written in place.)
        """
        gamma, beta = norm_affine(self.norm)
        conv1, conv2, gain = self.ffn[0], self.ffn[2], self.scale.gain
        # LayerScale commutes with the gather back to the points, so it rides on conv2's weights.
        w2, b2 = conv2.weight * gain.view(-1, 1, 1, 1), conv2.bias * gain
        small_grid = plane.num_cells <= _STORE_GRIDS_UP_TO * x.shape[0]
        store = torch.is_grad_enabled() and (small_grid or not self.recompute_grid)
        x_hat = normalize(self.norm, x, saved[0] if saved else None)
        y = apply_fp32(GridMix, x_hat, gamma, beta, conv1.weight, conv1.bias, w2, b2, plane, store)
        return _add_residual(x, y, keep)


class WaffleIronTrunk(nn.Module):
    """The stack of ``depth`` (spatial mix, channel mix) blocks, planes cycling through the grids.

    Holds ``channel_mix`` before ``spatial_mix`` so the state_dict order is the original's.
    """

    def __init__(
        self,
        channels: int,
        depth: int,
        grid_shapes: Sequence[Sequence[int]],
        layernorm: bool = False,
        drop_path: float = 0.0,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.grid_shapes = check_grid_shapes(grid_shapes)
        self.drop_path = drop_path
        self.checkpointing = checkpointing
        self.channel_mix = nn.ModuleList(ChannelMix(channels, layernorm) for _ in range(depth))
        # Under whole-block checkpointing a second, inner recomputation of the grids would be wasted.
        self.spatial_mix = nn.ModuleList(
            SpatialMix(channels, layernorm, recompute_grid=not checkpointing) for _ in range(depth)
        )

    def forward(self, x: torch.Tensor, cells: torch.Tensor, batch_index: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Run the blocks on (P, C) ``x`` with (P, n_planes) batch-offset ``cells``."""
        if cells.shape[1] != len(self.grid_shapes):
            raise DataError(
                f"batch has cells for {cells.shape[1]} planes but the model has {len(self.grid_shapes)} grids; "
                "build batches with the collate of the same backbone preset"
            )
        planes = [Plane.build(cells[:, j], batch_size, shape, x.dtype) for j, shape in enumerate(self.grid_shapes)]
        for d in range(len(self.channel_mix)):
            plane = planes[d % len(planes)]
            keeps = (self._keep(batch_index, batch_size), self._keep(batch_index, batch_size))
            if self.checkpointing and torch.is_grad_enabled():
                x = checkpoint(
                    self._block, d, x, plane, *keeps, use_reentrant=False, context_fn=self._recompute_context(d)
                )
            else:
                x = self._block(d, x, plane, *keeps)
        return x

    def _block(
        self, d: int, x: torch.Tensor, plane: Plane, keep_s: torch.Tensor | None, keep_c: torch.Tensor | None
    ) -> torch.Tensor:
        # The three (P, C) tensors a block keeps for backward share one allocation. Long-lived tensors
        # allocated one by one between the block's temporaries fragment glibc's heap (freed holes stay
        # resident); one allocation of over 32 MiB is mapped and unmapped whole.
        saved: list[torch.Tensor] = []
        if torch.is_grad_enabled():  # the norms run in float32 under autocast (apply_fp32)
            dtype = torch.float32 if torch.is_autocast_enabled(x.device.type) else x.dtype
            saved = _shared_allocation(3, x.shape, dtype, x.device)
        x = self.spatial_mix[d](x, plane, keep_s, saved[:1])
        return self.channel_mix[d](x, keep_c, saved[1:])

    def _keep(self, batch_index: torch.Tensor, batch_size: int) -> torch.Tensor | None:
        """DropPath: a (P, 1) gain, 0 for every point of a dropped sample and 1/(1-p) otherwise."""
        if not self.training or self.drop_path == 0.0:
            return None
        keep = 1.0 - self.drop_path
        gain = torch.bernoulli(torch.full((batch_size,), keep, device=batch_index.device)) / keep
        return gain[batch_index].unsqueeze(1)

    def _recompute_context(self, d: int) -> Callable[[], tuple[AbstractContextManager, AbstractContextManager]]:
        """``checkpoint``'s context_fn: the recomputation must not update BatchNorm running stats again."""
        blocks = (self.spatial_mix[d], self.channel_mix[d])
        norms = [m for block in blocks for m in block.modules() if isinstance(m, _BatchNorm)]
        return lambda: (nullcontext(), _frozen_running_stats(norms))


def _shared_allocation(n: int, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    """``n`` tensors of ``shape`` in one allocation, each with its own autograd version counter.

    Views of one tensor would share a version counter: writing one would invalidate the others
    saved for backward.
    """
    storage = torch.empty(n * shape.numel(), dtype=dtype, device=device).untyped_storage()
    return [torch.empty(0, dtype=dtype, device=device).set_(storage, i * shape.numel(), shape) for i in range(n)]


@contextmanager
def _frozen_running_stats(norms: Sequence[_BatchNorm]) -> Iterator[None]:
    """Undo the running-stat updates of a checkpoint's recomputation, which would count a batch twice."""
    saved = [[b.clone() for b in m.buffers(recurse=False)] for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, values in zip(norms, saved):
                for buf, value in zip(m.buffers(recurse=False), values):
                    buf.copy_(value)


class WaffleIron(Backbone):
    """WaffleIron backbone: per-point features (sum M, C) for a batch from :class:`WaffleIronPrep`.

    Args:
        in_channels: input feature channels (5: intensity, x, y, z, radius).
        channels: C, the width of every block.
        depth: number of (spatial mix, channel mix) blocks.
        grid_shapes: (H, W) of each plane's grid, matching the preprocessing's.
        layernorm: channel LayerNorm instead of BatchNorm in the blocks (the embedding always uses BN).
        drop_path: per-sample DropPath probability of every residual branch.
        checkpointing: recompute each block in backward (activation checkpointing) to save memory.
    """

    def __init__(
        self,
        in_channels: int = 5,
        channels: int = 256,
        depth: int = 48,
        grid_shapes: Sequence[Sequence[int]] = ((256, 256), (256, 32), (256, 32)),
        layernorm: bool = False,
        drop_path: float = 0.0,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("channels", channels), ("depth", depth)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"WaffleIron {name} must be a positive integer, got {value!r}")
        if not 0.0 <= drop_path < 1.0:
            raise ConfigError(f"WaffleIron drop_path must be in [0, 1), got {drop_path}")
        self.out_channels = channels
        self.embed = Embedding(in_channels, channels)
        self.waffleiron = WaffleIronTrunk(channels, depth, grid_shapes, layernorm, drop_path, checkpointing)

    @property
    def num_layers(self) -> int:
        """Number of blocks: layer ids run from 0 (embedding) to ``depth`` (last block)."""
        return len(self.waffleiron.channel_mix)

    def layer_id(self, param_name: str) -> int:
        """Depth of a parameter for layer-wise learning-rate decay, as ScaLR: embedding 0, block d at d + 1.

        Raises:
            ValueError: when ``param_name`` is not a parameter of this backbone.
        """
        parts = param_name.split(".")
        if parts[0] == "embed":
            return 0
        if parts[0] == "waffleiron" and len(parts) > 2 and parts[1] in ("channel_mix", "spatial_mix"):
            return int(parts[2]) + 1
        if parts[0] == "classif" and hasattr(self, "classif"):
            return self.num_layers + 1
        raise ValueError(f"'{param_name}' is not a parameter name of {type(self).__name__}")

    def forward(self, batch: Batch) -> torch.Tensor:
        """Features (sum M, C) of a batch from :meth:`WaffleIronPrep.collate`."""
        missing = [k for k in ("feats", "neighbors", "cells", "batch_index", "offsets") if k not in batch]
        if missing:
            raise DataError(f"WaffleIron batch lacks {missing}; build it with WaffleIronPrep.collate")
        x = self.embed(batch["feats"], batch["neighbors"])
        return self.waffleiron(x, batch["cells"], batch["batch_index"], batch["offsets"].shape[0] - 1)


class WaffleIronSegmenter(WaffleIron):
    """WaffleIron plus the original's ``classif`` 1x1 conv head: logits (sum M, num_classes).

    Its state_dict is the original segmenter's (``embed.*``, ``waffleiron.*``, ``classif.*``), so released
    WaffleIron and ScaLR weights load with ``strict=True`` once their ``module.`` prefix is stripped.
    """

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.classif = PointConv(self.out_channels, num_classes)
        self.out_channels = num_classes

    def forward(self, batch: Batch) -> torch.Tensor:
        """Logits (sum M, num_classes)."""
        return self.classif(super().forward(batch))


# ---------------------------------------------------------------------------------------------- presets

_MODEL_OPTIONS = ("layernorm", "drop_path", "checkpointing")
_PREP_OPTIONS = tuple(f.name for f in fields(WaffleIronPrep))


def _waffleiron_spec(
    name: str, depth: int, channels: int, layernorm: bool, overrides: dict[str, object]
) -> BackboneSpec:
    """Build a preset's module and preprocessing from one set of options, so their grids agree."""
    unknown = sorted(set(overrides) - set(_MODEL_OPTIONS) - set(_PREP_OPTIONS))
    if unknown:
        options = ", ".join(sorted((*_MODEL_OPTIONS, *_PREP_OPTIONS)))
        raise ConfigError(f"backbone '{name}' has no option {unknown}; options: {options}")
    prep = WaffleIronPrep(**{k: v for k, v in overrides.items() if k in _PREP_OPTIONS})  # type: ignore[arg-type]
    model_options = {"layernorm": layernorm, **{k: v for k, v in overrides.items() if k in _MODEL_OPTIONS}}
    model = WaffleIron(
        in_channels=len(FEATURE_NAMES), channels=channels, depth=depth, grid_shapes=prep.grid_shapes, **model_options
    )
    return BackboneSpec(name=name, model=model, prep=prep, collate=prep.collate)


@register_backbone
def waffleiron_48_256(**overrides: object) -> BackboneSpec:
    """WI-48-256 with BatchNorm (6.84M parameters): WaffleIron's SemanticKITTI model."""
    return _waffleiron_spec("waffleiron_48_256", 48, 256, False, overrides)


@register_backbone
def waffleiron_48_384(**overrides: object) -> BackboneSpec:
    """WI-48-384 with BatchNorm (15.1M parameters): WaffleIron's nuScenes model."""
    return _waffleiron_spec("waffleiron_48_384", 48, 384, False, overrides)


@register_backbone
def waffleiron_48_768(**overrides: object) -> BackboneSpec:
    """WI-48-768 with LayerNorm (59.4M parameters): ScaLR's student."""
    return _waffleiron_spec("waffleiron_48_768", 48, 768, True, overrides)


@register_backbone
def waffleiron(depth: int = 48, channels: int = 256, layernorm: bool = False, **overrides: object) -> BackboneSpec:
    """WaffleIron of any depth and width, BatchNorm unless ``layernorm``: checkpoints whose size is no preset's."""
    return _waffleiron_spec("waffleiron", int(depth), int(channels), bool(layernorm), overrides)


@register_backbone
def waffleiron_12_64(**overrides: object) -> BackboneSpec:
    """WI-12-64 with BatchNorm (0.13M parameters): CPU demos."""
    return _waffleiron_spec("waffleiron_12_64", 12, 64, False, overrides)


@register_backbone
def waffleiron_4_32(**overrides: object) -> BackboneSpec:
    """WI-4-32 with BatchNorm (15k parameters): tests and smoke runs."""
    return _waffleiron_spec("waffleiron_4_32", 4, 32, False, overrides)
