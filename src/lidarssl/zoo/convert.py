"""Convert a seed project's checkpoint to a lidarssl backbone preset, its heads and a record of every key.

The network's family (:func:`~lidarssl.zoo.formats.network_family`) picks its converter in
:mod:`lidarssl.zoo.families` (one module each for ``waffleiron``, ``res16``, ``unet`` and ``voxelbackbone``; SLidR's
image branch and config beside them). The result is checked against the preset built on the meta device (no memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lidarssl.errors import CheckpointError, ConfigError
from lidarssl.models.backbones import create_backbone
from lidarssl.zoo.families.keys import Head, Keys, diff
from lidarssl.zoo.families.slidr import image_branch, slidr_options
from lidarssl.zoo.families.sparse import convert_sparse
from lidarssl.zoo.families.waffleiron import convert_waffleiron
from lidarssl.zoo.formats import FORMATS, Record, network_family, unwrap
from lidarssl.zoo.origins import ORIGINS, guess_origin
from lidarssl.zoo.reading import Source

__all__ = ["Conversion", "Head", "convert"]

#: The network families each --format may hold.
_FAMILIES = {
    "scalr": {"waffleiron"}, "waffleiron": {"waffleiron"}, "slidr": {"res16", "voxelbackbone"},
    "stslidr": {"res16", "voxelbackbone"}, "also": {"unet", "voxelbackbone"},
    "nclr": {"res16", "unet", "voxelbackbone"}, "openpcdet": {"voxelbackbone"},
    "lidarssl": {"waffleiron", "res16", "unet", "voxelbackbone"},
}  # fmt: skip


@dataclass
class Conversion:
    """A checkpoint converted to a lidarssl preset; see :func:`convert`."""

    format: str
    container: str
    role: str
    network: str
    layout: str
    preset: str
    options: dict[str, Any]
    backbone: dict[str, torch.Tensor]
    heads: list[Head]
    records: list[Record]
    origin: str | None
    origin_options: dict[str, Any]
    notes: list[str]


def _check_preset(c: Conversion, label: str) -> None:
    try:
        with torch.device("meta"):
            model = create_backbone(c.preset, **c.options).model
    except ConfigError as exc:
        raise CheckpointError(f"{label}: {c.network}: preset {c.preset} with {c.options} cannot be built "
                              f"({exc})") from None
    problems = diff(model.state_dict(), c.backbone)
    if problems:
        raise CheckpointError(f"{label}: a {c.network} whose shapes match no lidarssl preset (closest: {c.preset} "
                              f"{c.options or ''}): {problems}")  # fmt: skip
    width = model.out_channels
    for head in c.heads:
        if head.kind in ("segmentation", "scalr_distillation", "projection", "classifier"):
            c_in = head.meta.get("in_channels")
            if c_in is not None and c_in != width:
                raise CheckpointError(f"{label}: the {head.kind} head takes {c_in} channels, the backbone gives "
                                      f"{width}")


def convert(source: Source, fmt: str = "auto", origin: str | None = None) -> Conversion:
    """Convert a checkpoint read by :func:`~lidarssl.zoo.reading.read_source` to a lidarssl preset.

    Args:
        source: the checkpoint.
        fmt: ``auto`` or a key of :data:`~lidarssl.zoo.formats.FORMATS`: the format to read it as, when its
            container fits more than one (a ScaLR ``net`` is also a WaffleIron one; a flat torchsparse dict may
            be ALSO's or NCLR's).
        origin: the origin (a key of :data:`~lidarssl.zoo.origins.ORIGINS`) instead of guessing it from the
            file name and head.

    Raises:
        CheckpointError: unknown format or network, shapes that match no preset, inconsistent heads.
        ConfigError: unknown ``fmt`` or ``origin``.
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise ConfigError(f"unknown format '{fmt}'; choose auto or one of {', '.join(FORMATS)}")
    if origin is not None and origin not in ORIGINS:
        raise ConfigError(f"unknown origin '{origin}'; known: {', '.join(ORIGINS)}")
    label = source.label
    u = unwrap(source.content, label, source.metadata)
    family = network_family(u.state)
    if fmt != "auto" and fmt != u.format:
        if family not in _FAMILIES[fmt]:
            raise CheckpointError(f"{label}: --format {fmt} holds {', '.join(sorted(_FAMILIES[fmt]))} networks, but "
                                  f"the file is a {u.format} checkpoint of a {family} network; use --format auto")
        u.format = fmt
    notes: list[str] = [f"{other}: another checkpoint beside it, not imported (import it by its path)"
                        for other in source.others]
    hints = source.hints + " " + str(u.config or "").lower()
    protocol = next((p for p in ("linear_probing", "finetuning") if p in hints), None)
    if family == "waffleiron":
        parts = convert_waffleiron(u, label)
        head = parts["heads"][0] if parts["heads"] else None
        classes = head.meta.get("classes") if head else None
        project = "scalr" if u.format == "scalr" else "waffleiron"
        if origin is None and u.role == "downstream":
            origin = guess_origin(project, hints, classes, protocol)
            if origin is None:
                notes.append(f"origin unknown (a {classes}-class head): pass --origin (e.g. scalr-panda64 or "
                             "scalr-pandagt) so that `lidarssl evaluate` uses its preprocessing")
        if u.role == "pretraining" and parts["preset"] == "waffleiron_48_768":
            notes.append("a pretrained backbone: probe it with the recipe of its protocol, e.g. "
                         "configs/scalr-wi48x768-nuscenes-probe.yaml for ScaLR's nuScenes linear probing")
    else:
        if origin is None:
            project = "slidr" if u.format == "stslidr" else u.format
            origin = guess_origin(project, hints) if project in ("slidr", "also", "nclr") else None
            if family == "voxelbackbone":  # the sparse U-Nets' origins do not describe a VoxelNet's input
                origin = {"slidr": "slidr-voxelnet-nuscenes", "also-kitti": "also-kitti"}.get(
                    project if project == "slidr" else str(origin))
        parts = convert_sparse(u, label, family, u.format, origin, hints)
        if u.images:
            parts["heads"] += image_branch(parts["keys"], u, notes)
    ks: Keys = parts["keys"]
    origin_options = dict(ORIGINS[origin].backbone_options) if origin else {}
    origin_options.update(slidr_options(u, parts["preset"], notes))
    named = (u.lidarssl or {}).get("backbone")
    if named and named != parts["preset"]:  # lidarssl's own file: keep its preset when the shapes are the same
        options = dict(u.lidarssl.get("options") or {})
        try:
            with torch.device("meta"):
                same = not diff(create_backbone(named, **options).model.state_dict(), ks.backbone)
        except ConfigError:
            same = False
        if same:
            parts["preset"], parts["options"] = named, options
        else:
            notes.append(f"the file names preset {named}, but its shapes are {parts['preset']}'s")
    conversion = Conversion(
        format=u.format, container=u.container, role=u.role, network=parts["network"], layout=parts["layout"],
        preset=parts["preset"], options=parts["options"], backbone=ks.backbone, heads=parts["heads"],
        records=ks.records, origin=origin, origin_options=origin_options,
        notes=notes + (list(ORIGINS[origin].notes) if origin else []),
    )  # fmt: skip
    if u.format in ("slidr", "stslidr") and u.config is not None:
        for record in conversion.records:
            if record.source == "config":
                record.note = "training config (voxel_size, cylindrical_coordinates and decoder read from it)"
    _check_preset(conversion, label)
    return conversion
