"""A tiny synthetic world with cameras, shared by the pretraining tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def camera_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 labelled frames with 6 cameras at 160x90: 2 sequences, the last is val."""
    from lidarssl.synthetic import write_dataset

    root = tmp_path_factory.mktemp("camera_world")
    write_dataset({"seed": 1, "lidar": "nuscenes", "cameras": "nuscenes", "image_size": (160, 90)}, root, 4,
                  frames_per_sequence=2, val_fraction=0.5)
    return root
