"""``lidarssl evaluate RELEASE``: score an imported linear-probing or finetuning release without training.

The release folder (written by ``lidarssl import``) gives the backbone, its segmentation head and its
origin; the origin gives the preprocessing the model was trained and scored with (grid, field of view,
intensity normalisation, voxel subsampling, reader options such as PandaSet's sensor and frame shift, see
:mod:`lidarssl.zoo.origins`). Scoring is the segmentation engine's validation pass: every original point
of the split is scored, points the preprocessing dropped taking the prediction of their nearest kept point,
as ScaLR and WaffleIron do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from torch import nn

from lidarssl.checkpoints import load_state_dict_strict, load_weights
from lidarssl.config import TrainerConfig, load_config
from lidarssl.data.datasets import detect_format, open_dataset
from lidarssl.data.loader import LabelBuilder, ScanSamples, build_loader
from lidarssl.downstream.config import DataConfig
from lidarssl.downstream.segmentation import SegmentationModule
from lidarssl.errors import ConfigError, DataError
from lidarssl.io import atomic_write
from lidarssl.metrics import format_iou_table, iou_per_class, miou
from lidarssl.models.backbones import create_backbone
from lidarssl.models.backbones.waffleiron_prep import WaffleIronPrep
from lidarssl.runs import build_trainer
from lidarssl.schema import Schema
from lidarssl.zoo.origins import ORIGINS, Origin, SeedVoxelPrep
from lidarssl.zoo.release import BACKBONE_FILE, HEAD_FILE, read_release

__all__ = ["ReleaseEvaluation", "ReleaseScore", "evaluate_release"]


class ReleaseEvaluation(Schema):
    """``lidarssl evaluate RELEASE key=value ...``: where to score an imported release.

    ``data.root`` is the dataset; ``data.val_split`` the split scored (the origin's validation split by default).
    """

    out: Path | None = Field(None, description="where the scores go (default: RELEASE/eval-<split>)")
    origin: str | None = Field(None, description="the release's origin, when import could not tell it")
    data: DataConfig = Field(default_factory=lambda: DataConfig(root=Path("DATASET"), num_workers=2))
    trainer: TrainerConfig = Field(default_factory=lambda: TrainerConfig(batch_size=2))


@dataclass
class ReleaseScore:
    """Scores of a release (percent) and where they were written."""

    out: Path
    miou: float
    iou: dict[str, float]
    table: str
    confusion: np.ndarray
    origin: str
    published: dict[str, float]


def _origin(info: dict[str, Any], override: str | None, folder: Path) -> Origin:
    name = override or (info.get("origin") or {}).get("name")
    if name is None:
        raise ConfigError(f"{folder}: the release's origin is unknown, so is its preprocessing; pass origin=NAME "
                          f"(one of {', '.join(ORIGINS)})")  # fmt: skip
    if name not in ORIGINS:
        raise ConfigError(f"unknown origin '{name}'; known: {', '.join(ORIGINS)}")
    return ORIGINS[name]


def _head(folder: Path, module: SegmentationModule, info: dict[str, Any]) -> None:
    """Load the release's segmentation head into the module's (BatchNorm + linear; no norm: identity)."""
    tensors, _ = load_weights(folder / HEAD_FILE)
    head = {k.removeprefix("head."): v for k, v in tensors.items() if k.startswith("head.")}
    if not info["heads"]["head"].get("norm"):
        module.head[0] = nn.Identity()  # WaffleIron's own head is a bare Conv1d
    load_state_dict_strict(module.head, head, str(folder / HEAD_FILE))


def evaluate_release(folder: str | Path, overrides: list[str] | dict[str, Any] | None = None) -> ReleaseScore:
    """Score the segmentation release in ``folder`` on ``data.root`` with its origin's preprocessing.

    Raises:
        ConfigError: no segmentation head, unknown origin, bad overrides.
        DataError: a dataset whose classes are not the head's, or of another format than the origin's.
        CheckpointError: damaged release files.
    """
    folder = Path(folder)
    info = read_release(folder)
    config = load_config(ReleaseEvaluation, None, overrides)
    head = (info.get("heads") or {}).get("head")
    if head is None or head.get("kind") != "segmentation":
        what = f"a {head['kind']} head" if head else "no head"
        raise ConfigError(f"{folder}: the release has {what}, not a segmentation head; evaluate scores linear-probing "
                          f"and finetuning releases (probe this backbone first: lidarssl probe RECIPE "
                          f"pretrained={folder / BACKBONE_FILE})")  # fmt: skip
    origin = _origin(info, config.origin, folder)
    if origin.num_classes is not None and origin.num_classes != head["classes"]:
        raise ConfigError(f"{folder}: origin {origin.name} has {origin.num_classes} classes, the head "
                          f"{head['classes']}")
    root = config.data.root
    if not root.exists():
        raise ConfigError(f"data.root={root} does not exist; set it to the {origin.dataset} dataset folder")
    fmt = detect_format(root)
    if fmt not in (origin.dataset, "synthetic"):  # the synthetic world is labelled like nuScenes
        raise DataError(f"{root} is a {fmt} dataset, but the release comes from {origin.name} ({origin.dataset})")
    reader_options = {**origin.reader_options, "with_images": False} if fmt != "synthetic" else {}
    split = config.data.val_split
    dataset = open_dataset(root, split=split, format=fmt, **reader_options)
    classes = dataset.class_map.classes
    if len(classes) != head["classes"]:
        raise DataError(f"{root} ({fmt}) has {len(classes)} classes, the release's head {head['classes']}")

    state, meta = load_weights(folder / BACKBONE_FILE)
    spec = create_backbone(meta["backbone"], **{**meta.get("options", {}), **origin.backbone_options})
    load_state_dict_strict(spec.model, state, str(folder / BACKBONE_FILE))
    prep = spec.prep
    if origin.seed_voxels:
        if not isinstance(prep, WaffleIronPrep):
            raise ConfigError(f"origin {origin.name} subsamples like WaffleIron; the release's backbone is {spec.name}")
        prep = SeedVoxelPrep(replace(prep, voxel_size=None), voxel_size=prep.voxel_size or 0.1)
    module = SegmentationModule(spec.model, classes, mode="probe", ignore_index=dataset.class_map.ignore_index)
    _head(folder, module, info)
    module.eval()

    out = config.out or folder / f"eval-{split}"
    samples = ScanSamples(dataset, prep, [LabelBuilder()], train=False)
    loader = build_loader(samples, config.trainer.batch_size, config.data.num_workers)
    trainer = build_trainer(out, 1, config.trainer)  # quiet: no Lightning banners
    trainer.validate(module, dataloaders=loader, verbose=False)
    conf = module.last_confusion
    if conf is None:
        raise DataError(f"{root}: split '{split}' gave no validation batch")
    ious = {n: round(100 * float(v), 2) for n, v in zip(classes, iou_per_class(conf)) if not np.isnan(v)}
    score = ReleaseScore(out, 100 * miou(conf), ious, format_iou_table(conf, classes), conf, origin.name,
                         dict(origin.published))  # fmt: skip
    atomic_write(out / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(
        {"release": str(folder), "origin": origin.name, "split": split, "mIoU": round(score.miou, 2), "iou": ious,
         "published": origin.published, "confusion": conf.tolist()}, indent=2)))  # fmt: skip
    return score
