"""Object models: vehicles, people, vegetation, street furniture and buildings, built from primitives.

Every builder returns a :class:`Model` in the object's **local frame**: x forward, y left, z up, the
origin on the ground at the centre of the footprint. A model is split into rigid parts; a part may
swing about a pivot (legs and arms of walking pedestrians), which :mod:`lidarssl.synthetic.actors`
evaluates per timestamp. Dimensions follow the typical boxes of the nuScenes classes (car about
4.6 x 1.9 x 1.7 m, bus about 11 x 2.9 x 3.3 m, pedestrian about 0.7 x 0.7 x 1.75 m), with random
variation per instance.

Labels are nuScenes-lidarseg raw ids. Riders carry the label of their bicycle or motorcycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lidarssl.synthetic.materials import MATERIAL_IDS as M
from lidarssl.synthetic.meshes import (
    MeshBuilder,
    MeshLayer,
    rotation_x,
    rotation_y,
    template,
)

# nuScenes-lidarseg raw ids.
PEDESTRIAN, CHILD, WORKER = 2, 3, 4
BARRIER, TRAFFIC_CONE, BICYCLE, BUS, CAR, CONSTRUCTION, MOTORCYCLE, TRAILER, TRUCK = 9, 12, 14, 16, 17, 18, 21, 22, 23
#: Width of a city bus, metres (a bus stopping at the kerb must leave the next lane free).
BUS_WIDTH = 2.55
MANMADE, VEGETATION, EGO = 28, 30, 31

_WHEEL_R = rotation_x(np.pi / 2)  # cylinder axis z -> y


@dataclass
class Model:
    """An object in its local frame.

    Attributes:
        mesh: the triangles.
        vertex_part: (V,) part index of each vertex; part 0 is the rigid body.
        pivots: (P, 3) pivot of each part in the local frame.
        amplitudes: (P,) swing amplitude about the local y axis, radians (0: rigid).
        phases: (P,) phase of the swing, radians.
        length, width: footprint, metres (used to keep objects apart).
    """

    mesh: MeshLayer
    vertex_part: np.ndarray
    pivots: np.ndarray
    amplitudes: np.ndarray
    phases: np.ndarray
    length: float
    width: float

    @property
    def num_parts(self) -> int:
        return len(self.pivots)


def _rigid(b: MeshBuilder, length: float, width: float) -> Model:
    mesh = b.build()
    return Model(mesh, np.zeros(len(mesh.vertices), np.int32), np.zeros((1, 3)), np.zeros(1), np.zeros(1), length, width)


def _axles(b: MeshBuilder, xs: Sequence[float], half_track: float, r: float, w: float) -> None:
    """A pair of wheels (radius ``r``, width ``w``) at ``y = -half_track, +half_track`` on each axle ``x``."""
    for x in xs:
        for y in (-half_track, half_track):
            b.primitive("cylinder", (r, r, w), M["rubber"], (x, y, r), _WHEEL_R, sections=8)


# ---------------------------------------------------------------------------------------------
# Vehicles.


def car(rng: np.random.Generator, inst: int, variant: int, cls: int = CAR) -> Model:
    """A passenger car: sedan, hatchback, SUV or van, on four wheels."""
    style = rng.choice(["sedan", "hatch", "suv", "van"], p=[0.4, 0.25, 0.25, 0.1])
    L = float(rng.uniform(3.9, 4.9)) if style != "van" else float(rng.uniform(4.8, 5.4))
    W = float(rng.uniform(1.72, 1.95))
    H = {"sedan": (1.38, 1.5), "hatch": (1.42, 1.58), "suv": (1.62, 1.82), "van": (1.9, 2.2)}[style]
    H = float(rng.uniform(*H))
    clear = 0.2 if style in ("sedan", "hatch") else 0.28
    belt = clear + (H - clear) * (0.52 if style != "van" else 0.45)
    b = MeshBuilder(cls=cls, inst=inst, variant=variant)
    x0, x1, y0, y1 = -L / 2, L / 2, -W / 2, W / 2
    b.tapered_box((x0, x1, y0, y1), (x0 + 0.08, x1 - 0.18, y0 + 0.04, y1 - 0.04), (clear, belt), M["paint"])
    if style == "sedan":
        cb, ct = (x0 + 0.2 * L, x1 - 0.32 * L), (x0 + 0.3 * L, x1 - 0.45 * L)
    elif style == "van":
        cb, ct = (x0 + 0.02, x1 - 0.14 * L), (x0 + 0.05, x1 - 0.25 * L)
    else:
        cb, ct = (x0 + 0.06, x1 - 0.32 * L), (x0 + 0.14, x1 - 0.46 * L)
    inset = 0.1 if style != "van" else 0.05
    b.tapered_box(
        (cb[0], cb[1], y0 + 0.06, y1 - 0.06), (ct[0], ct[1], y0 + inset + 0.08, y1 - inset - 0.08),
        (belt, H), M["glass"], top_material=M["paint"],
    )
    r = float(rng.uniform(0.3, 0.36)) if style != "van" else 0.36
    ax = L / 2 - 0.8
    _axles(b, (-ax, ax), W / 2 - 0.14, r, 0.22)
    # Number plates: small, bright to the lidar like real ones.
    for sx in (-1, 1):
        b.box((0.02, 0.5, 0.12), (sx * (L / 2 + 0.005), 0.0, clear + 0.25), M["plate"])
    return _rigid(b, L, W)


def truck(rng: np.random.Generator, inst: int, variant: int) -> Model:
    """A box truck or a pickup (both nuScenes ``vehicle.truck``)."""
    b = MeshBuilder(cls=TRUCK, inst=inst, variant=variant)
    if rng.random() < 0.35:  # pickup: car-like cab and an open bed
        L, W, H = float(rng.uniform(5.2, 5.9)), float(rng.uniform(1.9, 2.05)), float(rng.uniform(1.8, 1.95))
        clear, belt = 0.35, 1.1
        x0, x1, y0, y1 = -L / 2, L / 2, -W / 2, W / 2
        b.tapered_box((x0, x1, y0, y1), (x0, x1 - 0.2, y0 + 0.03, y1 - 0.03), (clear, belt), M["paint"])
        cab0 = x1 - 0.55 * L
        b.tapered_box((cab0, x1 - 1.3, y0 + 0.06, y1 - 0.06), (cab0 + 0.1, x1 - 1.9, y0 + 0.16, y1 - 0.16), (belt, H),
                      M["glass"], top_material=M["paint"])
        for sy in (-1, 1):  # bed walls
            b.box((cab0 - x0, 0.06, 0.45), ((x0 + cab0) / 2, sy * (W / 2 - 0.03), belt + 0.22), M["paint"])
        b.box((0.06, W, 0.45), (x0 + 0.03, 0.0, belt + 0.22), M["paint"])
        _axles(b, (-(L / 2 - 0.95), L / 2 - 0.95), W / 2 - 0.15, 0.4, 0.26)
        return _rigid(b, L, W)
    L, W, H = float(rng.uniform(6.5, 10.0)), float(rng.uniform(2.3, 2.55)), float(rng.uniform(2.9, 3.7))
    cab_l = 2.2
    x0, x1 = -L / 2, L / 2
    b.box((cab_l, W, 1.3), (x1 - cab_l / 2, 0.0, 0.55 + 0.65), M["paint"])
    b.tapered_box((x1 - cab_l, x1 - 0.05, -W / 2 + 0.05, W / 2 - 0.05), (x1 - cab_l, x1 - 0.35, -W / 2 + 0.1, W / 2 - 0.1),
                  (1.85, 2.9), M["glass"], top_material=M["paint"])
    b.box((L - cab_l - 0.2, W, H - 1.0), (x0 + (L - cab_l - 0.2) / 2, 0.0, 1.0 + (H - 1.0) / 2), M["cargo"], variant=variant + 3)
    b.box((L - 0.4, 0.9, 0.35), (0.0, 0.0, 0.75), M["dark_metal"])
    axles = [x1 - 1.3, x0 + 1.4] + ([x0 + 2.7] if L > 8.0 else [])
    _axles(b, axles, W / 2 - 0.2, 0.5, 0.35)
    return _rigid(b, L, W)


def bus(rng: np.random.Generator, inst: int, variant: int) -> Model:
    """A rigid city bus with a band of windows (the ``bus`` texture)."""
    L, W, H = float(rng.uniform(10.5, 12.5)), BUS_WIDTH, float(rng.uniform(3.0, 3.4))
    b = MeshBuilder(cls=BUS, inst=inst, variant=variant)
    b.tapered_box((-L / 2, L / 2, -W / 2, W / 2), (-L / 2 + 0.05, L / 2 - 0.1, -W / 2 + 0.05, W / 2 - 0.05), (0.35, H),
                  M["bus"], top_material=M["metal"])
    _axles(b, (L / 2 - 2.5, -L / 2 + 3.0), W / 2 - 0.25, 0.5, 0.3)
    return _rigid(b, L, W)


def trailer(rng: np.random.Generator, inst: int, variant: int) -> Model:
    """A semi-trailer container on rear axles and landing legs."""
    L, W, H = float(rng.uniform(8.0, 12.5)), 2.5, float(rng.uniform(3.6, 4.0))
    b = MeshBuilder(cls=TRAILER, inst=inst, variant=variant)
    b.box((L, W, H - 1.2), (0.0, 0.0, 1.2 + (H - 1.2) / 2), M["cargo"])
    b.box((L - 0.5, 1.0, 0.25), (0.0, 0.0, 1.05), M["dark_metal"])
    _axles(b, (-L / 2 + 1.0, -L / 2 + 2.3), W / 2 - 0.25, 0.5, 0.3)
    for sy in (-1, 1):
        b.box((0.15, 0.15, 1.0), (L / 2 - 2.2, sy * 0.8, 0.5), M["dark_metal"])
    return _rigid(b, L, W)


def construction_vehicle(rng: np.random.Generator, inst: int, variant: int, slew: float = 0.6) -> Model:
    """An excavator (tracks, turret, cab, boom and bucket) or a road roller.

    ``slew`` bounds the turret's turn (radians): a small one keeps the boom over the machine's own footprint.
    """
    b = MeshBuilder(cls=CONSTRUCTION, inst=inst, variant=variant)
    yellow = M["yellow_paint"]
    if rng.random() < 0.7:
        L, W = 4.6, 2.8
        for sy in (-1, 1):
            b.tapered_box((-L / 2 + 0.5, L / 2 - 0.5, sy * 1.1 - 0.35, sy * 1.1 + 0.35),
                          (-L / 2 + 0.1, L / 2 - 0.1, sy * 1.1 - 0.35, sy * 1.1 + 0.35), (0.0, 0.85), M["dark_metal"])
        yaw = float(rng.uniform(-slew, slew))
        R = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
        b.primitive("box", (3.2, 2.5, 1.1), yellow, R @ np.array([-0.5, 0.0, 1.5]), R)
        b.primitive("box", (1.0, 0.95, 1.5), M["glass"], R @ np.array([0.55, 0.7, 2.8]), R)
        # Boom and stick: two slanted beams in the turret's vertical plane.
        a = R @ np.array([0.9, -0.3, 1.6])
        p1 = R @ np.array([3.6, -0.3, 3.6])
        p2 = R @ np.array([5.0, -0.3, 1.0])
        b.cylinder_between(a, p1, 0.25, yellow, sections=4)
        b.cylinder_between(p1, p2, 0.18, yellow, sections=4)
        b.primitive("box", (0.8, 1.0, 0.7), M["dark_metal"], p2 + np.array([0.0, 0.0, -0.3]), R)
        return _rigid(b, 7.5, W)
    L, W = 4.2, 2.1  # road roller
    b.primitive("cylinder", (0.75, 0.75, 2.0), M["dark_metal"], (L / 2 - 0.8, 0.0, 0.75), _WHEEL_R, sections=12)
    b.box((2.6, 1.9, 1.2), (-0.5, 0.0, 1.1), yellow)
    b.box((1.2, 1.4, 1.3), (-0.9, 0.0, 2.35), M["glass"])
    _axles(b, (-L / 2 + 0.7,), 0.75, 0.7, 0.5)
    return _rigid(b, L, W)


def _rider(b: MeshBuilder, seat: np.ndarray, bar: np.ndarray, scale: float, variant: int) -> None:
    """A seated person, hips on ``seat``, hands on the handlebar ``bar`` (same class as the vehicle)."""
    top = seat + np.array([0.12, 0.0, 0.55]) * scale
    b.cylinder_between(seat, top, 0.17 * scale, M["cloth"], sections=6, variant=variant)
    b.primitive("sphere0", (0.11 * scale,) * 3, M["skin"], top + np.array([0.05, 0.0, 0.17]) * scale, variant=variant // 7)
    for sy in (-1, 1):
        knee = seat + np.array([0.32, sy * 0.12, -0.08]) * scale
        foot = np.array([seat[0] + 0.2, sy * 0.14, 0.25])
        hip = seat + np.array([0.0, sy * 0.1, 0.0])
        b.cylinder_between(hip, knee, 0.07 * scale, M["cloth"], sections=4, variant=variant + 101)
        b.cylinder_between(knee, foot, 0.06 * scale, M["cloth"], sections=4, variant=variant + 101)
        shoulder = top + np.array([0.0, sy * 0.2, -0.05]) * scale
        b.cylinder_between(shoulder, bar + np.array([0.0, sy * 0.25, 0.0]), 0.045 * scale, M["cloth"], sections=4,
                           variant=variant)


def bicycle(rng: np.random.Generator, inst: int, variant: int, rider: bool = True) -> Model:
    """A bicycle, with or without its rider (both labelled ``vehicle.bicycle``)."""
    b = MeshBuilder(cls=BICYCLE, inst=inst, variant=variant)
    r, wb = 0.34, 1.05
    rear, front = np.array([-wb / 2, 0.0, r]), np.array([wb / 2, 0.0, r])
    for c in (rear, front):
        b.primitive("cylinder", (r, r, 0.04), M["rubber"], c, _WHEEL_R, sections=8)
    crank = np.array([-0.05, 0.0, 0.3])
    seat = np.array([-0.2, 0.0, 0.95])
    head = np.array([0.38, 0.0, 0.9])
    metal = M["metal"] if variant % 2 else M["paint"]
    for a, c in ((rear, crank), (crank, seat), (crank, head), (seat, head), (head, front), (rear, seat)):
        b.cylinder_between(a, c, 0.025, metal, sections=3)
    bar = head + np.array([-0.05, 0.0, 0.15])
    b.box((0.05, 0.55, 0.04), bar, M["dark_metal"])
    b.box((0.25, 0.12, 0.05), seat + np.array([0.0, 0.0, 0.03]), M["dark_metal"])
    if rider:
        _rider(b, seat + np.array([0.0, 0.0, 0.08]), bar, float(rng.uniform(0.9, 1.05)), variant)
    return _rigid(b, 1.8, 0.6)


def motorcycle(rng: np.random.Generator, inst: int, variant: int, rider: bool = True) -> Model:
    """A motorcycle, with or without its rider (both labelled ``vehicle.motorcycle``)."""
    b = MeshBuilder(cls=MOTORCYCLE, inst=inst, variant=variant)
    r, wb = 0.31, 1.45
    for x in (-wb / 2, wb / 2):
        b.primitive("cylinder", (r, r, 0.13), M["rubber"], (x, 0.0, r), _WHEEL_R, sections=8)
    b.tapered_box((-0.55, 0.45, -0.17, 0.17), (-0.65, 0.3, -0.14, 0.14), (0.35, 0.85), M["paint"])
    b.box((0.6, 0.3, 0.12), (-0.45, 0.0, 0.88), M["dark_metal"])
    b.cylinder_between(np.array([wb / 2, 0.0, r]), np.array([0.45, 0.0, 1.05]), 0.04, M["metal"], sections=4)
    bar = np.array([0.42, 0.0, 1.05])
    b.box((0.05, 0.7, 0.04), bar, M["dark_metal"])
    if rider:
        _rider(b, np.array([-0.4, 0.0, 0.95]), bar, float(rng.uniform(0.95, 1.05)), variant)
    return _rigid(b, 2.2, 0.8)


def pedestrian(rng: np.random.Generator, inst: int, variant: int, cls: int = PEDESTRIAN, walking: bool = True) -> Model:
    """A person made of torso, head, two legs and two arms; legs and arms swing when walking.

    ``cls`` picks adult (2), child (3) or construction worker (4, in a high-visibility vest).
    """
    h = float(rng.uniform(1.1, 1.4)) if cls == CHILD else float(rng.uniform(1.58, 1.92))
    s = h / 1.75
    b = MeshBuilder(cls=cls, inst=inst, variant=variant)
    parts: list[np.ndarray] = []

    def mark(part: int) -> None:
        """Assign the vertices added since the last call to ``part``."""
        done = sum(len(p) for p in parts)
        parts.append(np.full(b.num_vertices - done, part, np.int32))

    hip, shoulder = 0.53 * h, 0.81 * h
    top = M["yellow_paint"] if cls == WORKER else M["cloth"]
    b.box((0.22 * s, 0.38 * s, shoulder - hip + 0.04), (0.0, 0.0, (hip + shoulder) / 2), top)
    b.primitive("sphere0", (0.1 * s, 0.09 * s, 0.12 * s), M["skin"], (0.0, 0.0, shoulder + 0.135 * s), variant=variant // 7)
    mark(0)
    legs = (1, 2)
    for part, sy in zip(legs, (-1, 1)):
        b.box((0.15 * s, 0.15 * s, hip), (0.0, sy * 0.1 * s, hip / 2), M["cloth"], variant=variant + 101)
        mark(part)
    for part, sy in zip((3, 4), (-1, 1)):
        b.box((0.09 * s, 0.09 * s, 0.34 * h), (0.0, sy * (0.19 * s + 0.05 * s), shoulder - 0.17 * h), top)
        mark(part)
    mesh = b.build()
    pivots = np.array([[0, 0, 0], [0, -0.1 * s, hip], [0, 0.1 * s, hip],
                       [0, -0.24 * s, shoulder], [0, 0.24 * s, shoulder]], float)
    amp = np.array([0.0, 0.45, 0.45, 0.35, 0.35]) if walking else np.zeros(5)
    phase = np.array([0.0, 0.0, np.pi, np.pi, 0.0]) + float(rng.uniform(0, 2 * np.pi))
    phase[0] = 0.0
    return Model(mesh, np.concatenate(parts), pivots, amp, phase, 0.7, 0.7)


def ego_body() -> Model:
    """The data-collection car itself (``vehicle.ego``, ignored in training), a compact hatchback."""
    b = MeshBuilder(cls=EGO, inst=0, variant=0)
    paint = M["ego_paint"]
    b.tapered_box((-0.95, 3.5, -0.9, 0.9), (-0.9, 3.3, -0.86, 0.86), (0.3, 0.9), paint)
    b.tapered_box((-0.85, 2.3, -0.84, 0.84), (-0.55, 1.75, -0.72, 0.72), (0.9, 1.45), M["glass"], top_material=paint)
    _axles(b, (0.0, 2.6), 0.76, 0.31, 0.2)
    return _rigid(b, 4.45, 1.8)


# ---------------------------------------------------------------------------------------------
# Static objects.


def tree(rng: np.random.Generator, variant: int, street: bool = False) -> Model:
    """A deciduous tree (jittered ellipsoid crowns) or a conifer (stacked cones); trunk included.

    ``street`` trees stand in sidewalk pits: always deciduous, with a high, narrower crown that
    clears pedestrians and most of the road.
    """
    b = MeshBuilder(cls=VEGETATION, inst=0, variant=variant)
    if street or rng.random() < 0.75:
        trunk_h = float(rng.uniform(2.4, 3.6) if street else rng.uniform(1.8, 3.5))
        r_t = float(rng.uniform(0.1, 0.22))
        b.primitive("cylinder", (r_t, r_t, trunk_h + 0.8), M["bark"], (0, 0, (trunk_h + 0.8) / 2), sections=6)
        rx = float(rng.uniform(1.2, 2.6) if street else rng.uniform(1.5, 3.5))
        rz = float(rng.uniform(1.3, 2.6) if street else rng.uniform(1.5, 3.5))
        for _ in range(int(rng.integers(1, 4))):
            off = rng.normal(0, 0.25, 3) * np.array([rx, rx, rz])
            sc = np.array([rx, rx * rng.uniform(0.8, 1.2), rz]) * rng.uniform(0.7, 1.0)
            _blob(b, rng, sc, np.array([0, 0, trunk_h + rz * 0.8]) + off, M["foliage"])
        return _rigid(b, 2 * rx, 2 * rx)
    h = float(rng.uniform(5.0, 11.0))
    r = h * float(rng.uniform(0.18, 0.28))
    b.primitive("cylinder", (0.15, 0.15, 1.5), M["bark"], (0, 0, 0.75), sections=6)
    for k, (z0, sc) in enumerate(((0.8, 1.0), (0.8 + 0.35 * h, 0.7), (0.8 + 0.6 * h, 0.45))):
        b.primitive("cone", (r * sc, r * sc, (h - 0.8) * 0.55), M["foliage"], (0, 0, z0), sections=8, variant=variant + k)
    return _rigid(b, 2 * r, 2 * r)


def _blob(b: MeshBuilder, rng: np.random.Generator, scale: np.ndarray, center: np.ndarray, material: int) -> None:
    """An icosphere with radial jitter: irregular crowns and bushes."""
    v, f = template("sphere1")
    v = v * rng.uniform(0.82, 1.18, (len(v), 1)) * scale + center
    b.add(v, f, material)


def bush(rng: np.random.Generator, variant: int) -> Model:
    """A low shrub on the ground."""
    b = MeshBuilder(cls=VEGETATION, inst=0, variant=variant)
    r = float(rng.uniform(0.4, 1.1))
    _blob(b, rng, np.array([r, r * rng.uniform(0.8, 1.3), r * 0.7]), np.array([0, 0, r * 0.5]), M["foliage"])
    return _rigid(b, 2 * r, 2 * r)


def hedge(length: float, variant: int, height: float = 1.1) -> Model:
    """A trimmed hedge along x."""
    b = MeshBuilder(cls=VEGETATION, inst=0, variant=variant)
    b.box((length, 0.8, height), (0, 0, height / 2), M["foliage"])
    return _rigid(b, length, 0.8)


def street_light(rng: np.random.Generator, reach: float) -> Model:
    """A lamp post whose arm reaches ``reach`` metres over the road along +y (local)."""
    b = MeshBuilder(cls=MANMADE, inst=0)
    h = float(rng.uniform(6.5, 9.0))
    b.primitive("cylinder", (0.1, 0.1, h), M["metal"], (0, 0, h / 2), sections=6)
    b.cylinder_between(np.array([0, 0, h - 0.3]), np.array([0, reach, h + 0.2]), 0.05, M["metal"], sections=4)
    b.box((0.35, 0.6, 0.15), (0, reach, h + 0.12), M["lamp"])
    return _rigid(b, 0.3, 0.3)


def sign_pole(rng: np.random.Generator, variant: int) -> Model:
    """A traffic sign on a thin pole; the plate faces +x (towards oncoming traffic once placed)."""
    b = MeshBuilder(cls=MANMADE, inst=0, variant=variant)
    h = float(rng.uniform(2.2, 2.9))
    b.primitive("cylinder", (0.035, 0.035, h), M["metal"], (0, 0, h / 2), sections=5)
    shape = rng.integers(3)
    if shape == 0:
        b.box((0.04, 0.65, 0.65), (0.05, 0, h + 0.25), M["sign"])
    elif shape == 1:
        b.primitive("cylinder", (0.35, 0.35, 0.04), M["sign"], (0.05, 0, h + 0.25), rotation_y(np.pi / 2), sections=10)
    else:
        b.primitive("cylinder", (0.42, 0.42, 0.04), M["sign"], (0.05, 0, h + 0.2), rotation_y(np.pi / 2), sections=3)
    return _rigid(b, 0.3, 0.7)


def traffic_light(rng: np.random.Generator, reach: float) -> Model:
    """A signal post with its head; with ``reach`` > 0, a mast arm over the road along +y."""
    b = MeshBuilder(cls=MANMADE, inst=0)
    h = 3.4 if reach <= 0 else 6.0
    b.primitive("cylinder", (0.1, 0.1, h), M["metal"], (0, 0, h / 2), sections=6)
    if reach > 0:
        b.cylinder_between(np.array([0, 0, h - 0.4]), np.array([0, reach, h - 0.4]), 0.07, M["metal"], sections=4)
        b.box((0.35, 0.35, 1.0), (0.2, reach * 0.8, h - 1.0), M["dark_metal"])
    b.box((0.3, 0.3, 0.9), (0.2, 0, min(h, 3.4) - 0.6), M["dark_metal"])
    return _rigid(b, 0.4, 0.4)


def bollard(variant: int) -> Model:
    b = MeshBuilder(cls=MANMADE, inst=0, variant=variant)
    b.primitive("cylinder", (0.1, 0.1, 0.9), M["metal"], (0, 0, 0.45), sections=6)
    return _rigid(b, 0.2, 0.2)


def bin_or_box(rng: np.random.Generator, variant: int) -> Model:
    """A litter bin or utility cabinet."""
    b = MeshBuilder(cls=MANMADE, inst=0, variant=variant)
    sx, sy, sz = rng.uniform(0.5, 1.0), rng.uniform(0.4, 0.6), rng.uniform(0.9, 1.4)
    b.box((sx, sy, sz), (0, 0, sz / 2), M["dark_metal"] if variant % 2 else M["metal"])
    return _rigid(b, float(sx), float(sy))


def barrier(rng: np.random.Generator, inst: int, variant: int) -> Model:
    """A concrete jersey barrier or a striped plastic barrier, running along x."""
    b = MeshBuilder(cls=BARRIER, inst=inst, variant=variant)
    L = float(rng.uniform(1.8, 3.0))
    if rng.random() < 0.5:
        b.tapered_box((-L / 2, L / 2, -0.3, 0.3), (-L / 2, L / 2, -0.1, 0.1), (0.0, 0.81), M["concrete"])
    else:
        b.tapered_box((-L / 2, L / 2, -0.25, 0.25), (-L / 2, L / 2, -0.12, 0.12), (0.0, 1.0), M["barrier"])
    return _rigid(b, L, 0.6)


def cone(rng: np.random.Generator, inst: int, variant: int, tall: bool = False) -> Model:
    """A traffic cone on its square base; ``tall`` ones (0.75-1 m) mark road works on fast roads."""
    b = MeshBuilder(cls=TRAFFIC_CONE, inst=inst, variant=variant)
    h = float(rng.uniform(0.75, 1.0) if tall else rng.uniform(0.5, 0.9))
    b.box((0.38, 0.38, 0.03), (0, 0, 0.015), M["cone"])
    b.primitive("cone", (0.15, 0.15, h), M["cone"], (0, 0, 0.03), sections=8)
    return _rigid(b, 0.4, 0.4)


def building(rng: np.random.Generator, length: float, depth: float, height: float, variant: int) -> Model:
    """A block with facades and a flat roof, sometimes with a set-back top storey; front face at y = 0."""
    b = MeshBuilder(cls=MANMADE, inst=0, variant=variant)
    z0 = -0.3  # sunk into the ground so no gap shows at uneven grass
    rect = (-length / 2, length / 2, 0.0, depth)
    b.tapered_box(rect, rect, (z0, height), M["facade"], top_material=M["roof"])
    if height > 9.0 and rng.random() < 0.35:
        h2 = float(rng.uniform(2.8, 6.5))
        inset = float(rng.uniform(1.0, 3.0))
        r2 = (-length / 2 + inset, length / 2 - inset, inset, depth - inset / 2)
        if r2[1] > r2[0] + 2 and r2[3] > r2[2] + 2:
            b.tapered_box(r2, r2, (height - 0.1, height + h2), M["facade"], top_material=M["roof"])
    return _rigid(b, length, depth)


def wall(length: float, height: float, variant: int) -> Model:
    """A garden wall or fence along x."""
    b = MeshBuilder(cls=MANMADE, inst=0, variant=variant)
    b.box((length, 0.25, height), (0, 0, height / 2), M["concrete"])
    return _rigid(b, length, 0.25)


def bus_shelter(rng: np.random.Generator, variant: int) -> Model:
    """A bus shelter: posts, a flat roof, a glass back and end panel, a bench; open towards +y."""
    b = MeshBuilder(cls=MANMADE, inst=0, variant=variant)
    L, D, H = float(rng.uniform(3.0, 5.0)), float(rng.uniform(1.3, 1.6)), float(rng.uniform(2.4, 2.7))
    for sx in (-1, 1):
        for sy in (-1, 1):
            b.box((0.08, 0.08, H), (sx * (L / 2 - 0.05), sy * (D / 2 - 0.05), H / 2), M["metal"])
    b.box((L + 0.2, D + 0.3, 0.1), (0.0, 0.1, H + 0.05), M["dark_metal"])
    b.box((L - 0.1, 0.03, H - 0.3), (0.0, -D / 2 + 0.05, 0.1 + (H - 0.3) / 2), M["glass"])
    end = float(rng.choice([-1, 1]))
    b.box((0.12, D - 0.2, 1.8), (end * (L / 2 - 0.05), -0.05, 1.1), M["sign"])  # advertising panel
    b.box((0.6 * L, 0.4, 0.05), (-end * 0.1 * L, -D / 2 + 0.3, 0.45), M["dark_metal"])
    return _rigid(b, L + 0.2, D + 0.3)


def pad(length: float, width: float, height: float, material: int, cls: int) -> Model:
    """A raised flat slab (a traffic island, a boarding platform, a parking lot) from below ground up to ``height``.

    ``cls`` is a stuff class (``flat.other``, ``flat.driveable_surface``): no instance.
    """
    b = MeshBuilder(cls=cls, inst=0)
    rect = (-length / 2, length / 2, -width / 2, width / 2)
    b.tapered_box(rect, rect, (-0.3, height), material)
    return _rigid(b, length, width)
