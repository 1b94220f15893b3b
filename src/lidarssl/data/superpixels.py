"""SLIC superpixels of camera images for SLidR pretraining: computation, a versioned cache, preparation.

SLidR (CVPR'22) segments every camera image with scikit-image's
``slic(n_segments=150, compactness=6, sigma=3.0, start_label=0)`` on the full-resolution RGB image
(``n_segments=30`` for its VoxelNet variant) and pools point and pixel features per superpixel. Its loss
offsets the ids of image ``i`` of a batch by ``offset * i`` (``offset`` = ``superpixel_size``, 150), so every
id must stay below the offset; the original code stores them as uint8 PNGs and never checks this.

Here:

- :class:`SuperpixelParams` holds the SLIC parameters plus ``scale``: SLIC runs on the image downscaled
  by ``scale`` (area averaging; ``sigma`` scaled with it, since it is in full-resolution pixels) and the
  labels are upsampled back with nearest neighbour. ``scale=1.0`` is exactly SLidR's computation.
  ``benchmarks/superpixels.py`` measures speed and agreement with full-resolution SLIC; the ``*_fast``
  presets use the scale chosen there (:data:`FAST_SCALE`).
- :func:`compute_superpixels` returns (H, W) uint16 ids, contiguous from 0.
- :class:`SuperpixelCache` stores one 16-bit PNG per image under
  ``<cache_dir>/<params.key()>/<dataset>/<frame_id>/<camera>.png`` (written atomically) with the parameters in
  ``<cache_dir>/<params.key()>/params.json``, and checks ids against the batch offset on load.
- :func:`prepare_superpixels` fills the cache for a whole dataset with worker processes; it is
  resumable (existing files are skipped).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lidarssl.errors import ConfigError, DataError
from lidarssl.io import atomic_write, safe_parts

__all__ = [
    "FAST_SCALE",
    "SUPERPIXEL_PRESETS",
    "achievable_segmentation_accuracy",
    "boundary_recall",
    "SuperpixelCache",
    "SuperpixelParams",
    "check_ids",
    "compute_superpixels",
    "prepare_superpixels",
    "superpixel_preset",
]

#: Default ``scale`` of the fast presets, chosen with ``benchmarks/superpixels.py`` (speed per core
#: against agreement with full-resolution SLIC on real nuScenes and PandaSet images).
FAST_SCALE = 0.5

#: SLIC iterations: scikit-image's default, the same as the 0.18.2 that SLidR used (``max_iter=10``).
SLIC_MAX_ITER = 10

#: Largest id a 16-bit PNG holds.
_MAX_ID = np.iinfo(np.uint16).max


@dataclass(frozen=True)
class SuperpixelParams:
    """Parameters of a superpixel map; :meth:`key` names the cache folder after all of them.

    Attributes:
        method: segmentation algorithm; only ``slic``.
        n_segments: approximate number of superpixels per image (SLidR 150, its VoxelNet variant 30).
            SLIC may return somewhat fewer or more; the id check against the batch offset catches the latter.
        compactness: SLIC colour/space trade-off (SLidR 6); independent of ``scale``, since SLIC
            measures distances in units of the grid step.
        sigma: Gaussian pre-smoothing width in pixels of the *full-resolution* image (SLidR 3.0).
        start_label: first id (SLidR 0; the batch offset arithmetic assumes 0).
        scale: SLIC runs on the image resized by this factor, labels are upsampled back with nearest
            neighbour; 1.0 is the full resolution that SLidR uses.
    """

    method: str = "slic"
    n_segments: int = 150
    compactness: float = 6.0
    sigma: float = 3.0
    start_label: int = 0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.method != "slic":
            raise ConfigError(f"superpixels: method must be 'slic', got {self.method!r}")
        if isinstance(self.n_segments, bool) or not isinstance(self.n_segments, (int, np.integer)) \
                or not 1 <= self.n_segments <= _MAX_ID:
            raise ConfigError(f"superpixels: n_segments must be an integer in [1, {_MAX_ID}], got {self.n_segments!r}")
        for name in ("compactness", "sigma", "scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                    or not math.isfinite(value):
                raise ConfigError(f"superpixels: {name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        object.__setattr__(self, "n_segments", int(self.n_segments))
        if self.compactness <= 0:
            raise ConfigError(f"superpixels: compactness must be > 0, got {self.compactness}")
        if self.sigma < 0:
            raise ConfigError(f"superpixels: sigma must be >= 0, got {self.sigma}")
        if not 0.0 < self.scale <= 1.0:
            raise ConfigError(f"superpixels: scale must be in (0, 1], got {self.scale}")
        if self.start_label not in (0, 1) or isinstance(self.start_label, bool):
            raise ConfigError(f"superpixels: start_label must be 0 or 1, got {self.start_label!r}")

    def key(self) -> str:
        """A short stable name of all parameters, e.g. ``slic-n150-c6-s3.0-x0.5`` (the cache folder)."""
        key = f"{self.method}-n{self.n_segments}-c{self.compactness:g}-s{self.sigma!r}-x{self.scale!r}"
        return key if self.start_label == 0 else f"{key}-l{self.start_label}"

    def to_dict(self) -> dict[str, Any]:
        """The parameters as JSON-serialisable values (what ``params.json`` holds, with the key)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SuperpixelParams:
        """Parameters from :meth:`to_dict` output; an unknown key raises :class:`ConfigError`."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known - {"key"})
        if unknown:
            raise ConfigError(f"superpixels: unknown parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: v for k, v in values.items() if k in known})


#: Named parameter sets: SLidR's ``slic150`` and the VoxelNet variant's ``slic30``, each at full
#: resolution (SLidR's exact computation) and ``*_fast`` at :data:`FAST_SCALE`.
SUPERPIXEL_PRESETS: dict[str, SuperpixelParams] = {
    "slic150": SuperpixelParams(n_segments=150),
    "slic150_fast": SuperpixelParams(n_segments=150, scale=FAST_SCALE),
    "slic30": SuperpixelParams(n_segments=30),
    "slic30_fast": SuperpixelParams(n_segments=30, scale=FAST_SCALE),
}


def superpixel_preset(name: str, **overrides: Any) -> SuperpixelParams:
    """The preset ``name`` of :data:`SUPERPIXEL_PRESETS`, with fields replaced by ``overrides`` (e.g. ``scale``)."""
    if name not in SUPERPIXEL_PRESETS:
        raise ConfigError(f"unknown superpixel preset {name!r}; choose one of {sorted(SUPERPIXEL_PRESETS)}")
    return replace(SUPERPIXEL_PRESETS[name], **overrides) if overrides else SUPERPIXEL_PRESETS[name]


def _check_image(image: object, source: str) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = f"shape {image.shape} dtype {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
        raise DataError(f"{source}: superpixels need an HxWx3 uint8 RGB image, got {got}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise DataError(f"{source}: image of {image.shape[1]}x{image.shape[0]} pixels is too small for superpixels")
    return image


def _nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """Source index of each of ``n_out`` output pixels when resizing ``n_in`` pixels (pixel centres aligned)."""
    idx = ((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def compute_superpixels(image: np.ndarray, params: SuperpixelParams, *, source: str = "<memory>") -> np.ndarray:
    """SLIC superpixels of an RGB image.

    With ``params.scale < 1`` the image is first area-averaged to ``scale`` times its size, SLIC runs
    there in float32 with ``sigma * scale`` (the pre-smoothing stays the same width in the full image; the
    part of it the area averaging already does is subtracted) and the labels are upsampled back with
    nearest neighbour. ``scale == 1`` is SLidR's computation unchanged.

    Args:
        image: (H, W, 3) uint8 RGB.
        params: segmentation parameters.
        source: named in error messages (the image file).

    Returns:
        (H, W) uint16 ids, contiguous from ``params.start_label`` (every id in between is used).

    Raises:
        DataError: the image is not HxWx3 uint8, or SLIC returned more ids than uint16 holds.
    """
    from skimage.segmentation import slic

    image = _check_image(image, source)
    H, W = image.shape[:2]
    h, w = max(2, round(H * params.scale)), max(2, round(W * params.scale))
    sigma = params.sigma
    if (h, w) != (H, W):
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BOX))
        # The box filter of one output pixel has variance 1/12 px^2; the Gaussian adds the rest of
        # (sigma * scale)^2 so the total smoothing matches the full-resolution computation.
        sigma = math.sqrt(max((params.sigma * params.scale) ** 2 - 1.0 / 12.0, 0.0))
        # float32 is ~20% faster than scikit-image's float64 and agrees on >99.9% of pixels (ASA);
        # scale 1.0 keeps SLidR's exact float64 computation.
        image = image.astype(np.float32) / np.float32(255.0)
    labels = slic(image, n_segments=params.n_segments, compactness=params.compactness, sigma=sigma,
                  start_label=params.start_label, channel_axis=-1, convert2lab=True, enforce_connectivity=True,
                  max_num_iter=SLIC_MAX_ITER)
    if (h, w) != (H, W):
        labels = labels[_nearest_index(H, h)[:, None], _nearest_index(W, w)[None, :]]
        counts = np.bincount(labels.ravel() - params.start_label)
        if (counts == 0).any():  # a segment too thin to own a full-resolution pixel: close the gap
            labels = (np.cumsum(counts > 0) - 1)[labels - params.start_label] + params.start_label
    if labels.max() > _MAX_ID:
        raise DataError(f"{source}: SLIC returned {labels.max() + 1} superpixels, more than uint16 holds; "
                        f"use fewer segments (n_segments={params.n_segments})")
    return labels.astype(np.uint16)


def achievable_segmentation_accuracy(segments: np.ndarray, reference: np.ndarray) -> float:
    """Share of pixels on which ``segments`` agree with ``reference`` when every segment takes the
    reference label it overlaps most (ASA; 1.0 when ``segments`` refines ``reference``)."""
    if segments.shape != reference.shape:
        raise ValueError(f"shapes differ: {segments.shape} vs {reference.shape}")
    s = segments.ravel().astype(np.int64)
    r = reference.ravel().astype(np.int64)
    n_ref = int(r.max()) + 1
    table = np.bincount(s * n_ref + r, minlength=(int(s.max()) + 1) * n_ref).reshape(-1, n_ref)
    return float(table.max(axis=1).sum() / s.size)


def _boundaries(labels: np.ndarray) -> np.ndarray:
    edge = np.zeros(labels.shape, bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge


def boundary_recall(segments: np.ndarray, reference: np.ndarray, tolerance: int = 2) -> float:
    """Share of the boundary pixels of ``reference`` with a boundary of ``segments`` within
    ``tolerance`` pixels (Chebyshev distance); 1.0 when ``reference`` has no boundary."""
    from scipy.ndimage import binary_dilation

    ref = _boundaries(reference)
    if not ref.any():
        return 1.0
    near = binary_dilation(_boundaries(segments), np.ones((2 * tolerance + 1,) * 2, bool))
    return float((ref & near).sum() / ref.sum())


def check_ids(ids: np.ndarray, offset: int, source: str) -> np.ndarray:
    """Raise unless ``ids`` is a 2-D uint16 map whose ids are all below ``offset``.

    SLidR offsets the ids of image ``i`` of a batch by ``offset * i``; an id at or above the offset
    would land in the next image's range and silently pool unrelated pixels together.
    """
    if not isinstance(ids, np.ndarray) or ids.ndim != 2 or ids.dtype != np.uint16:
        got = f"shape {ids.shape} dtype {ids.dtype}" if isinstance(ids, np.ndarray) else type(ids).__name__
        raise DataError(f"{source}: superpixel map must be a 2-D uint16 array, got {got}; "
                        f"recompute it with `lidarssl prepare superpixels`")
    top = int(ids.max()) if ids.size else -1
    if top >= offset:
        raise DataError(f"{source}: superpixel id {top} is not below the per-image offset {offset} "
                        f"({top + 1} superpixels); recompute with fewer segments or raise the offset")
    return ids


class SuperpixelCache:
    """Superpixel maps on disk: ``<cache_dir>/<params.key()>/<frame_id>/<camera>.png``, 16-bit PNG.

    ``frame_id`` may contain ``/`` (``seq/frame``), which become nested folders. Files are written
    atomically, so an interrupted writer never leaves a half file and a present file is complete.
    """

    def __init__(self, cache_dir: str | Path, params: SuperpixelParams) -> None:
        self.params = params
        self.root = Path(cache_dir) / params.key()

    def path(self, frame_id: str, camera: str) -> Path:
        """File of the map of ``camera`` in frame ``frame_id``; DataError for ids that would leave the cache."""
        parts = safe_parts(frame_id, "superpixel cache: frame id")
        (name,) = safe_parts(camera, "superpixel cache: camera name", allow_slash=False)
        return self.root.joinpath(*parts, f"{name}.png")

    def write_params(self) -> Path:
        """Write ``params.json`` (parameters and key) into the key folder unless it is there already."""
        path = self.root / "params.json"
        if not path.is_file():
            text = json.dumps({**self.params.to_dict(), "key": self.params.key()}, indent=2) + "\n"
            atomic_write(path, lambda tmp: Path(tmp).write_text(text))
        return path

    def save(self, frame_id: str, camera: str, ids: np.ndarray) -> Path:
        """Write one map atomically (and ``params.json`` on the first save)."""
        path = self.path(frame_id, camera)
        check_ids(ids, _MAX_ID + 1, str(path))
        self.write_params()
        image = Image.fromarray(np.ascontiguousarray(ids))
        # zlib level 6: ~27 KB per 1600x900 map, 20 ms to write and 9 ms to read (level 1: 46 KB, 13/6 ms).
        atomic_write(path, lambda tmp: image.save(tmp, format="PNG", compress_level=6))
        return path

    def load(self, frame_id: str, camera: str, offset: int | None = None) -> np.ndarray | None:
        """The map of ``camera`` in ``frame_id``, None when not computed yet.

        Args:
            offset: when given, every id must be below it (SLidR's per-image id offset, e.g. 150).

        Raises:
            DataError: the file is not a 16-bit PNG (e.g. SLidR's uint8 maps), or an id reaches ``offset``.
        """
        path = self.path(frame_id, camera)
        try:
            with Image.open(path) as image:
                image.load()
                mode = image.mode
                ids = np.asarray(image)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise DataError(f"{path}: unreadable superpixel map ({err}); delete it and rerun "
                            f"`lidarssl prepare superpixels`") from None
        if mode not in ("I;16", "I;16B") or ids.dtype.kind != "u" or ids.dtype.itemsize != 2:
            raise DataError(f"{path}: superpixel map must be a 16-bit PNG, got PIL mode {mode!r}; delete it and rerun "
                            f"`lidarssl prepare superpixels`")
        ids = ids.astype(np.uint16, copy=False)
        return check_ids(ids, offset, str(path)) if offset is not None else ids

    def has(self, frame_id: str, camera: str) -> bool:
        """Whether the map of ``camera`` in ``frame_id`` is in the cache."""
        return self.path(frame_id, camera).is_file()


# --- preparation over a dataset --------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(root: str, split: str | None, cache_dir: str, params: SuperpixelParams) -> None:
    """Process initialiser: one thread per process, the dataset opened once."""
    from lidarssl.data.datasets import open_dataset

    try:  # torch may be imported by a reader; keep every worker on one core
        import sys

        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)
    except Exception:  # pragma: no cover - best effort only
        pass
    _WORKER["dataset"] = open_dataset(root, split)
    _WORKER["cache"] = SuperpixelCache(cache_dir, params)


def _process_frames(dataset: Any, cache: SuperpixelCache, indices: Sequence[int]) -> dict[str, int]:
    counts = {"frames": 0, "images": 0, "computed": 0, "skipped": 0}
    for index in indices:
        scan = dataset[index]
        counts["frames"] += 1
        for cam in scan.cameras:
            counts["images"] += 1
            if cache.has(scan.cache_key, cam.name):
                counts["skipped"] += 1
                continue
            ids = compute_superpixels(cam.image, cache.params, source=cam.source)
            cache.save(scan.cache_key, cam.name, ids)
            counts["computed"] += 1
    return counts


def _run_chunk(indices: Sequence[int]) -> dict[str, int]:
    return _process_frames(_WORKER["dataset"], _WORKER["cache"], indices)


def _limit_threads_env() -> dict[str, str | None]:
    """Set one-thread BLAS/OpenMP variables for spawned workers; returns the previous values."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {n: os.environ.get(n) for n in names}
    for n in names:
        os.environ.setdefault(n, "1")
    return saved


def _restore_env(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def prepare_superpixels(
    root: Path,
    split: str | None,
    cache_dir: Path,
    params: SuperpixelParams,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Compute the superpixels of every camera image of every frame of a dataset into the cache.

    Resumable: images whose cache file exists are skipped (files are written atomically, so a present
    file is complete), and a rerun after an interruption only computes the rest. Skipping still reads
    the frame, since readers give camera names and frame ids with the scan.

    Args:
        root: dataset folder (any layout :func:`~lidarssl.data.datasets.open_dataset` recognises).
        split: split name, None for the reader's default.
        cache_dir: cache folder; the maps go into ``cache_dir / params.key()``.
        params: segmentation parameters.
        workers: worker processes (spawned; each opens the dataset once and handles chunks of frame
            indices); 1 works in this process, 0 starts one per core.
        progress: called with (frames done, total frames) as chunks finish.

    Returns:
        Counts: ``frames``, ``images``, ``computed`` and ``skipped``.
    """
    from lidarssl.data.datasets import open_dataset

    dataset = open_dataset(root, split)
    total = len(dataset)
    cache = SuperpixelCache(cache_dir, params)
    cache.write_params()
    counts = {"frames": 0, "images": 0, "computed": 0, "skipped": 0}
    if progress is not None:
        progress(0, total)
    if total == 0:
        return counts

    def add(part: dict[str, int]) -> None:
        for k in counts:
            counts[k] += part[k]
        if progress is not None:
            progress(counts["frames"], total)

    workers = int(workers) if workers > 0 else (os.cpu_count() or 1)
    if workers == 1:
        step = max(1, min(16, total // 100 or 1))
        for start in range(0, total, step):
            add(_process_frames(dataset, cache, range(start, min(start + step, total))))
        return counts

    del dataset  # the workers open their own
    # Small chunks keep the workers balanced and the progress fine; at most 16 frames each.
    size = max(1, min(16, math.ceil(total / (workers * 8))))
    chunks = [list(range(s, min(s + size, total))) for s in range(0, total, size)]
    saved = _limit_threads_env()
    try:
        # spawn: the parent may hold torch threads, which make fork unsafe.
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker,
                                 initargs=(str(root), split, str(cache_dir), params)) as pool:
            pending: set[Future[dict[str, int]]] = {pool.submit(_run_chunk, c) for c in chunks}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        add(fut.result())
            except BaseException:  # e.g. Ctrl-C: drop the queued chunks; finished files stay valid
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    finally:
        _restore_env(saved)
    return counts
