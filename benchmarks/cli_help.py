"""How long `lidarssl COMMAND --help` takes, for every command: a fresh process each time, as a user runs it.

Prints a Markdown table of the median wall time of five runs per command (the Python start-up included) and the
heavy libraries each one imported; tests/reliability/test_cli_fast.py checks the imports, never the times.

    PYTHONPATH=src python benchmarks/cli_help.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

from machine import cpu_name

from lidarssl.cli import command_names

RUNS = 5
#: Printed by the child: the heavy libraries its --help imported.
CODE = ("import sys\nfrom lidarssl.cli import main\ntry:\n    main(sys.argv[1:] + ['--help'])\nexcept SystemExit:\n"
        "    pass\nprint('HEAVY', ','.join(m for m in ('torch', 'lightning', 'scipy') if m in sys.modules) or '-')")


def main() -> None:
    load = os.getloadavg()[0]
    rows = []
    for command in [[], *command_names()]:
        times, heavy = [], "-"
        for _ in range(RUNS):
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", CODE, *command], capture_output=True, text=True,
                                 check=True).stdout
            times.append(time.perf_counter() - start)
            heavy = out.rsplit("HEAVY", 1)[1].strip()
        rows.append((" ".join(["lidarssl", *command, "--help"]), statistics.median(times), heavy))
    print(f"`--help` of every command on {cpu_name()}, {os.cpu_count()} cores, load average at start {load:.2f}; "
          f"median of {RUNS} fresh processes:\n")
    print("| command | wall (s) | heavy imports |\n|---|---|---|")
    for name, seconds, heavy in rows:
        print(f"| `{name}` | {seconds:.2f} | {heavy} |")


if __name__ == "__main__":
    main()
