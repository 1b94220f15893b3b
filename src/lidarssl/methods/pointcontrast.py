"""PointContrast: PointInfoNCE between matched points of two views of a scene (Xie et al., ECCV 2020).

After facebookresearch/PointContrast (``pretrain/pointcontrast/lib/ddp_trainer.py``, ``PointNCELossTrainer``;
``lib/ddp_data_loaders.py``; ``config/defaults.yaml``; ``scripts/ddp_local.sh``):

* two views of one scene, each augmented on its own; a point of view 1 matches the points of view 2 within
  1.5 voxels (``positive_pair_search_voxel_size_multiplier``) once both are registered;
* for every matched point of view 1 one of its matches is drawn, then ``npos`` (4096) of those pairs of the
  batch without replacement (all of them when there are fewer);
* features: the network's last 1x1 convolution to ``model_n_out`` channels (32), L2-normalised
  (``normalize_feature``); here a linear head on the backbone's features, dropped after pretraining;
* loss: cross-entropy of ``q k^T / T`` with the diagonal as target (``NCESoftmaxLoss``), ``q`` from view 1 and
  ``k`` from view 2, the other sampled pairs as negatives; ``T`` = ``nceT`` (0.4 in the released launch scripts,
  0.07 in ``defaults.yaml``).

The original pairs two depth frames of a ScanNet sequence; here the views are two augmentations of one lidar scan
(the registration is exact) or, with ``sequence_offset``, two scans of a sequence registered by their ego poses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from lidarssl.batch import Batch
from lidarssl.data.datasets import open_dataset
from lidarssl.errors import ConfigError
from lidarssl.methods.base import PretrainMethod, point_head, register_method
from lidarssl.methods.config import PretrainConfig
from lidarssl.methods.pair_losses import gather_across_processes, info_nce, sample_pairs
from lidarssl.methods.views import SecondViewBuilder, check_poses
from lidarssl.schema import Schema

__all__ = ["PointContrast", "PointContrastOptions", "match_accuracy", "point_info_nce"]


class PointContrastOptions(Schema):
    dim: int = Field(32, gt=0, description="width of the L2-normalised point embedding (model_n_out)")
    temperature: float = Field(0.4, gt=0, description="nceT (released launch scripts: 0.4)")
    npos: int = Field(4096, gt=1, description="matched pairs drawn per batch (fewer matched: all of them)")
    match_radius: float = Field(0.15, gt=0, description="metres; PointContrast: 1.5 x the voxel size")
    require_positives: bool = Field(
        True, description="a scan matching fewer points than npos / batch_size is an error (false: use what it "
        "finds, as the original)")
    sequence_offset: int = Field(0, ge=0, description="0: two augmentations of one scan; k: the scan k frames away "
                                 "in the split, registered by the ego poses (PointContrast's frame pairs)")
    max_gap: float = Field(1.0, gt=0, description="seconds: a sequence partner further away in time is another "
                           "sequence (the scan itself is used instead)")


def point_info_nce(q: torch.Tensor, k: torch.Tensor, npos: int, temperature: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """PointInfoNCE of matched, L2-normalised features: ``npos`` pairs drawn without replacement (all when there
    are fewer), then :func:`~lidarssl.methods.pair_losses.info_nce` of ``q`` against ``k``."""
    index = sample_pairs(q.shape[0], npos, generator).to(q.device)
    return info_nce(q[index], k[index], temperature)


@torch.no_grad()
def match_accuracy(q: torch.Tensor, k: torch.Tensor) -> float:
    """Share of rows ``i`` whose most similar row of ``k`` is ``k[i]`` (chance: ``1 / len(k)``)."""
    if len(q) == 0:
        return float("nan")
    return float(((q.float() @ k.float().T).argmax(1) == torch.arange(len(q), device=q.device)).float().mean())


@register_method
class PointContrast(PretrainMethod):
    """PointInfoNCE between the embeddings of matched points of two views: each point's positive is its match,
    the other sampled matches are its negatives. Needs no camera."""

    name = "pointcontrast"
    Options = PointContrastOptions

    def __init__(self, backbone, options, optim, teacher=None, loss_scope="process") -> None:
        super().__init__(backbone, options, optim, teacher, loss_scope)
        self.head = point_head(backbone.out_channels, options.dim)

    @classmethod
    def builders(cls, config: PretrainConfig, options: Schema) -> list:
        o = options
        dataset = None
        if o.sequence_offset:
            if config.data.mixture:
                raise ConfigError("method.options.sequence_offset needs one dataset, not data.mixture; set "
                                  "method.options.sequence_offset: 0")
            dataset = open_dataset(config.data.root, split=config.data.split, **config.data.options)
            check_poses(dataset, o.sequence_offset)
        batch = config.trainer.batch_size
        per_scan = math.ceil(o.npos / batch) if o.require_positives else 0
        augment = config.augment.point_augment() if config.augment is not None else None
        return [SecondViewBuilder(augment, config.crop, match_radius=o.match_radius, min_matches=per_scan,
                                  batch_size=batch, sequence_offset=o.sequence_offset, max_gap=o.max_gap,
                                  dataset=dataset)]

    def embed(self, batch: Batch) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(batch)), dim=1)

    def pairs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings (q, k) of the matched rows of the two views; the backbone runs once per view, as the
        original's two forward passes."""
        q = self.embed(batch)[batch["match_row"]]
        k = self.embed(batch["view2"])[batch["match_row2"]]
        return q, k

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        q, k = self.pairs(batch)
        if self.loss_scope == "global":
            q, k = gather_across_processes(q, k)
        return {"pointcontrast": point_info_nce(q, k, self.options.npos, self.options.temperature)}
