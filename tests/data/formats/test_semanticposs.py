"""SemanticPOSS reader on a tiny hand-made dataset in its layout (sequences 00-05, POSS label ids)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lidarssl.data.datasets import detect_format, open_dataset
from lidarssl.data.formats import READERS, SemanticKITTI, SemanticPOSS
from lidarssl.errors import DataError

# Every class of the map once, plus ignored ids: 0 unlabeled, 1 and 18 reserved without a class.
RAW = np.array([4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 21, 22, 0, 1, 18], np.uint32)
EXPECTED = [0, 0, 1, 2, 3, 4, 5, 5, 5, 6, 7, 8, 9, 10, 11, 12, 255, 255, 255]


def write_layout(root: Path, labels: dict[str, np.ndarray], frames_per_sequence: int = 2) -> Path:
    """``root/dataset/sequences/XX`` with ``frames_per_sequence`` scans per sequence; labels per sequence
    (semantic ids, an instance id 3 in the high bits); an empty label array writes no labels folder."""
    rng = np.random.default_rng(0)
    for seq, raw in labels.items():
        folder = root / "dataset" / "sequences" / seq
        (folder / "velodyne").mkdir(parents=True)
        for f in range(frames_per_sequence):
            n = len(raw) or 5
            pts = rng.uniform(-20, 20, (n, 4)).astype("<f4")
            pts.tofile(folder / "velodyne" / f"{f:06d}.bin")
            if len(raw):
                (folder / "labels").mkdir(exist_ok=True)
                (raw.astype("<u4") | (3 << 16)).astype("<u4").tofile(folder / "labels" / f"{f:06d}.label")
    return root


@pytest.fixture
def poss(tmp_path: Path) -> Path:
    return write_layout(tmp_path / "data", {f"{s:02d}": RAW for s in range(6)})


def test_splits_and_frames(poss):
    train, val = SemanticPOSS(poss, "train"), SemanticPOSS(poss, "val")
    assert [f[0] for f in train.frames] == ["00", "00", "01", "01", "02", "02", "04", "04", "05", "05"]
    assert [f[0] for f in val.frames] == ["03", "03"]
    assert len(SemanticPOSS(poss, "all")) == 12
    scan = val[0]
    assert scan.dataset == "semanticposs" and scan.frame_id == "03/000000" and scan.cameras == []
    assert len(scan) == len(RAW) and scan.points.dtype == np.float32


def test_labels_follow_the_semanticposs_map(poss):
    scan = SemanticPOSS(poss, "val")[0]
    assert scan.raw_labels.tolist() == RAW.tolist()
    assert scan.labels.tolist() == EXPECTED
    assert set(scan.instance.tolist()) == {3}
    cmap = SemanticPOSS(poss, "val").class_map
    assert cmap.num_classes == 13 and cmap.classes[0] == "person" and cmap.classes[-1] == "ground"


def test_unknown_raw_id_names_the_file(tmp_path):
    root = write_layout(tmp_path / "poss", {"03": np.array([4, 40, 22, 0, 7], np.uint32)})
    with pytest.raises(DataError, match=r"03/labels/000000.label: raw label ids \[40\] are not in the semanticposs"):
        SemanticPOSS(root, "val")[0]


def test_missing_split_and_layout_errors(tmp_path):
    root = write_layout(tmp_path / "poss", {"00": RAW})
    with pytest.raises(DataError, match=r"no scans of split 'val' \(sequences 03\)"):
        SemanticPOSS(root, "val")
    with pytest.raises(DataError, match="not a SemanticPOSS folder"):
        SemanticPOSS(tmp_path / "poss" / "dataset" / "sequences" / "00", "train")
    with pytest.raises(DataError, match=r"unknown split 'test'"):
        SemanticPOSS(root, "test")


def test_detected_apart_from_semantickitti(tmp_path, poss):
    assert "semanticposs" in READERS
    assert detect_format(poss) == "semanticposs"
    assert isinstance(open_dataset(poss, "val"), SemanticPOSS)
    kitti = write_layout(tmp_path / "kitti", {"08": np.array([40, 10, 0, 70], np.uint32)})
    assert detect_format(kitti) == "semantickitti"
    assert type(open_dataset(kitti, "val")) is SemanticKITTI
    # without labels, the folder name decides; format= always does
    unlabelled = write_layout(tmp_path / "SemanticPOSS", {"03": np.array([], np.uint32)})
    assert detect_format(unlabelled) == "semanticposs"
    assert type(open_dataset(kitti, "val", format="semantickitti")) is SemanticKITTI
    with pytest.raises(DataError, match=r"unknown dataset format 'poss'; choose one of \['synthetic'"):
        open_dataset(poss, "val", format="poss")
