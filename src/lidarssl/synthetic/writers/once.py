"""Synthetic data in the ONCE layout (roof lidar sweeps, seven-camera naming, one JSON per sequence).

Written under ``root``, per sequence ``NNNNNN`` (000000, 000001, ...)::

    data/NNNNNN/lidar_roof/<frame_id>.bin   float32 x 4: x, y, z, intensity (0..255); frame_id = time in ms
    data/NNNNNN/camXX/<frame_id>.jpg        the world's cameras: ONCE's seven (cameras="once"), or none
    data/NNNNNN/NNNNNN.json                 meta_info, calib (cam_to_velo, cam_intrinsic, distortion), frames
    ImageSets/{raw_small,train,val}.txt     the sequences of each split

The validation sequences of the plan go to ``val``; of the training sequences, the first ``raw_sequences`` go to
``raw_small`` (unannotated, what ALSO pretrains on) and the others to ``train``. In ``train`` and ``val`` every
``label_every``-th frame (ONCE annotates 2 of the 10 sweeps per second) carries ``annos``: one 3D box per road
user with at least 5 lidar points (``Car``, ``Truck``, ``Bus``, ``Pedestrian``, ``Cyclist``), the axis-aligned
extent of its points in the lidar frame with heading 0, and no 2D boxes (``[-1, -1, -1, -1]`` in every camera);
a frame without such a road user gets none, so the reader, like OpenPCDet, leaves it out of the labelled splits.

ONCE keeps one calibration per sequence, so every camera must fire with the sweep: use ``lidar="once"`` (one
trigger for the rig) with ``cameras="once"``, or a world without cameras. With ``distortion`` the cameras get that
OpenCV lens distortion: the rendered pinhole images are resampled into the raw images such a lens takes
(:class:`lens.Distorter <lidarssl.data.lens.Distorter>`) and the coefficients go into ``calib``, which the reader
undoes. The points stay in the synthetic lidar frame (x forward, y left, z up). Each sequence's JSON is written
after its frames, the split lists last.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lidarssl.data.formats._common import invert_rigid
from lidarssl.data.formats.once import CAMERAS
from lidarssl.data.geometry import rotation_to_quaternion
from lidarssl.data.lens import Distorter, check_distortion
from lidarssl.errors import ConfigError
from lidarssl.io import write_bytes_atomic
from lidarssl.synthetic.plan import Frame, Generation, ProgressFn, encode_image, write_sequences
from lidarssl.synthetic.world import SyntheticWorld
from lidarssl.synthetic.writers._shared import refuse_existing

#: nuScenes-lidarseg raw ids of ONCE's five box classes.
BOX_CLASSES = {17: "Car", 23: "Truck", 15: "Bus", 16: "Bus", 2: "Pedestrian", 3: "Pedestrian", 4: "Pedestrian",
               6: "Pedestrian", 14: "Cyclist", 21: "Cyclist"}
#: Road users with fewer lidar points than this get no box (OpenPCDet's ONCE database drops them too).
MIN_BOX_POINTS = 5
# A lidar-to-camera transform that differs from the first frame's by more than this is not one calibration.
_CALIB_TOL = 1e-6


def write_once(
    source: SyntheticWorld | Mapping[str, Any],
    root: str | os.PathLike[str],
    num_frames: int,
    *,
    frames_per_sequence: int | None = None,
    val_fraction: float = 0.2,
    raw_sequences: int = 1,
    label_every: int = 5,
    distortion: Sequence[float] = (0.0, 0.0, 0.0, 0.0, 0.0),
    jpeg_quality: int = 95,
    threads: int | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """Generate ``num_frames`` synthetic frames and write them in the ONCE layout.

    Read them back with :class:`~lidarssl.data.formats.ONCE`. Sequences and the other arguments are those of
    :func:`~lidarssl.synthetic.write_dataset`.

    Args:
        source: a :class:`SyntheticWorld` (``lidar="once", cameras="once"``, or ``cameras="none"``), or its
            parameters.
        root: output folder; it must not exist or be empty.
        num_frames: total frames over all sequences.
        frames_per_sequence: frames per sequence; defaults to the world's ``num_frames``.
        val_fraction: share of sequences held out as ``val``.
        raw_sequences: how many training sequences (the first ones) go to ``raw_small``, without annotations.
        label_every: in ``train`` and ``val``, annotate frames 0, label_every, 2 label_every, ...
        distortion: OpenCV lens distortion ``k1, k2, p1, p2, k3`` of every camera (zeros: ideal pinholes).
        jpeg_quality: JPEG quality of the camera images.
        threads: render threads (see :class:`~lidarssl.synthetic.plan.Generation`).
        progress: called with (written, total) after each frame.

    Returns:
        ``root``.

    Raises:
        DataError: ``root`` already holds files.
        ConfigError: invalid parameters, cameras other than ONCE's, or cameras that move against the lidar
            between frames.
    """
    gen = Generation(source, num_frames, frames_per_sequence=frames_per_sequence, val_fraction=val_fraction,
                     threads=threads)
    unnamed = [c for c in gen.world0.camera_names if c not in CAMERAS]
    if unnamed:
        raise ConfigError(f"cameras {unnamed} are not ONCE's ({list(CAMERAS)}); use cameras='once' or 'none'")
    if label_every < 1 or raw_sequences < 0:
        raise ConfigError(f"label_every must be >= 1 and raw_sequences >= 0, got {label_every}, {raw_sequences}")
    dist = check_distortion(distortion, "distortion")
    root = Path(root)
    refuse_existing(root, "files")
    train_ids = [s.id for s in gen.sequences if s.split == "train"]
    split_of = {s.id: s.split for s in gen.sequences}
    split_of.update({k: "raw_small" for k in train_ids[:raw_sequences]})
    listed: dict[str, list[str]] = {}

    def start(first: Frame) -> _SequenceWriter:
        seq, split = f"{first.sequence.id:06d}", split_of[first.sequence.id]
        listed.setdefault(split, []).append(seq)
        return _SequenceWriter(root / "data" / seq, seq, 0 if split == "raw_small" else label_every, dist,
                               jpeg_quality)

    write_sequences(gen, start, progress)
    for split, sequences in listed.items():
        write_bytes_atomic(root / "ImageSets" / f"{split}.txt", "".join(f"{s}\n" for s in sequences).encode())
    return root


def _boxes(frame: Frame) -> tuple[list[str], list[list[float]]]:
    """ONCE-class road users hit by the lidar: names and [cx, cy, cz, l, w, h, heading 0] in the lidar frame."""
    scan = frame.scan
    names, boxes = [], []
    for inst in np.unique(scan.instance[scan.instance > 0]):
        sel = scan.instance == inst
        raw = int(np.bincount(scan.raw_labels[sel]).argmax())
        if raw not in BOX_CLASSES or sel.sum() < MIN_BOX_POINTS:
            continue
        lo, hi = scan.points[sel].min(axis=0).astype(np.float64), scan.points[sel].max(axis=0).astype(np.float64)
        names.append(BOX_CLASSES[raw])
        boxes.append([*((lo + hi) / 2).tolist(), *(hi - lo).tolist(), 0.0])
    return names, boxes


class _SequenceWriter:
    """Writes the sweeps and images of one sequence as they come, and its JSON at the end."""

    def __init__(self, folder: Path, seq: str, label_every: int, dist: np.ndarray, quality: int) -> None:
        self.folder, self.seq, self.label_every, self.dist, self.quality = folder, seq, label_every, dist, quality
        self.calib: dict[str, dict[str, Any]] = {}
        self.lidar_to_cam: dict[str, np.ndarray] = {}
        self.frames: list[dict[str, Any]] = []
        self.distorters: dict[str, Distorter] = {}
        self.seed = 0

    def add(self, frame: Frame) -> None:
        scan = frame.scan
        self.seed = frame.sequence.seed
        frame_id = str(round(scan.timestamp * 1000))
        write_bytes_atomic(self.folder / "lidar_roof" / f"{frame_id}.bin",
                     np.column_stack([scan.points, scan.intensity]).astype("<f4").tobytes())
        for view in scan.cameras:
            name = view.name
            if name not in self.calib:
                self.lidar_to_cam[name] = view.lidar_to_cam
                self.calib[name] = {"cam_to_velo": invert_rigid(view.lidar_to_cam).tolist(),
                                    "cam_intrinsic": view.K.tolist(), "distortion": self.dist.tolist()}
            elif np.abs(view.lidar_to_cam - self.lidar_to_cam[name]).max() > _CALIB_TOL:
                raise ConfigError(f"{scan.source}: camera '{name}' moves against the lidar between frames (it "
                                  f"fires {1e3 * (view.timestamp - scan.timestamp):+.1f} ms from the sweep), but ONCE "
                                  "keeps one calibration per sequence; use lidar='once'")
            if name not in self.distorters:
                self.distorters[name] = Distorter(view.K, self.dist, (view.hw[1], view.hw[0]))
            image = self.distorters[name](view.image)
            write_bytes_atomic(self.folder / name / f"{frame_id}.jpg", encode_image(image, "JPEG", self.quality))
        qw, qx, qy, qz = rotation_to_quaternion(scan.ego_pose[:3, :3])
        entry: dict[str, Any] = {"frame_id": frame_id,
                                 "pose": [float(v) for v in (qx, qy, qz, qw, *scan.ego_pose[:3, 3])]}
        if self.label_every and frame.index % self.label_every == 0:
            names, boxes = _boxes(frame)
            if boxes:
                entry["annos"] = {"names": names, "boxes_3d": boxes,
                                  "boxes_2d": {c: [[-1.0] * 4 for _ in boxes] for c in self.calib}}
        self.frames.append(entry)

    def finish(self) -> None:
        doc = {"meta_info": {"source": "lidarssl synthetic world", "seed": self.seed}, "calib": self.calib,
               "frames": self.frames}
        write_bytes_atomic(self.folder / f"{self.seq}.json", json.dumps(doc).encode())
