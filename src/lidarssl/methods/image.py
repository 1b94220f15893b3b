"""What the image-to-lidar methods share: teacher features at the paired pixels, and a trainable pixel head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lidarssl.batch import Batch
from lidarssl.data.pairing import ClassImageSource
from lidarssl.errors import ConfigError
from lidarssl.methods.base import PretrainMethod, point_head
from lidarssl.models.teachers.base import Teacher

__all__ = ["sample_maps", "PixelHead", "teacher_maps", "class_images", "PointPixelMethod"]


def sample_maps(maps: torch.Tensor, view: torch.Tensor, uv: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear samples (P, C) of per-view feature maps at continuous pixel positions.

    A map (C, h, w) covers its image (H, W) edge to edge, so pixel position ``u`` sits at ``u * w / W`` in
    map units (cell centres at +0.5): the same as upsampling the map to the image and reading the pixel.

    Args:
        maps: (V, C, h, w) features of the views of a batch.
        view: (P,) view of each pair.
        uv: (P, 2) continuous pixel coordinates (u = column, v = row) in images of size ``image_hw``.
        image_hw: (H, W) of the images the pairs refer to.
    """
    H, W = image_hw
    grid = torch.stack([2 * uv[:, 0] / W - 1, 2 * uv[:, 1] / H - 1], dim=1).to(maps.dtype)
    out = maps.new_empty(len(view), maps.shape[1])
    for v in torch.unique(view).tolist():
        rows = torch.nonzero(view == v).squeeze(1)
        g = grid[rows].view(1, 1, -1, 2)
        sampled = F.grid_sample(maps[v : v + 1], g, mode="bilinear", padding_mode="border", align_corners=False)
        out[rows] = sampled[0, :, 0].T.to(out.dtype)  # grid_sample runs in float32 under autocast
    return out


def teacher_maps(teacher: Teacher, batch: Batch) -> torch.Tensor:
    """The frozen teacher's features (V, C, h, w) of the batch's images: from the feature cache when the
    batch carries them, else computed now (without gradients)."""
    if "teacher_maps" in batch:
        return batch["teacher_maps"].float()
    if "pixel_classes" in batch:  # the oracle teacher of the known-answer tests
        return teacher.embed(batch["pixel_classes"])
    return teacher(batch["images"].permute(0, 3, 1, 2))


def class_images(config) -> ClassImageSource | None:
    """The class-image source of the oracle teacher when the recipe asks for it (``teacher.name: oracle``)."""
    if config.teacher is None or config.teacher.name != "oracle":
        return None
    if config.data.teacher_cache is not None:
        raise ConfigError("teacher 'oracle' computes its features from class images during training: "
                          "remove data.teacher_cache")
    return ClassImageSource()


class PixelHead(nn.Module):
    """SLidR's trainable 2D head: a 1x1 convolution of frozen teacher features to the embedding width,
    bilinear upsampling to the image size, and L2 normalisation per pixel, in that order. A method that reads
    a few pixels only (PPKT) samples ``proj``'s output at them and normalises the samples: the same values."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, features: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        x = F.interpolate(self.proj(features), size=image_hw, mode="bilinear", align_corners=False)
        return F.normalize(x, dim=1)


class PointPixelMethod(PretrainMethod):
    """Base of the contrastive image methods (PPKT, SLidR, ST-SLidR): a point head on the student and a
    pixel head on the frozen teacher, both of width ``options.dim``."""

    needs_teacher = True
    matches_pixels = True

    def __init__(self, backbone, options, optim, teacher=None, loss_scope="process") -> None:
        super().__init__(backbone, options, optim, teacher, loss_scope)
        self.head = point_head(backbone.out_channels, options.dim)
        self.pixel_head = PixelHead(self.teacher.out_channels, options.dim)

    def pixel_embedding(self, maps: torch.Tensor) -> torch.Tensor:
        return self.pixel_head.proj(maps)
