"""Class maps: each dataset's raw label ids, their names, and the map to contiguous training ids."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property
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

    @cached_property
    def lookup_table(self) -> np.ndarray:
        """A table ``t`` with ``t[raw] == training id`` for every raw id this map knows (read-only)."""
        table = np.full(max(self.raw_names) + 1, self.ignore_index, np.int64)
        for raw, train in self.learning_map.items():
            table[raw] = train
        table.flags.writeable = False
        return table

    @cached_property
    def _known(self) -> np.ndarray:
        known = np.zeros(max(self.raw_names) + 1, bool)
        known[list(self.raw_names)] = True
        return known

    def map(self, raw: np.ndarray, source: str = "<memory>") -> np.ndarray:
        """Training ids of ``raw`` labels.

        Raises:
            DataError: for raw ids the map does not list (ids in the gaps of a sparse id range too: such an
                id means a wrong file, not an unlabelled point), naming them and the file.
        """
        raw = np.asarray(raw, np.int64)
        inside = (raw >= 0) & (raw < len(self._known))
        unknown = ~inside
        unknown[inside] = ~self._known[raw[inside]]
        if unknown.any():
            ids = np.unique(raw[unknown])[:10].tolist()
            raise DataError(
                f"{source}: raw label ids {ids} are not in the {self.name} class map "
                f"(known ids: {sorted(self.raw_names)}); is this the right dataset?"
            )
        return self.lookup_table[raw]


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
