"""Recipes: YAML files plus ``key=value`` overrides, checked against a typed schema.

Each command has a pydantic schema. :func:`load_config` reads the recipe, applies the overrides
(``train.lr=0.01``; values are parsed as YAML, so ``image_size=[480,270]`` and ``cameras=none`` work),
and validates. Unknown keys and wrong types raise one :class:`~lidarssl.errors.ConfigError` that names
the key, the recipe file and, for unknown keys, the valid ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lidarssl.errors import ConfigError

__all__ = ["Schema", "GenerateConfig", "load_config", "parse_overrides", "to_yaml"]


class Schema(BaseModel):
    """Base of every config section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GenerateConfig(Schema):
    """``lidarssl generate``: a synthetic driving world written in the native layout."""

    out: Path = Path("data/synthetic")
    frames: int = Field(40, gt=0, description="frames in total, over all sequences")
    sequences: int = Field(4, gt=0, description="independent scenes; the last one is the val split")
    seed: int = 0
    lidar: Literal["nuscenes", "kitti", "pandar64"] = "nuscenes"
    cameras: Literal["nuscenes", "kitti", "none"] = "nuscenes"
    image_size: tuple[int, int] = Field((480, 270), description="width, height of every camera image")


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


def _explain(schema: type[BaseModel], err: ValidationError, where: str) -> ConfigError:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            owner = _section(schema, e["loc"])
            valid = ", ".join(owner.model_fields) if owner else "?"
            lines.append(f"unknown key '{key}'; valid keys here: {valid}")
        else:
            lines.append(f"key '{key}': {e['msg']} (got {e.get('input')!r})")
    return ConfigError(f"{where}: " + "; ".join(lines))


def load_config(schema: type[S], path: str | Path | None = None, overrides: list[str] | None = None) -> S:
    """Read ``path`` (optional), apply ``overrides`` and validate against ``schema``.

    Args:
        schema: the pydantic schema of the command.
        path: a YAML recipe holding a mapping; ``None`` starts from the schema defaults.
        overrides: ``key=value`` strings applied on top of the recipe.

    Raises:
        ConfigError: naming the file or key at fault.
    """
    data: dict[str, Any] = {}
    where = "overrides"
    if path is not None:
        path = Path(path)
        where = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: recipe file not found")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a recipe must be a mapping of keys to values, got {type(loaded).__name__}")
        data = loaded or {}
    data = _merge(data, parse_overrides(overrides or []))
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise _explain(schema, err, where) from None


def to_yaml(config: BaseModel) -> str:
    """The resolved config as YAML, for run directories and ``--print-config``."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
