"""Class maps: each dataset's raw label ids, their names, and the map to contiguous training ids."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
import yaml

from lidarssl.errors import DataError


@dataclass(frozen=True)
class ClassMap:
    """Raw ids -> training ids ``0..len(classes)-1``; every other raw id -> ``ignore_index``."""

    name: str
    classes: tuple[str, ...]
    raw_names: dict[int, str]
    learning_map: dict[int, int]
    ignore_index: int

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def lookup_table(self) -> np.ndarray:
        """A table ``t`` with ``t[raw] == training id`` for every raw id this map knows."""
        table = np.full(max(self.raw_names) + 1, self.ignore_index, np.int64)
        for raw, train in self.learning_map.items():
            table[raw] = train
        return table

    def map(self, raw: np.ndarray, source: str = "<memory>") -> np.ndarray:
        """Training ids of ``raw`` labels; unknown raw ids are an error naming them and the file."""
        table = self.lookup_table()
        raw = np.asarray(raw, np.int64)
        unknown = (raw < 0) | (raw >= len(table))
        if unknown.any():
            ids = np.unique(raw[unknown])[:10].tolist()
            raise DataError(
                f"{source}: raw label ids {ids} are not in the {self.name} class map "
                f"(known ids 0..{len(table) - 1}); is this the right dataset?"
            )
        return table[raw]


@cache
def load_class_map(name: str) -> ClassMap:
    """The class map shipped as ``lidarssl/data/labels/<name>.yaml``."""
    path = resources.files(__name__) / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.name.removesuffix(".yaml") for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml"))
        raise DataError(f"no class map '{name}'; known maps: {known}")
    doc = yaml.safe_load(path.read_text())
    return ClassMap(
        name=doc["name"],
        classes=tuple(doc["classes"]),
        raw_names={int(k): str(v) for k, v in doc["raw_names"].items()},
        learning_map={int(k): int(v) for k, v in doc["learning_map"].items()},
        ignore_index=int(doc["ignore_index"]),
    )
