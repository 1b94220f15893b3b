"""Run directories and the Lightning pieces every training command shares.

A run directory holds ``config.yaml`` (the resolved recipe), ``env.json`` (versions, git commit, seed,
command line), ``metrics.csv``, TensorBoard logs under ``tensorboard/`` and ``checkpoints/`` with one
checkpoint per epoch plus ``last.ckpt``, each written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from pydantic import BaseModel
from torch.utils.data import DataLoader

from lidarssl.config import TrainerConfig, to_yaml
from lidarssl.data.loader import ScanSamples, build_loader
from lidarssl.errors import CheckpointError, ConfigError
from lidarssl.io import atomic_write
from lidarssl.run_folder import (
    RunLock,
    absolute_paths,
    check_accelerator,
    check_resume_config,
    checkpoint_epoch,
    make_run_folder,
    resume_checkpoint,
)

__all__ = ["ScanData", "LabelledScanData", "write_run_info", "last_checkpoint", "check_fresh", "build_trainer",
           "RNGState", "EpochCSV", "run_folder", "is_global_zero", "FiniteTraining", "fit", "non_finite"]


class ScanData(L.LightningDataModule):
    """The training loader of a run: its samples in a (seed, epoch) order, sharded by rank."""

    def __init__(self, train: ScanSamples, batch_size: int, num_workers: int) -> None:
        super().__init__()
        self.train, self.batch_size, self.num_workers = train, batch_size, num_workers
        self.start_epoch = 0  # set by resume_from: the epoch a resumed run continues with

    def resume_from(self, checkpoint: Path | None) -> None:
        """Start the training sampler at the epoch after ``checkpoint`` (saved at an epoch's end)."""
        self.start_epoch = 0 if checkpoint is None else checkpoint_epoch(checkpoint) + 1

    def train_dataloader(self) -> DataLoader:
        return build_loader(self.train, self.batch_size, self.num_workers, self.trainer, self.start_epoch)


class LabelledScanData(ScanData):
    """:class:`ScanData` plus a validation loader (segmentation)."""

    def __init__(self, train: ScanSamples, val: ScanSamples, batch_size: int, num_workers: int) -> None:
        super().__init__(train, batch_size, num_workers)
        self.val = val

    def val_dataloader(self) -> DataLoader:
        return build_loader(self.val, self.batch_size, self.num_workers, self.trainer)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def write_run_info(out: Path, config: BaseModel, seed: int) -> None:
    """Write the resolved config and the environment of this run into ``out``."""
    import lightning

    import lidarssl

    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "config.yaml", lambda tmp: Path(tmp).write_text(to_yaml(absolute_paths(config))))
    env = {
        "lidarssl": getattr(lidarssl, "__version__", "unknown"), "git_commit": _git_commit(), "seed": seed,
        "torch": torch.__version__, "lightning": lightning.__version__, "python": platform.python_version(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None, "argv": sys.argv,
    }
    atomic_write(out / "env.json", lambda tmp: Path(tmp).write_text(json.dumps(env, indent=2)))


def load_run_config(run: Path, schema: type[BaseModel], kind: str, commands: str, overrides: Sequence[str] = (),
                    instead: str | None = None) -> BaseModel:
    """The config a run folder stored, or an error naming the commands whose ``out`` folder is expected.

    Args:
        run: the run folder.
        schema: the config class of that kind of run (a pretraining config is the one with a ``method``).
        kind: ``"segmentation run"`` or ``"pretraining run"``, for the message.
        commands: the commands that write such folders, for the message.
        overrides: ``key=value`` strings applied on top of the stored config.
        instead: what to do with a run of the other kind, for the message (default: pass the right folder).
    """
    from lidarssl.config import load_config

    stored = run / "config.yaml"
    if not stored.is_file():
        raise CheckpointError(f"{run}: not a {kind} directory (no config.yaml); pass the `out` folder of {commands}")
    try:
        data = yaml.safe_load(stored.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{stored}: not valid YAML ({exc})") from None
    pretraining = isinstance(data, dict) and "method" in data
    if pretraining != ("method" in schema.model_fields):
        method = data["method"].get("name", "?") if pretraining and isinstance(data["method"], dict) else "?"
        other = f"pretraining run ({method})" if pretraining else "segmentation run"
        raise ConfigError(f"{run} is a {other}, not a {kind}; {instead or f'pass the `out` folder of {commands}'}")
    return load_config(schema, stored, list(overrides))


def last_checkpoint(out: Path) -> Path:
    """The checkpoint ``--resume`` continues from, or an error saying what is missing."""
    path = out / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise CheckpointError(f"{out}: no checkpoint to resume from (expected {path}); start the run without --resume")
    return path


def is_global_zero() -> bool:
    """Whether this process is rank 0 of the whole job, known before the Trainer exists and numbered as Lightning
    numbers it: ``SLURM_PROCID`` under ``srun``, ``RANK`` under ``torchrun``, else Lightning's own launcher
    (the processes it starts get ``LOCAL_RANK`` > 0; the other nodes run with ``NODE_RANK`` > 0)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if SLURMEnvironment.detect():
        return os.environ.get("SLURM_PROCID", "0") == "0"
    if TorchElasticEnvironment.detect():
        return os.environ.get("RANK", "0") == "0"
    return all(os.environ.get(k, "0") == "0" for k in ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK"))


@contextmanager
def run_folder(config: BaseModel, resume: bool, allow_config_change: bool = False) -> Iterator[Path | None]:
    """Create and lock the run folder ``config.out`` for this process; yields the checkpoint to resume from
    (``None`` for a new run). Only the job's global rank 0 takes the lock: the other DDP ranks write nothing."""
    check_accelerator(config.trainer.accelerator, config.trainer.devices)
    out = make_run_folder(config.out)
    lock = RunLock(out) if is_global_zero() else None
    if lock is not None:
        lock.__enter__()
    try:
        if resume:
            check_resume_config(out, config, allow_config_change)
            yield resume_checkpoint(out)
        else:
            check_fresh(out)
            yield None
    finally:
        if lock is not None:
            lock.__exit__()


def check_fresh(out: Path) -> None:
    """Refuse to start a new run over one that has checkpoints: its results would be overwritten."""
    if (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()):
        raise CheckpointError(f"{out} already holds checkpoints of a run; pass --resume to continue it, "
                              "or choose another out=")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic: a run killed while saving keeps its previous file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


class RNGState(L.Callback):
    """Keeps torch's global generator in checkpoints (drop path and dropout draw from it), so a resumed run
    continues the random stream of the uninterrupted one. Data randomness is seeded per sample instead."""

    def on_save_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint["torch_rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])


def logged_epochs(path: Path) -> list[dict[str, str]]:
    """The rows of a run's ``metrics.csv`` (see :class:`EpochCSV`), none when it does not exist."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


class EpochCSV(L.Callback):
    """One row per epoch in ``metrics.csv``: epoch, step, learning rate and every epoch-level metric.

    The file is rewritten atomically each epoch; rows of epochs that a resumed run repeats are replaced,
    so the file always matches the checkpoints.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step,
               "lr": trainer.optimizers[0].param_groups[-1]["lr"] if trainer.optimizers else ""}
        metrics = trainer.callback_metrics
        # keep epoch-level values only: skip per-step ones and the bare name of an on_step+on_epoch metric
        row |= {k: f"{float(v):.6g}" for k, v in sorted(metrics.items())
                if not k.endswith("_step") and f"{k}_epoch" not in metrics}
        rows = [r for r in logged_epochs(self.path) if int(r["epoch"]) < trainer.current_epoch] + [row]
        keys = list(dict.fromkeys(k for r in rows for k in r))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys, restval="")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(buf.getvalue()))


class RankAgreement(L.Callback):
    """After training under DDP, check that every rank holds the same weights (parameters and buffers).

    Parameters drift apart only through a bug (a rank-dependent branch, a gradient outside DDP); this turns
    such drift into an error instead of a silently wrong checkpoint. Rank 0 writes the per-rank checksums
    to ``ranks.json``.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.world_size == 1:
            return
        import torch.distributed as dist

        # DDP gives every rank rank 0's buffers at the start of each step; after the last step the other ranks
        # still hold the BatchNorm statistics of their own batch (unless sync_batchnorm), so apply that rule once
        # more: every rank then holds what rank 0 writes, and a difference left can only be a drift of parameters.
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
        state = module.state_dict()
        checksum = torch.stack([v.double().sum() for v in state.values() if v.is_floating_point()]).sum()
        gathered_tensors = [torch.zeros_like(checksum) for _ in range(trainer.world_size)]
        dist.all_gather(gathered_tensors, checksum)  # plain collective: Lightning's all_gather warns of a deprecation
        gathered = [float(x) for x in gathered_tensors]
        if trainer.is_global_zero:
            atomic_write(self.path, lambda tmp: Path(tmp).write_text(json.dumps({"checksums": gathered})))
        if any(abs(g - gathered[0]) > 1e-9 * max(1.0, abs(gathered[0])) for g in gathered):
            raise RuntimeError(f"DDP ranks ended with different weights: checksums {gathered}")


class EpochProgressBar(TQDMProgressBar):
    """Lightning's progress bar with epochs counted from 1 of the total (``Epoch 1/3``), as a user counts them."""

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"Epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")


def quiet_lightning() -> None:
    """Silence what Lightning prints that asks nothing of the user: accelerator lines, tips, the stop notice
    (its INFO logs), its "possible user" hints about tiny datasets and logging intervals, and the deprecation
    warnings of its own internals. Errors and real warnings still show."""
    import logging
    import warnings

    from lightning.fabric.utilities.warnings import PossibleUserWarning

    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=PossibleUserWarning)
    for message in (r".*isinstance\(treespec, LeafSpec\)", r"The number of training batches",
                    r"Checkpoint directory .* exists and is not empty", r".*modules in eval mode",
                    r".*does not have many workers"):
        warnings.filterwarnings("ignore", message=message)


def build_trainer(out: Path, epochs: int, cfg: TrainerConfig, extra_callbacks: list[L.Callback] | None = None) -> L.Trainer:
    """A Trainer writing into run directory ``out``: per-epoch atomic checkpoints, CSV and TensorBoard logs."""
    check_accelerator(cfg.accelerator, cfg.devices)
    quiet_lightning()
    gpu = cfg.accelerator == "gpu" or (cfg.accelerator == "auto" and torch.cuda.is_available())
    precision = cfg.precision if cfg.precision != "auto" else ("16-mixed" if gpu else "32-true")
    distributed = cfg.devices * cfg.num_nodes > 1
    # keep_last: keep the newest N epoch checkpoints (ranked by step), besides last.ckpt
    keep = {"save_top_k": -1} if cfg.keep_last is None else {"save_top_k": cfg.keep_last, "monitor": "step",
                                                               "mode": "max"}
    checkpoint = ModelCheckpoint(dirpath=out / "checkpoints", filename="epoch{epoch:03d}", auto_insert_metric_name=False,
                                 every_n_epochs=1, save_last=True, **keep,
                                 # Lightning saves after validation; epochs that val_every skips still get theirs
                                 save_on_train_epoch_end=True if cfg.val_every > 1 else None)
    if cfg.sync_batchnorm and distributed and not gpu:
        raise ConfigError("trainer.sync_batchnorm=true needs CUDA GPUs (torch's SyncBatchNorm has no CPU kernel); "
                          "set trainer.sync_batchnorm=false, or trainer.accelerator=gpu")
    return L.Trainer(
        default_root_dir=out,
        max_epochs=epochs,
        accelerator="gpu" if gpu else "cpu",
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy="ddp" if distributed else "auto",
        precision=precision,
        accumulate_grad_batches=cfg.accumulate,
        sync_batchnorm=cfg.sync_batchnorm and distributed,
        callbacks=[FiniteTraining(), checkpoint, RNGState(), EpochCSV(out / "metrics.csv"), RankAgreement(out / "ranks.json"),
                   *([EpochProgressBar()] if cfg.progress_bar else []), *(extra_callbacks or [])],
        logger=TensorBoardLogger(out, name="tensorboard", version=""),
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=cfg.log_every,
        check_val_every_n_epoch=cfg.val_every,
        enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,  # a sanity pass would draw from the RNG before a resumed epoch
        use_distributed_sampler=False,  # our EpochSampler shards by rank with a (seed, epoch) order
    )


def non_finite(trainer: L.Trainer, what: str) -> ConfigError:
    """The error that stops a run whose ``what`` (the loss, a weight) became NaN or infinite at this step."""
    lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
    return ConfigError(f"step {trainer.global_step}: the {what} is not finite (NaN or infinite); stopped before "
                       f"writing weights. The learning rate is the likely cause: lower optim.lr (now {lr:g} at this "
                       "step) or the loss weights, and start again")


class FiniteTraining(L.Callback):
    """Stop at the first optimiser step whose loss or updated weights are not finite, before the epoch's
    checkpoint could store them (see :func:`non_finite`)."""

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, *args: Any) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss).all()):
            raise non_finite(trainer, "loss")
        bad = next((name for name, p in module.named_parameters()
                    if p.is_floating_point() and not bool(torch.isfinite(p).all())), None)
        if bad is not None:
            raise non_finite(trainer, f"weight {bad}")


def fit(trainer: L.Trainer, module: L.LightningModule, data: L.LightningDataModule, ckpt: Path | None) -> None:
    """``trainer.fit``, with Ctrl-C raised as KeyboardInterrupt (Lightning turns it into ``exit(1)``), so every
    training command reports an interruption the same way."""
    try:
        trainer.fit(module, datamodule=data, ckpt_path=ckpt)
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
