"""Mixtures: several datasets read as one, for pretraining on many sensors (ScaLR: nuScenes + SemanticKITTI +
Pandar64 + PandarGT).

Sensors disagree on intensity scales (nuScenes 0-255, KITTI remission 0-1), so each member's intensity is
z-scored with that member's statistics, and each member may crop its points to a field of view. Weights set how
often a member's scans come up per epoch: with every weight 1 the mixture is the plain concatenation of the
members; otherwise member ``m`` contributes ``round(weight_m * len_m)`` scans per epoch, drawn anew each epoch
(whole copies of the member, then a random subset without repetition) from a generator seeded by
``(seed, epoch, m)``, so an epoch's scans are the same in every process and every run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, ValidationError, model_validator

from lidarssl.data.labels import ClassMap
from lidarssl.data.scan import Scan
from lidarssl.errors import ConfigError, DataError
from lidarssl.schema import Schema

#: Intensity mean and standard deviation per dataset, over whole training splits (ScaLR's values). Keys are a
#: Scan's ``dataset`` name. KITTI object scans come from SemanticKITTI's sensor; the synthetic world writes
#: nuScenes-like 0-255 intensities.
DEFAULT_INTENSITY: dict[str, tuple[float, float]] = {
    "nuscenes": (18.742, 22.046),
    "semantickitti": (0.2861, 0.1409),
    "kitti": (0.2861, 0.1409),
    "pandaset-pandar64": (18.236, 25.870),
    "pandaset-pandargt": (23.061, 16.763),
    "synthetic": (18.742, 22.046),
}

Box = tuple[tuple[float, float, float], tuple[float, float, float]]


class MixtureMember(Schema):
    """One dataset of a mixture, as a recipe lists it.

    ``fov`` is ``[[x_min, y_min, z_min], [x_max, y_max, z_max]]`` in metres, in the member's lidar frame
    (ScaLR's ``fov_xyz``); points outside are dropped. ``intensity_mean``/``intensity_std`` default to
    :data:`DEFAULT_INTENSITY` of the member's dataset; ``options`` go to its reader (``sensor: pandargt``).
    """

    root: Path = Field(description="dataset folder, recognised by its layout")
    split: str = Field("train", description="split name, named splits included (train@10%, parametrizing)")
    weight: float = Field(1.0, gt=0, description="scans per epoch relative to the member's size (1: each once)")
    format: str | None = Field(None, description="dataset format instead of recognising it by its layout")
    intensity_mean: float | None = None
    intensity_std: float | None = Field(None, gt=0)
    fov: Box | None = Field(None, description="[[x_min, y_min, z_min], [x_max, y_max, z_max]] kept, metres")
    options: dict[str, Any] = Field(default_factory=dict, description="reader options")

    @model_validator(mode="after")
    def _check(self) -> MixtureMember:
        if (self.intensity_mean is None) != (self.intensity_std is None):
            raise ValueError("give both intensity_mean and intensity_std, or neither (the dataset's defaults)")
        if self.fov is not None and not all(lo < hi for lo, hi in zip(*self.fov)):
            raise ValueError(f"fov minimum {list(self.fov[0])} must be below its maximum {list(self.fov[1])} on "
                             "every axis")
        return self


def _member(spec: MixtureMember | Mapping[str, Any], k: int) -> MixtureMember:
    if isinstance(spec, MixtureMember):
        return spec
    try:
        return MixtureMember.model_validate(dict(spec))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "member"
        raise ConfigError(f"mixture member {k}: '{where}': {first['msg']} (keys: "
                          f"{', '.join(MixtureMember.model_fields)})") from None


def _dataset_name(dataset: Any, fmt: str) -> str:
    """The ``Scan.dataset`` name the member's scans will carry (keys :data:`DEFAULT_INTENSITY`)."""
    if fmt == "pandaset":
        return f"pandaset-{getattr(dataset, 'sensor', 'pandar64')}"
    return fmt


def crop(scan: Scan, box: Box) -> Scan:
    """``scan`` without its points outside the axis-aligned ``box`` (every per-point field cut alike)."""
    lo, hi = np.asarray(box[0], np.float32), np.asarray(box[1], np.float32)
    keep = np.all((scan.points >= lo) & (scan.points <= hi), axis=1)
    if keep.all():
        return scan
    cut = {name: getattr(scan, name)[keep] for name in ("points", "intensity", "ring", "time", "raw_labels",
                                                          "labels", "instance") if getattr(scan, name) is not None}
    return dataclasses.replace(scan, **cut)


class MixtureDataset:
    """Several datasets read as one sequence of Scans, each member normalised and cropped its own way.

    Args:
        members: :class:`MixtureMember` objects or their mappings (as in a recipe).
        seed: seeds the per-epoch draw of members whose weight is not 1.

    Attributes:
        datasets: the opened member datasets.
        class_map: the first member's class map (labels of other members keep their own ids; pretraining
            reads none).
        counts: scans each member contributes per epoch.

    Raises:
        DataError: a member's dataset cannot be opened (named by its position and root), or has no default
            intensity statistics and none were given.
        ConfigError: a member mapping with an unknown key or a wrong value.
    """

    def __init__(self, members: Sequence[MixtureMember | Mapping[str, Any]], seed: int = 0) -> None:
        from lidarssl.data.datasets import check_format, detect_format, open_dataset

        if not members:
            raise ConfigError("a mixture needs at least one member")
        self.members = [_member(m, k) for k, m in enumerate(members)]
        self.seed = int(seed)
        self.datasets: list[Any] = []
        self.stats: list[tuple[float, float]] = []
        self.names: list[str] = []
        for k, m in enumerate(self.members):
            try:
                fmt = check_format(m.format) if m.format else detect_format(Path(m.root))
                dataset = open_dataset(m.root, m.split, format=fmt, **m.options)
            except DataError as e:
                raise DataError(f"mixture member {k} (root {m.root}, split '{m.split}'): {e}") from e
            name = _dataset_name(dataset, fmt)
            if m.intensity_mean is not None:
                stats = (m.intensity_mean, m.intensity_std)
            elif name in DEFAULT_INTENSITY:
                stats = DEFAULT_INTENSITY[name]
            else:
                raise DataError(f"mixture member {k} ({m.root}): no default intensity statistics for '{name}' "
                                f"(known: {sorted(DEFAULT_INTENSITY)}); set intensity_mean and intensity_std")
            if len(dataset) == 0:
                raise DataError(f"mixture member {k} ({m.root}): split '{m.split}' has no frames")
            self.datasets.append(dataset)
            self.stats.append((float(stats[0]), float(stats[1])))
            self.names.append(name)
        self.class_map: ClassMap | None = getattr(self.datasets[0], "class_map", None)
        self.sizes = [len(d) for d in self.datasets]
        self.counts = [max(1, round(m.weight * n)) for m, n in zip(self.members, self.sizes)]
        self.epoch = -1
        self.set_epoch(0)

    # Epoch plan ----------------------------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Draw the scans of ``epoch`` (call it before the epoch's DataLoader iterator is created, so workers
        copy the new plan)."""
        if epoch == self.epoch:
            return
        member, local = [], []
        for k, (n, count) in enumerate(zip(self.sizes, self.counts)):
            whole, rest = divmod(count, n)
            picks = [np.tile(np.arange(n), whole)]
            if rest:
                rng = np.random.default_rng([self.seed, int(epoch), k])
                picks.append(np.sort(rng.choice(n, rest, replace=False)))
            idx = np.concatenate(picks)
            member.append(np.full(len(idx), k))
            local.append(idx)
        self._member = np.concatenate(member)
        self._local = np.concatenate(local)
        self.epoch = int(epoch)

    def locate(self, index: int) -> tuple[int, int]:
        """``(member, frame of that member)`` that mixture item ``index`` reads in the current epoch."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"mixture: item {index} out of range ({n} scans in epoch {self.epoch})")
        return int(self._member[index]), int(self._local[index])

    # Sequence protocol -------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._member)

    def __getitem__(self, index: int) -> Scan:
        k, j = self.locate(index)
        scan = self.datasets[k][j]
        fov = self.members[k].fov
        if fov is not None:
            scan = crop(scan, fov)
        mean, std = self.stats[k]
        return dataclasses.replace(scan, intensity=((scan.intensity - mean) / std).astype(np.float32))

    def __repr__(self) -> str:
        parts = ", ".join(f"{name} x{count}" for name, count in zip(self.names, self.counts))
        return f"MixtureDataset({parts}; {len(self)} scans per epoch)"
