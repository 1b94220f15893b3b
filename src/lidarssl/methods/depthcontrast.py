"""DepthContrast: instance discrimination of scans with a momentum encoder and a queue (Zhang et al., ICCV 2021).

After facebookresearch/DepthContrast (``models/base_ssl3d_model.py``, ``criterions/nce_loss_moco.py``,
``models/trunks/*``, ``configs/point_within_lidar_template.yaml``):

* two views of a scan, each cropped to a random vertical box (``randomcuboidLidar``: ``crop.cuboid`` here) and
  augmented on its own; the query encoder embeds view 1, a key encoder embeds view 2;
* embedding: the trunk's per-point features max-pooled over the scan, then an MLP head (lidar trunks:
  ``Linear - ReLU - Linear``, ``mlp_dim [128, 128, 128]``; the Res16UNet trunk's ``SMLP`` has no ReLU), then
  L2-normalised (``NORM_EMBEDDING``);
* the key encoder is a copy of the query encoder (backbone and head) updated before each key forward as
  ``k = 0.999 k + 0.001 q`` and never by gradients;
* loss (``NCELossMoco``, ``LOSS_TYPE: NPID`` within one format): cross-entropy over ``[q . k, q . queue] / T``
  with the key as target, ``T = 0.1``; then the batch's keys (gathered over processes) replace the oldest of the
  ``NUM_NEGATIVES`` (65536) queued keys, which start as random unit vectors.

Not reproduced: the cross-format terms (a PointNet++ and a voxel U-Net trained together, each view seen by both
formats): every backbone here is one format with its own preprocessing, and a second family would need a second
preprocessing of both views in the pipeline; and the key encoder's batch shuffle across GPUs (shuffle BN, used by
the original only with several processes and point inputs).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from lidarssl.batch import Batch
from lidarssl.errors import ConfigError
from lidarssl.methods.base import PretrainMethod, register_method
from lidarssl.methods.config import PretrainConfig
from lidarssl.methods.pair_losses import _compute_dtype, _full_precision, gather_across_processes
from lidarssl.methods.views import SecondViewBuilder
from lidarssl.schema import Schema

__all__ = ["DepthContrast", "DepthContrastOptions", "check_queue", "moco_info_nce", "scan_max_pool"]


class DepthContrastOptions(Schema):
    dim: int = Field(128, gt=0, description="embedding width (EMBEDDING_DIM)")
    hidden: int = Field(128, gt=0, description="hidden width of the MLP head (mlp_dim[1])")
    head_relu: bool = Field(True, description="ReLU between the head's two linear layers (lidar trunks' MLP); "
                            "false: the Res16UNet trunk's SMLP, two linear layers")
    queue: int = Field(65536, gt=0, description="queued keys, the negatives (NUM_NEGATIVES)")
    temperature: float = Field(0.1, gt=0)
    momentum: float = Field(0.999, ge=0, lt=1, description="key encoder: k = m k + (1 - m) q")


def scan_max_pool(features: torch.Tensor, batch_index: torch.Tensor, num_scans: int) -> torch.Tensor:
    """(B, C) channel-wise maximum of each scan's rows (the trunks' global max pooling); 0 for a scan without rows."""
    out = features.new_full((num_scans, features.shape[1]), float("-inf"))
    out = out.scatter_reduce(0, batch_index.long()[:, None].expand_as(features), features, "amax", include_self=True)
    return torch.where(torch.isfinite(out), out, torch.zeros_like(out))


def moco_info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """``NCELossMoco``'s within-format term: cross-entropy of ``[q_i . k_i, q_i . queue] / T`` with target 0.

    Args:
        q: (B, D) L2-normalised query embeddings (with gradient).
        k: (B, D) L2-normalised key embeddings of the same scans (no gradient flows into them).
        queue: (D, K) L2-normalised keys of earlier batches, the negatives.
    """
    dtype = _compute_dtype(q, k, queue)
    with _full_precision(q.device):
        q, k, queue = q.to(dtype), k.detach().to(dtype), queue.detach().to(dtype)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def check_queue(queue: int, num_scans: int) -> None:
    """A queue longer than one epoch of keys holds keys of the same scans twice (false negatives)."""
    if queue > num_scans:
        raise ConfigError(f"method.options.queue={queue} is longer than the {num_scans} scans of the dataset (keys "
                          f"of one scan would be its own negatives); set method.options.queue to at most {num_scans}")


class EmbeddingHead(nn.Module):
    """Max pooling over each scan's points, then the MLP head."""

    def __init__(self, in_channels: int, hidden: int, dim: int, relu: bool) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_channels, hidden), nn.ReLU(inplace=True) if relu else nn.Identity(),
                                 nn.Linear(hidden, dim))

    def forward(self, features: torch.Tensor, batch: Batch) -> torch.Tensor:
        pooled = scan_max_pool(features, batch["batch_index"], int(batch["offsets"].shape[0] - 1))
        return F.normalize(self.mlp(pooled), dim=1)


@register_method
class DepthContrast(PretrainMethod):
    """Scan-level contrast: a view's embedding must pick the momentum encoder's embedding of the other view of
    the same scan among the queued keys of other scans. Needs no camera."""

    name = "depthcontrast"
    Options = DepthContrastOptions

    def __init__(self, backbone, options, optim, teacher=None, loss_scope="process") -> None:
        super().__init__(backbone, options, optim, teacher, loss_scope)
        o = options
        self.head = EmbeddingHead(backbone.out_channels, o.hidden, o.dim, o.head_relu)
        self.key_backbone = copy.deepcopy(backbone).requires_grad_(False)
        self.key_head = copy.deepcopy(self.head).requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(o.dim, o.queue), dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @classmethod
    def builders(cls, config: PretrainConfig, options: Schema) -> list:
        augment = config.augment.point_augment() if config.augment is not None else None
        return [SecondViewBuilder(augment, config.crop)]

    def on_fit_start(self) -> None:
        data = getattr(self.trainer, "datamodule", None)
        if data is not None and hasattr(data, "train"):
            check_queue(self.options.queue, len(data.train))

    @torch.no_grad()
    def momentum_update(self) -> None:
        m = self.options.momentum
        for q, k in ((self.backbone, self.key_backbone), (self.head, self.key_head)):
            for pq, pk in zip(q.parameters(), k.parameters()):
                pk.mul_(m).add_(pq.detach(), alpha=1.0 - m)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest queued keys by ``keys`` (wrapping around, so any batch size works)."""
        K = self.queue.shape[1]
        keys = keys[-K:]
        index = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % K
        self.queue[:, index] = keys.T.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % K)

    def embeddings(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(q, k): the query embedding of view 1 and the key embedding of view 2 of every scan."""
        q = self.head(self.backbone(batch), batch)
        self.momentum_update()
        view2 = batch["view2"]
        with torch.no_grad():
            k = self.key_head(self.key_backbone(view2), view2)
        return q, k

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        q, k = self.embeddings(batch)
        loss = moco_info_nce(q, k, self.queue.clone(), self.options.temperature)  # the queue changes below
        if self.training:
            (keys,) = gather_across_processes(k)
            self.enqueue(keys)
        return {"depthcontrast": loss}
