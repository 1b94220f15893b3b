"""Procedural street scenes: a street plan filled with buildings, vegetation, furniture and road users.

:func:`build_scene` draws everything from one seed: the plan (:mod:`~lidarssl.synthetic.layout`),
building rows with varying setbacks and heights, trees and bushes, lamp posts, signs and traffic
lights, parked vehicles, a construction zone with barriers, cones, a construction vehicle and workers,
a bus stop (raised boarding platform, shelter, people and a cyclist waiting, parked bicycles), often a
second one across the road with a bus standing at it, a bicycle rack, raised islands in the parking
lanes, sometimes a car park, moving cars, trucks, buses, motorcycles and cyclists in their lanes, and
pedestrians walking on the sidewalks. The result is a :class:`Scene`: one static
:class:`~lidarssl.synthetic.meshes.MeshLayer` (built into a BVH once per sequence), the moving
:class:`~lidarssl.synthetic.actors.ActorSet` (rebuilt per timestamp) and the ego trajectory.

Frames: the **map frame** is the plan's frame (x along the street, z up, road at z = 0). The scene
also draws a map-to-global transform (a random heading and an offset of hundreds of metres, like
nuScenes map coordinates) so that ego poses are not trivially axis-aligned.

All 16 nuScenes-lidarseg classes show up near the ego path in the first second, whatever the layout:
the bus stops, the road works and the parking-lane islands are placed close to the ego before
anything else, then a bicycle rack and, where the road works' cones stand too far away, a few tall
cones at the kerb (small and thin objects return enough points only close by); the oncoming traffic
brings a motorcycle, a bicycle, a bus (unless one stands at a stop) and a truck-towed trailer past it
(``benchmarks/world_classes.py`` prints the per-class point counts).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from lidarssl.synthetic import objects as obj
from lidarssl.synthetic.actors import ActorSet, EgoTrajectory
from lidarssl.synthetic.layout import DRIVEABLE, OTHER_FLAT, Band, Lane, StreetLayout, generate_layout, ground_mesh
from lidarssl.synthetic.materials import MATERIAL_IDS
from lidarssl.synthetic.meshes import MeshBuilder, MeshLayer, pose
from lidarssl.synthetic.objects import Model


@dataclass
class Scene:
    """One procedurally generated street with its moving road users and the ego trajectory.

    Attributes:
        layout: the street plan.
        static: everything that does not move, map frame.
        actors: moving road users.
        ego: the ego vehicle's trajectory.
        ego_model: the ego vehicle's body (the lidar's self-returns; the roof cameras never see it), or None.
        sun: (3,) unit vector towards the sun, map frame.
        map_to_global: (4, 4) rigid transform from the map frame to the global frame of ego poses.
    """

    layout: StreetLayout
    static: MeshLayer
    actors: ActorSet
    ego: EgoTrajectory
    ego_model: Model | None
    sun: np.ndarray
    map_to_global: np.ndarray

    def dynamic_at(self, t: float, radius: float = np.inf, ego_body: bool = True) -> tuple[MeshLayer, np.ndarray]:
        """Moving geometry in the map frame at time ``t``, and the bounding box of each moving object.

        Args:
            t: time in seconds from the start of the sequence.
            radius: leave out road users farther than this from the ego (they cannot be seen).
            ego_body: include the ego vehicle's body (the lidar sees its roof; the cameras, mounted
                on the roof edges looking outwards, do not).

        Returns:
            The mesh and (K, 2, 3) boxes (min, max).
        """
        ego_pose = self.ego.pose(t)
        layer, boxes = self.actors.at(t, ego_pose[:3, 3], radius)
        if ego_body and self.ego_model is not None:
            body = self.ego_model.mesh.transformed(ego_pose)
            layer = MeshLayer.concatenate([layer, body])
            box = np.stack([body.vertices.min(axis=0), body.vertices.max(axis=0)])[None]
            boxes = np.concatenate([boxes, box])
        return layer, boxes


class _Line:
    """Occupied x intervals along one placement line, so objects never overlap."""

    def __init__(self) -> None:
        self.taken: list[tuple[float, float]] = []

    def free(self, x0: float, x1: float) -> bool:
        return all(x1 <= a or x0 >= b for a, b in self.taken)

    def take(self, x0: float, x1: float) -> bool:
        if not self.free(x0, x1):
            return False
        self.taken.append((x0, x1))
        return True


class _Placer:
    """Accumulates static geometry and moving actors while handing out instance ids."""

    def __init__(self, rng: np.random.Generator, layout: StreetLayout, duration: float) -> None:
        self.rng = rng
        self.layout = layout
        self.duration = duration
        self.static = MeshBuilder()
        self.models: list[Model] = []
        self.starts: list[np.ndarray] = []
        self.yaws: list[float] = []
        self.speeds: list[float] = []
        self.gaits: list[float] = []
        self.next_instance = 1
        self.lines: dict[str, _Line] = {}
        self.static_classes: list[tuple[int, float, float]] = []  # (class, x, y) for the guarantee
        self.moving_classes: list[int] = []
        self.standing: list[tuple[float, float, float]] = []  # (lane centre, x0, x1) of vehicles standing in a lane

    def line(self, key: str) -> _Line:
        return self.lines.setdefault(key, _Line())

    def instance(self) -> int:
        i = self.next_instance
        self.next_instance += 1
        return i

    def variant(self) -> int:
        return int(self.rng.integers(0, 30000))

    def place(self, model: Model, x: float, y: float, yaw: float, z: float = 0.0) -> None:
        self.static.add_layer(model.mesh, pose(yaw, (x, y, z)))
        self.static_classes.append((int(model.mesh.face_class[0]), x, y))

    def move(self, model: Model, x: float, y: float, yaw: float, speed: float, z: float = 0.0, gait: float = 0.0) -> None:
        self.models.append(model)
        self.starts.append(np.array([x, y, z]))
        self.yaws.append(yaw)
        self.speeds.append(speed)
        self.gaits.append(gait)
        self.moving_classes.append(int(model.mesh.face_class[0]))


def _building_rows(p: _Placer) -> None:
    rng, layout = p.rng, p.layout
    fx0, fx1 = layout.far_range
    cut = layout.intersection.cut if layout.intersection is not None else None
    for side in (-1, 1):
        row = layout.bands_of(side, "buildings")[0]
        depth_max = row.y1 - row.y0
        x = fx0 + float(rng.uniform(0, 10))
        while x < fx1:
            w = float(rng.uniform(8.0, 30.0))
            if cut is not None and x + w > cut[0] - 0.5 and x < cut[1] + 0.5:
                x = cut[1] + 0.5 + float(rng.uniform(0, 3))
                continue
            site = next(((a, b) for a, b in p.line(f"site{side}").taken if x + w > a - 0.5 and x < b + 0.5), None)
            if site is not None:  # a car park, a bus stop or road works: keep clear
                x = site[1] + 0.5 + float(rng.uniform(0, 3))
                continue
            if rng.random() < 0.3:  # a gap: garden, trees, a wall
                gap = float(rng.uniform(3.0, 14.0))
                _garden(p, x, min(x + gap, fx1), row, side)
                x += gap
                continue
            u = rng.random()
            h = float(rng.uniform(4.0, 12.0) if u < 0.6 else rng.uniform(12.0, 26.0) if u < 0.9 else rng.uniform(26.0, 45.0))
            d = float(rng.uniform(8.0, max(8.5, depth_max)))
            front = row.y1 if side < 0 else row.y0
            front += side * float(rng.uniform(0.0, 1.5))  # setback jitter, away from the road
            yaw = np.pi if side < 0 else 0.0
            p.place(obj.building(rng, w, d, h, p.variant()), x + w / 2, front, yaw, row.height)
            x += w + float(rng.uniform(0.0, 1.0))


def _garden(p: _Placer, x0: float, x1: float, row: Band, side: int) -> None:
    rng, layout = p.rng, p.layout
    dx0, dx1 = layout.x_range
    if x1 < dx0 or x0 > dx1:
        return
    if not p.line(f"site{side}").free(x0, x1):
        return
    front = row.y1 if side < 0 else row.y0
    if rng.random() < 0.4:
        p.place(obj.wall(x1 - x0, float(rng.uniform(0.6, 1.8)), p.variant()), (x0 + x1) / 2, front + side * 0.3, 0.0, row.height)
    for _ in range(int(rng.integers(0, 3))):
        x = float(rng.uniform(x0 + 1, max(x0 + 1.1, x1 - 1)))
        y = front + side * float(rng.uniform(2.0, 8.0))
        model = obj.tree(rng, p.variant()) if rng.random() < 0.6 else obj.bush(rng, p.variant())
        p.place(model, x, y, float(rng.uniform(0, 2 * np.pi)), row.height)


def _barrier_rows(p: _Placer) -> None:
    """Rows of barriers fencing off a stretch of sidewalk along the kerb, or lining the median.

    Barriers are common in nuScenes (over 1% of points); a road-works zone alone is too rare.
    """
    rng, layout = p.rng, p.layout
    for _ in range(int(rng.integers(0, 3))):
        side = int(rng.choice([-1, 1]))
        x0 = float(rng.uniform(-15.0, 60.0))
        length = float(rng.uniform(12.0, 45.0))
        if not layout.span_free(x0, x0 + length, 2.0):
            continue
        walks = layout.bands_of(side, "sidewalk")
        if layout.median is not None and rng.random() < 0.3:
            y, z, key = 0.5 * (layout.median[0] + layout.median[1]), layout.kerb_height, "median"
        elif walks:
            inner = walks[0].y1 if side < 0 else walks[0].y0
            y, z, key = inner + side * 0.45, walks[0].height, f"furniture{side}"
        else:
            continue
        if not p.line(key).take(x0 - 0.5, x0 + length + 0.5):
            continue
        p.line(f"parking{side}").take(x0, x0 + length)  # no parking in front: the row stays visible
        x = x0
        while x < x0 + length:
            m = obj.barrier(rng, p.instance(), p.variant())
            p.place(m, x + m.length / 2, y, 0.0, z)
            x += m.length + float(rng.uniform(0.0, 0.3))


def _cone_clusters(p: _Placer) -> None:
    """A few traffic cones at the road edge: in gaps of the parking lane or on the kerb."""
    rng, layout = p.rng, p.layout
    dx0, dx1 = layout.x_range
    for _ in range(int(rng.integers(0, 4))):
        x0 = float(rng.uniform(max(dx0, -20.0), min(dx1, 80.0)))
        parking = [ln for ln in layout.lanes if ln.direction == 0]
        n = int(rng.integers(2, 6))
        if parking and rng.random() < 0.6:
            lane = parking[int(rng.integers(len(parking)))]
            side = -1 if lane.center < 0 else 1
            key, y, z = f"parking{side}", lane.center, 0.0
        else:
            side = int(rng.choice([-1, 1]))
            walks = layout.bands_of(side, "sidewalk")
            if not walks:
                continue
            inner = walks[0].y1 if side < 0 else walks[0].y0
            key, y, z = f"furniture{side}", inner + side * 0.35, walks[0].height
        if not layout.span_free(x0, x0 + 1.2 * n, 4.0) or not p.line(key).take(x0 - 0.5, x0 + 1.2 * n + 0.5):
            continue
        for k in range(n):
            p.place(obj.cone(rng, p.instance(), p.variant()), x0 + 1.2 * k, y + float(rng.normal(0, 0.1)), 0.0, z)


def _sidewalk_furniture(p: _Placer, density: float) -> None:
    """Lamp posts, trees in pits, signs, bollards and bins in a strip along the kerb."""
    rng, layout = p.rng, p.layout
    dx0, dx1 = layout.x_range
    light_gap = float(rng.uniform(22.0, 35.0))
    tree_gap = float(rng.uniform(7.0, 16.0)) / max(density, 1e-3)
    tree_prob = float(rng.uniform(0.3, 1.0))
    for side in (-1, 1):
        walks = layout.bands_of(side, "sidewalk")
        verges = layout.bands_of(side, "verge")
        host = verges[0] if verges else (walks[0] if walks else None)
        if host is None:
            continue
        inner = host.y1 if side < 0 else host.y0  # edge towards the road
        y_strip = inner + side * min(0.6, (host.y1 - host.y0) / 3)
        line = p.line(f"furniture{side}")
        # Lamp posts at regular spacing, arms over the road.
        x = dx0 + float(rng.uniform(0, light_gap))
        while x < dx1:
            if layout.x_free(x, 1.0) and line.take(x - 0.4, x + 0.4):
                reach = float(rng.uniform(1.2, 2.5))
                p.place(obj.street_light(rng, reach), x, y_strip, 0.0 if side < 0 else np.pi, host.height)
            x += light_gap
        # Trees in pits (or on the verge).
        x = dx0 + float(rng.uniform(0, tree_gap))
        while x < dx1:
            if rng.random() < tree_prob and layout.x_free(x, 3.0) and line.take(x - 1.0, x + 1.0):
                y = 0.5 * (host.y0 + host.y1) if verges else y_strip + side * 0.2
                p.place(obj.tree(rng, p.variant(), street=True), x, y, float(rng.uniform(0, 2 * np.pi)), host.height)
            x += tree_gap * float(rng.uniform(0.8, 1.2))
        # A few signs, bollards and bins.
        for _ in range(int(rng.poisson(0.06 * (dx1 - dx0) * density))):
            x = float(rng.uniform(dx0, dx1))
            if not layout.x_free(x, 1.0) or not line.take(x - 0.5, x + 0.5):
                continue
            u = rng.random()
            if u < 0.45:
                yaw = np.pi if side < 0 else 0.0  # plate faces oncoming traffic of the near lanes
                p.place(obj.sign_pole(rng, p.variant()), x, y_strip, yaw, host.height)
            elif u < 0.75:
                p.place(obj.bollard(p.variant()), x, y_strip, 0.0, host.height)
            else:
                p.place(obj.bin_or_box(rng, p.variant()), x, y_strip + side * 0.3, 0.0, host.height)


def _lawns(p: _Placer, density: float) -> None:
    """Trees, bushes and hedges on grass setbacks."""
    rng, layout = p.rng, p.layout
    dx0, dx1 = layout.x_range
    for band in layout.bands:
        if band.kind not in ("lawn", "plaza"):
            continue
        width = band.y1 - band.y0
        n = int(rng.poisson((0.05 if band.kind == "lawn" else 0.015) * (dx1 - dx0) * density * min(width, 8) / 4))
        for _ in range(n):
            x = float(rng.uniform(dx0, dx1))
            if not layout.x_free(x, 2.0) or not p.line(f"site{band.side}").free(x - 1.5, x + 1.5):
                continue
            y = float(rng.uniform(band.y0 + 0.8, max(band.y0 + 0.9, band.y1 - 0.8)))
            if band.kind == "lawn" and rng.random() < 0.6:
                by_road = band is layout.bands_of(band.side)[0]  # keep wide crowns off the road
                model = obj.tree(rng, p.variant(), street=by_road)
            else:
                model = obj.bush(rng, p.variant())
            p.place(model, x, y, float(rng.uniform(0, 2 * np.pi)), band.height)
        if band.kind == "lawn" and width > 2.0 and rng.random() < 0.3:
            x0 = float(rng.uniform(dx0, dx1 - 20))
            length = float(rng.uniform(6, 20))
            if layout.span_free(x0, x0 + length, 1.0) and p.line(f"site{band.side}").free(x0, x0 + length):
                inner = band.y1 if band.side < 0 else band.y0
                p.place(obj.hedge(length, p.variant()), x0 + length / 2, inner + band.side * 0.5, 0.0, band.height)


#: Vehicle mixes as (upper bound of the cumulative probability, maker): parked, and moving in traffic.
_PARKED = ((0.78, obj.car), (0.86, obj.truck), (0.9, obj.trailer), (0.94, obj.bus),
           (1.0, partial(obj.motorcycle, rider=False)))
_MOVING = ((0.72, obj.car), (0.8, obj.truck), (0.87, obj.bus), (0.93, obj.motorcycle), (1.0, obj.bicycle))


def _vehicle(p: _Placer, u: float, mix: tuple) -> Model:
    """A new vehicle of the class that ``u`` in [0, 1) picks from the cumulative ``mix``."""
    inst, var = p.instance(), p.variant()
    maker = next(make for bound, make in mix if u < bound)
    return maker(p.rng, inst, var)


def _parked_vehicles(p: _Placer, density: float) -> None:
    """Cars, vans, trucks, trailers and motorcycles in the parking lanes."""
    rng, layout = p.rng, p.layout
    dx0, dx1 = layout.x_range
    for lane in layout.lanes:
        if lane.direction != 0:
            continue
        side = -1 if lane.center < 0 else 1
        line = p.line(f"parking{side}")
        x = dx0 + float(rng.uniform(0, 5))
        yaw0 = 0.0 if side < 0 else np.pi
        while x < dx1:
            model = _vehicle(p, rng.random(), _PARKED)
            L = model.length
            cx = x + L / 2
            if layout.span_free(x, x + L, 6.0) and line.take(x, x + L):
                y = lane.center + side * float(rng.uniform(-0.1, 0.25))
                p.place(model, cx, y, yaw0 + float(rng.normal(0, 0.02)))
            x += L + float(rng.uniform(0.6, 4.0)) + (float(rng.uniform(5, 25)) if rng.random() < 0.25 / density else 0.0)


def _free_stretch(p: _Placer, xs: np.ndarray, length: float, keys: list[str], margin: float = 1.0) -> float | None:
    """The first ``x`` in ``xs`` where ``[x, x + length]`` is clear of the cross street and of every line in ``keys``."""
    for x in xs:
        x = float(x)
        if p.layout.span_free(x, x + length, margin) and all(p.line(k).free(x, x + length) for k in keys):
            return x
    return None


def _around(x: float, step: float = 1.5, ahead: float = 50.0, behind: float = 30.0, back_cost: float = 2.0) -> np.ndarray:
    """Candidate positions from ``x`` outwards, nearest first; a spot behind counts ``back_cost`` times its distance."""
    xs = x + np.arange(-behind, ahead, step)
    d = xs - x
    return xs[np.argsort(np.where(d >= 0, d, -back_cost * d), kind="stable")]


def _take(p: _Placer, keys: list[str], x0: float, x1: float) -> None:
    for k in keys:
        p.line(k).take(x0, x1)


def _construction_zone(p: _Placer, ego: EgoTrajectory) -> None:
    """Road works close ahead: barriers, a taper of cones, a construction vehicle and workers.

    They close part of a parking lane, or of the sidewalk or verge (the machine then stands behind
    the barriers, on the band or the lot behind it).
    """
    rng, layout = p.rng, p.layout
    target = ego.x0 + float(rng.uniform(4.0, 12.0))
    taper = 9.0  # the cones before the zone
    length = float(rng.uniform(12.0, 22.0))
    best = None
    for side in (-1, 1):
        lanes = [ln for ln in layout.lanes_of(0) if (ln.center < 0) == (side < 0)]
        for in_lane in ([True] if lanes else []) + [False]:
            keys = [f"parking{side}"] if in_lane else [f"site{side}", f"walk{side}", f"furniture{side}", f"parking{side}"]
            for size in (length, 8.0):
                xs = _around(target - taper, behind=40.0, back_cost=1.0)
                s = _free_stretch(p, xs, size + taper + 1.0, keys, margin=4.0)
                if s is not None:
                    break
            # The nearest wins; on a tie the right side, in the parking lane.
            if s is not None and (best is None or abs(s - target) < abs(best[0] - target) - 2.0):
                best = s, size, side, lanes, in_lane, keys
    if best is None:
        return
    s, length, side, lanes, in_lane, keys = best
    x0 = s + taper
    _take(p, keys, s, x0 + length + 1.0)
    if in_lane:
        lane = lanes[0]
        y_edge, width, z = (lane.y1 if side < 0 else lane.y0), lane.width, 0.0  # the lane's edge towards traffic
        y_mid = lane.center
    else:
        host = layout.kerbside(side)
        y_edge, width, z = (host.y1 if side < 0 else host.y0), host.y1 - host.y0, host.height
    machine = obj.construction_vehicle(rng, p.instance(), p.variant(), slew=0.15)  # boom clear of traffic
    if not in_lane:
        y_mid = y_edge + side * (0.75 + machine.width / 2)  # behind the barriers
    x = x0
    while x < x0 + length:
        m = obj.barrier(rng, p.instance(), p.variant())
        p.place(m, x + m.length / 2, y_edge + side * 0.35, 0.0, z)
        x += m.length + float(rng.uniform(0.05, 0.4))
    for k in range(int(rng.integers(5, 8))):  # taper of tall cones before the zone
        xc = x0 - 1.0 - 1.25 * k
        yc = y_edge + side * min(0.3 + 0.35 * k, width - 0.3)
        p.place(obj.cone(rng, p.instance(), p.variant(), tall=True), xc, yc, 0.0, z)
    mx = x0 + length / 2
    band = layout.band_at(y_mid)
    p.place(machine, mx, y_mid + (side * 0.2 if in_lane else 0.0), float(rng.choice([0.0, np.pi])),
            z if in_lane or band is None else band.height)
    free_end = mx - machine.length / 2 - 0.5  # cones and workers stay clear of the machine
    zm = z if in_lane or band is None else band.height
    for _ in range(int(rng.integers(2, 5))):
        xc = float(rng.uniform(x0 + 0.5, max(x0 + 0.6, free_end)))
        p.place(obj.cone(rng, p.instance(), p.variant()), xc, y_mid + float(rng.uniform(-0.4, 0.4)), 0.0, zm)
    for k in range(int(rng.integers(1, 3))):
        m = obj.pedestrian(rng, p.instance(), p.variant(), cls=obj.WORKER, walking=False)
        p.place(m, x0 + 1.5 + 1.2 * k, y_mid - side * 0.3, float(rng.uniform(0, 2 * np.pi)), zm)


def _bay(p: _Placer, ego: EgoTrajectory, side: int, ego_lane: Lane) -> Lane | None:
    """The lane a bus stops in at the kerb on ``side``, clear of the ego and of the oncoming traffic it meets.

    The parking lane (the bus bay) where there is one, else the outer of two driving lanes when the ego
    (or, on the left, the oncoming traffic that passes the ego) keeps to the inner one.
    """
    layout = p.layout
    parking = [ln for ln in layout.lanes_of(0) if (ln.center < 0) == (side < 0)]
    driving = layout.lanes_of(1 if side < 0 else -1)
    outer = driving[0] if side < 0 else driving[-1]
    lane = parking[0] if parking else (outer if len(driving) > 1 else None)
    if lane is None or lane is ego_lane:
        return None
    if side < 0:  # the bus body must clear the ego's swaying body
        y_in = min(lane.y0 + 0.2 + obj.BUS_WIDTH, lane.y1)
        if y_in > ego.y0 - 2.0 * ego.sway - 0.9 - 0.3:
            return None
    return lane


def _bus_stop(p: _Placer, ego: EgoTrajectory, side: int, ahead: float, bay: Lane | None) -> bool:
    """A bus stop from ``ahead`` metres in front of the ego: a raised boarding platform at the kerb, a shelter,
    people and a cyclist waiting, parked bicycles, and a bus standing in the ``bay`` lane when there is one.

    The platform is a raised island (``flat.other``); parking stops in front of it. A cyclist (rider and
    bicycle, both ``vehicle.bicycle`` as in nuScenes, whose boxes include the rider) waits at its near end.
    Returns whether a bus stands there (not when the stop had to move more than 35 m ahead of the ego).
    """
    rng, layout = p.rng, p.layout
    host = layout.kerbside(side)
    length = float(rng.uniform(8.0, 12.0))
    keys = [f"site{side}", f"walk{side}", f"furniture{side}", f"parking{side}"]
    bus = obj.bus(rng, p.instance(), p.variant()) if bay is not None else None
    lead = 1.0 if bus is None or side > 0 else max(1.0, bus.length - length + 1.5)  # its rear reaches back past it
    x0 = _free_stretch(p, _around(ego.x0 + ahead), length + 7.0 + lead, keys, margin=2.0)
    if x0 is None:
        return False
    x0 += lead - 1.0
    if x0 > ego.x0 + 35.0:
        bus = None
    _take(p, keys, x0 - lead, x0 + length + 7.0)
    if bus is not None:
        # Front door at the platform's far end; nothing drives through it in its lane.
        xf = x0 + length - 0.3 if side < 0 else x0 + 0.3
        cx = xf - bus.length / 2 if side < 0 else xf + bus.length / 2
        # 0.2 m from the kerb, but never over the lane line: in a parking lane narrower than the bus, its body
        # overhangs the kerb instead (by 0.35 m at most) and traffic passes freely.
        w = bus.width / 2
        yb = min(bay.y0 + 0.2 + w, bay.y1 - w) if side < 0 else max(bay.y1 - 0.2 - w, bay.y0 + w)
        p.place(bus, cx, yb, 0.0 if side < 0 else np.pi)
        p.line(f"parking{side}").take(cx - bus.length / 2 - 1.0, cx + bus.length / 2 + 1.0)
        if bay.direction != 0:
            p.standing.append((bay.center, cx - bus.length / 2 - 1.0, cx + bus.length / 2 + 1.0))
    inner = host.y1 if side < 0 else host.y0
    width = float(np.clip(0.6 * (host.y1 - host.y0), 1.0, 2.0))
    top = host.height + 0.12
    yc = inner + side * width / 2
    p.place(obj.pad(length, width, top, MATERIAL_IDS["island"], OTHER_FLAT), x0 + length / 2, yc, 0.0)
    shelter = obj.bus_shelter(rng, p.variant())
    front = inner + side * (width + 0.3)
    ys = front + side * shelter.width / 2
    xs_ = x0 + length / 2 + float(rng.uniform(-1.0, 1.0))
    band = layout.band_at(ys)
    p.place(shelter, xs_, ys, 0.0 if side < 0 else np.pi, host.height if band is None else band.height)
    xc = x0 + 1.1 if side < 0 else x0 + length - 1.1  # the near end, seen first
    p.place(obj.bicycle(rng, p.instance(), p.variant(), rider=True), xc, yc, 0.0 if side < 0 else np.pi, top)
    slots = np.arange(x0 + 0.6, x0 + length - 0.6, 0.9)
    slots = slots[np.abs(slots - xc) > 1.5]
    for x in rng.choice(slots, size=min(len(slots), int(rng.integers(3, 6))), replace=False):
        m = obj.pedestrian(rng, p.instance(), p.variant(), cls=obj.CHILD if rng.random() < 0.15 else obj.PEDESTRIAN,
                           walking=False)
        p.place(m, float(x), yc + float(rng.uniform(-0.2, 0.2)) * width, float(rng.uniform(0, 2 * np.pi)), top)
    yb = front + side * 0.5
    band = layout.band_at(yb)
    xb = xs_ + shelter.length / 2 + 1.3
    for k in range(int(rng.integers(3, 5))):  # along the kerb, so passing traffic sees them side-on
        m = obj.bicycle(rng, p.instance(), p.variant(), rider=False)
        p.place(m, xb + 2.0 * k, yb, float(rng.choice([0.0, np.pi]) + rng.normal(0, 0.05)),
                host.height if band is None else band.height)
    return bus is not None


def _bicycle_rack(p: _Placer, ego: EgoTrajectory) -> None:
    """A row of parked bicycles, side-on, along the outer edge of a wide sidewalk close to the ego.

    Bicycles are thin: only close by do they return enough points to be learned. Pedestrians keep off
    the outer metre of wide sidewalks; the parking lane in front is kept free.
    """
    rng, layout = p.rng, p.layout
    n = int(rng.integers(3, 6))
    length = 1.9 * n
    best = None
    for side in (-1, 1):
        walks = [b for b in layout.bands_of(side, "sidewalk") if b.y1 - b.y0 >= 3.0]
        if not walks:
            continue
        keys = [f"walk{side}", f"rack{side}", f"parking{side}"]
        x = _free_stretch(p, _around(ego.x0 + float(rng.uniform(3.0, 10.0)), behind=8.0, ahead=30.0), length, keys)
        if x is not None and (best is None or abs(x - ego.x0) < abs(best[0] - ego.x0)):
            best = x, side, walks[0]
    if best is not None and abs(best[0] - ego.x0) < 15.0:
        x0, side, band = best
        p.line(f"rack{side}").take(x0, x0 + length)
        p.line(f"parking{side}").take(x0 - 1.0, x0 + length + 1.0)
        y, z = (band.y0 + 0.45 if side < 0 else band.y1 - 0.45), band.height
    else:  # narrow sidewalks: in the furniture strip along the kerb
        x0, y, z = _kerb_spot(p, ego, length, keep_visible=True, start=3.0, sides=(-1, 1), behind=10.0)
    for k in range(n):
        m = obj.bicycle(rng, p.instance(), p.variant(), rider=False)
        yaw = float(rng.choice([0.0, np.pi]) + rng.normal(0, 0.05))
        p.place(m, x0 + 0.95 + 1.9 * k, y + float(rng.normal(0, 0.05)), yaw, z)


def _parking_islands(p: _Placer, ego: EgoTrajectory) -> None:
    """Raised traffic islands (``flat.other``) that end stretches of the parking lanes, one close ahead."""
    rng, layout = p.rng, p.layout
    dx0, dx1 = layout.x_range
    for lane in layout.lanes_of(0):
        side = -1 if lane.center < 0 else 1
        key = f"parking{side}"
        starts = (ego.x0 + float(rng.uniform(4.0, 12.0)), float(rng.uniform(dx0, dx1 - 10.0)))
        for start in starts:
            length = float(rng.uniform(3.0, 6.0))
            x0 = _free_stretch(p, start + np.arange(0.0, 40.0, 1.5), length, [key], margin=3.0)
            if x0 is None:
                continue
            p.line(key).take(x0 - 0.5, x0 + length + 0.5)
            y = lane.center + side * 0.05
            p.place(obj.pad(length, lane.width - 0.1, layout.kerb_height, MATERIAL_IDS["island"], OTHER_FLAT),
                    x0 + length / 2, y, 0.0)
            if rng.random() < 0.5:
                p.place(obj.bush(rng, p.variant()), x0 + length / 2, y, 0.0, layout.kerb_height)
            else:
                p.place(obj.sign_pole(rng, p.variant()), x0 + 0.5, y, 0.0 if side > 0 else np.pi, layout.kerb_height)


def _parking_lot(p: _Placer, ego: EgoTrajectory) -> None:
    """An open-air car park in the building row: asphalt (``flat.driveable_surface``) and rows of parked cars."""
    rng, layout = p.rng, p.layout
    side = int(rng.choice([-1, 1]))
    row = layout.bands_of(side, "buildings")[0]
    length = float(rng.uniform(16.0, 32.0))
    key = f"site{side}"
    x0 = _free_stretch(p, ego.x0 + float(rng.uniform(-30.0, 40.0)) + np.arange(0.0, 60.0, 3.0), length, [key], 2.0)
    if x0 is None:
        return
    p.line(key).take(x0, x0 + length)
    depth = min(row.y1 - row.y0, float(rng.uniform(12.0, 18.0)))
    inner = row.y1 if side < 0 else row.y0
    top = row.height + 0.03
    p.place(obj.pad(length, depth, top, MATERIAL_IDS["asphalt"], DRIVEABLE), x0 + length / 2, inner + side * depth / 2, 0.0)
    rows = [depth - 2.7] + ([2.7] if depth >= 15.0 else [])  # two rows leave a 4 m aisle
    for r, off in enumerate(rows):
        for x in np.arange(x0 + 1.5, x0 + length - 1.3, 2.7):
            if rng.random() < 0.75:
                m = obj.car(rng, p.instance(), p.variant())
                yaw = (np.pi / 2 if (side < 0) == (r == 0) else -np.pi / 2) + float(rng.normal(0, 0.03))
                p.place(m, float(x), inner + side * off, yaw, top)


def _convoy(p: _Placer, cls: int) -> list[Model]:
    """The vehicles of one wanted class, front first: a trailer comes towed by a truck."""
    rng = p.rng
    if cls == obj.TRAILER:
        return [obj.truck(rng, p.instance(), p.variant()), obj.trailer(rng, p.instance(), p.variant())]
    make = {obj.CAR: obj.car, obj.TRUCK: obj.truck, obj.BUS: obj.bus, obj.MOTORCYCLE: obj.motorcycle,
            obj.BICYCLE: obj.bicycle}[cls]
    return [make(rng, p.instance(), p.variant())]


def _traffic(p: _Placer, ego: EgoTrajectory, ego_lane: float, density: float, wanted: list[int]) -> None:
    """Moving vehicles and cyclists in the driving lanes, never in the ego's way.

    The classes in ``wanted`` drive closely spaced in the oncoming lane next to the ego from about
    10 m ahead, so that they pass it within the first second; a wanted trailer, towed by a truck, has
    just passed it; a wanted truck drives ahead of the ego in its lane.
    """
    rng, layout = p.rng, p.layout
    nearest = layout.lanes_of(-1)[0]
    dx0, dx1 = layout.x_range
    vmin, vmax = ego.speed_range
    for lane in layout.lanes:
        if lane.direction == 0:
            continue
        is_ego = abs(lane.center - ego_lane) < 1e-6
        yaw = 0.0 if lane.direction > 0 else np.pi
        if is_ego:
            # Ahead: faster than the ego ever drives; behind: slower. Nobody is ever hit.
            groups = [(ego.x0 + float(rng.uniform(18.0, 30.0)), dx1, vmax + float(rng.uniform(1.0, 4.0)))]
            if vmin > 3.0:
                groups.append((dx0, ego.x0 - 14.0, max(0.5, vmin - float(rng.uniform(1.0, 2.5)))))
        else:
            speed = float(rng.uniform(4.0, 13.0))
            travel = speed * p.duration
            # Cover the region at every moment of the sequence: start upstream by the distance travelled.
            lo, hi = (dx0 - travel, dx1) if lane.direction > 0 else (dx0, dx1 + travel)
            groups = [(lo, hi, speed)]
        for lo, hi, speed in groups:
            y = lane.center
            kept = (np.inf, -np.inf)  # the stretch the wanted ones occupy at t = 0
            if lane.direction > 0 and not is_ego:
                # Nobody drives beside the ego for the whole sequence, hiding one side of the street.
                kept = (ego.x0 - 8.0 - max(0.0, speed - vmin) * p.duration, ego.x0 + 10.0 + max(0.0, vmax - speed) * p.duration)
            if lane is nearest and wanted:
                x = ego.x0 + float(rng.uniform(8.0, 14.0))
                kept = (x - speed * 0.8 - 4.0, x)
                if obj.TRAILER in wanted:
                    # A truck with its trailer has just passed: the trailer's rear is beside the ego, in full view.
                    truck, trailer = _convoy(p, obj.TRAILER)
                    tx = ego.x0 - float(rng.uniform(1.0, 4.0)) - trailer.length
                    p.move(trailer, tx + trailer.length / 2, y + float(rng.normal(0, 0.1)), yaw, speed)
                    p.move(truck, tx - 0.8 - truck.length / 2, y + float(rng.normal(0, 0.1)), yaw, speed)
                    kept = (tx - 0.8 - truck.length - speed * 0.8 - 4.0, x)
                for cls in wanted:
                    if cls == obj.TRAILER:
                        continue
                    if cls == obj.BICYCLE and speed > 9.0:
                        continue  # parked ones will do
                    for m in _convoy(p, cls):  # front first: oncoming traffic drives towards -x
                        p.move(m, x + m.length / 2, y + float(rng.normal(0, 0.15)), yaw, speed)
                        x += m.length + 0.8
                    x += float(rng.uniform(3.0, 8.0)) + speed * 0.8
                kept = (kept[0], x)
            x = lo + float(rng.uniform(0, 10))
            if is_ego and lo > ego.x0 and obj.TRUCK in wanted:  # a truck drives ahead of the ego
                wanted.remove(obj.TRUCK)
                m = _convoy(p, obj.TRUCK)[0]
                p.move(m, x + m.length / 2, y + float(rng.normal(0, 0.1)), yaw, speed)
                x += m.length + float(rng.uniform(6.0, 30.0)) / density + speed * 0.8
            # A bus standing at a stop in this lane: nobody reaches it during the sequence.
            sweep = speed * p.duration
            blocks = [kept] + [(b0 - sweep, b1) if lane.direction > 0 else (b0, b1 + sweep)
                               for c, b0, b1 in p.standing if abs(c - y) < 1e-6]
            while x < hi:
                # One speed per lane group, so nobody drives through anybody; bicycles only when slow.
                m = _vehicle(p, rng.random() * (0.93 if speed > 7.0 else 1.0), _MOVING)
                for b0, b1 in sorted(blocks):
                    if x + m.length > b0 and x < b1:
                        x = b1
                p.move(m, x + m.length / 2, y + float(rng.normal(0, 0.15)), yaw, speed)
                x += m.length + float(rng.uniform(6.0, 30.0)) / density + speed * 0.8


def _pedestrians(p: _Placer, density: float) -> None:
    """People walking along sidewalks and plazas, some standing, a few children."""
    rng, layout = p.rng, p.layout
    dx0, dx1 = layout.x_range
    for band in layout.bands:
        if band.kind not in ("sidewalk", "plaza"):
            continue
        width = band.y1 - band.y0
        side = band.side
        inner = band.y1 if side < 0 else band.y0
        n = int(rng.poisson(0.08 * (dx1 - dx0) * density * (1.0 if band.kind == "sidewalk" else 0.5)))
        for _ in range(n):
            x = float(rng.uniform(dx0, dx1))
            cls = obj.CHILD if rng.random() < 0.1 else obj.PEDESTRIAN
            # Walk clear of the furniture strip along the kerb.
            lo = inner + side * min(1.2, width * 0.45)
            margin = 1.0 if width >= 3.0 else 0.35  # wide sidewalks keep their outer edge for parked bikes
            hi = (band.y0 + margin) if side < 0 else (band.y1 - margin)
            y = float(rng.uniform(min(lo, hi), max(lo, hi)))
            walking = rng.random() < 0.75
            speed = float(rng.uniform(0.9, 1.6)) * (0.8 if cls == obj.CHILD else 1.0)
            reach = speed * p.duration + 1.0 if walking else 0.5  # walkers go either way
            if not p.line(f"walk{side}").free(x - reach, x + reach):
                continue
            if walking:
                yaw = 0.0 if rng.random() < 0.5 else np.pi
                m = obj.pedestrian(rng, p.instance(), p.variant(), cls=cls, walking=True)
                p.move(m, x, y, yaw, speed, band.height, gait=2 * np.pi * speed / 1.5)
            elif layout.x_free(x, 0.5):
                m = obj.pedestrian(rng, p.instance(), p.variant(), cls=cls, walking=False)
                p.place(m, x, y, float(rng.uniform(0, 2 * np.pi)), band.height)


def _parked_bicycles(p: _Placer, density: float) -> None:
    rng, layout = p.rng, p.layout
    dx0, dx1 = layout.x_range
    for band in layout.bands:
        if band.kind not in ("sidewalk", "plaza") or band.y1 - band.y0 < 3.0 or rng.random() > 0.6 * density:
            continue
        x = float(rng.uniform(dx0 + 10, dx1 - 10))
        if not layout.span_free(x - 1.0, x + 4.0, 1.0) or not all(
                p.line(f"{k}{band.side}").free(x - 1.0, x + 4.0) for k in ("walk", "rack")):
            continue
        outer = band.y0 + 0.5 if band.side < 0 else band.y1 - 0.5
        for k in range(int(rng.integers(2, 6))):
            m = obj.bicycle(rng, p.instance(), p.variant(), rider=False)
            p.place(m, x + 0.7 * k, outer, np.pi / 2 + float(rng.normal(0, 0.08)), band.height)


def _intersection_furniture(p: _Placer) -> None:
    rng, layout = p.rng, p.layout
    inter = layout.intersection
    if inter is None:
        return
    ry0, ry1 = layout.road_y
    bx0, bx1 = inter.box
    h = layout.kerb_height
    corners = [(bx0 - 0.6, ry0 - 0.6, -1), (bx1 + 0.6, ry0 - 0.6, -1), (bx0 - 0.6, ry1 + 0.6, 1), (bx1 + 0.6, ry1 + 0.6, 1)]
    for x, y, side in corners:
        reach = float(rng.uniform(3.0, 6.0)) if rng.random() < 0.5 else 0.0
        p.place(obj.traffic_light(rng, reach), x, y, 0.0 if side < 0 else np.pi, h)
    # Cars waiting on the cross street, in the lane heading to the junction.
    for side in (-1, 1):
        n = int(rng.integers(0, 3))
        for k in range(n):
            m = obj.car(rng, p.instance(), p.variant())
            yaw = np.pi / 2 if side < 0 else -np.pi / 2
            xq = inter.x + (inter.half_width / 2 if side < 0 else -inter.half_width / 2)
            yq = (ry0 - 9.0 - 6.5 * k) if side < 0 else (ry1 + 9.0 + 6.5 * k)
            p.place(m, xq, yq, yaw)
    # People waiting at corners.
    for x, y, side in corners:
        if rng.random() < 0.5:
            m = obj.pedestrian(rng, p.instance(), p.variant(), walking=False)
            away = np.sign(x - inter.x)  # step back from the junction onto the corner
            p.place(m, x + away * 1.0, y + side * 1.0, float(rng.uniform(0, 2 * np.pi)), h)


def _median_objects(p: _Placer) -> None:
    rng, layout = p.rng, p.layout
    if layout.median is None:
        return
    dx0, dx1 = layout.x_range
    y = 0.5 * (layout.median[0] + layout.median[1])
    w = layout.median[1] - layout.median[0]
    line = p.line("median")
    for _ in range(int(rng.poisson(0.04 * (dx1 - dx0)))):
        x = float(rng.uniform(dx0, dx1))
        if not layout.x_free(x, 6.0) or not line.take(x - 1.5, x + 1.5):
            continue
        if w > 2.0 and rng.random() < 0.5:
            model = obj.tree(rng, p.variant(), street=True)
        elif rng.random() < 0.5:
            model = obj.bush(rng, p.variant())
        else:
            model = obj.sign_pole(rng, p.variant())
        p.place(model, x, y, 0.0, layout.kerb_height)


def _near(p: _Placer, ego: EgoTrajectory) -> set[int]:
    """Classes placed close to the ego's path, or driving or walking past it in the first second."""
    near = {c for c, x, y in p.static_classes if ego.x0 - 5.0 < x < ego.x0 + 35.0 and abs(y - ego.y0) < 14.0}
    for t in (0.0, 0.5, 1.0):
        ex = float(ego.state(t)[0])
        for cls, start, yaw, speed in zip(p.moving_classes, p.starts, p.yaws, p.speeds):
            x = start[0] + np.cos(yaw) * speed * t
            if ex - 15.0 < x < ex + 40.0:
                near.add(cls)
    return near


def _kerb_line(p: _Placer, side: int) -> tuple[float, float]:
    """(y, z) of the strip along the kerb on ``side``: the sidewalk's inner edge, or the kerbside band's."""
    walks = p.layout.bands_of(side, "sidewalk")
    host = walks[0] if walks else [b for b in p.layout.bands_of(side) if b.kind != "buildings"][0]
    return (host.y1 - 0.45 if side < 0 else host.y0 + 0.45), host.height


def _kerb_free(p: _Placer, ego: EgoTrajectory, side: int, length: float, keep_visible: bool, start: float,
               behind: float = 0.0) -> float | None:
    """The x nearest ``start`` m ahead (up to 45 m ahead, or ``behind`` it at twice the cost) where ``length``
    metres of the kerb strip on ``side`` are free."""
    line, parking = p.line(f"furniture{side}"), p.line(f"parking{side}")
    for x in _around(ego.x0 + start, ahead=45.0 - start, behind=behind):
        x = float(x)
        if not p.layout.span_free(x, x + length, 1.0) or not line.free(x, x + length):
            continue
        if keep_visible and not parking.free(x - 1.0, x + length + 1.0):
            continue
        return x
    return None


def _kerb_spot(p: _Placer, ego: EgoTrajectory, length: float, keep_visible: bool, start: float = 15.0,
               sides: tuple[int, ...] = (-1,), behind: float = 0.0) -> tuple[float, float, float]:
    """(x, y, z) of a free stretch of ``length`` metres at the kerb nearest ``start`` m ahead (see :func:`_kerb_free`),
    on the best of ``sides``.

    With ``keep_visible``, the parking lane in front is kept free so parked cars do not hide it.
    """
    ref = ego.x0 + start
    # The far kerb counts 30 m extra: traffic and the median hide what stands there.
    found = [(abs(x - ref) * (1.0 if x >= ref else 2.0) + (30.0 if side > 0 else 0.0), x, side) for side in sides
             if (x := _kerb_free(p, ego, side, length, keep_visible, start, behind)) is not None]
    if not found:
        y, z = _kerb_line(p, sides[0])
        return ego.x0 + 20.0, y, z  # crowded: stand among the furniture
    _, x, side = min(found)
    p.line(f"furniture{side}").take(x, x + length)
    if keep_visible:
        p.line(f"parking{side}").take(x - 1.0, x + length + 1.0)
    y, z = _kerb_line(p, side)
    return x, y, z


def _guarantee_road_works(p: _Placer, ego: EgoTrajectory) -> None:
    """Cones and barriers at the kerb close to the ego, before parked cars are placed, with no parked car in front.

    Cones are small: those of the road works count only when at least four stand within 3 m behind and
    15 m ahead of the ego; else five tall cones stand at the nearest free stretch of the right kerb, else of
    the median, else of the left kerb.
    """
    near = _near(p, ego)
    cones = sum(c == obj.TRAFFIC_CONE and ego.x0 - 3.0 < x < ego.x0 + 15.0 and abs(y - ego.y0) < 8.0
                for c, x, y in p.static_classes)
    rng = p.rng
    if cones < 4:
        layout = p.layout
        mid = None
        if layout.median is not None:  # a raised median beside the ego's lanes, when the right kerb is taken
            mid = _free_stretch(p, _around(ego.x0 + 4.0, ahead=20.0, behind=10.0), 5.8, ["median"], margin=1.0)
        if mid is not None and _kerb_free(p, ego, -1, 5.8, True, 4.0, behind=14.0) is None:
            p.line("median").take(mid, mid + 5.8)
            x, y, z = mid, 0.5 * (layout.median[0] + layout.median[1]), layout.kerb_height
        else:
            x, y, z = _kerb_spot(p, ego, 5.8, keep_visible=True, start=4.0, sides=(-1, 1), behind=14.0)
        for k in range(5):
            p.place(obj.cone(rng, p.instance(), p.variant(), tall=True), x + 0.5 + 1.2 * k, y, 0.0, z)
    if obj.BARRIER not in near:
        x, y, z = _kerb_spot(p, ego, 6.2, keep_visible=True)
        inward = 1.0 if y < 0 else -1.0  # towards the road
        for _ in range(2):
            m = obj.barrier(rng, p.instance(), p.variant())
            p.place(m, x + m.length / 2, y - inward * 0.1, 0.0, z)
            x += m.length + 0.1


def _wanted(p: _Placer, ego: EgoTrajectory, bus_stands: bool) -> list[int]:
    """Vehicle classes the oncoming traffic must bring past the ego.

    All but cars always come (parked ones are few and often hidden behind others); cars when nothing
    close ahead shows them yet.
    """
    # Small ones first: nothing big drives in front of them, towards the ego, to hide them. Without a bus
    # standing at a stop, the bus comes right after the motorcycle (a car ahead of it would hide it).
    car = [] if obj.CAR in _near(p, ego) else [obj.CAR]
    if not bus_stands:
        return [obj.MOTORCYCLE, obj.BUS, obj.BICYCLE] + car + [obj.TRUCK, obj.TRAILER]
    return [obj.MOTORCYCLE, obj.BICYCLE] + car + [obj.BUS, obj.TRUCK, obj.TRAILER]  # the truck leads the ego


def _guarantee(p: _Placer, ego: EgoTrajectory) -> None:
    """A bicycle or a pedestrian waiting at the right kerb close ahead, if the draw left them out."""
    rng = p.rng
    near = _near(p, ego)
    if obj.BICYCLE not in near:
        x, y, z = _kerb_spot(p, ego, 1.0, keep_visible=False)
        p.place(obj.bicycle(rng, p.instance(), p.variant(), rider=False), x + 0.5, y - 0.5, np.pi / 2, z)
    if not near & {obj.PEDESTRIAN, obj.CHILD, obj.WORKER}:
        x, y, z = _kerb_spot(p, ego, 1.0, keep_visible=False)
        p.place(obj.pedestrian(rng, p.instance(), p.variant(), walking=False), x + 0.5, y - 0.6, 0.0, z)


def build_scene(
    seed: int | np.random.Generator,
    duration: float,
    detail_range: float = 80.0,
    ego_speed: float | None = None,
    ego_body: bool = True,
    density: float = 1.0,
) -> Scene:
    """Draw one street scene and the ego trajectory through it.

    Args:
        seed: integer seed or generator; the same seed gives the same scene.
        duration: length of the sequence in seconds (the street is made long enough).
        detail_range: how far around the ego path objects are placed (about the lidar range).
        ego_speed: mean ego speed in m/s; drawn in 3.5..7 m/s when None.
        ego_body: include the ego vehicle's body (lidar self-returns, visible in cameras).
        density: multiplier on the number of trees, furniture, parked cars and people.

    Returns:
        The scene.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    speed = float(rng.uniform(3.5, 7.0)) if ego_speed is None else float(ego_speed)
    amp = float(rng.uniform(0.0, min(1.5, 0.3 * speed)))
    path = (0.0, speed * duration + amp * duration + 5.0)
    layout = generate_layout(rng, path, detail=detail_range, far=detail_range + 80.0)
    fwd = layout.forward_lanes()
    # Usually the inner lane when there are two (the outer one may hold cyclists and buses).
    ego_lane = fwd[-1] if len(fwd) == 1 or rng.random() < 0.7 else fwd[0]
    ego = EgoTrajectory(
        x0=0.0, y0=ego_lane.center + float(rng.normal(0, 0.1)), speed=speed, speed_amp=amp,
        speed_freq=2 * np.pi / float(rng.uniform(6.0, 14.0)), speed_phase=float(rng.uniform(0, 2 * np.pi)),
        sway=float(rng.uniform(0.0, 0.25)), sway_freq=2 * np.pi / float(rng.uniform(5.0, 12.0)),
        sway_phase=float(rng.uniform(0, 2 * np.pi)),
    )

    p = _Placer(rng, layout, duration)
    p.static.add_layer(ground_mesh(layout, rng))
    # Sites close ahead first: the rows of buildings, trees, furniture and parked cars leave room for them.
    # A bus stands at the stop of the other direction, in full view across the road, or else at ours.
    # A bus stands at the stop of the other direction, in full view across the road; one at ours would hide
    # the stop (its platform, people and cyclist) from the ego.
    far_bay = _bay(p, ego, 1, ego_lane)
    bus_stands = _bus_stop(p, ego, -1, float(rng.uniform(4.0, 12.0)), None)  # ours, on the right
    _construction_zone(p, ego)
    if far_bay is not None or rng.random() < 0.4:  # the stop of the other direction
        bus_stands = _bus_stop(p, ego, 1, float(rng.uniform(12.0, 25.0) if far_bay else rng.uniform(10.0, 40.0)),
                               far_bay) or bus_stands
    _parking_islands(p, ego)
    _guarantee_road_works(p, ego)
    _bicycle_rack(p, ego)
    if rng.random() < 0.5:
        _parking_lot(p, ego)
    _building_rows(p)
    _barrier_rows(p)
    _sidewalk_furniture(p, density)
    _lawns(p, density)
    _cone_clusters(p)
    _parked_vehicles(p, density)
    _intersection_furniture(p)
    _median_objects(p)
    _parked_bicycles(p, density)
    _pedestrians(p, density)
    _traffic(p, ego, ego_lane.center, density, _wanted(p, ego, bus_stands))
    _guarantee(p, ego)

    actors = ActorSet.build(p.models, np.array(p.starts).reshape(-1, 3), np.array(p.yaws), np.array(p.speeds), np.array(p.gaits))
    sun_el = np.deg2rad(float(rng.uniform(25.0, 65.0)))
    sun_az = float(rng.uniform(0, 2 * np.pi))
    sun = np.array([np.cos(sun_el) * np.cos(sun_az), np.cos(sun_el) * np.sin(sun_az), np.sin(sun_el)])
    heading = float(rng.uniform(-np.pi, np.pi))
    offset = (float(rng.uniform(200, 2000)), float(rng.uniform(200, 2000)), 0.0)
    return Scene(
        layout=layout,
        static=p.static.build(),
        actors=actors,
        ego=ego,
        ego_model=obj.ego_body() if ego_body else None,
        sun=sun,
        map_to_global=pose(heading, offset),
    )
