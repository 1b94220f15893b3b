"""Pretraining throughput on CPU: data pipeline and training step of every method with a small backbone.

A synthetic world (6 cameras at 320x180) is written to a temporary folder; each method runs the demo's small
WaffleIron (WI-12-64) with batches of 4 scans. For each method the table gives the time to build a batch in one
process (read, augment, pair, backbone preprocessing, method extras; what one DataLoader worker does) and the
time of one training step (forward, loss, backward, optimiser step), medians over the timed batches after one
warm-up batch. ScaLR runs twice: with its teacher computed online and read from the feature cache; SLidR reads
its superpixels from the cache of `lidarssl prepare superpixels`, and runs once more without one (SLIC in the
worker, on each image's first use). With ``--workers`` (1, 2 and 4 by default) it also gives the batches per
second that the training DataLoader delivers with that many worker processes once they run (3 batches per worker
after each worker's first; the workers persist across epochs, so their start-up is paid once per run), so that
one sees how many workers keep a GPU's step fed.

    PYTHONPATH=src python benchmarks/pretrain_step.py [--steps 3] [--threads 2] [--only scalr also] [--workers 1 2 4]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from machine import cpu_name

WORLD = {"seed": 0, "lidar": "nuscenes", "cameras": "nuscenes", "image_size": (320, 180)}
BACKBONE = ["backbone.name=waffleiron_12_64", "backbone.options.voxel_size=0.3",
            "backbone.options.fov_min=[-40,-40,-4]", "backbone.options.fov_max=[40,40,4]",
            "backbone.options.grid_shapes=[[160,160],[160,16],[160,16]]"]
CROP = ["pairing.crop_size=[112,208]", "pairing.flip=0.5"]
#: batches each DataLoader worker builds in the timed run (one epoch must hold them all)
LOADER_BATCHES_PER_WORKER = 3
LIDAR_ONLY = "data.options.with_images=false"  # the lidar-only methods' recipes decode no camera image
SLIC = [*CROP, "method.options.superpixels=slic150_fast"]
#: row name -> (method, teacher, overrides); {cache}: the teacher feature cache, {superpixels}: the superpixel cache
RUNS = {
    "ppkt": ("ppkt", "resnet50", CROP),
    "slidr": ("slidr", "resnet50_dilated", [*SLIC, "data.superpixel_cache={superpixels}"]),
    "slidr (SLIC on the fly, first epoch)": ("slidr", "resnet50_dilated", SLIC),
    "stslidr": ("stslidr", "resnet50_dilated", [*SLIC, "data.superpixel_cache={superpixels}"]),
    "scalr (online teacher)": ("scalr", "dinov2_vits14", ["pairing.resize=[112,224]"]),
    "scalr (cached teacher)": ("scalr", "dinov2_vits14", ["pairing.resize=[112,224]", "data.teacher_cache={cache}"]),
    "also": ("also", None, [LIDAR_ONLY]),
    "nclr": ("nclr", "resnet50", [*CROP, "pairing.flip=0.0", "augment.scale=null", "augment.flip=false",
                                  "augment.translate=[4.0,15.0]"]),
    # the options of their -wi-synthetic recipes that change what a worker builds
    "pointcontrast": ("pointcontrast", None, [LIDAR_ONLY, "method.options.npos=1024",
                                              "method.options.match_radius=0.45"]),
    "depthcontrast": ("depthcontrast", None, [LIDAR_ONLY, "crop.cuboid=[0.5,1.0]", "crop.cuboid_min_points=5000",
                                              "method.options.queue=32"]),
}


def loader_rate(samples, workers: int, batches: int) -> float:
    """Batches per second the training DataLoader delivers with ``workers`` processes once they run.

    Its workers persist across epochs, so their start-up is paid once per run: the clock starts when every
    worker has delivered its first batch (all started their second then) and stops ``batches`` later.
    """
    from lidarssl.data.loader import build_loader

    loader = iter(build_loader(samples, 4, workers))
    for _ in range(workers):
        next(loader)
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return batches / (time.perf_counter() - start)


def measure(root: Path, caches: dict[str, Path], method: str, teacher: str | None, extra: list[str], steps: int,
            workers: list[int]) -> dict[str, float]:
    from lidarssl.config import load_config
    from lidarssl.data.loader import ScanCollate, ScanSamples
    from lidarssl.data.superpixels import prepare_superpixels, superpixel_preset
    from lidarssl.methods.config import PretrainConfig
    from lidarssl.methods.pretrain import (
        build_method,
        open_pretrain_dataset,
        prepare_teacher_features,
    )

    teacher_keys = [f"teacher.name={teacher}"] if teacher else ["teacher=null"]
    config = load_config(PretrainConfig, None, [f"data.root={root}", "data.split=all", f"method.name={method}",
                                                *BACKBONE, *teacher_keys, *(e.format(**caches) for e in extra)])
    if config.data.teacher_cache is not None:
        prepare_teacher_features(config)
    torch.manual_seed(0)
    module, spec, builders = build_method(config)
    if config.data.superpixel_cache is not None:  # `lidarssl prepare superpixels`
        params = superpixel_preset(module.options.superpixels)
        prepare_superpixels(root, config.data.split, config.data.superpixel_cache, params)
    samples = ScanSamples(open_pretrain_dataset(config), spec.prep, builders, seed=0,
                          augment=config.augment.point_augment())
    collate = ScanCollate(spec.prep, builders)
    loader_samples = copy.deepcopy(samples)  # workers that have not seen the timed batches (SLIC's memory)
    optimizer = torch.optim.AdamW([p for _, p in module.trainable()], lr=1e-4)
    module.train()
    data_times, step_times = [], []
    for step in range(steps + 1):
        start = time.perf_counter()
        batch = collate([samples[(4 * step + i) % len(samples)] for i in range(4)])
        built = time.perf_counter()
        loss = torch.stack([t.float() for t in module.losses(batch).values()]).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        done = time.perf_counter()
        if step > 0:  # step 0 warms up allocators and kernels
            data_times.append(built - start)
            step_times.append(done - built)
    rates = {w: loader_rate(loader_samples, w, LOADER_BATCHES_PER_WORKER * w) for w in workers}
    return {"data": statistics.median(data_times), "step": statistics.median(step_times), "rates": rates}


def main() -> None:
    # --workers 4 on a 2-core machine is deliberate: the table shows what more workers than cores give
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed batches after one warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--only", nargs="*", help="rows to run (method names; default: all)")
    parser.add_argument("--workers", nargs="*", type=int, default=[1, 2, 4],
                        help="DataLoader worker counts to time (none: --workers with no value)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from lidarssl.methods import list_methods
    from lidarssl.synthetic import write_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "world"
        caches = {"cache": Path(tmp) / "cache", "superpixels": Path(tmp) / "superpixels"}
        frames = 4 * max(args.steps + 1, (LOADER_BATCHES_PER_WORKER + 1) * max(args.workers, default=0))
        write_dataset(WORLD, root, frames, frames_per_sequence=4, val_fraction=0.0)
        print(f"Pretraining throughput, WI-12-64, batches of 4 synthetic scans (~30k points, 6 cameras 320x180); "
              f"{cpu_name()}, {os.cpu_count()} cores, torch {args.threads} threads; "
              f"load average at start {os.getloadavg()[0]:.2f}\n")
        rates = "".join(f" batches/s, {w} worker{'s' if w > 1 else ''} |" for w in args.workers)
        print(f"| method | teacher | batch build, 1 process (s) | training step (s) | steps/s |{rates}")
        print("|---|---|---|---|---|" + "---|" * len(args.workers))
        for name, (method, teacher, extra) in RUNS.items():
            if method not in list_methods() or (args.only and method not in args.only):
                continue
            r = measure(root, caches, method, teacher, extra, args.steps, args.workers)
            rates = "".join(f" {r['rates'][w]:.2f} |" for w in args.workers)
            print(f"| {name} | {teacher or '-'} | {r['data']:.2f} | {r['step']:.2f} | {1 / r['step']:.2f} |{rates}",
                  flush=True)


if __name__ == "__main__":
    main()
