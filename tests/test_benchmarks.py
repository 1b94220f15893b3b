"""The benchmarks run and print their tables: the GPU benchmark's quick mode on CPU, the WaffleIron step
next to the original's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_gpu_step_quick_prints_a_row_per_backbone_precision_and_kernels():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "gpu_step.py", "--quick", "--device", "cpu", "--peak-tflops", "1", "2"],
                          cwd=REPO / "benchmarks", capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ") and "(tiny)" in line]
    cells = {(r[0].strip(), r[3].strip(), r[4].strip()): [c.strip() for c in r] for r in rows}
    for name in ("waffleiron_4_32", "minkunet_tiny", "spvcnn_tiny", "voxelnet_tiny"):
        for precision in ("fp32", "bf16"):
            kernels = "-" if name.startswith("waffleiron") else "lidarssl"
            r = cells[(f"{name} (tiny)", precision, kernels)]
            seconds, flops, achieved, mfu = float(r[5]), float(r[8]), float(r[9]), r[10]
            assert seconds > 0 and flops > 0 and int(r[2]) > 1000
            assert achieved == pytest.approx(flops / seconds, rel=0.02)
            assert mfu.endswith(" %") and float(mfu[:-2]) == pytest.approx(100 * achieved / (2 if precision == "bf16" else 1),
                                                                           rel=0.02)
            if kernels == "lidarssl":  # spconv's kernels have no CPU backward: said so, not measured
                assert "not run: spconv's CPU build has no backward" in cells[(f"{name} (tiny)", precision, "spconv")][5]
    assert "dense peak 1 (fp32) / 2 (bf16) TFLOP/s" in done.stdout


def test_waffleiron_step_measures_the_original_side_by_side():
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "waffleiron_step.py", "--points", "1000", "--steps", "1", "--threads", "1",
                           "--only", "WI-4-32"], cwd=REPO / "benchmarks", capture_output=True, text=True, env=env,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| WI-")]
    assert len(rows) == 1, done.stdout
    label, params, ours, original, time_ratio, peak, original_peak, memory_ratio = (c.strip() for c in rows[0])
    assert label == "WI-4-32" and params == "0.02M"
    ours_min, original_min = float(ours.split(" / ")[0]), float(original.split(" / ")[0])
    assert float(time_ratio.rstrip("x")) == pytest.approx(ours_min / original_min, rel=0.1, abs=0.02)
    assert float(memory_ratio.rstrip("x")) == pytest.approx(float(peak) / float(original_peak), abs=0.01)
    assert 0 < float(peak) and 0 < float(original_peak)
