"""The bad-input matrix: each case gives one line on stderr with the exact message, exit code 2, and leaves
nothing lost or half-written (the run folder, the dataset and the checkpoints are as before)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
import yaml

from lidarssl.cli import main
from lidarssl.config import to_yaml
from lidarssl.methods.config import PretrainConfig
from lidarssl.run_folder import RunLock

BACKBONE = ["backbone.name=waffleiron_4_32", "backbone.options={fov_min: [-40, -40, -4], fov_max: [40, 40, 4]}"]


def _config(world: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.root={world}", f"out={out}", "data.num_workers=0", "trainer.batch_size=2",
            "trainer.progress_bar=false", "optim.warmup_epochs=0.5", "optim.epochs=1", *BACKBONE, *extra]


def _snapshot(folder: Path) -> dict[str, tuple[int, float]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "run.lock"} if folder.exists() else {}


def _error(capsys, argv: list[str]) -> str:
    """The one stderr line of a failing command (exit code 2)."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    return err.rstrip("\n")


@pytest.fixture(scope="module")
def run(tiny_world: Path, tmp_path_factory) -> Path:
    """A finished one-epoch segmentation run."""
    out = tmp_path_factory.mktemp("bad") / "run"
    assert main(["train", *_config(tiny_world, out)]) == 0
    return out


@pytest.fixture
def world_copy(tiny_world: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "world"
    shutil.copytree(tiny_world, copy)
    return copy


def _truncate_first_train_frame(world: Path) -> Path:
    index = yaml.safe_load((world / "index.json").read_text())
    entry = next(f for f in index["frames"] if f["split"] == "train")
    path = world / entry["lidar"]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def test_truncated_synthetic_npz(world_copy: Path, capsys):
    path = _truncate_first_train_frame(world_copy)
    before = _snapshot(world_copy)
    err = _error(capsys, ["info", str(world_copy), "--split", "train"])
    assert err == (f"lidarssl info: error: {path}: unreadable npz (BadZipFile: File is not a zip file); the file is "
                   f"damaged or truncated: regenerate the dataset with `lidarssl generate out={world_copy} "
                   "overwrite=true` and the options it was made with")
    assert _snapshot(world_copy) == before


def test_an_error_in_a_dataloader_worker_shows_its_own_message_first(world_copy: Path, tmp_path: Path, capsys):
    path = _truncate_first_train_frame(world_copy)
    out = tmp_path / "run"
    err = _error(capsys, ["train", *_config(world_copy, out, "data.num_workers=1")])
    assert err.startswith(f"lidarssl train: error: {path}: unreadable npz (BadZipFile: File is not a zip file)")
    assert err.endswith("(DataLoader worker process 0)") and "Traceback" not in err
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())


def test_evaluate_with_a_missing_or_corrupt_checkpoint(run: Path, tmp_path: Path, capsys):
    before = _snapshot(run)
    missing = tmp_path / "nope.ckpt"
    assert _error(capsys, ["evaluate", str(run), "--checkpoint", str(missing)]) == (
        f"lidarssl evaluate: error: {missing}: checkpoint file not found")
    corrupt = tmp_path / "bad.ckpt"
    corrupt.write_bytes((run / "checkpoints" / "last.ckpt").read_bytes()[:1000])
    assert _error(capsys, ["evaluate", str(run), "--checkpoint", str(corrupt)]) == (
        f"lidarssl evaluate: error: {corrupt}: not a readable checkpoint, damaged or truncated (PytorchStreamReader "
        "failed reading zip archive: failed finding central directory)")
    assert _snapshot(run) == before


def test_evaluate_on_a_pretraining_run(tmp_path: Path, capsys):
    (tmp_path / "pre").mkdir()
    (tmp_path / "pre" / "config.yaml").write_text(to_yaml(PretrainConfig()))
    assert _error(capsys, ["evaluate", str(tmp_path / "pre")]) == (
        f"lidarssl evaluate: error: {tmp_path / 'pre'} is a pretraining run (scalr), not a segmentation run; it has "
        f"no segmentation head to evaluate; probe its backbone instead: lidarssl probe probe-wi-synthetic "
        f"pretrained={tmp_path / 'pre' / 'backbone.safetensors'}")
    assert _error(capsys, ["evaluate", str(tmp_path)]) == (
        f"lidarssl evaluate: error: {tmp_path}: not a segmentation run directory (no config.yaml); pass the `out` "
        "folder of lidarssl train, probe or finetune")


def test_gpu_accelerator_on_a_machine_without_one(tiny_world: Path, tmp_path: Path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "run"
    assert _error(capsys, ["train", *_config(tiny_world, out, "trainer.accelerator=gpu")]) == (
        "lidarssl train: error: trainer.accelerator=gpu, but torch sees no CUDA GPU on this machine; "
        "set trainer.accelerator=cpu (or auto)")
    assert not out.exists()


def test_info_frame_out_of_range(tiny_world: Path, tmp_path: Path, capsys):
    assert main(["info", str(tiny_world), "--overlay", str(tmp_path / "o.png"), "--frame", "99"]) == 2
    err = capsys.readouterr().err
    assert err == f"lidarssl info: error: --frame 99: {tiny_world} has 6 frames in this split (indexes 0 to 5)\n"
    assert not (tmp_path / "o.png").exists()


def test_unwritable_out(tiny_world: Path, tmp_path: Path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert _error(capsys, ["train", *_config(tiny_world, blocker / "run")]) == (
        f"lidarssl train: error: out={blocker / 'run'}: cannot write the run folder there (Not a directory); "
        "choose a writable folder with out=PATH")


def test_override_errors_name_the_overrides_not_the_recipe(capsys):
    err = _error(capsys, ["train", "seg-wi-synthetic", "optim.lrr=0.1", "--print-config"])
    assert err.startswith("lidarssl train: error: overrides: unknown key 'optim.lrr'; valid keys here: ")
    err = _error(capsys, ["train", "seg-wi-synthetic", "trainer.batch_size=zero", "--print-config"])
    assert err.startswith("lidarssl train: error: overrides: key 'trainer.batch_size': ")


def test_a_second_writer_is_refused_naming_the_holder(run: Path, tiny_world: Path, capsys):
    before = _snapshot(run)
    with RunLock(run):
        err = _error(capsys, ["train", "--resume", *_config(tiny_world, run)])
    assert err.startswith(f"lidarssl train: error: {run}: another lidarssl run is writing this folder (pid {os.getpid()} on ")
    assert err.endswith("); wait for it to finish or choose another out=")
    assert _snapshot(run) == before


def test_resume_refuses_a_changed_config_naming_the_keys(run: Path, tiny_world: Path, capsys):
    before = _snapshot(run)
    err = _error(capsys, ["train", "--resume", *_config(tiny_world, run, "optim.epochs=2", "optim.lr=0.5")])
    assert err == (f"lidarssl train: error: {run}: --resume with a config that differs from {run / 'config.yaml'} in "
                   "optim.epochs (1 -> 2), optim.lr (0.001 -> 0.5); resume with the same recipe and overrides, or add "
                   "--allow-config-change to continue with the new values")
    assert _snapshot(run) == before


def test_pretrained_weights_of_another_voxel_size(run: Path, tiny_world: Path, tmp_path: Path, capsys):
    from lidarssl.checkpoints import load_weights, save_weights

    state, meta = load_weights(run / "backbone.safetensors")
    assert meta["options"] == {"fov_min": [-40, -40, -4], "fov_max": [40, 40, 4]}  # stored by the run
    weights = save_weights(tmp_path / "w.safetensors", state, {**meta, "options": {**meta["options"], "voxel_size": 0.3}})
    other = ["backbone.options={fov_min: [-40, -40, -4], fov_max: [40, 40, 4], voxel_size: 0.5}"]
    err = _error(capsys, ["probe", *_config(tiny_world, tmp_path / "p", f"pretrained={weights}", *other)])
    assert err == (f"lidarssl probe: error: {weights}: weights learned with other backbone options (voxel_size: 0.3 "
                   "in the file, 0.5 here); set backbone.options.voxel_size=0.3 as in the run that wrote them")
    assert not (tmp_path / "p" / "checkpoints").exists()


def test_run_folder_has_absolute_paths_and_ordinary_permissions(run: Path, tiny_world: Path):
    stored = yaml.safe_load((run / "config.yaml").read_text())
    assert stored["data"]["root"] == str(tiny_world.absolute()) and stored["out"] == str(run.absolute())
    mask = os.umask(0)
    os.umask(mask)
    for name in ("config.yaml", "metrics.json", "backbone.safetensors", "checkpoints/last.ckpt"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o666 & ~mask, name


@pytest.mark.slow
def test_relative_paths_are_stored_absolute_and_evaluate_runs_from_elsewhere(tiny_world: Path, tmp_path: Path,
                                                                              monkeypatch, capsys):
    monkeypatch.chdir(tiny_world.parent)
    assert main(["train", *_config(Path(tiny_world.name), Path("../rel-run-" + tmp_path.name))]) == 0
    out = (tiny_world.parent / ".." / f"rel-run-{tmp_path.name}").resolve()
    try:
        stored = yaml.safe_load((out / "config.yaml").read_text())
        assert Path(stored["data"]["root"]).is_absolute() and Path(stored["data"]["root"]).resolve() == tiny_world
        moved = tmp_path / "moved"
        shutil.move(out, moved)
        monkeypatch.chdir(tmp_path)
        capsys.readouterr()
        assert main(["evaluate", str(moved)]) == 0
        assert "mIoU" in capsys.readouterr().out and (moved / "eval" / "metrics.json").is_file()
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.mark.slow
def test_corrupt_last_checkpoint_falls_back_to_the_newest_readable_one(tiny_world: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    assert main(["train", *_config(tiny_world, out, "optim.epochs=2", "trainer.keep_last=1")]) == 0
    # keep_last=1: only the newest epoch checkpoint besides last.ckpt
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch001.ckpt", "last.ckpt"]
    last = out / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    capsys.readouterr()
    assert main(["train", "--resume", "--allow-config-change", *_config(tiny_world, out, "optim.epochs=3",
                                                                         "trainer.keep_last=1")]) == 0
    err = capsys.readouterr().err
    assert (f"lidarssl: {last}: not a readable checkpoint, damaged or truncated (PytorchStreamReader failed reading "
            "zip archive: failed finding central directory); resuming from epoch001.ckpt, the newest readable "
            "checkpoint") in err
    state = torch.load(last, weights_only=True)
    assert state["epoch"] == 2 and state["global_step"] == 6


def test_an_empty_scan_or_one_outside_the_field_of_view_names_its_frame():
    import numpy as np

    from lidarssl.data.loader import LabelBuilder, ScanSamples
    from lidarssl.data.scan import Scan
    from lidarssl.errors import DataError
    from lidarssl.models.backbones import create_backbone

    spec = create_backbone("waffleiron_4_32", fov_min=[-40, -40, -4], fov_max=[40, 40, 4])
    scans = [Scan(points=np.zeros((n, 3), np.float32) + 100, intensity=np.zeros(n, np.float32), source=f"/d/{n}.npz",
                  dataset="synthetic", frame_id=f"000-{n}", labels=np.zeros(n, np.int64)) for n in (0, 5)]
    samples = ScanSamples(scans, spec.prep, [LabelBuilder()], seed=0)
    with pytest.raises(DataError, match=r"^/d/0.npz: frame 000-0 of synthetic has no points; restore the file or "
                       r"leave the frame out of the split$"):
        samples[(0, 0)]
    with pytest.raises(DataError, match=r"^/d/5.npz: frame 000-5: no point of the scan \(5 points\) lies strictly "
                       r"inside the field of view"):
        samples[(1, 0)]


# Crafted PandaSet frames: pickles built only from the names the restricted unpickler allows, whose values would
# make numpy, pandas or pyarrow read or write memory outside the file's buffers. Each runs in a subprocess, so a
# segfault fails the test instead of ending pytest.

_CRAFT = '''
import gzip, pickle, struct, sys
import numpy as np, pandas as pd
from numpy._core.multiarray import _reconstruct
from pandas._libs.internals import BlockPlacement, _unpickle_block
from pandas.core.indexes.base import _new_Index
from pandas.core.internals.managers import BlockManager

class Dtype:  # an object dtype whose state drops the "holds objects" flag: raw file bytes become pointers
    def __reduce__(self):
        return np.dtype, ("O8", False, True), (3, "|", None, None, None, -1, -1, 0)

class Pointers:
    def __reduce__(self):
        return _reconstruct, (np.ndarray, (0,), b"b"), (1, (6,), Dtype(), False, b"\\x41" * 48)

class Placement:
    def __reduce__(self):
        return BlockPlacement, (slice(100000, 100006),)

class Block:
    def __reduce__(self):
        return _unpickle_block, (np.zeros((6, 2)), Placement(), 2)

class Frame:  # a DataFrame whose manager is given by the crafted axes and blocks
    def __init__(self, columns, blocks):
        self.columns, self.blocks = columns, blocks
    def __reduce__(self):
        return pd.DataFrame, (Manager(self.columns, self.blocks),)

class Manager:
    def __init__(self, columns, blocks):
        self.columns, self.blocks = columns, blocks
    def __reduce__(self):
        return BlockManager, (self.blocks, [self.columns, pd.RangeIndex(2)])

class Columns:
    def __reduce__(self):
        return _new_Index, (pd.Index, {"data": Pointers(), "name": None})

def strings(end):
    frame = pd.DataFrame({c: np.zeros(2) for c in "xyzit"} | {"d": np.zeros(2, np.int64), "s": ["ab", "c"]})
    data = pickle.dumps(frame, protocol=5)
    good = struct.pack("<3q", 0, 2, 3)
    assert data.count(good) == 1
    return data.replace(good, struct.pack("<3q", 0, 2, end))

case, path = sys.argv[1:]
data = {"offsets": lambda: strings(1_400_000), "far-offsets": lambda: strings(2**40),
        "dtype": lambda: pickle.dumps(Columns(), protocol=4),
        "placement": lambda: pickle.dumps(Frame(pd.Index(list("xyzitd")), (Block(),)), protocol=4)}[case]()
open(path, "wb").write(gzip.compress(data))
'''


@pytest.fixture(scope="module")
def pandaset_world(tmp_path_factory) -> Path:
    pytest.importorskip("pandas")
    from lidarssl.synthetic.writers import write_pandaset

    root = tmp_path_factory.mktemp("pandaset") / "ps"
    write_pandaset({"seed": 1, "image_size": [64, 36]}, root, 2, frames_per_sequence=2, val_fraction=0.0)
    return root


@pytest.mark.parametrize("case, holds", [
    ("offsets", "a pyarrow string array whose offsets or lengths do not fit its buffers"),
    ("far-offsets", "a pyarrow string array whose offsets or lengths do not fit its buffers"),
    ("dtype", "a dtype state numpy does not write"),
    ("placement", "a block placement outside the frame's columns"),
])
def test_a_crafted_pandaset_frame_reads_no_memory_outside_it(pandaset_world: Path, tmp_path: Path, case: str,
                                                              holds: str):
    import subprocess
    import sys

    root = tmp_path / "ps"
    shutil.copytree(pandaset_world, root)
    target = sorted(root.glob("*/lidar/00.pkl.gz"))[0]
    subprocess.run([sys.executable, "-c", _CRAFT, case, str(target)], check=True)
    message = (f"{target}: the lidar frame is damaged or crafted: it holds {holds}; replace the file with the "
               "dataset's original")

    def lidarssl(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "lidarssl.cli", *args], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 2 and "Traceback" not in done.stderr, (done.returncode, done.stderr[-2000:])
        return done

    def data_files() -> dict:  # the frame index a reader caches beside the data may be written; the data not
        return {k: v for k, v in _snapshot(root).items() if not k.startswith(".lidarssl_index")}

    before = data_files()
    done = lidarssl("info", str(root), "--format", "pandaset")
    assert (done.stdout, done.stderr) == ("", f"lidarssl info: error: {message}\n")
    assert data_files() == before
    if case != "offsets":
        return
    done = lidarssl("prepare", "pandaset", "--root", str(root))
    assert f"\n    {message}\n" in done.stdout and len(done.stdout) < 2000
    assert done.stderr == (f"lidarssl prepare: error: 1 problem files in {root} (listed above); restore them, then "
                           f"rerun `lidarssl prepare pandaset --root {root}`\n")


class _Code:
    """Unpickling this would call os.system: the code a malicious weights file would run."""

    def __reduce__(self):
        return os.system, ("echo pwned",)


def _unreadable_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """Files torch.load(weights_only=True) refuses, with what the message says of each."""
    import pickle

    folder.mkdir(parents=True, exist_ok=True)
    torch_file = "expected a .pt/.pth/.ckpt file written by torch.save"
    cases = {
        "4 bytes": (b"\x80\x02\x8a\x0a", f"not a PyTorch checkpoint (an old-format torch.save file, damaged or "
                                         f"truncated); {torch_file}"),
        "text": (b"epoch: 3\nweights: none\n", f"not a PyTorch checkpoint (a text file); {torch_file}"),
        "protocol 5": (pickle.dumps({"w": 1}, protocol=5), f"not a PyTorch checkpoint (a plain pickle (protocol 5)); "
                                                           f"{torch_file}"),
        "code": (pickle.dumps(_Code(), protocol=2), "refused: unpickling it would call posix.system, which is code, "
                                                    "not weights (lidarssl reads checkpoints with "
                                                    "torch.load(weights_only=True) only)"),
        "empty": (b"", f"empty file; {torch_file}"),
    }
    files = {}
    for name, (data, message) in cases.items():
        path = folder / f"{name.replace(' ', '-')}.pth"
        path.write_bytes(data)
        files[name] = (path, f"{path}: {message}")
    return files


def test_every_unreadable_weights_file_is_one_checkpoint_error(tmp_path: Path):
    """200 random-byte files and the kinds above, through each reader of torch files: one line each, naming the
    file, never torch's advice to load with weights_only=False."""
    import random

    from lidarssl.errors import CheckpointError
    from lidarssl.models.teachers.base import read_checkpoint as read_teacher
    from lidarssl.run_folder import read_checkpoint as read_run
    from lidarssl.zoo.reading import torch_load

    rng = random.Random(0)
    paths = []
    for i in range(200):
        path = tmp_path / f"random{i}.pth"
        path.write_bytes(rng.randbytes(rng.randint(1, 400)))
        paths.append((path, None))
    paths += _unreadable_files(tmp_path / "kinds").values()
    for read in (read_run, read_teacher, lambda p: torch_load(p, str(p))):
        for path, message in paths:
            with pytest.raises(CheckpointError) as caught:
                read(path)
            text = str(caught.value)
            assert text.startswith(f"{path}: ") and "\n" not in text and "weights_only=False" not in text, text
            assert message is None or text == message


@pytest.mark.parametrize("kind", ["4 bytes", "text", "protocol 5", "code"])
def test_an_unreadable_checkpoint_is_one_line_in_every_command(run: Path, tiny_world: Path, camera_world: Path,
                                                              tmp_path: Path, kind: str, capsys):
    path, message = _unreadable_files(tmp_path / "files")[kind]
    before = _snapshot(run)
    assert _error(capsys, ["evaluate", str(run), "--checkpoint", str(path)]) == f"lidarssl evaluate: error: {message}"
    assert _snapshot(run) == before
    assert _error(capsys, ["import", str(path), "--out", str(tmp_path / "imported")]) == (
        f"lidarssl import: error: {message}")
    assert not (tmp_path / "imported").exists()
    assert _error(capsys, ["prepare", "teacher-features", "--root", str(camera_world), "--split", "train",
                           "recipe=scalr-wi-synthetic", f"data.teacher_cache={tmp_path / 'cache'}",
                           "teacher.name=resnet18_semantic", f"teacher.weights={path}"]) == (
        f"lidarssl prepare: error: {message}")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.npy"))
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    for ckpt in (resumed / "checkpoints").glob("*.ckpt"):
        shutil.copyfile(path, ckpt)
    before = _snapshot(resumed)
    err = _error(capsys, ["train", "--resume", "--allow-config-change", *_config(tiny_world, resumed)])
    assert err.startswith(f"lidarssl train: error: {resumed}: no readable checkpoint to resume from ("), err
    assert "weights_only=False" not in err
    assert _snapshot(resumed) == before


def test_a_kill_during_the_first_checkpoint_write_leaves_a_folder_one_command_restarts(run: Path, tiny_world: Path,
                                                                                       tmp_path: Path, capsys):
    """A run killed while writing its first checkpoint leaves config.yaml and a 0-byte temporary checkpoint;
    --resume names the command that restarts it, that command works, and the orphan is gone."""
    out = tmp_path / "killed"
    out.mkdir()
    (out / "config.yaml").write_text((run / "config.yaml").read_text().replace(str(run), str(out)))
    (out / "checkpoints").mkdir()
    orphan = out / "checkpoints" / ".epoch000.ckpt.k1ll3d.tmp"
    orphan.write_bytes(b"")
    assert _error(capsys, ["train", "--resume", *_config(tiny_world, out)]) == (
        f"lidarssl train: error: {out}: no checkpoint to resume from (expected {out / 'checkpoints' / 'last.ckpt'}); "
        "start the run without --resume")
    assert not orphan.exists()
    orphan.write_bytes(b"")
    assert main(["train", *_config(tiny_world, out)]) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch000.ckpt", "last.ckpt"]


_HOLD_AND_DIE = """
import os, signal, sys, time
from pathlib import Path
from lidarssl.run_folder import RunLock

lock = RunLock(Path(sys.argv[1])).__enter__()
child = os.fork()  # what a DataLoader worker is
if child == 0:
    os.close(1), os.close(2)  # let the test read the parent's output without waiting for this one
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_runs_forked_workers_do_not_hold_its_lock(tmp_path: Path):
    import signal
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _HOLD_AND_DIE, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    worker = int(done.stdout)
    try:
        os.kill(worker, 0)  # the worker outlives its parent...
        with RunLock(tmp_path):  # ...and does not keep the folder locked
            pass
    finally:
        os.kill(worker, signal.SIGKILL)


def test_values_that_make_no_sense_are_one_line(tiny_world: Path, run: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    assert _error(capsys, ["train", *_config(tiny_world, out, "optim.lr=.inf")]) == (
        "lidarssl train: error: overrides: key 'optim.lr': Input should be a finite number (got inf)")
    assert _error(capsys, ["train", *_config(tiny_world, out, "trainer.devices=2", "trainer.sync_batchnorm=true",
                                             "trainer.accelerator=cpu")]) == (
        "lidarssl train: error: trainer.sync_batchnorm=true needs CUDA GPUs (torch's SyncBatchNorm has no CPU "
        "kernel); set trainer.sync_batchnorm=false, or trainer.accelerator=gpu")
    assert not (out / "config.yaml").exists() and not (out / "checkpoints").exists()
    world = tmp_path / "world"
    assert _error(capsys, ["generate", f"out={world}", "frames=2", "image_size=[100000,100000]"]) == (
        "lidarssl generate: error: image_size 100000x100000 is larger than any camera (8192 pixels a side at most; "
        "one such image would need 28 GiB); choose e.g. 1600x900")
    assert not world.exists() or not any(world.iterdir())
    png = tmp_path / "pca.png"
    assert _error(capsys, ["viz", "pca", f"{tiny_world},bogus=1", "--weights", str(run / "backbone.safetensors"),
                           "--out", str(png)]) == (
        f"lidarssl viz: error: {tiny_world}: the synthetic reader has no option bogus; its options: with_images")
    assert not png.exists()


def test_a_diverging_run_stops_naming_the_step_and_writes_no_nan_weights(tiny_world: Path, tmp_path: Path, capsys):
    out = tmp_path / "run"
    err = _error(capsys, ["train", *_config(tiny_world, out, "optim.lr=1e30", "optim.warmup_epochs=0")])
    assert err.startswith("lidarssl train: error: step ") and "is not finite (NaN or infinite); stopped before " \
        "writing weights. The learning rate is the likely cause: lower optim.lr (now " in err, err
    assert not (out / "backbone.safetensors").exists()
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())


def test_weights_with_nan_are_never_written(tmp_path: Path):
    from lidarssl.checkpoints import save_weights
    from lidarssl.errors import CheckpointError

    path = tmp_path / "w.safetensors"
    with pytest.raises(CheckpointError, match=r"w.safetensors: not written: weight b holds NaN or infinite values "
                                              r"\(a diverged run\); lower optim.lr and train again$"):
        save_weights(path, {"a": torch.zeros(2), "b": torch.tensor([1.0, float("nan")])}, {})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command, module", [("train", "lidarssl.downstream.train"),
                                             ("pretrain", "lidarssl.methods.pretrain")])
def test_ctrl_c_during_training_prints_the_resume_line(tiny_world: Path, tmp_path: Path, command: str, module: str,
                                                       monkeypatch, capsys):
    import importlib
    import signal

    import lightning as L

    class CtrlC(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            raise KeyboardInterrupt

    target = importlib.import_module(module)
    build = target.build_trainer
    monkeypatch.setattr(target, "build_trainer", lambda *a, **k: build(*a, **k, extra_callbacks=[CtrlC()]))
    handler = signal.getsignal(signal.SIGINT)
    recipe = ["also-wi-synthetic"] if command == "pretrain" else []
    try:
        assert main([command, *recipe, *_config(tiny_world, tmp_path / "run")]) == 130
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C while it shuts down
    assert capsys.readouterr().err == (f"lidarssl {command}: interrupted; rerun with --resume to continue from the "
                                       "last finished epoch\n")


def _full_disk(monkeypatch) -> None:
    """Every atomic write (all of lidarssl's files go through lidarssl.io.atomic_path) finds the disk full."""
    import errno
    import types

    def mkstemp(*args, dir=None, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dir))

    monkeypatch.setattr("lidarssl.io.tempfile", types.SimpleNamespace(mkstemp=mkstemp))


@pytest.mark.parametrize("command", ["generate", "train", "evaluate", "export", "viz", "features", "prepare teacher"])
def test_a_full_disk_is_one_line_naming_the_folder(command: str, run: Path, tiny_world: Path, camera_world: Path,
                                                   tmp_path: Path, monkeypatch, capsys):
    """ENOSPC injected into the temporary file of the first write (tests run as root, for whom chmod does not
    make a folder read-only; the real-error case below uses a path under a file)."""
    out = tmp_path / "out"
    weights = run / "backbone.safetensors"
    argv, folder, result = {
        "generate": (["generate", f"out={out}", "frames=2", "frames_per_sequence=2", "cameras=none"], out / "lidar",
                     out / "index.json"),
        "train": (["train", *_config(tiny_world, out)], out, out / "config.yaml"),
        "evaluate": (["evaluate", str(run)], run / "eval", run / "eval" / "metrics.json"),
        "export": (["export", str(weights), "--to", "state_dict", "--out", str(out / "w.pth")], out, out / "w.pth"),
        "viz": (["viz", "pca", str(tiny_world), "--weights", str(weights), "--out", str(out / "p.png")], out,
                out / "p.png"),
        "features": (["features", str(weights), str(tiny_world), "--out", str(out)], out / "seed7",
                     out / "index.json"),
        "prepare teacher": (["prepare", "teacher", "--root", str(camera_world), f"out={out / 't.safetensors'}",
                             "epochs=1", "batch_size=4", "image_size=[28,56]"], out, out / "t.safetensors"),
    }[command]
    shutil.rmtree(run / "eval", ignore_errors=True)
    _full_disk(monkeypatch)
    assert _error(capsys, argv) == (f"lidarssl {argv[0]}: error: {folder}: No space left on device (ENOSPC); free "
                                    "disk space, then rerun")
    assert not result.exists()
    assert not list(out.rglob(".*.tmp")) if out.exists() else True


def test_a_folder_that_cannot_be_created_is_one_line(run: Path, tiny_world: Path, tmp_path: Path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    weights = run / "backbone.safetensors"
    assert _error(capsys, ["export", str(weights), "--to", "state_dict", "--out", str(blocker / "w.pth")]) == (
        f"lidarssl export: error: {blocker}: File exists (EEXIST); a file stands where a folder is needed: choose "
        "another path")
    assert _error(capsys, ["viz", "pca", str(tiny_world), "--weights", str(weights), "--out",
                           str(blocker / "sub" / "p.png")]) == (
        f"lidarssl viz: error: {blocker / 'sub'}: Not a directory (ENOTDIR); choose a writable folder")
    assert blocker.read_text() == "x"
