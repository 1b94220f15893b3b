"""`lidarssl view`: a rerun recording written to .rrd and read back with rerun's own reader; the missing extra."""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from lidarssl.cli import main
from lidarssl.data.datasets import open_dataset
from lidarssl.errors import ConfigError
from lidarssl.viz.viewer import MISSING_RERUN, require_rerun


@pytest.fixture(scope="module")
def rerun():
    """rerun-sdk (the `viz` extra, installed by `make test`); a user's lean install skips, CI fails."""
    try:
        import rerun
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("rerun-sdk is not installed (pip install -e '.[viz]')")
        pytest.skip("rerun-sdk is not installed (the optional `viz` extra)")
    return rerun


def _read(path: Path) -> dict[str, dict[str, list]]:
    """Entity path -> column -> values of every row, from the .rrd file."""
    from rerun.chunk import RrdReader

    columns: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for chunk in RrdReader(path).stream():
        batch = chunk.to_record_batch()
        for name in batch.schema.names:
            columns[chunk.entity_path][name].extend(batch.column(name).to_pylist())
    return columns


def test_recording_holds_scans_cameras_labels_predictions_and_similarity(rerun, camera_world: Path, scalr_run: Path,
                                                                          seg_run: Path, tmp_path: Path, capsys):
    out = tmp_path / "val.rrd"
    assert main(["view", f"{camera_world},split=val", "--frames", "0:2", "--weights",
                 str(scalr_run / "backbone.safetensors"), "--run", str(seg_run), "--class", "car",
                 "--out", str(out), "--device", "cpu"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    data = _read(out)
    val = open_dataset(camera_world, split="val")
    sizes = [len(val[i]) for i in range(2)]
    for layer in ("scan", "labels", "predictions", "errors", "pca", "similarity"):
        rows = data[f"/world/ego/lidar/{layer}"]
        assert rows["frame"] == [0, 1]
        assert [len(p) for p in rows["Points3D:positions"]] == sizes
    np.testing.assert_allclose(np.array(data["/world/ego/lidar/scan"]["Points3D:positions"][1]), val[1].points,
                               atol=1e-6)
    assert data["/world/ego/lidar/labels"]["Points3D:class_ids"][0] == val[0].labels.tolist()
    assert [len(p) for p in data["/world/ego/lidar/query"]["Points3D:positions"]] == [1, 1]
    for cam in val[0].cameras:
        entity = data[f"/world/ego/cam/{cam.name}"]
        assert len(entity["EncodedImage:blob"]) == 2 and entity["Pinhole:resolution"][0] == [[160.0, 90.0]]
        assert len(data[f"/world/ego/cam/{cam.name}/projection"]["Points2D:positions"]) == 2
        assert len(data[f"/world/ego/cam/{cam.name}/similarity"]["Points2D:positions"]) == 2
    classes = data["/world"]["AnnotationContext:context"][0][0]
    assert {"car", "unlabelled"} <= {c["class_description"]["info"]["label"] for c in classes}


def test_recording_of_a_dataset_alone(rerun, tiny_world: Path, tmp_path: Path):
    from lidarssl.viz.viewer import record

    dataset = open_dataset(tiny_world)
    out = record(dataset, dataset.class_map.classes, out=tmp_path / "a.rrd", frames=[0, 1, 2])
    data = _read(out)
    assert data["/world/ego/lidar/scan"]["frame"] == [0, 1, 2]
    assert "/world/ego/lidar/predictions" not in data and not any("/cam/" in k for k in data)
    poses = np.array(data["/world/ego"]["Transform3D:translation"])[:, 0]
    np.testing.assert_allclose(poses[0], 0, atol=1e-9)  # relative to the first frame
    assert np.linalg.norm(poses[1] - poses[0]) > 0.1  # and the car drives (frames 0 and 1: one sequence)


def test_viewer_extra_not_installed(monkeypatch, tiny_world: Path, tmp_path: Path, capsys):
    monkeypatch.setitem(sys.modules, "rerun", None)  # `import rerun` now raises ImportError
    with pytest.raises(ConfigError) as err:
        require_rerun()
    assert str(err.value) == MISSING_RERUN == (
        "the interactive viewer needs rerun-sdk, which is not installed; install it with: "
        "pip install 'lidarssl[viz]'  (or: pip install rerun-sdk==0.41.0)")
    assert main(["view", str(tiny_world), "--out", str(tmp_path / "x.rrd")]) == 2
    assert capsys.readouterr().err == f"lidarssl view: error: {MISSING_RERUN}\n"
    assert not (tmp_path / "x.rrd").exists()


def test_viewer_needs_a_destination(rerun, tiny_world: Path, capsys):
    assert main(["view", str(tiny_world)]) == 2
    assert "give an .rrd file (--out) or --spawn" in capsys.readouterr().err


def test_spawn_without_a_display_keeps_the_file_and_says_so(rerun, tiny_world: Path, tmp_path: Path, monkeypatch,
                                                            capsys):
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "WAYLAND_SOCKET"):
        monkeypatch.delenv(var, raising=False)  # the viewer cannot open a window on any machine
    out = tmp_path / "a.rrd"
    assert main(["view", str(tiny_world), "--out", str(out), "--spawn"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lidarssl view: error: the rerun viewer did not open (") and err.count("\n") == 1
    assert err.endswith(f"the recording is in {out}: open it with `rerun {out}` where there is a display\n")
    assert out.stat().st_size > 0
