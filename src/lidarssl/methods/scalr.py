"""ScaLR: distillation of frozen teacher features (DINOv2) into point features through a head."""

from __future__ import annotations

import torch

from lidarssl.batch import Batch
from lidarssl.data.pairing import PairBuilder
from lidarssl.methods.base import PretrainMethod, point_head, register_method
from lidarssl.methods.config import PretrainConfig
from lidarssl.methods.pair_losses import scalr_loss
from lidarssl.methods.image import class_images, sample_maps, teacher_maps
from lidarssl.methods.teacher_cache import teacher_cache
from lidarssl.schema import Schema

__all__ = ["ScaLR"]


class ScaLROptions(Schema):
    """ScaLR has no options of its own: the head width is the teacher's feature width."""


@register_method
class ScaLR(PretrainMethod):
    """Each paired point's head output is pulled toward the teacher feature at its pixel: mean over pairs
    of ``|| k/|k| - q/|q| ||`` (unsquared). Images are resized whole (``pairing.resize``) and not augmented,
    so the teacher's features can come from a disk cache (``data.teacher_cache``)."""

    name = "scalr"
    Options = ScaLROptions
    needs_teacher = True
    matches_pixels = True  # the teacher's own features

    def __init__(self, backbone, options, optim, teacher=None, loss_scope="process") -> None:
        super().__init__(backbone, options, optim, teacher, loss_scope)
        self.head = point_head(backbone.out_channels, self.teacher.out_channels)

    @classmethod
    def builders(cls, config: PretrainConfig, options: Schema) -> list:
        return [PairBuilder(config.pairing, teacher_cache=teacher_cache(config), classes=class_images(config))]

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        k = self.head(self.backbone(batch)[batch["pair_row"]])
        maps = teacher_maps(self.teacher, batch)
        q = sample_maps(maps, batch["pair_view"], batch["pair_uv"], tuple(batch["images"].shape[1:3]))
        return {"distill": scalr_loss(k, q)}
