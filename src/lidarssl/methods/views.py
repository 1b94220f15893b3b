"""Two views of a scan for the lidar-only contrastive methods (PointContrast, DepthContrast).

The sample pipeline draws the first view (:class:`~lidarssl.data.loader.ScanSamples`); :class:`SecondViewBuilder`
draws a second one from the same generator with the same input crop, point augmentation and DropCuboids, or takes
a nearby scan of the same sequence, runs the backbone's preprocessing on it, and collates those samples into a
nested point batch ``view2``. With ``match_radius`` set it also pairs rows of the two views: PointContrast's
positives. Both views come from the scan as read, so a row of either view maps back to a point of the scan's own
frame, where the matching is done (for a sequence partner: after registering it by the two ego poses).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree

from lidarssl.batch import Batch, Preprocessor, Sample, concat_rows
from lidarssl.data.crops import InputCrop
from lidarssl.data.loader import AugmentedScan, augment_scan
from lidarssl.data.scan import Scan
from lidarssl.data.transforms import PointAugment
from lidarssl.errors import ConfigError, DataError

__all__ = ["SecondViewBuilder", "check_poses", "match_rows", "sequence_partner"]


def match_rows(xyz1: np.ndarray, xyz2: np.ndarray, radius: float, rng: np.random.Generator | None,
               max_candidates: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """PointContrast's positives: for every point of ``xyz1`` with a point of ``xyz2`` within ``radius``, one of
    those drawn uniformly (the nearest when ``rng`` is ``None``).

    PointContrast collects every pair within the radius (``get_matching_indices``) and then draws one match per
    query point (``PointNCELossTrainer``); drawing among the ``max_candidates`` nearest is the same unless a
    point has more neighbours than that within the radius.

    Returns:
        (row1, row2): indices into ``xyz1`` and ``xyz2``, one pair per matched point of ``xyz1``.
    """
    if len(xyz1) == 0 or len(xyz2) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    k = min(max_candidates, len(xyz2))
    dist, idx = cKDTree(xyz2).query(xyz1, k=k, distance_upper_bound=radius, workers=1)
    dist, idx = dist.reshape(len(xyz1), k), idx.reshape(len(xyz1), k)
    count = np.isfinite(dist).sum(1)  # neighbours come nearest first, misses (inf) last
    row1 = np.flatnonzero(count > 0)
    pick = np.zeros(len(row1), np.int64) if rng is None else (rng.random(len(row1)) * count[row1]).astype(np.int64)
    return row1.astype(np.int64), idx[row1, pick].astype(np.int64)


def _has_pose(scan: Scan) -> bool:
    return not np.allclose(scan.ego_pose, np.eye(4))


def _no_poses(scan: Scan, other: Scan) -> ConfigError:
    return ConfigError(f"method.options.sequence_offset: {scan.dataset or 'this dataset'} gives no ego poses (frames "
                       f"{scan.frame_id} and {other.frame_id} are both at the identity); set "
                       "method.options.sequence_offset: 0")


def check_poses(dataset, offset: int) -> None:
    """Refuse the sequence option before training when the split's first two partner scans carry no ego pose."""
    if len(dataset) > offset:
        first, other = dataset[0], dataset[offset]
        if not (_has_pose(first) or _has_pose(other)):
            raise _no_poses(first, other)


def sequence_partner(dataset, index: int, scan: Scan, offset: int, max_gap: float) -> Scan | None:
    """The scan ``offset`` frames after ``scan`` (number ``index`` of ``dataset``), or before it at the end of the
    split, when it was taken within ``max_gap`` seconds, i.e. in the same sequence; ``None`` when neither is."""
    for j in (index + offset, index - offset):
        if 0 <= j < len(dataset) and j != index:
            other = dataset[j]
            if abs(other.timestamp - scan.timestamp) <= max_gap:
                return other
    return None


class SecondViewBuilder:
    """A second view of every scan: ``view2`` (the backbone's point batch of it) and, with ``match_radius``,
    ``match_row`` / ``match_row2`` (rows of the two views whose points lie within ``match_radius`` metres).

    Args:
        augment, crop: the recipe's point augmentation and input crop (the first view's).
        match_radius: radius of PointContrast's matching, in metres of the scan's own frame; ``None``: no
            matching (DepthContrast).
        min_matches: a scan with fewer matched rows is an error naming ``method.options.npos`` (PointContrast's
            positives per batch, over ``batch_size`` scans).
        sequence_offset: 0: two augmentations of one scan; k > 0: the second view is the scan k frames away in
            the split (PointContrast's pairs of a sequence), registered by the ego poses; it must be taken within
            ``max_gap`` seconds, else the scan itself is used.
        dataset: the split the pipeline reads (needed for ``sequence_offset``).
    """

    def __init__(self, augment: PointAugment | None, crop: InputCrop | None, match_radius: float | None = None,
                 min_matches: int = 0, batch_size: int = 1, sequence_offset: int = 0, max_gap: float = 1.0,
                 dataset=None) -> None:
        self.augment, self.crop, self.match_radius = augment, crop, match_radius
        self.min_matches, self.batch_size = min_matches, batch_size
        self.sequence_offset, self.max_gap, self.dataset = sequence_offset, max_gap, dataset
        self.prep: Preprocessor | None = None  # the backbone's preprocessing, set by build_method

    def partner(self, view: AugmentedScan) -> tuple[Scan, np.ndarray]:
        """The scan of the second view and the transform from the first scan's frame into its frame."""
        scan = view.scan
        if self.sequence_offset == 0:
            return scan, np.eye(4)
        other = sequence_partner(self.dataset, view.index, scan, self.sequence_offset, self.max_gap)
        if other is None:
            return scan, np.eye(4)
        if not (_has_pose(scan) or _has_pose(other)):
            raise _no_poses(scan, other)
        return other, np.linalg.inv(other.ego_pose) @ scan.ego_pose

    def __call__(self, view: AugmentedScan, rng: np.random.Generator | None) -> Sample:
        if self.prep is None:
            raise RuntimeError("SecondViewBuilder.prep is not set (build_method sets it to the backbone's)")
        scan2, T = self.partner(view)
        sample2, view2 = augment_scan(scan2, self.prep, rng, self.augment, self.crop)
        out: Sample = {"view2": sample2}
        if self.match_radius is not None:
            xyz1 = view.scan.points[view.kept] @ T[:3, :3].T + T[:3, 3]
            row1, row2 = match_rows(xyz1, scan2.points[view2.kept], self.match_radius, rng)
            if len(row1) < self.min_matches:
                raise DataError(f"{view.scan.source}: frame {view.scan.frame_id}: {len(row1)} points of its two views "
                                f"match within method.options.match_radius={self.match_radius} m, fewer than the "
                                f"{self.min_matches} positives per scan that method.options.npos asks over "
                                f"{self.batch_size} scans per batch; lower "
                                f"method.options.npos to at most {len(row1) * self.batch_size} or raise match_radius")
            out["match_row"], out["match_row2"] = row1, row2
        return out

    def collate(self, samples: Sequence[Sample], batch: Batch) -> None:
        second = [s["view2"] for s in samples]
        batch["view2"] = self.prep.collate(second)
        if self.match_radius is not None:
            batch["match_row"] = concat_rows(samples, "match_row", batch["offsets"].numpy())
            batch["match_row2"] = concat_rows(samples, "match_row2", batch["view2"]["offsets"].numpy())
