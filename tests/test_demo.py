"""The demo pipeline that `lidarssl demo` and benchmarks/demo.py share."""

from __future__ import annotations

from pathlib import Path

import pytest

from lidarssl.demo import run_demo


@pytest.mark.slow
def test_the_demo_returns_the_table_of_both_probes(tmp_path: Path, capsys: pytest.CaptureFixture):
    table = run_demo(tmp_path, "random", ["world.frames=12", "pretrain.optim.epochs=1", "probe.optim.epochs=1"])
    progress = capsys.readouterr().out
    assert all(f"{step}/4 " in progress for step in range(1, 5))
    lines = table.splitlines()
    assert lines[0].startswith("linear probing on the synthetic world's val split") and "(random):" in lines[0]
    assert lines[1].split() == ["class", "pretrained", "random"]
    assert [line.split()[0] for line in lines[-3:]] == ["mIoU", "oAcc", "mAcc"]
    assert (tmp_path / "probe-pretrained" / "config.yaml").is_file() and (tmp_path / "probe-random").is_dir()
