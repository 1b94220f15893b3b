"""The shipped recipes as a catalogue: which published cell each reproduces (``recipe:`` header of the YAML).

``lidarssl recipes`` prints it; ``lidarssl <kind> --help`` lists the recipes of a kind. A downstream recipe names
its pretraining recipe (``recipe.pretrain``), so a published cell is two commands::

    lidarssl pretrain slidr-res16unet34c-nuscenes out=runs/slidr
    lidarssl finetune slidr-res16unet34c-nuscenes-finetune-1p pretrained=runs/slidr/backbone.safetensors
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import yaml

from lidarssl.config import RecipeInfo, list_recipes, resolve_recipe
from lidarssl.errors import ConfigError

__all__ = ["RecipeEntry", "catalogue", "format_catalogue", "catalogue_json", "check_recipe_dataset", "COLUMNS"]

#: Columns of ``lidarssl recipes`` and keys of ``lidarssl recipes --json``.
COLUMNS = ("name", "kind", "method", "backbone", "dataset", "labels", "paper", "expected_miou")


@dataclass(frozen=True)
class RecipeEntry:
    """One shipped recipe and its header."""

    name: str
    info: RecipeInfo

    def row(self) -> dict[str, Any]:
        i = self.info
        return {"name": self.name, "kind": i.kind, "method": i.method, "backbone": i.backbone, "dataset": i.dataset,
                "labels": i.labels, "paper": i.paper, "expected_miou": i.expected_miou}


def catalogue(kind: str | None = None) -> list[RecipeEntry]:
    """Every shipped recipe with a ``recipe:`` header (of ``kind`` when given), by name."""
    return [e for e in _all_entries() if kind is None or e.info.kind == kind]


#: libyaml's safe loader where PyYAML has it (its wheels do): it reads the ~90 recipes of a kind's --help 10x faster.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def _all_entries() -> tuple[RecipeEntry, ...]:
    entries = []
    for name in list_recipes():
        path = resolve_recipe(name)
        header = (yaml.load(path.read_text(), Loader=_LOADER) or {}).get("recipe")
        if header is None:
            continue  # `lidarssl generate` recipes describe a world, not a training run
        try:
            info = RecipeInfo.model_validate(header)
        except Exception as exc:  # a malformed shipped header is a packaging bug: say which file
            raise ConfigError(f"{path}: bad `recipe:` header ({exc})") from None
        entries.append(RecipeEntry(name, info))
    return tuple(entries)


def format_catalogue(entries: list[RecipeEntry]) -> str:
    """A fixed-width table, one recipe a line; ``-`` for absent values."""
    rows = [[("-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)) for v in e.row().values()]
            for e in entries]
    head = ["name", "kind", "method", "backbone", "dataset", "labels", "paper", "expected mIoU"]
    widths = [max(len(r[k]) for r in [head, *rows]) for k in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows])


def catalogue_json(entries: list[RecipeEntry]) -> str:
    return json.dumps([e.row() for e in entries], indent=2)


def check_recipe_dataset(info: RecipeInfo | None, fmt: str, root: object, where: str = "recipe") -> None:
    """Refuse a dataset other than the one a published-cell recipe's protocol is written for.

    Raises:
        ConfigError: naming the recipe, ``data.root`` and the fix.
    """
    if info is None or info.synthetic or info.dataset in ("mixture", fmt):
        return
    others = [e.name for e in catalogue(info.kind) if e.info.dataset == fmt and e.info.method == info.method]
    fix = f"use {', '.join(others[:3])}" if others else f"write a recipe for {fmt} (or drop the `recipe:` header)"
    raise ConfigError(f"{where}: data.root={root} is {fmt}, but this recipe's protocol is written for "
                      f"{info.dataset} (recipe.dataset); {fix}")
