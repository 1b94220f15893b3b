"""DINOv2 and DINO vision transformers as teachers, built with timm and loaded from the official files.

The networks are timm's ``VisionTransformer`` (``pretrained=False``: timm never downloads). Features are the
patch tokens of the last block, CLS dropped, before the final LayerNorm (ScaLR's ``x_pre_norm``) or, with
``after_norm=True``, after it (what SLidR's ViT option used).

Position embeddings are resampled the way the official DINO and DINOv2 code does it, not with timm's
default (which antialiases): bicubic, no antialiasing, scale factor ``(n + 0.1) / n_native``. DINOv2 was
trained at 224 px from its 37x37 table that way, so this reproduces the embeddings it saw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F

from lidarssl.errors import CheckpointError
from lidarssl.models.teachers.base import (
    Release,
    Teacher,
    build,
    check_options,
    key_sample,
    register_teacher,
)

__all__ = ["ViTSpec", "ViTTeacher", "convert_dinov2", "interpolate_pos_embed"]

# The official interpolation adds this to the target grid before computing the scale factor (a
# workaround for float rounding kept for compatibility by DINO and DINOv2); we keep it for identical maps.
_POS_OFFSET = 0.1


@dataclass(frozen=True)
class ViTSpec:
    """One ViT teacher variant.

    Attributes:
        timm_name: timm architecture (built with ``pretrained=False``).
        patch_size: pixels per patch side.
        embed_dim: token channels.
        native_grid: patches per side of the stored position-embedding table.
        release: where the official weights file is published.
        family: ``"dinov2"`` or ``"dino"`` (selects the key conversion).
    """

    timm_name: str
    patch_size: int
    embed_dim: int
    native_grid: int
    release: Release
    family: str


def interpolate_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Resample a (1, 1 + n*n, C) position-embedding table with a CLS entry to a ``grid`` of patches.

    Args:
        pos_embed: the stored table, CLS first, then an n x n grid row-major.
        grid: ``(rows, cols)`` of patches of the current input.

    Returns:
        (1, 1 + rows*cols, C) table in ``pos_embed``'s dtype.
    """
    n = math.isqrt(pos_embed.shape[1] - 1)
    if grid == (n, n):
        return pos_embed
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    c = patch_pos.shape[-1]
    table = patch_pos.float().reshape(1, n, n, c).permute(0, 3, 1, 2)
    scale = ((grid[0] + _POS_OFFSET) / n, (grid[1] + _POS_OFFSET) / n)
    table = F.interpolate(table, scale_factor=scale, mode="bicubic", align_corners=False)
    table = table.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], c).to(pos_embed.dtype)
    return torch.cat([cls_pos, table], dim=1)


def convert_dinov2(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official DINOv2 keys to timm's: drop ``mask_token``, rename the SwiGLU ``mlp.w12``/``mlp.w3``.

    ``mask_token`` only serves masked-image modelling in training. The g/14's fused SwiGLU computes
    ``silu(x1) * x2`` with ``x1, x2`` the two halves of ``w12``'s output, which is timm's ``SwiGLUPacked``
    (``GluMlp`` with the gate first) with ``w12 -> fc1`` and ``w3 -> fc2``. Files already in timm's layout
    pass through unchanged.
    """
    out = {}
    for key, value in state.items():
        if key == "mask_token":
            continue
        out[key.replace(".mlp.w12.", ".mlp.fc1.").replace(".mlp.w3.", ".mlp.fc2.")] = value
    return out


class ViTTeacher(Teacher):
    """A DINOv2 or DINO ViT teacher: patch-token feature maps at stride ``patch_size``.

    Args:
        name: registry name.
        spec: the variant.
        after_norm: take the tokens after the final LayerNorm instead of before it.
        image_size: ``(H, W)`` to resize inputs to (rounded to multiples of the patch size), or ``None``.
        upsample: resize the features to the input's ``(H, W)``.
        align_corners: ``align_corners`` of that upsampling.
    """

    def __init__(
        self,
        name: str,
        spec: ViTSpec,
        after_norm: bool = False,
        image_size: tuple[int, int] | None = None,
        upsample: bool = False,
        align_corners: bool = False,
    ) -> None:
        super().__init__(name, image_size=image_size, upsample=upsample, align_corners=align_corners)
        self.spec = spec
        self.after_norm = after_norm
        self.out_channels = spec.embed_dim
        self.stride = self.size_multiple = spec.patch_size
        # dynamic_img_size makes the patch embedding accept any size and return (B, h, w, C);
        # the position embedding is added here, not by timm (see the module docstring).
        self.encoder = timm.create_model(
            spec.timm_name, pretrained=False, num_classes=0,
            img_size=spec.native_grid * spec.patch_size, dynamic_img_size=True,
        )  # fmt: skip

    def feature_size(self, height: int, width: int) -> tuple[int, int]:
        h, w = self.network_size(height, width)
        return h // self.stride, w // self.stride

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        vit = self.encoder
        patches = vit.patch_embed(x)
        b, h, w, c = patches.shape
        tokens = torch.cat([vit.cls_token.expand(b, -1, -1), patches.flatten(1, 2)], dim=1)
        tokens = vit.norm_pre(tokens + interpolate_pos_embed(vit.pos_embed, (h, w)))
        tokens = vit.blocks(tokens)  # dropout, drop-path and patch-drop are identities in eval mode
        if self.after_norm:
            tokens = vit.norm(tokens)
        return tokens[:, 1:].transpose(1, 2).reshape(b, c, h, w)

    def releases(self) -> list[Release]:
        return [self.spec.release]

    def convert(self, checkpoint: Mapping[str, Any], source: str) -> dict[str, torch.Tensor]:
        if "pos_embed" not in checkpoint or "cls_token" not in checkpoint:
            raise CheckpointError(
                f"{source}: not a {self.spec.family.upper()} ViT backbone file (no pos_embed/cls_token; keys: "
                f"{key_sample(checkpoint)}); teacher '{self.name}' expects {self.spec.release.describe()}"
            )
        if self.spec.family == "dinov2":
            return convert_dinov2(checkpoint)
        return dict(checkpoint)  # DINO's files already use timm's plain ViT names


def _dinov2_release(arch: str) -> Release:
    filename = f"dinov2_{arch}_pretrain.pth"
    url = f"https://dl.fbaipublicfiles.com/dinov2/dinov2_{arch}/{filename}"
    return Release(filename, url, "facebookresearch/dinov2")


def _dino_release(stem: str) -> Release:
    filename = f"dino_{stem}_pretrain.pth"
    url = f"https://dl.fbaipublicfiles.com/dino/dino_{stem}_pretrain/{filename}"
    return Release(filename, url, "facebookresearch/dino")


def _build(name: str, spec: ViTSpec, weights: str | Path | None, options: dict[str, Any]) -> ViTTeacher:
    check_options(ViTTeacher, name, options)
    return build(ViTTeacher(name, spec, **options), weights)  # type: ignore[return-value]


@register_teacher
def dinov2_vits14(weights: str | Path | None = None, **options: Any) -> ViTTeacher:
    """DINOv2 ViT-S/14 (384-d, 12 blocks, LayerScale), 37x37 position table (518 px)."""
    spec = ViTSpec("vit_small_patch14_dinov2", 14, 384, 37, _dinov2_release("vits14"), "dinov2")
    return _build("dinov2_vits14", spec, weights, options)


@register_teacher
def dinov2_vitb14(weights: str | Path | None = None, **options: Any) -> ViTTeacher:
    """DINOv2 ViT-B/14 (768-d, 12 blocks, LayerScale), 37x37 position table (518 px)."""
    spec = ViTSpec("vit_base_patch14_dinov2", 14, 768, 37, _dinov2_release("vitb14"), "dinov2")
    return _build("dinov2_vitb14", spec, weights, options)


@register_teacher
def dinov2_vitl14(weights: str | Path | None = None, **options: Any) -> ViTTeacher:
    """DINOv2 ViT-L/14 (1024-d, 24 blocks, LayerScale), 37x37 position table: ScaLR's teacher."""
    spec = ViTSpec("vit_large_patch14_dinov2", 14, 1024, 37, _dinov2_release("vitl14"), "dinov2")
    return _build("dinov2_vitl14", spec, weights, options)


@register_teacher
def dinov2_vitg14(weights: str | Path | None = None, **options: Any) -> ViTTeacher:
    """DINOv2 ViT-g/14 (1536-d, 40 blocks, SwiGLU MLP, LayerScale), 37x37 position table; 1.1B parameters."""
    spec = ViTSpec("vit_giant_patch14_dinov2", 14, 1536, 37, _dinov2_release("vitg14"), "dinov2")
    return _build("dinov2_vitg14", spec, weights, options)


@register_teacher
def dino_vits16(weights: str | Path | None = None, **options: Any) -> ViTTeacher:
    """DINO ViT-S/16 (384-d, 12 blocks), 14x14 position table (224 px)."""
    spec = ViTSpec("vit_small_patch16_224", 16, 384, 14, _dino_release("deitsmall16"), "dino")
    return _build("dino_vits16", spec, weights, options)


@register_teacher
def dino_vits8(weights: str | Path | None = None, **options: Any) -> ViTTeacher:
    """DINO ViT-S/8 (384-d, 12 blocks), 28x28 position table (224 px)."""
    spec = ViTSpec("vit_small_patch8_224", 8, 384, 28, _dino_release("deitsmall8"), "dino")
    return _build("dino_vits8", spec, weights, options)


@register_teacher
def dino_vitb16(weights: str | Path | None = None, **options: Any) -> ViTTeacher:
    """DINO ViT-B/16 (768-d, 12 blocks), 14x14 position table (224 px)."""
    spec = ViTSpec("vit_base_patch16_224", 16, 768, 14, _dino_release("vitbase16"), "dino")
    return _build("dino_vitb16", spec, weights, options)


@register_teacher
def dino_vitb8(weights: str | Path | None = None, **options: Any) -> ViTTeacher:
    """DINO ViT-B/8 (768-d, 12 blocks), 28x28 position table (224 px)."""
    spec = ViTSpec("vit_base_patch8_224", 8, 768, 28, _dino_release("vitbase8"), "dino")
    return _build("dino_vitb8", spec, weights, options)
