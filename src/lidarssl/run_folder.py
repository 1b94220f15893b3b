"""The safety rules of a run directory: one writer at a time, absolute paths, resume only what was started.

- :class:`RunLock` holds an exclusive ``fcntl`` lock on ``<out>/run.lock`` for the whole run; a second
  ``lidarssl`` process writing the same folder stops with an error naming the holder (pid, host, command).
  The kernel drops the lock when its process dies, so a killed run never leaves a stale lock; forked children
  (DataLoader workers) close their copy of the lock at once, so they cannot keep it after their parent is killed.
  Opening the folder removes the temporary files of writes a killed run left unfinished (``.NAME.*.tmp``).
- :func:`absolute_paths` resolves every path of a config before it is stored in ``config.yaml``, so
  ``evaluate`` works from any working directory.
- :func:`check_resume_config` refuses ``--resume`` with a config other than the stored one (listing the keys
  that differ) unless the caller allows it.
- :func:`resume_checkpoint` picks ``last.ckpt``, or the newest readable epoch checkpoint when it is damaged.

Imports nothing heavy (torch only inside :func:`read_checkpoint`), so the command line stays fast.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from lidarssl.errors import CheckpointError, ConfigError

__all__ = ["RunLock", "check_accelerator", "checkpoint_epoch", "make_run_folder", "absolute_paths", "check_resume_config", "read_checkpoint",
           "remove_unfinished_writes", "resume_checkpoint"]

LOCK_NAME = "run.lock"


def check_accelerator(accelerator: str, devices: int) -> None:
    """A ConfigError when the trainer asks for GPUs this machine does not have (checked before any file is written)."""
    if accelerator != "gpu":
        return
    import torch

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available == 0:
        raise ConfigError("trainer.accelerator=gpu, but torch sees no CUDA GPU on this machine; "
                          "set trainer.accelerator=cpu (or auto)")
    if devices > available:
        raise ConfigError(f"trainer.devices={devices}, but this machine has {available} GPU(s); "
                          f"set trainer.devices={available} or fewer")


def make_run_folder(out: Path) -> Path:
    """Create ``out`` (and parents); a ConfigError naming ``out=`` when that is impossible."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"out={out}: cannot write the run folder there ({e.strerror or e}); "
                          "choose a writable folder with out=PATH") from None
    return out


_HELD: set[int] = set()  # descriptors of the run locks this process holds


def _close_inherited_locks() -> None:
    """In a forked child: close the inherited lock descriptors. An flock belongs to the open file, which the
    child shares; were the child to keep it open, the lock would outlive a parent killed with SIGKILL until
    every worker had exited too, and ``--resume`` would be refused meanwhile."""
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


def remove_unfinished_writes(out: Path) -> list[Path]:
    """Remove the temporary files (``.NAME.XXXX.tmp``, see :func:`lidarssl.io.atomic_path`) that writes into
    ``out`` or its subfolders left when their process was killed. Only call it holding the folder's lock: no
    other writer is then at work."""
    removed = []
    for tmp in [*out.glob(".*.tmp"), *out.glob("*/.*.tmp")]:
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


class RunLock:
    """An exclusive lock on a run folder for the lifetime of the ``with`` block (POSIX ``flock``); taking it
    removes the unfinished writes of a killed run (:func:`remove_unfinished_writes`)."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise CheckpointError(f"{self.path.parent}: another lidarssl run is writing this folder ({holder}); "
                                  "wait for it to finish or choose another out=") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}: {' '.join(sys.argv)}\n".encode())
        self._fd = fd
        _HELD.add(fd)
        remove_unfinished_writes(self.path.parent)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            _HELD.discard(self._fd)
            os.ftruncate(self._fd, 0)  # the file stays (removing it would race a waiting writer); empty = free
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def absolute_paths(config: BaseModel) -> BaseModel:
    """A copy of ``config`` with every ``Path`` field (nested models included) made absolute."""
    update: dict[str, Any] = {}
    for name in type(config).model_fields:
        value = getattr(config, name)
        if isinstance(value, Path):
            update[name] = value.expanduser().absolute()
        elif isinstance(value, BaseModel):
            update[name] = absolute_paths(value)
        elif isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            update[name] = [absolute_paths(v) for v in value]
    return config.model_copy(update=update)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for k, v in tree.items():
            flat |= _flatten(v, f"{prefix}{k}.")
        return flat
    return {prefix.rstrip("."): tree}


def check_resume_config(out: Path, config: BaseModel, allow_changes: bool) -> list[str]:
    """The keys whose value differs from the run's stored ``config.yaml``; a ConfigError unless allowed."""
    stored_path = out / "config.yaml"
    if not stored_path.is_file():
        return []
    try:
        stored = _flatten(yaml.safe_load(stored_path.read_text()) or {})
    except yaml.YAMLError as e:
        raise ConfigError(f"{stored_path}: not valid YAML ({e}); restore it or start a new run") from None
    current = _flatten(json.loads(json.dumps(absolute_paths(config).model_dump(mode="json"))))
    changed = sorted(k for k in stored.keys() | current.keys() if stored.get(k) != current.get(k))
    if changed and not allow_changes:
        shown = ", ".join(f"{k} ({stored.get(k)!r} -> {current.get(k)!r})" for k in changed[:6])
        more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
        raise ConfigError(f"{out}: --resume with a config that differs from {stored_path} in {shown}{more}; "
                          "resume with the same recipe and overrides, or add --allow-config-change to continue "
                          "with the new values")
    return changed


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint, loaded without running code (``weights_only=True``); a CheckpointError otherwise."""
    from lidarssl.checkpoints import load_torch_file

    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    state = load_torch_file(path)
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CheckpointError(f"{path}: not a lidarssl training checkpoint (no state_dict)")
    return state


def checkpoint_epoch(path: Path) -> int:
    """The epoch (0-based) at whose end a training checkpoint was saved."""
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"])


def resume_checkpoint(out: Path) -> Path:
    """``last.ckpt`` of ``out``, or, when it is missing or damaged, the newest readable ``epochNNN.ckpt``
    (saying so on stderr); a CheckpointError when none can be read."""
    folder = out / "checkpoints"
    last = folder / "last.ckpt"
    candidates = [last, *sorted(folder.glob("epoch*.ckpt"), reverse=True)] if folder.is_dir() else []
    problems = []
    for path in candidates:
        if not path.is_file():
            continue
        try:
            read_checkpoint(path)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        if path != last:
            print(f"lidarssl: {problems[0] if problems else f'{last}: missing'}; resuming from {path.name}, the "
                  "newest readable checkpoint", file=sys.stderr, flush=True)
        return path
    if problems:
        raise CheckpointError(f"{out}: no readable checkpoint to resume from ({'; '.join(problems[:2])}); "
                              "start the run again without --resume in a new out=")
    raise CheckpointError(f"{out}: no checkpoint to resume from (expected {last}); start the run without --resume")
