"""Reading a release or training checkpoint without running code from it.

Checkpoints are read with ``torch.load(weights_only=True)`` only: tensors, plain containers and numbers
(numpy scalars too, which WaffleIron stores as ``best_miou``), never an arbitrary class or function.
Tar archives (ScaLR and WaffleIron ship ``.tar.gz`` files) are checked member by member before anything
is read: an absolute path, a ``..`` component, a link leaving the archive or a device file refuses the
whole archive. Nothing is extracted to disk but the one checkpoint, into a temporary folder.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lidarssl.checkpoints import load_torch_file
from lidarssl.errors import CheckpointError

__all__ = ["CHECKPOINT_SUFFIXES", "Source", "read_source"]

#: File names a checkpoint inside an archive or a folder may have.
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")

# numpy scalars (and the dtypes they are rebuilt from) are data, not code: allow them in weights_only loads.
_NUMPY_GLOBALS = [
    np._core.multiarray.scalar,
    (np._core.multiarray.scalar, "numpy.core.multiarray.scalar"),  # pickled under numpy 1.x
    np.dtype,
    np.dtypes.Float64DType, np.dtypes.Float32DType, np.dtypes.Int64DType, np.dtypes.Int32DType,
    np.dtypes.BoolDType,
]  # fmt: skip


@dataclass
class Source:
    """One checkpoint as read from disk.

    Attributes:
        path: the file or folder given.
        sha256: hex digest of ``path`` (of the archive, for a tar).
        size: bytes of ``path``.
        member: the checkpoint's path inside the archive or folder, or ``None`` for a plain file.
        content: what the checkpoint holds (a mapping).
        metadata: the safetensors header metadata, for a ``.safetensors`` file.
        others: the other checkpoints of the archive or folder, not read (WaffleIron's ``ckpt_best.pth``
            beside the ``ckpt_last.pth`` it reports).
    """

    path: Path
    sha256: str
    size: int
    member: str | None
    content: Mapping[str, Any]
    metadata: dict[str, str] | None = None
    others: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``path`` or ``path:member`` for messages."""
        return f"{self.path}:{self.member}" if self.member else str(self.path)

    @property
    def hints(self) -> str:
        """Lower-cased file and member names: they tell the dataset and protocol of a release."""
        return f"{self.path.name} {self.member or ''}".lower()


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception's message, on one line."""
    text = " ".join(str(exc).split())
    end = text.find(". ", 20)
    text = text[: end + 1] if end > 0 else text
    return (text[:200] + "...") if len(text) > 200 else (text or type(exc).__name__)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def torch_load(path: Path, label: str) -> Mapping[str, Any]:
    """``torch.load(weights_only=True)`` of ``path``, with one-line errors naming ``label``.

    Raises:
        CheckpointError: the file would import code, is truncated or corrupt, or holds no mapping.
    """
    obj = load_torch_file(path, label, _NUMPY_GLOBALS)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{label}: holds a {type(obj).__name__}, expected a dict of tensors or of state dicts")
    return obj


def _safetensors_load(path: Path, label: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), "pt") as f:
            metadata = dict(f.metadata() or {})
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{label}: not a readable safetensors file ({_first_line(exc)})") from None


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse members that would land outside an extraction folder, or are not plain files and folders."""
    name = member.name
    normal = posixpath.normpath(name)
    absolute = name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) is not None
    escapes = absolute or normal == ".." or normal.startswith("../")
    if escapes:
        raise CheckpointError(f"{archive}: unsafe tar member '{name}' escapes the extraction folder; "
                              "refusing the whole archive")  # fmt: skip
    if member.issym() or member.islnk():
        target = posixpath.normpath(posixpath.join(posixpath.dirname(normal), member.linkname))
        if member.linkname.startswith("/") or target == ".." or target.startswith("../"):
            raise CheckpointError(f"{archive}: unsafe tar member '{name}' links to '{member.linkname}' outside the "
                                  "extraction folder; refusing the whole archive")  # fmt: skip
    elif not (member.isfile() or member.isdir()):
        raise CheckpointError(f"{archive}: tar member '{name}' is a device or pipe, not a file; refusing the archive")


#: The checkpoint a release folder is scored with, when it holds several (WaffleIron also keeps its best epoch).
_PREFERRED = ("ckpt_last.pth", "model.pth")


def _pick(candidates: list[str], where: str) -> str:
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise CheckpointError(f"{where}: holds no checkpoint ({', '.join(CHECKPOINT_SUFFIXES)} file)")
    preferred = [c for c in candidates if posixpath.basename(c.replace("\\", "/")) in _PREFERRED]
    if len(preferred) == 1:
        return preferred[0]
    raise CheckpointError(f"{where}: holds several checkpoints ({', '.join(sorted(candidates))}); "
                          "import the one you want by its path")  # fmt: skip


def _read_tar(path: Path, sha: str, size: int) -> Source:
    try:
        with tarfile.open(path, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, path)
            candidates = [m.name for m in members if m.isfile() and m.name.endswith(CHECKPOINT_SUFFIXES)]
            name = _pick(candidates, str(path))
            member = tar.getmember(name)
            with tempfile.TemporaryDirectory(prefix="lidarssl-import-") as tmp:
                local = Path(tmp) / posixpath.basename(name)
                source = tar.extractfile(member)
                if source is None:
                    raise CheckpointError(f"{path}: tar member '{name}' cannot be read")
                with source, local.open("wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                read = _read_file(local, sha, size, label=f"{path}:{name}", shown=path, member=name)
                read.others = [c for c in candidates if c != name]
                return read
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt tar archive ({_first_line(exc)})") from None


def _read_file(local: Path, sha: str, size: int, label: str, shown: Path, member: str | None) -> Source:
    if local.name.endswith(".safetensors"):
        content, metadata = _safetensors_load(local, label)
        return Source(shown, sha, size, member, content, metadata)
    return Source(shown, sha, size, member, torch_load(local, label))


def read_source(path: str | Path) -> Source:
    """Read a checkpoint file, a ``.tar``/``.tar.gz`` release holding one, or a folder holding one.

    Raises:
        CheckpointError: missing path, unsafe or corrupt archive, unreadable or code-carrying checkpoint.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        found = [p for p in sorted(path.rglob("*")) if p.is_file() and p.name.endswith(CHECKPOINT_SUFFIXES)]
        candidates = [str(p.relative_to(path)) for p in found]
        name = _pick(candidates, str(path))
        local = path / name
        read = _read_file(local, _sha256(local), local.stat().st_size, str(local), path, name)
        read.others = [c for c in candidates if c != name]
        return read
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found; expected a checkpoint (.pt, .pth, .ckpt) or a release .tar.gz")
    sha, size = _sha256(path), path.stat().st_size
    if path.name.lower().endswith(_TAR_SUFFIXES) or (not zipfile.is_zipfile(path) and tarfile.is_tarfile(path)):
        return _read_tar(path, sha, size)
    return _read_file(path, sha, size, str(path), path, None)
