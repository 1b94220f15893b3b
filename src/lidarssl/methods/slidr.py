"""SLidR and ST-SLidR: contrastive distillation between superpixel-pooled point and pixel features."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from lidarssl.batch import Batch
from lidarssl.data.pairing import PairBuilder
from lidarssl.data.scan import Scan
from lidarssl.data.superpixels import (
    SuperpixelCache,
    compute_superpixels,
    superpixel_preset,
)
from lidarssl.errors import ConfigError, DataError
from lidarssl.methods.base import register_method
from lidarssl.methods.config import PretrainConfig
from lidarssl.methods.pair_losses import (
    gather_across_processes,
    info_nce,
    slidr_loss,
    stslidr_loss,
    superpixel_pool,
)
from lidarssl.methods.image import PointPixelMethod, class_images, teacher_maps
from lidarssl.schema import Schema

__all__ = ["SLidR", "STSLidR", "SuperpixelSource"]


class SuperpixelSource:
    """Superpixels of a scan's camera images: read from the cache of `lidarssl prepare superpixels`, or
    computed on the spot when there is no cache folder (slow on full-size images; fine for small ones).

    Computed maps are kept in memory, per process, up to ``memory_bytes`` (least recently used first out):
    SLIC depends only on the image, so from the second epoch on a DataLoader worker with persistent workers
    reads them instead of running SLIC again (at the demo size SLIC is most of SLidR's batch building)."""

    def __init__(self, preset: str, cache_dir: Path | None, memory_bytes: int = 256 * 2**20) -> None:
        self.params = superpixel_preset(preset)
        self.cache = SuperpixelCache(cache_dir, self.params) if cache_dir is not None else None
        self.memory_bytes = memory_bytes
        self._computed: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._bytes = 0

    def get(self, scan: Scan, camera: int) -> np.ndarray:
        cam = scan.cameras[camera]
        if self.cache is not None:
            ids = self.cache.load(scan.cache_key, cam.name)
            if ids is None:
                raise DataError(f"{self.cache.path(scan.cache_key, cam.name)}: superpixels not cached; run "
                                        "`lidarssl prepare superpixels` for this dataset and preset first")
            return ids
        if not scan.frame_id:  # no stable name to remember the image by
            return compute_superpixels(cam.image, self.params, source=cam.source)
        key = (scan.cache_key, cam.name)
        if key in self._computed:
            self._computed.move_to_end(key)
            return self._computed[key]
        ids = compute_superpixels(cam.image, self.params, source=cam.source)
        ids.flags.writeable = False  # shared by every later sample of this image
        self._computed[key] = ids
        self._bytes += ids.nbytes
        while self._bytes > self.memory_bytes:
            self._bytes -= self._computed.popitem(last=False)[1].nbytes
        return ids


class SLidROptions(Schema):
    dim: int = Field(64, gt=0, description="embedding width of both heads")
    temperature: float = Field(0.07, gt=0)
    superpixels: str = Field("slic150_fast", description="superpixel preset (slic150, slic30, *_fast)")
    renormalize: bool = Field(False, description="L2-normalise superpixel averages (SLidR does not)")


def _segments(batch: Batch) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Batch-wide superpixel ids of the pairs and of all pixels, the id count, and the per-view offset.

    The offset is the largest id of the batch + 1, so ids of different views can never collide."""
    sp = batch["superpixels"].long()
    offset = int(sp.max()) + 1
    rc = batch["pair_uv"].floor().long()
    view = batch["pair_view"]
    point_segment = sp[view, rc[:, 1], rc[:, 0]] + view * offset
    pixel_segment = (sp + torch.arange(len(sp), device=sp.device).view(-1, 1, 1) * offset).reshape(-1)
    return point_segment, pixel_segment, offset, len(sp) * offset


@register_method
class SLidR(PointPixelMethod):
    """Point embeddings averaged over the pairs falling in each superpixel are matched, by InfoNCE, to the
    pixel embeddings averaged over the same superpixel; the other superpixels of the batch are negatives."""

    name = "slidr"
    Options = SLidROptions

    @classmethod
    def builders(cls, config: PretrainConfig, options: Schema) -> list:
        return [PairBuilder(config.pairing, superpixels=SuperpixelSource(options.superpixels, config.data.superpixel_cache),
                            classes=class_images(config))]

    def _embeddings(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k = F.normalize(self.head(self.backbone(batch)[batch["pair_row"]]), dim=1)
        raw = teacher_maps(self.teacher, batch)
        q = self.pixel_head(raw, tuple(batch["images"].shape[1:3]))
        return k, q.permute(0, 2, 3, 1).reshape(-1, q.shape[1]), raw

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        o = self.options
        k, q, _ = self._embeddings(batch)
        point_segment, pixel_segment, _, count = _segments(batch)
        if self.loss_scope == "global":  # pool per process, then contrast against every process's superpixels
            k_s, k_count = superpixel_pool(k, point_segment, count, o.renormalize)
            q_s, q_count = superpixel_pool(q, pixel_segment, count, o.renormalize)
            keep = (k_count > 0) & (q_count > 0)
            return {"slidr": info_nce(*gather_across_processes(k_s[keep], q_s[keep]), o.temperature)}
        return {"slidr": slidr_loss(k, point_segment, q, pixel_segment, count, o.temperature, o.renormalize)}


class STSLidROptions(SLidROptions):
    min_quantile: float = Field(0.01, ge=0, lt=1, description="share of most teacher-similar negatives removed")
    class_balance: bool = Field(True, description="weight anchors by 1 - normalised self-similarity votes")
    balance_threshold: float = Field(0.5, description="similarity above which a superpixel votes")
    original: bool = Field(False, description="the released code's masking (logits x W) instead of the fixed one")


@register_method
class STSLidR(SLidR):
    """SLidR with semantically tolerant negatives: superpixels the frozen teacher finds most similar to
    the anchor are removed from its denominator, and anchors are class-balanced."""

    name = "stslidr"
    Options = STSLidROptions

    def __init__(self, backbone, options, optim, teacher=None, loss_scope="process") -> None:
        if loss_scope == "global":
            raise ConfigError("stslidr: loss_scope 'global' is not supported (teacher similarities are per process)")
        super().__init__(backbone, options, optim, teacher, loss_scope)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        o = self.options
        k, q, raw = self._embeddings(batch)
        point_segment, pixel_segment, offset, count = _segments(batch)
        # teacher superpixel features: the superpixel map resized (nearest) to the feature resolution
        sp_small = F.interpolate(batch["superpixels"][:, None].float(), size=raw.shape[-2:], mode="nearest")[:, 0].long()
        teacher_segment = (sp_small + torch.arange(len(sp_small), device=raw.device).view(-1, 1, 1) * offset).reshape(-1)
        teacher_feats = raw.permute(0, 2, 3, 1).reshape(-1, raw.shape[1])
        loss = stslidr_loss(k, point_segment, q, pixel_segment, teacher_feats, teacher_segment, count,
                            o.temperature, o.min_quantile, o.class_balance, o.balance_threshold, o.original, o.renormalize)
        return {"stslidr": loss}
