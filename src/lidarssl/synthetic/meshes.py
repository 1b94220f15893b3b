"""Triangle meshes with per-face semantics, and a builder that assembles them from primitives.

Every surface of the synthetic world is a triangle that carries four per-face attributes: the
nuScenes-lidarseg raw class id, an instance id (0 for stuff), a material id (lidar reflectivity,
base colour and texture, see :mod:`lidarssl.synthetic.materials`) and a ``variant``: a small random
integer per object that textures use to pick a paint colour, a facade style or a sign colour.

Objects are assembled from a handful of cached unit primitives (box, cylinder, cone, icosphere,
tapered box) by :class:`MeshBuilder`, which appends transformed copies into flat arrays; building a
``trimesh.Trimesh`` per part and concatenating them is two orders of magnitude slower.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import trimesh


@dataclass
class MeshLayer:
    """Triangles with one class, instance, material and variant per face.

    Attributes:
        vertices: (V, 3) float64 positions, metres.
        faces: (F, 3) int64 vertex indices.
        face_class: (F,) uint8 nuScenes-lidarseg raw class ids.
        face_instance: (F,) int32 instance ids, 0 for stuff.
        face_material: (F,) uint8 ids into :data:`~lidarssl.synthetic.materials.MATERIALS`.
        face_variant: (F,) uint16 per-object style seed read by the textures.
    """

    vertices: np.ndarray
    faces: np.ndarray
    face_class: np.ndarray
    face_instance: np.ndarray
    face_material: np.ndarray
    face_variant: np.ndarray

    @property
    def num_faces(self) -> int:
        return len(self.faces)

    def transformed(self, T: np.ndarray) -> MeshLayer:
        """A copy with vertices moved by the rigid or affine 4x4 transform ``T``."""
        v = self.vertices @ T[:3, :3].T + T[:3, 3]
        return MeshLayer(v, self.faces, self.face_class, self.face_instance, self.face_material, self.face_variant)

    def face_normals(self) -> np.ndarray:
        """(F, 3) unit normals from the winding; zero for degenerate faces."""
        tri = self.vertices[self.faces]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        norm = np.linalg.norm(n, axis=1, keepdims=True)
        return np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)

    def to_trimesh(self) -> trimesh.Trimesh:
        """The geometry as an unprocessed ``trimesh.Trimesh`` (face order kept, so attributes still align)."""
        return trimesh.Trimesh(self.vertices, self.faces, process=False, validate=False)

    @staticmethod
    def empty() -> MeshLayer:
        return MeshLayer(
            np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros(0, np.uint8),
            np.zeros(0, np.int32), np.zeros(0, np.uint8), np.zeros(0, np.uint16),
        )

    @staticmethod
    def concatenate(layers: list[MeshLayer]) -> MeshLayer:
        """One layer holding all faces of ``layers`` in order."""
        layers = [m for m in layers if m.num_faces]
        if not layers:
            return MeshLayer.empty()
        offsets = np.cumsum([0] + [len(m.vertices) for m in layers[:-1]])
        return MeshLayer(
            np.concatenate([m.vertices for m in layers]),
            np.concatenate([m.faces + o for m, o in zip(layers, offsets)]),
            np.concatenate([m.face_class for m in layers]),
            np.concatenate([m.face_instance for m in layers]),
            np.concatenate([m.face_material for m in layers]),
            np.concatenate([m.face_variant for m in layers]),
        )


# ---------------------------------------------------------------------------------------------
# Unit primitives, built once.


@cache
def template(kind: str, sections: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Read-only (vertices, faces) of a unit primitive: ``box``, ``cylinder``, ``cone``, ``sphere0``, ``sphere1``."""
    if kind == "box":  # unit cube centred at the origin
        m = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    elif kind == "cylinder":  # radius 1, height 1 along z, centred
        m = trimesh.creation.cylinder(radius=1.0, height=1.0, sections=sections)
    elif kind == "cone":  # radius 1 base at z=0, apex at z=1
        m = trimesh.creation.cone(radius=1.0, height=1.0, sections=sections)
    elif kind == "sphere1":
        m = trimesh.creation.icosphere(subdivisions=1)
    elif kind == "sphere0":
        m = trimesh.creation.icosphere(subdivisions=0)
    else:
        raise ValueError(f"unknown primitive {kind!r}")
    v = np.asarray(m.vertices, np.float64)
    f = np.asarray(m.faces, np.int64)
    v.setflags(write=False)
    f.setflags(write=False)
    return v, f


# Faces of a hexahedron whose 8 corners are ordered bottom (z0) then top (z1), each
# counter-clockwise seen from above: (-x,-y), (+x,-y), (+x,+y), (-x,+y). Outward winding.
_HEX_FACES = np.array(
    [
        [0, 2, 1], [0, 3, 2],  # bottom
        [4, 5, 6], [4, 6, 7],  # top
        [0, 1, 5], [0, 5, 4],  # -y side
        [1, 2, 6], [1, 6, 5],  # +x side
        [2, 3, 7], [2, 7, 6],  # +y side
        [3, 0, 4], [3, 4, 7],  # -x side
    ],
    np.int64,
)
_HEX_TOP_FACES = np.array([2, 3])


def rotate(v: np.ndarray, R: np.ndarray) -> np.ndarray:
    """``v @ R.T`` for many (N, 3) vectors, as three matrix-vector products.

    A (N, 3) x (3, 3) matrix product goes to multi-threaded BLAS, whose threads spin and stall when
    other processes share the cores (measured up to 50 ms for 130k rows); matrix-vector products
    stay fast (under 1 ms), and ``einsum`` is about 3 times slower than them.
    """
    R = np.asarray(R, v.dtype)
    out = np.empty_like(v)
    for k in range(3):
        out[:, k] = v @ R[k]
    return out


def yaw_matrix(yaw: float) -> np.ndarray:
    """3x3 rotation about +z by ``yaw`` radians."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotation_y(angle: float) -> np.ndarray:
    """3x3 rotation about +y by ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rotation_x(angle: float) -> np.ndarray:
    """3x3 rotation about +x by ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def pose(yaw: float = 0.0, t: tuple[float, float, float] | np.ndarray = (0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 rigid transform: rotation about z by ``yaw`` then translation ``t``."""
    T = np.eye(4)
    T[:3, :3] = yaw_matrix(yaw)
    T[:3, 3] = t
    return T


class MeshBuilder:
    """Accumulates primitives with their attributes; :meth:`build` returns one :class:`MeshLayer`.

    ``cls``, ``inst`` and ``variant`` given to the constructor are defaults for every part, so an
    object builder sets them once and then only names shapes and materials.
    """

    def __init__(self, cls: int = 0, inst: int = 0, variant: int = 0) -> None:
        self.cls, self.inst, self.variant = cls, inst, variant
        self._v: list[np.ndarray] = []
        self._f: list[np.ndarray] = []
        self._attrs: list[tuple[np.ndarray, int, int, int, int]] = []
        self._nv = 0

    @property
    def num_vertices(self) -> int:
        return self._nv

    def add(
        self,
        vertices: np.ndarray,
        faces: np.ndarray,
        material: int | np.ndarray,
        cls: int | None = None,
        inst: int | None = None,
        variant: int | None = None,
    ) -> None:
        """Append raw triangles. ``material`` may be one id or one per face."""
        self._v.append(np.asarray(vertices, np.float64))
        self._f.append(np.asarray(faces, np.int64) + self._nv)
        mat = np.broadcast_to(np.asarray(material, np.uint8), (len(faces),))
        self._attrs.append((
            mat,
            self.cls if cls is None else cls,
            self.inst if inst is None else inst,
            self.variant if variant is None else variant,
            len(faces),
        ))
        self._nv += len(vertices)

    def add_layer(self, layer: MeshLayer, T: np.ndarray | None = None) -> None:
        """Append a whole layer, optionally transformed, keeping its own attributes."""
        layer = layer if T is None else layer.transformed(T)
        self._v.append(layer.vertices)
        self._f.append(layer.faces + self._nv)
        self._attrs.append((layer.face_material, layer.face_class, layer.face_instance, layer.face_variant, -1))
        self._nv += len(layer.vertices)

    def primitive(
        self,
        kind: str,
        scale: tuple[float, float, float] | np.ndarray,
        material: int,
        center: tuple[float, float, float] | np.ndarray = (0.0, 0.0, 0.0),
        R: np.ndarray | None = None,
        sections: int = 8,
        **attrs: int,
    ) -> None:
        """Append a unit primitive scaled per axis, rotated by ``R`` (3x3) and moved to ``center``."""
        v, f = template(kind, sections)
        v = v * np.asarray(scale, np.float64)
        if R is not None:
            v = v @ R.T
        self.add(v + np.asarray(center, np.float64), f, material, **attrs)

    def box(
        self,
        size: tuple[float, float, float],
        center: tuple[float, float, float],
        material: int,
        yaw: float = 0.0,
        **attrs: int,
    ) -> None:
        """Axis-aligned (then yawed) box of ``size`` (x, y, z) centred at ``center``."""
        self.primitive("box", size, material, center, yaw_matrix(yaw) if yaw else None, **attrs)

    def tapered_box(
        self,
        bottom: tuple[float, float, float, float],
        top: tuple[float, float, float, float],
        z: tuple[float, float],
        material: int,
        top_material: int | None = None,
        **attrs: int,
    ) -> None:
        """A hexahedron with rectangular bottom and top faces (x0, x1, y0, y1) at heights z[0], z[1].

        Cabins with slanted windscreens, jersey barriers and roofs are all this shape.
        """
        (bx0, bx1, by0, by1), (tx0, tx1, ty0, ty1) = bottom, top
        z0, z1 = z
        v = np.array([
            [bx0, by0, z0], [bx1, by0, z0], [bx1, by1, z0], [bx0, by1, z0],
            [tx0, ty0, z1], [tx1, ty0, z1], [tx1, ty1, z1], [tx0, ty1, z1],
        ])
        mat = np.full(12, material, np.uint8)
        if top_material is not None:
            mat[_HEX_TOP_FACES] = top_material
        self.add(v, _HEX_FACES, mat, **attrs)

    def cylinder_between(
        self, a: np.ndarray, b: np.ndarray, radius: float, material: int, sections: int = 6, **attrs: int
    ) -> None:
        """Cylinder of ``radius`` from point ``a`` to point ``b`` (tubes of bicycles, arms of lamps)."""
        a, b = np.asarray(a, float), np.asarray(b, float)
        axis = b - a
        length = float(np.linalg.norm(axis))
        z = axis / length
        helper = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        x = np.cross(helper, z)
        x /= np.linalg.norm(x)
        R = np.stack([x, np.cross(z, x), z], axis=1)
        self.primitive("cylinder", (radius, radius, length), material, (a + b) / 2, R, sections, **attrs)

    def build(self) -> MeshLayer:
        """All parts so far as one layer."""
        if not self._v:
            return MeshLayer.empty()
        mats, clss, insts, vars_ = [], [], [], []
        for mat, cls, inst, var, n in self._attrs:
            if n < 0:  # a whole layer: arrays already per face
                mats.append(mat)
                clss.append(cls)
                insts.append(inst)
                vars_.append(var)
            else:
                mats.append(mat)
                clss.append(np.full(n, cls, np.uint8))
                insts.append(np.full(n, inst, np.int32))
                vars_.append(np.full(n, var, np.uint16))
        return MeshLayer(
            np.concatenate(self._v),
            np.concatenate(self._f),
            np.concatenate(clss).astype(np.uint8, copy=False),
            np.concatenate(insts).astype(np.int32, copy=False),
            np.concatenate(mats).astype(np.uint8, copy=False),
            np.concatenate(vars_).astype(np.uint16, copy=False),
        )
