"""The preprocessing of each release's origin: what a released model saw when it was trained and scored.

Loading weights is not enough to reproduce a published number: the grid, field of view, intensity scale
and subsampling must be the origin's too. An :class:`Origin` names them for one (project, dataset,
protocol); the importer records which one a release comes from and ``lidarssl evaluate`` applies it.

Values are the seed projects' own: ScaLR's ``configs/pretrain/WI_768_pretrain.yaml`` and
``configs/downstream/*/WI_768_*.yaml`` (field of view and grids), the intensity statistics of its
``datasets/*_for_scalr.py``; WaffleIron's ``configs/WaffleIron-48-*.yaml`` (raw intensity); the voxel sizes and
input features of ALSO's, SLidR's and NCLR's configs. Neither ScaLR nor WaffleIron caps the points at evaluation:
their ``LimitNumPoints`` (20,000 points around a random centre) is one of the training augmentations
(``get_train_augmentations`` in ScaLR's ``finetune.py``), so scoring here keeps every point too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from lidarssl.batch import Batch, Sample
from lidarssl.errors import DataError

if TYPE_CHECKING:  # `lidarssl import --help` lists the origins without loading torch
    from lidarssl.models.backbones.waffleiron_prep import WaffleIronPrep

__all__ = ["ORIGINS", "Origin", "SeedVoxelPrep", "guess_origin"]


@dataclass(frozen=True)
class Origin:
    """Where a released model comes from and the preprocessing it needs.

    Attributes:
        name: registry key, ``<project>-<dataset>[-<protocol>]``.
        project: seed project.
        dataset: lidarssl reader format of the dataset it was trained on.
        backbone_options: preprocessing options of the backbone preset (grid, field of view, intensity scale,
            voxel size, input features).
        reader_options: options of the dataset reader (sensor, frame shift).
        seed_voxels: subsample as ScaLR and WaffleIron do (one point per voxel on a grid anchored at the scan's
            minimum, then the field-of-view crop with their 1e-4 m margin) instead of the preset's own way.
        num_classes: classes of its segmentation head, when it has one.
        published: published val mIoU of the released model(s), by protocol.
        notes: what still differs from the origin's pipeline.
    """

    name: str
    project: str
    dataset: str
    backbone_options: dict[str, Any]
    reader_options: dict[str, Any] = field(default_factory=dict)
    seed_voxels: bool = False
    num_classes: int | None = None
    published: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable record for ``import.json``."""
        return {"name": self.name, "project": self.project, "dataset": self.dataset,
                "backbone_options": self.backbone_options, "reader_options": self.reader_options,
                "seed_voxels": self.seed_voxels, "num_classes": self.num_classes, "published": self.published,
                "notes": list(self.notes)}  # fmt: skip


def _scalr_grid(half_xy: float, cells: int) -> dict[str, Any]:
    return {"fov_min": [-half_xy, -half_xy, -8.0], "fov_max": [half_xy, half_xy, 8.0],
            "grid_shapes": [[cells, cells], [cells, 32], [cells, 32]], "dim_proj": [2, 1, 0], "voxel_size": 0.1,
            "num_neighbors": 16}  # fmt: skip


def _intensity(mean: float, std: float) -> dict[str, float]:
    return {"intensity_mean": mean, "intensity_std": std}


_PANDA = {"z_shift": -1.6}  # ScaLR moves PandaSet points to the ego frame and lowers them by 1.6 m
_SCALR_NOTE = "ScaLR scores with fp16 autocast on GPU; lidarssl uses the trainer's precision (fp32 on CPU)"
_ALSO_NOTE = ("ALSO voxelises with round(p / voxel_size) minus the scan's minimum (the grid origin moves per scan); "
              "lidarssl's grid is fixed at range_min, so voxel groupings differ slightly")  # fmt: skip

ORIGINS: dict[str, Origin] = {o.name: o for o in [
    Origin("scalr-nuscenes", "ScaLR", "nuscenes", {**_scalr_grid(64, 256), **_intensity(18.742355, 22.04632)},
           seed_voxels=True, num_classes=16, published={"linear_probing": 67.8, "finetuning": 78.4},
           notes=(_SCALR_NOTE,)),
    Origin("scalr-semantickitti", "ScaLR", "semantickitti",
           {**_scalr_grid(64, 256), **_intensity(0.28613698, 0.14090556)}, seed_voxels=True, num_classes=19,
           published={"linear_probing": 55.8, "finetuning": 65.8}, notes=(_SCALR_NOTE,)),
    Origin("scalr-panda64", "ScaLR", "pandaset", {**_scalr_grid(128, 512), **_intensity(18.23640649, 25.86983417)},
           reader_options={"sensor": "pandar64", **_PANDA}, seed_voxels=True, num_classes=17,
           published={"linear_probing": 37.9, "finetuning": 48.3}, notes=(_SCALR_NOTE,)),
    Origin("scalr-pandagt", "ScaLR", "pandaset", {**_scalr_grid(128, 512), **_intensity(23.06113565, 16.76273235)},
           reader_options={"sensor": "pandargt", **_PANDA}, seed_voxels=True, num_classes=17,
           published={"linear_probing": 34.5}, notes=(_SCALR_NOTE,)),
    Origin("scalr-pandagt-finetuning", "ScaLR", "pandaset",
           {**_scalr_grid(96, 384), **_intensity(23.06113565, 16.76273235)},
           reader_options={"sensor": "pandargt", **_PANDA}, seed_voxels=True, num_classes=17,
           published={"finetuning": 41.1}, notes=(_SCALR_NOTE,)),
    Origin("waffleiron-nuscenes", "WaffleIron", "nuscenes",
           {"fov_min": [-50.0, -50.0, -5.0], "fov_max": [50.0, 50.0, 5.0],
            "grid_shapes": [[166, 166], [166, 16], [166, 16]], "dim_proj": [2, 1, 0], "voxel_size": 0.1,
            "num_neighbors": 16, **_intensity(0.0, 1.0)},
           seed_voxels=True, num_classes=16, published={"supervised": 77.6},
           notes=("WaffleIron's published 77.6 is without test-time augmentation (its eval_nuscenes.py adds votes)",)),
    Origin("waffleiron-semantickitti", "WaffleIron", "semantickitti",
           {"fov_min": [-50.0, -50.0, -3.0], "fov_max": [50.0, 50.0, 2.0],
            "grid_shapes": [[250, 250], [250, 12], [250, 12]], "dim_proj": [2, 1, 0], "voxel_size": 0.1,
            "num_neighbors": 16, **_intensity(0.0, 1.0)},
           seed_voxels=True, num_classes=19, published={"supervised": 68.0}),
    Origin("slidr-nuscenes", "SLidR", "nuscenes",
           {"coordinates": "cylindrical", "voxel_size": [0.1, 1.0, 0.1], "features": ["intensity"],
            "voxel_features": "first"},
           published={"linear_probing": 38.8, "finetuning_1p": 38.3},
           notes=("SLidR's MinkowskiEngine grid has its z origin at 0; lidarssl's cylindrical grid starts at "
                  "z = -5 m, not a multiple of the stride-16 cell, so the coarsest groupings differ",)),
    Origin("slidr-voxelnet-nuscenes", "SLidR", "nuscenes", {},
           notes=("SLidR's VoxelNet has no extra z layer (OpenPCDet adds one) and applies its `final` 1x1 conv "
                  "before height compression; the backbone weights are OpenPCDet's and load as they are",)),
    Origin("also-nuscenes", "ALSO", "nuscenes",
           {"voxel_size": [0.1, 0.1, 0.1], "features": ["intensity"], "voxel_features": "first",
            **_intensity(0.0, 255.0)},
           published={"finetuning_1p": 37.4}, notes=(_ALSO_NOTE,)),
    Origin("also-semantickitti", "ALSO", "semantickitti",
           {"voxel_size": [0.05, 0.05, 0.05], "features": ["x", "y", "z", "intensity"], "voxel_features": "first"},
           published={"finetuning_1p": 50.0}, notes=(_ALSO_NOTE,)),
    Origin("also-kitti", "ALSO", "kitti", {},
           notes=("SECOND on KITTI 3D: the detector (OpenPCDet) uses its own config's grid; lidarssl's "
                  "voxelnet_kitti preset has the same one",)),
    Origin("nclr-nuscenes", "NCLR", "nuscenes",
           {"voxel_size": [0.1, 0.1, 0.1], "features": ["intensity"], "voxel_features": "first"},
           published={"finetuning_1p": 37.8}),
    Origin("nclr-semantickitti", "NCLR", "semantickitti",
           {"voxel_size": [0.05, 0.05, 0.05], "features": ["intensity"], "voxel_features": "first"},
           published={"finetuning_1p": 53.4}),
]}  # fmt: skip


def guess_origin(project: str, hints: str, num_classes: int | None = None, protocol: str | None = None) -> str | None:
    """The origin of a release from its project, file and member names, and head width; ``None`` if unsure.

    ``hints`` is the lower-cased file name and archive member (ScaLR's releases unpack to
    ``logs/<protocol>/WI_768-.../<dataset>/``, WaffleIron's to ``pretrained_models/WaffleIron-48-*__<dataset>/``).
    """
    datasets = [("pandagt", "pandagt"), ("panda64", "panda64"), ("kitti360", "kitti360"), ("kitti3d", "kitti"),
                ("pvrcnn", "kitti"), ("kitti", "semantickitti"), ("nuscenes", "nuscenes"), ("once", "once")]
    dataset = next((name for key, name in datasets if key in hints), None)
    if dataset is None and num_classes is not None:
        dataset = {16: "nuscenes", 19: "semantickitti"}.get(num_classes)  # 17: Pandar64 or PandarGT, unknown
    if dataset is None and project == "slidr":
        dataset = "nuscenes"  # SLidR and ST-SLidR pretrain on nuScenes only
    if dataset is None:
        return None
    name = f"{project}-{dataset}"
    if name == "scalr-pandagt" and protocol == "finetuning":
        name = "scalr-pandagt-finetuning"
    return name if name in ORIGINS else None


@dataclass(frozen=True)
class SeedVoxelPrep:
    """ScaLR's and WaffleIron's subsampling in front of a :class:`WaffleIronPrep` (``datasets/pc_dataset.py``
    of both projects): one point per voxel on a grid anchored at the scan's minimum corner (the first point of
    each voxel in evaluation, a random one in training), then the field-of-view crop with a 1e-4 m margin.
    Everything after (features, cells, neighbours) is the inner preprocessing's, built with
    ``voxel_size=None``.

    Attributes:
        inner: the WaffleIron preprocessing, without voxel subsampling.
        voxel_size: voxel edge in metres.
        margin: distance kept from the field-of-view faces.
    """

    inner: WaffleIronPrep
    voxel_size: float = 0.1
    margin: float = 1e-4

    def __call__(self, points: np.ndarray, intensity: np.ndarray, rng: np.random.Generator | None = None) -> Sample:
        pts = np.asarray(points, dtype=np.float32)  # the originals compute in the float32 of the .bin files
        if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
            raise DataError(f"expected points (N, 3) with N >= 1, got {pts.shape}")
        order = rng.permutation(len(pts)) if rng is not None else np.arange(len(pts))
        cells = ((pts[order] - pts.min(0)) / np.float32(self.voxel_size)).astype(np.int64)
        _, first = np.unique(cells, axis=0, return_index=True)
        keep = np.sort(order[first])
        lo = np.asarray(self.inner.fov_min, dtype=np.float32) + np.float32(self.margin)
        hi = np.asarray(self.inner.fov_max, dtype=np.float32) - np.float32(self.margin)
        inside = np.all((pts[keep] > lo) & (pts[keep] < hi), axis=1)
        keep = keep[inside]
        if len(keep) == 0:
            raise DataError(f"no point of the scan ({len(pts)} points) lies inside the field of view "
                            f"{list(self.inner.fov_min)}..{list(self.inner.fov_max)}")  # fmt: skip
        sample = self.inner(points[keep], np.asarray(intensity)[keep], rng)
        sample["kept"] = keep[sample["kept"]].astype(np.int64)
        return sample

    def collate(self, samples: Sequence[Sample]) -> Batch:
        """The inner preprocessing's collate."""
        return self.inner.collate(samples)
