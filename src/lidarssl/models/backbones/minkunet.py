"""Sparse residual U-Nets: SLidR's SR-UNet (Res16UNet34C) and ALSO/NCLR's MinkUNet18/34.

Written after SLidR's ``model/res16unet.py`` (valeoai/SLidR, MinkowskiEngine) and ALSO's
``also_selfsup/networks/backbone/torchsparse/minkunet.py`` (valeoai/ALSO, torchsparse).
Layout (torchsparse's names; convolutions use spconv semantics, see :mod:`lidarssl.models.sparse`):

* ``stem``: ``stem_convs`` x (3^3 submanifold conv, BN, ReLU) to ``stem_channels``;
* ``stage1``..``stage4``: a 2^3 stride-2 conv (BN, ReLU), then residual blocks to ``planes[0..3]``;
* ``up1``..``up4``: ``[0]`` a 2^3 transposed conv back to the finer sites (BN, ReLU) to ``planes[4..7]``,
  concatenated with the encoder features there, ``[1]`` residual blocks.

MinkowskiEngine and torchsparse convolutions with stride 1 keep the input sites, which is what
spconv calls submanifold; their stride-2 kernel-2 convs put a site at ``floor(c / 2)``, as spconv's
regular conv does. The same layout with ``layers=(2, 3, 4, 6, 2, 2, 2, 2)`` and
``planes=(32, 64, 128, 256, 256, 128, 96, 96)`` is Res16UNet34C and MinkUNet34. The last stage's
features (96 channels) go to every kept point of their voxel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lidarssl.errors import ConfigError
from lidarssl.models.backbones.base import (
    Backbone,
    BackboneSpec,
    Batch,
    register_backbone,
)
from lidarssl.models.backbones.sparse_prep import (
    layer_of_prefix,
    scaled,
    kernels_option,
    sparse_input,
    split_overrides,
)
from lidarssl.models.sparse import SparseTensor, cat
from lidarssl.models.sparse import nn as spnn

__all__ = ["MinkUNet", "ResidualBlock"]

LAYERS_18 = (2, 2, 2, 2, 2, 2, 2, 2)
LAYERS_34 = (2, 3, 4, 6, 2, 2, 2, 2)
PLANES = (32, 64, 128, 256, 256, 128, 96, 96)
#: Every U-Net grid is padded to a multiple of this (four stride-2 levels), so no site loses its parent.
GRID_MULTIPLE = 16


def conv_bn_relu(conv: nn.Module, channels: int, bn_momentum: float) -> nn.Sequential:
    """``net = (conv, BN, ReLU)``, torchsparse's Basic(De)ConvolutionBlock."""
    return nn.Sequential(conv, spnn.BatchNorm(channels, momentum=bn_momentum), spnn.ReLU(inplace=True))


class ConvBlock(nn.Module):
    """``net``: a convolution, BN and ReLU (holding ``net`` keeps torchsparse's parameter names)."""

    def __init__(self, conv: nn.Module, channels: int, bn_momentum: float) -> None:
        super().__init__()
        self.net = conv_bn_relu(conv, channels, bn_momentum)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.net(x)


class ResidualBlock(nn.Module):
    """``ReLU(net(x) + downsample(x))``, ``net`` = two 3^3 submanifold convs with BN, ``downsample`` a
    1x1 conv and BN when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            spnn.SubMConv3d(in_channels, out_channels, 3),
            spnn.BatchNorm(out_channels, momentum=bn_momentum),
            spnn.ReLU(inplace=True),
            spnn.SubMConv3d(out_channels, out_channels, 3),
            spnn.BatchNorm(out_channels, momentum=bn_momentum),
        )
        if in_channels == out_channels:
            self.downsample: nn.Module = nn.Identity()
        else:
            self.downsample = nn.Sequential(
                spnn.SubMConv3d(in_channels, out_channels, 1), spnn.BatchNorm(out_channels, momentum=bn_momentum)
            )

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.net(x)
        return out.replace_features(torch.relu(out.features + self.downsample(x).features))


class MinkUNet(Backbone):
    """A 4-level sparse residual U-Net; forward returns its last stage's features at every kept point.

    Args:
        in_channels: input voxel feature channels.
        grid_shape: (Z, Y, X) voxel grid of the preprocessing; padded up to a multiple of 16.
        planes: widths of stage1..4 then up1..4.
        layers: residual blocks in stage1..4 then up1..4.
        stem_channels: width of the stem.
        stem_convs: 3^3 convolutions in the stem (1 for MinkUNet34 and Res16UNet34C, 2 for "SC"
            variants and SPVCNN).
        bn_momentum: momentum of every BatchNorm (torch convention: weight of the new batch).
        block_bn_momentum: momentum of the residual blocks' BatchNorms if not ``bn_momentum``: SLidR's
            ``bn_momentum`` (0.05 pretraining, 0.02 downstream) reaches only the stem and the strided and
            transposed convolutions of its Res16UNet34C, its ``BasicBlock`` s keep PyTorch's 0.1.
        kernels: who computes the sparse convolutions: ``auto`` (spconv's on CUDA, ours on CPU), ``lidarssl``
            or ``spconv`` (same rulebooks, same weights).

    Attributes:
        num_layers: 8; :meth:`layer_id` puts the stem at 0, stage i at i and up i at 4 + i.
    """

    num_layers = 8

    def __init__(
        self,
        in_channels: int,
        grid_shape: Sequence[int],
        planes: Sequence[int] = PLANES,
        layers: Sequence[int] = LAYERS_34,
        stem_channels: int = 32,
        stem_convs: int = 1,
        bn_momentum: float = 0.1,
        block_bn_momentum: float | None = None,
        kernels: str = "auto",
    ) -> None:
        super().__init__()
        self.kernels = kernels_option(kernels)
        if len(planes) != 8 or len(layers) != 8 or min(planes) < 1 or min(layers) < 1:
            raise ConfigError(f"planes and layers need 8 positive values each, got {list(planes)} and {list(layers)}")
        if len(grid_shape) != 3 or min(grid_shape) < 1:
            raise ConfigError(f"grid_shape must be 3 positive sizes (Z, Y, X), got {list(grid_shape)}")
        if stem_convs < 1:
            raise ConfigError(f"stem_convs must be at least 1, got {stem_convs}")
        self.in_channels = in_channels
        self.spatial_shape = tuple(-(-int(n) // GRID_MULTIPLE) * GRID_MULTIPLE for n in grid_shape)
        self.out_channels = planes[7]
        m = bn_momentum
        mb = bn_momentum if block_bn_momentum is None else block_bn_momentum
        stem: list[nn.Module] = []
        for i in range(stem_convs):
            conv = spnn.SubMConv3d(in_channels if i == 0 else stem_channels, stem_channels, 3)
            stem += list(conv_bn_relu(conv, stem_channels, m))
        self.stem = nn.Sequential(*stem)
        width = stem_channels
        skips = [width]
        for i in range(4):
            down = ConvBlock(spnn.Conv3d(width, width, 2, stride=2, indice_key=f"down{i + 1}"), width, m)
            blocks = [ResidualBlock(width if j == 0 else planes[i], planes[i], mb) for j in range(layers[i])]
            setattr(self, f"stage{i + 1}", nn.Sequential(down, *blocks))
            width = planes[i]
            skips.append(width)
        for i in range(4):
            out = planes[4 + i]
            up = ConvBlock(spnn.ConvTranspose3d(width, out, 2, indice_key=f"down{4 - i}"), out, m)
            skip = skips[3 - i]
            blocks = [ResidualBlock(out + skip if j == 0 else out, out, mb) for j in range(layers[4 + i])]
            setattr(self, f"up{i + 1}", nn.ModuleList([up, nn.Sequential(*blocks)]))
            width = out
        self._layers = [("stem", 0)] + [(f"stage{i}", i) for i in range(1, 5)]
        self._layers += [(f"up{i}", 4 + i) for i in range(1, 5)]

    def layer_id(self, param_name: str) -> int:
        """Depth of a parameter for layer-wise learning-rate decay, 0 (stem) to :attr:`num_layers`."""
        return layer_of_prefix(self._layers, param_name, type(self).__name__)

    def encode(self, x: SparseTensor) -> list[SparseTensor]:
        """Stem and stage outputs ``[x0, x1, x2, x3, x4]`` (strides 1, 2, 4, 8, 16)."""
        feats = [self.stem(x)]
        for i in range(1, 5):
            feats.append(getattr(self, f"stage{i}")(feats[-1]))
        return feats

    def up(self, i: int, y: SparseTensor, skip: SparseTensor) -> SparseTensor:
        """Decoder level ``i`` (1..4): upsample ``y`` onto ``skip``'s sites, concatenate, residual blocks."""
        deconv, blocks = getattr(self, f"up{i}")
        return blocks(cat([deconv(y), skip]))

    def forward_voxels(self, batch: Batch) -> SparseTensor:
        """The last decoder stage: features on the input voxels (stride 1)."""
        x = self.encode(sparse_input(batch, self.spatial_shape, self.in_channels, self.kernels))
        y = x[4]
        for i in range(1, 5):
            y = self.up(i, y, x[4 - i])
        return y

    def forward(self, batch: Batch) -> torch.Tensor:
        """Features (sum M, out_channels): each kept point gets its voxel's."""
        return self.forward_voxels(batch).features.index_select(0, batch["point2voxel"])


# ---------------------------------------------------------------------------------------------- presets

_UNET_OPTIONS = ("width", "bn_momentum", "block_bn_momentum", "kernels")
#: ALSO/NCLR nuScenes input: intensity of the voxel's first point, 0.1 m cartesian voxels.
_CARTESIAN = {"voxel_size": (0.1, 0.1, 0.1), "range_min": (-51.2, -51.2, -5.0), "range_max": (51.2, 51.2, 3.0),
              "features": ("intensity",), "voxel_features": "first"}  # fmt: skip
#: SLidR: cylindrical voxels of 0.1 m in rho and z and 1 degree in phi, one point's raw intensity.
_CYLINDRICAL = {"coordinates": "cylindrical", "voxel_size": (0.1, 1.0, 0.1), "range_min": (0.0, -180.0, -5.0),
                "range_max": (102.4, 180.0, 3.0), "features": ("intensity",), "voxel_features": "first"}  # fmt: skip
#: Tests and CPU demos: coarse 0.2 m voxels over +-25.6 m.
_COARSE = {"voxel_size": (0.2, 0.2, 0.2), "range_min": (-25.6, -25.6, -3.2), "range_max": (25.6, 25.6, 3.2),
           "features": ("intensity",), "voxel_features": "mean"}  # fmt: skip


def _minkunet_spec(
    name: str, layers: Sequence[int], stem_convs: int, width: float, prep_defaults: dict[str, object],
    overrides: dict[str, object], planes: Sequence[int] = PLANES,
) -> BackboneSpec:  # fmt: skip
    prep, model_options = split_overrides(name, overrides, _UNET_OPTIONS, prep_defaults)
    w = float(model_options.pop("width", width))  # type: ignore[arg-type]
    model = MinkUNet(
        prep.in_channels, prep.spatial_shape, planes=scaled(planes, w), layers=layers,
        stem_channels=scaled([32], w)[0], stem_convs=stem_convs, **model_options,  # type: ignore[arg-type]
    )  # fmt: skip
    return BackboneSpec(name=name, model=model, prep=prep, collate=prep.collate)


@register_backbone
def res16unet34c(**overrides: object) -> BackboneSpec:
    """SLidR's SR-UNet, Res16UNet34C (about 37.8M parameters, 96-d), on cylindrical voxels."""
    return _minkunet_spec("res16unet34c", LAYERS_34, 1, 1.0, _CYLINDRICAL, overrides)


@register_backbone
def minkunet34(**overrides: object) -> BackboneSpec:
    """ALSO/NCLR's nuScenes MinkUNet34 (same layout as Res16UNet34C), on 0.1 m cartesian voxels."""
    return _minkunet_spec("minkunet34", LAYERS_34, 1, 1.0, _CARTESIAN, overrides)


@register_backbone
def minkunet18(**overrides: object) -> BackboneSpec:
    """MinkUNet18: two residual blocks per stage, one stem conv."""
    return _minkunet_spec("minkunet18", LAYERS_18, 1, 1.0, _CARTESIAN, overrides)


@register_backbone
def minkunet18_sc(**overrides: object) -> BackboneSpec:
    """ALSO's SemanticKITTI MinkUNet18SC: MinkUNet18 with a second stem conv (use ``voxel_size=0.05``
    on SemanticKITTI)."""
    return _minkunet_spec("minkunet18_sc", LAYERS_18, 2, 1.0, _CARTESIAN, overrides)


@register_backbone
def minkunet34_half(**overrides: object) -> BackboneSpec:
    """MinkUNet34 at half width (48-d output)."""
    return _minkunet_spec("minkunet34_half", LAYERS_34, 1, 0.5, _CARTESIAN, overrides)


@register_backbone
def minkunet_tiny(**overrides: object) -> BackboneSpec:
    """One block per level at quarter width (24-d output) on coarse voxels: tests and CPU demos."""
    return _minkunet_spec("minkunet_tiny", (1,) * 8, 1, 0.25, _COARSE, overrides)
