"""Materials of the synthetic world: what a surface returns to the lidar and how it looks to a camera.

A material has a lidar reflectivity (0..1, the fraction of the beam returned at normal incidence; it
becomes the 0..255 intensity of nuScenes), a base colour, a procedural texture kind evaluated by
:mod:`lidarssl.synthetic.shading`, and how often the lidar loses the return (glass and black rubber
swallow beams). Materials whose colour differs per object (car paint, clothing, facades, signs) pick
it from a palette with the face's ``variant``.

Reflectivities are chosen so that intensity statistics resemble a real nuScenes sweep (median about
10 on the 0..255 scale): road returns are dark (2..10), walls and cars 15..40, lane paint and
vegetation brighter, and retro-reflective signs and number plates near 255.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class Texture(IntEnum):
    """Procedural texture kinds; each has one vectorised function in :mod:`~lidarssl.synthetic.shading`."""

    PLAIN = 0
    ASPHALT = 1  # noise, patches and lane markings from the street layout
    PAVING = 2  # slabs with joints
    GRASS = 3
    FACADE = 4  # wall colour per building with a grid of windows per floor
    ROOF = 5
    BARK = 6
    FOLIAGE = 7
    PAINT = 8  # palette colour per object, glossy
    GLASS = 9  # dark, reflects the sky a little
    CLOTH = 10
    SKIN = 11
    SIGN = 12
    STRIPES = 13  # red and white diagonal stripes (plastic barriers)
    BUS = 14  # paint with a band of windows
    CONCRETE = 15
    SOIL = 16
    CONE = 17  # orange with white reflective bands


@dataclass(frozen=True)
class Material:
    """One surface type.

    Attributes:
        name: short name, used as the key of :data:`MATERIAL_IDS`.
        reflectivity: lidar return fraction at normal incidence, 0..1.
        color: base linear RGB in 0..1 (palette textures ignore it).
        texture: procedural texture kind.
        dropout: extra probability that the lidar gets no return from this surface.
        specular: strength of a sun highlight (paint, glass).
    """

    name: str
    reflectivity: float
    color: tuple[float, float, float]
    texture: Texture
    dropout: float = 0.0
    specular: float = 0.0


MATERIALS: tuple[Material, ...] = (
    Material("asphalt", 0.06, (0.23, 0.23, 0.24), Texture.ASPHALT),
    Material("paving", 0.12, (0.62, 0.60, 0.57), Texture.PAVING),
    Material("kerb", 0.15, (0.66, 0.65, 0.63), Texture.CONCRETE),
    Material("grass", 0.20, (0.22, 0.38, 0.12), Texture.GRASS),
    Material("facade", 0.10, (0.70, 0.62, 0.52), Texture.FACADE),
    Material("roof", 0.08, (0.30, 0.28, 0.28), Texture.ROOF),
    Material("bark", 0.12, (0.30, 0.22, 0.15), Texture.BARK),
    Material("foliage", 0.20, (0.16, 0.32, 0.10), Texture.FOLIAGE, dropout=0.08),
    Material("paint", 0.20, (0.50, 0.50, 0.50), Texture.PAINT, specular=0.5),
    Material("glass", 0.04, (0.06, 0.08, 0.10), Texture.GLASS, dropout=0.45, specular=0.9),
    Material("rubber", 0.03, (0.05, 0.05, 0.05), Texture.PLAIN, dropout=0.15),
    Material("metal", 0.25, (0.55, 0.56, 0.58), Texture.PLAIN, specular=0.3),
    Material("sign", 1.00, (0.85, 0.85, 0.85), Texture.SIGN),
    Material("cone", 0.60, (0.95, 0.35, 0.05), Texture.CONE),
    Material("barrier", 0.40, (0.85, 0.85, 0.85), Texture.STRIPES),
    Material("cloth", 0.12, (0.30, 0.30, 0.35), Texture.CLOTH),
    Material("skin", 0.15, (0.80, 0.62, 0.50), Texture.SKIN),
    Material("bus", 0.20, (0.80, 0.80, 0.80), Texture.BUS, specular=0.3),
    Material("concrete", 0.16, (0.58, 0.57, 0.55), Texture.CONCRETE),
    Material("yellow_paint", 0.35, (0.88, 0.68, 0.06), Texture.PLAIN, specular=0.3),
    Material("dark_metal", 0.08, (0.12, 0.12, 0.13), Texture.PLAIN),
    Material("soil", 0.12, (0.36, 0.29, 0.20), Texture.SOIL),
    Material("cargo", 0.25, (0.86, 0.86, 0.84), Texture.PLAIN),
    Material("plate", 1.00, (0.92, 0.92, 0.90), Texture.PLAIN),
    Material("lamp", 0.30, (0.95, 0.93, 0.80), Texture.PLAIN),
    Material("island", 0.15, (0.60, 0.60, 0.58), Texture.CONCRETE),
    Material("ego_paint", 0.10, (0.80, 0.80, 0.82), Texture.PLAIN, specular=0.4),
)

#: Material name -> id (index into :data:`MATERIALS`).
MATERIAL_IDS: dict[str, int] = {m.name: i for i, m in enumerate(MATERIALS)}

#: (M,) float32 lidar reflectivity per material id.
REFLECTIVITY = np.array([m.reflectivity for m in MATERIALS], np.float32)
#: (M,) float32 extra dropout probability per material id.
DROPOUT = np.array([m.dropout for m in MATERIALS], np.float32)
#: (M, 3) float32 base colour per material id.
BASE_COLOR = np.array([m.color for m in MATERIALS], np.float32)
#: (M,) int texture kind per material id.
TEXTURE_KIND = np.array([int(m.texture) for m in MATERIALS], np.int64)
#: (M,) float32 specular strength per material id.
SPECULAR = np.array([m.specular for m in MATERIALS], np.float32)

#: Lane paint reflects much more than asphalt (glass beads); used for road returns on a marking.
MARKING_REFLECTIVITY = 0.9

# Palettes indexed by ``variant % len(palette)``; colours in linear RGB 0..1.
CAR_PAINT = np.array([
    [0.85, 0.85, 0.86], [0.04, 0.04, 0.05], [0.55, 0.56, 0.58], [0.30, 0.31, 0.33], [0.92, 0.92, 0.90],
    [0.55, 0.06, 0.05], [0.08, 0.16, 0.42], [0.05, 0.07, 0.18], [0.70, 0.68, 0.62], [0.12, 0.25, 0.14],
    [0.80, 0.80, 0.82], [0.10, 0.10, 0.11], [0.85, 0.55, 0.10], [0.45, 0.48, 0.52], [0.20, 0.30, 0.55],
], np.float32)
FACADE_COLORS = np.array([
    [0.72, 0.64, 0.54], [0.55, 0.28, 0.20], [0.78, 0.76, 0.72], [0.52, 0.52, 0.52], [0.84, 0.80, 0.70],
    [0.62, 0.45, 0.35], [0.40, 0.42, 0.45], [0.75, 0.70, 0.62], [0.86, 0.86, 0.84], [0.48, 0.36, 0.30],
], np.float32)
CLOTH_COLORS = np.array([
    [0.08, 0.08, 0.10], [0.15, 0.18, 0.35], [0.45, 0.45, 0.48], [0.60, 0.10, 0.10], [0.85, 0.85, 0.85],
    [0.20, 0.35, 0.20], [0.55, 0.45, 0.30], [0.10, 0.12, 0.25], [0.70, 0.55, 0.15], [0.30, 0.22, 0.18],
], np.float32)
SKIN_COLORS = np.array([
    [0.87, 0.70, 0.58], [0.74, 0.55, 0.42], [0.55, 0.38, 0.27], [0.36, 0.24, 0.17], [0.93, 0.78, 0.67],
], np.float32)
SIGN_COLORS = np.array([
    [0.10, 0.25, 0.70], [0.80, 0.08, 0.08], [0.92, 0.92, 0.92], [0.95, 0.75, 0.05], [0.05, 0.45, 0.20],
], np.float32)
BUS_COLORS = np.array([
    [0.85, 0.85, 0.85], [0.75, 0.12, 0.10], [0.10, 0.35, 0.65], [0.15, 0.45, 0.25], [0.90, 0.70, 0.10],
], np.float32)
