"""Scene generation: street plans, moving road users, meshes."""

from __future__ import annotations

import numpy as np
import pytest

from lidarssl.synthetic.meshes import MeshLayer
from lidarssl.synthetic.objects import PEDESTRIAN
from lidarssl.synthetic.scene import build_scene


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_street_plans_are_consistent(seed: int) -> None:
    scene = build_scene(np.random.default_rng(seed), duration=4.0)
    layout = scene.layout
    lanes = layout.lanes
    for a, b in zip(lanes[:-1], lanes[1:]):
        gap = b.y0 - a.y1
        assert gap == pytest.approx(0.0) or (layout.median is not None and gap > 1.0)
    assert all(ln.y1 <= 0 for ln in lanes if ln.direction > 0) and all(ln.y0 >= 0 for ln in lanes if ln.direction < 0)
    for side in (-1, 1):
        bands = layout.bands_of(side)
        assert bands[-1].kind == "buildings"
        edges = [(b.y0, b.y1) for b in bands]
        for (a0, a1), (b0, b1) in zip(edges[:-1], edges[1:]):
            assert (a0 == pytest.approx(b1)) if side < 0 else (a1 == pytest.approx(b0))
    assert any(b.kind in ("lawn", "verge") for b in layout.bands)
    assert any(b.kind == "sidewalk" for b in layout.bands)
    # The ego starts in a forward lane and stays on the road.
    x, y, _ = scene.ego.state(np.linspace(0, 4, 41))
    lane_ys = [(ln.y0, ln.y1) for ln in lanes if ln.direction > 0]
    assert all(any(lo < yy < hi for lo, hi in lane_ys) for yy in y)
    assert np.all(np.diff(x) > 0)


def test_distant_actors_are_culled_exactly() -> None:
    actors = build_scene(np.random.default_rng(3), duration=4.0).actors
    full, boxes = actors.at(1.3)
    near = np.array([10.0, 0.0, 0.0])
    part, part_boxes = actors.at(1.3, near, 40.0)
    keep = np.linalg.norm(actors.positions(1.3)[:, :2] - near[:2], axis=1) < 40.0
    assert 0 < keep.sum() < actors.num_actors
    face_actor = actors.part_actor[actors.vertex_part][actors.local.faces[:, 0]]
    assert np.allclose(full.vertices[full.faces][keep[face_actor]], part.vertices[part.faces])
    assert np.array_equal(full.face_instance[keep[face_actor]], part.face_instance)
    assert np.allclose(boxes[keep], part_boxes)
    assert np.all(boxes[:, 0] <= boxes[:, 1])


def test_pedestrians_swing_their_limbs_and_vehicles_stay_rigid() -> None:
    actors = build_scene(np.random.default_rng(0), duration=4.0).actors
    a, _ = actors.at(0.0)
    b, _ = actors.at(0.4)
    vertex_actor = actors.part_actor[actors.vertex_part]
    cls = np.zeros(actors.num_actors, int)
    cls[vertex_actor[actors.local.faces[:, 0]]] = actors.local.face_class  # one class per actor
    walker = np.flatnonzero((cls == PEDESTRIAN) & (actors.gait > 0))[0]
    vehicle = np.flatnonzero(actors.gait == 0)[0]

    def shape(mesh: MeshLayer, k: int) -> np.ndarray:
        """Pairwise distances between the vertices of actor ``k``."""
        v = mesh.vertices[vertex_actor == k]
        return np.linalg.norm(v[:, None] - v[None], axis=-1)

    assert not np.allclose(shape(a, walker), shape(b, walker), atol=1e-3)  # legs and arms moved
    assert np.allclose(shape(a, vehicle), shape(b, vehicle), atol=1e-6)
    moved = np.linalg.norm(actors.positions(0.4) - actors.positions(0.0), axis=1)
    assert np.allclose(moved, actors.speed * 0.4)
