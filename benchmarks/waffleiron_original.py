"""WaffleIron in the original implementation's order of operations, to measure it next to ours.

Written from valeoai/WaffleIron v0.3 (``waffleiron/embedding.py``, ``backbone.py``, ``segmenter.py``) and
``shared/design/reference/scalr_waffleiron.md`` section 1, not copied: channel-first (B, C, N) tokens of a
zero-padded batch; the embedding gathers one (B, C_in, N, 1) column per neighbour, concatenates them to a
(B, C_in, N, K) tensor and runs BatchNorm2d / 1x1 Conv2d on it; a spatial mix averages each cell with
``scatter_reduce_(..., "mean", include_self=False)`` into a dense (B, C, H*W) grid (the original's default
projection), runs the depthwise 3x3 convolutions, LayerScale as a depthwise Conv1d, and inflates with
``gather``; a channel mix is Conv1d, ReLU, Conv1d, LayerScale. Every module is a stock ``torch.nn`` layer
under the original's name, so the state_dict keys are the original's and lidarssl's, and
:func:`original_from` loads a lidarssl :class:`~lidarssl.models.backbones.waffleiron.WaffleIron` into it.

As in the original, padded points sit in cell 0 and count in BatchNorm statistics and
in cell 0's mean, so only batches without padding (one scan, or equal sizes) compute what lidarssl does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class DropPath(nn.Module):
    """Per-sample stochastic depth on (B, ...) tensors: ``x / keep * floor(keep + U(0, 1))``."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = (keep + torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)).floor_()
        return x.div(keep) * mask


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of (B, C, N) tokens, by transposing them to the last axis and back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, -1)).transpose(1, -1)


def _norm(channels: int, layernorm: bool) -> nn.Module:
    return ChannelLayerNorm(channels) if layernorm else nn.BatchNorm1d(channels)


def _layer_scale(channels: int) -> nn.Conv1d:
    return nn.Conv1d(channels, channels, 1, groups=channels, bias=False)


class Embedding(nn.Module):
    """Point branch Conv1d and neighbour branch over the (B, C_in, N, K) relative features, merged."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(in_channels)
        self.conv1 = nn.Conv1d(in_channels, channels, 1)
        self.conv2 = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 1, bias=False),
        )
        self.final = nn.Conv1d(2 * channels, channels, 1)

    def forward(self, feats: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
        """(B, C_in, N) features and (B, K + 1, N) neighbours (self first) -> (B, C, N)."""
        x = self.norm(feats)
        point = self.conv1(x)
        columns = [
            torch.gather(x, 2, neighbors[:, k : k + 1].expand(-1, x.shape[1], -1)).unsqueeze(-1)
            for k in range(1, neighbors.shape[1])
        ]
        relative = torch.cat(columns, -1) - x.unsqueeze(-1)
        return self.final(torch.cat((point, self.conv2(relative).max(-1)[0]), 1))


class ChannelMix(nn.Module):
    """``tokens + DropPath(LayerScale(Conv1d(ReLU(Conv1d(Norm(tokens))))))``."""

    def __init__(self, channels: int, layernorm: bool, drop_path: float) -> None:
        super().__init__()
        self.norm = _norm(channels, layernorm)
        self.mlp = nn.Sequential(
            nn.Conv1d(channels, channels, 1), nn.ReLU(inplace=True), nn.Conv1d(channels, channels, 1)
        )
        self.scale = _layer_scale(channels)
        self.drop_path = DropPath(drop_path)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens + self.drop_path(self.scale(self.mlp(self.norm(tokens))))


class SpatialMix(nn.Module):
    """``tokens + DropPath(gather(LayerScale(FFN(cell means of Norm(tokens)))))`` on one (H, W) grid."""

    def __init__(self, channels: int, grid_shape: Sequence[int], layernorm: bool, drop_path: float) -> None:
        super().__init__()
        self.H, self.W = grid_shape
        self.norm = _norm(channels, layernorm)
        self.ffn = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
        )
        self.scale = _layer_scale(channels)
        self.drop_path = DropPath(drop_path)

    def forward(self, tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``index``: (B, C, N) cell of every token, the plane's cells expanded over channels."""
        b, c, _ = tokens.shape
        residual = self.norm(tokens)
        grid = torch.zeros((b, c, self.H * self.W), dtype=residual.dtype, device=residual.device)
        grid.scatter_reduce_(2, index, residual, "mean", include_self=False)
        residual = self.ffn(grid.reshape(b, c, self.H, self.W))
        residual = self.scale(residual.reshape(b, c, self.H * self.W))
        return tokens + self.drop_path(torch.gather(residual, 2, index))


class Trunk(nn.Module):
    """``depth`` (spatial mix, channel mix) blocks cycling through the grids; channel mixes first in the
    state_dict, as the original."""

    def __init__(
        self, channels: int, depth: int, grid_shapes: Sequence[Sequence[int]], layernorm: bool, drop_path: float
    ) -> None:
        super().__init__()
        self.channel_mix = nn.ModuleList(ChannelMix(channels, layernorm, drop_path) for _ in range(depth))
        self.spatial_mix = nn.ModuleList(
            SpatialMix(channels, grid_shapes[d % len(grid_shapes)], layernorm, drop_path) for d in range(depth)
        )

    def forward(self, tokens: torch.Tensor, cell_ind: torch.Tensor) -> torch.Tensor:
        """(B, C, N) tokens, (B, n_planes, N) cells of each plane's grid."""
        indices = [cell_ind[:, j : j + 1].expand(-1, tokens.shape[1], -1) for j in range(cell_ind.shape[1])]
        for d, (smix, cmix) in enumerate(zip(self.spatial_mix, self.channel_mix)):
            tokens = cmix(smix(tokens, indices[d % len(indices)]))
        return tokens


class OriginalWaffleIron(nn.Module):
    """Embedding, trunk and (with ``num_classes``) the Conv1d ``classif`` head: (B, C_out, N) outputs."""

    def __init__(
        self,
        in_channels: int,
        channels: int,
        depth: int,
        grid_shapes: Sequence[Sequence[int]],
        layernorm: bool = False,
        drop_path: float = 0.0,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        self.grid_shapes = [tuple(s) for s in grid_shapes]
        self.embed = Embedding(in_channels, channels)
        self.waffleiron = Trunk(channels, depth, grid_shapes, layernorm, drop_path)
        self.classif = None if num_classes is None else nn.Conv1d(channels, num_classes, 1)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Outputs (B, C_out, N) of :func:`padded_inputs`' tensors."""
        tokens = self.waffleiron(self.embed(inputs["feats"], inputs["neighbors"]), inputs["cell_ind"])
        return tokens if self.classif is None else self.classif(tokens)


def original_from(model: nn.Module) -> OriginalWaffleIron:
    """An :class:`OriginalWaffleIron` with the architecture, mode and weights of a lidarssl WaffleIron."""
    trunk = model.waffleiron
    layernorm = isinstance(trunk.channel_mix[0].norm, nn.LayerNorm)
    classif = getattr(model, "classif", None)
    original = OriginalWaffleIron(
        in_channels=model.embed.norm.num_features,
        channels=model.embed.conv1.out_channels,
        depth=len(trunk.channel_mix),
        grid_shapes=trunk.grid_shapes,
        layernorm=layernorm,
        drop_path=trunk.drop_path,
        num_classes=None if classif is None else classif.out_channels,
    )
    original.to(next(model.parameters()).dtype).load_state_dict(model.state_dict(), strict=True)
    return original.train(model.training)


def padded_inputs(batch: dict[str, torch.Tensor], grid_shapes: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
    """A lidarssl WaffleIron batch as the original's collate builds it: padded to the largest scan.

    Returns ``feats`` (B, C_in, N), ``neighbors`` (B, K + 1, N) indices within the scan (padding points at
    N - 1) and ``cell_ind`` (B, n_planes, N) cells within each scan's grid (padding at 0). The original's
    ``occupied`` mask is left out: its default projection does not read it.
    """
    offsets = batch["offsets"].tolist()
    sizes = [e - s for s, e in zip(offsets[:-1], offsets[1:])]
    b, n = len(sizes), max(sizes)
    feats = batch["feats"].new_zeros(b, batch["feats"].shape[1], n)
    neighbors = torch.full((b, batch["neighbors"].shape[1], n), n - 1, dtype=torch.int64)
    cell_ind = torch.zeros(b, batch["cells"].shape[1], n, dtype=torch.int64)
    cells_per_grid = torch.tensor([h * w for h, w in grid_shapes])
    for i, (start, m) in enumerate(zip(offsets, sizes)):
        rows = slice(start, start + m)
        feats[i, :, :m] = batch["feats"][rows].T
        neighbors[i, :, :m] = (batch["neighbors"][rows] - start).T
        cell_ind[i, :, :m] = (batch["cells"][rows] - i * cells_per_grid).T
    return {"feats": feats, "neighbors": neighbors, "cell_ind": cell_ind}


def unpadded(out: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, C, N) outputs back to lidarssl's (sum M, C) rows of real points."""
    offsets = batch["offsets"].tolist()
    return torch.cat([out[i, :, : e - s].T for i, (s, e) in enumerate(zip(offsets[:-1], offsets[1:]))])

