"""Per-point features of a trained backbone, for every original point of a scan.

A backbone keeps a subset of each scan's points (voxel subsampling, field-of-view crop) and returns one feature
row per kept point. :func:`extract_features` spreads them back to **every original point**: a dropped point takes
the feature of its nearest kept point, as evaluation spreads predictions
(:class:`~lidarssl.data.loader.LabelBuilder`). Kept points get their own row unchanged.

Any weights file written by ``lidarssl pretrain``, ``train``, ``probe`` or ``finetune`` (or imported into the same
safetensors format) names its backbone preset in its metadata; the preset's options (voxel size, field of view,
grids, intensity normalisation) come from the metadata too, or from the run's ``config.yaml`` beside the file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from lidarssl.checkpoints import load_state_dict_strict, load_weights
from lidarssl.data.datasets import Dataset, open_dataset
from lidarssl.data.geometry import knn
from lidarssl.data.scan import Scan
from lidarssl.errors import CheckpointError, DataError
from lidarssl.io import atomic_write
from lidarssl.models.backbones import BackboneSpec, create_backbone

__all__ = ["PointFeatures", "FeatureExtractor", "load_backbone", "extract_features", "rows_of_points",
           "parse_frames", "check_frame", "write_features", "cosine_similarity"]


@dataclass
class PointFeatures:
    """Features of one scan.

    Attributes:
        features: (N, C) float32, one row per original point of the scan.
        kept: (M,) int64 indices of the points the backbone kept; ``features[kept]`` is its own output.
    """

    features: np.ndarray
    kept: np.ndarray


def _options_from_run(weights: Path, name: str) -> dict[str, Any] | None:
    """The backbone options of the run directory holding ``weights`` (its ``config.yaml``), if it built ``name``."""
    config = weights.parent / "config.yaml"
    if not config.is_file():
        return None
    try:
        backbone = (yaml.safe_load(config.read_text()) or {}).get("backbone") or {}
    except (yaml.YAMLError, AttributeError):
        return None
    if not isinstance(backbone, dict) or backbone.get("name") != name:
        return None
    return dict(backbone.get("options") or {})


def load_backbone(weights: str | Path, backbone: str | None = None,
                  options: Mapping[str, Any] | None = None) -> tuple[BackboneSpec, dict[str, Any]]:
    """Build the backbone a weights file was trained as and load the weights strictly.

    Args:
        weights: a ``.safetensors`` file written by lidarssl (``backbone.safetensors`` of a run).
        backbone: the preset the caller expects; an error when the file holds another one. Needed only for
            files whose metadata names no backbone.
        options: preset options; by default those stored in the file's metadata (``options``), else
            those of the run's ``config.yaml`` beside the file, else the preset's defaults.

    Returns:
        The preset (module in eval mode) and the file's metadata.

    Raises:
        CheckpointError: the file is missing or unreadable, holds another backbone than ``backbone``, names
            none, or its tensors do not match the preset.
    """
    path = Path(weights)
    state, meta = load_weights(path)
    stored = meta.get("backbone")
    if backbone is not None and stored is not None and backbone != stored:
        raise CheckpointError(f"{path}: weights of backbone '{stored}', not '{backbone}'; "
                              f"name backbone={stored} or pass the weights file of a {backbone}")
    name = backbone or stored
    if name is None:
        raise CheckpointError(f"{path}: the metadata names no backbone; pass backbone=NAME (one of the registry)")
    if options is None:
        options = meta.get("options")
    if options is None:
        options = _options_from_run(path, name) or {}
    with torch.random.fork_rng(devices=[]):  # initial weights are overwritten; leave the caller's stream alone
        spec = create_backbone(name, **dict(options))
    load_state_dict_strict(spec.model, state, str(path))
    spec.model.eval()
    return spec, meta


def rows_of_points(kept: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N,) row among the kept points of every point: its own row when kept, else its nearest kept point's."""
    row = np.full(len(points), -1, np.int64)
    row[kept] = np.arange(len(kept))
    dropped = np.flatnonzero(row < 0)
    if len(dropped):
        row[dropped] = knn(points[dropped], points[kept], k=1)[1][:, 0]
    return row


class FeatureExtractor:
    """A trained backbone that turns scans into per-point features of every original point.

    Args:
        weights: the backbone's weights file (see :func:`load_backbone`).
        backbone: expected preset name (checked against the file's metadata).
        options: preset options instead of the stored ones.
        device: ``cpu``, ``cuda``, ...; CUDA when available by default.
    """

    def __init__(self, weights: str | Path, backbone: str | None = None, options: Mapping[str, Any] | None = None,
                 device: str | torch.device | None = None) -> None:
        self.weights = Path(weights)
        self.spec, self.metadata = load_backbone(weights, backbone, options)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.spec.model.to(self.device)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def channels(self) -> int:
        return int(self.spec.model.out_channels)

    @torch.no_grad()
    def kept_features(self, scan: Scan) -> tuple[torch.Tensor, np.ndarray]:
        """The backbone's own output (M, C) on ``scan`` (no augmentation) and the (M,) kept point indices."""
        sample = self.spec.prep(scan.points, scan.intensity, None)
        if len(sample["kept"]) == 0:
            raise DataError(f"{scan.source}: the backbone {self.name} kept no point of this scan (all outside its "
                            "field of view?); check backbone options fov_min / fov_max")
        batch = {k: v.to(self.device) for k, v in self.spec.collate([sample]).items()}
        return self.spec.model(batch).float(), np.asarray(sample["kept"], np.int64)

    def __call__(self, scan: Scan) -> PointFeatures:
        feats, kept = self.kept_features(scan)
        rows = torch.from_numpy(rows_of_points(kept, scan.points)).to(feats.device)
        return PointFeatures(features=feats[rows].cpu().numpy(), kept=kept)


def _as_dataset(data: Dataset | str | Path, split: str | None) -> Dataset:
    return open_dataset(data, split=split) if isinstance(data, (str, Path)) else data


def extract_features(weights: str | Path, scan_or_dataset: Scan | Dataset | str | Path, *,
                     backbone: str | None = None, options: Mapping[str, Any] | None = None,
                     split: str | None = None, frames: Sequence[int] | None = None,
                     device: str | torch.device | None = None) -> np.ndarray | list[np.ndarray]:
    """Per-point features of a trained backbone for every original point.

    Args:
        weights: backbone weights file written by lidarssl (``runs/x/backbone.safetensors``).
        scan_or_dataset: one :class:`~lidarssl.data.scan.Scan`, a dataset (a reader), or a dataset folder.
        backbone: the preset you expect the file to hold (an error names the one it does hold).
        options: backbone preset options instead of those stored with the weights.
        split: split of a dataset folder (the reader's default when ``None``).
        frames: indices of the dataset frames to extract (all of them by default).
        device: torch device (CUDA when available by default).

    Returns:
        For a scan, an (N, C) float32 array with one row per point of the scan; for a dataset, one such array
        per frame (use :class:`FeatureExtractor` to stream a large dataset instead).
    """
    extractor = FeatureExtractor(weights, backbone, options, device)
    if isinstance(scan_or_dataset, Scan):
        return extractor(scan_or_dataset).features
    dataset = _as_dataset(scan_or_dataset, split)
    indices = range(len(dataset)) if frames is None else frames
    return [extractor(dataset[check_frame(dataset, i)]).features for i in indices]


def check_frame(dataset: Dataset, index: int) -> int:
    """``index`` if it is a frame of ``dataset``, else a one-line error with the valid range."""
    if not 0 <= index < len(dataset):
        raise DataError(f"frame {index} is out of range: the dataset has {len(dataset)} frames (0..{len(dataset) - 1})")
    return index


def parse_frames(spec: str | None, size: int) -> list[int]:
    """Frame indices from ``"3"``, ``"0,4,7"``, ``"2:10"`` or ``"::5"`` (Python slices); all frames for ``None``."""
    if spec is None or spec.strip() in ("", "all"):
        return list(range(size))
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if ":" in part:
                bounds = [int(x) if x.strip() else None for x in part.split(":")]
                if len(bounds) > 3:
                    raise ValueError(part)
                out.extend(range(size)[slice(*bounds)])
            else:
                out.append(int(part))
        except ValueError:
            raise DataError(f"frames '{spec}': expected indices and ranges such as 3, 0,4,7 or 2:10") from None
    bad = [i for i in out if not 0 <= i < size]
    if bad:
        raise DataError(f"frames '{spec}': frame {bad[0]} is out of range: the dataset has {size} frames (0..{size - 1})")
    return out


def frame_file(frame_id: str, index: int) -> Path:
    """A relative ``.npy`` path named after a frame id (``seq/frame`` -> ``seq/frame.npy``), safe as a path."""
    parts = [re.sub(r"[^A-Za-z0-9._-]+", "_", p) for p in frame_id.split("/")]
    parts = [p for p in parts if p not in ("", ".", "..")]
    return Path(*(parts or [f"{index:06d}"])).with_suffix(".npy")


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to the temporary name
        np.save(f, array)


def write_features(extractor: FeatureExtractor, dataset: Dataset, out: str | Path, frames: Sequence[int],
                   dtype: str = "float32", progress: Callable[[int, int], None] | None = None) -> Path:
    """Write the features of ``frames`` of ``dataset`` to ``out``, one ``.npy`` (N, C) per frame, each written
    atomically, plus ``index.json`` listing frame index, frame id, file and point count (written last)."""
    import json

    out = Path(out)
    entries = []
    for done, i in enumerate(frames, 1):
        scan = dataset[i]
        feats = extractor(scan).features.astype(dtype, copy=False)
        rel = frame_file(scan.frame_id, i)
        atomic_write(out / rel, lambda tmp, a=feats: _save_npy(tmp, a))
        entries.append({"frame": i, "frame_id": scan.frame_id, "file": rel.as_posix(), "points": len(scan)})
        if progress is not None:
            progress(done, len(frames))
    index = {"weights": str(extractor.weights), "backbone": extractor.name, "channels": extractor.channels,
             "dtype": dtype, "frames": entries}
    return atomic_write(out / "index.json", lambda tmp: Path(tmp).write_text(json.dumps(index, indent=1)))


def cosine_similarity(features: np.ndarray, query: int) -> np.ndarray:
    """(N,) cosine similarity of every row of ``features`` to row ``query`` (a zero row scores 0)."""
    f = np.asarray(features, np.float64)
    norms = np.linalg.norm(f, axis=1)
    unit = f / np.maximum(norms, 1e-12)[:, None]
    return (unit @ unit[query]).astype(np.float32)
