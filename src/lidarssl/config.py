"""Recipes: YAML files plus ``key=value`` overrides, checked against a typed schema.

Each command has a pydantic schema. :func:`load_config` reads the recipe, applies the overrides
(``train.lr=0.01``; values are parsed as YAML, so ``image_size=[480,270]`` and ``cameras=none`` work),
and validates. Unknown keys and wrong types raise one :class:`~lidarssl.errors.ConfigError` that names
the key, the recipe file and, for unknown keys, the valid ones.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, Field, ValidationError

from lidarssl.data.crops import InputCrop
from lidarssl.data.transforms import PointAugment
from lidarssl.errors import ConfigError
from lidarssl.registry import BACKBONES, METHODS, READERS
from lidarssl.schema import Schema

__all__ = ["Schema", "AugmentConfig", "RecipeInfo", "resolve_recipe", "list_recipes", "GenerateConfig", "SegmentationConfig", "load_config", "parse_overrides", "to_yaml"]


class GenerateConfig(Schema):
    """``lidarssl generate``: a synthetic driving world written in the native layout."""

    out: Path = Path("data/synthetic")
    frames: int = Field(40, gt=0, description="frames in total, over all sequences")
    frames_per_sequence: int = Field(10, gt=0, description="frames of each independent scene (10 Hz)")
    val_fraction: float = Field(0.2, ge=0, lt=1, description="share of sequences held out as the val split")
    seed: int = 0
    lidar: Literal["nuscenes", "kitti", "pandar64", "once"] = "nuscenes"
    cameras: Literal["nuscenes", "kitti", "kitti360", "once", "none"] = "nuscenes"
    image_size: tuple[int, int] | None = Field(None, description="width, height of every camera; None: preset's")
    overwrite: bool = Field(False, description="replace a dataset already in `out`")


class DataConfig(Schema):
    """Where the scans come from."""

    root: Path = Field(Path("data/synthetic"), description="dataset root, recognised by its layout")
    train_split: str = "train"
    val_split: str = "val"
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes per training process")
    options: dict[str, Any] = Field(default_factory=dict, description="reader options, e.g. {sensor: pandargt, "
                                    "z_shift: -1.6} for PandaSet")


class BackboneConfig(Schema):
    """A registered backbone preset and its options (grid shapes, field of view, drop path, ...)."""

    name: Annotated[str, AfterValidator(BACKBONES.check)] = "waffleiron_4_32"
    options: dict[str, Any] = Field(default_factory=dict)


class OptimConfig(Schema):
    """The downstream protocol's optimisation: AdamW (ScaLR, ALSO, NCLR) or SGD (SLidR, PPKT, ST-SLidR), linear
    warmup then cosine decay stepped per iteration (ScaLR) or per epoch (the others).

    ``lr`` is the learning rate for ``base_batch`` scans per step; the run scales it linearly with its
    global batch (batch_size x devices x nodes x accumulate), the usual rule for AdamW at these sizes.
    ``head_lr`` (scaled the same way) is the head's own rate (SLidR's ``lr_head``).
    """

    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0, description="SGD only")
    dampening: float = Field(0.1, ge=0, description="SGD only")
    lr: float = Field(1e-3, gt=0)
    head_lr: float | None = Field(None, gt=0, description="learning rate of the head; null: lr (SLidR's lr_head)")
    decay_all: bool = Field(False, description="weight decay on every parameter (the originals) or rank >= 2 only")
    schedule: Literal["iteration", "epoch"] = Field("iteration", description="cosine stepped per iteration or "
                                                    "per epoch (SLidR, ALSO)")
    loss: Literal["ce+lovasz", "ce"] = Field("ce+lovasz", description="ce: cross-entropy only (ALSO, NCLR)")
    loss_support: Literal["point", "voxel"] = Field("point", description="voxel: one loss row per voxel, its "
                                                    "representative point's label (SLidR's downstream)")
    base_batch: int = Field(4, gt=0, description="global batch size that lr is meant for")
    weight_decay: float = Field(3e-3, ge=0)
    epochs: int = Field(10, gt=0)
    warmup_epochs: float = Field(1.0, ge=0)
    min_lr: float = Field(1e-5, ge=0)
    layer_decay: float = Field(1.0, gt=0, le=1, description="layer-wise lr decay of a training backbone")
    lovasz_weight: float = Field(1.0, ge=0)


class TrainerConfig(Schema):
    """Lightning Trainer settings."""

    batch_size: int = Field(4, gt=0, description="scans per step per process")
    accumulate: int = Field(1, gt=0, description="gradient accumulation steps")
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    devices: int = Field(1, gt=0)
    num_nodes: int = Field(1, gt=0)
    precision: Literal["32-true", "16-mixed", "bf16-mixed", "auto"] = Field(
        "auto", description="auto: 16-mixed on GPU, 32-true on CPU")
    sync_batchnorm: bool = Field(False, description="synchronise BatchNorm statistics across processes (DDP)")
    progress_bar: bool = True
    log_every: int = Field(10, gt=0, description="log training metrics every this many steps")
    keep_last: int | None = Field(None, ge=1, description="keep only the newest N epoch checkpoints besides "
                                  "last.ckpt (null: keep every epoch's)")


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


class RecipeInfo(Schema):
    """``recipe:`` header of a shipped recipe: the published cell it reproduces. Runs ignore it, except that a
    downstream recipe refuses a dataset other than its ``dataset``."""

    kind: Literal["pretrain", "probe", "finetune", "train"]
    method: Annotated[str, AfterValidator(lambda v: v if v == "scratch" else METHODS.check(v))] = Field(
        description="pretraining method, or 'scratch'")
    backbone: Annotated[str, AfterValidator(BACKBONES.check)]
    dataset: Annotated[str, AfterValidator(lambda v: v if v == "mixture" else READERS.check(v))] = Field(
        description="dataset format the protocol is written for (nuscenes, semantickitti, ..., or mixture)")
    labels: str | None = Field(None, description="label fraction, e.g. '1%'; null for pretraining")
    paper: str | None = Field(None, description="paper and table of the published number")
    expected_miou: float | None = Field(None, description="published mIoU, percent")
    pretrain: str | None = Field(None, description="the recipe whose backbone.safetensors is pretrained=")
    synthetic: bool = Field(False, description="a recipe of the synthetic world, reproducing no paper")
    name: str | None = Field(None, description="the recipe's name (set from its file name when loaded)")

    def where(self) -> str:
        return f"recipe {self.name}" if self.name else "recipe"


class SegmentationConfig(Schema):
    """``lidarssl train | probe | finetune``: lidar semantic segmentation."""

    recipe: RecipeInfo | None = Field(None, description="what the recipe reproduces (read by `lidarssl recipes`)")
    out: Path = Field(Path("runs/segmentation"), description="run directory")
    seed: int = 0
    pretrained: Path | None = Field(None, description="backbone weights (.safetensors) for probe and finetune")
    augment: AugmentConfig | None = Field(default_factory=AugmentConfig)
    crop: InputCrop | None = Field(None, description="points a training scan keeps (ScaLR: max_points 20000)")
    head: Literal["bn-linear", "linear"] = Field(
        "bn-linear", description="BatchNorm + zero-initialised linear (ScaLR) or a plain 1x1 linear (SLidR's final)")
    data: DataConfig = Field(default_factory=DataConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)


S = TypeVar("S", bound=Schema)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a": {"b": 1}, "c": "x"}``, values parsed as YAML scalars or lists."""
    tree: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override '{item}' must look like key=value (for nested keys: section.key=value)")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': '{part}' is set to a value above, not a section")
        node[leaf] = value
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _section(schema: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The schema class that owns the key at ``loc`` (for listing the valid keys beside it)."""
    for part in loc[:-1]:
        field = schema.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        schema = annotation
    return schema


def _in_tree(tree: dict[str, Any], loc: tuple[Any, ...]) -> bool:
    node: Any = tree
    for part in loc:
        if not isinstance(node, dict) or str(part) not in node:
            return False
        node = node[str(part)]
    return True


def _explain(schema: type[BaseModel], err: ValidationError, where: str,
             overrides: dict[str, Any] | None = None) -> ConfigError:
    lines = []
    by_override = bool(overrides) and all(_in_tree(overrides, e["loc"][:1]) and _in_tree(overrides, e["loc"])
                                          for e in err.errors())
    if by_override:
        where = "overrides"  # the recipe is not at fault: the keys come from key=value arguments
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            owner = _section(schema, e["loc"])
            valid = ", ".join(owner.model_fields) if owner else "?"
            lines.append(f"unknown key '{key}'; valid keys here: {valid}")
        else:  # a validator's own message, without pydantic's "Value error, " prefix
            msg = str(e["ctx"]["error"]) if e["type"] == "value_error" and "ctx" in e else e["msg"]
            lines.append(f"key '{key}': {msg} (got {e.get('input')!r})")
    return ConfigError(f"{where}: " + "; ".join(lines))


def list_recipes() -> list[str]:
    """Names of the recipes shipped in ``lidarssl/configs`` (also reachable as ``configs/`` in a clone)."""
    return sorted(p.name.removesuffix(".yaml") for p in resources.files("lidarssl.configs").iterdir()
                  if p.name.endswith(".yaml"))


def resolve_recipe(path: str | Path) -> Path:
    """A recipe file: ``path`` itself, else the shipped recipe of that name (``seg-wi-synthetic``)."""
    path = Path(path)
    if path.is_file():
        return path
    shipped = resources.files("lidarssl.configs") / f"{path.name.removesuffix('.yaml')}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    raise ConfigError(f"{path}: recipe file not found; shipped recipes: {', '.join(list_recipes())}")


def load_config(schema: type[S], path: str | Path | None = None,
                overrides: list[str] | dict[str, Any] | None = None) -> S:
    """Read ``path`` (optional), apply ``overrides`` and validate against ``schema``.

    Args:
        schema: the pydantic schema of the command.
        path: a YAML recipe holding a mapping; ``None`` starts from the schema defaults.
        overrides: ``key=value`` strings applied on top of the recipe, or the same as a nested mapping.

    Raises:
        ConfigError: naming the file or key at fault.
    """
    data: dict[str, Any] = {}
    where = "overrides"
    if path is not None:
        path = resolve_recipe(path)
        where = str(path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of keys to values, got {type(loaded).__name__}")
        data = loaded or {}
        if isinstance(data.get("recipe"), dict):  # errors of a run name the recipe they come from
            data["recipe"] = {**data["recipe"], "name": data["recipe"].get("name") or path.stem}
    tree = overrides if isinstance(overrides, dict) else parse_overrides(overrides or [])
    data = _merge(data, tree)
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise _explain(schema, err, where, tree) from None


def to_yaml(config: BaseModel) -> str:
    """The resolved config as YAML, for run directories and ``--print-config``."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
