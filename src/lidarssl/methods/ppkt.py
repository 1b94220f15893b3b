"""PPKT: InfoNCE between the features of a point and of the pixel it projects to."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from lidarssl.batch import Batch
from lidarssl.data.pairing import PairBuilder
from lidarssl.methods.base import register_method
from lidarssl.methods.config import PretrainConfig
from lidarssl.methods.pair_losses import gather_across_processes, ppkt_loss
from lidarssl.methods.image import PointPixelMethod, class_images, sample_maps, teacher_maps
from lidarssl.schema import Schema

__all__ = ["PPKT"]


class PPKTOptions(Schema):
    dim: int = Field(64, gt=0, description="embedding width of both heads")
    temperature: float = Field(0.07, gt=0)
    max_pairs: int = Field(4096, gt=1, description="pairs drawn per batch (fewer available: all of them)")


@register_method
class PPKT(PointPixelMethod):
    """Point and pixel embeddings (trainable heads on the student and on the frozen teacher) of random
    point-pixel pairs; each pair's positive is its own pixel, the other sampled pairs are negatives.

    The pixel side follows PPKT (SLidR's ``PPKTFeatureExtractor``): project the teacher map (1x1 convolution),
    upsample, and L2-normalise once; reading the bilinear sample at the pair's pixel is that upsampling, so
    the normalisation comes after it."""

    name = "ppkt"
    Options = PPKTOptions

    @classmethod
    def builders(cls, config: PretrainConfig, options: Schema) -> list:
        return [PairBuilder(config.pairing, classes=class_images(config))]

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        o = self.options
        k = F.normalize(self.head(self.backbone(batch)[batch["pair_row"]]), dim=1)
        maps = self.pixel_head.proj(teacher_maps(self.teacher, batch))
        q = F.normalize(sample_maps(maps, batch["pair_view"], batch["pair_uv"], tuple(batch["images"].shape[1:3])), dim=1)
        if self.loss_scope == "global":
            k, q = gather_across_processes(k, q)
        return {"ppkt": ppkt_loss(k, q, o.max_pairs, o.temperature)}
