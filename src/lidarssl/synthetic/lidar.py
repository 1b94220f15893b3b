"""Spinning multi-beam lidar simulated by ray casting.

**Lidar frame**: x forward, y left, z up, origin at the optical centre (mounted on the ego roof
without rotation, so lidar axes are parallel to ego axes). nuScenes' own LIDAR_TOP frame is rotated
by 90 degrees (x right, y forward); readers of real data handle that, and nothing downstream assumes
either, because every Scan carries its own extrinsics.

**Timing**: a sweep is treated as instantaneous at its timestamp (no rolling-shutter distortion from
ego motion during the revolution). The spin still matters for cameras: each camera fires when the
beam sweeps across its optical axis (:meth:`LidarPreset.camera_time_offset`), as in nuScenes, or all
at the sweep timestamp for a rig with one trigger (``global_trigger``, as ONCE's synchronised frames).

**Returns**: one ray per (azimuth step, beam); the first surface hit gives the return, with Gaussian
range noise, random dropouts, extra dropouts for glass and dark surfaces at grazing angles and long
range, and nothing beyond the maximum range. Intensity is ``255 * reflectivity * cos(incidence)``
with a little multiplicative and additive noise, rounded to integers like nuScenes' 0..255 scale.
Points are ordered by firing time (azimuth-major, beams in ring order within a firing); ring 0 is
the lowest beam, as in nuScenes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lidarssl.synthetic.materials import DROPOUT
from lidarssl.synthetic.meshes import rotate
from lidarssl.synthetic.raycast import FrameGeometry

#: (faces, map points) -> lidar reflectivity per hit; lane paint on the road is brighter than asphalt.
ReflectivityFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class LidarPreset:
    """A spinning lidar model.

    Attributes:
        name: preset key.
        elevations_deg: beam elevations, ring 0 first (lowest beam first).
        azimuth_steps: firings per revolution.
        max_range: returns beyond this are dropped, metres.
        min_range: returns closer than this are dropped, metres.
        mount: (x, y, z) of the lidar in the ego frame (ego frame: rear axle on the ground).
        rotation_hz: spin rate; with ``sync_azimuth_deg`` it sets when cameras fire.
        sync_azimuth_deg: azimuth (counter-clockwise from x) the beam points at at the sweep timestamp.
        sync_at_sweep_end: the timestamp is the end of the revolution (nuScenes: cameras fire up to one
            spin period earlier) rather than its middle (KITTI: the camera fires when the beam faces it).
        range_noise: standard deviation of the range noise, metres.
        dropout: probability of losing any return.
        self_returns: the ego body is in the scene, so low beams hit the car roof (as in nuScenes).
        global_trigger: every camera fires at the sweep timestamp (one trigger for the whole rig), so each
            lidar-to-camera transform is the fixed rig calibration (what ONCE's per-sequence calibration holds).
    """

    name: str
    elevations_deg: tuple[float, ...]
    azimuth_steps: int
    max_range: float
    min_range: float
    mount: tuple[float, float, float]
    rotation_hz: float
    sync_azimuth_deg: float
    sync_at_sweep_end: bool
    range_noise: float = 0.02
    dropout: float = 0.01
    self_returns: bool = False
    global_trigger: bool = False

    @property
    def num_beams(self) -> int:
        return len(self.elevations_deg)

    def ego_from_lidar(self) -> np.ndarray:
        """4x4 lidar-to-ego transform."""
        T = np.eye(4)
        T[:3, 3] = self.mount
        return T

    def camera_time_offset(self, azimuth_deg: float) -> float:
        """Camera timestamp minus sweep timestamp, seconds, for a camera looking at ``azimuth_deg``.

        The beam spins clockwise seen from above (azimuth decreases with time) and points at
        ``sync_azimuth_deg`` at the sweep timestamp.
        """
        if self.global_trigger:
            return 0.0
        period = 1.0 / self.rotation_hz
        # Going back in time the azimuth grows: the beam passed the camera this many degrees ago.
        behind = (azimuth_deg - self.sync_azimuth_deg) % 360.0
        if not self.sync_at_sweep_end:
            behind = (behind + 180.0) % 360.0 - 180.0  # the sweep is centred on the timestamp
        return -behind / 360.0 * period


def _pandar64_elevations() -> tuple[float, ...]:
    # Sparse beams above and below a dense band near the horizon, like Hesai's Pandar64.
    top = [15.0, 11.0, 8.0, 5.0, 3.0]
    dense = list(np.round(np.linspace(2.0, -6.0, 49), 3))
    bottom = [-7.0, -8.0, -9.0, -10.0, -11.0, -12.0, -13.0, -14.0, -19.0, -25.0]
    return tuple(sorted(top + dense + bottom))


def _pandar40_elevations() -> tuple[float, ...]:
    # ONCE's 40-beam roof lidar: sparse beams above and below a 1/3-degree band from +2 to -6 degrees.
    top = [15.0, 11.0, 8.0, 5.0, 3.0]
    dense = list(np.round(np.linspace(2.0, -6.0, 25), 3))
    bottom = [-7.0, -8.0, -9.0, -10.0, -11.0, -12.0, -13.0, -14.0, -19.0, -25.0]
    return tuple(sorted(top + dense + bottom))


def _hdl64_elevations() -> tuple[float, ...]:
    # Two laser blocks: upper +2..-8.33 deg at 1/3 deg, lower -8.83..-24.9 deg at about 1/2 deg.
    upper = np.linspace(2.0, -8.33, 32)
    lower = np.linspace(-8.83, -24.9, 32)
    return tuple(sorted(np.round(np.concatenate([upper, lower]), 3).tolist()))


#: Lidar presets by name: ``nuscenes`` (Velodyne HDL-32E), ``kitti`` (HDL-64E), ``pandar64``, ``once`` (40 beams,
#: every camera triggered with the sweep).
LIDAR_PRESETS: dict[str, LidarPreset] = {
    "nuscenes": LidarPreset(
        name="nuscenes",
        elevations_deg=tuple(np.round(np.linspace(-30.67, 10.67, 32), 3).tolist()),
        azimuth_steps=1085,
        max_range=70.0,
        min_range=0.5,
        mount=(0.94, 0.0, 1.84),
        rotation_hz=20.0,
        sync_azimuth_deg=109.0,  # the sweep ends just after the back-left camera
        sync_at_sweep_end=True,
        self_returns=True,
    ),
    "kitti": LidarPreset(
        name="kitti",
        elevations_deg=_hdl64_elevations(),
        azimuth_steps=2000,
        max_range=120.0,
        min_range=2.5,  # KITTI's scans carry no returns from the car itself
        mount=(0.81, 0.0, 1.73),
        rotation_hz=10.0,
        sync_azimuth_deg=0.0,
        sync_at_sweep_end=False,
    ),
    "pandar64": LidarPreset(
        name="pandar64",
        elevations_deg=_pandar64_elevations(),
        azimuth_steps=1800,
        max_range=200.0,
        min_range=1.0,
        mount=(1.0, 0.0, 1.85),
        rotation_hz=10.0,
        sync_azimuth_deg=0.0,
        sync_at_sweep_end=False,
    ),
    "once": LidarPreset(
        name="once",
        elevations_deg=_pandar40_elevations(),
        azimuth_steps=1800,
        max_range=200.0,
        min_range=1.0,
        mount=(1.2, 0.0, 1.95),
        rotation_hz=10.0,
        sync_azimuth_deg=0.0,
        sync_at_sweep_end=False,
        global_trigger=True,
    ),
}


@dataclass
class LidarSweep:
    """One simulated sweep in the lidar frame (arrays aligned per point)."""

    points: np.ndarray  # (N, 3) float32
    intensity: np.ndarray  # (N,) float32, integer-valued 0..255
    ring: np.ndarray  # (N,) uint8
    raw_labels: np.ndarray  # (N,) uint8 nuScenes-lidarseg raw ids
    instance: np.ndarray  # (N,) int32


def beam_directions(preset: LidarPreset, azimuth_phase: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Unit ray directions in the lidar frame in firing order, and the ring of each.

    Args:
        preset: the lidar.
        azimuth_phase: fraction of an azimuth step (0..1) by which this sweep's firings are offset;
            real lidars do not fire at the same azimuths every revolution.

    Returns:
        (R, 3) float64 directions and (R,) uint8 rings, R = azimuth_steps * num_beams.
    """
    step = 360.0 / preset.azimuth_steps
    start = preset.sync_azimuth_deg + (360.0 if preset.sync_at_sweep_end else 180.0)
    az = np.deg2rad(start - step * (np.arange(preset.azimuth_steps) + azimuth_phase))
    el = np.deg2rad(np.asarray(preset.elevations_deg))
    ce, se = np.cos(el), np.sin(el)
    d = np.empty((preset.azimuth_steps, preset.num_beams, 3))
    d[..., 0] = np.cos(az)[:, None] * ce
    d[..., 1] = np.sin(az)[:, None] * ce
    d[..., 2] = se
    ring = np.tile(np.arange(preset.num_beams, dtype=np.uint8), preset.azimuth_steps)
    return d.reshape(-1, 3), ring


def simulate_sweep(
    preset: LidarPreset,
    frame: FrameGeometry,
    map_from_lidar: np.ndarray,
    reflectivity: ReflectivityFn,
    rng: np.random.Generator,
) -> LidarSweep:
    """Cast one sweep and turn the hits into noisy returns.

    Args:
        preset: the lidar.
        frame: scene geometry at the sweep timestamp.
        map_from_lidar: (4, 4) lidar pose in the map frame.
        reflectivity: function (faces, map points) -> reflectivity per hit (lane paint is brighter).
        rng: randomness for noise, dropouts and the azimuth phase.

    Returns:
        The returns in the lidar frame.
    """
    dirs_l, ring = beam_directions(preset, float(rng.random()))
    R, origin = map_from_lidar[:3, :3], map_from_lidar[:3, 3]
    dirs_m = rotate(dirs_l, R)
    hits = frame.cast(origin, dirs_m, max_distance=preset.max_range)
    keep = np.flatnonzero(hits.distance >= preset.min_range)
    idx = hits.ray[keep]
    face = hits.face[keep]
    dist = hits.distance[keep]
    cos = -np.einsum("ij,ij->i", dirs_m[idx], hits.normal[keep])
    cos = np.clip(cos, 0.0, 1.0)
    points_m = origin + dirs_m[idx] * dist[:, None]
    rho = reflectivity(face, points_m)
    mat = frame.face_material[face]
    # Weak echoes (dark, grazing, far) fall below the detection threshold more often; glass and
    # foliage scatter the beam and lose returns too. A lost return leaves no point (no pass-through).
    signal = rho * cos * (50.0 / np.maximum(dist, 1.0)) ** 2
    p_loss = preset.dropout + DROPOUT[mat] + (1.0 - preset.dropout) * np.exp(-signal / 0.003)
    survive = rng.random(len(idx)) >= np.clip(p_loss, 0.0, 1.0)
    ranges = dist + rng.normal(0.0, preset.range_noise, len(idx))
    intensity = 255.0 * rho * cos * (1.0 + rng.normal(0.0, 0.05, len(idx))) + rng.normal(0.0, 0.5, len(idx))
    intensity = np.clip(np.round(intensity), 0.0, 255.0)
    sel = np.nonzero(survive)[0]
    pts = dirs_l[idx[sel]] * ranges[sel, None]
    return LidarSweep(
        points=pts.astype(np.float32),
        intensity=intensity[sel].astype(np.float32),
        ring=ring[idx[sel]],
        raw_labels=frame.face_class[face[sel]].astype(np.uint8),
        instance=frame.face_instance[face[sel]].astype(np.int32),
    )

