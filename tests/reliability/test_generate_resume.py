"""`lidarssl generate` interrupted (Ctrl-C) and rerun: it continues where it stopped, leaves no orphan frames
when rerun with another plan, and its index always matches the frames on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lidarssl.synthetic import write_dataset
from lidarssl.synthetic.writers.native import PROGRESS_NAME

WORLD = {"seed": 5, "lidar": "nuscenes", "cameras": "none"}


def _interrupt_after(n: int):
    def progress(done: int, total: int) -> None:
        if done == n:
            raise KeyboardInterrupt

    return progress


def _on_disk(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / "lidar").iterdir()}


def test_interrupted_generate_resumes_to_the_same_dataset(tmp_path: Path):
    whole = tmp_path / "whole"
    write_dataset(WORLD, whole, 4, frames_per_sequence=2)
    root = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        write_dataset(WORLD, root, 4, frames_per_sequence=2, progress=_interrupt_after(3))
    assert not (root / "index.json").exists()  # an unfinished dataset is not mistaken for a complete one
    kept = {p: p.stat().st_mtime_ns for p in (root / "lidar").iterdir()}
    assert len(kept) == 3
    write_dataset(WORLD, root, 4, frames_per_sequence=2)
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # finished frames are not rendered again
    assert not (root / PROGRESS_NAME).exists()
    a, b = json.loads((whole / "index.json").read_text()), json.loads((root / "index.json").read_text())
    assert a["frames"] == b["frames"]
    for entry in a["frames"]:
        assert (whole / entry["lidar"]).read_bytes() == (root / entry["lidar"]).read_bytes()


def test_a_rerun_with_another_plan_leaves_no_orphans(tmp_path: Path):
    root = tmp_path / "w"
    with pytest.raises(KeyboardInterrupt):
        write_dataset(WORLD, root, 6, frames_per_sequence=3, progress=_interrupt_after(4))
    write_dataset(WORLD, root, 2, frames_per_sequence=2)
    index = json.loads((root / "index.json").read_text())
    assert _on_disk(root) == {f["lidar"] for f in index["frames"]} and len(index["frames"]) == 2
