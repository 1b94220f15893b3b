"""Time and peak memory of one WaffleIron training step (forward + backward) on CPU, against the original.

Runs each configuration through ``backbone_step.measure`` (fresh subprocess, synthetic sweep subsampled to
exactly ``--points`` kept points, batch of one scan) and adds the comparison with the original
implementation, which takes about 13 s and 19 GB peak resident memory per WI-48-256 step on 20,000
points on 2 CPU cores. Prints a markdown table.

    PYTHONPATH=src python benchmarks/waffleiron_step.py [--points 20000] [--steps 3] [--threads 2]
"""

from __future__ import annotations

import argparse

from backbone_step import machine, measure

# (label, preset, overrides): grids are ScaLR's 256x256 / 256x32 / 256x32 over +-64 m, +-8 m.
CONFIGS: list[tuple[str, str, dict[str, object]]] = [
    ("WI-48-256", "waffleiron_48_256", {}),
    ("WI-48-256, checkpointing", "waffleiron_48_256", {"checkpointing": True}),
    ("WI-12-64", "waffleiron_12_64", {}),
    ("WI-4-32", "waffleiron_4_32", {}),
]
ORIGINAL_SECONDS, ORIGINAL_GB = 13.0, 19.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=20000)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--only", nargs="*", help="labels of the configurations to run (default: all)")
    args = parser.parse_args()
    print(f"{machine(args.threads)}; {args.points} points per scan, batch 1, {args.steps} timed steps\n")
    print("| configuration | params | fwd+bwd s/step (min / median) | peak RSS GB | time vs original |"
          " memory vs original |\n|---|---|---|---|---|---|", flush=True)  # fmt: skip
    for label, preset, overrides in CONFIGS:
        if args.only and label not in args.only:
            continue
        r = measure(preset, overrides, points=args.points, steps=args.steps, threads=args.threads)
        if isinstance(r, str):
            print(f"| {label} | failed: {r} | | | | |")
            continue
        ratios = "|"
        if preset == "waffleiron_48_256":
            ratios = f"{r['min_seconds'] / ORIGINAL_SECONDS:.2f}x | {r['peak_gb'] / ORIGINAL_GB:.2f}x"
        times = f"{r['min_seconds']:.2f} / {r['seconds']:.2f}"
        print(f"| {label} | {r['params'] / 1e6:.2f}M | {times} | {r['peak_gb']:.2f} | {ratios} |", flush=True)


if __name__ == "__main__":
    main()
