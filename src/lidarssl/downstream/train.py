"""``lidarssl train | probe | finetune | evaluate``: one segmentation run, from recipe to IoU table."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np

from lidarssl.checkpoints import check_backbone_options, load_state_dict_strict, load_weights, save_weights
from lidarssl.data.datasets import detect_format, open_dataset
from lidarssl.data.labels import ClassMap
from lidarssl.data.loader import LabelBuilder, ScanSamples
from lidarssl.data.mixing import ScanMixer
from lidarssl.downstream.config import SegmentationConfig
from lidarssl.downstream.segmentation import Mode, SegmentationModule
from lidarssl.errors import CheckpointError, ConfigError, DataError
from lidarssl.io import atomic_write
from lidarssl.metrics import format_iou_table, iou_per_class, miou
from lidarssl.models.backbones import BackboneSpec, create_backbone
from lidarssl.optim import scaled_lr
from lidarssl.recipes import check_recipe_dataset
from lidarssl.run_folder import read_checkpoint
from lidarssl.runs import (
    LabelledScanData,
    build_trainer,
    fit,
    last_checkpoint,
    run_folder,
    write_run_info,
)

__all__ = ["SegmentationResult", "build_module", "evaluate_run", "run_segmentation", "segmentation_data"]


def _dataset_format(config: SegmentationConfig) -> str:
    """The format of ``data.root``, detected once per run; a published-cell recipe runs only on the dataset its
    protocol is written for."""
    fmt = detect_format(Path(config.data.root))
    if config.recipe is not None:
        check_recipe_dataset(config.recipe, fmt, config.data.root, config.recipe.where())
    return fmt


def segmentation_backbone(config: SegmentationConfig) -> BackboneSpec:
    """The recipe's backbone; options of the recipe's protocol that the chosen backbone cannot honour (ScaLR's
    WaffleIron grids on a MinkUNet) are named with the recipe and the fix."""
    try:
        return create_backbone(config.backbone.name, **config.backbone.options)
    except ConfigError as exc:
        info = config.recipe
        if info is None or info.synthetic or config.backbone.name == info.backbone:
            raise
        raise ConfigError(f"{info.where()}: backbone.name={config.backbone.name}: {exc}; this recipe's protocol is "
                          f"written for {info.backbone}: keep backbone.name={info.backbone} or override "
                          "backbone.options={}") from None


def segmentation_data(config: SegmentationConfig, spec: BackboneSpec,
                      fmt: str | None = None) -> tuple[LabelledScanData, ClassMap]:
    """Train and val samples of ``config.data`` with segmentation labels, and the class map of the train split.
    ``fmt``: the dataset format when the caller has detected it already."""
    info = config.recipe
    options = {"format": fmt or _dataset_format(config), **config.data.options}
    try:
        train_set = open_dataset(config.data.root, split=config.data.train_split, **options)
    except DataError as exc:
        if info is None or "@" not in config.data.train_split:
            raise
        raise DataError(f"{info.where()}: data.train_split={config.data.train_split}: {exc}") from None
    val_set = open_dataset(config.data.root, split=config.data.val_split, **options)
    augment = config.augment.point_augment() if config.augment is not None else None
    mix = None
    if config.augment is not None and (config.augment.polarmix or config.augment.instance_cutmix):
        mix = ScanMixer.for_dataset(train_set, config.augment.polarmix, config.augment.instance_cutmix,
                                    progress=_bank_progress)
    train = ScanSamples(train_set, spec.prep, [LabelBuilder()], seed=config.seed, augment=augment, crop=config.crop,
                        mix=mix)
    val = ScanSamples(val_set, spec.prep, [LabelBuilder()], seed=config.seed, train=False)
    return LabelledScanData(train, val, config.trainer.batch_size, config.data.num_workers), train_set.class_map


def _bank_progress(done: int, total: int) -> None:
    """Instance CutMix reads the whole training split once before training: say so about every tenth."""
    if done == total or done % max(1, total // 10) == 0:
        print(f"instance bank: scan {done}/{total}", file=sys.stderr, flush=True)


@dataclass
class SegmentationResult:
    """Final validation scores of a run (percent) and where its files are."""

    out: Path
    miou: float
    iou: dict[str, float]
    table: str
    confusion: np.ndarray
    classes: tuple[str, ...]


def _load_pretrained(spec: BackboneSpec, path: Path | None, mode: Mode, options: dict,
                     random_init: bool = False) -> None:
    if random_init and path is None:  # SLidR's "Random init." linear probing: a frozen random backbone
        return
    if mode == "scratch":
        if path is not None:
            raise ConfigError(f"pretrained={path} is for probe and finetune; `lidarssl train` starts from scratch")
        return
    if path is None:
        raise ConfigError(f"mode '{mode}' needs pretrained=PATH (a backbone .safetensors written by pretrain or train)")
    state, meta = load_weights(path)
    if meta.get("backbone") not in (None, spec.name):
        raise CheckpointError(f"{path}: weights of backbone '{meta.get('backbone')}', but the recipe builds "
                              f"'{spec.name}'; set backbone.name={meta.get('backbone')}")
    check_backbone_options(path, meta, options)
    load_state_dict_strict(spec.model, state, str(path))


def build_module(config: SegmentationConfig, spec: BackboneSpec, class_map: ClassMap, mode: Mode) -> SegmentationModule:
    """The segmentation module of ``config``'s protocol (optimiser, head, loss, schedule) around ``spec``."""
    o, t = config.optim, config.trainer
    lr = scaled_lr(o.lr, o.base_batch, t.batch_size, t.devices, t.num_nodes, t.accumulate)
    head_lr = scaled_lr(o.head_lr, o.base_batch, t.batch_size, t.devices, t.num_nodes, t.accumulate) if o.head_lr else None
    return SegmentationModule(spec.model, class_map.classes, mode=mode, lr=lr,
                              weight_decay=o.weight_decay, warmup_epochs=o.warmup_epochs, min_lr=o.min_lr,
                              layer_decay=o.layer_decay, lovasz_weight=o.lovasz_weight,
                              ignore_index=class_map.ignore_index, head=config.head, optimizer=o.optimizer,
                              momentum=o.momentum, dampening=o.dampening, head_lr=head_lr, decay_all=o.decay_all,
                              schedule=o.schedule, loss=o.loss, loss_support=o.loss_support)


def run_segmentation(config: SegmentationConfig, mode: Mode, resume: bool = False,
                     allow_config_change: bool = False) -> SegmentationResult:
    """Train (scratch), linear-probe or finetune a backbone on ``config.data`` and evaluate every epoch.

    The run directory ``config.out`` receives the config, logs, per-epoch checkpoints, the final
    ``backbone.safetensors`` and ``metrics.json``. The folder is locked for the run; ``resume`` continues
    from its newest readable checkpoint, with the stored config unless ``allow_config_change``.
    """
    with run_folder(config, resume, allow_config_change) as ckpt:
        return _run_segmentation(config, mode, ckpt)


def _run_segmentation(config: SegmentationConfig, mode: Mode, ckpt: Path | None) -> SegmentationResult:
    L.seed_everything(config.seed, workers=True, verbose=False)
    out = config.out
    fmt = _dataset_format(config) if config.recipe is not None else None  # before building anything
    spec = segmentation_backbone(config)
    _load_pretrained(spec, config.pretrained, mode, config.backbone.options,
                     random_init=mode == "probe" and config.recipe is not None and config.recipe.method == "scratch")
    data, class_map = segmentation_data(config, spec, fmt)
    module = build_module(config, spec, class_map, mode)
    trainer = build_trainer(out, config.optim.epochs, config.trainer)
    if trainer.is_global_zero:
        write_run_info(out, config, config.seed)
    data.resume_from(ckpt)
    fit(trainer, module, data, ckpt)
    if module.last_confusion is None and ckpt is not None:  # --resume on a finished run: score it again
        trainer.validate(module, datamodule=data, ckpt_path=ckpt, verbose=False)
    elif config.optim.epochs % config.trainer.val_every:  # trainer.val_every skipped the last epoch: score it
        trainer.validate(module, datamodule=data, verbose=False)
    if trainer.is_global_zero:
        save_weights(out / "backbone.safetensors", spec.model.state_dict(),
                     {"backbone": spec.name, "options": config.backbone.options, "mode": mode})
    return _finish(out, module, class_map.classes, trainer)


def _finish(out: Path, module: SegmentationModule, class_names: tuple[str, ...], trainer: L.Trainer) -> SegmentationResult:
    """Scores of the module's last validation pass, also written to ``out/metrics.json``."""
    conf = module.last_confusion
    if conf is None:
        raise CheckpointError(f"{out}: the run finished without a validation pass")
    ious = {n: round(100 * float(v), 2) for n, v in zip(class_names, iou_per_class(conf)) if not np.isnan(v)}
    result = SegmentationResult(out=out, miou=100 * miou(conf), iou=ious, table=format_iou_table(conf, class_names),
                                confusion=conf, classes=tuple(class_names))
    if trainer.is_global_zero:
        atomic_write(out / "metrics.json", lambda tmp: Path(tmp).write_text(
            json.dumps({"mIoU": round(result.miou, 2), "iou": ious, "confusion": conf.tolist()}, indent=2)))
    return result


def evaluate_run(config: SegmentationConfig, checkpoint: Path | None = None) -> SegmentationResult:
    """Score a run's checkpoint (its ``last.ckpt`` by default) on the val split of ``config.data``."""
    ckpt = checkpoint or last_checkpoint(config.out)
    read_checkpoint(ckpt)  # a one-line error for a missing or damaged file, before building anything
    spec = segmentation_backbone(config)
    data, class_map = segmentation_data(config, spec)
    try:
        module = SegmentationModule.load_from_checkpoint(ckpt, map_location="cpu", backbone=spec.model,
                                                         weights_only=True)
    except (RuntimeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{ckpt}: does not match the run's model ({str(e).splitlines()[0][:200]}); "
                              "pass a checkpoint of this run") from None
    trainer = build_trainer(config.out / "eval", 1, config.trainer)
    trainer.validate(module, datamodule=data, verbose=False)  # the IoU table is printed once, by the caller
    return _finish(config.out / "eval", module, class_map.classes, trainer)
