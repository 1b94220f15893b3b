"""Synthetic data in the KITTI-360 layout (raw Velodyne scans, rectified stereo pair, calibration, poses, windows).

Written under ``root``, one drive ``2013_05_28_drive_XXXX_sync`` per sequence (KITTI-360's train/val drive
numbers 0000, 0002, ..., 0010, in order)::

    data_3d_raw/<seq>/velodyne_points/data/NNNNNNNNNN.bin   float32 x 4: x, y, z, reflectance (intensity / 255)
    data_3d_raw/<seq>/velodyne_points/timestamps.txt        UTC date-times with nanoseconds
    data_2d_raw/<seq>/image_0{0,1}/data_rect/NNNNNNNNNN.png (and image_0X/timestamps.txt)
    data_poses/<seq>/poses.txt, cam0_to_world.txt           pose frame -> world and rectified image_00 -> world
    calibration/calib_cam_to_velo.txt, calib_cam_to_pose.txt, perspective.txt
    data_3d_semantics/train/2013_05_28_drive_{train,val}.txt   two windows per sequence, overlapping by a frame

The world must carry KITTI-360's stereo pair (``cameras="kitti360"``) with a lidar that triggers it (``lidar="kitti"``:
the beam faces both cameras at the sweep time), so that one calibration holds for every frame. The pose (GPS/IMU)
frame is the synthetic ego frame, and the world frame the synthetic global frame. The synthetic cameras are ideal
rectified cameras; the files still go through a rectification (small fixed rotations ``R_rect_0X`` between the
written unrectified frames and the rectified ones), so a reader that skips one of the devkit's steps is caught.
Per sequence, the pose and timestamp tables are written after its scans; the calibration and window lists, which
make the folder readable, come last.

Read back, points, reflectance x 255, ``ego_pose`` and every camera projection are those of the synthetic scan.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from lidarssl.data.formats._common import homogeneous, invert_rigid
from lidarssl.data.formats.kitti360 import WINDOW_FILES
from lidarssl.data.geometry import quaternion_to_rotation
from lidarssl.errors import ConfigError
from lidarssl.io import write_bytes_atomic
from lidarssl.synthetic.plan import Frame, Generation, ProgressFn, encode_image, write_sequences
from lidarssl.synthetic.world import SyntheticWorld
from lidarssl.synthetic.writers._shared import refuse_existing

#: KITTI-360's drives with training and validation windows, in the order sequences take them.
DRIVES = (0, 2, 3, 4, 5, 6, 7, 9, 10)
CAMERAS = ("image_00", "image_01")
# A lidar-to-camera transform that differs from the first frame's by more than this is not one calibration.
_CALIB_TOL = 1e-6


def _small_rotation(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    a = np.asarray(axis, dtype=np.float64)
    a = np.sin(np.deg2rad(degrees) / 2) * a / np.linalg.norm(a)
    return quaternion_to_rotation([np.cos(np.deg2rad(degrees) / 2), *a])


#: Rectifying rotations written to perspective.txt (unrectified -> rectified camera frame).
R_RECT = {"image_00": _small_rotation((1.0, 2.0, 3.0), 0.3), "image_01": _small_rotation((-2.0, 1.0, 1.0), 0.4)}


def sequence_name(drive: int) -> str:
    return f"2013_05_28_drive_{drive:04d}_sync"


def write_kitti360(
    source: SyntheticWorld | Mapping[str, Any],
    root: str | os.PathLike[str],
    num_frames: int,
    *,
    frames_per_sequence: int | None = None,
    val_fraction: float = 0.2,
    threads: int | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """Generate ``num_frames`` synthetic frames and write them in the KITTI-360 layout.

    Read them back with :class:`~lidarssl.data.formats.KITTI360`. Sequences and arguments are those of
    :func:`~lidarssl.synthetic.write_dataset`; there can be at most 9 sequences (KITTI-360's train/val drives).

    Args:
        source: a :class:`SyntheticWorld` (``lidar="kitti", cameras="kitti360"``), or its parameters.
        root: output folder; it must not exist or be empty.
        num_frames: total frames over all sequences.
        frames_per_sequence: frames per sequence; defaults to the world's ``num_frames``.
        val_fraction: share of sequences whose windows are listed as ``val``.
        threads: render threads (see :class:`~lidarssl.synthetic.plan.Generation`).
        progress: called with (written, total) after each frame.

    Returns:
        ``root``.

    Raises:
        DataError: ``root`` already holds files.
        ConfigError: invalid parameters, too many sequences, a world without the stereo pair, or cameras that
            move against the lidar between frames.
    """
    gen = Generation(source, num_frames, frames_per_sequence=frames_per_sequence, val_fraction=val_fraction,
                     threads=threads)
    if len(gen.sequences) > len(DRIVES):
        raise ConfigError(f"KITTI-360 has {len(DRIVES)} train/val drives; this plan makes {len(gen.sequences)} "
                          "sequences: use fewer, longer sequences (frames_per_sequence)")
    if tuple(gen.world0.camera_names) != CAMERAS:
        raise ConfigError(f"KITTI-360's calibration chain runs through image_00 and image_01; this world has "
                          f"{gen.world0.camera_names}: use cameras='kitti360'")
    root = Path(root)
    refuse_existing(root, "files")
    rig = _Rig()
    windows: dict[str, list[str]] = {"train": [], "val": []}

    def start(first: Frame) -> _SequenceWriter:
        seq = sequence_name(DRIVES[first.sequence.id])
        windows[first.sequence.split] += _windows(seq, first.sequence.num_frames)
        return _SequenceWriter(root, seq, rig)

    write_sequences(gen, start, progress)
    rig.write(root / "calibration")
    for split, lines in windows.items():
        write_bytes_atomic(root / WINDOW_FILES[split], "".join(f"{line}\n" for line in lines).encode())
    return root


def _windows(seq: str, n: int) -> list[str]:
    """Two windows overlapping by one frame (the official windows overlap too), or one for short sequences."""
    spans = [(0, n - 1)] if n < 3 else [(0, n // 2), (n // 2, n - 1)]
    return [f"data_3d_semantics/train/{seq}/static/{a:010d}_{b:010d}.ply" for a, b in spans]


def _row(M: np.ndarray) -> str:
    return " ".join(f"{v:.12e}" for v in np.asarray(M, dtype=np.float64).ravel())


def _datetime(t: float) -> str:
    """``YYYY-MM-DD HH:MM:SS.fffffffff`` (UTC) of a UNIX time, as KITTI-360's timestamps.txt."""
    seconds = int(np.floor(t))
    nanos = int(round((t - seconds) * 1e9))
    if nanos == 1_000_000_000:
        seconds, nanos = seconds + 1, 0
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%d %H:%M:%S}.{nanos:09d}"


class _Rig:
    """The calibration every frame must share: lidar -> rectified camera, and the ego frame as pose frame."""

    def __init__(self) -> None:
        self.K: dict[str, np.ndarray] = {}
        self.size: dict[str, tuple[int, int]] = {}
        self.lidar_to_cam: dict[str, np.ndarray] = {}
        self.ego_from_lidar: np.ndarray | None = None

    def check(self, frame: Frame) -> None:
        scan = frame.scan
        if self.ego_from_lidar is None:
            self.ego_from_lidar = frame.world.lidar.ego_from_lidar()
        for cam in CAMERAS:
            view = scan.camera(cam)
            if cam not in self.lidar_to_cam:
                self.K[cam], self.lidar_to_cam[cam] = view.K, view.lidar_to_cam
                self.size[cam] = (view.hw[1], view.hw[0])
            elif np.abs(view.lidar_to_cam - self.lidar_to_cam[cam]).max() > _CALIB_TOL:
                raise ConfigError(f"{scan.source}: camera '{cam}' moves against the lidar between frames (it fires "
                                  f"{1e3 * (view.timestamp - scan.timestamp):+.1f} ms from the sweep), but KITTI-360 "
                                  "keeps one calibration; use lidar='kitti'")

    def cam_to_pose(self, cam: str) -> np.ndarray:
        """Unrectified camera -> pose (ego) frame."""
        return self.ego_from_lidar @ invert_rigid(self.lidar_to_cam[cam]) @ homogeneous(R_RECT[cam])

    def write(self, folder: Path) -> None:
        velo_from_unrect0 = invert_rigid(self.lidar_to_cam["image_00"]) @ homogeneous(R_RECT["image_00"])
        write_bytes_atomic(folder / "calib_cam_to_velo.txt", f"{_row(velo_from_unrect0[:3])}\n".encode())
        write_bytes_atomic(folder / "calib_cam_to_pose.txt",
                     "".join(f"{cam}: {_row(self.cam_to_pose(cam)[:3])}\n" for cam in CAMERAS).encode())
        rect1_from_rect0 = self.lidar_to_cam["image_01"] @ invert_rigid(self.lidar_to_cam["image_00"])
        if np.abs(rect1_from_rect0[:3, :3] - np.eye(3)).max() > 1e-9:
            raise ConfigError("KITTI-360's rectified cameras share one orientation; this rig's do not")
        lines = []
        for cam, offset in (("image_00", np.zeros(3)), ("image_01", rect1_from_rect0[:3, 3])):
            i = cam[-2:]
            P = self.K[cam] @ np.hstack([np.eye(3), offset[:, None]])
            lines += [f"S_rect_{i}: {self.size[cam][0]:.6e} {self.size[cam][1]:.6e}",
                      f"R_rect_{i}: {_row(R_RECT[cam])}", f"P_rect_{i}: {_row(P)}"]
        write_bytes_atomic(folder / "perspective.txt", ("\n".join(lines) + "\n").encode())


class _SequenceWriter:
    """Writes the scans and images of one drive as they come, and its poses and timestamps at the end."""

    def __init__(self, root: Path, seq: str, rig: _Rig) -> None:
        self.root, self.seq, self.rig = root, seq, rig
        self.poses: list[str] = []
        self.cam0_to_world: list[str] = []
        self.times: list[str] = []

    def add(self, frame: Frame) -> None:
        scan = frame.scan
        self.rig.check(frame)
        stem = f"{frame.index:010d}"
        reflectance = scan.intensity / np.float32(255.0)
        write_bytes_atomic(self.root / "data_3d_raw" / self.seq / "velodyne_points" / "data" / f"{stem}.bin",
                     np.column_stack([scan.points, reflectance]).astype("<f4").tobytes())
        for cam in CAMERAS:
            write_bytes_atomic(self.root / "data_2d_raw" / self.seq / cam / "data_rect" / f"{stem}.png",
                         encode_image(scan.camera(cam).image, "PNG"))
        world_from_pose = scan.ego_pose @ invert_rigid(self.rig.ego_from_lidar)
        self.poses.append(f"{frame.index} {_row(world_from_pose[:3])}")
        world_from_rect0 = scan.ego_pose @ invert_rigid(scan.camera("image_00").lidar_to_cam)
        self.cam0_to_world.append(f"{frame.index} {_row(world_from_rect0)}")
        self.times.append(_datetime(scan.timestamp))

    def finish(self) -> None:
        stamps = "".join(f"{t}\n" for t in self.times).encode()
        write_bytes_atomic(self.root / "data_3d_raw" / self.seq / "velodyne_points" / "timestamps.txt", stamps)
        for cam in CAMERAS:
            write_bytes_atomic(self.root / "data_2d_raw" / self.seq / cam / "timestamps.txt", stamps)
        poses = self.root / "data_poses" / self.seq
        write_bytes_atomic(poses / "cam0_to_world.txt", "".join(f"{line}\n" for line in self.cam0_to_world).encode())
        write_bytes_atomic(poses / "poses.txt", "".join(f"{line}\n" for line in self.poses).encode())
