"""One training step (forward + backward) of the seeds' backbones at their batch sizes, on nuScenes-size scans:
step time, peak memory, points/s, achieved TFLOP/s and its fraction of the card's dense peak (MFU), in fp32 and
bf16 autocast, with our sparse-convolution arithmetic and with spconv's kernels side by side.

Each row runs in a fresh subprocess, so its peak memory (CUDA's max allocated, or the process's peak RSS on CPU)
is its own. FLOPs are the multiply-adds of every matrix product and convolution of the step, counted by torch's
``FlopCounterMode`` on our arithmetic (spconv's kernels do the same products over the same rulebooks; gathers
and scatters are not counted). ``--quick`` runs the tiny presets on one small scan, the mode the tests run::

    PYTHONPATH=src python benchmarks/gpu_step.py [--device cuda] [--steps 5] [--peak-tflops FP32 BF16]
    PYTHONPATH=src python benchmarks/gpu_step.py --quick
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

import numpy as np
import torch
from backbone_step import synthetic_sweep
from machine import cpu_name

#: (preset, scans per GPU, whose setting): the seeds' recipes (ScaLR's 8 scans are its global batch)
CONFIGS = (
    ("waffleiron_48_768", 8, "ScaLR"),
    ("res16unet34c", 4, "SLidR"),
    ("minkunet34", 16, "ALSO"),
    ("spvcnn", 10, "NCLR"),
    ("voxelnet", 6, "SLidR VoxelNet"),
)
QUICK = (("waffleiron_4_32", 1, "tiny"), ("minkunet_tiny", 1, "tiny"), ("spvcnn_tiny", 1, "tiny"),
         ("voxelnet_tiny", 1, "tiny"))
#: points of a nuScenes keyframe (the real sample in shared/data/real has 34,688)
NUSCENES_POINTS = 34688
#: dense peak TFLOP/s (datasheets, no structured sparsity): fp32 without tensor cores (torch's default for fp32
#: matmuls) and bf16 tensor cores, matched by a substring of the device name, most specific first
PEAKS = (
    ("H100 PCIe", 51.0, 756.0),
    ("H100", 67.0, 989.0),
    ("H200", 67.0, 989.0),
    ("A100", 19.5, 312.0),
    ("L40S", 91.6, 362.0),
    ("A10", 31.2, 125.0),
)
SPARSE_PRESETS = ("minkunet", "res16unet", "spvcnn", "voxelnet")


def card_peak(name: str) -> tuple[float, float] | None:
    """(fp32, bf16) dense peak TFLOP/s of a device named ``name``, or ``None`` when the table lacks it."""
    return next(((fp32, bf16) for key, fp32, bf16 in PEAKS if key in name), None)


def make_batch(spec, scans: int, points: int, device: str) -> dict:
    rng = np.random.default_rng(0)
    samples = [spec.prep(*synthetic_sweep(rng, points), rng) for _ in range(scans)]
    batch = spec.collate(samples)
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def worker(preset: str, scans: int, points: int, precision: str, kernels: str, steps: int, device: str) -> dict:
    """One row in this process: median step time, peak memory, FLOPs per step and points per batch."""
    from torch.utils.flop_counter import FlopCounterMode

    from lidarssl.models.backbones import create_backbone

    torch.manual_seed(0)
    sparse = preset.startswith(SPARSE_PRESETS)
    spec = create_backbone(preset, **({"kernels": kernels} if sparse else {}))
    model = spec.model.to(device).train()
    batch = make_batch(spec, scans, points, device)
    cuda = device.startswith("cuda")

    def step() -> None:
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(batch)
        out.float().square().mean().backward()
        model.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()

    if sparse:  # count the products on our arithmetic: spconv's kernels compute the same ones
        model.kernels = "lidarssl"
    with FlopCounterMode(display=False) as counter:
        step()
    if sparse:
        model.kernels = kernels
    step()  # warm-up of the kernels timed
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return {"seconds": statistics.median(times), "peak_gb": peak, "flops": counter.get_total_flops(),
            "points": int(len(batch["kept"]))}


def measure(preset: str, scans: int, points: int, precision: str, kernels: str, steps: int, device: str) -> dict | str:
    """:func:`worker` in a fresh interpreter; its result, or the last line of its error."""
    cmd = [sys.executable, __file__, "--worker", json.dumps([preset, scans, points, precision, kernels]),
           "--steps", str(steps), "--device", device]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return lines[-1] if lines else f"exit status {done.returncode}"
    return json.loads(done.stdout.strip().splitlines()[-1])


HEADER = ("| backbone (setting) | scans | points | precision | kernels | s/step | points/s | peak GB | TFLOP/step "
          "| TFLOP/s | MFU |\n|---|---|---|---|---|---|---|---|---|---|---|")


def row(label: str, scans: int, precision: str, kernels: str, result: dict | str, peak: float | None) -> str:
    head = f"| {label} | {scans} | "
    if isinstance(result, str):
        return head + f" | {precision} | {kernels} | {result} | | | | | |"
    r = result
    achieved = r["flops"] / r["seconds"] / 1e12
    mfu = f"{100 * achieved / peak:.3g} %" if peak else "n/a"
    return (head + f"{r['points']} | {precision} | {kernels} | {r['seconds']:.3g} | {r['points'] / r['seconds']:.0f} | "
            f"{r['peak_gb']:.2f} | {r['flops'] / 1e12:.3g} | {achieved:.3g} | {mfu} |")


def device_line(device: str) -> tuple[str, str]:
    """(one line naming the machine, the device name to look its peak up by)."""
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
        return f"GPU: {name}; torch {torch.__version__}, CUDA {torch.version.cuda}", name
    return f"CPU: {cpu_name()}, {os.cpu_count()} cores, load average {load}; torch {torch.__version__}", cpu_name()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
    parser.add_argument("--points", type=int, default=NUSCENES_POINTS, help="points per synthetic scan")
    parser.add_argument("--peak-tflops", type=float, nargs=2, metavar=("FP32", "BF16"),
                        help="the device's dense peak, when the built-in table lacks it (needed for MFU on CPU)")
    parser.add_argument("--quick", action="store_true", help="tiny presets, one 1500-point scan, 1 step")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        preset, scans, points, precision, kernels = json.loads(args.worker)
        print(json.dumps(worker(preset, scans, points, precision, kernels, args.steps, args.device)))
        return
    configs, points, steps = (QUICK, 1500, 1) if args.quick else (CONFIGS, args.points, args.steps)
    line, name = device_line(args.device)
    cuda = args.device.startswith("cuda")
    run = worker if args.quick else measure  # quick: no interpreter start per row
    peaks = tuple(args.peak_tflops) if args.peak_tflops else card_peak(name)
    peak_note = (f"dense peak {peaks[0]:g} (fp32) / {peaks[1]:g} (bf16) TFLOP/s" if peaks
                 else "no dense peak known: MFU n/a")
    shared = "; quick: the rows share one process, peak RSS is its peak so far" if args.quick and not cuda else ""
    print(f"{line}; {peak_note}; {points} points per scan, median of {steps} steps{shared}\n")
    print(HEADER, flush=True)
    for preset, scans, setting in configs:
        sparse = preset.startswith(SPARSE_PRESETS)
        for precision in ("fp32", "bf16"):
            peak = peaks[precision == "bf16"] if peaks else None
            for kernels in (("lidarssl", "spconv") if sparse else ("-",)):
                label = f"{preset} ({setting})"
                if kernels == "spconv" and not cuda:
                    print(row(label, scans, precision, kernels, "not run: spconv's CPU build has no backward", peak))
                    continue
                result = run(preset, scans, points, precision, kernels, steps, args.device)
                print(row(label, scans, precision, kernels, result, peak), flush=True)


if __name__ == "__main__":
    main()
