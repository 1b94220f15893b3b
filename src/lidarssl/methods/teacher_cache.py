"""A disk cache of frozen-teacher features, for methods whose images are not augmented (ScaLR).

A frozen teacher maps the same image to the same features every epoch, so they are computed once
(``lidarssl prepare teacher-features RECIPE``), stored in half precision as one ``.npy`` per camera image,
and memory-mapped by the DataLoader workers during pretraining: the teacher's forward pass, by far the most
expensive part of a ScaLR step on a ViT-L, leaves the training loop.

Files live under ``<cache_dir>/<key>/<dataset>/<frame_id>/<camera>.npy``; the key names the teacher, its weights and
the image size, so a cache is never read with other settings. ``mean.npy`` beside them holds the mean feature
over every cached pixel, for methods that centre their targets (ScaLR's ``center_targets``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from lidarssl.data.scan import Scan
from lidarssl.errors import ConfigError, DataError
from lidarssl.io import atomic_write, safe_parts

if TYPE_CHECKING:
    from lidarssl.methods.config import PretrainConfig

__all__ = ["TeacherFeatureCache", "teacher_cache", "teacher_cache_key"]


def teacher_cache_key(name: str, weights: Path | None, seed: int, image_hw: tuple[int, int],
                      settings: dict | None = None) -> str:
    """Cache folder name: teacher, weights file (or the seed of a random teacher), image size, and a short
    hash of any other teacher settings (its own input size, options) that change its features."""
    origin = f"{Path(weights).stem}-{Path(weights).stat().st_size}" if weights is not None else f"random{seed}"
    key = f"{name}-{origin}-{image_hw[0]}x{image_hw[1]}"
    if settings:
        key += "-" + hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return key


class TeacherFeatureCache:
    """Teacher feature maps (C, h, w) float16 per (frame, camera) image.

    Args:
        cache_dir: root folder of teacher caches.
        key: see :func:`teacher_cache_key`.
    """

    def __init__(self, cache_dir: str | Path, key: str, center: bool = False) -> None:
        self.root = Path(cache_dir) / key
        self.center = center
        self._mean: np.ndarray | None = None

    def path(self, frame_id: str, camera: str) -> Path:
        return self.root.joinpath(*safe_parts(frame_id, "frame id"), *safe_parts(camera, "camera name", allow_slash=False)).with_suffix(".npy")

    def save(self, frame_id: str, camera: str, features: torch.Tensor | np.ndarray) -> None:
        array = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features, np.float16)
        path = self.path(frame_id, camera)
        path.parent.mkdir(parents=True, exist_ok=True)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object: np.save would append .npy to a temporary name
                np.save(f, array)

        atomic_write(path, write)

    def has(self, frame_id: str, camera: str) -> bool:
        return self.path(frame_id, camera).is_file()

    def load_for(self, scan: Scan, camera: str) -> np.ndarray:
        """The memory-mapped (C, h, w) map of ``scan``'s ``camera``, or an error saying how to make it."""
        path = self.path(scan.cache_key, camera)
        if not path.is_file():
            raise DataError(f"{path}: teacher features of frame '{scan.frame_id}' camera '{camera}' are not cached; "
                            "run `lidarssl prepare teacher-features RECIPE` with this recipe first")
        features = np.load(path, mmap_mode="r")
        return features - self.mean()[:, None, None] if self.center else features

    def mean(self) -> np.ndarray:
        """The (C,) float32 mean feature of the cache (``mean.npy``), read once."""
        if self._mean is None:
            path = self.root / "mean.npy"
            if not path.is_file():
                raise DataError(f"{path} is missing: the mean of the teacher features is written by "
                                "`lidarssl prepare teacher-features RECIPE`; run it again to add it")
            self._mean = np.load(path, allow_pickle=False).astype(np.float32)
        return self._mean

    def write_mean(self, paths: list[Path]) -> np.ndarray:
        """Write ``mean.npy``: the mean over every pixel of the cached maps at ``paths``; returns it."""
        total, count = None, 0
        for path in paths:
            f = np.load(path, mmap_mode="r").astype(np.float64)
            s = f.reshape(f.shape[0], -1).sum(1)
            total = s if total is None else total + s
            count += f.shape[1] * f.shape[2]
        if total is None:
            raise DataError(f"{self.root}: no cached teacher features to average")
        mean = (total / count).astype(np.float32)
        self.root.mkdir(parents=True, exist_ok=True)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.save(f, mean)

        atomic_write(self.root / "mean.npy", write)
        return mean

    def write_info(self, info: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(self.root / "cache.json", lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2)))


def fill_cache(cache: TeacherFeatureCache, teacher: torch.nn.Module, images_of: Callable[[int], tuple[Scan, list[str], np.ndarray]],
               count: int, batch_size: int = 8, progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Compute the features of every image not yet cached; resumable (done files are skipped).

    Args:
        cache: where to write.
        teacher: the frozen teacher (called on uint8 (B, 3, H, W) images).
        images_of: frame index -> (scan, camera names, (V, H, W, 3) uint8 images as the method sees them).
        count: number of frames.
        batch_size: images per teacher forward pass.
        progress: called with (frames done, frames).
    """
    computed = skipped = 0
    pending: list[tuple[str, str, np.ndarray]] = []

    def flush() -> None:
        nonlocal computed
        if not pending:
            return
        images = torch.from_numpy(np.stack([p[2] for p in pending])).permute(0, 3, 1, 2)
        with torch.no_grad():
            features = teacher(images)
        for (frame_id, camera, _), f in zip(pending, features):
            cache.save(frame_id, camera, f)
        computed += len(pending)
        pending.clear()

    for i in range(count):
        scan, names, images = images_of(i)
        for name, image in zip(names, images):
            if cache.has(scan.cache_key, name):
                skipped += 1
                continue
            pending.append((scan.cache_key, name, image))
            if len(pending) >= batch_size:
                flush()
        if progress is not None:
            progress(i + 1, count)
    flush()
    return {"computed": computed, "skipped": skipped}


def teacher_cache(config: PretrainConfig, center: bool = False) -> TeacherFeatureCache | None:
    """The feature cache the recipe names (``data.teacher_cache``), keyed by teacher and image size; ``center``:
    its maps are read minus the cache's mean feature."""
    if config.data.teacher_cache is None:
        return None
    if config.teacher is None or config.pairing.resize is None:
        raise ConfigError("data.teacher_cache needs a teacher and a fixed image size (pairing.resize: [H, W])")
    t = config.teacher
    settings = {k: v for k, v in (("image_size", t.image_size), ("options", t.options)) if v}
    key = teacher_cache_key(t.name, t.weights, config.seed, config.pairing.resize, settings)
    return TeacherFeatureCache(config.data.teacher_cache, key, center=center)
