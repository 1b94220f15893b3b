"""Calibrated pinhole cameras that render the scene by casting one ray per pixel.

**Camera frame**: the usual optical frame, x right, y down, z forward; pixel (u, v) has its centre at
(u + 0.5, v + 0.5), so projecting a point with ``K`` and flooring gives the pixel that saw it.
Cameras are mounted on the ego vehicle (positions in the ego frame: x forward, y left, z up from the
ground under the rear axle) and rendered from the ego pose at their own timestamp.

Presets: ``nuscenes`` is a six-camera ring like nuScenes' (70 degree horizontal field of view, 110
for CAM_BACK, default 480x270); ``kitti`` is KITTI's front colour camera (image_2) with its
1242x375 intrinsics scaled by one half by default; ``kitti360`` is KITTI-360's rectified front stereo pair
(image_00 left, image_01 right, 1408x376 halved); ``once`` is ONCE's seven cameras (cam01 ... cam09, 480x255);
``none`` has no camera.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

import numpy as np

from lidarssl.synthetic.layout import StreetLayout
from lidarssl.synthetic.meshes import rotate
from lidarssl.synthetic.raycast import FrameGeometry
from lidarssl.synthetic.shading import shade, sky

#: Raw class written into class images where a pixel sees the sky.
SKY_CLASS = 255


@dataclass(frozen=True)
class CameraSpec:
    """One camera: where it sits on the ego vehicle and its intrinsics.

    Attributes:
        name: e.g. ``CAM_FRONT``.
        position: (x, y, z) of the optical centre in the ego frame, metres.
        yaw_deg: heading of the optical axis, counter-clockwise from the ego's x axis.
        pitch_deg: tilt of the optical axis, positive looking down.
        width, height: image size in pixels.
        fx, fy, cx, cy: intrinsics in pixels.
    """

    name: str
    position: tuple[float, float, float]
    yaw_deg: float
    pitch_deg: float
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @property
    def K(self) -> np.ndarray:
        """(3, 3) intrinsic matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def ego_from_cam(self) -> np.ndarray:
        """4x4 transform from the optical frame to the ego frame."""
        yaw, pitch = np.deg2rad(self.yaw_deg), np.deg2rad(self.pitch_deg)
        fwd = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), -np.sin(pitch)])
        left = np.array([-np.sin(yaw), np.cos(yaw), 0.0])
        up = np.cross(fwd, left)
        T = np.eye(4)
        T[:3, :3] = np.stack([-left, -up, fwd], axis=1)  # columns: optical x (right), y (down), z
        T[:3, 3] = self.position
        return T

    def resized(self, width: int, height: int) -> CameraSpec:
        """The same camera with its image scaled to ``width`` x ``height`` (intrinsics scaled along)."""
        sx, sy = width / self.width, height / self.height
        return replace(self, width=width, height=height, fx=self.fx * sx, fy=self.fy * sy, cx=self.cx * sx, cy=self.cy * sy)


def _from_fov(name: str, position: tuple[float, float, float], yaw: float, hfov: float, width: int, height: int) -> CameraSpec:
    f = (width / 2) / np.tan(np.deg2rad(hfov) / 2)
    return CameraSpec(name, position, yaw, 0.0, width, height, float(f), float(f), width / 2, height / 2)


_NUSC = [  # name, position in the ego frame (close to nuScenes' calibration), yaw, horizontal FOV
    ("CAM_FRONT", (1.70, 0.02, 1.51), 0.0, 70.0),
    ("CAM_FRONT_RIGHT", (1.55, -0.49, 1.50), -55.0, 70.0),
    ("CAM_BACK_RIGHT", (1.03, -0.48, 1.56), -110.0, 70.0),
    ("CAM_BACK", (0.03, 0.0, 1.57), 180.0, 110.0),
    ("CAM_BACK_LEFT", (1.04, 0.48, 1.56), 110.0, 70.0),
    ("CAM_FRONT_LEFT", (1.52, 0.49, 1.51), 55.0, 70.0),
]

_ONCE = [  # name, position in the ego frame, yaw, horizontal FOV
    ("cam01", (1.45, 0.0, 1.95), 0.0, 70.0),
    ("cam03", (1.45, 0.10, 1.98), 0.0, 40.0),
    ("cam05", (1.10, 0.45, 1.95), 125.0, 70.0),
    ("cam06", (1.35, 0.45, 1.95), 60.0, 70.0),
    ("cam07", (1.35, -0.45, 1.95), -60.0, 70.0),
    ("cam08", (1.10, -0.45, 1.95), -125.0, 70.0),
    ("cam09", (0.20, 0.0, 1.95), 180.0, 70.0),
]

#: Camera rigs by name, at their default resolution.
CAMERA_PRESETS: dict[str, tuple[CameraSpec, ...]] = {
    "nuscenes": tuple(_from_fov(n, p, y, f, 480, 270) for n, p, y, f in _NUSC),
    # KITTI image_2: 1242x375 with fx = 721.5; mounted 0.27 m ahead of and 8 cm below the lidar.
    "kitti": (CameraSpec("image_2", (1.08, 0.06, 1.65), 0.0, 0.0, 1242, 375, 721.54, 721.54, 609.56, 172.85).resized(621, 188),),
    # KITTI-360's rectified stereo pair image_00 / image_01: 1408x376 with fx = 552.55, a 0.6 m baseline; halved.
    "kitti360": tuple(
        CameraSpec(name, (1.08, y, 1.65), 0.0, 0.0, 1408, 376, 552.55, 552.55, 682.05, 238.77).resized(704, 188)
        for name, y in (("image_00", 0.3), ("image_01", -0.3))),
    # ONCE's seven cameras (1920x1020, a quarter of the size by default): two front cameras (cam03 narrower) and
    # five around; positions and fields of view approximate the published rig.
    "once": tuple(_from_fov(n, p, y, f, 480, 255) for n, p, y, f in _ONCE),
    "none": (),
}


def camera_rig(preset: str, image_size: tuple[int, int] | None = None) -> list[CameraSpec]:
    """The cameras of ``preset`` at ``image_size`` = (width, height) when given.

    nuScenes-like and ONCE cameras keep their horizontal field of view and square pixels at any size (the
    vertical field of view follows the aspect ratio); the KITTI and KITTI-360 cameras scale their calibrated
    intrinsics, per axis when the aspect ratio changes.

    Raises:
        KeyError: unknown preset (the message lists the known ones).
    """
    if preset not in CAMERA_PRESETS:
        raise KeyError(f"unknown camera preset {preset!r}; known: {sorted(CAMERA_PRESETS)}")
    if image_size is None:
        return list(CAMERA_PRESETS[preset])
    w, h = int(image_size[0]), int(image_size[1])
    if preset in ("nuscenes", "once"):
        return [_from_fov(n, p, y, f, w, h) for n, p, y, f in (_NUSC if preset == "nuscenes" else _ONCE)]
    return [c.resized(w, h) for c in CAMERA_PRESETS[preset]]


@cache
def _pixel_rays(spec: CameraSpec) -> tuple[np.ndarray, np.ndarray]:
    """Unit ray directions in the optical frame (H*W, 3), row-major, and a vignetting map (H*W,)."""
    v, u = np.mgrid[0:spec.height, 0:spec.width].astype(np.float64) + 0.5
    d = np.stack([(u - spec.cx) / spec.fx, (v - spec.cy) / spec.fy, np.ones_like(u)], -1).reshape(-1, 3)
    d = (d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32)  # Embree works in float32
    r2 = (((u - spec.cx) / spec.width) ** 2 + ((v - spec.cy) / spec.width) ** 2).reshape(-1)
    vignette = (1.0 - 0.35 * r2).astype(np.float32)
    d.setflags(write=False)
    vignette.setflags(write=False)
    return d, vignette


_GAMMA_BITS = 4096


@cache
def _gamma_table() -> np.ndarray:
    """Linear 0..1 (12-bit codes) to gamma-encoded 0..255 float32."""
    t = (np.linspace(0.0, 1.0, _GAMMA_BITS) ** (1 / 2.2) * 255.0).astype(np.float32)
    t.setflags(write=False)
    return t


@cache
def _sensor_noise(n: int) -> np.ndarray:
    """A fixed field of 2n Gaussian noise values (sigma 1.2 grey levels); frames read it at random offsets."""
    field = np.random.default_rng(2718).standard_normal(2 * n, dtype=np.float32) * np.float32(1.2)
    field.setflags(write=False)
    return field


def _dynamic_pixels(spec: CameraSpec, map_from_cam: np.ndarray, boxes: np.ndarray) -> np.ndarray | None:
    """Row-major indices of the pixels whose rays may hit a moving object (None: possibly all).

    Each object's box is projected to its pixel rectangle; the union of rectangles is painted with
    a 2-D difference array (four scattered adds and two cumulative sums), with no per-object loop.
    """
    n = len(boxes)
    if n == 0:
        return np.zeros(0, np.int64)
    lo, hi = boxes[:, 0] - 0.05, boxes[:, 1] + 0.05
    sel = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    corners = np.where(sel[None, :, :] == 0, lo[:, None, :], hi[:, None, :])  # (K, 8, 3)
    cam_from_map = np.linalg.inv(map_from_cam)
    pc = corners @ cam_from_map[:3, :3].T + cam_from_map[:3, 3]
    near = pc[..., 2] <= 0.05
    if (near.any(axis=1) & ~near.all(axis=1)).any():
        return None  # a box straddles the image plane: its projection is unbounded
    front = ~near.all(axis=1)
    pc = pc[front]
    if len(pc) == 0:
        return np.zeros(0, np.int64)
    u = spec.fx * pc[..., 0] / pc[..., 2] + spec.cx
    v = spec.fy * pc[..., 1] / pc[..., 2] + spec.cy
    W, H = spec.width, spec.height
    u0 = np.clip(np.floor(u.min(axis=1)), 0, W).astype(np.int64)
    u1 = np.clip(np.ceil(u.max(axis=1)), 0, W).astype(np.int64)
    v0 = np.clip(np.floor(v.min(axis=1)), 0, H).astype(np.int64)
    v1 = np.clip(np.ceil(v.max(axis=1)), 0, H).astype(np.int64)
    ok = (u1 > u0) & (v1 > v0)
    if not ok.any():
        return np.zeros(0, np.int64)
    u0, u1, v0, v1 = u0[ok], u1[ok], v0[ok], v1[ok]
    diff = np.zeros((H + 1, W + 1), np.int32)
    np.add.at(diff, (v0, u0), 1)
    np.add.at(diff, (v0, u1), -1)
    np.add.at(diff, (v1, u0), -1)
    np.add.at(diff, (v1, u1), 1)
    covered = np.cumsum(np.cumsum(diff, axis=0), axis=1)[:H, :W] > 0
    return np.flatnonzero(covered)


def _sunlit(
    spec: CameraSpec, frame: FrameGeometry, idx: np.ndarray, pts: np.ndarray, nrm: np.ndarray, dist: np.ndarray,
    sun: np.ndarray,
) -> np.ndarray:
    """(H,) 1.0 where a hit sees the sun, 0.0 in shadow or facing away; hits at pixels ``idx``.

    Shadow rays go first to every other pixel of every other row; a remaining pixel copies the
    answer when all its (two or four) sampled neighbours are sunward surfaces that agree, and casts
    its own ray otherwise, so shadow edges and object borders stay exact at a third of the rays.
    Surfaces beyond 150 m are left unshadowed.
    """
    W, H = spec.width, spec.height
    facing = (nrm @ sun.astype(np.float32) > 0) & (dist < 150.0)
    lit = np.zeros(len(idx), np.float32)

    def cast(sel: np.ndarray) -> None:
        if len(sel):
            lit[sel] = ~frame.occluded(pts[sel] + nrm[sel] * 0.03, sun)

    row, col = np.divmod(idx, W)
    coarse = facing & (row % 2 == 0) & (col % 2 == 0)
    cast(np.flatnonzero(coarse))
    # Sampled state on a padded grid: -1 nothing to shade there, 0/1 shadow/sun at sampled pixels.
    state = np.full((H + 2) * (W + 2), -1, np.int8)
    state[(row[coarse]) * (W + 2) + col[coarse]] = lit[coarse].astype(np.int8)
    grid = state.reshape(H + 2, W + 2)[0::2, 0::2]  # the samples, one per 2x2 block corner

    def corner(dr: int, dc: int) -> np.ndarray:
        """The sample dr, dc blocks down/right of each pixel's block, on the full image grid."""
        g = grid[dr:dr + (H + 1) // 2, dc:dc + (W + 1) // 2]
        return np.repeat(np.repeat(g, 2, axis=0), 2, axis=1)[:H, :W]

    a, b, c, d = corner(0, 0), corner(0, 1), corner(1, 0), corner(1, 1)
    odd_r = (np.arange(H) % 2 == 1)[:, None]
    odd_c = (np.arange(W) % 2 == 1)[None, :]
    # Even rows (columns) lie between two samples only: their other "neighbours" repeat those.
    b = np.where(odd_c, b, a)
    c = np.where(odd_r, c, a)
    d = np.where(odd_r, np.where(odd_c, d, c), b)
    agree = (a >= 0) & (a == b) & (a == c) & (a == d)
    rest = np.flatnonzero(facing & ~coarse)
    ok = agree.reshape(-1)[idx[rest]]
    lit[rest[ok]] = a.reshape(-1)[idx[rest[ok]]]
    cast(rest[~ok])
    return lit


@dataclass
class CameraRender:
    """What one camera saw.

    Attributes:
        rgb: (H, W, 3) uint8 image.
        raw_class: (H, W) uint8 nuScenes-lidarseg raw id of the surface seen, :data:`SKY_CLASS` for sky.
        instance: (H, W) int32 instance id of the surface seen (0 for stuff and sky).
        depth: (H, W) float32 depth along the optical axis, metres; inf for sky.
    """

    rgb: np.ndarray
    raw_class: np.ndarray
    instance: np.ndarray
    depth: np.ndarray


def render(
    spec: CameraSpec,
    frame: FrameGeometry,
    map_from_cam: np.ndarray,
    sun: np.ndarray,
    layout: StreetLayout,
    rng: np.random.Generator,
    shadows: bool = True,
) -> CameraRender:
    """Render one image by ray casting.

    Args:
        spec: the camera.
        frame: scene geometry at the camera timestamp.
        map_from_cam: (4, 4) optical frame to map frame at the camera timestamp.
        sun: (3,) unit vector towards the sun, map frame.
        layout: street plan (lane markings).
        rng: randomness for exposure and sensor noise.
        shadows: shade with sun shadows (shadow rays for about a third of the sunlit pixels).

    Returns:
        The image with per-pixel class, instance and depth.
    """
    dirs_c, vignette = _pixel_rays(spec)
    R, origin = map_from_cam[:3, :3], map_from_cam[:3, 3]
    dirs = rotate(dirs_c, R)
    hits = frame.cast(origin, dirs, dynamic_rays=_dynamic_pixels(spec, map_from_cam, frame.dynamic_boxes))
    idx, face, nrm = hits.ray, hits.face, hits.normal
    dist = hits.distance.astype(np.float32)
    # float32 map coordinates are exact to 0.1 mm within a few hundred metres: plenty for textures.
    pts = origin.astype(np.float32) + dirs[idx] * dist[:, None]
    lit = _sunlit(spec, frame, idx, pts, nrm, dist, sun) if shadows else None
    n_pix = spec.width * spec.height
    linear = np.empty((n_pix, 3), np.float32)
    miss = np.ones(n_pix, bool)
    miss[idx] = False
    linear[miss] = sky(dirs[miss], sun)
    linear[idx] = shade(frame, face, pts, nrm, dirs[idx], dist, sun, layout, lit)
    exposure = np.float32(rng.uniform(0.9, 1.1))
    # Gamma through a 12-bit table, then sensor noise from a fixed field at a random offset:
    # both an order of magnitude cheaper than pow() and fresh Gaussian draws per pixel.
    linear *= (vignette * (exposure * np.float32(_GAMMA_BITS - 1)))[:, None]
    np.clip(linear, 0.0, _GAMMA_BITS - 1, out=linear)
    linear += np.float32(0.5)
    srgb = _gamma_table().take(linear.astype(np.int32))
    field = _sensor_noise(3 * n_pix)
    start = int(rng.integers(0, len(field) - 3 * n_pix))
    srgb += field[start:start + 3 * n_pix].reshape(n_pix, 3)
    srgb += np.float32(0.5)
    np.clip(srgb, 0, 255, out=srgb)
    rgb = srgb.astype(np.uint8).reshape(spec.height, spec.width, 3)

    raw = np.full(n_pix, SKY_CLASS, np.uint8)
    raw[idx] = frame.face_class[face]
    inst = np.zeros(n_pix, np.int32)
    inst[idx] = frame.face_instance[face]
    depth = np.full(n_pix, np.inf, np.float32)
    depth[idx] = dist * dirs_c[idx, 2]
    shape = (spec.height, spec.width)
    return CameraRender(rgb, raw.reshape(shape), inst.reshape(shape), depth.reshape(shape))
