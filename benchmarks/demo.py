"""The main job end to end: `lidarssl demo` timed on this machine, with the IoU table it prints.

Runs the demo (synthetic world, teacher feature cache, ScaLR-style pretraining, linear probes of the pretrained
and of a random backbone) with lidarssl.demo.run_demo into a temporary folder, its progress on stderr, and prints
its wall time and final table.

    PYTHONPATH=src python benchmarks/demo.py --seed 204   # a world seed no test uses
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_name

from lidarssl.demo import run_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic world (the demo's default: 0)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        start = time.perf_counter()
        table = run_demo(Path(tmp), overrides=[f"world.seed={args.seed}"])
        elapsed = time.perf_counter() - start
    minutes, seconds = divmod(round(elapsed), 60)
    print(f"`lidarssl demo` on {cpu_name()}, {os.cpu_count()} cores, load average at start {load:.2f}: "
          f"{minutes} min {seconds:02d} s wall, world seed {args.seed}\n")
    print("```\n" + table.strip() + "\n```")


if __name__ == "__main__":
    main()
