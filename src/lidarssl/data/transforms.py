"""Point-cloud augmentations, drawn from an explicit random generator so a seed fixes every draw.

One :class:`PointAugment` serves pretraining and segmentation alike (its settings are the recipes'
``augment:`` section, :class:`AugmentConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from lidarssl.schema import Schema

__all__ = ["AugmentConfig", "PointAugment", "apply_affine", "drop_cuboid"]


@dataclass(frozen=True)
class PointAugment:
    """Random rotation about z, flips of x and/or y, isotropic scaling, horizontal translation, and SLidR's
    DropCuboids.

    Features are computed from the augmented points afterwards (by the backbone's preprocessing), so
    geometry and xyz features always agree.

    Attributes:
        rotate: rotate by an angle drawn uniformly in [-pi, pi).
        flip: flip x, y or both, each with probability 1/4 (no flip 1/4).
        flip_axes: ``any`` (above) or ``one``: flip x or y (ScaLR's and WaffleIron's ``FlipXY`` in
            ``utils/transforms.py``: with the uniform rotation, every flipped scan is mirrored).
        flip_prob: probability that the flip above is drawn at all (ScaLR's ``RandomApply(FlipXY, 2/3)``,
            ``finetune.py``); 1 draws it for every scan.
        scale: (low, high) range of the isotropic scale factor, or ``None``.
        translate: ``(std, limit)`` of a horizontal translation drawn per axis from N(0, std) clipped to
            ±limit metres (NCLR's pose perturbation), or ``None``.
        drop_cuboid: largest side of SLidR's DropCuboids as a share of the cloud's extent, or ``None``.
        drop_cuboid_min_pairs: a drop is undone when a camera would keep fewer paired points (SLidR: 1024;
            0 never undoes it).
    """

    rotate: bool = True
    flip: bool = True
    flip_axes: Literal["any", "one"] = "any"
    flip_prob: float = 1.0
    scale: tuple[float, float] | None = (0.9, 1.1)
    translate: tuple[float, float] | None = None
    drop_cuboid: float | None = None
    drop_cuboid_min_pairs: int = 0

    def matrix(self, rng: np.random.Generator) -> np.ndarray:
        """Draw the rotation, flip, scale and translation as one (4, 4) affine acting on homogeneous points.

        Methods that pair points with pixels fold this matrix into the camera extrinsics, so the pairs
        stay valid after the points move.
        """
        M = np.eye(3)
        if self.rotate:
            a = rng.uniform(-np.pi, np.pi)
            M = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
        if self.flip and (self.flip_prob >= 1 or rng.uniform() < self.flip_prob):
            which = rng.integers(4) if self.flip_axes == "any" else 1 + rng.integers(2)  # 0: none, 1: x, 2: y, 3: both
            M = np.diag([-1.0 if which & 1 else 1.0, -1.0 if which & 2 else 1.0, 1.0]) @ M
        if self.scale is not None:
            M = rng.uniform(*self.scale) * M
        A = np.eye(4)
        A[:3, :3] = M
        if self.translate is not None:
            std, limit = self.translate
            A[:2, 3] = np.clip(rng.normal(0.0, std, 2), -limit, limit)
        return A

    def __call__(self, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augmented copy of (N, 3) ``points``."""
        return apply_affine(self.matrix(rng), points)


def apply_affine(A: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``points`` (N, 3) moved by the (4, 4) affine ``A``, as float32."""
    return (points @ A[:3, :3].T.astype(np.float32) + A[:3, 3].astype(np.float32)).astype(np.float32)


def drop_cuboid(points: np.ndarray, rng: np.random.Generator, max_side: float = 0.2) -> np.ndarray:
    """SLidR's DropCuboids: a (N,) keep mask removing a random cuboid centred on a random point.

    One ratio drawn in ``U(0, max_side)`` scales the cloud's extent along all three axes, as SLidR's
    ``DropCuboids`` (``utils/transforms.py``).
    """
    if len(points) == 0:
        return np.ones(0, bool)
    extent = points.max(0) - points.min(0)
    half = rng.uniform(0, max_side) * extent / 2
    centre = points[rng.integers(len(points))]
    inside = np.all(np.abs(points - centre) <= half, axis=1)
    return ~inside


class AugmentConfig(Schema):
    """Point-cloud augmentation drawn per training scan (pretraining and segmentation); cameras and rays
    follow it. ``augment: null`` turns it off."""

    rotate: bool = True
    flip: bool = True
    flip_axes: Literal["any", "one"] = Field("any", description="any: none, x, y or both; one: x or y, always "
                                             "(ScaLR's FlipXY)")
    flip_prob: float = Field(1.0, ge=0, le=1, description="probability of drawing the flip (ScaLR: 2/3)")
    scale: tuple[float, float] | None = (0.9, 1.1)
    translate: tuple[float, float] | None = Field(None, description="[std, limit] of a horizontal shift (m)")
    drop_cuboid: float | None = Field(None, description="SLidR's DropCuboids: largest side, share of the extent")
    drop_cuboid_min_pairs: int = Field(1024, ge=0, description="undo a drop leaving a camera fewer points (SLidR)")
    polarmix: bool = Field(False, description="WaffleIron's PolarMix with another training scan (segmentation; "
                           "needs instance labels)")
    instance_cutmix: bool = Field(False, description="WaffleIron's instance CutMix from a bank cut from the training "
                                  "split (segmentation; needs instance labels)")

    def point_augment(self) -> PointAugment:
        return PointAugment(**self.model_dump(exclude={"polarmix", "instance_cutmix"}))
