"""Time and peak memory of one WaffleIron training step (forward + backward) on CPU.

Each configuration runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``, warm-up
step included) is its own. The scan is a synthetic lidar-like sweep (ground, buildings, poles)
subsampled to exactly ``--points`` points after 0.1 m voxelisation; the batch holds that one scan.
Step times are the minimum and median over ``--steps`` timed steps: on a shared machine other
processes only ever add time. Prints a markdown table.

    PYTHONPATH=src python benchmarks/waffleiron_step.py [--points 20000] [--steps 3] [--threads 2]

Reference: the original WaffleIron implementation takes about 13 s and 19 GB peak resident memory
per WI-48-256 step on 20,000 points on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

# (label, preset, overrides): grids are ScaLR's 256x256 / 256x32 / 256x32 over +-64 m, +-8 m.
CONFIGS: list[tuple[str, str, dict[str, object]]] = [
    ("WI-48-256", "waffleiron_48_256", {}),
    ("WI-48-256, checkpointing", "waffleiron_48_256", {"checkpointing": True}),
    ("WI-12-64", "waffleiron_12_64", {}),
    ("WI-4-32", "waffleiron_4_32", {}),
]
ORIGINAL_SECONDS, ORIGINAL_GB = 13.0, 19.0


def synthetic_sweep(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A lidar-like point cloud: ground with density falling with range, building facades, poles."""
    n_ground, n_wall = n // 2, n // 3
    r = 2.0 + 58.0 * rng.random(n_ground) ** 2  # denser near the sensor, like a spinning lidar
    a = rng.uniform(-np.pi, np.pi, n_ground)
    ground = np.c_[r * np.cos(a), r * np.sin(a), -1.8 + rng.normal(0, 0.03, n_ground)]
    a = rng.uniform(-np.pi, np.pi, n_wall)
    r = np.where(np.abs(np.sin(2 * a)) > 0.5, 15.0, 35.0) / np.maximum(np.abs(np.cos(a)), np.abs(np.sin(a)))
    walls = np.c_[r * np.cos(a), r * np.sin(a), rng.uniform(-1.8, 7.0, n_wall)]
    n_pole = n - n_ground - n_wall
    centres = rng.uniform(-30, 30, (40, 2))[rng.integers(0, 40, n_pole)]
    poles = np.c_[centres + rng.normal(0, 0.15, (n_pole, 2)), rng.uniform(-1.8, 4.0, n_pole)]
    points = np.r_[ground, walls, poles].astype(np.float32)
    return points, rng.uniform(0, 255, len(points)).astype(np.float32)


def worker(preset: str, overrides: dict[str, object], n_points: int, steps: int, threads: int) -> dict[str, float]:
    """Run one configuration in this process and return its timings and peak memory."""
    from lidarssl.models.backbones import create_backbone

    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    spec = create_backbone(preset, **overrides)
    points, intensity = synthetic_sweep(rng, 4 * n_points)
    kept = spec.prep(points, intensity, rng)["kept"]
    if len(kept) < n_points:
        raise SystemExit(f"synthetic sweep kept {len(kept)} < {n_points} points")
    chosen = np.sort(rng.choice(kept, n_points, replace=False))
    sample = spec.prep(points[chosen], intensity[chosen], rng)
    assert len(sample["kept"]) == n_points, "voxel subsampling of distinct voxels must keep every point"
    batch = spec.collate([sample])
    model = spec.model.train()
    times = []
    for step in range(steps + 1):  # step 0 warms up allocator and oneDNN kernels
        start = time.perf_counter()
        model(batch).square().mean().backward()
        model.zero_grad(set_to_none=True)
        if step > 0:
            times.append(time.perf_counter() - start)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "seconds": min(times),
        "median": statistics.median(times),
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,  # KiB on Linux
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=20000)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--only", nargs="*", help="labels of the configurations to run (default: all)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        preset, overrides = json.loads(args.worker)
        print(json.dumps(worker(preset, overrides, args.points, args.steps, args.threads)))
        return

    threads = args.threads or torch.get_num_threads()
    load = os.getloadavg()[0]
    print(
        f"CPU: {platform.machine()} x {os.cpu_count()}, torch {torch.__version__}, {threads} threads, "
        f"{args.points} points per scan, batch 1, {args.steps} timed steps, load average at start {load:.1f}\n"
    )
    print("| configuration | params | fwd+bwd s/step (min / median) | peak RSS GB | time vs original |"
          " memory vs original |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for label, preset, overrides in CONFIGS:
        if args.only and label not in args.only:
            continue
        cmd = [sys.executable, __file__, "--worker", json.dumps([preset, overrides]), "--points", str(args.points),
               "--steps", str(args.steps), "--threads", str(threads)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"| {label} | failed: {done.stderr.strip().splitlines()[-1]} | | | | |")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        ratios = "|"
        if preset == "waffleiron_48_256":
            ratios = f"{r['seconds'] / ORIGINAL_SECONDS:.2f}x | {r['peak_gb'] / ORIGINAL_GB:.2f}x"
        times = f"{r['seconds']:.2f} / {r['median']:.2f}"
        print(f"| {label} | {r['params'] / 1e6:.2f}M | {times} | {r['peak_gb']:.2f} | {ratios} |", flush=True)


if __name__ == "__main__":
    main()
