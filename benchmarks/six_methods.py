"""The six-method table: every pretext method on synthetic worlds, linear probing and few-label finetuning.

For each world seed (``--seeds``), generates a world, trains the semantic 2D teacher ``resnet18_semantic`` on its
training split (``lidarssl prepare teacher``; it stands in for DINOv2) and measures its ceiling (its own features at
the paired points, linearly probed: ``teacher_ceiling.py``), then for each of PPKT, SLidR, ST-SLidR, ScaLR (with
that teacher; ``scalr-centred`` with ``center_targets``), ALSO, NCLR, PointContrast and DepthContrast pretrains
the demo's WI-12-64 without labels, and scores on every val point:

* linear probing (``feature_probe.py``: a BN + linear head on the frozen backbone's features, computed once,
  ``--probe-epochs`` over the kept points of every train scan, scored on every val point; the head and schedule
  of the teacher's ceiling) of the pretrained backbone vs a randomly initialised one;
* few-label finetuning (recipe ``seg-wi-synthetic`` on ``train@10%-frames``, scored after the last epoch) vs the
  same recipe from scratch (``--finetune-methods``: which methods),

with the same recipe and seed everywhere within a world. Prints, per world, the table, the per-class IoU, wall
times and each run's pretext metrics (first -> last epoch); then over the worlds the mean and spread (sample
standard deviation) of every number, and each image method's share of the teacher's gain over random,
``(probe - random) / (ceiling - random)``. Writes ``OUT/<seed>/results.json`` per world and ``OUT/results.json``:
``{"seeds", "worlds": {seed: per-world results}, "summary": {name: {key: {"mean", "std", "min"}}}}`` (``null``
where a protocol was skipped with ``--protocols``).

    PYTHONPATH=src python benchmarks/six_methods.py --seeds 201 202 203 --out runs/six
    PYTHONPATH=src python benchmarks/six_methods.py --seeds 1 2 --out /tmp/six --tiny   # minutes: a smoke test

Worlds side by side, one torch thread each, then summarised together::

    for s in 201 202 203; do
      PYTHONPATH=src python benchmarks/six_methods.py --seeds $s --out runs/six --threads 1 &
    done
    wait; PYTHONPATH=src python benchmarks/six_methods.py --seeds 201 202 203 --out runs/six --reuse
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from feature_probe import probe_backbone
from machine import cpu_name
from teacher_ceiling import teacher_ceiling

METHODS = ("ppkt", "slidr", "stslidr", "scalr", "scalr-centred", "also", "nclr", "pointcontrast", "depthcontrast")
IMAGE_METHODS = ("ppkt", "slidr", "stslidr", "scalr", "scalr-centred")
#: rows that run a method with an option: row -> (method, overrides)
VARIANTS = {"scalr-centred": ("scalr", ["method.options.center_targets=true"])}
SPLIT = "train@10%-frames"
#: the image methods' recipe on the synthetic world (their released recipes are for nuScenes and big nets)
PAIRING = {"ppkt": ["pairing.resize=null", "pairing.crop_size=[64,112]", "pairing.flip=0.5", "method.options.max_pairs=4096"],
           "slidr": ["pairing.resize=null", "pairing.crop_size=[64,112]", "pairing.flip=0.5", "method.options.superpixels=slic30_fast"],
           "stslidr": ["pairing.resize=null", "pairing.crop_size=[64,112]", "method.options.superpixels=slic30_fast"],
           "scalr": []}
TINY_BACKBONE = ["backbone.name=waffleiron_4_32", "backbone.options.voxel_size=0.4",
                 "backbone.options.grid_shapes=[[32,32],[32,8],[32,8]]"]


def _pretrain_overrides(method: str, world: Path, out: Path, teacher: Path, args: argparse.Namespace,
                        seed: int) -> list[str]:
    common = [f"data.root={world}", f"out={out}", f"optim.epochs={args.pretrain_epochs}", f"seed={seed}",
              "trainer.progress_bar=false", *(TINY_BACKBONE if args.tiny else [])]
    base, options = VARIANTS.get(method, (method, []))
    common += options
    if method in IMAGE_METHODS:
        extra = [f"method.name={base}", "teacher.name=resnet18_semantic", f"teacher.weights={teacher}"]
        extra.append(f"data.teacher_cache={out.parent / 'cache'}" if base == "scalr" else "data.teacher_cache=null")
        return [*common, *extra, *PAIRING[base]]
    if method == "nclr":
        return [*common, "teacher.name=resnet18_semantic", f"teacher.weights={teacher}"]
    if method == "depthcontrast" and args.tiny:
        return [*common, "method.options.queue=2"]  # at most the training scans of the tiny world
    return common


def _recipe(method: str) -> str:
    lidar_only = ("also", "nclr", "pointcontrast", "depthcontrast")
    return f"{method}-wi-synthetic" if method in lidar_only else "scalr-wi-synthetic"


def _pretext(out: Path) -> str:
    from lidarssl.runs import logged_epochs

    path = out / "metrics.csv"
    if not path.is_file():
        return "no metrics.csv"
    rows = logged_epochs(path)
    keys = sorted({k for r in rows for k, v in r.items() if k.startswith("train/") and not k.endswith("_step") and v})
    parts = []
    for k in keys:
        values = [float(r[k]) for r in rows if r.get(k)]
        parts.append(f"{k.removeprefix('train/').removesuffix('_epoch')} {values[0]:.3g} -> {values[-1]:.3g}")
    return ", ".join(parts) or "no train metrics"


KEYS = ("probe_miou", "random_probe_miou", "finetune_miou", "scratch_miou")


def run_world(seed: int, out_dir: Path, args: argparse.Namespace) -> dict:
    """Every method on the world of ``seed``: prints its tables, writes ``out_dir/results.json``, returns it."""
    from lidarssl.checkpoints import save_weights
    from lidarssl.cli import main as lidarssl
    from lidarssl.config import SegmentationConfig, load_config
    from lidarssl.data.datasets import open_dataset
    from lidarssl.downstream.train import run_segmentation
    from lidarssl.methods.config import PretrainConfig
    from lidarssl.methods.pretrain import prepare_teacher_features, run_pretraining
    from lidarssl.methods.semantic_teacher import TeacherTraining, train_semantic_teacher
    from lidarssl.metrics import format_iou_table, miou, variance_spread
    from lidarssl.models.backbones import create_backbone

    load = os.getloadavg()[0]
    out_dir.mkdir(parents=True, exist_ok=True)
    world, teacher = out_dir / "world", out_dir / "teacher" / "resnet18_semantic.safetensors"
    times: dict[str, float] = {}
    start = time.perf_counter()
    size = "[160,90]" if args.tiny else "[320,180]"
    per_sequence = 2 if args.tiny else 8
    lidarssl(["generate", "world-nuscenes", f"out={world}", f"frames={args.frames}", f"seed={seed}",
              f"frames_per_sequence={per_sequence}", "val_fraction=0.17", f"image_size={size}", "overwrite=true"])
    times["world"] = time.perf_counter() - start
    start = time.perf_counter()
    stats = train_semantic_teacher(world, teacher, TeacherTraining(epochs=args.teacher_epochs, seed=seed))
    times["teacher"] = time.perf_counter() - start
    start = time.perf_counter()
    ceiling = round(teacher_ceiling(world, teacher, epochs=args.probe_epochs, seed=seed), 2)
    times["ceiling"] = time.perf_counter() - start

    seg_tiny = TINY_BACKBONE if args.tiny else []
    backbone = None
    weights: dict[str, Path] = {}
    pretext: dict[str, str] = {}
    for method in args.methods:
        out = out_dir / f"pretrain-{method}"
        shutil.rmtree(out, ignore_errors=True)
        config = load_config(PretrainConfig, _recipe(method), _pretrain_overrides(method, world, out, teacher, args, seed))
        backbone = config.backbone
        start = time.perf_counter()
        if config.data.teacher_cache is not None:
            prepare_teacher_features(config)
        weights[method] = run_pretraining(config).backbone
        times[method] = time.perf_counter() - start
        pretext[method] = _pretext(out)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        spec = create_backbone(backbone.name, **backbone.options)
    random = save_weights(out_dir / "random" / "backbone.safetensors", spec.model.state_dict(), {"backbone": spec.name})

    def segment(name: str, recipe: str, mode: str, path: Path | None, extra: list[str]):
        out = out_dir / name
        shutil.rmtree(out, ignore_errors=True)
        config = load_config(SegmentationConfig, recipe, [
            f"data.root={world}", f"out={out}", f"seed={seed}", "trainer.progress_bar=false", *seg_tiny,
            *([f"pretrained={path}"] if path else []), *extra])
        begin = time.perf_counter()
        result = run_segmentation(config, mode=mode)
        times[name] = time.perf_counter() - begin
        return result

    results: dict[str, dict[str, float | None]] = {m: dict.fromkeys(KEYS) for m in args.methods}
    tables: dict[str, dict[str, np.ndarray]] = {}
    spread: dict[str, tuple[float, ...]] = {}  # (PC1 share, effective rank) of the val features
    if "probe" in args.protocols:
        def probe(name: str, path: Path) -> np.ndarray:
            begin = time.perf_counter()
            conf, features = probe_backbone(path, world, backbone.options, args.probe_epochs, seed)
            times[f"probe-{name}"] = time.perf_counter() - begin
            spread[name] = tuple(round(v, 3) for v in variance_spread(features))
            return conf.matrix

        tables["probe"] = {"random": probe("random", random)}
        for m in args.methods:
            tables["probe"][m] = probe(m, weights[m])
            results[m].update(probe_miou=round(100 * miou(tables["probe"][m]), 2),
                              random_probe_miou=round(100 * miou(tables["probe"]["random"]), 2))
    if "finetune" in args.protocols:
        finetune = [f"data.train_split={SPLIT}", f"optim.epochs={args.finetune_epochs}", "optim.warmup_epochs=1",
                    f"trainer.val_every={args.finetune_epochs}"]  # scored once, after the last epoch
        scratch = segment("scratch", "seg-wi-synthetic", "scratch", None, finetune)
        tables["finetune"] = {"scratch": scratch.confusion}
        for m in args.finetune_methods or args.methods:
            r = segment(f"finetune-{m}", "seg-wi-synthetic", "finetune", weights[m], finetune)
            tables["finetune"][m] = r.confusion
            results[m].update(finetune_miou=round(r.miou, 2), scratch_miou=round(scratch.miou, 2))
    classes = open_dataset(world, split="val").class_map.classes

    print(f"\nSix methods on a synthetic world of {args.frames} frames, seed {seed}; teacher resnet18_semantic "
          f"({args.teacher_epochs} epochs, train pixel accuracy {stats['pixel_accuracy']:.3f}, ceiling {ceiling:.1f}); "
          f"pretraining {args.pretrain_epochs} epochs, probe {args.probe_epochs}, finetune {args.finetune_epochs} on "
          f"{SPLIT}; {cpu_name()}, {os.cpu_count()} cores, load average {load:.2f}\n")
    print("| method | probe mIoU | random probe | finetune mIoU | scratch | pretraining (min) |\n|---|---|---|---|---|---|")
    for m, r in results.items():
        cells = ["-" if r[k] is None else f"{r[k]:.1f}" for k in KEYS]
        print(f"| {m} | " + " | ".join(cells) + f" | {times[m] / 60:.1f} |")
    for protocol, runs in tables.items():
        print(f"\n{protocol}, per-class IoU:\n```\n" + format_iou_table(runs, classes) + "\n```")
    print("\nPretext metrics, first -> last epoch:")
    for m, text in pretext.items():
        print(f"- {m}: {text}")
    if spread:
        print("\nVal features, PC1 share of the variance / effective rank: "
              + ", ".join(f"{k} {v[0]:.2f} / {v[1]:.2f}" for k, v in spread.items()))
    print("\nWall times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    doc = {"seed": seed, "settings": {k: getattr(args, k) for k in SETTINGS}, "methods": results,
           "teacher_ceiling_miou": ceiling, "times_s": times,
           "pretext": pretext, "feature_spread": spread, "teacher_pixel_accuracy": stats["pixel_accuracy"]}
    _write_json(out_dir / "results.json", doc)
    return doc


def teacher_share(world: dict, method: str) -> float | None:
    """An image method's probe gain over random as a share of the teacher's: (probe - random) / (ceiling - random)."""
    r = world["methods"][method]
    if method not in IMAGE_METHODS or r["probe_miou"] is None:
        return None
    gain = world["teacher_ceiling_miou"] - r["random_probe_miou"]
    return round((r["probe_miou"] - r["random_probe_miou"]) / gain, 3) if gain > 0 else None


def summarise(worlds: list[dict]) -> dict[str, dict[str, dict[str, float] | None]]:
    """Mean, sample standard deviation (0 for one world) and minimum over the worlds of every number."""
    def stats(values: list[float | None]) -> dict[str, float] | None:
        if not values or any(v is None for v in values):
            return None
        a = np.asarray(values, np.float64)
        return {"mean": round(float(a.mean()), 3), "std": round(float(a.std(ddof=1)) if len(a) > 1 else 0.0, 3),
                "min": round(float(a.min()), 3)}

    summary: dict[str, dict[str, dict[str, float] | None]] = {
        "teacher": {"ceiling_miou": stats([w["teacher_ceiling_miou"] for w in worlds])}}
    for m in worlds[0]["methods"]:
        summary[m] = {k: stats([w["methods"][m][k] for w in worlds]) for k in KEYS}
        summary[m]["probe_gain"] = stats([_gain(w, m, "probe_miou", "random_probe_miou") for w in worlds])
        summary[m]["finetune_gain"] = stats([_gain(w, m, "finetune_miou", "scratch_miou") for w in worlds])
        summary[m]["teacher_share"] = stats([teacher_share(w, m) for w in worlds]) if m in IMAGE_METHODS else None
    return summary


def _gain(world: dict, method: str, key: str, base: str) -> float | None:
    r = world["methods"][method]
    return None if r[key] is None else r[key] - r[base]


def _cell(s: dict[str, float] | None, percent: bool = False) -> str:
    if s is None:
        return "-"
    f = 100 if percent else 1
    return f"{f * s['mean']:.1f} ± {f * s['std']:.1f} (min {f * s['min']:.1f})"


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)


SETTINGS = ("frames", "pretrain_epochs", "probe_epochs", "finetune_epochs", "teacher_epochs", "tiny",
            "finetune_methods")


def _reused(seed: int, args: argparse.Namespace) -> dict | None:
    """With ``--reuse``, the world's results.json of an earlier run with the same settings and methods."""
    path = args.out / str(seed) / "results.json"
    if not args.reuse or not path.is_file():
        return None
    doc = json.loads(path.read_text())
    settings = {k: getattr(args, k) for k in SETTINGS}
    if doc.get("settings") != settings or list(doc["methods"]) != list(args.methods):
        raise SystemExit(f"{path}: written with other settings or methods ({doc.get('settings')}, "
                         f"{list(doc['methods'])}); rerun that world without --reuse")
    print(f"world {seed}: results of {path}")
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", required=True,
                        help="world and run seeds, one world each (use seeds no test uses)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--protocols", nargs="+", default=["probe", "finetune"], choices=["probe", "finetune"])
    parser.add_argument("--finetune-methods", nargs="+", choices=METHODS,
                        help="the methods to finetune (default: every one of --methods)")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--pretrain-epochs", type=int, default=10)
    parser.add_argument("--probe-epochs", type=int, default=60,
                        help="probe epochs (10 steps each at 48 frames); also the teacher ceiling's probe")
    parser.add_argument("--finetune-epochs", type=int, default=40)
    parser.add_argument("--teacher-epochs", type=int, default=3)
    parser.add_argument("--reuse", action="store_true",
                        help="take a world's OUT/<seed>/results.json when it was written with the same settings "
                             "(worlds run side by side as separate processes, then summarised together)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads (default: every core; 1 to run several worlds side by side)")
    parser.add_argument("--tiny", action="store_true", help="a smoke test: 4 small frames, a tiny backbone, 1 epoch")
    args = parser.parse_args()
    if args.tiny:
        args.frames, args.pretrain_epochs, args.probe_epochs, args.finetune_epochs, args.teacher_epochs = 4, 1, 1, 1, 1
    torch.set_num_threads(args.threads)
    worlds = [_reused(seed, args) or run_world(seed, args.out / str(seed), args) for seed in args.seeds]
    summary = summarise(worlds)
    print(f"\nOver {len(worlds)} world(s), seeds {' '.join(map(str, args.seeds))}: mean ± standard deviation "
          f"(minimum); teacher ceiling {_cell(summary['teacher']['ceiling_miou'])} mIoU\n")
    print("| method | probe mIoU | random probe | probe gain | share of teacher gain (%) | finetune mIoU | scratch "
          "| finetune gain |\n|---|---|---|---|---|---|---|---|")
    for m in args.methods:
        s = summary[m]
        print(f"| {m} | {_cell(s['probe_miou'])} | {_cell(s['random_probe_miou'])} | {_cell(s['probe_gain'])} | "
              f"{_cell(s['teacher_share'], percent=True)} | {_cell(s['finetune_miou'])} | {_cell(s['scratch_miou'])} "
              f"| {_cell(s['finetune_gain'])} |")
    _write_json(args.out / "results.json", {"seeds": args.seeds, "worlds": {str(w["seed"]): w for w in worlds},
                                            "summary": summary})
    print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
