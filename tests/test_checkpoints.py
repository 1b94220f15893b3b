from pathlib import Path

import pytest
import torch
from torch import nn

from lidarssl.checkpoints import (
    atomic_write,
    load_state_dict_strict,
    load_weights,
    read_metadata,
    save_weights,
)
from lidarssl.errors import CheckpointError


def test_weights_round_trip_with_metadata(tmp_path: Path):
    net = nn.Linear(3, 2)
    path = save_weights(tmp_path / "w.safetensors", net.state_dict(), {"backbone": "linear", "epochs": 3})
    state, meta = load_weights(path)
    assert meta == {"backbone": "linear", "epochs": 3}
    other = nn.Linear(3, 2)
    load_state_dict_strict(other, state, str(path))
    assert torch.equal(other.weight, net.weight)
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary file left behind


def test_mismatch_lists_missing_unexpected_and_shapes():
    net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    state = {"0.weight": torch.zeros(2, 4), "0.bias": torch.zeros(2), "extra.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError) as err:
        load_state_dict_strict(net, state, "ckpt.safetensors")
    msg = str(err.value)
    assert msg.startswith("ckpt.safetensors: weights do not match the model")
    assert "missing: 1.weight, 1.bias" in msg and "unexpected: extra.weight" in msg
    assert "shape mismatch (file vs model): 0.weight (2, 4) vs (2, 3)" in msg


def test_missing_and_foreign_files(tmp_path: Path):
    with pytest.raises(CheckpointError, match="nope.safetensors: weights file not found"):
        read_metadata(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="bad.safetensors: not a safetensors weights file"):
        read_metadata(bad)


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path):
    target = tmp_path / "f.txt"
    target.write_text("old")

    def broken(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]
