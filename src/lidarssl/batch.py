"""The batch schema: every key a sample or a batch may hold, with its shape, dtype and meaning.

A **sample** is one scan after the sample pipeline (:mod:`lidarssl.data.loader`): numpy arrays built in a
DataLoader worker by the backbone's preprocessing and the sample builders of a method or of segmentation. A
**batch** is what a collate makes of a list of samples: torch tensors in which per-point rows of all scans are
**concatenated, never padded**. ``offsets`` (B + 1) says which rows belong to which scan; every index into rows,
views or cells is already offset to address the whole batch.

Sizes: B scans, N points of a scan as read, M kept points (rows) of a scan after the backbone's crop and voxel
subsampling (sum M over the batch: R), V camera views, P point-pixel pairs, Q occupancy queries, K neighbours.

==================  ===================  ========  =========================================================
key                 shape                dtype     meaning
==================  ===================  ========  =========================================================
**point batch** (every collate: :class:`PointBatch`)
-------------------------------------------------------------------------------------------------------------
batch_index         (R,)                 int64     scan of each row
kept                (R,)                 int64     index of each row's point in its own scan as read
offsets             (B + 1,)             int64     first row of each scan; ``offsets[-1] == R``
feats               (R, 5)               float32   WaffleIron: intensity (normalised), x, y, z, range
cells               (R, planes)          int64     WaffleIron: flat cell of each row on each 2D plane grid
neighbors           (R, K + 1)           int64     WaffleIron: rows of the K nearest neighbours, self first
voxel_coords        (voxels, 4)          int32     sparse nets: (batch, z, y, x) of each active voxel
voxel_feats         (voxels, C)          float32   sparse nets: input features of each voxel
point2voxel         (R,)                 int64     sparse nets: voxel of each row
point_coords        (R, 3)               float32   sparse nets: (z, y, x) position of each row in voxel units
**pair fields** (image methods: :class:`PairFields`)
-------------------------------------------------------------------------------------------------------------
images              (V, H, W, 3)         uint8     augmented RGB camera images
K                   (V, 3, 3)            float32   intrinsics of the augmented images
lidar_to_cam        (V, 4, 4)            float32   augmented points -> camera frame
view_batch          (V,)                 int64     scan of each view
pair_row            (P,)                 int64     row of each paired point
pair_view           (P,)                 int64     view of each pair
pair_uv             (P, 2)               float32   pixel (column u, row v) of each pair in its view's image
superpixels         (V, H, W)            int32     superpixel id per pixel, unique over the batch (SLidR)
teacher_maps        (V, C, h, w)         float16   cached frozen-teacher features of each view (ScaLR)
pixel_classes       (V, H, W)            uint8     class of each pixel, 16 unlabelled (oracle teacher; synthetic)
row_xyz             (R, 3)               float32   augmented xyz of each row (NCLR's PnP, ALSO's decoder)
**query fields** (ALSO: :class:`QueryFields`)
-------------------------------------------------------------------------------------------------------------
queries             (Q, 3)               float32   occupancy query positions (augmented frame)
query_occ           (Q,)                 float32   1 behind a surface (occupied), 0 in front or in free space
query_intensity     (Q,)                 float32   intensity target (scaled), -1 in free space
query_kind          (Q,)                 int8      BEHIND, FRONT or FREE (:mod:`lidarssl.methods.also`)
query_neighbors     (Q, K)               int64     rows (or BEV cells) near each query, nearest first, -1 pad
query_rel           (Q, K, 3)            float32   query minus BEV cell centre (BEV latents only)
query_batch         (Q,)                 int64     scan of each query
**view fields** (PointContrast, DepthContrast: :class:`ViewFields`)
-------------------------------------------------------------------------------------------------------------
view2               point batch          dict      the backbone's batch of a second view of every scan
match_row           (P,)                 int64     row (first view) of each matched point pair (PointContrast)
match_row2          (P,)                 int64     row of ``view2`` it is matched with
**label fields** (segmentation: :class:`LabelFields`)
-------------------------------------------------------------------------------------------------------------
labels              (R,)                 int64     training class of each row, 255 ignored
point_labels        (sum N,)             int64     evaluation: class of every point as read
nearest             (sum N,)             int64     evaluation: row of each point's nearest kept point
==================  ===================  ========  =========================================================

Pretraining never reads label fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, TypedDict, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # torch is imported on use: the command line's --help (which reads the schemas) loads none
    import torch

__all__ = ["COMMON_KEYS", "Batch", "LabelFields", "PairFields", "PointBatch", "Preprocessor", "QueryFields",
           "Sample", "ViewFields", "batch_keys", "concat_rows"]

#: Keys every collate returns (the first block of the table above).
COMMON_KEYS = ("batch_index", "kept", "offsets")


class PointBatch(TypedDict, total=False):
    """What a backbone's collate returns: :data:`COMMON_KEYS` plus the inputs of its network."""

    batch_index: torch.Tensor
    kept: torch.Tensor
    offsets: torch.Tensor
    feats: torch.Tensor
    cells: torch.Tensor
    neighbors: torch.Tensor
    voxel_coords: torch.Tensor
    voxel_feats: torch.Tensor
    point2voxel: torch.Tensor
    point_coords: torch.Tensor


class PairFields(TypedDict, total=False):
    """Point-pixel pairs and the views they refer to (PPKT, SLidR, ST-SLidR, ScaLR, NCLR)."""

    images: torch.Tensor
    K: torch.Tensor
    lidar_to_cam: torch.Tensor
    view_batch: torch.Tensor
    pair_row: torch.Tensor
    pair_view: torch.Tensor
    pair_uv: torch.Tensor
    superpixels: torch.Tensor
    teacher_maps: torch.Tensor
    pixel_classes: torch.Tensor
    row_xyz: torch.Tensor


class QueryFields(TypedDict, total=False):
    """ALSO's occupancy queries along the lidar rays."""

    queries: torch.Tensor
    query_occ: torch.Tensor
    query_intensity: torch.Tensor
    query_kind: torch.Tensor
    query_neighbors: torch.Tensor
    query_rel: torch.Tensor
    query_batch: torch.Tensor


class ViewFields(TypedDict, total=False):
    """A second view of each scan and matched rows of the two (lidar-only contrastive methods)."""

    view2: PointBatch
    match_row: torch.Tensor
    match_row2: torch.Tensor


class LabelFields(TypedDict, total=False):
    """Segmentation labels of the rows and, for evaluation, of every point as read."""

    labels: torch.Tensor
    point_labels: torch.Tensor
    nearest: torch.Tensor


class Batch(PointBatch, PairFields, QueryFields, ViewFields, LabelFields, total=False):
    """A collated batch: the point batch plus the fields of whatever builders made it."""


#: One scan after preprocessing and sample builders: the same keys as :class:`Batch`, as numpy arrays,
#: with per-scan indices (rows, views) not yet offset.
Sample = dict[str, np.ndarray]


def concat_rows(samples: Sequence[Sample], key: str, offsets: Sequence[int] | np.ndarray | None = None) -> torch.Tensor:
    """Concatenate ``key`` over samples, adding ``offsets[i]`` to sample i's values (row or view indices)."""
    import torch

    parts = [s[key] if offsets is None else s[key] + offsets[i] for i, s in enumerate(samples)]
    return torch.from_numpy(np.ascontiguousarray(np.concatenate(parts)))


def batch_keys() -> frozenset[str]:
    """Every key of the schema (a collate or builder that adds another key is a bug the tests catch)."""
    return frozenset(Batch.__annotations__)


@runtime_checkable
class Preprocessor(Protocol):
    """A backbone's numpy preprocessing of one scan; must pickle (it runs in DataLoader workers)."""

    def __call__(self, points: np.ndarray, intensity: np.ndarray, rng: np.random.Generator | None = None) -> Sample:
        """Preprocess one scan.

        Args:
            points: (N, 3) float32 xyz in the lidar frame, after augmentation.
            intensity: (N,) float32 intensity in the dataset's own scale.
            rng: random generator for training-time choices (which point represents a voxel);
                ``None`` for the deterministic evaluation behaviour.

        Returns:
            The backbone's keys of :class:`PointBatch` for one scan, including ``kept`` (M,) int64 sorted
            indices into ``points``.
        """
        ...

    def collate(self, samples: Sequence[Sample]) -> Batch:
        """Concatenate preprocessed samples into one batch holding at least :data:`COMMON_KEYS`."""
        ...
