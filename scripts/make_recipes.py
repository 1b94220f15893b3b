"""Write the published-cell recipes of configs/ (one per table cell of the seeds' READMEs) and the `recipe:`
header of the pretraining recipes. Run from the repository root: python scripts/make_recipes.py

The values are the originals' (files named in each recipe's comment); tests/test_recipes.py checks them against
an independent table, so edit both when a value is corrected.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "lidarssl" / "configs"
NUSCENES, KITTI, PANDASET = "data/nuscenes", "data/semantic_kitti", "data/pandaset"


class _Dumper(yaml.SafeDumper):
    """Block mappings, flow lists ([224, 416]), as the hand-written recipes."""


_Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def dump(body: dict) -> str:
    return yaml.dump(body, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=200)


def write(name: str, comment: str, body: dict) -> None:
    text = "".join(f"# {line}\n" for line in comment.strip().splitlines())
    text += dump(body)
    (CONFIGS / f"{name}.yaml").write_text(text)


def pretrain_backbone(name: str) -> dict:
    """The backbone section of a pretraining recipe: downstream builds the same network on the same input."""
    return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())["backbone"]


def header(kind, method, backbone, dataset, labels, paper, miou, pretrain=None) -> dict:
    return {"kind": kind, "method": method, "backbone": backbone, "dataset": dataset, "labels": labels,
            "paper": paper, "expected_miou": miou, "pretrain": pretrain}


def pct(p: float) -> str:
    return f"{p:g}%"


def tag(p: float) -> str:
    return f"{p:g}".replace(".", "") + "p" if p < 1 else f"{p:g}p"


# --- SLidR / PPKT / ST-SLidR downstream: SLidR's downstream.py + config/semseg_{nuscenes,kitti}.yaml + README ---

SLIDR_PAPER = "SLidR (CVPR'22), README 'Few-shot semantic segmentation'"
SLIDR_FRAC_PAPER = "SLidR (CVPR'22), README 'Semantic Segmentation on nuScenes'"
STSLIDR_PAPER = "ST-SLidR (CVPR'23), README 'Results'"


def slidr_protocol(name, method, kind, dataset, labels, lr, head_lr, epochs, batch, paper, miou, pretrain,
                   source):
    nus = dataset == "nuscenes"
    p = float(labels.rstrip("%"))
    if p == 100:
        split = "train"
    else:
        split = f"train@{labels}-scenes" if nus else f"train@{labels}-frames"
    options = {**pretrain_backbone("slidr-res16unet34c-nuscenes")["options"], "bn_momentum": 0.02}
    if not nus:  # dataloader_kitti.py feeds remission + 1 (its nuScenes loader the raw intensity)
        options["intensity_mean"] = -1.0
    body = {
        "recipe": header(kind, method, "res16unet34c", dataset, labels, paper, miou, pretrain),
        "data": {"root": NUSCENES if nus else KITTI, "train_split": split, "val_split": "val", "num_workers": 8},
        "backbone": {"name": "res16unet34c", "options": options},  # SLidR downstream bn_momentum 0.02 (blocks keep 0.1)
        "head": "linear",
        "augment": {"rotate": True, "flip": True, "scale": None},
        "optim": {"optimizer": "sgd", "lr": lr, "head_lr": head_lr, "momentum": 0.9, "dampening": 0.1,
                  "weight_decay": 1.0e-4, "decay_all": True, "schedule": "epoch", "epochs": epochs,
                  "warmup_epochs": 0, "min_lr": 0.0, "base_batch": batch, "loss": "ce+lovasz",
                  "loss_support": "voxel"},
        "trainer": {"batch_size": batch, "precision": "32-true"},
    }
    what = {"probe": "linear probing", "finetune": "finetuning", "train": "training from scratch"}[kind]
    chain = (f"lidarssl pretrain {pretrain} out=runs/{pretrain}\n"
             f"lidarssl {kind} {name} pretrained=runs/{pretrain}/backbone.safetensors") if pretrain else \
        f"lidarssl {kind} {name}"
    comment = f"""{method} {what} of Res16UNet34C on {dataset} with {labels} of the labels: {miou} mIoU published
({paper}).
Protocol: {source}: SGD momentum 0.9 dampening 0.1, weight decay 1e-4 on every parameter,
cosine per epoch, {epochs} epochs, batch {batch}, lr {lr}{f' and {head_lr} for the 1x1 head' if head_lr else ''},
CE + Lovasz on one row per voxel (its representative point's label; evaluation scores every point), fp32.
Input: {'the raw intensity' if nus else 'remission + 1 (dataloader_kitti.py)'} of one point per cylindrical voxel.
{chain}"""
    write(name, comment, body)


def slidr_cells() -> None:
    src_nus = "SLidR README + config/semseg_nuscenes.yaml"
    src_ki = "SLidR README + config/semseg_kitti.yaml"
    for method, pre, lp, ft, ki in (("slidr", "slidr-res16unet34c-nuscenes", 38.8, 38.3, 44.6),
                                    ("ppkt", "ppkt-res16unet34c-nuscenes", 36.4, 37.8, 43.9),
                                    ("pointcontrast", "pointcontrast-res16unet34c-nuscenes", 21.9, 32.5, 41.1),
                                    ("depthcontrast", "depthcontrast-res16unet34c-nuscenes", 22.1, 31.7, 41.5)):
        slidr_protocol(f"{method}-res16unet34c-nuscenes-probe", method, "probe", "nuscenes", "100%", 0.05, None,
                       100, 16, SLIDR_PAPER, lp, pre, src_nus)
        slidr_protocol(f"{method}-res16unet34c-nuscenes-finetune-1p", method, "finetune", "nuscenes", "1%", 0.02,
                       2.0, 100, 16, SLIDR_PAPER, ft, pre, src_nus)
        slidr_protocol(f"{method}-res16unet34c-semantickitti-finetune-1p", method, "finetune", "semantickitti",
                       "1%", 0.05, 2.0, 100, 10, SLIDR_PAPER, ki, pre, src_ki)
    slidr_protocol("scratch-res16unet34c-nuscenes-probe", "scratch", "probe", "nuscenes", "100%", 0.05, None, 100,
                   16, SLIDR_PAPER, 8.1, None, src_nus)
    slidr_protocol("scratch-res16unet34c-semantickitti-train-1p", "scratch", "train", "semantickitti", "1%", 0.05,
                   None, 100, 10, SLIDR_PAPER, 39.5, None, src_ki)
    for p, scratch, slidr in ((1, 30.3, 39.0), (5, 47.7, 52.2), (10, 56.6, 58.8), (25, 64.8, 66.2),
                              (100, 74.2, 74.6)):
        slidr_protocol(f"scratch-res16unet34c-nuscenes-train-{tag(p)}", "scratch", "train", "nuscenes", pct(p),
                       0.05, None, 100, 16, SLIDR_FRAC_PAPER, scratch, None, src_nus)
        slidr_protocol(f"slidr-res16unet34c-nuscenes-finetune-{tag(p)}-fractions", "slidr", "finetune",
                       "nuscenes", pct(p), 0.02, 2.0, 100, 16, SLIDR_FRAC_PAPER, slidr,
                       "slidr-res16unet34c-nuscenes", src_nus)
    # ST-SLidR's post_pretrain.py: 50 epochs, batch 16 over 2 GPUs, lr 0.02 / head 2.0 for FT and LP alike
    src = "ST-SLidR post_pretrain.py + config/semseg_nuscenes.yaml"
    for teacher, (s_lp, s_ft, t_lp, t_ft) in {"moco": (38.08, 40.01, 40.56, 41.13),
                                             "swav": (38.96, 40.01, 40.36, 41.20),
                                             "dino": (38.29, 39.86, 40.36, 41.07),
                                             "obow": (37.41, 39.51, 40.00, 40.87)}.items():
        for method, lp, ft in (("slidr", s_lp, s_ft), ("stslidr", t_lp, t_ft)):
            pre = f"stslidr-{method}-res16unet34c-nuscenes-{teacher}"
            slidr_protocol(f"stslidr-{method}-{teacher}-res16unet34c-nuscenes-probe", method, "probe", "nuscenes",
                           "100%", 0.02, 2.0, 50, 16, f"{STSLIDR_PAPER}, {teacher} teacher", lp, pre, src)
            slidr_protocol(f"stslidr-{method}-{teacher}-res16unet34c-nuscenes-finetune-1p", method, "finetune",
                           "nuscenes", "1%", 0.02, 2.0, 50, 16, f"{STSLIDR_PAPER}, {teacher} teacher", ft, pre,
                           src)


# --- ALSO / NCLR downstream: ALSO's train_downstream_semseg.py + configs/cfg/nuscenes.yaml, NCLR README ---------

ALSO_EPOCHS = {100: 30, 50: 50, 10: 100, 1: 500, 0.1: 1000}
PARAM_01P = "parametrizing@nuscenes-0.1p-scene-0392.json"  # shipped in lidarssl/data/lists


def also_cells() -> None:
    paper = "NCLR (arXiv 2401.12452), README nuScenes table (MinkUNet34)"
    table = {"scratch": (21.6, 35.0, 57.3, 69.0, 71.2), "also": (26.2, 37.4, 59.0, 69.8, 71.8),
             "nclr": (26.6, 37.8, 59.5, 71.2, 72.7), "pointcontrast": (27.1, 37.0, 58.9, 69.4, 71.1),
             "depthcontrast": (21.7, 34.6, 57.4, 69.2, 71.2)}
    for method, numbers in table.items():
        for p, miou in zip((0.1, 1, 10, 50, 100), numbers):
            kind = "train" if method == "scratch" else "finetune"
            name = f"{method}-minkunet34-nuscenes-{kind}-{tag(p)}"
            pre = None if method == "scratch" else f"{method}-minkunet34-nuscenes"
            # 0.1 %: every 1000th of 600 scenes keeps none; ALSO's and NCLR's readers then take scene-0392
            split = "parametrizing" if p == 100 else PARAM_01P if p == 0.1 else f"parametrizing@{pct(p)}-scenes"
            wd = 1.0e-4 if method == "nclr" else 0.01  # NCLR downstream/configs/cfg/nuscenes_minkowski.yaml
            body = {
                "recipe": header(kind, method, "minkunet34", "nuscenes", pct(p), paper, miou, pre),
                "data": {"root": NUSCENES, "train_split": split, "val_split": "val", "num_workers": 8},
                "backbone": pretrain_backbone(pre or "also-minkunet34-nuscenes"),
                "head": "linear",
                "augment": {"rotate": True, "flip": True, "scale": None},
                "optim": {"optimizer": "adamw", "lr": 1.0e-3, "weight_decay": wd, "decay_all": True,
                          "schedule": "epoch", "epochs": ALSO_EPOCHS[p], "warmup_epochs": 0, "min_lr": 0.0,
                          "base_batch": 8, "loss": "ce"},
                "trainer": {"batch_size": 8, "precision": "32-true"},
            }
            chain = (f"lidarssl pretrain {pre} out=runs/{pre}\nlidarssl {kind} {name} "
                     f"pretrained=runs/{pre}/backbone.safetensors") if pre else f"lidarssl {kind} {name}"
            source = ("NCLR's downstream/train_downstream_semseg.py + downstream/configs/cfg/nuscenes_minkowski.yaml "
                      "and downstream/transforms/get_transforms.py (not ALSO's: weight decay 1e-4, no voxel "
                      "decimation, flip of x and y each with p 1/2)" if method == "nclr" else
                      "ALSO's train_downstream_semseg.py + configs/cfg/nuscenes.yaml")
            scenes = ("scene-0392 only (every 1000th of 600 scenes keeps none; the originals then fall back to "
                      "this scene, shipped as " + PARAM_01P.partition("@")[2] + ")") if p == 0.1 else \
                f"skip_ratio {round(100 / p)}: every k-th of the 600 `parametrizing` scenes"
            write(name, f"""{method} on nuScenes with {pct(p)} of the labels, MinkUNet34: {miou} mIoU published
({paper}). Protocol: {source}:
AdamW lr 1e-3 (weight decay {wd:g} on every parameter), cosine per epoch to 0, CE (label 0 ignored), batch 8,
{ALSO_EPOCHS[p]} epochs for {pct(p)} ({scenes}), fp32.
{chain}""", body)


# --- ScaLR downstream: ScaLR finetune.py + configs/downstream/*.yaml --------------------------------------------

SCALR_PAPER = "ScaLR (CVPR'24), README"
SCALR_DATA = {
    "nuscenes": (NUSCENES, {}, (18.742, 22.046), ([-64, -64, -8], [64, 64, 8], [[256, 256], [256, 32], [256, 32]])),
    "semantickitti": (KITTI, {}, (0.2861, 0.1409), ([-64, -64, -8], [64, 64, 8], [[256, 256], [256, 32], [256, 32]])),
    "pandar64": (PANDASET, {"sensor": "pandar64", "z_shift": -1.6}, (18.236, 25.870),
                 ([-128, -128, -8], [128, 128, 8], [[512, 512], [512, 32], [512, 32]])),
    "pandargt": (PANDASET, {"sensor": "pandargt", "z_shift": -1.6}, (23.061, 16.763),
                 ([-128, -128, -8], [128, 128, 8], [[512, 512], [512, 32], [512, 32]])),
}


def scalr_cells() -> None:
    lp = {"nuscenes": 67.8, "semantickitti": 55.8, "pandar64": 37.9, "pandargt": 34.5}
    ft = {"nuscenes": 78.4, "semantickitti": 65.8, "pandar64": 48.3, "pandargt": 41.1}
    ft_epochs = {"nuscenes": (25, 2), "semantickitti": (10, 1), "pandar64": (25, 2), "pandargt": (25, 2)}
    for ds, (root, options, (mean, std), (fmin, fmax, grids)) in SCALR_DATA.items():
        fmt = "pandaset" if ds.startswith("pandar") else ds
        if ds == "pandargt":
            ft_grid = ([-96, -96, -8], [96, 96, 8], [[384, 384], [384, 32], [384, 32]])
        else:
            ft_grid = (fmin, fmax, grids)
        for kind in ("probe", "finetune"):
            fov = (fmin, fmax, grids) if kind == "probe" else ft_grid
            panda = ds.startswith("pandar")
            if kind == "probe":
                epochs, warmup = (50, 2) if panda else (20, 2)
                optim = {"lr": 1.0e-3, "weight_decay": 3.0e-3, "min_lr": 1.0e-5, "layer_decay": 1.0}
                drop_path = 0.0
            else:
                epochs, warmup = ft_epochs[ds]
                optim = {"lr": 2.0e-3, "weight_decay": 0.0, "min_lr": 0.0, "layer_decay": 0.99}
                drop_path = 0.2
            write_scalr(f"scalr-wi48x768-{ds}-{kind}", kind, ds, fmt, root, options, mean, std, fov, drop_path,
                        epochs, warmup, optim, "train", "100%", lp[ds] if kind == "probe" else ft[ds], SCALR_PAPER)
    few = {"lr": 2.0e-3, "weight_decay": 0.0, "min_lr": 0.0, "layer_decay": 0.95}  # configs/downstream/*/..._1p.yaml
    plus = "ScaLR (CVPR'24), scalr_plus README"
    # ScaLR's 1 % / 10 % nuScenes lists (datasets/nuscenes_for_scalr.py), from its info_datasets archive
    for p, miou in ((1, 50.7), (10, 69.2)):
        write_scalr(f"scalr-wi48x768-nuscenes-finetune-{p}p", "finetune", "nuscenes", "nuscenes", NUSCENES, {},
                    18.742, 22.046, SCALR_DATA["nuscenes"][3], 0.2, 45, 4, few,
                    f"train@datasets/nuscenes-ratio_{100 // p}-v_0.npy", f"{p}%", miou, plus)
    write_scalr("scalr-wi48x768-semantickitti-finetune-1p", "finetune", "semantickitti", "semantickitti", KITTI, {},
                0.2861, 0.1409, SCALR_DATA["semantickitti"][3], 0.2, 45, 4, few, "train@1%-frames", "1%", 55.8, plus)
    # README: "WI-48-768 trained on nuscenes without pretraining ... 78.7%" (finetune.py without --pretrained_ckpt)
    write_scalr("scratch-wi48x768-nuscenes-train", "train", "nuscenes", "nuscenes", NUSCENES, {}, 18.742, 22.046,
                SCALR_DATA["nuscenes"][3], 0.2, 25, 2,
                {"lr": 2.0e-3, "weight_decay": 0.0, "min_lr": 0.0, "layer_decay": 0.99}, "train", "100%", 78.7,
                SCALR_PAPER)


def write_scalr(name, kind, ds, fmt, root, options, mean, std, fov, drop_path, epochs, warmup, optim, split,
                labels, miou, paper) -> None:
    pre = None if kind == "train" else "scalr-wi48x768-mixture"
    data = {"root": root, "train_split": split, "val_split": "val", "num_workers": 8}
    if options:
        data["options"] = options
    body = {
        "recipe": header(kind, "scalr" if pre else "scratch", "waffleiron_48_768", fmt, labels, paper, miou, pre),
        "data": data,
        "backbone": {"name": "waffleiron_48_768", "options": {
            "drop_path": drop_path, "intensity_mean": mean, "intensity_std": std, "voxel_size": 0.1,
            "fov_min": fov[0], "fov_max": fov[1], "grid_shapes": fov[2]}},
        "head": "bn-linear",
        "crop": {"max_points": 20000, "after_voxels": True},
        "augment": {"rotate": True, "flip": True, "flip_axes": "one", "flip_prob": 2 / 3, "scale": [0.9, 1.1]},
        "optim": {"optimizer": "adamw", "lr": optim["lr"], "base_batch": 8, "weight_decay": optim["weight_decay"],
                  "epochs": epochs, "warmup_epochs": warmup, "min_lr": optim["min_lr"],
                  "layer_decay": optim["layer_decay"], "schedule": "iteration", "loss": "ce+lovasz"},
        # the global batch: on N GPUs batch_size 8/N with devices N (the original's int(8/nGPU)); DDP + SyncBatchNorm
        "trainer": {"batch_size": 8, "sync_batchnorm": True},
    }
    what = {"probe": "linear probing", "finetune": "finetuning", "train": "training without pretraining"}[kind]
    chain = (f"lidarssl pretrain {pre} out=runs/{pre}\n"
             f"lidarssl {kind} {name} pretrained=runs/{pre}/backbone.safetensors" if pre else f"lidarssl {kind} {name}")
    lists = ("\nThe frame list ships in ScaLR's info_datasets.tar.gz (untar it in the working directory, convert the "
             "pickled .npy once as the error says)." if "ratio_" in split else "")
    caveat = "\nfinetune.py run without pretrained weights (layer decay 0.99 included)." if kind == "train" else ""
    write(name, f"""ScaLR {what} of WI-48-768 on {ds} with {labels} of the labels: {miou} mIoU
published ({paper}). Protocol: ScaLR finetune.py + configs/downstream/{ds}/*.yaml: AdamW lr {optim['lr']}, wd
{optim['weight_decay']}, {epochs} epochs ({warmup} warmup), cosine per iteration to {optim['min_lr']}, batch 8, scans capped at
20000 of the voxel-subsampled points around a random point (max_points after Voxelize, pc_dataset.py), flip of x or y
with p 2/3, BN + zero-initialised linear head, CE + Lovasz, fp16 on GPU, SyncBatchNorm under DDP.{lists}{caveat}
{chain}""", body)


# --- headers of existing recipes -----------------------------------------------------------------------------

PRETRAIN = {
    "scalr-wi48x768-mixture": ("scalr", "waffleiron_48_768", "mixture", "ScaLR (CVPR'24), README"),
    "slidr-res16unet34c-nuscenes": ("slidr", "res16unet34c", "nuscenes", "SLidR (CVPR'22), README"),
    "ppkt-res16unet34c-nuscenes": ("ppkt", "res16unet34c", "nuscenes", "SLidR (CVPR'22), README (PPKT row)"),
    "stslidr-res16unet34c-nuscenes": ("stslidr", "res16unet34c", "nuscenes", "ST-SLidR (CVPR'23), README"),
    "slidr-voxelnet-nuscenes": ("slidr", "voxelnet", "nuscenes", "SLidR (CVPR'22), README (detection)"),
    "also-minkunet34-nuscenes": ("also", "minkunet34", "nuscenes", "ALSO (CVPR'23), README"),
    "also-minkunet18-semantickitti": ("also", "minkunet18_sc", "semantickitti", "ALSO (CVPR'23), README"),
    "also-voxelnet-kitti": ("also", "voxelnet_kitti", "kitti", "ALSO (CVPR'23), README (detection)"),
    "also-voxelnet-kitti360": ("also", "voxelnet_kitti", "kitti360", "ALSO (CVPR'23), README (detection)"),
    "also-voxelnet-once": ("also", "voxelnet", "once", "ALSO (CVPR'23), README (detection)"),
    "nclr-minkunet34-nuscenes": ("nclr", "minkunet34", "nuscenes", "NCLR (arXiv 2401.12452), README"),
    "nclr-minkunet18-semantickitti": ("nclr", "minkunet18", "semantickitti", "NCLR README (unpublished)"),
    "scalr-wi-synthetic": ("scalr", "waffleiron_12_64", "synthetic", None),
    "also-wi-synthetic": ("also", "waffleiron_12_64", "synthetic", None),
    "nclr-wi-synthetic": ("nclr", "waffleiron_12_64", "synthetic", None),
    "pointcontrast-res16unet34c-nuscenes": ("pointcontrast", "res16unet34c", "nuscenes",
                                            "SLidR (CVPR'22), README (PointContrast row)"),
    "depthcontrast-res16unet34c-nuscenes": ("depthcontrast", "res16unet34c", "nuscenes",
                                            "SLidR (CVPR'22), README (DepthContrast row)"),
    "pointcontrast-minkunet34-nuscenes": ("pointcontrast", "minkunet34", "nuscenes",
                                          "NCLR (arXiv 2401.12452), README (PointContrast row)"),
    "depthcontrast-minkunet34-nuscenes": ("depthcontrast", "minkunet34", "nuscenes",
                                          "NCLR (arXiv 2401.12452), README (DepthContrast row)"),
    "pointcontrast-wi-synthetic": ("pointcontrast", "waffleiron_12_64", "synthetic", None),
    "depthcontrast-wi-synthetic": ("depthcontrast", "waffleiron_12_64", "synthetic", None),
}
OTHER = {
    "seg-wi-synthetic": ("train", "scratch", "waffleiron_12_64", "synthetic", "100%", None, None, None),
    "probe-wi-synthetic": ("probe", "scalr", "waffleiron_12_64", "synthetic", "100%", None, None,
                           "scalr-wi-synthetic"),
    "seg-wi48x384-nuscenes": ("train", "scratch", "waffleiron_48_384", "nuscenes", "100%",
                              "WaffleIron (ICCV'23), README", 77.6, None),
    "seg-wi48x256-semantickitti": ("train", "scratch", "waffleiron_48_256", "semantickitti", "100%",
                                   "WaffleIron (ICCV'23), README", 68.0,
                                   None),
}


def set_header(name: str, info: dict) -> None:
    path = CONFIGS / f"{name}.yaml"
    text = path.read_text()
    text = re.sub(r"(?m)^recipe:\n(?:  .*\n)+", "", text)
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines) and lines[i].startswith("#"):
        i += 1
    block = dump({"recipe": info})
    path.write_text("".join(lines[:i]) + block + "".join(lines[i:]))


def headers() -> None:
    for name, (method, backbone, dataset, paper) in PRETRAIN.items():
        info = header("pretrain", method, backbone, dataset, None, paper, None)
        info["synthetic"] = dataset == "synthetic"
        set_header(name, info)
    for name, (kind, method, backbone, dataset, labels, paper, miou, pre) in OTHER.items():
        info = header(kind, method, backbone, dataset, labels, paper, miou, pre)
        info["synthetic"] = dataset == "synthetic"
        set_header(name, info)


def stslidr_pretrain() -> None:
    """ST-SLidR's README pretrains SLidR and ST-SLidR from four ResNet-50 teachers (config/pretrain/nuscenes/slidr)."""
    weights = {"moco": "weights/moco_v2_800ep_pretrain.pth.tar", "swav": "weights/swav_800ep_pretrain.pth.tar",
               "dino": "weights/dino_resnet50_pretrain.pth", "obow": "weights/obow_resnet50.pth"}
    base = yaml.safe_load((CONFIGS / "stslidr-res16unet34c-nuscenes.yaml").read_text())
    base.pop("recipe", None)
    for teacher, path in weights.items():
        for method in ("slidr", "stslidr"):
            body = {"recipe": {**header("pretrain", method, "res16unet34c", "nuscenes", None,
                                        f"{STSLIDR_PAPER}, {teacher} teacher", None), "synthetic": False}}
            body.update(yaml.safe_load(yaml.safe_dump(base)))
            body["teacher"]["weights"] = path
            if method == "slidr":
                body["method"] = {"name": "slidr", "options": {"dim": 64, "temperature": 0.07,
                                                              "superpixels": "slic150"}}
            name = f"stslidr-{method}-res16unet34c-nuscenes-{teacher}"
            write(name, f"""{method} pretraining as ST-SLidR's README ran it (config/pretrain/nuscenes/slidr/{'stslidr_classbalance' if method == 'stslidr' else 'slidr'}_{teacher}.yaml):
ST-SLidR's training setting (2 GPUs x 8 scans, lr 0.5, SyncBN, seed 2022) with a ResNet-50 teacher from {teacher}.
Set teacher.weights to that teacher's ResNet-50 file. Downstream: stslidr-{method}-{teacher}-res16unet34c-nuscenes-*.""",
                  body)


if __name__ == "__main__":
    slidr_cells()
    also_cells()
    scalr_cells()
    headers()
    stslidr_pretrain()
