"""Forward time per image of every image teacher on CPU (randomly initialised weights; timing does not depend on them).

Each teacher runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``) is its own. The input
is one 224x416 uint8 RGB image (SLidR's crop size); ViTs see it rounded to their patch size (224x420 for /14,
224x416 for /16 and /8). Prints a markdown table.

    PYTHONPATH=src python benchmarks/teacher_forward.py [--steps 3] [--batch 1] [--threads N] [--only resnet50 ...]

DINOv2 ViT-g/14 (1.1B parameters, ~4.5 GB of weights) is timed with one step after the warm-up.
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

import torch
from machine import cpu_name

HEIGHT, WIDTH = 224, 416
SLOW = {"dinov2_vitg14": 1}  # teachers timed with fewer steps: name -> steps


def worker(name: str, steps: int, batch: int) -> dict[str, object]:
    """Build ``name`` with random weights, time ``steps`` forwards after one warm-up, in this process."""
    from lidarssl.models.teachers import create_teacher

    torch.manual_seed(0)
    teacher = create_teacher(name)
    images = torch.randint(0, 256, (batch, 3, HEIGHT, WIDTH), dtype=torch.uint8)
    times = []
    for step in range(steps + 1):  # step 0 warms up the allocator and oneDNN kernels
        start = time.perf_counter()
        features = teacher(images)
        if step > 0:
            times.append(time.perf_counter() - start)
    return {
        "params": sum(p.numel() for p in teacher.parameters()),
        "input": "x".join(map(str, teacher.network_size(HEIGHT, WIDTH))),
        "features": "x".join(map(str, features.shape[1:])),
        "ms_per_image": 1000 * statistics.median(times) / batch,
        "best_ms_per_image": 1000 * min(times) / batch,  # the least disturbed run on a shared machine
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,  # KiB on Linux
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed forwards after one warm-up")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="teachers to run (default: all)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.batch)))
        return

    from lidarssl.models.teachers import list_teachers

    print(
        f"CPU: {cpu_name()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {HEIGHT}x{WIDTH} uint8 images, batch {args.batch}, "
        f"median of {args.steps} forwards after a warm-up (ViT-g/14: {SLOW['dinov2_vitg14']}); "
        f"load average before: {os.getloadavg()[0]:.1f}\n"
    )
    print("| teacher | params | network input | features (C x h x w) | ms / image (median) | best | peak RSS GB |")
    print("|---|---|---|---|---|---|---|")
    for name in list_teachers():
        if args.only and name not in args.only:
            continue
        steps = min(args.steps, SLOW.get(name, args.steps))
        cmd = [sys.executable, __file__, "--worker", name, "--steps", str(steps), "--batch", str(args.batch)]
        cmd += ["--threads", str(torch.get_num_threads())]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"| {name} | failed: {(done.stderr.strip().splitlines() or ['?'])[-1]} | | | | | |")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {name} | {r['params'] / 1e6:.1f}M | {r['input']} | {r['features']} | "
              f"{r['ms_per_image']:.0f} | {r['best_ms_per_image']:.0f} | {r['peak_gb']:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
