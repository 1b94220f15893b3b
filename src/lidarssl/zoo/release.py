"""``lidarssl import``: a seed release or checkpoint becomes a folder lidarssl loads.

The folder holds ``backbone.safetensors`` (the preset's state dict, with metadata naming the preset and its
options: the file ``pretrain`` writes and ``probe``/``finetune pretrained=`` accept), ``head.safetensors``
when the release has heads, and ``import.json``: the source file and its sha256, the detected format,
network, kernel layout, preset and origin, and every source key with where it went. The folder is written
beside its destination and renamed into place, so a failed import leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lidarssl.checkpoints import save_weights
from lidarssl.errors import CheckpointError
from lidarssl.zoo.convert import Conversion, convert
from lidarssl.zoo.kernels import LAYOUT_NAMES
from lidarssl.zoo.origins import ORIGINS
from lidarssl.zoo.reading import Source, read_source

__all__ = ["ImportResult", "format_report", "import_checkpoint", "lidarssl_version", "read_release"]

BACKBONE_FILE, HEAD_FILE, INFO_FILE = "backbone.safetensors", "head.safetensors", "import.json"


@dataclass
class ImportResult:
    """What :func:`import_checkpoint` wrote.

    Attributes:
        out: the release folder.
        info: the content of ``import.json``.
        report: the printed report.
    """

    out: Path
    info: dict[str, Any]
    report: str


def lidarssl_version() -> str:
    """The installed lidarssl version, for the files it writes."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lidarssl")
    except PackageNotFoundError:
        return "unknown"


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out} is a file; --out needs a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CheckpointError(f"{out} already exists and is not empty; choose another --out or pass --overwrite")


def _info(source: Source, c: Conversion) -> dict[str, Any]:
    counts: dict[str, int] = defaultdict(int)
    for r in c.records:
        counts[r.action] += 1
    heads = {h.name: {"kind": h.kind, **h.meta} for h in c.heads}
    return {
        "lidarssl": lidarssl_version(),
        "source": {"path": str(source.path.resolve()), "member": source.member, "sha256": source.sha256,
                   "bytes": source.size},
        "format": c.format, "container": c.container, "role": c.role, "network": c.network,
        "kernel_layout": c.layout, "preset": c.preset, "options": c.options,
        "origin": ORIGINS[c.origin].describe() if c.origin else None, "origin_options": c.origin_options,
        "heads": heads, "summary": dict(counts), "notes": c.notes,
        "keys": [r.as_dict() for r in c.records],
    }  # fmt: skip


def _write(out: Path, c: Conversion, info: dict[str, Any], overwrite: bool) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        meta = {"backbone": c.preset, "options": c.options, "imported_from": str(source_path(info)),
                "sha256": info["source"]["sha256"], "format": c.format, "origin": c.origin}  # fmt: skip
        save_weights(tmp / BACKBONE_FILE, {k: v.float() if v.is_floating_point() else v for k, v in c.backbone.items()},
                     meta)
        if c.heads:
            tensors = {k: (v.float() if v.is_floating_point() else v) for h in c.heads for k, v in h.tensors.items()}
            save_weights(tmp / HEAD_FILE, tensors, {"heads": info["heads"], "backbone": c.preset, **meta})
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
        _check_out(out, overwrite)  # again: the folder may have appeared while converting
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def source_path(info: dict[str, Any]) -> str:
    """``path`` or ``path:member`` of an import's source."""
    src = info["source"]
    return f"{src['path']}:{src['member']}" if src.get("member") else src["path"]


def import_checkpoint(path: str | Path, out: str | Path, fmt: str = "auto", origin: str | None = None,
                      overwrite: bool = False) -> ImportResult:  # fmt: skip
    """Import a seed release or checkpoint into the folder ``out`` (see the module docstring).

    Args:
        path: ``.pt``/``.pth``/``.ckpt``/``.safetensors`` file, release ``.tar.gz``, or a folder holding one.
        out: the release folder to write; must not exist or be empty unless ``overwrite``.
        fmt: ``auto`` or a format name (:data:`~lidarssl.zoo.formats.FORMATS`).
        origin: the release's origin (:data:`~lidarssl.zoo.origins.ORIGINS`) instead of guessing it.
        overwrite: replace an existing folder (only once the import has succeeded).

    Raises:
        CheckpointError: unreadable, unsafe or unknown file; shapes that match no preset; ``out`` not free.
        ConfigError: unknown ``fmt`` or ``origin``.
    """
    out = Path(out).expanduser()
    _check_out(out, overwrite)
    source = read_source(path)
    conversion = convert(source, fmt, origin)
    info = _info(source, conversion)
    _write(out, conversion, info, overwrite)
    return ImportResult(out, info, format_report(info, out))


def read_release(folder: str | Path) -> dict[str, Any]:
    """The ``import.json`` of a release folder.

    Raises:
        CheckpointError: the folder holds no import (or a damaged one).
    """
    path = Path(folder) / INFO_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: no {INFO_FILE}; is it a folder written by `lidarssl import`?") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from None


def _group(info: dict[str, Any]) -> list[str]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in info["keys"]:
        groups[(r["action"], r["file"] or "", r["note"])].append(r)
    order = {"loaded": 0, "renamed": 1, "permuted": 2, "ignored": 3}
    lines = []
    for (action, file, note), rows in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1], -len(kv[1]))):
        first = rows[0]
        example = first["source"] if action == "ignored" else f"{first['source']} -> {first['target']}"
        where = f"-> {file}" if file else ""
        lines.append(f"  {action:<8} {len(rows):>4} {where:<11} {note or '-'}   (e.g. {example})")
    return lines


def format_report(info: dict[str, Any], out: Path) -> str:
    """The printed summary of an import (the full per-key table is in ``import.json``)."""
    src = info["source"]
    member = f", member {src['member']}" if src.get("member") else ""
    origin = info.get("origin")
    lines = [
        f"imported {src['path']}{member} ({src['bytes'] / 1e6:.1f} MB, sha256 {src['sha256'][:16]}...)",
        f"format:  {info['format']} ({info['container']})",
        f"network: {info['network']}",
        f"kernels: {LAYOUT_NAMES.get(info['kernel_layout'], 'dense (no sparse kernels)')}",
        f"preset:  {info['preset']}" + (f" with {json.dumps(info['options'])}" if info["options"] else ""),
    ]
    if origin:
        published = ", ".join(f"{k} {v}" for k, v in origin["published"].items())
        lines.append(f"origin:  {origin['name']} ({origin['project']} on {origin['dataset']}"
                     + (f"; published mIoU {published}" if published else "") + ")")
    actions = ("loaded", "renamed", "permuted", "ignored")
    summary = ", ".join(f"{info['summary'][a]} {a}" for a in actions if a in info["summary"])
    lines.append(f"keys:    {summary} (every key with its target and reason: {out / INFO_FILE})")
    lines += _group(info)
    lines += [f"note:    {n}" for n in info["notes"]]
    files = [BACKBONE_FILE] + ([HEAD_FILE] if info["heads"] else []) + [INFO_FILE]
    lines.append(f"wrote:   {', '.join(str(out / f) for f in files)}")
    options = f" 'backbone.options={json.dumps(info['options'])}'" if info["options"] else ""
    lines.append(f"probe:   lidarssl probe RECIPE pretrained={out / BACKBONE_FILE} "
                 f"backbone.name={info['preset']}{options}")
    if any(h["kind"] == "segmentation" for h in info["heads"].values()):
        lines.append(f"score:   lidarssl evaluate {out} data.root=DATASET" + ("" if origin else " origin=NAME"))
    return "\n".join(lines)
