"""SPVCNN (Tang et al., ECCV 2020) as ALSO and NCLR use it: a sparse U-Net plus a point branch.

Written after ALSO's ``also_selfsup/networks/backbone/torchsparse/spvcnn.py`` (valeoai/ALSO, torchsparse 1.4). The voxel branch is
:class:`~lidarssl.models.backbones.minkunet.MinkUNet` with two residual blocks per level, a two-conv
stem and widths 32 | 32, 64, 128, 256 | 256, 128, 96, 96. The point branch keeps one feature row per
kept point and meets the voxels four times:

* after the stem: points take the stem features (trilinear), and the stage-1 input is their voxel mean;
* after stage 4, up 2 and up 4: points add ``point_transforms[i]`` (Linear, BN, ReLU) of their previous
  features to the trilinear voxel features, then the voxels take the mean of their points.

Dropout (0.3) acts on the voxel features entering up 1 and up 3. Forward returns the last point
features (96 channels), so points of one voxel can differ.
"""

from __future__ import annotations

import torch
from torch import nn

from lidarssl.models.backbones.base import BackboneSpec, Batch, register_backbone
from lidarssl.models.backbones.minkunet import LAYERS_18, PLANES, MinkUNet
from lidarssl.models.backbones.sparse_prep import scaled, sparse_input, split_overrides
from lidarssl.models.sparse import SparseTensor
from lidarssl.models.sparse import functional as SF

__all__ = ["SPVCNN"]


class SPVCNN(MinkUNet):
    """Point-voxel CNN: per-point features (sum M, ``planes[7]``).

    Args:
        in_channels: input voxel feature channels (the voxel mean of the point features).
        grid_shape: (Z, Y, X) voxel grid of the preprocessing.
        planes: widths of stage1..4 then up1..4.
        layers: residual blocks per level.
        stem_channels: width of the stem.
        bn_momentum: momentum of every BatchNorm.
        kernels: who computes the sparse convolutions (see :class:`~lidarssl.models.backbones.minkunet.MinkUNet`).
        dropout: dropout probability on the voxel features entering up 1 and up 3.

    Attributes:
        num_layers: 8, as :class:`MinkUNet`; point transform i sits at the stage it follows (4, 6, 8).
    """

    def __init__(
        self,
        in_channels: int,
        grid_shape: tuple[int, int, int],
        planes: tuple[int, ...] = PLANES,
        layers: tuple[int, ...] = LAYERS_18,
        stem_channels: int = 32,
        bn_momentum: float = 0.1,
        dropout: float = 0.3,
        kernels: str = "auto",
    ) -> None:
        super().__init__(in_channels, grid_shape, planes, layers, stem_channels, 2, bn_momentum, kernels=kernels)
        widths = (stem_channels, planes[3], planes[5], planes[7])
        self.point_transforms = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.BatchNorm1d(b, momentum=bn_momentum), nn.ReLU(inplace=True))
            for a, b in zip(widths[:-1], widths[1:])
        )
        self.dropout = nn.Dropout(dropout)
        self._layers += [("point_transforms.0", 4), ("point_transforms.1", 6), ("point_transforms.2", 8)]

    def forward_voxels(self, batch: Batch) -> SparseTensor:
        """Not available: SPVCNN's output lives on the points (use :meth:`forward`)."""
        raise NotImplementedError("SPVCNN's features are per point; call forward()")

    def forward(self, batch: Batch) -> torch.Tensor:
        """Per-point features (sum M, out_channels)."""
        bidx, pc = batch["batch_index"], batch["point_coords"]

        def to_points(x: SparseTensor) -> torch.Tensor:
            return SF.voxel_to_point(x, bidx, pc, "trilinear")

        def to_voxels(x: SparseTensor, z: torch.Tensor) -> SparseTensor:
            return SF.point_to_voxel(x, z, bidx, pc)

        x0 = self.stem(sparse_input(batch, self.spatial_shape, self.in_channels, self.kernels))
        z0 = to_points(x0)
        x = [x0, self.stage1(to_voxels(x0, z0))]
        for i in range(2, 5):
            x.append(getattr(self, f"stage{i}")(x[-1]))
        z1 = to_points(x[4]) + self.point_transforms[0](z0)
        y = to_voxels(x[4], z1)
        y = self.up(2, self.up(1, y.replace_features(self.dropout(y.features)), x[3]), x[2])
        z2 = to_points(y) + self.point_transforms[1](z1)
        y = to_voxels(y, z2)
        y = self.up(4, self.up(3, y.replace_features(self.dropout(y.features)), x[1]), x[0])
        return to_points(y) + self.point_transforms[2](z2)


# ---------------------------------------------------------------------------------------------- presets

_SPVCNN_OPTIONS = ("width", "bn_momentum", "dropout", "kernels")
# The point branch averages points into voxels, so the voxel input is the mean of its points.
_CARTESIAN = {"voxel_size": (0.1, 0.1, 0.1), "range_min": (-51.2, -51.2, -5.0), "range_max": (51.2, 51.2, 3.0),
              "features": ("intensity",), "voxel_features": "mean"}  # fmt: skip
_COARSE = {"voxel_size": (0.2, 0.2, 0.2), "range_min": (-25.6, -25.6, -3.2), "range_max": (25.6, 25.6, 3.2),
           "features": ("intensity",), "voxel_features": "mean"}  # fmt: skip


def _spvcnn_spec(
    name: str, layers: tuple[int, ...], width: float, prep_defaults: dict[str, object], overrides: dict[str, object]
) -> BackboneSpec:
    prep, model_options = split_overrides(name, overrides, _SPVCNN_OPTIONS, prep_defaults)
    w = float(model_options.pop("width", width))  # type: ignore[arg-type]
    model = SPVCNN(
        prep.in_channels, prep.spatial_shape, planes=scaled(PLANES, w), layers=layers,
        stem_channels=scaled([32], w)[0], **model_options,  # type: ignore[arg-type]
    )  # fmt: skip
    return BackboneSpec(name=name, model=model, prep=prep, collate=prep.collate)


@register_backbone
def spvcnn(**overrides: object) -> BackboneSpec:
    """ALSO/NCLR's SPVCNN (96-d point features) on 0.1 m voxels (use ``voxel_size=0.05`` on SemanticKITTI)."""
    return _spvcnn_spec("spvcnn", LAYERS_18, 1.0, _CARTESIAN, overrides)


@register_backbone
def spvcnn_half(**overrides: object) -> BackboneSpec:
    """ALSO's SPVCNN0p5: SPVCNN at half width (48-d)."""
    return _spvcnn_spec("spvcnn_half", LAYERS_18, 0.5, _CARTESIAN, overrides)


@register_backbone
def spvcnn_tiny(**overrides: object) -> BackboneSpec:
    """One block per level at quarter width (24-d) on coarse voxels: tests and CPU demos."""
    return _spvcnn_spec("spvcnn_tiny", (1,) * 8, 0.25, _COARSE, overrides)
