"""benchmarks/six_methods.py: the summary over worlds (mean, spread, minimum) and the share of the teacher's gain."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
six_methods = pytest.importorskip("six_methods")


def _world(seed: int, scalr_probe: float, ceiling: float) -> dict:
    return {"seed": seed, "teacher_ceiling_miou": ceiling, "methods": {
        "scalr": {"probe_miou": scalr_probe, "random_probe_miou": 20.0, "finetune_miou": None, "scratch_miou": None},
        "also": {"probe_miou": 22.0, "random_probe_miou": 20.0, "finetune_miou": 31.0, "scratch_miou": 28.0}}}


def test_summary_over_worlds():
    worlds = [_world(1, 30.0, 40.0), _world(2, 26.0, 30.0)]
    assert six_methods.teacher_share(worlds[0], "scalr") == 0.5  # (30 - 20) / (40 - 20)
    assert six_methods.teacher_share(worlds[1], "scalr") == 0.6
    assert six_methods.teacher_share(worlds[0], "also") is None  # no teacher
    assert six_methods.teacher_share(_world(3, 30.0, 19.0), "scalr") is None  # a teacher below random
    s = six_methods.summarise(worlds)
    assert s["teacher"]["ceiling_miou"] == {"mean": 35.0, "std": pytest.approx(7.071, abs=1e-3), "min": 30.0}
    assert s["scalr"]["probe_gain"] == {"mean": 8.0, "std": pytest.approx(2.828, abs=1e-3), "min": 6.0}
    assert s["scalr"]["teacher_share"]["mean"] == pytest.approx(0.55)
    assert s["scalr"]["finetune_miou"] is None and s["also"]["teacher_share"] is None  # skipped protocol, no teacher
    assert s["also"]["finetune_gain"] == {"mean": 3.0, "std": 0.0, "min": 3.0}
    assert six_methods.summarise(worlds[:1])["scalr"]["probe_miou"]["std"] == 0.0  # one world: no spread
