"""Time and peak memory of one WaffleIron training step (forward + backward) on CPU, next to the original's.

Every configuration runs twice through ``backbone_step.measure``, each run in a fresh subprocess (so its
peak resident memory is its own), on the same scan (synthetic sweep subsampled to exactly ``--points``
kept points, batch of one), the same weights and the same threads: once as lidarssl's WaffleIron and once
in the original implementation's order of operations (``waffleiron_original.py``, equal outputs and
gradients by test). The ratios are lidarssl's over the original's. Prints a markdown table.

    PYTHONPATH=src python benchmarks/waffleiron_step.py [--points 20000] [--depth 48] [--steps 3] [--threads 2]

The original keeps dense (C, H, W) grids for backward, so its peak grows with depth by at least 0.14 GB
per WI-256 block even on small scans (about 15 GB at full size); ``--depth`` runs shallower stacks of
the same blocks where memory is short.
"""

from __future__ import annotations

import argparse

from backbone_step import machine, measure

# (label, channels, depth or None for --depth, overrides); grids are ScaLR's 256x256 / 256x32 / 256x32
# over +-64 m, +-8 m.
CONFIGS: list[tuple[str, int, int | None, dict[str, object]]] = [
    ("WI-{depth}-256", 256, None, {}),
    ("WI-{depth}-256, checkpointing", 256, None, {"checkpointing": True}),
    ("WI-12-64", 64, 12, {}),
    ("WI-4-32", 32, 4, {}),
]
HEADER = (
    "| configuration | params | fwd+bwd s/step (min / median) | original s/step (min / median) | time vs original |"
    " peak RSS GB | original peak RSS GB | memory vs original |\n|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=20000)
    parser.add_argument("--depth", type=int, default=48, help="blocks of the 256-channel configurations")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--only", nargs="*", help="labels of the configurations to run (default: all)")
    args = parser.parse_args()
    print(f"{machine(args.threads)}; {args.points} points per scan, batch 1, {args.steps} timed steps\n")
    print(HEADER, flush=True)
    originals: dict[tuple[int, int], dict[str, float] | str] = {}
    for label, channels, depth, overrides in CONFIGS:
        depth = depth or args.depth
        label = label.format(depth=depth)
        if args.only and label not in args.only:
            continue
        run = {"points": args.points, "steps": args.steps, "threads": args.threads}
        size = {"channels": channels, "depth": depth}
        if (channels, depth) not in originals:
            originals[channels, depth] = measure("waffleiron", size, original=True, **run)
        r, o = measure("waffleiron", {**size, **overrides}, **run), originals[channels, depth]
        failed = next((f"failed: {x}" for x in (r, o) if isinstance(x, str)), None)
        if failed:
            print(f"| {label} | {failed} | | | | | | |", flush=True)
            continue
        print(
            f"| {label} | {r['params'] / 1e6:.2f}M | {r['min_seconds']:.2f} / {r['seconds']:.2f} "
            f"| {o['min_seconds']:.2f} / {o['seconds']:.2f} | {r['min_seconds'] / o['min_seconds']:.2f}x "
            f"| {r['peak_gb']:.2f} | {o['peak_gb']:.2f} | {r['peak_gb'] / o['peak_gb']:.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
