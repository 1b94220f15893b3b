"""PandaSet's pickled DataFrames are read by a restricted unpickler: a crafted file runs no code."""

from __future__ import annotations

import builtins
import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest

from lidarssl.cli import main
from lidarssl.data.formats._dataframe import read_dataframe
from lidarssl.errors import DataError
from lidarssl.synthetic.writers import write_pandaset

pd = pytest.importorskip("pandas")


class _Payload:
    """Unpickling this opens (creates) a marker file: the code a crafted file would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (str(self.marker), "w")


@pytest.fixture(scope="module")
def pandaset_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pandaset") / "ps"
    write_pandaset({"seed": 1, "image_size": [64, 36]}, root, 2, frames_per_sequence=2, val_fraction=0.0)
    return root


def test_dataframes_of_numbers_and_strings_load(tmp_path):
    frame = pd.DataFrame({"x": np.arange(3.0), "d": np.arange(3), "label": ["a", "b", "c"],
                          "flag": np.ones(3, bool), "f": np.zeros(3, np.float32)})
    path = tmp_path / "t.pkl.gz"
    frame.to_pickle(path, compression="gzip")
    pd.testing.assert_frame_equal(read_dataframe(path, "table"), frame)


def test_a_crafted_file_runs_no_code(pandaset_root, tmp_path, capsys):
    marker = tmp_path / "pwned"
    target = sorted(pandaset_root.glob("*/lidar/00.pkl.gz"))[0]
    target.write_bytes(gzip.compress(pickle.dumps(_Payload(marker))))
    assert main(["info", str(pandaset_root), "--format", "pandaset"]) == 2
    err = capsys.readouterr().err
    assert err == (f"lidarssl info: error: {target}: the lidar frame is not a plain pickled DataFrame (refused to "
                   "load io.open); lidarssl loads no other pickled objects since they can run code; replace "
                   "the file with the dataset's original\n")
    assert not marker.exists()


def test_a_pickle_of_something_else_and_a_truncated_file(tmp_path):
    other = tmp_path / "list.pkl.gz"
    other.write_bytes(gzip.compress(pickle.dumps([1, 2])))
    with pytest.raises(DataError, match=r"list.pkl.gz: the table holds a list, expected a pandas DataFrame$"):
        read_dataframe(other, "table")
    whole = tmp_path / "whole.pkl.gz"
    pd.DataFrame({"x": np.arange(1000.0)}).to_pickle(whole, compression="gzip")
    cut = tmp_path / "cut.pkl.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cut.pkl.gz: cannot read the table \(EOFError: .*\); the file is damaged "
                       r"or truncated$"):
        read_dataframe(cut, "table")
