"""``lidarssl train | probe | finetune`` recipes: data, backbone, head, optimisation and trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from lidarssl.config import BackboneConfig, RecipeInfo, TrainerConfig
from lidarssl.data.crops import InputCrop
from lidarssl.data.transforms import AugmentConfig
from lidarssl.schema import Schema

__all__ = ["DataConfig", "OptimConfig", "SegmentationConfig"]


class DataConfig(Schema):
    """Where the scans come from."""

    root: Path = Field(Path("data/synthetic"), description="dataset root, recognised by its layout")
    train_split: str = "train"
    val_split: str = "val"
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes per training process")
    options: dict[str, Any] = Field(default_factory=dict, description="reader options, e.g. {sensor: pandargt, "
                                    "z_shift: -1.6} for PandaSet")


class OptimConfig(Schema):
    """The downstream protocol's optimisation: AdamW (ScaLR, ALSO, NCLR) or SGD (SLidR, PPKT, ST-SLidR), linear
    warmup then cosine decay stepped per iteration (ScaLR) or per epoch (the others).

    ``lr`` is the learning rate for ``base_batch`` scans per step; the run scales it linearly with its
    global batch (batch_size x devices x nodes x accumulate), the usual rule for AdamW at these sizes.
    ``head_lr`` (scaled the same way) is the head's own rate (SLidR's ``lr_head``).
    """

    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, description="SGD only")
    dampening: float = Field(0.1, ge=0, description="SGD only")
    lr: float = Field(1e-3, gt=0)
    head_lr: float | None = Field(None, gt=0, description="learning rate of the head; null: lr (SLidR's lr_head)")
    decay_all: bool = Field(False, description="weight decay on every parameter (the originals) or rank >= 2 only")
    schedule: Literal["iteration", "epoch"] = Field("iteration", description="cosine stepped per iteration or "
                                                    "per epoch (SLidR, ALSO)")
    loss: Literal["ce+lovasz", "ce"] = Field("ce+lovasz", description="ce: cross-entropy only (ALSO, NCLR)")
    loss_support: Literal["point", "voxel"] = Field("point", description="voxel: one loss row per voxel, its "
                                                    "representative point's label (SLidR's downstream)")
    base_batch: int = Field(4, gt=0, description="global batch size that lr is meant for")
    weight_decay: float = Field(3e-3, ge=0)
    epochs: int = Field(10, gt=0)
    warmup_epochs: float = Field(1.0, ge=0)
    min_lr: float = Field(1e-5, ge=0)
    layer_decay: float = Field(1.0, gt=0, le=1, description="layer-wise lr decay of a training backbone")
    lovasz_weight: float = Field(1.0, ge=0)


class SegmentationConfig(Schema):
    """``lidarssl train | probe | finetune``: lidar semantic segmentation."""

    recipe: RecipeInfo | None = Field(None, description="what the recipe reproduces (read by `lidarssl recipes`)")
    out: Path = Field(Path("runs/segmentation"), description="run directory")
    seed: int = 0
    pretrained: Path | None = Field(None, description="backbone weights (.safetensors) for probe and finetune")
    augment: AugmentConfig | None = Field(default_factory=AugmentConfig)
    crop: InputCrop | None = Field(None, description="points a training scan keeps (ScaLR: max_points 20000)")
    head: Literal["bn-linear", "linear"] = Field(
        "bn-linear", description="BatchNorm + zero-initialised linear (ScaLR) or a plain 1x1 linear (SLidR's final)")
    data: DataConfig = Field(default_factory=DataConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
