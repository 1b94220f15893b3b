"""Synthetic driving sequences: a scene, an ego trajectory, a lidar and a camera rig.

:class:`SyntheticWorld` is a dataset of :class:`~lidarssl.data.scan.Scan`s: frame ``i`` is the sweep
taken at ``t = i / frame_rate`` seconds from the sequence start, with the images of the rig.

Frames and conventions:

- **map frame**: the street plan (x along the street, z up, road at z = 0); **global frame**: the
  map frame moved by a random rigid transform, like nuScenes' map coordinates. ``Scan.ego_pose`` is
  lidar -> global.
- **ego frame**: x forward, y left, z up, on the ground under the rear axle (as in nuScenes).
- **lidar frame**: x forward, y left, z up at the lidar's optical centre (see
  :mod:`~lidarssl.synthetic.lidar`); ``sensor_origin`` is therefore zero.
- Each camera fires when the spinning beam crosses its optical axis and is rendered from the ego
  pose and the road users' positions **at its own timestamp**, so
  ``lidar_to_cam = cam_from_ego @ inv(map_from_ego(t_cam)) @ map_from_ego(t_lidar) @ ego_from_lidar``
  folds the ego motion in, as the nuScenes devkit does.

Everything is a pure function of ``(seed, parameters, frame index)``: the same seed gives
bit-identical scans in any order, in any process, with any number of threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from lidarssl.data.labels import load_class_map
from lidarssl.data.scan import CameraView, Scan
from lidarssl.errors import ConfigError
from lidarssl.synthetic.camera import CameraRender, CameraSpec, camera_rig, render
from lidarssl.synthetic.lidar import (
    LIDAR_PRESETS,
    LidarPreset,
    LidarSweep,
    simulate_sweep,
)
from lidarssl.synthetic.raycast import FrameGeometry, StaticGeometry
from lidarssl.synthetic.scene import Scene, build_scene
from lidarssl.synthetic.shading import lidar_reflectivity

#: Timestamps are seconds since this epoch plus the time within the sequence (like nuScenes' UNIX times).
EPOCH = 1_600_000_000.0
#: Road users farther than this from the ego are left out of the camera BVHs (a few pixels at most).
CAMERA_CULL_RADIUS = 160.0


#: the widest camera image a world may render (real cameras are at most ~4k pixels wide)
MAX_IMAGE_SIDE = 8192


def parse_image_size(value: tuple[int, int] | list[int] | str | None) -> tuple[int, int] | None:
    """``(width, height)`` from ``"480x270"``, a pair, or None (preset default).

    Raises:
        ConfigError: the value is not two positive integers.
    """
    if value is None:
        return None
    try:
        if isinstance(value, str):
            w, h = (int(v) for v in value.lower().split("x"))
        else:
            w, h = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"image_size must be WIDTHxHEIGHT such as 480x270, got {value!r}") from None
    if w <= 0 or h <= 0:
        raise ConfigError(f"image_size must be positive, got {w}x{h}")
    if max(w, h) > MAX_IMAGE_SIDE:
        raise ConfigError(f"image_size {w}x{h} is larger than any camera ({MAX_IMAGE_SIDE} pixels a side at most; "
                          f"one such image would need {w * h * 3 / 2**30:.0f} GiB); choose e.g. 1600x900")
    return w, h


class SyntheticWorld:
    """One procedurally generated driving sequence, as a dataset of Scans.

    Args:
        seed: scene seed; the same seed and parameters give bit-identical scans.
        lidar: lidar preset, one of :data:`~lidarssl.synthetic.lidar.LIDAR_PRESETS`
            (``nuscenes``, ``kitti``, ``pandar64``).
        cameras: camera rig, one of :data:`~lidarssl.synthetic.camera.CAMERA_PRESETS`
            (``nuscenes``: 6 cameras, ``kitti``: 1 front camera, ``none``).
        image_size: ``(width, height)`` or ``"WxH"`` for every camera; None keeps the preset's
            (480x270 for nuscenes, 621x188 for kitti).
        num_frames: length of the sequence; the street is generated long enough for it.
        frame_rate: sweeps per second.
        ego_speed: mean ego speed in m/s; drawn between 3.5 and 7 m/s when None.
        density: multiplier on the number of trees, street furniture, parked cars and people.
        shadows: render sun shadows (one extra ray per sunlit pixel).
        threads: the sweep and the cameras of a frame are simulated on this many threads (Embree
            and numpy release the GIL); 0 means one per CPU core. Results do not depend on it.

    A world can be pickled (for spawned DataLoader workers; the BVH is rebuilt on arrival) and
    used in forked processes.

    Raises:
        ConfigError: unknown preset, invalid size or negative seed.
    """

    def __init__(
        self,
        seed: int = 0,
        lidar: str = "nuscenes",
        cameras: str = "nuscenes",
        image_size: tuple[int, int] | str | None = None,
        num_frames: int = 40,
        frame_rate: float = 10.0,
        ego_speed: float | None = None,
        density: float = 1.0,
        shadows: bool = True,
        threads: int = 1,
    ) -> None:
        if lidar not in LIDAR_PRESETS:
            raise ConfigError(f"unknown lidar preset {lidar!r}; choose one of {sorted(LIDAR_PRESETS)}")
        try:
            self.cameras: list[CameraSpec] = camera_rig(cameras, parse_image_size(image_size))
        except KeyError as e:
            raise ConfigError(str(e.args[0])) from None
        if int(seed) < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {seed}")
        if num_frames < 1 or frame_rate <= 0:
            raise ConfigError(f"num_frames must be >= 1 and frame_rate > 0, got {num_frames}, {frame_rate}")
        self.seed = int(seed)
        self.lidar: LidarPreset = LIDAR_PRESETS[lidar]
        self.camera_preset = cameras
        self.image_size = parse_image_size(image_size)
        self.num_frames = int(num_frames)
        self.frame_rate = float(frame_rate)
        self.ego_speed = ego_speed
        self.density = float(density)
        self.shadows = bool(shadows)
        self.threads = int(threads)
        self.class_map = load_class_map("nuscenes")
        detail = min(self.lidar.max_range, 100.0) + 10.0
        duration = self.num_frames / self.frame_rate + 0.2
        self.scene: Scene = build_scene(
            np.random.default_rng([self.seed, 0x5CE4E]), duration, detail, ego_speed,
            ego_body=self.lidar.self_returns, density=self.density,
        )
        self._static = StaticGeometry(self.scene.static)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_key = (0, 0)  # (threads, pid): a forked child must not use its parent's pool

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_static"] = None  # Embree scenes do not pickle; rebuilt in __setstate__
        state["_pool"] = None
        state["_pool_key"] = (0, 0)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._static = StaticGeometry(self.scene.static)

    # -----------------------------------------------------------------------------------------

    @property
    def params(self) -> dict[str, Any]:
        """Constructor arguments as plain JSON values (``SyntheticWorld(**params)`` rebuilds it)."""
        return {
            "seed": self.seed,
            "lidar": self.lidar.name,
            "cameras": self.camera_preset,
            "image_size": list(self.image_size) if self.image_size else None,
            "num_frames": self.num_frames,
            "frame_rate": self.frame_rate,
            "ego_speed": self.ego_speed,
            "density": self.density,
            "shadows": self.shadows,
        }

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        size = "x".join(map(str, self.image_size)) if self.image_size else "default"
        return (f"SyntheticWorld(seed={self.seed}, lidar={self.lidar.name!r}, cameras={self.camera_preset!r}, "
                f"image_size={size}, num_frames={self.num_frames})")

    def __getitem__(self, i: int) -> Scan:
        return self.scan(i)

    def frame_id(self, i: int) -> str:
        """Stable id of frame ``i``: ``seed<seed>/<i:06d>``."""
        return f"seed{self.seed}/{i:06d}"

    def time(self, i: int) -> float:
        """Seconds from the sequence start to sweep ``i``."""
        return i / self.frame_rate

    def timestamp(self, i: int) -> float:
        """Absolute timestamp of sweep ``i``, seconds."""
        return EPOCH + self.time(i)

    def _check_index(self, i: int) -> int:
        if not -self.num_frames <= i < self.num_frames:
            raise IndexError(f"frame {i} out of range for a sequence of {self.num_frames} frames")
        return i % self.num_frames

    def _rng(self, i: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, i, stream])

    # -----------------------------------------------------------------------------------------
    # Poses.

    def map_from_lidar(self, i: int) -> np.ndarray:
        """(4, 4) lidar pose in the map frame at sweep ``i``."""
        return self.scene.ego.pose(self.time(i)) @ self.lidar.ego_from_lidar()

    def camera_time(self, i: int, cam: CameraSpec) -> float:
        """Seconds from the sequence start to when ``cam`` fires for sweep ``i``."""
        return self.time(i) + self.lidar.camera_time_offset(cam.yaw_deg)

    def lidar_to_cam(self, i: int, cam: CameraSpec, ego_motion: bool = True) -> np.ndarray:
        """(4, 4) lidar-to-camera transform for sweep ``i``.

        Args:
            i: frame index.
            cam: the camera.
            ego_motion: fold in the ego motion between the sweep and the camera timestamps (the
                correct transform). False gives the static rig chain ``cam_from_ego @ ego_from_lidar``
                that ignores it; useful only to show how wrong that is.
        """
        cam_from_ego = np.linalg.inv(cam.ego_from_cam())
        ego_from_lidar = self.lidar.ego_from_lidar()
        if not ego_motion:
            return cam_from_ego @ ego_from_lidar
        ego = self.scene.ego
        motion = np.linalg.inv(ego.pose(self.camera_time(i, cam))) @ ego.pose(self.time(i))
        return cam_from_ego @ motion @ ego_from_lidar

    # -----------------------------------------------------------------------------------------
    # Simulation.

    def _frame_geometry(self, t: float, radius: float, ego_body: bool = True) -> FrameGeometry:
        layer, boxes = self.scene.dynamic_at(t, radius, ego_body)
        return FrameGeometry(self._static, layer, boxes)

    def sweep(self, i: int) -> LidarSweep:
        """The raw lidar sweep of frame ``i`` (lidar frame)."""
        i = self._check_index(i)
        frame = self._frame_geometry(self.time(i), self.lidar.max_range + 15.0)
        reflect = lidar_reflectivity(frame, self.scene.layout)
        return simulate_sweep(self.lidar, frame, self.map_from_lidar(i), reflect, self._rng(i, 1))

    def render_camera(self, i: int, name: str | CameraSpec) -> CameraRender:
        """Render camera ``name`` for frame ``i``, with per-pixel class, instance and depth."""
        i = self._check_index(i)
        cam = name if isinstance(name, CameraSpec) else self._camera(name)
        k = self.cameras.index(cam)
        t = self.camera_time(i, cam)
        frame = self._frame_geometry(t, CAMERA_CULL_RADIUS, ego_body=False)
        map_from_cam = self.scene.ego.pose(t) @ cam.ego_from_cam()
        return render(cam, frame, map_from_cam, self.scene.sun, self.scene.layout, self._rng(i, 100 + k), self.shadows)

    def _camera(self, name: str) -> CameraSpec:
        for c in self.cameras:
            if c.name == name:
                return c
        raise KeyError(f"no camera {name!r}; this world has {self.camera_names}")

    def _map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        """``[fn(x) for x in items]``, on the render threads when there are several."""
        n = self.threads if self.threads > 0 else min(len(items), os.cpu_count() or 1)
        if n <= 1 or len(items) <= 1:
            return [fn(x) for x in items]
        key = (n, os.getpid())
        if self._pool is None or self._pool_key != key:
            if self._pool is not None and self._pool_key[1] == key[1]:
                self._pool.shutdown()
            self._pool = ThreadPoolExecutor(n, thread_name_prefix="lidarssl-render")
            self._pool_key = key
        return list(self._pool.map(fn, items))

    def scan(self, i: int) -> Scan:
        """Frame ``i`` as a validated :class:`~lidarssl.data.scan.Scan` (labels included)."""
        return self.scan_with_classes(i)[0]

    def scan_with_classes(self, i: int) -> tuple[Scan, list[np.ndarray]]:
        """Frame ``i`` and, per camera (in the scan's camera order), its (H, W) uint8 image of raw
        nuScenes-lidarseg class ids, :data:`~lidarssl.synthetic.camera.SKY_CLASS` where the sky is seen."""
        i = self._check_index(i)
        # The sweep and the cameras are independent: with threads they run side by side.
        jobs: list[Any] = [None, *self.cameras]
        done = self._map(lambda job: self.sweep(i) if job is None else self.render_camera(i, job), jobs)
        sweep, renders = done[0], done[1:]
        views = [
            CameraView(
                name=cam.name,
                image=r.rgb,
                K=cam.K,
                lidar_to_cam=self.lidar_to_cam(i, cam),
                timestamp=EPOCH + self.camera_time(i, cam),
                source=f"synthetic:seed={self.seed}:frame={i}:{cam.name}",
            )
            for cam, r in zip(self.cameras, renders)
        ]
        source = f"synthetic:seed={self.seed}:frame={i}"
        scan = Scan(
            points=sweep.points,
            intensity=sweep.intensity,
            source=source,
            dataset="synthetic",
            frame_id=self.frame_id(i),
            timestamp=self.timestamp(i),
            ring=sweep.ring,
            raw_labels=sweep.raw_labels,
            labels=self.class_map.map(sweep.raw_labels, source),
            instance=sweep.instance,
            sensor_origin=np.zeros(3, np.float32),
            ego_pose=self.scene.map_to_global @ self.map_from_lidar(i),
            cameras=views,
        )
        return scan, [r.raw_class for r in renders]

    def close(self) -> None:
        """Stop the render threads, if any."""
        if self._pool is not None and self._pool_key[1] == os.getpid():
            self._pool.shutdown()
        self._pool = None
        self._pool_key = (0, 0)
