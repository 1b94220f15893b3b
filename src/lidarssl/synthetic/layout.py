"""The street plan: lanes, kerbs, sidewalks, verges, building rows and an optional intersection.

All coordinates are in the **map frame** (metres): x along the main road (the ego drives towards
+x), y to the left, z up, the road surface at z = 0. Traffic keeps to the right, so forward lanes
have y < 0. The plan is a list of axis-aligned strips across the road (:class:`Band`) cut where the
cross street passes; :func:`ground_mesh` turns it into triangles and :meth:`StreetLayout.markings`
paints lane lines, crosswalks and stop lines as a texture of the road (same class as the road).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lidarssl.synthetic.materials import MATERIAL_IDS
from lidarssl.synthetic.meshes import MeshBuilder, MeshLayer
from lidarssl.synthetic.noise import fractal2

# nuScenes-lidarseg raw ids used by the ground.
DRIVEABLE, OTHER_FLAT, SIDEWALK, TERRAIN = 24, 25, 26, 27

#: Width of the zebra crosswalk and the gap between it and the intersection box.
CROSSWALK = (0.8, 4.0)


@dataclass(frozen=True)
class Lane:
    """One lane of the main road.

    Attributes:
        y0, y1: extent across the road (y0 < y1).
        direction: +1 traffic towards +x, -1 towards -x, 0 a parking lane.
    """

    y0: float
    y1: float
    direction: int

    @property
    def center(self) -> float:
        return 0.5 * (self.y0 + self.y1)

    @property
    def width(self) -> float:
        return self.y1 - self.y0


@dataclass(frozen=True)
class Band:
    """A strip beside the road, between y0 and y1, running along x.

    Attributes:
        kind: ``sidewalk``, ``verge`` (grass between kerb and sidewalk), ``lawn`` (grass setback),
            ``plaza`` (paved setback) or ``buildings`` (the row the buildings stand in).
        height: surface height above the road.
        side: -1 right of the road (y < 0), +1 left.
    """

    y0: float
    y1: float
    kind: str
    height: float
    side: int


@dataclass(frozen=True)
class Intersection:
    """A cross street along y, centred at ``x``; its road is ``2 * half_width`` wide."""

    x: float
    half_width: float
    sidewalk: float
    island: bool  # a raised traffic island in the middle of the cross street

    @property
    def box(self) -> tuple[float, float]:
        """x range of the cross road surface."""
        return self.x - self.half_width, self.x + self.half_width

    @property
    def cut(self) -> tuple[float, float]:
        """x range cut out of the bands outside the sidewalks (cross road plus its sidewalks)."""
        return self.x - self.half_width - self.sidewalk, self.x + self.half_width + self.sidewalk


@dataclass
class StreetLayout:
    """The plan of one street scene.

    Attributes:
        x_range: x extent of the detailed region (objects, uneven terrain).
        far_range: x extent of the cheap geometry (road, buildings) that fills the horizon.
        lanes: lanes of the main road from right (y < 0) to left.
        median: y extent of a raised traffic island between the directions, or None.
        bands: strips beside the road on both sides, inner to outer.
        intersection: the cross street, or None.
        kerb_height: height of sidewalks above the road.
        yellow_centre: US-style double yellow centre line (else a white dashed one).
        dash: (length, period) of dashed lane lines.
        far_y: half width of the whole scene across the road.
    """

    x_range: tuple[float, float]
    far_range: tuple[float, float]
    lanes: list[Lane]
    median: tuple[float, float] | None
    bands: list[Band]
    intersection: Intersection | None
    kerb_height: float
    yellow_centre: bool
    dash: tuple[float, float]
    far_y: float
    _lines: list[tuple[float, float, str, str]] = field(default_factory=list, init=False, repr=False)

    @property
    def road_y(self) -> tuple[float, float]:
        return self.lanes[0].y0, self.lanes[-1].y1

    def forward_lanes(self) -> list[Lane]:
        return [ln for ln in self.lanes if ln.direction > 0]

    def lanes_of(self, direction: int) -> list[Lane]:
        return [ln for ln in self.lanes if ln.direction == direction]

    def bands_of(self, side: int, kind: str | None = None) -> list[Band]:
        return [b for b in self.bands if b.side == side and (kind is None or b.kind == kind)]

    def band_at(self, y: float) -> Band | None:
        """The band under ``y``, or None on the road."""
        return next((b for b in self.bands if b.y0 <= y <= b.y1), None)

    def kerbside(self, side: int) -> Band:
        """The band along the kerb on ``side``: a sidewalk, a verge, or a rural side's lawn."""
        return self.bands_of(side)[0]

    def x_free(self, x: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """True where ``x`` is clear of the cross street (plus ``margin``), for placing objects."""
        if self.intersection is None:
            return np.ones(np.shape(x), bool)
        c0, c1 = self.intersection.cut
        return (np.asarray(x) < c0 - margin) | (np.asarray(x) > c1 + margin)

    def span_free(self, x0: float, x1: float, margin: float = 0.0) -> bool:
        """True where the whole stretch ``[x0, x1]`` is clear of the cross street (plus ``margin``)."""
        if self.intersection is None:
            return True
        c0, c1 = self.intersection.cut
        return x1 < c0 - margin or x0 > c1 + margin

    # -----------------------------------------------------------------------------------------
    # Road markings, evaluated per hit point (vectorised).

    def _line_specs(self) -> list[tuple[float, float, str, str]]:
        """(y, width, pattern, colour) of every longitudinal line on the main road."""
        if self._lines:
            return self._lines
        lines: list[tuple[float, float, str, str]] = []
        lanes = self.lanes
        for a, b in zip(lanes[:-1], lanes[1:]):
            y = a.y1
            if self.median is not None and a.y1 < self.median[1] and b.y0 > self.median[0]:
                continue  # the island separates them
            if a.direction == 0 or b.direction == 0:
                lines.append((y, 0.12, "solid", "white"))  # parking edge
            elif a.direction == b.direction:
                lines.append((y, 0.12, "dashed", "white"))
            elif self.yellow_centre:
                lines.append((y - 0.12, 0.10, "solid", "yellow"))
                lines.append((y + 0.12, 0.10, "solid", "yellow"))
            else:
                lines.append((y, 0.12, "dashed", "white"))
        # Edge lines where a driving lane meets a kerb.
        if lanes[0].direction != 0:
            lines.append((lanes[0].y0 + 0.25, 0.12, "solid", "white"))
        if lanes[-1].direction != 0:
            lines.append((lanes[-1].y1 - 0.25, 0.12, "solid", "white"))
        if self.median is not None:
            lines.append((self.median[0] - 0.2, 0.12, "solid", "yellow" if self.yellow_centre else "white"))
            lines.append((self.median[1] + 0.2, 0.12, "solid", "yellow" if self.yellow_centre else "white"))
        self._lines = lines
        return lines

    def markings(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where road points lie on white and on yellow paint.

        Args:
            x, y: map coordinates of points on the road surface.

        Returns:
            Two boolean arrays (white, yellow) shaped like ``x``.
        """
        x = np.asarray(x, np.float32)  # float32 is exact enough (1e-4 m) and twice as fast
        y = np.asarray(y, np.float32)
        white = np.zeros(x.shape, bool)
        yellow = np.zeros(x.shape, bool)
        ry0, ry1 = self.road_y
        on_main = (y >= ry0) & (y <= ry1)
        inter = self.intersection
        if inter is not None:
            bx0, bx1 = inter.box
            cw, gap = CROSSWALK
            near_box = (x > bx0 - gap - 0.5) & (x < bx1 + gap + 0.5)
        else:
            near_box = np.zeros(x.shape, bool)
        longitudinal = on_main & ~near_box
        dash_len, period = self.dash
        dashed_on = np.mod(x, period) < dash_len
        for yl, w, pattern, colour in self._line_specs():
            m = longitudinal & (np.abs(y - yl) < w / 2)
            if pattern == "dashed":
                m &= dashed_on
            if colour == "white":
                white |= m
            else:
                yellow |= m
        # Parking bay ticks.
        for ln in self.lanes:
            if ln.direction == 0:
                white |= longitudinal & (y > ln.y0) & (y < ln.y1) & (np.mod(x, 6.0) < 0.12)
        if inter is not None:
            bx0, bx1 = inter.box
            cw, gap = CROSSWALK
            # Zebra crosswalks across the main road on both sides of the junction.
            in_cw = ((x > bx0 - gap) & (x < bx0 - cw)) | ((x > bx1 + cw) & (x < bx1 + gap))
            white |= on_main & in_cw & (np.mod(y - ry0, 1.0) < 0.5)
            # Stop lines before the crosswalk, across the lanes heading into the junction.
            for ln in self.lanes:
                if ln.direction > 0:
                    white |= (y > ln.y0) & (y < ln.y1) & (x > bx0 - gap - 0.9) & (x < bx0 - gap - 0.5)
                elif ln.direction < 0:
                    white |= (y > ln.y0) & (y < ln.y1) & (x > bx1 + gap + 0.5) & (x < bx1 + gap + 0.9)
            # Cross street: dashed centre line outside the junction box.
            on_cross = (x > bx0) & (x < bx1) & ((y < ry0 - 1.0) | (y > ry1 + 1.0))
            centre = on_cross & (np.abs(x - inter.x) < 0.07) & (np.mod(y, 9.0) < 3.0)
            if inter.island:
                centre &= np.abs(y) > ry1 + 14.0  # the island takes the centre near the junction
            white |= centre
        return white, yellow


# ---------------------------------------------------------------------------------------------
# Plan generation.


def generate_layout(rng: np.random.Generator, path_x: tuple[float, float], detail: float, far: float) -> StreetLayout:
    """Draw a street plan around an ego path.

    Args:
        rng: source of randomness.
        path_x: x range the ego drives over.
        detail: how far beyond the path objects are placed (about the lidar range).
        far: how far beyond the path the road and buildings continue.

    Returns:
        The plan; lanes always include at least one forward lane for the ego.
    """
    lane_w = float(rng.uniform(3.0, 3.6))
    n_fwd = int(rng.choice([1, 2], p=[0.55, 0.45]))
    n_back = n_fwd if rng.random() < 0.8 else max(1, 3 - n_fwd)
    median_w = float(rng.uniform(1.2, 3.0)) if rng.random() < (0.55 if n_fwd + n_back >= 3 else 0.3) else 0.0

    lanes: list[Lane] = []
    y = -median_w / 2
    fwd = []
    for _ in range(n_fwd):
        fwd.append(Lane(y - lane_w, y, +1))
        y -= lane_w
    if rng.random() < 0.6:
        pw = float(rng.uniform(2.2, 2.6))
        fwd.append(Lane(y - pw, y, 0))
    lanes.extend(reversed(fwd))
    y = median_w / 2
    for _ in range(n_back):
        lanes.append(Lane(y, y + lane_w, -1))
        y += lane_w
    if rng.random() < 0.6:
        pw = float(rng.uniform(2.2, 2.6))
        lanes.append(Lane(y, y + pw, 0))
    median = (-median_w / 2, median_w / 2) if median_w > 0 else None

    kerb = float(rng.uniform(0.12, 0.18))
    # At most one side is rural (grass, no sidewalk), and the street always has some grass.
    rural_side = int(rng.choice([-1, 1])) if rng.random() < 0.15 else 0
    bands: list[Band] = []
    for side in (-1, 1):
        out = lanes[0].y0 if side < 0 else lanes[-1].y1

        def push(width: float, kind: str, height: float) -> None:
            nonlocal out
            y0, y1 = (out - width, out) if side < 0 else (out, out + width)
            bands.append(Band(y0, y1, kind, height, side))
            out = y0 if side < 0 else y1

        if side == rural_side:
            push(float(rng.uniform(4.0, 9.0)), "lawn", 0.0)
        else:
            if rng.random() < 0.3:
                push(float(rng.uniform(1.0, 2.8)), "verge", kerb)
            push(float(rng.uniform(1.8, 4.5)), "sidewalk", kerb)
        setback = float(rng.uniform(0.0, 9.0))
        lawn = rng.random() < 0.6
        if side > 0 and not any(b.kind in ("lawn", "verge") for b in bands):
            setback, lawn = max(setback, 2.5), True
        if setback > 1.0:
            push(setback, "lawn" if lawn else "plaza", kerb)
        push(float(rng.uniform(12.0, 25.0)), "buildings", kerb)

    x_lo, x_hi = path_x
    inter = None
    if rng.random() < 0.6:
        hw = lane_w * float(rng.uniform(0.9, 1.3))
        sw = float(rng.uniform(2.0, 3.5))
        xi = float(rng.uniform(x_lo + 15.0, x_hi + 45.0))
        inter = Intersection(xi, hw, sw, island=bool(rng.random() < 0.5))
    far_y = max(max(abs(bd.y0), abs(bd.y1)) for bd in bands) + 40.0
    return StreetLayout(
        x_range=(x_lo - detail, x_hi + detail),
        far_range=(x_lo - far, x_hi + far),
        lanes=lanes,
        median=median,
        bands=bands,
        intersection=inter,
        kerb_height=kerb,
        yellow_centre=bool(rng.random() < 0.5),
        dash=(3.0, float(rng.choice([9.0, 12.0]))),
        far_y=far_y,
    )


# ---------------------------------------------------------------------------------------------
# Ground geometry.


def _spans(x0: float, x1: float, cut: tuple[float, float] | None) -> list[tuple[float, float]]:
    """[x0, x1] minus ``cut``."""
    if cut is None or cut[1] <= x0 or cut[0] >= x1:
        return [(x0, x1)]
    out = []
    if cut[0] > x0:
        out.append((x0, cut[0]))
    if cut[1] < x1:
        out.append((cut[1], x1))
    return out


def _quad(b: MeshBuilder, x0: float, x1: float, y0: float, y1: float, z: float, mat: int, cls: int) -> None:
    v = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]])
    b.add(v, np.array([[0, 1, 2], [0, 2, 3]]), mat, cls=cls, inst=0)


def _slab(
    b: MeshBuilder, x0: float, x1: float, y0: float, y1: float, z: float, top: int, cls: int,
    side: int | None = None, variant: int = 0,
) -> None:
    """A raised slab from below the road up to ``z``; its sides are the kerb faces."""
    rect = (x0, x1, y0, y1)
    side = MATERIAL_IDS["kerb"] if side is None else side
    b.tapered_box(rect, rect, (-0.3, z), side, top_material=top, cls=cls, inst=0, variant=variant)


def _terrain_grid(
    b: MeshBuilder, x0: float, x1: float, y0: float, y1: float, z: float, cell: float, amp: float
) -> None:
    """Uneven grass as a height field; the edges stay at ``z`` so it meets kerbs and walls cleanly."""
    nx = max(1, int(np.ceil((x1 - x0) / cell)))
    ny = max(1, int(np.ceil((y1 - y0) / cell)))
    xs = np.linspace(x0, x1, nx + 1)
    ys = np.linspace(y0, y1, ny + 1)
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    Z = z + amp * np.clip(fractal2(X / 3.0 + 11.0, Y / 3.0 + 5.0, octaves=2), -1.0, 1.0)
    edge = np.zeros_like(X, bool)
    edge[[0, -1], :] = True
    edge[:, [0, -1]] = True
    Z = np.where(edge, z, Z)
    v = np.stack([X, Y, Z], -1).reshape(-1, 3)
    idx = np.arange((nx + 1) * (ny + 1)).reshape(nx + 1, ny + 1)
    a, bb, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    f = np.concatenate([np.stack([a, bb, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    b.add(v, f, MATERIAL_IDS["grass"], cls=TERRAIN, inst=0)
    if z > 0.01:
        # Soil below the lowest dip of the grass: its sides close the border of raised lawns.
        _slab(b, x0, x1, y0, y1, z - amp - 0.01, MATERIAL_IDS["soil"], TERRAIN, side=MATERIAL_IDS["soil"])


def _flat_grass(b: MeshBuilder, x0: float, x1: float, y0: float, y1: float, z: float) -> None:
    if z > 0.01:
        _slab(b, x0, x1, y0, y1, z, MATERIAL_IDS["grass"], TERRAIN, side=MATERIAL_IDS["soil"])
    else:
        _quad(b, x0, x1, y0, y1, z, MATERIAL_IDS["grass"], TERRAIN)


def ground_mesh(layout: StreetLayout, rng: np.random.Generator) -> MeshLayer:
    """Triangles of road, median, sidewalks, grass, the cross street and the far ground plane."""
    b = MeshBuilder()
    asphalt, paving, grass = MATERIAL_IDS["asphalt"], MATERIAL_IDS["paving"], MATERIAL_IDS["grass"]
    island = MATERIAL_IDS["island"]
    fx0, fx1 = layout.far_range
    dx0, dx1 = layout.x_range
    inter = layout.intersection
    ry0, ry1 = layout.road_y
    box = inter.box if inter is not None else None
    cut = inter.cut if inter is not None else None

    # Main road surface (a single quad; the median island sits on top of it).
    _quad(b, fx0, fx1, ry0, ry1, 0.0, asphalt, DRIVEABLE)
    if layout.median is not None:
        my0, my1 = layout.median
        for x0, x1 in _spans(fx0, fx1, None if box is None else (box[0] - CROSSWALK[1], box[1] + CROSSWALK[1])):
            _slab(b, x0, x1, my0, my1, layout.kerb_height, island, OTHER_FLAT, side=island)

    for band in layout.bands:
        # Sidewalks stop at the cross road; everything behind them also leaves room for its sidewalks.
        band_cut = box if band.kind in ("sidewalk", "verge") else cut
        for x0, x1 in _spans(fx0, fx1, band_cut):
            if band.kind == "sidewalk":
                _slab(b, x0, x1, band.y0, band.y1, band.height, paving, SIDEWALK)
            elif band.kind == "plaza":
                _slab(b, x0, x1, band.y0, band.y1, band.height, paving, SIDEWALK, variant=1)
            elif band.kind in ("verge", "lawn"):
                # Uneven grass near the path, flat far away where nobody sees the difference.
                lo, hi = max(x0, dx0), min(x1, dx1)
                if hi > lo:
                    amp = 0.06 if band.kind == "lawn" else 0.03
                    _terrain_grid(b, lo, hi, band.y0, band.y1, band.height, 1.5, amp)
                for px0, px1 in ((x0, min(x1, dx0)), (max(x0, dx1), x1)):
                    if px1 > px0:
                        _flat_grass(b, px0, px1, band.y0, band.y1, band.height)
            else:  # the building row: flat grass between the buildings
                _flat_grass(b, x0, x1, band.y0, band.y1, band.height)

    if inter is not None:
        far_y = layout.far_y
        # Cross road beyond the main road on both sides.
        for y0, y1 in ((-far_y, ry0), (ry1, far_y)):
            _quad(b, box[0], box[1], y0, y1, 0.0, asphalt, DRIVEABLE)
        # Its sidewalks, from behind the main sidewalks outwards.
        for side in (-1, 1):
            side_bands = layout.bands_of(side)
            inner = [bd for bd in side_bands if bd.kind in ("sidewalk", "verge")]
            if inner:
                start = min(bd.y0 for bd in inner) if side < 0 else max(bd.y1 for bd in inner)
            else:
                start = ry0 if side < 0 else ry1
            y0, y1 = (-far_y, start) if side < 0 else (start, far_y)
            h = layout.kerb_height
            _slab(b, cut[0], box[0], y0, y1, h, paving, SIDEWALK)
            _slab(b, box[1], cut[1], y0, y1, h, paving, SIDEWALK)
            if inter.island:
                # A raised island in the cross street, clear of the junction box.
                yy0, yy1 = (start - 14.0, start - 4.0) if side < 0 else (start + 4.0, start + 14.0)
                _slab(b, inter.x - 0.9, inter.x + 0.9, yy0, yy1, h, island, OTHER_FLAT, side=island)

    # Far ground plane under everything: fills the horizon and any crack.
    fy = layout.far_y + 60.0
    _quad(b, fx0 - 60.0, fx1 + 60.0, -fy, fy, -0.05, grass, TERRAIN)
    return b.build()
