"""Things that move: the ego vehicle's trajectory and the other road users.

Other road users drive or walk in straight lines at constant speed along the street (x axis of the
map frame); pedestrians swing legs and arms with a gait matching their speed. All of them live in one
:class:`ActorSet` whose geometry at any time ``t`` is computed with a few vectorised gathers and no
per-actor Python loop, because it is rebuilt for the lidar and for every camera timestamp.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lidarssl.synthetic.meshes import MeshLayer
from lidarssl.synthetic.objects import Model


@dataclass(frozen=True)
class EgoTrajectory:
    """Smooth ego motion along the street: speed and lateral offset vary sinusoidally.

    ``x(t) = x0 + v t - (a / w)(cos(w t + p) - cos p)`` gives speed ``v + a sin(w t + p)``;
    ``y(t) = y0 + b (sin(u t + q) - sin q)`` sways within the lane. Heading follows the velocity.
    Time is in seconds from the start of the sequence.
    """

    x0: float
    y0: float
    speed: float
    speed_amp: float
    speed_freq: float
    speed_phase: float
    sway: float
    sway_freq: float
    sway_phase: float

    def state(self, t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, yaw) in the map frame at times ``t``."""
        t = np.asarray(t, np.float64)
        w, p = self.speed_freq, self.speed_phase
        x = self.x0 + self.speed * t - (self.speed_amp / w) * (np.cos(w * t + p) - np.cos(p))
        u, q = self.sway_freq, self.sway_phase
        y = self.y0 + self.sway * (np.sin(u * t + q) - np.sin(q))
        vx = self.speed + self.speed_amp * np.sin(w * t + p)
        vy = self.sway * u * np.cos(u * t + q)
        return x, y, np.arctan2(vy, vx)

    def pose(self, t: float) -> np.ndarray:
        """4x4 ego-to-map transform at time ``t`` (the ego frame sits on the ground, rear axle)."""
        x, y, yaw = (float(a) for a in self.state(t))
        c, s = np.cos(yaw), np.sin(yaw)
        T = np.eye(4)
        T[:2, :2] = [[c, -s], [s, c]]
        T[:2, 3] = x, y
        return T

    @property
    def speed_range(self) -> tuple[float, float]:
        """Slowest and fastest forward speed, m/s."""
        return self.speed - self.speed_amp, self.speed + self.speed_amp


@dataclass
class ActorSet:
    """All moving road users, with their meshes in local frames and their motion.

    Attributes:
        local: concatenated local-frame meshes of all actors.
        vertex_part: (V,) global part index per vertex.
        part_actor: (P,) actor owning each part.
        part_pivot: (P, 3) pivot of each part in its actor's frame.
        part_amp: (P,) swing amplitude about the actor's y axis, radians.
        part_phase: (P,) swing phase, radians.
        start: (A, 3) position at t = 0, map frame.
        yaw: (A,) heading, radians.
        speed: (A,) speed along the heading, m/s.
        gait: (A,) swing angular frequency, rad/s (0 for vehicles).
    """

    local: MeshLayer
    vertex_part: np.ndarray
    part_actor: np.ndarray
    part_pivot: np.ndarray
    part_amp: np.ndarray
    part_phase: np.ndarray
    start: np.ndarray
    yaw: np.ndarray
    speed: np.ndarray
    gait: np.ndarray

    @property
    def num_actors(self) -> int:
        return len(self.start)

    @staticmethod
    def build(models: list[Model], start: np.ndarray, yaw: np.ndarray, speed: np.ndarray, gait: np.ndarray) -> ActorSet:
        """Pack models (each already carrying its instance id) with their motion."""
        part_offsets = np.cumsum([0] + [m.num_parts for m in models[:-1]]).astype(np.int32)
        return ActorSet(
            local=MeshLayer.concatenate([m.mesh for m in models]),
            vertex_part=np.concatenate([m.vertex_part + o for m, o in zip(models, part_offsets)]) if models else np.zeros(0, np.int32),
            part_actor=np.concatenate([np.full(m.num_parts, i, np.int32) for i, m in enumerate(models)]) if models else np.zeros(0, np.int32),
            part_pivot=np.concatenate([m.pivots for m in models]) if models else np.zeros((0, 3)),
            part_amp=np.concatenate([m.amplitudes for m in models]) if models else np.zeros(0),
            part_phase=np.concatenate([m.phases for m in models]) if models else np.zeros(0),
            start=np.asarray(start, np.float64).reshape(-1, 3),
            yaw=np.asarray(yaw, np.float64),
            speed=np.asarray(speed, np.float64),
            gait=np.asarray(gait, np.float64),
        )

    def _subset(self, keep: np.ndarray) -> ActorSet:
        """The actors where ``keep`` is True (faces and parts of one actor are contiguous)."""
        part_keep = keep[self.part_actor]
        vert_keep = part_keep[self.vertex_part]
        face_keep = vert_keep[self.local.faces[:, 0]]
        new_vertex = np.cumsum(vert_keep) - 1
        new_part = np.cumsum(part_keep) - 1
        new_actor = np.cumsum(keep) - 1
        m = self.local
        local = MeshLayer(
            m.vertices[vert_keep], new_vertex[m.faces[face_keep]], m.face_class[face_keep],
            m.face_instance[face_keep], m.face_material[face_keep], m.face_variant[face_keep],
        )
        return ActorSet(
            local=local,
            vertex_part=new_part[self.vertex_part[vert_keep]].astype(np.int32),
            part_actor=new_actor[self.part_actor[part_keep]].astype(np.int32),
            part_pivot=self.part_pivot[part_keep],
            part_amp=self.part_amp[part_keep],
            part_phase=self.part_phase[part_keep],
            start=self.start[keep],
            yaw=self.yaw[keep],
            speed=self.speed[keep],
            gait=self.gait[keep],
        )

    def positions(self, t: float) -> np.ndarray:
        """(A, 3) actor origins in the map frame at time ``t``."""
        d = np.stack([np.cos(self.yaw), np.sin(self.yaw), np.zeros_like(self.yaw)], 1)
        return self.start + (self.speed * t)[:, None] * d

    def at(self, t: float, near: np.ndarray | None = None, radius: float = np.inf) -> tuple[MeshLayer, np.ndarray]:
        """The actors' triangles in the map frame at time ``t``, and each actor's bounding box.

        Args:
            t: time in seconds.
            near: (2,) or (3,) map position; with ``radius``, only actors whose origin lies within
                ``radius`` metres (in x, y) of it are returned: the sensors cannot see the others,
                and a smaller dynamic BVH builds faster.
            radius: see ``near``.

        Returns:
            The mesh and (A', 2, 3) axis-aligned boxes (min, max) of the actors it contains.
        """
        if self.num_actors == 0:
            return MeshLayer.empty(), np.zeros((0, 2, 3))
        if near is not None and np.isfinite(radius):
            d = np.linalg.norm(self.positions(t)[:, :2] - np.asarray(near)[:2], axis=1)
            keep = d < radius
            if not keep.all():
                return self._subset(keep).at(t)
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        R_actor = np.zeros((self.num_actors, 3, 3))
        R_actor[:, 0, 0], R_actor[:, 0, 1], R_actor[:, 1, 0], R_actor[:, 1, 1], R_actor[:, 2, 2] = c, -s, s, c, 1.0
        a = self.part_actor
        angle = self.part_amp * np.sin(self.gait[a] * t + self.part_phase)
        ca, sa = np.cos(angle), np.sin(angle)
        R_swing = np.zeros((len(a), 3, 3))
        R_swing[:, 0, 0], R_swing[:, 0, 2], R_swing[:, 1, 1], R_swing[:, 2, 0], R_swing[:, 2, 2] = ca, sa, 1.0, -sa, ca
        # Part transform: swing about its pivot, then the actor's pose.
        R_part = R_actor[a] @ R_swing
        piv = self.part_pivot
        t_local = piv - np.einsum("pij,pj->pi", R_swing, piv)
        t_part = np.einsum("pij,pj->pi", R_actor[a], t_local) + self.positions(t)[a]
        p = self.vertex_part
        v = np.einsum("vij,vj->vi", R_part[p], self.local.vertices) + t_part[p]
        m = self.local
        # Vertices of one actor are contiguous: per-actor boxes are segmented reductions.
        starts = np.searchsorted(a[p], np.arange(self.num_actors))
        boxes = np.stack([np.minimum.reduceat(v, starts), np.maximum.reduceat(v, starts)], axis=1)
        return MeshLayer(v, m.faces, m.face_class, m.face_instance, m.face_material, m.face_variant), boxes
