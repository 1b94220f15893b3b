"""``lidarssl pretrain`` and ``lidarssl prepare teacher-features``: from recipe to a pretrained backbone file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch

from lidarssl.checkpoints import save_weights
from lidarssl.data.datasets import detect_format, open_dataset
from lidarssl.data.loader import SampleBuilder, ScanSamples
from lidarssl.errors import ConfigError
from lidarssl.methods.base import PretrainMethod, method_class
from lidarssl.methods.config import PretrainConfig
from lidarssl.methods.teacher_cache import fill_cache, teacher_cache
from lidarssl.models.backbones import BackboneSpec, create_backbone
from lidarssl.models.teachers import create_teacher
from lidarssl.models.teachers.base import Teacher
from lidarssl.optim import scaled_lr
from lidarssl.recipes import check_recipe_dataset
from lidarssl.runs import (
    ScanData,
    build_trainer,
    fit,
    logged_epochs,
    run_folder,
    write_run_info,
)

__all__ = ["run_pretraining", "build_teacher", "teacher_cache", "prepare_teacher_features", "PretrainResult"]


def build_teacher(config: PretrainConfig) -> Teacher:
    """The recipe's frozen teacher; a random one (no weights file) is drawn from the run's seed, so the
    online teacher and the one that filled a feature cache are the same network."""
    t = config.teacher
    if t is None:
        raise ConfigError("this method needs an image teacher: set `teacher:` in the recipe")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return create_teacher(t.name, weights=t.weights, image_size=t.image_size, **t.options).freeze()


def open_pretrain_dataset(config: PretrainConfig, fmt: str | None = None):
    """The recipe's scans: its mixture of datasets when it lists one, else ``data.root`` at ``data.split``
    (``fmt``: its format when the caller has detected it already)."""
    if config.data.mixture:
        from lidarssl.data.mixture import MixtureDataset

        return MixtureDataset(config.data.mixture, seed=config.seed)
    options = {"format": fmt, **config.data.options} if fmt else config.data.options
    try:
        return open_dataset(config.data.root, split=config.data.split, **options)
    except TypeError as e:  # an option the reader does not take
        raise ConfigError(f"data.options: {e}; check the reader options of this dataset") from None


@dataclass
class PretrainResult:
    """Where a pretraining run wrote its backbone, and its last epoch's mean loss."""

    out: Path
    backbone: Path
    loss: float


def build_method(config: PretrainConfig) -> tuple[PretrainMethod, BackboneSpec, list[SampleBuilder]]:
    """The recipe's method module (with backbone and teacher), its backbone preset and sample builders."""
    cls = method_class(config.method.name)
    options = cls.parse_options(config.method.options)
    spec = create_backbone(config.backbone.name, **config.backbone.options)
    teacher = build_teacher(config) if cls.needs_teacher else None
    t = config.trainer
    optim = config.optim.model_copy(update={"lr": scaled_lr(config.optim.lr, config.optim.base_batch, t.batch_size,
                                                            t.devices, t.num_nodes, t.accumulate)})
    module = cls(spec.model, options, optim, teacher=teacher, loss_scope=config.loss_scope)
    builders = cls.builders(config, options)
    for builder in builders:  # builders of a second view preprocess it as the backbone does
        if hasattr(builder, "prep"):
            builder.prep = spec.prep
    return module, spec, builders


def run_pretraining(config: PretrainConfig, resume: bool = False, allow_config_change: bool = False) -> PretrainResult:
    """Pretrain ``config.backbone`` with ``config.method``; writes the run directory and ``backbone.safetensors``,
    which ``lidarssl probe`` and ``lidarssl finetune`` load as ``pretrained=``. The folder is locked for the run;
    ``resume`` continues from its newest readable checkpoint, with the stored config unless ``allow_config_change``."""
    if config.augment.polarmix or config.augment.instance_cutmix:
        raise ConfigError("augment.polarmix and augment.instance_cutmix mix labelled scans for segmentation; "
                          "pretraining does not use them: set both to false")
    with run_folder(config, resume, allow_config_change) as ckpt:
        return _run_pretraining(config, ckpt)


def _run_pretraining(config: PretrainConfig, ckpt: Path | None) -> PretrainResult:
    L.seed_everything(config.seed, workers=True, verbose=False)
    out = config.out
    fmt = None  # detected once: for the recipe's check and the reader
    if config.recipe is not None and config.data.mixture is None:
        fmt = detect_format(Path(config.data.root))
        check_recipe_dataset(config.recipe, fmt, config.data.root, config.recipe.where())
    module, spec, builders = build_method(config)
    samples = ScanSamples(open_pretrain_dataset(config, fmt), spec.prep, builders, seed=config.seed,
                          augment=config.augment.point_augment(), crop=config.crop)
    data = ScanData(samples, config.trainer.batch_size, config.data.num_workers)
    trainer = build_trainer(out, config.optim.epochs, config.trainer)
    if trainer.is_global_zero:
        write_run_info(out, config, config.seed)
    data.resume_from(ckpt)
    fit(trainer, module, data, ckpt)
    path = out / "backbone.safetensors"
    if trainer.is_global_zero:
        save_weights(path, spec.model.state_dict(), {"backbone": spec.name, "options": config.backbone.options,
                                                     "method": config.method.name,
                                                     "epochs": config.optim.epochs})
    loss = trainer.callback_metrics.get("train/loss_epoch")
    if loss is None:  # resuming a finished run trains no epoch: its last loss is on record
        logged = [r["train/loss_epoch"] for r in logged_epochs(out / "metrics.csv") if r.get("train/loss_epoch")]
        loss = logged[-1] if logged else None
    return PretrainResult(out=out, backbone=path, loss=float(loss) if loss is not None else float("nan"))


def prepare_teacher_features(config: PretrainConfig, batch_size: int = 8,
                             progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Fill the recipe's teacher feature cache for every camera image of ``data.split``; resumable."""
    from lidarssl.data.pairing import pair_views

    cache = teacher_cache(config)
    if cache is None:
        raise ConfigError("the recipe sets no data.teacher_cache folder to fill")
    teacher = build_teacher(config)
    dataset = open_pretrain_dataset(config)
    # every frame of every member of a mixture (which otherwise draws a subset per epoch)
    frames = [(d, i) for d in getattr(dataset, "datasets", [dataset]) for i in range(len(d))]
    every_camera = config.pairing.model_copy(update={"cameras": "all"})
    paths: list[Path] = []

    def images_of(i: int):
        d, j = frames[i]
        scan = d[j]
        views = pair_views(scan, every_camera)
        paths.extend(cache.path(scan.cache_key, name) for name in views.names)
        return scan, views.names, views.images

    cache.write_info({"teacher": config.teacher.name, "weights": str(config.teacher.weights),
                      "image_size": list(config.pairing.resize), "seed": config.seed})
    counts = fill_cache(cache, teacher, images_of, len(frames), batch_size, progress)
    cache.write_mean(paths)
    return counts
