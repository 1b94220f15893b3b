"""``lidarssl prepare``: build a dataset's frame index once and check the files it refers to.

The command line (:mod:`lidarssl.cli`) dispatches ``lidarssl prepare <target>``: every dataset format, plus
caches of superpixels and teacher features. For a dataset it calls :func:`prepare_dataset`, which returns the
number of problems found; the command exits with code 2 when there are any.

For a dataset, every split is opened (readers cache their frame index, so this is what a training run would
otherwise do first), then every file the index refers to is checked by size alone, which costs one ``stat`` per
file: point files must be a whole number of points, label files must hold one label per point, images and
other files must exist and not be empty. Every frame that passes is then read as training reads it (points
decompressed, images decoded, label ids mapped, one label per point), since a damaged file can keep a plausible
size. Progress is reported about every 10 %. The checked position is saved
beside the index after each tenth, so an interrupted run resumes where it stopped, and a finished check is not
repeated until the index changes (``--refresh`` forces both again).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lidarssl.data.formats._common import FileCheck
from lidarssl.errors import ConfigError, DataError

#: Problems listed per group before "... and N more".
SHOWN_PER_GROUP = 5

#: Problem group (what is wrong) -> the files it applies to.
Problems = dict[str, list[str]]


@dataclass
class PrepareJob:
    """What ``lidarssl prepare`` was asked to do.

    Attributes:
        target: the target name (a dataset format, ``auto``, ``superpixels`` or ``teacher-features``).
        root: dataset folder.
        split: a split name (named splits included), or ``None`` for every split of the reader.
        workers: threads that check files.
        refresh: rebuild indexes and redo finished checks.
        options: further ``key=value`` options for the target (reader options for datasets).
        log: where progress lines go.
    """

    target: str
    root: Path
    split: str | None = None
    workers: int = 4
    refresh: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = print


# --- the files of a frame -----------------------------------------------------------------------------------------


def frame_checks(dataset: Any, index: int) -> list[FileCheck]:
    """The files frame ``index`` of a reader refers to, with the checks each must pass (the reader's own list)."""
    if not hasattr(dataset, "frame_files"):
        raise DataError(f"lidarssl prepare cannot list the files of a {type(dataset).__name__}")
    return dataset.frame_files(index)


def check_file(check: FileCheck) -> str | None:
    """The problem group ``check`` falls in, or None when the file looks right."""
    try:
        size = check.path.stat().st_size
    except OSError:
        return f"missing {check.kind}"
    if size == 0:
        return f"empty {check.kind}"
    if check.record and size % check.record:
        return f"{check.kind} not a whole number of {check.record}-byte points (truncated?)"
    if check.points_of is not None:
        try:
            points, partial = divmod(check.points_of.stat().st_size, check.points_record)
        except OSError:
            return None  # the point file is reported missing itself
        if not partial and size != points * check.label_size:  # a truncated point file is reported itself
            return f"{check.kind} with a label count other than its scan's point count"
    return None


# --- resumable checking -------------------------------------------------------------------------------------------


def _resolve(dataset: Any) -> tuple[Any, list[int]]:
    """The reader under a (possibly nested) named split, and the reader's frames the split holds."""
    indices = list(range(len(dataset)))
    while hasattr(dataset, "indices") and hasattr(dataset, "base"):
        indices = [dataset.indices[i] for i in indices]
        dataset = dataset.base
    return dataset, indices


def _state_path(reader: Any, name: str) -> Path | None:
    """Where the check state of ``name`` is saved: beside the reader's index, else in the index folders."""
    from lidarssl.data.formats._common import INDEX_DIRNAME, _may_write, user_cache_dir

    index_path = getattr(reader, "index_path", None)
    if index_path is not None:
        return index_path.parent / f"prepare-{name}.json"
    root = Path(reader.root).absolute()
    key = hashlib.sha1(str(root).encode()).hexdigest()[:16]
    for folder in (root / INDEX_DIRNAME, user_cache_dir() / key):
        if _may_write(folder):
            return folder / f"prepare-{name}.json"
    return None


def _index_key(reader: Any, frames: list[int]) -> list:
    """What a saved check is valid for: the frame list (index file, frame count) and the modification times of
    the folders holding its files, which change when a file is added, removed or renamed there."""
    path = getattr(reader, "index_path", None) or (Path(reader.root) / "index.json")
    try:
        st = path.stat()
        index = [str(path), st.st_size, st.st_mtime_ns]
    except OSError:
        index = [None, 0, 0]
    folders = sorted({str(c.path.parent) for i in frames for c in frame_checks(reader, i)})
    times = []
    for folder in folders:
        try:
            times.append(os.stat(folder).st_mtime_ns)
        except OSError:
            times.append(-1)
    return [*index, len(frames), hashlib.sha1(json.dumps([folders, times]).encode()).hexdigest()]


def _load_state(path: Path | None, key: list) -> dict:
    fresh = {"key": key, "checked": 0, "problem_frames": []}
    if path is None:
        return fresh
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return fresh
    ok = isinstance(state, dict) and state.get("key") == key and isinstance(state.get("problem_frames"), list)
    return state if ok else fresh


def _save_state(path: Path | None, state: dict) -> None:
    from lidarssl.data.formats._common import write_json_atomic

    if path is not None:
        try:
            write_json_atomic(path, state)
        except OSError:
            pass  # a read-only cache only costs a repeated check


def _chunks(n: int, parts: int = 10) -> Iterator[tuple[int, int]]:
    step = max(1, -(-n // parts))
    for start in range(0, n, step):
        yield start, min(n, start + step)



def _check_frames(reader: Any, frames: list[int], positions: Iterable[int], pool: ThreadPoolExecutor,
                  seen: set[Path]) -> tuple[Problems, list[int]]:
    """Check the files of ``frames[p]`` for each position ``p`` (files in ``seen`` are skipped, then added).

    Returns:
        Problem group -> files, and the positions whose frames have a problem.
    """
    todo: list[tuple[int, FileCheck]] = []
    for p in positions:
        for c in frame_checks(reader, frames[p]):
            if c.path not in seen:
                seen.add(c.path)
                todo.append((p, c))
    problems: Problems = {}
    bad = set()
    for (p, c), group in zip(todo, pool.map(check_file, [c for _, c in todo])):
        if group is not None:
            problems.setdefault(group, []).append(str(c.path))
            bad.add(p)
    # Sizes cannot tell a damaged file: read every other frame as training would (decompress the points, decode
    # the images, map the label ids, check one label per point).
    readable = [p for p in positions_of(todo) if p not in bad]
    for p, found in zip(readable, pool.map(lambda q: read_problem(reader, frames[q]), readable)):
        if found is not None:
            group, where = found
            problems.setdefault(group, []).append(where)
            bad.add(p)
    return problems, sorted(bad)


def positions_of(todo: list[tuple[int, FileCheck]]) -> list[int]:
    return sorted({p for p, _ in todo})


def read_problem(reader: Any, frame: int) -> tuple[str, str] | None:
    """(problem group, file and reason) when frame ``frame`` of ``reader`` cannot be read as training reads it."""
    try:
        reader[frame]
    except (DataError, OSError, ValueError, EOFError) as e:
        message = str(e)
        lower = message.lower()
        if "label ids" in lower:
            group = "label ids outside the class map"
        elif "image" in lower or ".jpg" in lower or ".png" in lower:
            group = "images that do not decode"
        elif "labels" in lower or "label" in lower:
            group = "label files that do not match their points"
        else:
            group = "frame files that cannot be read (damaged or truncated)"
        return group, _first_clause(message.replace("\n", " "), 300)
    return None


def _merge(into: Problems, more: Problems) -> None:
    for group, files in more.items():
        into.setdefault(group, []).extend(files)


def check_split(dataset: Any, name: str, job: PrepareJob, seen: set[Path]) -> Problems:
    """Check every file of ``dataset``'s frames (skipping ``seen`` ones), resuming a saved partial check.

    Frames checked by an earlier run are not checked again, except those that had problems (they may have
    been fixed since).

    Returns:
        Problem group -> files, over the whole split.
    """
    reader, frames = _resolve(dataset)
    state_path = _state_path(reader, name.replace("/", "_").replace("@", "_at_").replace("%", "pct"))
    key = _index_key(reader, frames)
    state = {"key": key, "checked": 0, "problem_frames": []} if job.refresh else _load_state(state_path, key)
    total = len(frames)
    problems: Problems = {}
    with ThreadPoolExecutor(max(1, job.workers)) as pool:
        if state["problem_frames"]:
            problems, state["problem_frames"] = _check_frames(reader, frames, state["problem_frames"], pool, seen)
            job.log(f"  {name}: rechecked the frames with problems in the last run")
        if state["checked"] >= total:
            job.log(f"  {name}: all {total} frames were checked before")
        elif state["checked"]:
            job.log(f"  {name}: resuming the check at frame {state['checked']}/{total}")
        for start, stop in _chunks(total):
            if stop <= state["checked"]:
                continue
            found, bad = _check_frames(reader, frames, range(max(start, state["checked"]), stop), pool, seen)
            _merge(problems, found)
            state["problem_frames"] = sorted(set(state["problem_frames"]) | set(bad))
            state["checked"] = stop
            _save_state(state_path, state)
            job.log(f"  {name}: checked {stop}/{total} frames ({100 * stop // total}%)")
    _save_state(state_path, state)
    return problems


# --- dataset targets ----------------------------------------------------------------------------------------------


def prepare_dataset(job: PrepareJob) -> int:
    """Index every split of the dataset at ``job.root`` (or ``job.split``) and check its files.

    Returns:
        The number of problem files, listed by group through ``job.log``.
    """
    from lidarssl.data.datasets import (
        check_format,
        detect_format,
        open_dataset,
        reader_splits,
    )

    root = Path(job.root)
    fmt = detect_format(root) if job.target == "auto" else check_format(job.target)
    options = dict(job.options)
    if job.refresh and fmt != "synthetic":
        options["refresh"] = True
    names = list(reader_splits(fmt)) if job.split in (None, "all") else [job.split]
    job.log(f"preparing {fmt} dataset {root}: splits {', '.join(names)}")
    problems: Problems = {}
    seen: set[Path] = set()
    opened = 0
    for name in names:
        try:
            dataset = open_dataset(root, name, format=fmt, **options)
        except TypeError as e:  # an option the reader does not take
            raise ConfigError(f"{fmt} reader: {e}; check the key=value options") from None
        except DataError as e:
            if job.split not in (None, "all"):
                raise
            job.log(f"  {name}: skipped ({_first_clause(str(e))})")
            continue
        opened += 1
        where = getattr(_resolve(dataset)[0], "index_path", None)
        job.log(f"  {name}: {len(dataset)} frames" + (f", index {where}" if where else ""))
        _merge(problems, check_split(dataset, name, job, seen))
    if not opened:
        raise DataError(f"{root}: no split of {names} could be opened as {fmt}")
    return report_problems(problems, job.log)


def _first_clause(message: str, limit: int = 140) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def report_problems(problems: Problems, log: Callable[[str], None]) -> int:
    """Log problem files grouped with their count (a few examples each); return how many there are."""
    total = sum(len(files) for files in problems.values())
    if not total:
        log("all files present, of plausible size and readable")
        return 0
    log(f"{total} problem files:")
    for group, files in sorted(problems.items(), key=lambda kv: -len(kv[1])):
        log(f"  {group}: {len(files)}")
        for f in files[:SHOWN_PER_GROUP]:
            log(f"    {f}")
        if len(files) > SHOWN_PER_GROUP:
            log(f"    ... and {len(files) - SHOWN_PER_GROUP} more")
    return total
