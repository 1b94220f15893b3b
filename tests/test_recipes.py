"""Published cells: one recipe each, named with its number, resolving to the original protocol (drift test)."""

import functools
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from lidarssl.cli import main
from lidarssl.config import SegmentationConfig, load_config
from lidarssl.downstream.train import build_module, run_segmentation
from lidarssl.errors import ConfigError, DataError
from lidarssl.methods.config import PretrainConfig
from lidarssl.models.backbones import create_backbone
from lidarssl.recipes import COLUMNS, catalogue

# --- the originals' settings of every published cell, each with the file and line it comes from -------------------
# A value is (original, source); sources name the repository, the file and the line(s) of the value.

SEMSEG = {"nuscenes": "valeoai/SLidR config/semseg_nuscenes.yaml",
          "semantickitti": "valeoai/SLidR config/semseg_kitti.yaml"}
#: line of each key in SEMSEG's two files (semseg_kitti.yaml has one more blank line after line 2)
SEMSEG_LINE = {"batch_size": 10, "optimizer": 12, "scheduler": 13, "sgd_momentum": 16, "sgd_dampening": 17,
               "weight_decay": 18, "bn_momentum": 26, "loss": 30, "transforms_clouds": 34}
SLIDR_README = "valeoai/SLidR README.md 'Few-shot semantic segmentation' (downstream commands: epochs, lr, lr_head)"
STSLIDR = "TRAILab/ST-SLidR post_pretrain.py (downstream: 50 epochs, lr 0.02, lr_head 2.0)"
SLIDR_NUS_LOADER = "valeoai/SLidR downstream/dataloader_nuscenes.py"
SLIDR_KI_LOADER = "valeoai/SLidR downstream/dataloader_kitti.py"
ALSO_CFG = "valeoai/ALSO also_selfsup/configs/cfg/nuscenes.yaml"
ALSO_TRAIN = "valeoai/ALSO also_selfsup/train_downstream_semseg.py"
NCLR_CFG = "Eaphan/NCLR downstream/configs/cfg/nuscenes_minkowski.yaml"
NCLR_TF = "Eaphan/NCLR downstream/transforms/get_transforms.py"
SCALR_CFG = "valeoai/ScaLR configs/downstream/{}/WI_768_{}.yaml"
Cell = dict[str, tuple[Any, str]]


def slidr(lr: float, head_lr: float | None, epochs: int, batch: int, split: str, dataset: str = "nuscenes",
          protocol: str = SLIDR_README) -> Cell:
    cfg = SEMSEG[dataset]

    def at(key: str) -> str:
        return f"{cfg}:{SEMSEG_LINE[key] + (dataset == 'semantickitti')} ({key})"

    loader = SLIDR_NUS_LOADER if dataset == "nuscenes" else SLIDR_KI_LOADER
    line = 202 if dataset == "nuscenes" else 161
    labels = f"{loader}:{line} (unique_labels = points_labels[indexes]: one label per voxel)"
    cell: Cell = {
        "optim.optimizer": ("sgd", at("optimizer")), "optim.momentum": (0.9, at("sgd_momentum")),
        "optim.dampening": (0.1, at("sgd_dampening")), "optim.weight_decay": (1e-4, at("weight_decay")),
        "optim.decay_all": (True, "valeoai/SLidR downstream/lightning_trainer.py (optimizer over all parameters)"),
        "optim.schedule": ("epoch", at("scheduler")), "optim.warmup_epochs": (0, at("scheduler")),
        "optim.min_lr": (0.0, at("scheduler")), "optim.loss": ("ce+lovasz", at("loss")),
        "optim.loss_support": ("voxel", labels),
        "head": ("linear", "valeoai/SLidR downstream/model_builder.py (`final`: a 1x1 conv)"),
        "trainer.precision": ("32-true", "valeoai/SLidR downstream.py (Trainer without precision: fp32)"),
        "backbone.name": ("res16unet34c", "valeoai/SLidR downstream/model_builder.py (Res16UNet34C)"),
        "optim.lr": (lr, protocol), "optim.head_lr": (head_lr, protocol), "optim.epochs": (epochs, protocol),
        "trainer.batch_size": (batch, at("batch_size")), "optim.base_batch": (batch, at("batch_size")),
        "data.train_split": (split, f"{cfg}:{36 + (dataset == 'semantickitti')} (dataset_skip_step) + {loader}"),
        "augment.scale": (None, at("transforms_clouds")), "augment.flip": (True, at("transforms_clouds")),
        "augment.flip_axes": ("any", at("transforms_clouds")),
        "augment.flip_prob": (1.0, "valeoai/SLidR utils/transforms.py (FlipAxis: each axis with p 1/2)"),
        "crop": (None, f"{loader} (no point cap)"),
        "backbone.options.range_min": ([0.0, -180.0, -25.6], f"{loader}: every point voxelised, no range crop"),
        "backbone.options.range_max": ([204.8, 180.0, 25.6], f"{loader}: every point voxelised, no range crop"),
        "backbone.options.bn_momentum": (0.02, at("bn_momentum")),
        "backbone.options.block_bn_momentum": (0.1, "valeoai/SLidR model/res16unet.py (BasicBlocks keep 0.1)"),
        "backbone.options.coordinates": ("cylindrical", f"{cfg}:{4 + (dataset == 'semantickitti')}"),
        "backbone.options.features": (["intensity"], f"{cfg}:{9 + (dataset == 'semantickitti')} (use_intensity)"),
        "backbone.options.voxel_features": ("first", f"{loader} (points[indexes]: one point per voxel)"),
    }
    if dataset == "semantickitti":  # remission + 1; nuScenes' loader feeds the raw intensity
        cell["backbone.options.intensity_mean"] = (-1.0, f"{SLIDR_KI_LOADER}:152 (points[indexes][:, 3:] + 1.)")
    else:
        cell["backbone.options.intensity_mean"] = (0.0, f"{SLIDR_NUS_LOADER}:193 (points[indexes][:, 3:])")
    return cell


def also(p: float, epochs: int, method: str = "also") -> Cell:
    split = ("parametrizing" if p == 100 else "parametrizing@nuscenes-0.1p-scene-0392.json" if p == 0.1
             else f"parametrizing@{p:g}%-scenes")
    fallback = "Eaphan/NCLR downstream/datasets/nuscenes_dataset.py:208-213 (no scene left: scene-0392 alone)"
    readme = "valeoai/ALSO README.md (downstream commands: skip_ratio 1/2/10/100/1000, max_epochs 30/50/100/500/1000)"
    cell: Cell = {
        "optim.optimizer": ("adamw", f"{ALSO_CFG}:22"), "optim.lr": (1e-3, f"{ALSO_CFG}:24"),
        "optim.weight_decay": (0.01, f"{ALSO_CFG}:23-24 (no weight_decay: AdamW's default 0.01)"),
        "optim.decay_all": (True, f"{ALSO_TRAIN}:159 (self.parameters())"),
        "optim.schedule": ("epoch", f"{ALSO_TRAIN}:160-164 (CosineAnnealingLR, T_max=max_epochs)"),
        "optim.min_lr": (0.0, f"{ALSO_TRAIN}:163 (eta_min=0)"), "optim.warmup_epochs": (0, f"{ALSO_TRAIN}:160-164"),
        "optim.loss": ("ce", f"{ALSO_TRAIN}:152 (CrossEntropyLoss(ignore_index=0))"),
        "optim.loss_support": ("point", f"{ALSO_TRAIN} (training_step: compute_loss on every point)"),
        "optim.epochs": (epochs, readme), "trainer.batch_size": (8, f"{ALSO_CFG}:68"),
        "optim.base_batch": (8, f"{ALSO_CFG}:68"), "data.train_split": (split, fallback if p == 0.1 else readme),
        "data.val_split": ("val", "NCLR/ALSO eval.py --split val (README)"),
        "backbone.name": ("minkunet34", f"{ALSO_CFG}:29"),
        "trainer.precision": ("32-true", f"{ALSO_TRAIN} (pl.Trainer without precision)"),
        "backbone.options.range_min": ([-102.4, -102.4, -25.6], f"{ALSO_CFG}:32 (quantisation only: no crop)"),
        "backbone.options.range_max": ([102.4, 102.4, 25.6], f"{ALSO_CFG}:32 (quantisation only: no crop)"),
        "backbone.options.features": (["intensity"], f"{ALSO_CFG}:14"),
        "backbone.options.intensity_std": (255.0, "also_selfsup/datasets/nuscenes_dataset.py (get: intensities / 255)"),
        "head": ("linear", "ALSO networks/backbone/torchsparse MinkUNet34 (its last 1x1 classifier)"),
        "augment.flip": (True, f"{ALSO_CFG}:63"),
        "augment.flip_axes": ("any", f"{ALSO_CFG}:63 (x and y each with p 1/2)"),
        "augment.flip_prob": (1.0, f"{ALSO_CFG}:63"), "augment.scale": (None, f"{ALSO_CFG}:59-63 (no scaling)"),
        "crop": (None, f"{ALSO_CFG}:59-63 (no point cap)"),
    }
    if method == "nclr":  # NCLR's downstream is a fork of ALSO's with its own config (README: 'Downstream')
        cell["optim.weight_decay"] = (1e-4, f"{NCLR_CFG}:25")
        cell["augment.flip_axes"] = ("any", "Eaphan/NCLR downstream/transforms/random_flip.py:22-25 (x, y each p 1/2)")
        cell["optim.epochs"] = (epochs, "Eaphan/NCLR README.md (downstream: ALSO's skip_ratio / max_epochs table)")
        cell["crop"] = (None, f"{NCLR_TF}:72-73 (voxel decimation commented out), :84-86 (no scaling)")
    return cell


def scalr(kind: str, epochs: int, warmup: int, fov: int, grid: int, layer_decay: float = 0.99,
          split: str = "train", folder: str = "nuscenes", labels: str = "100p") -> Cell:
    probe = kind == "probe"
    cfg = SCALR_CFG.format(folder, "linprob" if probe else f"finetune_{labels}")
    pc = "valeoai/ScaLR datasets/pc_dataset.py:144-151 (Voxelize, then train_augmentations, then the FOV crop)"
    cell: Cell = {
        "optim.optimizer": ("adamw", "valeoai/ScaLR finetune.py (get_optimizer: AdamW)"),
        "optim.lr": (1e-3 if probe else 2e-3, f"{cfg}:24"),
        "optim.weight_decay": (3e-3 if probe else 0.0, f"{cfg}:25"),
        "optim.min_lr": (1e-5 if probe else 0.0, f"{cfg}:29"), "optim.epochs": (epochs, f"{cfg}:30"),
        "optim.warmup_epochs": (warmup, f"{cfg}:31"),
        "optim.layer_decay": (1.0 if probe else layer_decay, f"{cfg}:26"),
        "optim.schedule": ("iteration", "valeoai/ScaLR finetune.py (get_scheduler: LambdaLR per iteration)"),
        "optim.loss": ("ce+lovasz", f"{cfg}:21"), "optim.loss_support": ("point", pc),
        "trainer.batch_size": (8, f"{cfg}:8"), "optim.base_batch": (8, f"{cfg}:8"),
        "crop.max_points": (20000, f"{cfg}:10 + valeoai/ScaLR finetune.py:112-118 (LimitNumPoints)"),
        "crop.after_voxels": (True, pc), "crop.frustum": (False, pc),
        "head": ("bn-linear", "valeoai/ScaLR finetune.py (BatchNorm1d + zero-initialised Conv1d classif)"),
        "backbone.options.drop_path": (0.0 if probe else 0.2, f"{cfg}:2"),
        "backbone.options.fov_max": ([fov, fov, 8], "valeoai/ScaLR configs/pretrain/WI_768_pretrain.yaml (fov_xyz)"),
        "backbone.options.grid_shapes": ([[grid, grid], [grid, 32], [grid, 32]],
                                         "valeoai/ScaLR configs/pretrain/WI_768_pretrain.yaml (grids_size)"),
        "data.train_split": (split, "valeoai/ScaLR datasets/nuscenes_for_scalr.py:76-90, semantic_kitti_for_scalr.py"),
        "augment.flip": (True, f"{cfg}:15"), "augment.flip_axes": ("one", "valeoai/ScaLR utils/transforms.py (FlipXY)"),
        "augment.flip_prob": (pytest.approx(2 / 3), "valeoai/ScaLR finetune.py:126 (RandomApply(FlipXY, prob=2 / 3))"),
    }
    return cell


SCALR_1P = "train@datasets/nuscenes-ratio_100-v_0.npy"
KI_1P = "train@1%-frames"
CELLS: dict[str, tuple[float, Cell]] = {
    # SLidR README, 'Few-shot semantic segmentation' (Minkowski SR-UNet): the random-init row
    "scratch-res16unet34c-nuscenes-probe": (8.1, slidr(0.05, None, 100, 16, "train")),
    "scratch-res16unet34c-semantickitti-train-1p": (39.5, slidr(0.05, None, 100, 10, KI_1P, "semantickitti")),
    # ScaLR README (linear probing, finetuning 100 %, WI-48-768 without pretraining) and scalr_plus README (1 %, 10 %)
    "scalr-wi48x768-nuscenes-probe": (67.8, scalr("probe", 20, 2, 64, 256)),
    "scalr-wi48x768-semantickitti-probe": (55.8, scalr("probe", 20, 2, 64, 256, folder="semantic_kitti")),
    "scalr-wi48x768-pandar64-probe": (37.9, scalr("probe", 50, 2, 128, 512, folder="panda64")),
    "scalr-wi48x768-pandargt-probe": (34.5, scalr("probe", 50, 2, 128, 512, folder="panda64")),  # no pandagt file
    "scalr-wi48x768-nuscenes-finetune": (78.4, scalr("finetune", 25, 2, 64, 256)),
    "scalr-wi48x768-semantickitti-finetune": (65.8, scalr("finetune", 10, 1, 64, 256, folder="semantic_kitti")),
    "scalr-wi48x768-pandar64-finetune": (48.3, scalr("finetune", 25, 2, 128, 512, folder="panda64")),
    "scalr-wi48x768-pandargt-finetune": (41.1, scalr("finetune", 25, 2, 96, 384, folder="pandagt")),
    "scalr-wi48x768-nuscenes-finetune-1p": (50.7, scalr("finetune", 45, 4, 64, 256, 0.95, SCALR_1P, labels="1p")),
    # no 10p config in ScaLR: its 1p one (45 epochs, layer decay 0.95) with the 10 % list
    "scalr-wi48x768-nuscenes-finetune-10p": (69.2, scalr("finetune", 45, 4, 64, 256, 0.95,
                                                         "train@datasets/nuscenes-ratio_10-v_0.npy", labels="1p")),
    "scalr-wi48x768-semantickitti-finetune-1p": (55.8, scalr("finetune", 45, 4, 64, 256, 0.95, "train@1%-frames",
                                                             folder="semantic_kitti", labels="1p")),
    # finetune.py without --pretrained_ckpt: the finetuning protocol, layer decay included
    "scratch-wi48x768-nuscenes-train": (78.7, scalr("finetune", 25, 2, 64, 256)),
}
# SLidR README, 'Few-shot semantic segmentation': the pretrained rows (PPKT, SLidR and the lidar-only baselines,
# under the same downstream protocol): nuScenes linear probing, nuScenes 1 %, SemanticKITTI 1 %
for _m, (_lp, _nus, _ki) in {"slidr": (38.8, 38.3, 44.6), "ppkt": (36.4, 37.8, 43.9),
                             "pointcontrast": (21.9, 32.5, 41.1), "depthcontrast": (22.1, 31.7, 41.5)}.items():
    CELLS[f"{_m}-res16unet34c-nuscenes-probe"] = (_lp, slidr(0.05, None, 100, 16, "train"))
    CELLS[f"{_m}-res16unet34c-nuscenes-finetune-1p"] = (_nus, slidr(0.02, 2.0, 100, 16, "train@1%-scenes"))
    CELLS[f"{_m}-res16unet34c-semantickitti-finetune-1p"] = (_ki, slidr(0.05, 2.0, 100, 10, KI_1P, "semantickitti"))
# SLidR README, 'Semantic Segmentation on nuScenes' (label fractions)
for _p, _scratch, _slidr in ((1, 30.3, 39.0), (5, 47.7, 52.2), (10, 56.6, 58.8), (25, 64.8, 66.2), (100, 74.2, 74.6)):
    _split = "train" if _p == 100 else f"train@{_p}%-scenes"
    CELLS[f"scratch-res16unet34c-nuscenes-train-{_p}p"] = (_scratch, slidr(0.05, None, 100, 16, _split))
    CELLS[f"slidr-res16unet34c-nuscenes-finetune-{_p}p-fractions"] = (_slidr, slidr(0.02, 2.0, 100, 16, _split))
# ST-SLidR README 'Results': 50 epochs, lr 0.02 / head 2.0 for finetuning and linear probing alike
for _t, (_slp, _sft, _tlp, _tft) in {"moco": (38.08, 40.01, 40.56, 41.13), "swav": (38.96, 40.01, 40.36, 41.20),
                                     "dino": (38.29, 39.86, 40.36, 41.07), "obow": (37.41, 39.51, 40.00, 40.87)}.items():
    for _m, _lp, _ft in (("slidr", _slp, _sft), ("stslidr", _tlp, _tft)):
        CELLS[f"stslidr-{_m}-{_t}-res16unet34c-nuscenes-probe"] = (_lp, slidr(0.02, 2.0, 50, 16, "train",
                                                                              protocol=STSLIDR))
        CELLS[f"stslidr-{_m}-{_t}-res16unet34c-nuscenes-finetune-1p"] = (
            _ft, slidr(0.02, 2.0, 50, 16, "train@1%-scenes", protocol=STSLIDR))
# NCLR README, nuScenes table (MinkUNet34): NCLR under its own downstream, ALSO and scratch under ALSO's
for _m, _numbers in {"scratch": (21.6, 35.0, 57.3, 69.0, 71.2), "also": (26.2, 37.4, 59.0, 69.8, 71.8),
                     "nclr": (26.6, 37.8, 59.5, 71.2, 72.7), "pointcontrast": (27.1, 37.0, 58.9, 69.4, 71.1),
                     "depthcontrast": (21.7, 34.6, 57.4, 69.2, 71.2)}.items():
    for _p, _tag, _epochs, _miou in zip((0.1, 1, 10, 50, 100), ("01p", "1p", "10p", "50p", "100p"),
                                       (1000, 500, 100, 50, 30), _numbers):
        _kind = "train" if _m == "scratch" else "finetune"
        CELLS[f"{_m}-minkunet34-nuscenes-{_kind}-{_tag}"] = (_miou, also(_p, _epochs, _m))
# WaffleIron README (supervised baselines the ScaLR paper compares with)
_WI = "valeoai/WaffleIron"
_WI_COMMON: Cell = {
    "head": ("linear", f"{_WI} waffleiron/segmenter.py:37 (classif = nn.Conv1d(feat_channels, nb_class, 1))"),
    "crop.max_points": (20000, f"{_WI} launch_train.py:42-48 (LimitNumPoints first among the augmentations)"),
    "crop.after_voxels": (True, f"{_WI} datasets/pc_dataset.py (Voxelize before train_augmentations)"),
    "augment.flip_axes": ("one", f"{_WI} utils/transforms.py (FlipXY)"),
    "augment.flip_prob": (pytest.approx(2 / 3), f"{_WI} launch_train.py:55 (RandomApply(FlipXY, prob=2 / 3))"),
    "optim.loss": ("ce+lovasz", f"{_WI} configs/*.yaml (loss: lovasz 1.0)"),
    "optim.lr": (1e-3, f"{_WI} configs/*.yaml (optim.lr)"),
    "optim.weight_decay": (3e-3, f"{_WI} configs/*.yaml (optim.weight_decay)"),
    "optim.epochs": (45, f"{_WI} configs/*.yaml (max_epoch)"),
    "optim.warmup_epochs": (4, f"{_WI} configs/*.yaml (epoch_warmup)"),
    "optim.min_lr": (1e-5, f"{_WI} configs/*.yaml (min_lr)"),
    "trainer.batch_size": (4, f"{_WI} configs/*.yaml (batch_size)"),
}
_WI_NUS = f"{_WI} configs/WaffleIron-48-384__nuscenes.yaml"
CELLS["seg-wi48x384-nuscenes"] = (77.6, {
    **_WI_COMMON, "crop.max_points": (20000, f"{_WI_NUS}:36"),
    "backbone.options.fov_max": ([50, 50, 5], f"{_WI_NUS}:8-10"),
    "backbone.options.grid_shapes": ([[166, 166], [166, 16], [166, 16]], f"{_WI_NUS}:16-18")})
_WI_KI = f"{_WI} datasets/semantic_kitti.py (load_pc: PolarMix, then InstanceCutMix)"
CELLS["seg-wi48x256-semantickitti"] = (68.0, {
    **_WI_COMMON, "augment.polarmix": (True, _WI_KI), "augment.instance_cutmix": (True, _WI_KI)})


# the pretraining recipes the cells chain to
_SLIDR_PRE = {"optim.optimizer": "sgd", "optim.lr": 0.5, "optim.momentum": 0.9, "optim.dampening": 0.1,
              "optim.weight_decay": 1e-4, "optim.decay_all": True, "optim.schedule": "epoch", "optim.epochs": 50,
              "trainer.precision": "32-true", "data.split": "parametrizing", "backbone.name": "res16unet34c",
              "pairing.crop_size": [224, 416], "augment.drop_cuboid": 0.2, "backbone.options.bn_momentum": 0.05,
              "backbone.options.block_bn_momentum": 0.1}
#: lines of config/slidr_minkunet.yaml (the optimiser, schedule and precision are downstream.py's / pretrain.py's)
_SLIDR_PRE_LINE = {"trainer.batch_size": ":8", "optim.base_batch": ":8", "optim.lr": ":10", "optim.momentum": ":11",
                   "optim.dampening": ":12", "optim.weight_decay": ":13", "optim.epochs": ":14",
                   "backbone.options.bn_momentum": ":22", "pairing.crop_size": ":23", "backbone.name": ":26",
                   "teacher.name": ":32-35 (resnet50 encoder, dilation decoder)", "data.split": ":41 (parametrize)",
                   "augment.drop_cuboid": ":46 (DropCuboids)"}
PRETRAIN: dict[str, Cell] = {
    "scalr-wi48x768-mixture": {k: (v, "valeoai/ScaLR configs/pretrain/WI_768_pretrain.yaml, datasets/*_for_scalr.py, "
                                   "im_pc_dataset.py (Voxelize, then LimitNumPoints; FlipXY with p 2/3)") for k, v in {
        "optim.optimizer": "adamw", "optim.lr": 2e-3, "optim.weight_decay": 0.03, "optim.decay_all": True,
        "optim.epochs": 25, "trainer.batch_size": 8, "optim.base_batch": 8, "crop.frustum": True,
        "crop.max_points": 20000, "crop.after_voxels": True, "pairing.cameras": "one", "pairing.resize": [224, 448],
        "teacher.name": "dinov2_vitl14", "backbone.name": "waffleiron_48_768", "optim.min_lr": 1e-5,
        "augment.flip_axes": "one", "augment.flip_prob": pytest.approx(2 / 3)}.items()},
    "slidr-res16unet34c-nuscenes": {k: (v, f"valeoai/SLidR config/slidr_minkunet.yaml{_SLIDR_PRE_LINE.get(k, '')}")
                                    for k, v in {**_SLIDR_PRE, "trainer.batch_size": 4, "optim.base_batch": 4,
                                                 "teacher.name": "resnet50_dilated"}.items()},
    "ppkt-res16unet34c-nuscenes": {k: (v, "valeoai/SLidR config/ppkt_nuscenes.yaml") for k, v in {
        **_SLIDR_PRE, "trainer.batch_size": 4, "optim.base_batch": 4, "teacher.name": "resnet50"}.items()},
    "stslidr-res16unet34c-nuscenes": {k: (v, "TRAILab/ST-SLidR config/pretrain/nuscenes/slidr/"
                                          "stslidr_classbalance_moco.yaml") for k, v in {
        **_SLIDR_PRE, "trainer.batch_size": 8, "trainer.devices": 2, "seed": 2022}.items()},
    "also-minkunet34-nuscenes": {k: (v, "valeoai/ALSO also_selfsup/configs/cfg/nuscenes.yaml") for k, v in {
        "optim.optimizer": "adamw", "optim.lr": 1e-3, "optim.weight_decay": 0.01, "optim.decay_all": True,
        "optim.epochs": 200, "trainer.batch_size": 16, "data.split": "parametrizing",
        "trainer.precision": "32-true", "backbone.name": "minkunet34"}.items()},
    "nclr-minkunet34-nuscenes": {k: (v, "Eaphan/NCLR cfgs/pretrain_ns_minkunet.yaml, datasets.py") for k, v in {
        "optim.optimizer": "adamw", "optim.lr": 1e-3, "optim.weight_decay": 1e-3, "optim.decay_all": True,
        "optim.epochs": 50, "trainer.batch_size": 10, "data.split": "parametrizing", "pairing.resize": [224, 416],
        "pairing.crop_size": None, "trainer.precision": "32-true", "backbone.name": "minkunet34"}.items()},
}

# PointContrast and DepthContrast as their repositories train them (the seeds do not say how they trained them)
PC = ("facebookresearch/PointContrast pretrain/pointcontrast/config/defaults.yaml (momentum 0.8, wd 1e-4, "
      "model_n_out 32, bn_momentum 0.05), scripts/ddp_local.sh (lr 0.1, batch 32 on 8 GPUs, npos 4096, nceT 0.4, "
      "max_iter 60000), lib/ddp_trainer.py (SGD without dampening)")
DC = ("facebookresearch/DepthContrast configs/point_vox_lidar_template.yaml (SGD lr 0.12 momentum 0.9 wd 1e-4, cosine "
      "per epoch to 1.2e-4, 1000 epochs, batch 32, T 0.1, EMBEDDING_DIM 128, randomcuboidLidar 0.5-1.0 aspect 0.75 "
      "npoints 10000), datasets/transforms/augment3d.py (RandomScaleLidar 0.95-1.05), models/base_ssl3d_model.py "
      "(m 0.999)")
_PC = {"optim.optimizer": "sgd", "optim.lr": 0.1, "optim.momentum": 0.8, "optim.dampening": 0.0,
       "optim.weight_decay": 1e-4, "optim.decay_all": True, "optim.base_batch": 32, "trainer.batch_size": 4,
       "trainer.devices": 8, "method.options.npos": 4096, "method.options.temperature": 0.4,
       "method.options.dim": 32, "trainer.precision": "32-true", "data.split": "parametrizing"}
_DC = {"optim.optimizer": "sgd", "optim.lr": 0.12, "optim.momentum": 0.9, "optim.dampening": 0.0,
       "optim.weight_decay": 1e-4, "optim.decay_all": True, "optim.schedule": "epoch", "optim.min_lr": 0.00012,
       "optim.epochs": 1000, "optim.base_batch": 32, "trainer.batch_size": 32, "method.options.temperature": 0.1,
       "method.options.dim": 128, "method.options.momentum": 0.999, "trainer.precision": "32-true",
       "data.split": "parametrizing", "crop.cuboid": [0.5, 1.0], "crop.cuboid_aspect": 0.75,
       "crop.cuboid_min_points": 10000, "augment.scale": [0.95, 1.05]}
for _b in ("res16unet34c", "minkunet34"):
    PRETRAIN[f"pointcontrast-{_b}-nuscenes"] = {k: (v, PC) for k, v in {**_PC, "backbone.name": _b}.items()}
    PRETRAIN[f"depthcontrast-{_b}-nuscenes"] = {k: (v, DC) for k, v in {**_DC, "backbone.name": _b}.items()}


def _get(config: Any, key: str) -> Any:
    value = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else getattr(value, part)
    return [list(v) if isinstance(v, tuple) else v for v in value] if isinstance(value, (tuple, list)) else value



@functools.cache
def _prep(name: str, options: str) -> Any:
    """The preprocessing a sparse preset builds from ``options`` (a thin network: only the input matters)."""
    return create_backbone(name, **{"width": 0.03, **json.loads(options)}).prep


def _resolved(config: Any, key: str) -> Any:
    """``key`` of the config; a backbone option the recipe leaves to its preset is read from the preprocessing."""
    prefix = "backbone.options."
    if key.startswith(prefix) and key[len(prefix):] not in config.backbone.options:
        value = getattr(_prep(config.backbone.name, json.dumps(config.backbone.options, sort_keys=True)),
                        key[len(prefix):])
        return list(value) if isinstance(value, tuple) else value
    return _get(config, key)


def _drift(name: str, config, cell: dict) -> list[str]:
    """Lines naming each key of ``cell`` whose resolved value differs from the original's."""
    out = []
    for key, (original, source) in cell.items():
        ours = _resolved(config, key)
        if ours != original and not (isinstance(ours, float) and np.isclose(ours, original)):
            out.append(f"{name}: {key}: ours {ours!r}, original {original!r} ({source})")
    return out

def test_every_published_cell_has_a_recipe_resolving_to_the_original_protocol():
    listed = {e.name: e for e in catalogue()}
    drift = []
    for name, (miou, cell) in CELLS.items():
        if name not in listed:
            drift.append(f"{name}: no such recipe")
            continue
        if listed[name].info.expected_miou != miou:
            drift.append(f"{name}: recipe.expected_miou: ours {listed[name].info.expected_miou}, original {miou} (README)")
        drift += _drift(name, load_config(SegmentationConfig, name), cell)
    assert not drift, "recipes drifted from the originals:\n" + "\n".join(drift)
    for name, cell in PRETRAIN.items():
        drift += _drift(name, load_config(PretrainConfig, name), cell)
    assert not drift, "recipes drifted from the originals:\n" + "\n".join(drift)
    # and no recipe claims a number that is not in the table above
    claimed = {e.name for e in catalogue() if e.info.expected_miou is not None}
    assert claimed == set(CELLS)


def test_downstream_recipes_name_an_existing_pretraining_recipe():
    pretrain = {e.name for e in catalogue("pretrain")}
    for e in catalogue():
        if e.info.kind != "pretrain" and e.info.method != "scratch":
            assert e.info.pretrain in pretrain, e.name
            load_config(PretrainConfig, e.info.pretrain)


def test_recipes_command_table_and_json(capsys):
    assert main(["recipes", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all(list(r) == list(COLUMNS) for r in rows)
    assert {r["kind"] for r in rows} == {"pretrain", "probe", "finetune", "train"}
    assert all(r["expected_miou"] is None or isinstance(r["expected_miou"], float) for r in rows)
    assert all(r["labels"] is None or r["labels"].endswith("%") for r in rows)
    by_name = {r["name"]: r for r in rows}
    assert by_name["slidr-res16unet34c-nuscenes-finetune-1p"] == {
        "name": "slidr-res16unet34c-nuscenes-finetune-1p", "kind": "finetune", "method": "slidr",
        "backbone": "res16unet34c", "dataset": "nuscenes", "labels": "1%",
        "paper": "SLidR (CVPR'22), README 'Few-shot semantic segmentation'", "expected_miou": 38.3}
    assert main(["recipes"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["name", "kind", "method", "backbone", "dataset", "labels", "paper", "expected", "mIoU"]
    line = next(t for t in table if t.startswith("nclr-minkunet34-nuscenes-finetune-1p "))
    assert line.split()[1:6] == ["finetune", "nclr", "minkunet34", "nuscenes", "1%"] and line.endswith("37.8")


@pytest.mark.parametrize("kind", ["probe", "finetune", "train", "pretrain"])
def test_kind_help_lists_its_recipes(kind: str, capsys):
    with pytest.raises(SystemExit):
        main([kind, "--help"])
    out = capsys.readouterr().out
    names = [e.name for e in catalogue(kind)]
    assert names and all(f"  {n}" in out for n in names)
    assert not any(f"  {e.name} " in out for e in catalogue() if e.info.kind != kind)


# --- the engine honours the protocols ------------------------------------------------------------------------------


class _Trainer:
    max_epochs, estimated_stepping_batches = 100, 700


def _optimizer(name: str, mode: str, *overrides: str):
    config = load_config(SegmentationConfig, name, list(overrides))
    spec = create_backbone("minkunet18" if config.backbone.name != "waffleiron_48_768" else "waffleiron_4_32")
    module = build_module(config, spec, SimpleNamespace(classes=("a", "b", "c"), ignore_index=255), mode)
    type(module).trainer = property(lambda self: _Trainer())  # configure_optimizers reads epochs and steps
    try:
        return module, module.configure_optimizers()
    finally:
        del type(module).trainer


def test_slidr_finetuning_runs_sgd_with_two_learning_rates_and_a_per_epoch_cosine():
    module, opt = _optimizer("slidr-res16unet34c-nuscenes-finetune-1p", "finetune")
    optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]
    assert isinstance(optimizer, torch.optim.SGD) and scheduler["interval"] == "epoch"
    lrs = {round(g["lr"], 6) for g in optimizer.param_groups}
    assert lrs == {0.02, 2.0}
    head = {id(p) for p in module.head.parameters()}
    for g in optimizer.param_groups:
        assert g["momentum"] == 0.9 and g["dampening"] == 0.1 and g["weight_decay"] == 1e-4  # 1-D ones too
        assert round(g["lr"], 6) == (2.0 if id(g["params"][0]) in head else 0.02)
    assert isinstance(module.head, torch.nn.Linear)  # SLidR's 1x1 `final`, no BatchNorm
    for _ in range(50):
        optimizer.step()  # no gradients: parameters stay, the schedule advances as in training
        scheduler["scheduler"].step()  # halfway through the 100 epochs: cosine at one half
    assert {round(g["lr"], 6) for g in optimizer.param_groups} == {0.01, 1.0}


def test_also_protocol_is_adamw_cross_entropy_only():
    module, opt = _optimizer("also-minkunet34-nuscenes-finetune-1p", "finetune")
    assert type(opt["optimizer"]) is torch.optim.AdamW and opt["lr_scheduler"]["interval"] == "epoch"
    assert all(g["weight_decay"] == 0.01 for g in opt["optimizer"].param_groups)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 255])
    expected = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255)
    assert torch.allclose(module._loss(logits, labels), expected)
    assert module._loss(logits, torch.full((6,), 255)).item() == 0.0  # no labelled point: no NaN


def test_scalr_protocol_keeps_its_shape():
    module, opt = _optimizer("scalr-wi48x768-nuscenes-probe", "probe")
    assert type(opt["optimizer"]) is torch.optim.AdamW and opt["lr_scheduler"]["interval"] == "step"
    assert isinstance(module.head[0], torch.nn.BatchNorm1d) and not module.head[1].weight.any()


# --- bad input ------------------------------------------------------------------------------------------------------


def test_downstream_recipe_refuses_a_dataset_it_was_not_written_for(tiny_world: Path, tmp_path: Path, capsys):
    code = main(["finetune", "slidr-res16unet34c-nuscenes-finetune-1p", f"data.root={tiny_world}",
                 f"out={tmp_path / 'run'}", f"pretrained={tmp_path / 'w.safetensors'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err == (f"lidarssl finetune: error: recipe slidr-res16unet34c-nuscenes-finetune-1p: data.root={tiny_world} "
                   "is synthetic, but this recipe's protocol is written for nuscenes (recipe.dataset); write a recipe "
                   "for synthetic (or drop the `recipe:` header)")


def test_a_semantickitti_root_is_pointed_to_the_semantickitti_recipe(tmp_path: Path):
    from lidarssl.recipes import check_recipe_dataset

    info = load_config(SegmentationConfig, "slidr-res16unet34c-nuscenes-finetune-1p").recipe
    with pytest.raises(ConfigError, match=r"^recipe slidr-res16unet34c-nuscenes-finetune-1p: data.root=K is "
                       r"semantickitti, but this recipe's protocol is written for nuscenes \(recipe.dataset\); use "
                       r"slidr-res16unet34c-semantickitti-finetune-1p$"):
        check_recipe_dataset(info, "semantickitti", "K", info.where())


def test_label_fraction_leaving_no_scan_names_recipe_key_and_fix(tiny_world: Path, tmp_path: Path):
    config = load_config(SegmentationConfig, "scratch-res16unet34c-nuscenes-train-1p",
                         [f"data.root={tiny_world}", f"out={tmp_path / 'run'}", "recipe.dataset=synthetic"])
    with pytest.raises(DataError, match=r"^recipe scratch-res16unet34c-nuscenes-train-1p: "
                       r"data.train_split=train@1%-scenes: split 'train@1%-scenes' of .*: every 100th scene of 2 "
                       r"scenes keeps none; use 'train@1%-frames' or a larger fraction$"):
        run_segmentation(config, "scratch")


def test_protocol_option_the_backbone_cannot_honour():
    # ScaLR's protocol sets WaffleIron grids and drop path; a MinkUNet has neither
    config = load_config(SegmentationConfig, "scalr-wi48x768-nuscenes-probe", ["backbone.name=minkunet34"])
    from lidarssl.downstream.train import segmentation_backbone

    with pytest.raises(ConfigError, match=r"^recipe scalr-wi48x768-nuscenes-probe: backbone.name=minkunet34: backbone "
                       r"'minkunet34' has no option \['drop_path', 'fov_max', 'fov_min', 'grid_shapes'\]; options: .*; "
                       r"this recipe's protocol is written for waffleiron_48_768: keep "
                       r"backbone.name=waffleiron_48_768 or override backbone.options=\{\}$"):
        segmentation_backbone(config)


# --- ScaLR's PandaSet members ---------------------------------------------------------------------------------------


@pytest.mark.real
def test_pandargt_member_pairs_with_the_front_camera_only_and_sits_lower(real_root: Path, tmp_path: Path):
    from lidarssl.data.formats import PandaSet

    members = load_config(PretrainConfig, "scalr-wi48x768-mixture").data.mixture
    gt = next(m for m in members if m.options.get("sensor") == "pandargt")
    p64 = next(m for m in members if m.options.get("sensor") == "pandar64")
    assert p64.options["z_shift"] == gt.options["z_shift"] == -1.6
    plain = PandaSet(real_root / "pandaset", sensor="pandargt", cache_dir=tmp_path)[0]
    scan = PandaSet(real_root / "pandaset", cache_dir=tmp_path, **gt.options)[0]
    assert [c.name for c in scan.cameras] == ["front_camera"]
    np.testing.assert_allclose(scan.points[:, 2], plain.points[:, 2] - 1.6, atol=1e-5)
    np.testing.assert_allclose(scan.points[:, :2], plain.points[:, :2])


def test_slidr_pretraining_decays_every_parameter_with_a_per_epoch_cosine():
    from lidarssl.methods.pretrain import build_method

    config = load_config(PretrainConfig, "slidr-res16unet34c-nuscenes", ["teacher.weights=null",
                                                                         "backbone.name=minkunet_tiny"])
    assert config.trainer.precision == "32-true" and config.optim.decay_all and config.optim.schedule == "epoch"
    module, _, _ = build_method(config)
    type(module).trainer = property(lambda self: _Trainer())
    try:
        opt = module.configure_optimizers()
    finally:
        del type(module).trainer
    assert isinstance(opt["optimizer"], torch.optim.SGD) and opt["lr_scheduler"]["interval"] == "epoch"
    assert all(g["weight_decay"] == 1e-4 for g in opt["optimizer"].param_groups)


def test_slidr_batchnorm_momentum_skips_the_residual_blocks():
    from lidarssl.models.sparse import nn as spnn

    config = load_config(SegmentationConfig, "slidr-res16unet34c-nuscenes-finetune-1p")
    spec = create_backbone("minkunet_tiny", bn_momentum=config.backbone.options["bn_momentum"],
                           block_bn_momentum=config.backbone.options["block_bn_momentum"])
    from lidarssl.models.backbones.minkunet import ResidualBlock

    in_blocks = {id(bn) for block in spec.model.modules() if isinstance(block, ResidualBlock)
                 for bn in block.modules() if isinstance(bn, spnn.BatchNorm)}
    bns = [m for m in spec.model.modules() if isinstance(m, spnn.BatchNorm)]
    assert in_blocks and {m.momentum for m in bns if id(m) in in_blocks} == {0.1}
    assert {m.momentum for m in bns if id(m) not in in_blocks} == {0.02}  # stem, strided and transposed convs


def test_drop_cuboids_draws_one_ratio_for_all_axes():
    from lidarssl.data.transforms import drop_cuboid

    grid = np.stack(np.meshgrid(*[np.linspace(0, 1, 21)] * 3, indexing="ij"), -1).reshape(-1, 3)
    points = grid * [100.0, 50.0, 10.0]
    for seed in range(20):
        removed = points[~drop_cuboid(points, np.random.default_rng(seed), max_side=0.5)]
        centre = np.random.default_rng(seed)
        centre.uniform(0, 0.5)
        c = points[centre.integers(len(points))]
        if len(removed) < 8 or np.any(np.abs(c - 50 * np.array([1, 0.5, 0.1])) > [20, 10, 2]):
            continue  # a cuboid clipped by the cloud's border says nothing of its sides
        side = np.ptp(removed, 0) / [100.0, 50.0, 10.0]
        assert np.ptp(side) <= 0.1 + 1e-9, side  # the same share of the extent on x, y and z (lattice step 0.05)


def test_flip_axes_one_mirrors_every_flipped_scan():
    from lidarssl.data.transforms import PointAugment

    rng = np.random.default_rng(0)
    one = [np.linalg.det(PointAugment(flip_axes="one", scale=None).matrix(rng)[:3, :3]) for _ in range(200)]
    anyf = [np.linalg.det(PointAugment(flip_axes="any", scale=None).matrix(rng)[:3, :3]) for _ in range(200)]
    assert np.allclose(one, -1)  # FlipXY: x or y, never none or both (ScaLR draws it with p 2/3: flip_prob)
    assert 50 < sum(d < 0 for d in anyf) < 150


def test_slidr_shaped_protocol_trains_end_to_end(tiny_world: Path, tmp_path: Path, one_thread):
    overrides = [f"data.root={tiny_world}", f"out={tmp_path / 'run'}", "data.num_workers=0", "trainer.batch_size=2",
                 "trainer.progress_bar=false", "backbone.name=waffleiron_4_32",
                 "backbone.options={fov_min: [-128, -128, -16], fov_max: [128, 128, 16]}", "optim.optimizer=sgd",
                 "optim.lr=0.01", "optim.head_lr=0.05", "optim.base_batch=2", "head=linear", "optim.schedule=epoch",
                 "optim.warmup_epochs=0", "optim.min_lr=0", "optim.loss=ce", "optim.decay_all=true",
                 "optim.weight_decay=1e-4", "optim.epochs=2", "crop={max_points: 1000}"]  # the FOV holds the whole world;
    # some crops hold only unlabelled points (a seed among the ego returns): they add no loss instead of NaN
    result = run_segmentation(load_config(SegmentationConfig, None, overrides), "scratch")
    assert 0 < result.miou <= 100
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    lr = [float(r.split(",")[rows[0].split(",").index("lr")]) for r in rows[1:]]
    # metrics.csv logs the last group's (the head's, 0.05) rate at each epoch's end, after that epoch's step of a
    # per-epoch cosine over 2 epochs: 0.05 * 0.5, then 0
    assert lr == pytest.approx([0.025, 0.0])
