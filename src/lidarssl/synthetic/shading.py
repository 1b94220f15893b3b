"""Surface appearance: procedural textures, lighting and sky for cameras; reflectivity for the lidar.

Textures are functions of the **map-frame** hit position, the surface normal and the face's
``variant`` (per-object style seed), evaluated for all pixels of one texture kind at once. They are
what lets an image teacher tell apart classes that lidar geometry confuses: dark asphalt with white
and yellow lane paint, light paving slabs with joints, green grass, facades with window grids, car
paint in one colour per car with dark windows.

Lighting is Lambertian from the sun plus a sky ambient term that is brighter on upward faces, a
specular highlight on paint and glass, optional hard shadows (one shadow ray per lit pixel), and
aerial perspective that fades distant surfaces towards the horizon colour. Colours are computed in
linear RGB and gamma-encoded at the end.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lidarssl.synthetic.layout import StreetLayout
from lidarssl.synthetic.materials import (
    BASE_COLOR,
    BUS_COLORS,
    CAR_PAINT,
    CLOTH_COLORS,
    FACADE_COLORS,
    MARKING_REFLECTIVITY,
    MATERIAL_IDS,
    REFLECTIVITY,
    SIGN_COLORS,
    SKIN_COLORS,
    SPECULAR,
    TEXTURE_KIND,
    Texture,
)
from lidarssl.synthetic.noise import fractal2, hash01, noise2, variant_random
from lidarssl.synthetic.raycast import FrameGeometry

_ASPHALT = MATERIAL_IDS["asphalt"]
_WHITE_PAINT = np.array([0.80, 0.80, 0.78], np.float32)
_YELLOW_PAINT = np.array([0.78, 0.58, 0.10], np.float32)
_WINDOW = np.array([0.07, 0.09, 0.12], np.float32)
SKY_HORIZON = np.array([0.78, 0.84, 0.90], np.float32)
SKY_ZENITH = np.array([0.30, 0.48, 0.80], np.float32)


def lidar_reflectivity(frame: FrameGeometry, layout: StreetLayout) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A function (faces, map points) -> reflectivity per hit, lane paint included."""

    def reflectivity(face: np.ndarray, points: np.ndarray) -> np.ndarray:
        mat = frame.face_material[face]
        rho = REFLECTIVITY[mat].astype(np.float64)
        road = np.nonzero(mat == _ASPHALT)[0]
        if len(road):
            white, yellow = layout.markings(points[road, 0], points[road, 1])
            rho[road[white | yellow]] = MARKING_REFLECTIVITY
        return rho

    return reflectivity


def _wall_uv(p: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Texture coordinates on vertical surfaces: (horizontal along the wall, height)."""
    u = np.where(np.abs(n[:, 0]) > np.abs(n[:, 1]), p[:, 1], p[:, 0])
    return u, p[:, 2]


def _ground_uv(p: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Planar projection along the dominant normal axis (top faces use x, y)."""
    up = np.abs(n[:, 2]) > 0.6
    u_w, v_w = _wall_uv(p, n)
    return np.where(up, p[:, 0], u_w), np.where(up, p[:, 1], v_w)


def _palette(colors: np.ndarray, variant: np.ndarray) -> np.ndarray:
    return colors[variant.astype(np.int64) % len(colors)]


def _mod(a: np.ndarray, b: float) -> np.ndarray:
    return a - np.floor(a / b) * b


# Texture functions share one signature: map-frame points (N, 3), normals (N, 3) facing the viewer,
# per-face variants (N,), base colours (N, 3) of the material, and the street layout; they return
# (N, 3) float32 linear albedo.


def _asphalt(p: np.ndarray, n: np.ndarray, var: np.ndarray, base: np.ndarray, layout: StreetLayout) -> np.ndarray:
    x, y = p[:, 0].astype(np.float32), p[:, 1].astype(np.float32)
    grain = 1.0 + 0.10 * noise2(x * 1.7, y * 1.7) + 0.07 * noise2(x * 9.0, y * 9.0)
    grain[noise2(x / 9.0 + 50, y / 9.0 + 20) > 1.1] *= 0.8  # repaired patches
    col = base * grain[:, None]
    white, yellow = layout.markings(x, y)
    wear = noise2(x * 3.0 + 7, y * 3.0 + 3) > -1.3  # paint worn away in places
    col[white & wear] = _WHITE_PAINT * (0.95 + 0.05 * noise2(x[white & wear] * 5, y[white & wear] * 5))[:, None]
    col[yellow & wear] = _YELLOW_PAINT
    return col


def _paving(p: np.ndarray, n: np.ndarray, var: np.ndarray, base: np.ndarray, layout: StreetLayout) -> np.ndarray:
    u, v = _ground_uv(p, n)
    plaza = (var % 2) == 1
    size = np.where(plaza, 0.4, 0.6)
    iu, iv = np.floor(u / size), np.floor(v / size)
    fu, fv = u / size - iu, v / size - iv
    joint = (np.minimum(fu, 1 - fu) < 0.04) | (np.minimum(fv, 1 - fv) < 0.04)
    slab = 0.9 + 0.2 * hash01(iu, iv, 7)
    tint = np.where(plaza[:, None], np.array([0.72, 0.58, 0.50], np.float32), base)
    shade = slab * (1.0 + 0.05 * noise2(u * 4.0, v * 4.0)) * np.where(joint, 0.62, 1.0)
    return tint * shade[:, None]


def _grass(p: np.ndarray, n: np.ndarray, var: np.ndarray, base: np.ndarray, layout: StreetLayout) -> np.ndarray:
    x, y = p[:, 0].astype(np.float32), p[:, 1].astype(np.float32)
    dry = np.clip(0.5 + 0.5 * noise2(x / 5.0 + 3, y / 5.0 + 9), 0, 1)[:, None]
    col = base * (1 - dry) + np.array([0.36, 0.38, 0.16], np.float32) * dry
    speck = 1.0 + 0.22 * fractal2(x * 5.0, y * 5.0, 2)
    return col * speck[:, None]


def _facade(p: np.ndarray, n: np.ndarray, var: np.ndarray, base: np.ndarray, layout: StreetLayout) -> np.ndarray:
    u, z = _wall_uv(p, n)
    v64 = var.astype(np.int64)
    wall = _palette(FACADE_COLORS, var)
    floor_h = 3.0 + 0.6 * variant_random(var, 1)
    spacing = 2.0 + 1.6 * variant_random(var, 2)
    win_w = 0.35 + 0.3 * variant_random(var, 3)
    win_h = 0.4 + 0.25 * variant_random(var, 4)
    cu = u / spacing
    cz = z / floor_h
    fu, fz = cu - np.floor(cu), cz - np.floor(cz)
    window = (np.abs(fu - 0.5) < win_w / 2) & (np.abs(fz - 0.55) < win_h / 2) & (z > 0.9)
    # Ground floors are shop fronts on some buildings: wider, taller windows.
    shop = (variant_random(var, 5) < 0.4) & (z > 0.3) & (z < floor_h * 0.8) & (np.abs(fu - 0.5) < 0.42)
    window |= shop
    pane = hash01(np.floor(cu).astype(np.int64), np.floor(cz).astype(np.int64), v64)
    glass = _WINDOW * (0.8 + 1.6 * pane[:, None] ** 3)
    weather = 1.0 + 0.07 * noise2(u * 0.8, z * 0.8)
    col = wall * weather[:, None]
    # Window sills and frames: a slightly lighter rim around each window.
    rim = (np.abs(fu - 0.5) < win_w / 2 + 0.04) & (np.abs(fz - 0.55) < win_h / 2 + 0.05) & (z > 0.9) & ~window
    col[rim] = np.minimum(col[rim] * 1.25, 1.0)
    col[window] = glass[window]
    return col


def _roof(p: np.ndarray, n: np.ndarray, var: np.ndarray, base: np.ndarray, layout: StreetLayout) -> np.ndarray:
    return base * (1.0 + 0.15 * fractal2(p[:, 0] * 0.7, p[:, 1] * 0.7, 2))[:, None]


def _bark(p: np.ndarray, n: np.ndarray, var: np.ndarray, base: np.ndarray, layout: StreetLayout) -> np.ndarray:
    a = (p[:, 0] + p[:, 1]) * 6.0
    return base * (1.0 + 0.25 * noise2(a, p[:, 2] * 0.6))[:, None]


def _foliage(p: np.ndarray, n: np.ndarray, var: np.ndarray, base: np.ndarray, layout: StreetLayout) -> np.ndarray:
    h = variant_random(var, 6)[:, None]
    tint = base * (0.8 + 0.45 * h) + np.array([0.06, 0.04, 0.0], np.float32) * (h > 0.8)
    x, y, z = (p[:, k].astype(np.float32) for k in range(3))
    blot = np.where(noise2(x * 2.2 + z, y * 2.2 - z) > -0.1, np.float32(1.2), np.float32(0.65))
    return tint * blot[:, None]


def _paint(p: np.ndarray, n: np.ndarray, var: np.ndarray, base: np.ndarray, layout: StreetLayout) -> np.ndarray:
    return _palette(CAR_PAINT, var)


def _glass(p: np.ndarray, n: np.ndarray, var: np.ndarray, base: np.ndarray, layout: StreetLayout) -> np.ndarray:
    return base


def _cloth(p: np.ndarray, n: np.ndarray, var: np.ndarray, base: np.ndarray, layout: StreetLayout) -> np.ndarray:
    return _palette(CLOTH_COLORS, var) * (1.0 + 0.05 * noise2(p[:, 0] * 10, p[:, 2] * 10))[:, None]


def _skin(p: np.ndarray, n: np.ndarray, var: np.ndarray, base: np.ndarray, layout: StreetLayout) -> np.ndarray:
    return _palette(SKIN_COLORS, var)


def _sign(p: np.ndarray, n: np.ndarray, var: np.ndarray, base: np.ndarray, layout: StreetLayout) -> np.ndarray:
    return _palette(SIGN_COLORS, var)


def _stripes(p: np.ndarray, n: np.ndarray, var: np.ndarray, base: np.ndarray, layout: StreetLayout) -> np.ndarray:
    u, z = _wall_uv(p, n)
    col = base.copy()
    col[_mod(u + z, 0.6) < 0.3] = (0.75, 0.08, 0.06)
    return col


def _cone(p: np.ndarray, n: np.ndarray, var: np.ndarray, base: np.ndarray, layout: StreetLayout) -> np.ndarray:
    col = base.copy()
    col[_mod(p[:, 2], 0.28) < 0.09] = (0.92, 0.92, 0.92)
    return col


def _bus(p: np.ndarray, n: np.ndarray, var: np.ndarray, base: np.ndarray, layout: StreetLayout) -> np.ndarray:
    u, z = _wall_uv(p, n)
    col = _palette(BUS_COLORS, var).copy()
    band = (z > 1.25) & (z < 2.6) & (_mod(u, 1.4) > 0.12) & (np.abs(n[:, 2]) < 0.5)
    col[band] = _WINDOW * 1.4
    col[(z > 0.35) & (z < 0.55)] *= 0.6  # a darker skirt
    return col


def _concrete(p: np.ndarray, n: np.ndarray, var: np.ndarray, base: np.ndarray, layout: StreetLayout) -> np.ndarray:
    u, v = _ground_uv(p, n)
    return base * (1.0 + 0.10 * fractal2(u * 1.5, v * 1.5, 2) + 0.04 * noise2(u * 8, v * 8))[:, None]


def _soil(p: np.ndarray, n: np.ndarray, var: np.ndarray, base: np.ndarray, layout: StreetLayout) -> np.ndarray:
    return base * (1.0 + 0.2 * fractal2(p[:, 0] * 2, p[:, 1] * 2 + p[:, 2], 2))[:, None]


def _plain(p: np.ndarray, n: np.ndarray, var: np.ndarray, base: np.ndarray, layout: StreetLayout) -> np.ndarray:
    return base * (1.0 + 0.03 * noise2(p[:, 0] * 3 + p[:, 2], p[:, 1] * 3))[:, None]


_TEXTURES = {
    Texture.PLAIN: _plain, Texture.ASPHALT: _asphalt, Texture.PAVING: _paving, Texture.GRASS: _grass,
    Texture.FACADE: _facade, Texture.ROOF: _roof, Texture.BARK: _bark, Texture.FOLIAGE: _foliage,
    Texture.PAINT: _paint, Texture.GLASS: _glass, Texture.CLOTH: _cloth, Texture.SKIN: _skin,
    Texture.SIGN: _sign, Texture.STRIPES: _stripes, Texture.BUS: _bus, Texture.CONCRETE: _concrete,
    Texture.SOIL: _soil, Texture.CONE: _cone,
}


def albedo(frame: FrameGeometry, face: np.ndarray, points: np.ndarray, normals: np.ndarray, layout: StreetLayout) -> np.ndarray:
    """(N, 3) float32 linear surface colour of each hit, textures applied."""
    mat = frame.face_material[face]
    var = frame.face_variant[face]
    kind = TEXTURE_KIND[mat]
    out = np.empty((len(face), 3), np.float32)
    # One vectorised call per texture kind present (a dozen at most), never one per object.
    for k in np.flatnonzero(np.bincount(kind, minlength=len(Texture))):
        sel = np.flatnonzero(kind == k)
        base = BASE_COLOR[mat[sel]]
        out[sel] = _TEXTURES[Texture(k)](points[sel], normals[sel], var[sel], base, layout)
    return out


def sky(directions: np.ndarray, sun: np.ndarray) -> np.ndarray:
    """(N, 3) linear sky colour for rays that hit nothing: horizon-to-zenith gradient and a sun glow."""
    up = np.clip(directions[:, 2], 0.0, 1.0)[:, None]
    t = np.sqrt(up)
    col = SKY_HORIZON * (1 - t) + SKY_ZENITH * t
    glow = np.clip(directions @ sun.astype(directions.dtype), 0.0, 1.0) ** 64
    return col + 0.6 * glow[:, None]


def shade(
    frame: FrameGeometry,
    face: np.ndarray,
    points: np.ndarray,
    normals: np.ndarray,
    view: np.ndarray,
    distance: np.ndarray,
    sun: np.ndarray,
    layout: StreetLayout,
    lit: np.ndarray | None = None,
) -> np.ndarray:
    """(N, 3) float32 linear radiance of each hit.

    Args:
        frame: scene geometry at the camera timestamp.
        face, points, normals: the hits (normals facing the camera).
        view: (N, 3) unit ray directions (camera to surface).
        distance: (N,) hit distances, for aerial perspective.
        sun: (3,) unit vector towards the sun.
        layout: street plan (lane markings).
        lit: (N,) False where the sun is occluded (shadows); None for no shadows.
    """
    col = albedo(frame, face, points, normals, layout)
    sun32 = sun.astype(np.float32)
    ndl = np.clip(normals @ sun32, 0.0, None)
    if lit is not None:
        ndl *= lit
    light = np.float32(0.32) + np.float32(0.12) * normals[:, 2] + np.float32(0.85) * ndl
    out = col * light[:, None]
    spec_k = SPECULAR[frame.face_material[face]]
    shiny = np.flatnonzero(spec_k > 0)
    if len(shiny):
        nrm, v, k = normals[shiny], view[shiny].astype(np.float32), spec_k[shiny]
        h = sun32 - v
        h /= np.linalg.norm(h, axis=1, keepdims=True)
        spec = np.clip(np.einsum("ij,ij->i", nrm, h), 0, 1) ** 48 * k * (ndl[shiny] > 0)
        # Glass and paint also mirror the sky at grazing angles.
        fres = (1 - np.clip(-np.einsum("ij,ij->i", nrm, v), 0, 1)) ** 4 * k
        out[shiny] += (0.9 * spec)[:, None] + (0.35 * fres)[:, None] * SKY_HORIZON
    fog = np.exp(distance.astype(np.float32) * np.float32(-1.0 / 450.0))[:, None]
    return out * fog + SKY_HORIZON * (1 - fog)
