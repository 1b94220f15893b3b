"""Fixtures for the format readers: a writable copy of a real sample to corrupt, and a private index cache."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """Index cache for readers of the read-only real samples."""
    return tmp_path / "index"


@pytest.fixture
def writable_copy(real_root: Path, tmp_path: Path) -> Callable[[str], Path]:
    """``copy(rel)`` copies ``real_root/rel`` into ``tmp_path`` with writable files and returns the copy's root.

    The real samples are read-only, and ``shutil.copytree`` would copy that mode too; files are copied without
    their permission bits so that tests can truncate, overwrite or delete them.
    """

    def copy(rel: str) -> Path:
        src, dst = real_root / rel, tmp_path / "copy" / rel
        for path in sorted(src.rglob("*")):
            target = dst / path.relative_to(src)
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
        return dst

    return copy


@pytest.fixture
def truncate() -> Callable[[Path, int], None]:
    """``truncate(path, n)`` drops the last ``n`` bytes of a file."""

    def cut(path: Path, n: int) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - n])

    return cut
