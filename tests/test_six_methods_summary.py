"""benchmarks/six_methods.py: the summary over worlds (mean, spread, minimum) and the share of the teacher's gain."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

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


def test_the_feature_probe_learns_separable_features_and_not_noise():
    from feature_probe import linear_probe

    from lidarssl.data.labels import ClassMap
    from lidarssl.metrics import miou

    g = torch.Generator().manual_seed(0)
    y, yv = torch.randint(0, 4, (40000,), generator=g), torch.randint(0, 4, (1000,), generator=g)
    centres = 5 * torch.eye(4, 8)
    x, xv = centres[y] + torch.randn(40000, 8, generator=g), centres[yv] + torch.randn(1000, 8, generator=g)
    class_map = ClassMap("toy", ("a", "b", "c", "d"), {i: str(i) for i in range(4)}, {i: i for i in range(4)}, 255)
    assert miou(linear_probe(x, y, xv, yv, class_map, epochs=20)) > 0.9  # 5 sigma apart: 0.97 here
    noise = torch.randn(40000, 8, generator=g)  # features that carry no label: a quarter right by chance
    assert miou(linear_probe(noise, y, torch.randn(1000, 8, generator=g), yv, class_map, epochs=20)) < 0.3


def test_reuse_refuses_a_world_run_with_other_settings(tmp_path: Path):
    args = six_methods.argparse.Namespace(out=tmp_path, reuse=True, methods=["scalr"], frames=48, pretrain_epochs=10,
                                          probe_epochs=60, finetune_epochs=40, teacher_epochs=3, tiny=False,
                                          finetune_methods=None)
    assert six_methods._reused(201, args) is None  # nothing to reuse: the world runs
    settings = {k: getattr(args, k) for k in six_methods.SETTINGS}
    (tmp_path / "201").mkdir()
    (tmp_path / "201" / "results.json").write_text(json.dumps({"settings": settings, "methods": {"scalr": {}}}))
    assert six_methods._reused(201, args)["methods"] == {"scalr": {}}
    args.probe_epochs = 8
    with pytest.raises(SystemExit, match="201/results.json: written with other settings"):
        six_methods._reused(201, args)
