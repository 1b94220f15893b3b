"""VoxelNet: OpenPCDet's ``VoxelBackBone8x`` with height compression, sampled at the points.

Written after SLidR's ``model/spconv_backbone.py`` (valeoai/SLidR: its VoxelNet) and OpenPCDet's
documented layout. Module names and parameter shapes are OpenPCDet's ``backbone_3d`` ones
(``conv_input.0.weight``, ``conv1.0.0.weight``, ``conv2.0.1.running_mean``, ..., ``conv_out.0.weight``),
so an exported state_dict loads into SECOND or PV-RCNN under the ``backbone_3d.`` prefix:

* ``conv_input``: 3^3 submanifold conv to 16, BN, ReLU;
* ``conv1``: one submanifold block at 16;
* ``conv2``/``conv3``: a 3^3 stride-2 conv (padding 1) to 32/64, then two submanifold blocks;
* ``conv4``: a 3^3 stride-2 conv to 64 with no z padding, then two submanifold blocks;
* ``conv_out``: a (3, 1, 1) conv with stride (2, 1, 1) in z to 128, BN, ReLU.

BatchNorms use OpenPCDet's eps 1e-3 and momentum 0.01. As in OpenPCDet the sparse grid has one more
z layer than the voxel grid. The (B, 128, D, H, W) output is flattened to a (B, 128 D, H, W) bird's-eye
map at stride 8 (:meth:`VoxelNet.forward_bev`; D = 2 for 40 z voxels) and each kept point takes its
bilinear sample, BEV cell (i, j) covering input voxels [8 i, 8 i + 8) x [8 j, 8 j + 8).

Unlike OpenPCDet's voxel generator, a voxel's mean runs over all of its points (no cap on points per
voxel or on voxels per scan), and the grid comes from the preset's range and voxel size, not a dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
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
    kernels_option,
    sparse_input,
    split_overrides,
)
from lidarssl.models.sparse import SparseTensor
from lidarssl.models.sparse import nn as spnn

__all__ = ["VoxelNet"]

#: Stride of the bird's-eye map in input voxels.
BEV_STRIDE = 8


def _bev_height(z: int) -> int:
    """z size of ``conv_out``'s output for ``z`` voxels: the sparse grid adds one layer, then four 3-tap
    stride-2 convolutions (z padding 1, 1, 0, 0)."""
    depth = z + 1
    for padding in (1, 1, 0, 0):
        depth = (depth + 2 * padding - 3) // 2 + 1
    return depth


class VoxelNet(Backbone):
    """OpenPCDet ``VoxelBackBone8x`` + height compression; per-point bilinear samples of the BEV map.

    Args:
        in_channels: voxel feature channels (4 for OpenPCDet's mean of x, y, z, intensity).
        grid_shape: (Z, Y, X) voxel grid of the preprocessing; Y and X multiples of 8, Z at least 24.
        bn_eps: BatchNorm epsilon.
        bn_momentum: BatchNorm momentum (torch convention).
        kernels: who computes the sparse convolutions (see :class:`~lidarssl.models.backbones.minkunet.MinkUNet`).

    Attributes:
        out_channels: channels of the BEV map and of the point features, 128 x the compressed height.
        bev_shape: (H, W) = (Y / 8, X / 8).
        num_layers: 5; :meth:`layer_id` counts ``conv_input`` as 0 and ``conv_out`` as 5.
    """

    num_layers = 5

    def __init__(
        self, in_channels: int, grid_shape: Sequence[int], bn_eps: float = 1e-3, bn_momentum: float = 0.01,
        kernels: str = "auto",
    ) -> None:
        super().__init__()
        self.kernels = kernels_option(kernels)
        z, y, x = (int(n) for n in grid_shape)
        if y % BEV_STRIDE or x % BEV_STRIDE:
            raise ConfigError(
                f"VoxelNet needs a voxel grid whose y and x sizes are multiples of {BEV_STRIDE} (the BEV stride), "
                f"got (z, y, x) = {(z, y, x)}; adjust the grid range or the voxel size"
            )
        depth = _bev_height(z)
        if depth < 1:
            least = next(n for n in range(1, 1024) if _bev_height(n) >= 1)
            raise ConfigError(f"VoxelNet needs at least {least} voxels in z to reach the BEV map, got {z}")
        self.in_channels = in_channels
        self.spatial_shape = (z + 1, y, x)
        self.bev_shape = (y // BEV_STRIDE, x // BEV_STRIDE)
        self.out_channels = 128 * depth

        def norm(channels: int) -> nn.Module:
            return spnn.BatchNorm(channels, eps=bn_eps, momentum=bn_momentum)

        def block(cin: int, cout: int, conv: nn.Module | None = None) -> nn.Sequential:
            return nn.Sequential(conv or spnn.SubMConv3d(cin, cout, 3), norm(cout), spnn.ReLU())

        def down(cin: int, cout: int, padding: int | tuple[int, int, int], key: str) -> nn.Sequential:
            return block(cin, cout, spnn.Conv3d(cin, cout, 3, stride=2, padding=padding, indice_key=key))

        self.conv_input = block(in_channels, 16)
        self.conv1 = nn.Sequential(block(16, 16))
        self.conv2 = nn.Sequential(down(16, 32, 1, "spconv2"), block(32, 32), block(32, 32))
        self.conv3 = nn.Sequential(down(32, 64, 1, "spconv3"), block(64, 64), block(64, 64))
        self.conv4 = nn.Sequential(down(64, 64, (0, 1, 1), "spconv4"), block(64, 64), block(64, 64))
        self.conv_out = block(64, 128, spnn.Conv3d(64, 128, (3, 1, 1), stride=(2, 1, 1), indice_key="spconv_down2"))
        stages = ("conv_input", "conv1", "conv2", "conv3", "conv4", "conv_out")
        self._layers = [(name, i) for i, name in enumerate(stages)]

    def layer_id(self, param_name: str) -> int:
        """Depth of a parameter for layer-wise learning-rate decay: conv_input 0 ... conv_out 5."""
        return layer_of_prefix(self._layers, param_name, type(self).__name__)

    def forward_sparse(self, batch: Batch) -> SparseTensor:
        """``conv_out``'s sparse output (OpenPCDet's ``encoded_spconv_tensor``, stride (16, 8, 8))."""
        x = sparse_input(batch, self.spatial_shape, self.in_channels, self.kernels)
        for stage in (self.conv_input, self.conv1, self.conv2, self.conv3, self.conv4, self.conv_out):
            x = stage(x)
        return x

    def forward_bev(self, batch: Batch) -> torch.Tensor:
        """The (B, out_channels, H, W) bird's-eye map (OpenPCDet's HeightCompression: channels then z)."""
        dense = self.forward_sparse(batch).dense()
        b, c, d, h, w = dense.shape
        return dense.reshape(b, c * d, h, w)

    def sample_bev(self, bev: torch.Tensor, batch: Batch) -> torch.Tensor:
        """(sum M, C) bilinear samples of a (B, C, H, W) map at the kept points (edges clamped)."""
        # grid_sample with align_corners=False puts -1 and 1 on the outer edges of the border cells,
        # which is this map's geometry: cell j spans [8 j, 8 j + 8) input voxels.
        yx = batch["point_coords"][:, 1:].to(bev.dtype) / BEV_STRIDE
        size = torch.tensor(self.bev_shape, dtype=bev.dtype, device=bev.device)
        grid = (2.0 * yx / size - 1.0).flip(1)  # grid_sample wants (x, y)
        offsets = batch["offsets"].tolist()
        out = []
        for b in range(len(offsets) - 1):
            g = grid[offsets[b] : offsets[b + 1]].view(1, 1, -1, 2)
            s = F.grid_sample(bev[b : b + 1], g, mode="bilinear", padding_mode="border", align_corners=False)
            out.append(s[0, :, 0].t())
        return torch.cat(out)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Per-point features (sum M, out_channels): the BEV map sampled at each kept point."""
        return self.sample_bev(self.forward_bev(batch), batch)


# ---------------------------------------------------------------------------------------------- presets

_OPTIONS = ("bn_eps", "bn_momentum", "kernels")
# OpenPCDet's MeanVFE input: the voxel mean of (x, y, z, intensity).
_FEATURES = {"features": ("x", "y", "z", "intensity"), "voxel_features": "mean"}


def _voxelnet_spec(name: str, prep_defaults: dict[str, object], overrides: dict[str, object]) -> BackboneSpec:
    prep, model_options = split_overrides(name, overrides, _OPTIONS, {**_FEATURES, **prep_defaults})
    model = VoxelNet(prep.in_channels, prep.spatial_shape, **model_options)  # type: ignore[arg-type]
    return BackboneSpec(name=name, model=model, prep=prep, collate=prep.collate)


@register_backbone
def voxelnet(**overrides: object) -> BackboneSpec:
    """SLidR's VoxelNet on nuScenes: 0.1 x 0.1 x 0.2 m voxels over +-51.2 m, z in [-5, 3) (256-d BEV)."""
    grid = {"voxel_size": (0.1, 0.1, 0.2), "range_min": (-51.2, -51.2, -5.0), "range_max": (51.2, 51.2, 3.0)}
    return _voxelnet_spec("voxelnet", grid, overrides)


@register_backbone
def voxelnet_kitti(**overrides: object) -> BackboneSpec:
    """OpenPCDet's KITTI grid: 0.05 x 0.05 x 0.1 m voxels over [0, 70.4] x [-40, 40] x [-3, 1] m (256-d BEV)."""
    grid = {"voxel_size": (0.05, 0.05, 0.1), "range_min": (0.0, -40.0, -3.0), "range_max": (70.4, 40.0, 1.0)}
    return _voxelnet_spec("voxelnet_kitti", grid, overrides)


@register_backbone
def voxelnet_tiny(**overrides: object) -> BackboneSpec:
    """The same network on coarse 0.4 x 0.4 x 0.2 m voxels over +-25.6 m, z in [-3.2, 3.2) (128-d BEV): tests."""
    grid = {"voxel_size": (0.4, 0.4, 0.2), "range_min": (-25.6, -25.6, -3.2), "range_max": (25.6, 25.6, 3.2)}
    return _voxelnet_spec("voxelnet_tiny", grid, overrides)
