"""Writers of synthetic data: the native layout and the on-disk layouts of real datasets, all readable by
lidarssl's format readers.

- :func:`write_dataset`: the native layout (``index.json``, npz scans, JPEG images).

- :func:`write_nuscenes`: the nuScenes v1.0 tables (nuscenes-devkit can load them), samples and lidarseg.
- :func:`write_semantickitti`: ``dataset/sequences/XX`` with velodyne, labels, image_2, calib, poses, times.
- :func:`write_pandaset`: one folder per sequence with pickled DataFrames and JSON tables.
- :func:`write_kitti360`: raw Velodyne scans, the rectified stereo pair, calibration, poses and window lists.
- :func:`write_once`: roof lidar sweeps, ONCE's seven cameras (optionally lens-distorted), one JSON per sequence.

Synthetic labels are nuScenes-lidarseg raw ids; the SemanticKITTI and PandaSet writers map them to those
datasets' raw ids through :data:`NUSCENES_TO_SEMANTICKITTI` and :data:`NUSCENES_TO_PANDASET`, whose comments
say which training classes merge. Every file is written to a temporary name and renamed into place; the
tables that make a dataset readable (nuScenes JSON tables, per-sequence calibration and pose files) come last.
"""

from lidarssl.synthetic.writers.kitti360 import write_kitti360
from lidarssl.synthetic.writers.native import write_dataset
from lidarssl.synthetic.writers.nuscenes import NuScenesTables, write_nuscenes
from lidarssl.synthetic.writers.once import write_once
from lidarssl.synthetic.writers.pandaset import CAMERA_NAMES as PANDASET_CAMERA_NAMES
from lidarssl.synthetic.writers.pandaset import NUSCENES_TO_PANDASET, write_pandaset
from lidarssl.synthetic.writers.semantickitti import (
    NUSCENES_TO_SEMANTICKITTI,
    write_semantickitti,
)

__all__ = [
    "NUSCENES_TO_PANDASET",
    "NUSCENES_TO_SEMANTICKITTI",
    "PANDASET_CAMERA_NAMES",
    "NuScenesTables",
    "write_dataset",
    "write_kitti360",
    "write_nuscenes",
    "write_once",
    "write_pandaset",
    "write_semantickitti",
]
