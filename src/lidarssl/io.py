"""File writing every module shares: atomic writes and file names built from data (frame ids, camera names).

An atomic write goes to a temporary file beside the target and is renamed onto it only when complete, so a
reader (or a run killed mid-write) never sees half a file. Files get the permissions of an ordinary new file
(``0666`` less the umask), not the private ``0600`` of :func:`tempfile.mkstemp`: run folders, caches and
dataset indexes are meant to be shared.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from lidarssl.errors import DataError

__all__ = ["atomic_path", "atomic_write", "atomic_file", "write_bytes_atomic", "safe_parts"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` (its folder is created) that is renamed onto ``path`` only if the
    ``with`` block succeeds; otherwise it is removed and ``path`` keeps its previous content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], object]) -> Path:
    """Call ``write(tmp_path)``, then rename the temporary file onto ``path``."""
    with atomic_path(path) as tmp:
        write(str(tmp))
    return Path(path)


@contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary file object whose content replaces ``path`` only if the ``with`` block succeeds."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        yield f


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, creating the folder if needed."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def safe_parts(value: str, what: str, allow_slash: bool = True) -> list[str]:
    """``value`` split into path components that stay below a cache folder.

    Frame ids (``seq/frame``) and camera names come from data files; they become file names only if no
    component is empty, ``.`` or ``..`` and none holds a backslash or NUL (or a slash, unless allowed).

    Raises:
        DataError: naming ``what`` and the value.
    """
    if not isinstance(value, str) or not value:
        raise DataError(f"{what} must be a non-empty string, got {value!r}")
    parts = value.split("/") if allow_slash else [value]
    for part in parts:
        if part in ("", ".", "..") or "\\" in part or "\0" in part or (not allow_slash and "/" in part):
            raise DataError(f"{what} {value!r} cannot name a file below the cache folder "
                            "(empty, '.' or '..' components, backslashes and NUL are rejected)")
    return parts
