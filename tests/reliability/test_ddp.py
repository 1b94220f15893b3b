"""Data-parallel runs on two CPU processes (gloo), started as ``torchrun`` and as ``srun`` starts them (one
process per task with the SLURM variables): every method's pretraining and finetuning agree across ranks,
write their weights and results once, and resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lidarssl.checkpoints import load_weights, save_weights
from lidarssl.models.backbones import create_backbone
from lidarssl.runs import is_global_zero

BACKBONE = ["backbone.name=waffleiron_4_32", "backbone.options={voxel_size: 0.4, grid_shapes: [[32, 32], [32, 8], [32, 8]]}"]
#: one scan per process: the 2 train frames of camera_world make one step per epoch
DDP = ["trainer.devices=2", "trainer.accelerator=cpu", "trainer.batch_size=1", "data.num_workers=0",
       "trainer.progress_bar=false", "optim.epochs=2"]
#: the smallest settings of each method (recipe, overrides)
METHODS = {
    "ppkt": (None, ["method.name=ppkt", "teacher.name=resnet50", "pairing.crop_size=[48,80]",
                    "method.options.max_pairs=256"]),
    "slidr": (None, ["method.name=slidr", "teacher.name=resnet50", "pairing.crop_size=[48,80]",
                     "method.options.superpixels=slic30_fast"]),
    "stslidr": (None, ["method.name=stslidr", "teacher.name=resnet50", "pairing.crop_size=[48,80]",
                       "method.options.superpixels=slic30_fast"]),
    "scalr": ("scalr-wi-synthetic", ["data.teacher_cache=null", "pairing.resize=[48,96]", "pairing.cameras=one"]),
    "also": ("also-wi-synthetic", ["method.options={queries: 128, max_neighbors: 4}"]),
    "nclr": ("nclr-wi-synthetic", ["method.options={points_per_view: 256, pairs_per_scan: 64, fused_pairs_per_scan: 64, "
                                   "keypoints: 16, pose_start_epoch: 0}"]),
}
_LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "TORCHELASTIC_")) and k not in _LAUNCH_VARS}
    return env | {"OMP_NUM_THREADS": "1", **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(how: str, args: list[str], crash: tuple[Path, int, str] | None = None) -> list[str]:
    """Run ``lidarssl ARGS`` as 2 data-parallel processes started by ``how`` (``torchrun`` or ``slurm``); with
    ``crash`` (script, step, module) every process SIGKILLs itself after that optimiser step. Returns the stdout
    of the job (torchrun: both ranks together; slurm: one per task)."""
    program = [str(crash[0])] if crash else ["-m", "lidarssl.cli"]
    env = _clean_env(**({"CRASH_AFTER_STEP": str(crash[1]), "CRASH_MODULE": crash[2]} if crash else {}))
    if how == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *program, *args]
        runs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    else:  # srun --ntasks-per-node=2: one process per task, each told its rank by SLURM's variables
        port = str(_free_port())
        runs = [subprocess.Popen([sys.executable, *program, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=env | {
                                     "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1",
                                     "SLURM_NODEID": "0", "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r),
                                     "SLURM_JOB_NAME": "lidarssl", "SLURM_JOB_ID": "4242",
                                     "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
                for r in range(2)]
    outs = []
    for run in runs:
        stdout, stderr = run.communicate(timeout=600)
        if crash:  # killed, not failed: torchrun names the signal of its workers
            assert run.returncode == -signal.SIGKILL or "SIGKILL" in stderr, stderr[-3000:]
        else:
            assert run.returncode == 0, stderr[-3000:]
            assert "deprecat" not in stderr.lower(), stderr[-3000:]  # no library noise in a user's run
        outs.append(stdout)
    return outs


def _ranks_agree(out: Path) -> None:
    checksums = json.loads((out / "ranks.json").read_text())["checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]


@pytest.mark.parametrize("method", METHODS)
def test_pretraining_two_processes_killed_then_resumed(method: str, camera_world: Path, tmp_path: Path, crash_script):
    """Started by torchrun and killed after the first step of epoch 2 (before its checkpoint), then resumed as
    srun starts it: the ranks agree, and the weights and the result are written once."""
    recipe, extra = METHODS[method]
    out = tmp_path / "run"
    args = ["pretrain", *([recipe] if recipe else []), f"data.root={camera_world}", f"out={out}", *BACKBONE, *DDP,
            *extra]
    if method == "also":  # one uninterrupted run, for the weights the resumed one must end with
        launch("torchrun", [*args[:3], f"out={tmp_path / 'full'}", *args[4:]])
    launch("torchrun", args, crash=(crash_script, 2, "lidarssl.methods.pretrain"))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch000.ckpt", "last.ckpt"]
    assert not (out / "backbone.safetensors").exists()
    outs = launch("slurm", [args[0], "--resume", *args[1:]])
    assert [o.count("backbone weights: ") for o in outs] == [1, 0]  # rank 0 alone reports
    _ranks_agree(out)
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    assert set(load_weights(out / "backbone.safetensors")[0]) == set(create_backbone("waffleiron_4_32").model.state_dict())
    if method == "also":
        _same_weights(tmp_path / "full" / "backbone.safetensors", out / "backbone.safetensors")


def _same_weights(a: Path, b: Path) -> None:
    # same data order, augmentations and optimiser state; float summation order may differ between a fresh
    # process and one that ran an epoch (see tests/reliability/test_resume_workers.py)
    wa, wb = load_weights(a)[0], load_weights(b)[0]
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=2e-3, rtol=1e-4, msg=key)


def test_finetuning_two_processes_killed_then_resumed(tiny_world: Path, tmp_path: Path, crash_script):
    """Finetuning from a backbone file: srun-style and torchrun runs agree across ranks, print the IoU table
    once, and a run killed mid-epoch resumes to the weights of the uninterrupted one."""
    spec = create_backbone("waffleiron_4_32", voxel_size=0.4, grid_shapes=[[32, 32], [32, 8], [32, 8]])
    pretrained = save_weights(tmp_path / "pre.safetensors", spec.model.state_dict(),
                              {"backbone": "waffleiron_4_32", "options": {}})

    def args(out: Path) -> list[str]:
        return ["finetune", f"data.root={tiny_world}", f"out={out}", f"pretrained={pretrained}", *BACKBONE, *DDP,
                "optim.warmup_epochs=0.5"]

    outs = launch("slurm", args(tmp_path / "full"))
    assert [o.count("mIoU") for o in outs] == [1, 0]
    _ranks_agree(tmp_path / "full")
    # 4 train scans, one per process: step 3 is the middle of epoch 2
    launch("torchrun", args(tmp_path / "x"), crash=(crash_script, 3, "lidarssl.downstream.train"))
    assert not (tmp_path / "x" / "metrics.json").exists()
    (out,) = launch("torchrun", [args(tmp_path / "x")[0], "--resume", *args(tmp_path / "x")[1:]])
    assert out.count("mIoU") == 1
    _ranks_agree(tmp_path / "x")
    _same_weights(tmp_path / "full" / "backbone.safetensors", tmp_path / "x" / "backbone.safetensors")


@pytest.mark.parametrize(("env", "zero"), [
    ({}, True),
    ({"LOCAL_RANK": "1"}, False),  # a process Lightning's launcher started
    ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False),  # a second node, started by hand
    ({"TORCHELASTIC_RUN_ID": "x", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "4"}, True),
    ({"TORCHELASTIC_RUN_ID": "x", "RANK": "2", "LOCAL_RANK": "0", "GROUP_RANK": "1", "WORLD_SIZE": "4"}, False),
    ({"SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
      "SLURM_JOB_NAME": "pretrain"}, True),
    ({"SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2", "SLURM_PROCID": "2", "SLURM_LOCALID": "0",
      "SLURM_JOB_NAME": "pretrain"}, False),
    # an interactive allocation: Lightning ignores SLURM and starts the processes itself
    ({"SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_JOB_NAME": "bash", "LOCAL_RANK": "1"}, False),
])
def test_one_process_per_job_is_rank_zero(env: dict[str, str], zero: bool, monkeypatch: pytest.MonkeyPatch):
    for key in os.environ:
        if key.startswith(("SLURM_", "TORCHELASTIC_")) or key in _LAUNCH_VARS:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert is_global_zero() is zero
