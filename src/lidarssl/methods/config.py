"""``lidarssl pretrain`` recipes: data, backbone, teacher, pairing, method, optimiser and trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from lidarssl.config import BackboneConfig, RecipeInfo, TrainerConfig
from lidarssl.data.crops import InputCrop
from lidarssl.data.mixture import MixtureMember
from lidarssl.data.pairing import PairingConfig
from lidarssl.data.transforms import AugmentConfig
from lidarssl.registry import METHODS, TEACHERS
from lidarssl.schema import Schema

__all__ = ["PretrainConfig", "TeacherConfig", "MethodConfig", "PretrainOptimConfig", "PretrainDataConfig"]


class PretrainDataConfig(Schema):
    """The scans to pretrain on (their labels, if any, are never used)."""

    root: Path = Field(Path("data/synthetic"), description="dataset root, recognised by its layout")
    split: str = Field("train", description="split name (named splits such as SLidR's 600 scenes included)")
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes per training process")
    superpixel_cache: Path | None = Field(None, description="folder of `lidarssl prepare superpixels` (else computed on the fly)")
    teacher_cache: Path | None = Field(None, description="folder of `lidarssl prepare teacher-features` (ScaLR)")
    options: dict[str, Any] = Field(default_factory=dict, description="reader options, e.g. {with_images: false} "
                                    "for a method that needs no cameras")
    mixture: list[MixtureMember] | None = Field(
        None, description="several datasets instead of root/split (ScaLR); each member's intensity is z-scored, "
        "so the backbone's own intensity normalisation should be mean 0, std 1")


class TeacherConfig(Schema):
    """A frozen image teacher of the registry (`lidarssl.models.teachers`)."""

    name: Annotated[str, AfterValidator(TEACHERS.check)] = "dinov2_vits14"
    weights: Path | None = Field(None, description="official weights file; null: randomly initialised (tests, demo)")
    image_size: tuple[int, int] | None = Field(None, description="[H, W] the teacher resizes images to")
    options: dict[str, Any] = Field(default_factory=dict)


class MethodConfig(Schema):
    """The pretext method and its own options (checked against the method's schema)."""

    name: Annotated[str, AfterValidator(METHODS.check)] = "scalr"
    options: dict[str, Any] = Field(default_factory=dict)


class PretrainOptimConfig(Schema):
    """SGD (SLidR) or AdamW (ScaLR, ALSO, NCLR) with per-iteration warmup and cosine decay.

    ``lr`` is meant for ``base_batch`` scans per step and is scaled linearly with the global batch.
    """

    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(2e-3, gt=0)
    base_batch: int = Field(8, gt=0)
    weight_decay: float = Field(0.03, ge=0)
    momentum: float = Field(0.9, ge=0, description="SGD only")
    dampening: float = Field(0.1, ge=0, description="SGD only")
    epochs: int = Field(25, gt=0)
    warmup_epochs: float = Field(0.0, ge=0)
    min_lr: float = Field(1e-5, ge=0)
    decay_all: bool = Field(False, description="weight decay on every parameter (every original) or rank >= 2 only")
    schedule: Literal["iteration", "epoch"] = Field("iteration", description="cosine stepped per iteration (ScaLR, "
                                                    "NCLR) or per epoch (SLidR's CosineAnnealingLR)")


class PretrainConfig(Schema):
    """``lidarssl pretrain``: self-supervised pretraining of a backbone."""

    recipe: RecipeInfo | None = Field(None, description="what the recipe reproduces (read by `lidarssl recipes`)")
    out: Path = Field(Path("runs/pretrain"), description="run directory")
    seed: int = 0
    data: PretrainDataConfig = Field(default_factory=PretrainDataConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    teacher: TeacherConfig | None = Field(default_factory=TeacherConfig)
    pairing: PairingConfig = Field(default_factory=PairingConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    crop: InputCrop | None = Field(None, description="points the student sees (ScaLR: one camera's frustum, 20000 points)")
    method: MethodConfig = Field(default_factory=MethodConfig)
    loss_scope: Literal["process", "global"] = Field(
        "process", description="contrastive negatives from this process's batch, or gathered from all processes")
    optim: PretrainOptimConfig = Field(default_factory=PretrainOptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
