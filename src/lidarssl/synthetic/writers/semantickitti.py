"""Synthetic data in the SemanticKITTI layout (KITTI odometry scans with SemanticKITTI labels).

Written under ``root``::

    dataset/sequences/XX/velodyne/NNNNNN.bin   float32 x 4: x, y, z, remission (intensity / 255, in 0..1)
                         labels/NNNNNN.label   uint32: SemanticKITTI raw id | instance id << 16
                         image_2/NNNNNN.png    the chosen camera
                         calib.txt             P0-P3 = K [I | 0], Tr = lidar -> camera 0 (= image_2 here)
                         poses.txt             camera-0 pose of each frame in the first frame's camera-0 frame
                         times.txt             seconds since the first frame

Training sequences are numbered 00-07, 09, 10 and the one validation sequence 08, as in the benchmark, so
the reader's splits hold them. The synthetic lidar frame (x forward, y left, z up) is KITTI's. KITTI has one
calibration per sequence, so the camera must fire with the sweep (``lidar="kitti"`` does: its beam faces the
front camera at the sweep time); a world whose camera moves against the lidar between frames is refused.
Per sequence, ``calib.txt``, ``poses.txt`` and ``times.txt`` are written after its scans.

Read back, ``ego_pose`` is relative to the sequence's first scan and ``timestamp`` to its start (KITTI keeps
no global frame or absolute time); intensity is the synthetic one divided by 255.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lidarssl.errors import ConfigError, DataError
from lidarssl.io import write_bytes_atomic
from lidarssl.synthetic.plan import (
    Frame,
    Generation,
    ProgressFn,
    encode_image,
    write_sequences,
)
from lidarssl.synthetic.world import SyntheticWorld
from lidarssl.synthetic.writers._shared import (
    label_table,
    refuse_existing,
    relative_pose,
)

#: SemanticKITTI sequence names of the training and validation splits, in the order sequences fill them.
SEQUENCE_NAMES = {"train": ("00", "01", "02", "03", "04", "05", "06", "07", "09", "10"), "val": ("08",)}

#: nuScenes-lidarseg raw id -> SemanticKITTI raw id. After each dataset's 16/19-class learning map:
#: bus (15, 16 -> 13 bus), construction_vehicle (18) and trailer (22) all become other-vehicle; traffic cones
#: (12 -> 99 other-object) lose their class; barrier becomes fence (SemanticKITTI's fence covers crash
#: barriers); manmade becomes building (poles and signs cannot be told apart in the nuScenes label). Every
#: other nuScenes class keeps one SemanticKITTI class. nuScenes ids without a class map to SemanticKITTI ids
#: without one (0, 1, 52, 99), except the emergency vehicles, which become other-vehicle.
NUSCENES_TO_SEMANTICKITTI: dict[int, int] = {
    0: 1,  # noise -> outlier
    1: 0,  # animal -> unlabeled (no class)
    2: 30, 3: 30, 4: 30, 6: 30,  # adult, child, construction worker, police officer -> person
    5: 99,  # personal mobility (device and rider in one label; nuScenes ignores it too) -> other-object
    7: 99, 8: 99,  # stroller, wheelchair -> other-object
    9: 51,  # barrier -> fence
    10: 99, 11: 99, 12: 99,  # debris, pushable/pullable, traffic cone -> other-object
    13: 52,  # bicycle rack -> other-structure
    14: 11,  # bicycle
    15: 13, 16: 13,  # bendy and rigid bus -> bus
    17: 10,  # car
    18: 20,  # construction vehicle -> other-vehicle
    19: 20, 20: 20,  # ambulance, police vehicle -> other-vehicle
    21: 15,  # motorcycle
    22: 20,  # trailer -> other-vehicle
    23: 18,  # truck
    24: 40,  # driveable surface -> road
    25: 49,  # other flat -> other-ground
    26: 48,  # sidewalk
    27: 72,  # terrain
    28: 50,  # manmade -> building
    29: 99,  # static other -> other-object
    30: 70,  # vegetation
    31: 0,  # ego vehicle -> unlabeled
}
_TABLE = label_table(NUSCENES_TO_SEMANTICKITTI)
# A lidar-to-camera transform that differs from the sequence's by more than this is not one calibration.
_CALIB_TOL = 1e-6


def write_semantickitti(
    source: SyntheticWorld | Mapping[str, Any],
    root: str | os.PathLike[str],
    num_frames: int,
    *,
    camera: str = "image_2",
    frames_per_sequence: int | None = None,
    val_fraction: float = 0.2,
    threads: int | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """Generate ``num_frames`` synthetic frames and write them in the SemanticKITTI layout.

    Read them back with :class:`~lidarssl.data.formats.SemanticKITTI`. Sequences and arguments are those of
    :func:`~lidarssl.synthetic.write_dataset`; there can be at most 10 training and 1 validation sequences.

    Args:
        source: a :class:`SyntheticWorld` (``lidar="kitti", cameras="kitti"``), or its parameters.
        root: output folder; ``root/dataset/sequences`` must not exist or be empty.
        num_frames: total frames over all sequences.
        camera: the world's camera written as ``image_2``.
        frames_per_sequence: frames per sequence; defaults to the world's ``num_frames``.
        val_fraction: share of sequences held out as ``val`` (sequence 08).
        threads: render threads (see :class:`~lidarssl.synthetic.plan.Generation`).
        progress: called with (written, total) after each frame.

    Returns:
        The ``dataset/sequences`` folder.

    Raises:
        DataError: the sequences folder already holds files.
        ConfigError: invalid parameters, too many sequences, no such camera, or a camera that moves
            against the lidar between frames.
    """
    gen = Generation(source, num_frames, frames_per_sequence=frames_per_sequence, val_fraction=val_fraction,
                     threads=threads)
    names: dict[int, str] = {}
    for split, available in SEQUENCE_NAMES.items():
        ids = [s.id for s in gen.sequences if s.split == split]
        if len(ids) > len(available):
            raise ConfigError(f"SemanticKITTI has {len(available)} {split} sequence(s) "
                              f"({', '.join(available)}); this plan makes {len(ids)}: use fewer, longer sequences "
                              "(frames_per_sequence) or a smaller val_fraction")
        names.update(zip(ids, available))
    if camera not in gen.world0.camera_names:
        raise ConfigError(f"camera '{camera}' is not in this world ({gen.world0.camera_names}); SemanticKITTI's "
                          "calib.txt needs one camera, e.g. cameras='kitti'")
    folder = Path(root) / "dataset" / "sequences"
    refuse_existing(folder, "SemanticKITTI sequences")
    write_sequences(gen, lambda first: _SequenceWriter(folder / names[first.sequence.id], camera), progress)
    return folder


class _SequenceWriter:
    """Writes the scans of one sequence as they come, and its calibration, poses and times at the end."""

    def __init__(self, folder: Path, camera: str) -> None:
        self.folder = folder
        self.camera = camera
        self.K: np.ndarray | None = None
        self.Tr: np.ndarray | None = None
        self.poses: list[np.ndarray] = []  # lidar -> global
        self.times: list[float] = []

    def add(self, frame: Frame) -> None:
        scan = frame.scan
        view = scan.camera(self.camera)
        if self.Tr is None:
            self.K, self.Tr = view.K, view.lidar_to_cam
        elif np.abs(view.lidar_to_cam - self.Tr).max() > _CALIB_TOL:
            raise ConfigError(f"{scan.source}: camera '{self.camera}' moves against the lidar between frames (it "
                              f"fires {1e3 * (view.timestamp - scan.timestamp):+.1f} ms from the sweep), but "
                              "SemanticKITTI keeps one calibration per sequence; use lidar='kitti'")
        stem = f"{frame.index:06d}"
        if scan.instance is not None and (scan.instance.min() < 0 or scan.instance.max() >= 1 << 16):
            raise DataError(f"{scan.source}: instance ids must fit in 16 bits for a .label file")
        remission = scan.intensity / np.float32(255.0)
        write_bytes_atomic(self.folder / "velodyne" / f"{stem}.bin",
                     np.column_stack([scan.points, remission]).astype("<f4").tobytes())
        instance = scan.instance if scan.instance is not None else np.zeros(len(scan), np.int64)
        packed = _TABLE[scan.raw_labels].astype(np.uint32) | (instance.astype(np.uint32) << 16)
        write_bytes_atomic(self.folder / "labels" / f"{stem}.label", packed.astype("<u4").tobytes())
        write_bytes_atomic(self.folder / "image_2" / f"{stem}.png", encode_image(view.image, "PNG"))
        self.poses.append(scan.ego_pose)
        self.times.append(scan.timestamp)

    def finish(self) -> None:
        P = np.hstack([self.K, np.zeros((3, 1))])
        lines = [f"{key}: {_row(P)}" for key in ("P0", "P1", "P2", "P3")] + [f"Tr: {_row(self.Tr[:3])}"]
        write_bytes_atomic(self.folder / "calib.txt", ("\n".join(lines) + "\n").encode())
        # poses.txt holds camera-0 poses: Tr @ (lidar i -> lidar 0) @ inv(Tr); the reader undoes the Tr
        cam_poses = [self.Tr @ relative_pose(self.poses[0], pose) @ np.linalg.inv(self.Tr) for pose in self.poses]
        write_bytes_atomic(self.folder / "poses.txt", "".join(f"{_row(T[:3])}\n" for T in cam_poses).encode())
        write_bytes_atomic(self.folder / "times.txt", "".join(f"{t - self.times[0]:.6e}\n" for t in self.times).encode())


def _row(M: np.ndarray) -> str:
    """A matrix as one line of space-separated numbers, row-major, as KITTI prints them."""
    return " ".join(f"{v:.12e}" for v in np.asarray(M, dtype=np.float64).ravel())
