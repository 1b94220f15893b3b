"""Ray casting against the scene with Embree (through embreex, the binding trimesh's ray module uses).

The world is split in two BVHs: the **static** one (street, buildings, parked cars; tens of
thousands of triangles) is built once per sequence, and a small **dynamic** one (moving road users
near the sensor, the ego body) is built for each timestamp. Embree builds at about a microsecond per
triangle here, so rebuilding one merged BVH for the lidar and each of six camera timestamps would
cost more than the rays. Rays are cast against the static BVH first, then against the dynamic one
with the static hit distance as the far limit (Embree culls everything behind it), and only for the
rays that can reach a moving object at all.

We call embreex directly rather than through ``trimesh.ray.ray_pyembree.RayMeshIntersector``: that
wrapper converts every batch to float64 and back, normalises directions again and returns no hit
distance, which together cost more than the ray queries on camera-sized batches. The BVH and query
are the same (an Embree triangle scene; single-ray queries; float32).

Face indices returned by :meth:`FrameGeometry.cast` index the concatenation static + dynamic, and
:class:`FrameGeometry` holds the per-face attribute arrays in that order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from embreex import rtcore_scene
from embreex.mesh_construction import TriangleMesh

from lidarssl.synthetic.meshes import MeshLayer

_F32 = np.float32
# Embree reports misses with tfar at its initial value; ours is this.
_FAR = np.float32(1e30)


def _buf(a: np.ndarray) -> np.ndarray:
    """A C-contiguous, writable float32 array (embreex rejects read-only buffers such as broadcasts)."""
    return np.require(a, _F32, ["C_CONTIGUOUS", "WRITEABLE"])


def _origins(origins: np.ndarray, n: int) -> np.ndarray:
    """(n, 3) float32 ray origins from (n, 3) or one shared (3,) origin (a camera)."""
    o = np.asarray(origins)
    return _buf(np.broadcast_to(o.astype(_F32), (n, 3)) if o.ndim == 1 else o)


class BVH:
    """An Embree BVH over one triangle mesh, in map coordinates.

    The map frame keeps the street within a few hundred metres of its origin, where float32 (what
    Embree computes in) resolves 0.03 mm; the ray origins therefore need no re-centring, and one
    float32 batch serves both the static and the dynamic BVH.
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray) -> None:
        self._scene = rtcore_scene.EmbreeScene()
        TriangleMesh(scene=self._scene, vertices=_buf(vertices), indices=np.ascontiguousarray(faces, np.int32))
        # Embree commits (builds) lazily on the first query; do it now so the cost lands here.
        self._scene.run(np.zeros((1, 3), _F32), np.array([[0.0, 0.0, 1.0]], _F32))

    def intersect(
        self, origins: np.ndarray, directions: np.ndarray, tmax: np.ndarray | float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """First hit of each ray.

        Args:
            origins: (N, 3) float32 ray origins (see :func:`_origins`).
            directions: (N, 3) unit directions.
            tmax: far limit per ray or for all rays; hits beyond it are ignored.

        Returns:
            (N,) int64 face index or -1, and (N,) float32 distance (``inf`` where missed).
        """
        n = len(directions)
        if n == 0:
            return np.zeros(0, np.int64), np.zeros(0, _F32)
        far = np.full(n, _FAR, _F32) if tmax is None else _buf(np.broadcast_to(np.minimum(tmax, _FAR), (n,)))
        res = self._scene.run(_buf(origins), _buf(directions), dists=far, output=1)
        prim = res["primID"].astype(np.int64)
        t = np.where(prim >= 0, res["tfar"], np.inf).astype(_F32)
        return prim, t

    def occluded(self, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """(N,) True where the ray hits anything."""
        n = len(directions)
        if n == 0:
            return np.zeros(0, bool)
        res = self._scene.run(_buf(origins), _buf(directions), query="OCCLUDED")
        return np.asarray(res) >= 0


class StaticGeometry:
    """The part of a scene that never moves, with its BVH; build once, share across frames."""

    def __init__(self, layer: MeshLayer) -> None:
        self.layer = layer
        self.normals = layer.face_normals().astype(_F32)
        self.bvh = BVH(layer.vertices, layer.faces) if layer.num_faces else None


@dataclass
class Hits:
    """The rays of a batch that hit something, with what they hit (misses are left out).

    Attributes:
        ray: (H,) indices of the rays that hit, increasing.
        face: (H,) face index into the frame's attribute arrays.
        distance: (H,) float64 metres along the ray.
        normal: (H, 3) float32 unit surface normals facing back along the ray.
    """

    ray: np.ndarray
    face: np.ndarray
    distance: np.ndarray
    normal: np.ndarray


class FrameGeometry:
    """Static plus dynamic geometry at one instant: cast rays, look up per-face attributes.

    Args:
        static: the shared static geometry.
        dynamic: moving geometry at this instant.
        dynamic_boxes: (K, 2, 3) map-frame bounding boxes (min, max) of the moving objects; rays
            that cannot reach any of them may skip the dynamic BVH (see ``cast``).

    Attributes:
        face_class, face_instance, face_material, face_variant: per-face arrays, static faces first.
        dynamic_boxes: as given (empty when None).
    """

    def __init__(self, static: StaticGeometry, dynamic: MeshLayer, dynamic_boxes: np.ndarray | None = None) -> None:
        self._static = static
        self._dynamic_bvh = BVH(dynamic.vertices, dynamic.faces) if dynamic.num_faces else None
        s = static.layer
        self.num_static = s.num_faces
        self.face_class = np.concatenate([s.face_class, dynamic.face_class])
        self.face_instance = np.concatenate([s.face_instance, dynamic.face_instance])
        self.face_material = np.concatenate([s.face_material, dynamic.face_material])
        self.face_variant = np.concatenate([s.face_variant, dynamic.face_variant])
        self._normals = np.concatenate([static.normals, dynamic.face_normals().astype(_F32)])
        self.dynamic_boxes = np.zeros((0, 2, 3)) if dynamic_boxes is None else dynamic_boxes

    def cast(
        self,
        origins: np.ndarray,
        directions: np.ndarray,
        max_distance: float | None = None,
        dynamic_rays: np.ndarray | None = None,
    ) -> Hits:
        """Cast rays and keep the nearest hit over both BVHs.

        Args:
            origins: (N, 3) ray origins, or (3,) one origin shared by all rays (a camera).
            directions: (N, 3) unit directions.
            max_distance: ignore surfaces farther than this.
            dynamic_rays: indices of the only rays that may hit moving objects (None: all rays).

        Returns:
            The rays that hit; normals are flipped to face the incoming ray.
        """
        n = len(directions)
        origins = _origins(origins, n)
        directions = _buf(directions)
        if self._static.bvh is not None:
            face, dist = self._static.bvh.intersect(origins, directions, max_distance)
        else:
            face, dist = np.full(len(directions), -1, np.int64), np.full(len(directions), np.inf, _F32)
        if self._dynamic_bvh is not None:
            sel = np.arange(n) if dynamic_rays is None else dynamic_rays
            # Only nearer than the static hit: Embree skips everything behind it.
            limit = dist[sel] if max_distance is None else np.minimum(dist[sel], max_distance)
            f_d, d_d = self._dynamic_bvh.intersect(origins[sel], directions[sel], limit)
            won = f_d >= 0
            face[sel[won]] = f_d[won] + self.num_static
            dist[sel[won]] = d_d[won]
        ray = np.flatnonzero(face >= 0)
        face = face[ray]
        nrm = self._normals[face]
        flip = np.einsum("ij,ij->i", nrm, directions[ray]) > 0
        nrm[flip] *= -1
        return Hits(ray, face, dist[ray].astype(np.float64), nrm)

    def occluded(self, origins: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """(N,) True where a ray from ``origins`` along the unit ``direction`` hits anything (shadows)."""
        origins = _origins(origins, len(origins))
        dirs = _buf(np.broadcast_to(np.asarray(direction, _F32), origins.shape))
        blocked = np.zeros(len(origins), bool)
        if self._static.bvh is not None:
            blocked = self._static.bvh.occluded(origins, dirs)
        if self._dynamic_bvh is not None:
            todo = np.nonzero(~blocked)[0]  # only rays the static world let through
            blocked[todo] = self._dynamic_bvh.occluded(origins[todo], dirs[todo])
        return blocked
