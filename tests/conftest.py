"""Shared fixtures. Real data samples live in ../shared/data/real beside the repository (or $LIDARSSL_REAL_DATA)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_thread():
    """Tiny tensors: threads gain nothing, and OpenMP barriers stall when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def real_root() -> Path:
    """The real-sample folder; skipped where absent (a user's clone) but a failure on CI."""
    root = Path(os.environ.get("LIDARSSL_REAL_DATA", REPO.parent / "shared" / "data" / "real"))
    if not (root / "README.md").is_file():
        message = f"real data samples not found at {root} (set LIDARSSL_REAL_DATA)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labelled synthetic world without cameras: 3 sequences of 2 frames, the last one is val."""
    from lidarssl.synthetic import write_dataset

    root = tmp_path_factory.mktemp("tiny_world")
    write_dataset({"seed": 7, "lidar": "nuscenes", "cameras": "none"}, root, 6, frames_per_sequence=2, val_fraction=0.34)
    return root


@pytest.fixture(scope="session")
def camera_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 labelled frames with 6 cameras at 160x90: 2 sequences, the last is val."""
    from lidarssl.synthetic import write_dataset

    root = tmp_path_factory.mktemp("camera_world")
    write_dataset({"seed": 1, "lidar": "nuscenes", "cameras": "nuscenes", "image_size": (160, 90)}, root, 4,
                  frames_per_sequence=2, val_fraction=0.5)
    return root


@pytest.fixture(scope="session")
def nuscenes_keyframe(real_root: Path):
    """The real nuScenes keyframe of shared/data/real: 34,688 points and 6 cameras with the full calibration."""
    import json

    import numpy as np
    from PIL import Image

    from lidarssl.data.scan import CameraView, Scan

    root = real_root / "nuscenes"
    calib = json.loads((root / "calib" / "ca9a282c9e77460f8360f564131a8af5.json").read_text())
    raw = np.fromfile(root / calib["lidar"]["file"], np.float32).reshape(-1, 5)
    cams = [
        CameraView(name=name, image=np.asarray(Image.open(root / c["file"]).convert("RGB")),
                   K=np.array(c["camera_intrinsic"]), lidar_to_cam=np.array(c["lidar2cam"]),
                   timestamp=c["timestamp_us"] * 1e-6, source=str(root / c["file"]))
        for name, c in calib["cameras"].items()
    ]
    return Scan(points=raw[:, :3].copy(), intensity=raw[:, 3].copy(), ring=raw[:, 4].astype(np.int64),
                source=calib["lidar"]["file"], dataset="nuscenes", cameras=cams)


#: `lidarssl ...` with a callback that SIGKILLs the process right after a given optimiser step (the same point of
#: the run on every machine); `module` is where the command builds its trainer.
_CRASH = """
import importlib, os, signal, sys
import lightning as L
from lidarssl.cli import main

class Crash(L.Callback):
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == int(os.environ["CRASH_AFTER_STEP"]):
            os.kill(os.getpid(), signal.SIGKILL)

module = importlib.import_module(os.environ["CRASH_MODULE"])
build = module.build_trainer
module.build_trainer = lambda *a, **k: build(*a, **k, extra_callbacks=[Crash()])
sys.exit(main(sys.argv[1:]))
"""


def _run_lidarssl(args: list[str], crash_after: int | None = None, module: str = "") -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if crash_after is None:
        cmd = [sys.executable, "-m", "lidarssl.cli", *args]
    else:
        cmd = [sys.executable, "-c", _CRASH, *args]
        env |= {"CRASH_AFTER_STEP": str(crash_after), "CRASH_MODULE": module}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    want = 0 if crash_after is None else -signal.SIGKILL
    assert done.returncode == want, done.stderr[-3000:]


@pytest.fixture
def run_lidarssl():
    """Run ``lidarssl ARGS`` in a subprocess; with ``crash_after``, SIGKILL it after that optimiser step."""
    return _run_lidarssl


@pytest.fixture
def crash_script(tmp_path: Path) -> Path:
    """:func:`run_lidarssl`'s crash wrapper as a file, for launchers that start a script (torchrun, srun); it reads
    ``CRASH_AFTER_STEP`` and ``CRASH_MODULE`` from the environment."""
    path = tmp_path / "lidarssl_crash.py"
    path.write_text(_CRASH)
    return path
