"""The main job end to end: `lidarssl demo` timed on this machine, with the IoU table it prints.

Runs the demo (synthetic world, teacher feature cache, ScaLR-style pretraining, linear probes of the pretrained
and of a random backbone) as a subprocess into a temporary folder and prints its wall time and final table.

    PYTHONPATH=src python benchmarks/demo.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from machine import cpu_name


def main() -> None:
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "lidarssl.cli", "demo", "--out", tmp], capture_output=True,
                              text=True, check=True)
        elapsed = time.perf_counter() - start
        table = done.stdout[done.stdout.index("linear probing on the synthetic world"):].replace(f" ({tmp})", "")
    minutes, seconds = divmod(round(elapsed), 60)
    print(f"`lidarssl demo` on {cpu_name()}, {os.cpu_count()} cores, load average at start {load:.2f}: "
          f"{minutes} min {seconds:02d} s wall\n")
    print("```\n" + table.strip() + "\n```")


if __name__ == "__main__":
    main()
