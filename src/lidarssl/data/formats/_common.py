"""What the dataset readers share: the cached frame index, binary scans and label files, KITTI-style
calibration and images.

Every helper raises :class:`~lidarssl.errors.DataError` naming the file at fault, so a reader only states
which file it reads and never re-words an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from lidarssl.data.geometry import quaternion_to_rotation
from lidarssl.data.labels import ClassMap
from lidarssl.data.scan import Scan, check_rigid
from lidarssl.errors import DataError
from lidarssl.io import atomic_write

MissingCamera = Literal["error", "skip"]

# Bump when the index layout changes: older index files are then rebuilt, never misread.
INDEX_VERSION = 1
INDEX_DIRNAME = ".lidarssl_index"

# A calibration rotation farther than this from orthonormal (max |R^T R - I|) is wrong, not noisy text.
_REPAIR_TOL = 1e-2
# A pose quaternion whose norm is farther than this from 1 is wrong, not rounded text (tables print ~16 digits).
_QUATERNION_TOL = 1e-3


# --- frame index -------------------------------------------------------------------------------------------------


def user_cache_dir() -> Path:
    """Per-user cache folder for index files (``$XDG_CACHE_HOME/lidarssl/index``, else ``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lidarssl" / "index"


def _fingerprint(root: Path, watched: Iterable[Path]) -> dict[str, int]:
    """Modification times of the folders a frame list was read from: adding or removing a file changes them."""
    out = {}
    for d in watched:
        try:
            out[str(d.relative_to(root))] = d.stat().st_mtime_ns
        except FileNotFoundError:
            out[str(d.relative_to(root))] = -1
    return out


def _may_write(folder: Path) -> bool:
    """Whether to write into ``folder`` (or the nearest folder above it that exists).

    Besides the access check, a folder without any write permission bit counts as read-only: the superuser
    (in containers, on CI) passes every access check, and a dataset folder made read-only on purpose must stay
    untouched even then.
    """
    while not folder.exists():
        folder = folder.parent
    return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)


def write_json_atomic(path: Path, doc: dict) -> None:
    """Write ``doc`` to ``path`` atomically, unless the folder is read-only (:func:`_may_write`)."""
    if not _may_write(path.parent):
        raise PermissionError(f"{path.parent} is read-only")
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(doc)))


@dataclass(frozen=True)
class FileCheck:
    """One file a frame needs: what it is, and the sizes that make it plausible.

    ``record`` > 0: the size must be a whole number of records (points). ``points_of``: a label file whose
    size must be ``label_size`` bytes per point of that point file (of ``points_record`` bytes per point).
    """

    path: Path
    kind: str
    record: int = 0
    points_of: Path | None = None
    points_record: int = 0
    label_size: int = 0


class FrameReader:
    """Base of the dataset readers: a frame list built once and cached as JSON, indexing and the class map.

    A subclass sets ``reader_name``, ``layout``, ``splits`` and ``default_split``, implements :meth:`detect`, checks its layout in ``__init__`` before calling
    :meth:`_open_index`, and implements :meth:`_list_frames` and :meth:`_read`. A frame is a list of plain
    JSON values, usually strings (``["00", "000000"]``); a reader whose frames need more than file names to be
    read (nuScenes: resolved calibration records) stores them there too, so the index stays plain JSON.

    The index lives in ``cache_dir`` when one is given. Otherwise it is ``<root>/.lidarssl_index/<name>.json``,
    or, when the dataset folder is read-only, the same name in a per-user folder keyed by the root's path
    (:func:`user_cache_dir`). It is rebuilt when the reader's options, the root or the modification times of
    the listed folders differ from those it was built with, or when ``refresh`` is set.
    """

    reader_name: ClassVar[str]
    #: The files that make a folder this format, for messages (every reader's, when none recognises a folder).
    layout: ClassVar[str]
    #: What ``<split>@<p>%`` counts by default: ``"scenes"`` or ``"frames"``.
    fraction_rule: ClassVar[str] = "frames"
    #: Whether the reader takes the ``splits`` option (scene lists) and serves those lists as its own splits.
    reads_scene_lists: ClassVar[bool] = False
    splits: ClassVar[tuple[str, ...]]
    default_split: ClassVar[str] = "train"
    class_map: ClassMap

    @classmethod
    def detect(cls, root: Path) -> bool:
        """Whether the folder ``root`` is laid out in this reader's format (cheap: looks at a few paths)."""
        raise NotImplementedError

    def __init__(self, root: str | Path, split: str) -> None:
        self.root = Path(root).expanduser().absolute()
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such dataset folder")
        if split not in self.splits:
            raise DataError(f"{self.reader_name}: unknown split '{split}'; choose one of {list(self.splits)}")
        self.split = split
        self.frames: list[list[str]] = []
        self.shared: dict = {}  # JSON data all frames refer to, cached with them (set by _list_frames)
        self.index_path: Path | None = None  # where the frame index was read from or written to

    # What a frame is: its files (``lidarssl prepare``), the names frame lists use, its scene (named splits) ------

    def frame_files(self, index: int) -> list[FileCheck]:
        """The files frame ``index`` needs, with the sizes that make each plausible (``lidarssl prepare``)."""
        raise DataError(f"lidarssl prepare cannot list the files of a {type(self).__name__}")

    def frame_keys(self, index: int) -> tuple[str, ...]:
        """Strings a frame list may name frame ``index`` by: its frame id, lidar file (relative to the root), tokens."""
        return tuple(str(v) for v in self.frames[index] if isinstance(v, str))

    def frame_scene(self, index: int) -> str:
        """Name of the scene (nuScenes scene, sequence) frame ``index`` belongs to: the first of several parts."""
        frame = self.frames[index]
        return str(frame[0]) if len(frame) > 1 else "/".join(map(str, frame))

    def scene_table(self) -> list[str] | None:
        """Every scene name in the dataset's own order, where it has one (nuScenes' scene table), else None:
        named splits of every k-th scene count in this order, or by name."""
        return None

    # Subclass hooks ----------------------------------------------------------------------------------------------

    def _list_frames(self) -> tuple[list[list[str]], list[Path]]:
        """Scan the disk: the frames of this split, and the folders whose contents the list depends on.

        Data that many frames refer to (nuScenes calibrations) may go into :attr:`shared` instead of every frame.
        """
        raise NotImplementedError

    def _read(self, frame: list[str]) -> Scan:
        """Read one frame of :attr:`frames` into a Scan."""
        raise NotImplementedError

    def _index_options(self) -> dict[str, object]:
        """Constructor options that change the frame list (they are stored in, and checked against, the index)."""
        return {}

    @property
    def index_name(self) -> str:
        return f"{self.reader_name}-{self.split}"

    # Index -------------------------------------------------------------------------------------------------------

    def _index_candidates(self, cache_dir: str | Path | None) -> list[Path]:
        name = f"{self.index_name}.json"
        if cache_dir is not None:
            return [Path(cache_dir) / name]
        key = hashlib.sha1(str(self.root).encode()).hexdigest()[:16]
        return [self.root / INDEX_DIRNAME / name, user_cache_dir() / key / name]

    def _open_index(self, cache_dir: str | Path | None, refresh: bool) -> None:
        """Load the cached frame list if it is still valid, else list the frames and cache them."""
        header = {"version": INDEX_VERSION, "reader": self.reader_name, "split": self.split,
                  "root": str(self.root), "options": self._index_options()}
        candidates = self._index_candidates(cache_dir)
        if not refresh:
            for path in candidates:
                doc = self._load_index(path)
                if doc is not None and self._is_current(doc, header):
                    self.frames = doc["frames"]
                    self.shared = doc.get("shared", {})
                    self.index_path = path
                    return
        frames, watched = self._list_frames()
        doc = {**header, "fingerprint": _fingerprint(self.root, watched), "shared": self.shared, "frames": frames}
        self.frames = frames
        self.index_path = None
        for path in candidates:
            try:
                write_json_atomic(path, doc)
            except OSError:
                continue  # read-only dataset folder: fall back to the next location
            self.index_path = path
            return
        warnings.warn(f"{self.reader_name}: could not write the frame index to any of {candidates}; "
                      "it will be rebuilt next time", stacklevel=3)

    @staticmethod
    def _load_index(path: Path) -> dict | None:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # absent or damaged: a cache, so rebuild it
        ok = isinstance(doc, dict) and isinstance(doc.get("fingerprint"), dict) and isinstance(doc.get("frames"), list)
        return doc if ok else None

    def _is_current(self, doc: dict, header: dict) -> bool:
        """Whether a cached index was built by this reader with these options from the folders as they are now."""
        if any(doc.get(k) != v for k, v in header.items()):
            return False
        return doc["fingerprint"] == _fingerprint(self.root, (self.root / d for d in doc["fingerprint"]))

    # Sequence protocol -------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> Scan:
        n = len(self.frames)
        if not -n <= index < n:
            raise IndexError(f"{self.reader_name} {self.split}: frame {index} out of range ({n} frames)")
        return self._read(self.frames[index])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root='{self.root}', split='{self.split}', frames={len(self)})"


# --- files --------------------------------------------------------------------------------------------------------


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else a DataError that says which ``what`` is missing."""
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    return path


def read_points(path: Path, columns: int = 4) -> np.ndarray:
    """Read a raw little-endian float32 point file of ``columns`` values per point.

    Returns:
        (N, columns) float32 array.
    """
    size = require_file(path, "point file").stat().st_size
    record = 4 * columns
    if size % record:
        raise DataError(
            f"{path}: {size} bytes is not a whole number of {record}-byte points (float32 x {columns}); "
            "the file is truncated or not in this format"
        )
    return np.fromfile(path, dtype="<f4").reshape(-1, columns)


def read_labels(path: Path, num_points: int, dtype: str = "<u4") -> np.ndarray:
    """Read one label of ``dtype`` per point and check the count against the scan's.

    Args:
        path: raw binary label file (SemanticKITTI ``.label``: ``"<u4"``; nuScenes-lidarseg ``.bin``: ``"u1"``).
        num_points: points in the scan the labels belong to.
        dtype: numpy dtype of one label.
    """
    dt = np.dtype(dtype)
    size = require_file(path, "label file").stat().st_size
    if size % dt.itemsize or size // dt.itemsize != num_points:
        raise DataError(
            f"{path}: holds {size / dt.itemsize:g} {dt.name} labels but its scan has {num_points} points; "
            "the label file belongs to another scan or is truncated"
        )
    return np.fromfile(path, dtype=dt)


def read_uint32_labels(path: Path, num_points: int) -> np.ndarray:
    """Read one little-endian uint32 label per point and check the count against the scan's."""
    return read_labels(path, num_points, "<u4")


#: Image scales readers can decode at: JPEG's DCT scaling decodes straight to 1/2, 1/4 or 1/8 of the size.
IMAGE_SCALES = (1.0, 0.5, 0.25, 0.125)


def image_reduction(scale: float) -> int:
    """The integer factor ``1 / scale`` of an image scale, checked to be one of :data:`IMAGE_SCALES`."""
    if scale not in IMAGE_SCALES:
        raise DataError(f"'image_scale' must be one of {list(IMAGE_SCALES)}, got {scale}")
    return round(1 / scale)


def reduce_intrinsics(K: np.ndarray, reduce: int) -> np.ndarray:
    """Intrinsics of an image shrunk by the integer factor ``reduce`` (pixel ``c`` covers ``[c, c + 1)``, so
    image coordinates simply divide by ``reduce``)."""
    if reduce == 1:
        return K
    out = np.array(K, dtype=np.float64)
    out[:2] /= reduce
    return out


def read_image(path: Path, reduce: int = 1) -> np.ndarray:
    """An (H, W, 3) uint8 RGB image, optionally shrunk by ``reduce`` (1, 2, 4 or 8) to ``ceil(W / reduce)``.

    A JPEG is decoded directly at the reduced size (DCT scaling: ~2.5x faster at 1/2 for 1600x900), which is
    what a consumer that resizes the image anyway needs; other formats are box-filtered after decoding.
    """
    try:
        with Image.open(path) as im:
            if reduce > 1:
                w, h = im.size
                if w >= reduce and h >= reduce:
                    im.draft("RGB", (w // reduce, h // reduce))  # JPEG only; other formats ignore it
                if im.size != (-(-w // reduce), -(-h // reduce)):
                    im = im.reduce(reduce)
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"{path}: cannot read the image ({e})") from e


def read_camera_image(path: Path, on_missing: MissingCamera, reduce: int = 1) -> np.ndarray | None:
    """The image at ``path``; when it is absent, a DataError (``"error"``) or a warning and ``None`` (``"skip"``)."""
    if path.is_file():
        return read_image(path, reduce)
    if on_missing == "skip":
        warnings.warn(f"{path}: camera image not found; skipping this camera", stacklevel=3)
        return None
    raise DataError(f"{path}: camera image not found; restore it, or read scans without it: reader option "
                    f"on_missing_camera=skip (a pretraining recipe's data.options, or "
                    f"`lidarssl prepare FORMAT --root ROOT on_missing_camera=skip`)")


def check_choice(name: str, value: str, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``, else a DataError listing them."""
    choices = list(choices)
    if value not in choices:
        raise DataError(f"'{name}' must be one of {choices}, got '{value}'")
    return value


# --- geometry and calibration -------------------------------------------------------------------------------------


def homogeneous(M: np.ndarray) -> np.ndarray:
    """A (3, 3) or (3, 4) matrix as the top rows of a (4, 4) transform with last row ``[0 0 0 1]``."""
    T = np.eye(4)
    T[:3, : M.shape[1]] = M
    return T


def invert_rigid(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid (4, 4) transform: ``[R^T | -R^T t]``, exact where ``np.linalg.inv`` only nearly is."""
    out = np.eye(4)
    out[:3, :3] = T[:3, :3].T
    out[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return out


def translation(t: Iterable[float]) -> np.ndarray:
    """The (4, 4) transform that adds ``t`` to a point."""
    T = np.eye(4)
    T[:3, 3] = list(t)
    return T


def pose_from_quaternion(t: Iterable[float], q: Iterable[float], source: str, what: str) -> np.ndarray:
    """(4, 4) rigid transform of a translation ``t`` and a unit quaternion ``q = (w, x, y, z)``.

    nuScenes (``translation``/``rotation``) and PandaSet (``position``/``heading``) store poses this way.

    Args:
        t: 3 numbers.
        q: 4 numbers, scalar first.
        source: file the pose was read from, for error messages.
        what: which pose or record it is, for error messages.

    Raises:
        DataError: wrong sizes, non-finite values, or a quaternion whose norm is not 1 (it would scale
            points: not a rotation).
    """
    try:
        t_arr = np.asarray(list(t), dtype=np.float64).reshape(3)
        q_arr = np.asarray(list(q), dtype=np.float64).reshape(4)
    except (TypeError, ValueError) as e:
        raise DataError(f"{source}: {what} needs a translation of 3 numbers and a rotation quaternion of 4 "
                        f"(w, x, y, z) ({e})") from e
    norm = float(np.linalg.norm(q_arr))
    if not np.all(np.isfinite(t_arr)) or not np.isfinite(norm) or abs(norm - 1) > _QUATERNION_TOL:
        raise DataError(f"{source}: {what} quaternion {q_arr.tolist()} has norm {norm:.4f}, not 1: not a rotation "
                        f"(translation {t_arr.tolist()})")
    T = translation(t_arr)
    T[:3, :3] = quaternion_to_rotation(q_arr)
    return T


def repair_rotation(source: str, name: str, R: np.ndarray) -> np.ndarray:
    """``R`` unchanged when :func:`check_rigid` accepts it, else its nearest rotation if it is only text noise away.

    Calibration files print rotations with few digits; beyond ``_REPAIR_TOL`` the matrix is not a rotation at
    all and a DataError names the file and key.
    """
    try:
        check_rigid(source, name, homogeneous(R))
        return R
    except DataError:
        err = float(np.abs(R.T @ R - np.eye(3)).max())
        if not np.all(np.isfinite(R)) or err > _REPAIR_TOL or np.linalg.det(R) <= 0:
            raise
    u, _, vt = np.linalg.svd(R)
    return u @ vt


def read_kitti_calib(path: Path) -> dict[str, np.ndarray]:
    """The ``key: v1 v2 ...`` lines of a KITTI calibration file as flat float64 arrays."""
    out = {}
    for n, line in enumerate(require_file(path, "calibration file").read_text().splitlines(), 1):
        if not line.strip():
            continue
        key, sep, values = line.partition(":")
        try:
            if not sep:
                raise ValueError("no ':'")
            out[key.strip()] = np.array(values.split(), dtype=np.float64)
        except ValueError as e:
            raise DataError(f"{path}: line {n} is not 'key: numbers' ({e})") from e
    return out


def calib_matrix(calib: dict[str, np.ndarray], key: str, shape: tuple[int, int], source: Path) -> np.ndarray:
    """Entry ``key`` of a :func:`read_kitti_calib` result, reshaped to ``shape`` and checked to be finite."""
    if key not in calib:
        raise DataError(f"{source}: calibration key '{key}' missing; the file has {sorted(calib)}")
    values = calib[key]
    if values.size != shape[0] * shape[1] or not np.all(np.isfinite(values)):
        raise DataError(f"{source}: calibration '{key}' must be {shape[0] * shape[1]} finite numbers "
                        f"({shape[0]}x{shape[1]}), got {values.size}")
    return values.reshape(shape)


def camera_from_projection(P: np.ndarray, velo_to_rect: np.ndarray, source: Path) -> tuple[np.ndarray, np.ndarray]:
    """Split a KITTI rectified projection matrix into intrinsics and a rigid lidar-to-camera transform.

    KITTI's ``P_i = K [I | t_i]``: its last column is the offset of camera ``i`` from the rectified reference
    camera, premultiplied by ``K``. So ``K = P[:, :3]`` and ``t_i = K^-1 P[:, 3]``, and the camera sees
    ``[I | t_i] @ velo_to_rect``. ``K @ lidar_to_cam[:3]`` equals ``P @ velo_to_rect`` exactly.

    Args:
        P: (3, 4) rectified projection matrix of the camera (``P2`` for ``image_2``).
        velo_to_rect: (4, 4) rigid transform from the lidar into the rectified reference camera frame.
        source: calibration file, for error messages.

    Returns:
        ``(K, lidar_to_cam)``: (3, 3) intrinsics and (4, 4) extrinsic.
    """
    K = P[:, :3].copy()
    if K[0, 0] <= 0 or K[1, 1] <= 0 or abs(K[2, 2] - 1) > 1e-6:
        raise DataError(f"{source}: projection matrix {P.tolist()} does not start with an intrinsic matrix")
    lidar_to_cam = translation(np.linalg.solve(K, P[:, 3])) @ velo_to_rect
    check_rigid(str(source), "lidar_to_cam", lidar_to_cam)
    return K, lidar_to_cam
