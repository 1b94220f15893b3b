"""Recipes: YAML files plus ``key=value`` overrides, checked against a typed schema.

Each command has a pydantic schema. :func:`load_config` reads the recipe, applies the overrides
(``train.lr=0.01``; values are parsed as YAML, so ``image_size=[480,270]`` and ``cameras=none`` work),
and validates. Unknown keys and wrong types raise one :class:`~lidarssl.errors.ConfigError` that names
the key, the recipe file and, for unknown keys, the valid ones.
"""

from __future__ import annotations

from importlib import import_module, resources
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, Field, ValidationError

from lidarssl.errors import ConfigError
from lidarssl.registry import BACKBONES, METHODS, READERS
from lidarssl.schema import Schema

__all__ = ["Schema", "AugmentConfig", "RecipeInfo", "resolve_recipe", "list_recipes", "GenerateConfig",
           "SegmentationConfig", "load_config", "parse_overrides", "to_yaml"]

#: Sections that live beside the code they configure, still importable from here (imported on first use, so
#: this module stays below data/ and downstream/ in the layers).
MOVED = {"AugmentConfig": "lidarssl.data.transforms", "DataConfig": "lidarssl.downstream.config",
         "OptimConfig": "lidarssl.downstream.config", "SegmentationConfig": "lidarssl.downstream.config"}


def __getattr__(name: str) -> Any:
    if name in MOVED:
        return getattr(import_module(MOVED[name]), name)
    raise AttributeError(f"module 'lidarssl.config' has no attribute '{name}'")


class GenerateConfig(Schema):
    """``lidarssl generate``: a synthetic driving world written in the native layout or a real dataset's."""

    out: Path = Path("data/synthetic")
    frames: int = Field(40, gt=0, description="frames in total, over all sequences")
    frames_per_sequence: int = Field(10, gt=0, description="frames of each independent scene (10 Hz)")
    val_fraction: float = Field(0.2, ge=0, lt=1, description="share of sequences held out as the val split")
    seed: int = 0
    lidar: Literal["nuscenes", "kitti", "pandar64", "once"] = "nuscenes"
    cameras: Literal["nuscenes", "kitti", "kitti360", "once", "none"] = "nuscenes"
    image_size: tuple[int, int] | None = Field(None, description="width, height of every camera; None: preset's")
    overwrite: bool = Field(False, description="replace a dataset already in `out`")
    layout: Literal["native", "nuscenes", "semantickitti", "pandaset", "kitti360", "once"] = Field(
        "native", description="on-disk layout; a real dataset's layout takes its sensors unless lidar/cameras are set")


class BackboneConfig(Schema):
    """A registered backbone preset and its options (grid shapes, field of view, drop path, ...)."""

    name: Annotated[str, AfterValidator(BACKBONES.check)] = "waffleiron_4_32"
    options: dict[str, Any] = Field(default_factory=dict)


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
    val_every: int = Field(1, gt=0, description="segmentation: validate every this many epochs (the last epoch "
                                                 "is always validated)")
    keep_last: int | None = Field(None, ge=1, description="keep only the newest N epoch checkpoints besides "
                                  "last.ckpt (null: keep every epoch's)")


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
