"""Few-label finetuning on the synthetic world: from ALSO and NCLR pretraining vs from scratch.

The seeds report nuScenes 1 % finetuning (ALSO 37.4, NCLR 37.8, scratch 35.0 mIoU). Here: a synthetic world of
48 frames (6 sequences, one held out for validation), the demo's WI-12-64 pretrained on the 40 training frames
without labels (recipes also-wi-synthetic and nclr-wi-synthetic), then finetuned on every 10th training frame
(split ``train@10%-frames``: 4 labelled scans) with the same recipe and seed as the run from scratch, and scored
on every point of the val split.

    PYTHONPATH=src python benchmarks/fewlabel_finetune.py [--out runs/fewlabel] [--pretrain-epochs 12] [--epochs 40]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import time
from pathlib import Path

import torch
from machine import cpu_name

SPLIT = "train@10%-frames"
#: what each pretext learned, per epoch: ALSO's occupancy, NCLR's contrastive loss and its pose views
PRETEXT = {"also": ("train/occ_iou", "train/occ_acc"),
           "nclr": ("train/nce", "train/nclr_pose_views", "train/nclr_pose_skipped_keypoints")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/fewlabel"))
    parser.add_argument("--pretrain-epochs", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=40, help="finetuning epochs (one step each: 4 scans)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    from lidarssl.cli import main as lidarssl
    from lidarssl.config import SegmentationConfig, load_config
    from lidarssl.downstream.train import run_segmentation
    from lidarssl.methods.config import PretrainConfig
    from lidarssl.methods.pretrain import run_pretraining
    from lidarssl.metrics import format_iou_table

    load = os.getloadavg()[0]
    world = args.out / "world"
    if not (world / "index.json").is_file():  # the demo's world
        lidarssl(["generate", "world-nuscenes", f"out={world}", "frames=48", "frames_per_sequence=8",
                  "val_fraction=0.17", "image_size=[320,180]", f"seed={args.seed}"])
    weights: dict[str, Path | None] = {"scratch": None}
    times = {}
    for method in ("also", "nclr"):
        out = args.out / f"pretrain-{method}"
        shutil.rmtree(out, ignore_errors=True)
        config = load_config(PretrainConfig, f"{method}-wi-synthetic", [
            f"data.root={world}", f"out={out}", f"optim.epochs={args.pretrain_epochs}", f"seed={args.seed}",
            "trainer.progress_bar=false"])
        start = time.perf_counter()
        weights[method] = run_pretraining(config).backbone
        times[method] = time.perf_counter() - start
    results = {}
    for name, path in weights.items():
        out = args.out / f"finetune-{name}"
        shutil.rmtree(out, ignore_errors=True)
        config = load_config(SegmentationConfig, "seg-wi-synthetic", [
            f"data.root={world}", f"data.train_split={SPLIT}", f"out={out}", f"optim.epochs={args.epochs}",
            "optim.warmup_epochs=4", f"seed={args.seed}", "trainer.progress_bar=false",
            *([f"pretrained={path}"] if path else [])])
        results[name] = run_segmentation(config, mode="finetune" if path else "scratch")
    print(f"Few-label finetuning ({SPLIT}: 4 labelled scans), WI-12-64, {args.epochs} epochs, seed {args.seed}; "
          f"pretraining {args.pretrain_epochs} epochs on 40 unlabelled scans (ALSO {times['also'] / 60:.1f} min, "
          f"NCLR {times['nclr'] / 60:.1f} min); {cpu_name()}, {os.cpu_count()} cores, load average {load:.2f}\n")
    print("| init | val mIoU |\n|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r.miou:.1f} |")
    table = format_iou_table({k: r.confusion for k, r in results.items()}, results["scratch"].classes)
    print("\n```\n" + table + "\n```")
    print("\nPretext metrics of the pretraining runs, first -> last epoch (from their metrics.csv):\n")
    for method, keys in PRETEXT.items():
        with (args.out / f"pretrain-{method}" / "metrics.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        print(f"- {method}: " + ", ".join(f"{k} {float(rows[0][k]):.3g} -> {float(rows[-1][k]):.3g}" for k in keys))


if __name__ == "__main__":
    main()
