"""ScaLR: distillation of frozen teacher features (DINOv2) into point features through a head."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from lidarssl.batch import Batch
from lidarssl.data.pairing import PairBuilder
from lidarssl.errors import ConfigError
from lidarssl.methods.base import PretrainMethod, point_head, register_method
from lidarssl.methods.config import PretrainConfig
from lidarssl.methods.pair_losses import scalr_loss
from lidarssl.methods.image import class_images, sample_maps, teacher_maps
from lidarssl.methods.teacher_cache import teacher_cache
from lidarssl.schema import Schema

__all__ = ["ScaLR"]


class ScaLROptions(Schema):
    """The head's output width is the teacher's feature width. Both options are off in ScaLR's recipe."""

    head_hidden: int = Field(0, ge=0, description="hidden width of an MLP distillation head, Linear-ReLU-Linear "
                                                  "(ScaLR's later scalr_plus configuration: 2048); 0: one Linear")
    center_targets: bool = Field(False, description="subtract the teacher cache's mean feature from the targets "
                                                    "(not in ScaLR; needs data.teacher_cache)")


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
        c_in, c_out, hidden = backbone.out_channels, self.teacher.out_channels, options.head_hidden
        self.head = (nn.Sequential(nn.Linear(c_in, hidden), nn.ReLU(), nn.Linear(hidden, c_out)) if hidden
                     else point_head(c_in, c_out))

    @classmethod
    def builders(cls, config: PretrainConfig, options: Schema) -> list:
        if options.center_targets and config.data.teacher_cache is None:
            raise ConfigError("method.options.center_targets needs data.teacher_cache (the mean of the cached "
                              "teacher features); set it, or center_targets: false")
        cache = teacher_cache(config, center=options.center_targets)
        return [PairBuilder(config.pairing, teacher_cache=cache, classes=class_images(config))]

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        k = self.head(self.backbone(batch)[batch["pair_row"]])
        maps = teacher_maps(self.teacher, batch)
        q = sample_maps(maps, batch["pair_view"], batch["pair_uv"], tuple(batch["images"].shape[1:3]))
        return {"distill": scalr_loss(k, q)}
