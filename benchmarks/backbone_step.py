"""Time and peak memory of one training step (forward + backward) of backbone presets on CPU.

Every preset runs in a fresh subprocess, so its peak resident memory (``ru_maxrss``) is its own. The
scan is a synthetic lidar-like sweep (ground, building facades, poles) from which exactly ``--points``
points that the preset keeps are drawn; the batch holds that one scan. Prints a markdown table with
the machine. Any registered preset works, WaffleIron's included::

    PYTHONPATH=src python benchmarks/backbone_step.py [--points 20000] [--steps 3] [--presets NAME ...]

Importable: :func:`measure` runs one preset in a subprocess, :func:`table` formats the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np
import torch
from machine import cpu_name

#: Presets used by the tests, then the full presets of the seed projects.
DEFAULT_PRESETS = (
    "minkunet_tiny", "spvcnn_tiny", "voxelnet_tiny",
    "res16unet34c", "minkunet34", "minkunet18", "spvcnn", "voxelnet",
)  # fmt: skip


def synthetic_sweep(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A lidar-like cloud: ground denser near the sensor, facades at 15 and 35 m, 40 poles."""
    n_ground, n_wall = n // 2, n // 3
    r = 2.0 + 58.0 * rng.random(n_ground) ** 2
    a = rng.uniform(-np.pi, np.pi, n_ground)
    ground = np.c_[r * np.cos(a), r * np.sin(a), -1.8 + rng.normal(0, 0.03, n_ground)]
    a = rng.uniform(-np.pi, np.pi, n_wall)
    r = np.where(np.abs(np.sin(2 * a)) > 0.5, 15.0, 35.0) / np.maximum(np.abs(np.cos(a)), np.abs(np.sin(a)))
    walls = np.c_[r * np.cos(a), r * np.sin(a), rng.uniform(-1.8, 2.9, n_wall)]
    n_pole = n - n_ground - n_wall
    centres = rng.uniform(-30, 30, (40, 2))[rng.integers(0, 40, n_pole)]
    poles = np.c_[centres + rng.normal(0, 0.15, (n_pole, 2)), rng.uniform(-1.8, 2.9, n_pole)]
    points = np.r_[ground, walls, poles].astype(np.float32)
    return points, rng.uniform(0, 255, len(points)).astype(np.float32)


def worker(preset: str, overrides: dict[str, object], n_points: int, steps: int, original: bool) -> dict[str, float]:
    """Run one preset in this process: median and minimum step time, peak RSS, parameters and voxels.

    With ``original``, the same weights and scan run through the original implementation's order of
    operations (WaffleIron presets: ``waffleiron_original.py``).
    """
    from lidarssl.models.backbones import create_backbone

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    spec = create_backbone(preset, **overrides)
    points, intensity = synthetic_sweep(rng, 4 * n_points)
    kept = spec.prep(points, intensity, rng)["kept"]
    if len(kept) < n_points:
        raise SystemExit(f"the synthetic sweep leaves {len(kept)} < {n_points} points for {preset}")
    chosen = np.sort(rng.choice(kept, n_points, replace=False))
    sample = spec.prep(points[chosen], intensity[chosen], rng)
    if len(sample["kept"]) != n_points:
        raise SystemExit(f"{preset} kept {len(sample['kept'])} of {n_points} points it kept before")
    batch = spec.collate([sample])
    model = spec.model.train()
    if original:
        from waffleiron_original import original_from, padded_inputs

        model, batch = original_from(model), padded_inputs(batch, model.waffleiron.grid_shapes)
    times = []
    for step in range(steps + 1):  # step 0 warms up the allocator and kernels
        start = time.perf_counter()
        model(batch).square().mean().backward()
        model.zero_grad(set_to_none=True)
        if step > 0:
            times.append(time.perf_counter() - start)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "voxels": len(batch["voxel_coords"]) if "voxel_coords" in batch else n_points,
        "seconds": statistics.median(times),
        "min_seconds": min(times),  # on a shared machine other processes only ever add time
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,  # KiB on Linux
    }


def measure(
    preset: str,
    overrides: dict[str, object] | None = None,
    points: int = 20000,
    steps: int = 3,
    threads: int = 0,
    original: bool = False,
) -> dict[str, float] | str:
    """Run :func:`worker` in a fresh interpreter; its result, or the last line of its error."""
    cmd = [sys.executable, __file__, "--worker", json.dumps([preset, overrides or {}, original]),
           "--points", str(points), "--steps", str(steps), "--threads", str(threads)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return lines[-1] if lines else f"exit status {done.returncode}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine(threads: int) -> str:
    """One line describing the CPU, torch, threads and the load when the run started."""
    model = cpu_name()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"CPU: {model}, {os.cpu_count()} cores, load average {load}; torch {torch.__version__}, "
        f"{threads or torch.get_num_threads()} threads"
    )


HEADER = "| preset | params | voxels | fwd+bwd s/step | peak RSS GB |\n|---|---|---|---|---|"


def row(label: str, result: dict[str, float] | str) -> str:
    """One markdown table row for a result of :func:`measure` (or its error line)."""
    if isinstance(result, str):
        return f"| {label} | failed: {result} | | | |"
    r = result
    return f"| {label} | {r['params'] / 1e6:.2f}M | {r['voxels']} | {r['seconds']:.2f} | {r['peak_gb']:.2f} |"


def table(rows: Sequence[tuple[str, dict[str, float] | str]]) -> str:
    """Markdown table of (label, result or error) rows."""
    return "\n".join([HEADER, *(row(label, r) for label, r in rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=20000, help="kept points per scan")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--presets", nargs="*", default=list(DEFAULT_PRESETS), help="registered backbone presets")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        preset, overrides, original = json.loads(args.worker)
        print(json.dumps(worker(preset, overrides, args.points, args.steps, original)))
        return
    print(f"{machine(args.threads)}; {args.points} points per scan, batch 1, median of {args.steps} steps\n")
    print(HEADER, flush=True)
    for name in args.presets:  # one row at a time: a full run takes minutes
        print(row(name, measure(name, points=args.points, steps=args.steps, threads=args.threads)), flush=True)


if __name__ == "__main__":
    main()
