"""The synthetic driving world: the embedded default dataset of every lidarssl command.

Procedural street scenes built from triangle meshes (road with lane markings, sidewalks, grass,
buildings, trees, street furniture, parked and moving vehicles, cyclists, pedestrians, road works),
a spinning multi-beam lidar and a ring of calibrated pinhole cameras, both ray-cast with Embree, and
the native on-disk layout. Labels are nuScenes-lidarseg raw ids, mapped with the ``nuscenes`` class
map. Everything is deterministic for a seed.

Public API:

- :class:`SyntheticWorld` ``(seed=0, lidar="nuscenes", cameras="nuscenes", image_size=None,
  num_frames=40, frame_rate=10.0, ego_speed=None, density=1.0, shadows=True, threads=1)``:
  one sequence; ``world.scan(i)`` / ``world[i]`` returns a validated :class:`~lidarssl.data.scan.Scan`.
- :data:`LIDAR_PRESETS`: ``nuscenes`` (HDL-32E-like), ``kitti`` (HDL-64E-like), ``pandar64``, ``once`` (40 beams,
  cameras triggered with the sweep).
- :data:`CAMERA_PRESETS`: ``nuscenes`` (6 cameras, 480x270), ``kitti`` (image_2, 621x188), ``kitti360`` (stereo
  image_00 / image_01, 704x188), ``once`` (7 cameras, 480x255), ``none``.
- :func:`write_dataset` ``(source, root, num_frames, *, frames_per_sequence=None, val_fraction=0.2,
  jpeg_quality=95, overwrite=False, threads=None, progress=None) -> Path``: write the native layout.
  Read it back with :func:`lidarssl.open_dataset` (reader :class:`~lidarssl.data.formats.SyntheticDataset`).
- :func:`write_nuscenes`, :func:`write_semantickitti`, :func:`write_pandaset`, :func:`write_kitti360`,
  :func:`write_once` ``(source, root, num_frames, *, frames_per_sequence=None, val_fraction=0.2, threads=None,
  progress=None, ...) -> Path``: the same sequences in the nuScenes, SemanticKITTI, PandaSet, KITTI-360 and
  ONCE layouts, read back by
  :mod:`lidarssl.data.formats` (see :mod:`lidarssl.synthetic.writers`).
"""

from lidarssl.synthetic.camera import CAMERA_PRESETS, CameraSpec
from lidarssl.synthetic.lidar import LIDAR_PRESETS, LidarPreset
from lidarssl.synthetic.world import SyntheticWorld
from lidarssl.synthetic.writers import (
    write_dataset,
    write_kitti360,
    write_nuscenes,
    write_once,
    write_pandaset,
    write_semantickitti,
)

__all__ = [
    "CAMERA_PRESETS",
    "LIDAR_PRESETS",
    "CameraSpec",
    "LidarPreset",
    "SyntheticWorld",
    "write_dataset",
    "write_kitti360",
    "write_nuscenes",
    "write_once",
    "write_pandaset",
    "write_semantickitti",
]
