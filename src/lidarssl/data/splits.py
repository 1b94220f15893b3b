"""Named splits: the label fractions, pretraining scenes and frame lists of the seed projects, each a name.

A named split selects frames of a reader's base split; nothing is copied or re-indexed. The grammar, accepted
by ``open_dataset(root, split=...)``, ``lidarssl info --split`` and every recipe's split keys::

    <base>                  a reader's own split (train, val, ...) or a scene list of splits.json
    <base>@<p>%             label fraction p of <base>, by the dataset's default rule (below)
    <base>@<p>%-scenes      every k-th scene, k = 100 / p (SLidR's ``dataset_skip_step``: 1 % is k = 100)
    <base>@<p>%-frames      every k-th frame of the sorted frame list (ScaLR's ``sorted(train)[::100]``)
    <base>@<file>           the frames (or whole scenes) listed in a file (.npy, .json or .txt), e.g. ScaLR's
                            1 % / 10 % lists; a bare file name that is not on disk is one of lidarssl's
                            shipped lists (lidarssl/data/lists/, :data:`SHIPPED_LISTS`)
    parametrizing           SLidR's pretraining scenes: 'train' minus the scenes of 'verifying' (SLidR's 100)

``p`` is one of 0.1, 1, 5, 10, 25, 50, 100 or any other percentage that divides 100 (k = 1000, 100, 20, 10, 4,
2, 1). The default rule follows the projects that defined the fractions: scenes for nuScenes and the synthetic
world (SLidR), frames for SemanticKITTI, SemanticPOSS, KITTI and PandaSet (ScaLR, SLidR's KITTI 1 %).

Scenes are nuScenes scenes, the sequences of SemanticKITTI, SemanticPOSS, PandaSet and the synthetic world;
a KITTI object frame is its own scene. Every k-th scene counts as SLidR does: the k-th, 2k-th, ... scene (so a
fraction smaller than one scene in k is an error, not a silent empty split), in the order of nuScenes' scene
table, or by name elsewhere. Every k-th frame counts as ScaLR does: the first, (k+1)-th, ... frame.

Scene lists (SLidR's 100 held-out scenes, the official nuScenes lists) are not shipped: they are read from
``<root>/splits.json`` (``{name: [scene names]}``), or from the file or mapping given as the ``splits`` option.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lidarssl.data.labels import ClassMap
from lidarssl.data.scan import Scan
from lidarssl.errors import DataError
from lidarssl.registry import READERS

#: Label fractions (percent) the seed projects report, listed by ``lidarssl info``.
FRACTIONS: tuple[float, ...] = (0.1, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0)
#: SLidR's pretraining split and its held-out scenes (their names in SLidR's code).
PRETRAIN_SPLIT, HELD_OUT_SPLIT = "parametrizing", "verifying"
SPLIT_FILE = "splits.json"
LIST_SUFFIXES = (".npy", ".json", ".txt")

#: Lists lidarssl ships (in lidarssl/data/lists/), by file name: where each comes from.
SHIPPED_LISTS = {
    # ALSO's and NCLR's nuScenes readers fall back to this one scene when every 1000th scene of 'parametrizing'
    # keeps none (also_selfsup/datasets/nuscenes_dataset.py; NCLR downstream/datasets/nuscenes_dataset.py:208-213)
    "nuscenes-0.1p-scene-0392.json": "ALSO's and NCLR's 0.1 % nuScenes split (their one-scene fallback)",
}
_LISTS_DIR = Path(__file__).resolve().parent / "lists"
_SCALR_INFO = ("ScaLR's info_datasets archive (https://github.com/valeoai/ScaLR/releases/download/v0.1.0/"
               "info_datasets.tar.gz, untarred under ScaLR's datasets/)")
#: Lists the originals publish but lidarssl cannot ship: where a user gets them.
EXTERNAL_LISTS = {"nuscenes-ratio_100-v_0.npy": _SCALR_INFO, "nuscenes-ratio_10-v_0.npy": _SCALR_INFO}

_FRACTION = re.compile(r"^(?P<p>\d+(?:\.\d+)?)%(?:-(?P<rule>scenes|frames))?$")

OpenBase = Callable[[str | None], Any]


@dataclass(frozen=True)
class Selector:
    """The part of a split name after ``@``: a fraction with its rule, or a frame-list file."""

    percent: float | None = None
    rule: str | None = None  # "scenes", "frames" or None for the dataset's default
    list_file: Path | None = None

    @property
    def step(self) -> int:
        """k of "every k-th": 100 / percent."""
        assert self.percent is not None
        return round(100 / self.percent)


def parse_split(name: str) -> tuple[str, Selector | None]:
    """``(base, selector)`` of a split name; ``selector`` is None for a plain base split.

    Raises:
        DataError: a selector that is neither ``<p>%[-scenes|-frames]`` nor a list file, or a percentage that
            does not divide 100.
    """
    base, sep, rest = name.partition("@")
    if not sep:
        return name, None
    if not base:
        raise DataError(f"split '{name}': no base split before '@' (e.g. 'train@1%')")
    match = _FRACTION.match(rest)
    if match:
        p = float(match["p"])
        k = 100 / p if p > 0 else 0
        if p <= 0 or p > 100 or abs(k - round(k)) > 1e-9:
            raise DataError(f"split '{name}': {match['p']}% is not 100/k for a whole k; use one of "
                            f"{', '.join(f'{f:g}%' for f in FRACTIONS)}")
        return base, Selector(percent=p, rule=match["rule"])
    if rest.endswith(LIST_SUFFIXES):
        path = Path(rest).expanduser()
        if rest in SHIPPED_LISTS and not path.exists():
            path = _LISTS_DIR / rest
        return base, Selector(list_file=path)
    raise DataError(f"split '{name}': expected '{base}@<p>%', '{base}@<p>%-scenes', '{base}@<p>%-frames' or "
                    f"'{base}@<list file ({', '.join(LIST_SUFFIXES)})>' after '@'")


# --- what a frame is ---------------------------------------------------------------------------------------------


def _reader_method(dataset: Any, name: str) -> Any:
    if not hasattr(dataset, name):
        raise DataError(f"named splits and frame lists need the reader to say what a frame is; the "
                        f"{type(dataset).__name__} reader has no {name}() (FrameReader has one)")
    return getattr(dataset, name)


def frame_scene(dataset: Any, index: int) -> str:
    """Name of the scene (nuScenes scene, sequence) that frame ``index`` of a reader belongs to."""
    return _reader_method(dataset, "frame_scene")(index)


def frame_keys(dataset: Any, index: int) -> tuple[str, ...]:
    """Strings a frame list may name frame ``index`` by: its frame id, lidar file (relative to the root), tokens."""
    return _reader_method(dataset, "frame_keys")(index)


def scene_order(dataset: Any) -> list[str]:
    """The dataset's scenes in the order every k-th scene counts them: the reader's own order (``scene_table``,
    nuScenes' table), else by name."""
    present = list(dict.fromkeys(frame_scene(dataset, i) for i in range(len(dataset))))
    table = dataset.scene_table() if hasattr(dataset, "scene_table") else None
    if table is not None:
        wanted = set(present)
        return [s for s in table if s in wanted]
    return sorted(present, key=lambda s: (len(s), s) if s.isdigit() else (0, s))


# --- the view -----------------------------------------------------------------------------------------------------


class SplitView:
    """A named split: frames ``indices`` of a base reader, read through it.

    Has what every reader has (``len``, indexing, ``class_map``, ``frames``, ``root``, ``split``); any other
    attribute is the base reader's (``camera_calibration``, ``with_labels``, ...).

    Args:
        base: the reader of the base split.
        indices: frames of ``base`` in this split, in order.
        name: the split's name.
        rule: how the frames were chosen, in words (``lidarssl info`` prints it).
    """

    def __init__(self, base: Any, indices: Sequence[int], name: str, rule: str) -> None:
        self.base = base
        self.indices = [int(i) for i in indices]
        self.split = name
        self.rule = rule
        self.class_map: ClassMap = base.class_map
        self.root: Path = base.root

    @property
    def frames(self) -> list:
        return [self.base.frames[i] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Scan:
        n = len(self.indices)
        if not -n <= index < n:
            raise IndexError(f"split '{self.split}' of {self.root}: frame {index} out of range ({n} frames)")
        return self.base[self.indices[index]]

    # The reader's per-frame methods take the base reader's index: map ours to it.
    def frame_files(self, index: int) -> Any:
        return self.base.frame_files(self.indices[index])

    def frame_keys(self, index: int) -> tuple[str, ...]:
        return frame_keys(self.base, self.indices[index])

    def frame_scene(self, index: int) -> str:
        return frame_scene(self.base, self.indices[index])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or "base" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["base"], name)

    def __repr__(self) -> str:
        return f"SplitView(root='{self.root}', split='{self.split}', frames={len(self)}, rule='{self.rule}')"


# --- selection rules ----------------------------------------------------------------------------------------------


def every_kth_scene(dataset: Any, k: int) -> list[int]:
    """Frames of the k-th, 2k-th, ... scene (SLidR's ``dataset_skip_step``)."""
    kept = set(scene_order(dataset)[k - 1::k])
    return [i for i in range(len(dataset)) if frame_scene(dataset, i) in kept]


def every_kth_frame(dataset: Any, k: int) -> list[int]:
    """Every k-th frame of the frames sorted by lidar file, from the first (ScaLR's ``sorted(train)[::k]``)."""
    order = sorted(range(len(dataset)), key=lambda i: frame_keys(dataset, i)[1])
    return sorted(order[::k])


def read_frame_list(path: Path) -> list[str]:
    """Every string of a frame-list file: ``.npy`` (string array, any shape), ``.json`` (nested lists) or ``.txt``.

    ScaLR's lists are ``.npy`` rows of ``[lidar file, lidarseg file, token]``. An ``.npy`` of Python objects is
    a pickle, which lidarssl never loads (it can run code): the error says how to convert it once.
    """
    if not path.is_file():
        where = f"; it ships in {EXTERNAL_LISTS[path.name]}" if path.name in EXTERNAL_LISTS else ""
        raise DataError(f"{path}: frame list not found{where}")
    if path.suffix == ".npy":
        try:
            values = np.load(path, allow_pickle=False)
        except ValueError as e:
            if "pickle" not in str(e):
                raise DataError(f"{path}: not a numpy array file ({e})") from e
            raise DataError(
                f"{path}: holds pickled Python objects, which lidarssl does not load (unpickling can run code); "
                f"convert it once to JSON with `python -c \"import json, numpy as np; json.dump(np.load('{path}', "
                f"allow_pickle=True).tolist(), open('{path.with_suffix('.json')}', 'w'))\"` and use that file"
            ) from None
        except OSError as e:
            raise DataError(f"{path}: not a numpy array file ({e})") from e
        return [str(v) for v in np.ravel(values)]
    if path.suffix == ".json":
        try:
            doc = json.loads(path.read_text())
        except ValueError as e:
            raise DataError(f"{path}: not valid JSON ({e})") from e
        out: list[str] = []

        def walk(v: object) -> None:
            if isinstance(v, list | tuple):
                for x in v:
                    walk(x)
            elif isinstance(v, str):
                out.append(v)
            else:
                raise DataError(f"{path}: expected (nested) lists of frame ids or file names, found {v!r}")

        walk(doc)
        return out
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def listed_frames(dataset: Any, path: Path) -> list[int]:
    """Frames named in the list file ``path`` (by frame id, token or lidar file; paths match by their end), and
    every frame of the scenes it names."""
    entries = read_frame_list(path)
    names = set(entries)
    scenes = {frame_scene(dataset, i) for i in range(len(dataset))}
    listed_scenes = names & scenes
    missing = [e for e in entries if e.startswith("scene-") and e not in scenes]
    if missing:  # a scene list for another split or dataset: say which scenes and where the list comes from
        source = SHIPPED_LISTS.get(path.name, "a user list")
        raise DataError(f"{path}: scenes {missing[:5]} are not in split '{getattr(dataset, 'split', '?')}' of "
                        f"{dataset.root} ({source})")
    by_file: dict[str, list[str]] = {}
    for e in entries:
        by_file.setdefault(Path(e).name, []).append(e.replace("\\", "/"))
    kept = []
    for i in range(len(dataset)):
        keys = frame_keys(dataset, i)
        if any(key in names for key in keys) or frame_scene(dataset, i) in listed_scenes:
            kept.append(i)
            continue
        rel = keys[1] if len(keys) > 1 else keys[0]
        if any(e.endswith("/" + rel) for e in by_file.get(Path(rel).name, ())):
            kept.append(i)
    if not kept:
        raise DataError(f"{path}: none of its {len(entries)} entries (e.g. {entries[:2]}) names a frame of split "
                        f"'{getattr(dataset, 'split', '?')}' of {dataset.root} (frames are named like "
                        f"{list(frame_keys(dataset, 0))})")
    return kept


# --- scene lists --------------------------------------------------------------------------------------------------


def scene_lists(root: Path, splits: Mapping[str, Sequence[str]] | str | Path | None
                ) -> tuple[dict[str, tuple[str, ...]], str]:
    """Scene lists of ``splits`` (a mapping or JSON file), else of ``<root>/splits.json``, and where they came from."""
    from lidarssl.data.formats.nuscenes import read_split_lists

    where = "the splits option" if isinstance(splits, Mapping) else str(splits or root / SPLIT_FILE)
    return read_split_lists(root, splits), where


def _held_out(root: Path, fmt: str, splits: Any) -> set[str]:
    lists, where = scene_lists(root, splits)
    if HELD_OUT_SPLIT not in lists:
        need = f"'{HELD_OUT_SPLIT}' (SLidR's 100 held-out scene names, its CUSTOM_SPLIT)"
        if _reads_scene_lists(fmt):
            need += " and 'train' (the 700 official train scenes, from the devkit's create_splits_scenes())"
        found = f"it holds {sorted(lists)}" if lists else "it is absent"
        raise DataError(f"{where}: split '{PRETRAIN_SPLIT}' (SLidR's pretraining scenes: train minus its held-out "
                        f"scenes) needs the key {need}; {found}. Write {{\"{HELD_OUT_SPLIT}\": [scene names], ...}} "
                        f"into {root / SPLIT_FILE} or pass splits=PATH")
    return set(lists[HELD_OUT_SPLIT])


# --- opening ------------------------------------------------------------------------------------------------------


def default_rule(fmt: str) -> str:
    """``"scenes"`` or ``"frames"``: what a bare ``<p>%`` counts for this format (its reader's ``fraction_rule``)."""
    return getattr(READERS[fmt], "fraction_rule", "frames")


def _reads_scene_lists(fmt: str) -> bool:
    return getattr(READERS[fmt], "reads_scene_lists", False)


def _nth(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def apply_selector(dataset: Any, selector: Selector, fmt: str, name: str) -> SplitView:
    """The frames of ``dataset`` that ``selector`` keeps, as a :class:`SplitView` called ``name``."""
    if selector.list_file is not None:
        return SplitView(dataset, listed_frames(dataset, selector.list_file), name,
                         f"frames listed in {selector.list_file}")
    k, rule = selector.step, selector.rule or default_rule(fmt)
    if rule == "scenes":
        indices = every_kth_scene(dataset, k)
        scenes = len(scene_order(dataset))
        if not indices:
            raise DataError(f"split '{name}' of {dataset.root}: every {k}th scene of {scenes} scenes keeps none; "
                            f"use '{name.partition('@')[0]}@{selector.percent:g}%-frames' or a larger fraction")
        how = "every scene" if k == 1 else f"every {_nth(k)} scene ({len(scene_order(dataset)[k - 1::k])} of {scenes})"
    else:
        indices = every_kth_frame(dataset, k)
        how = "every frame" if k == 1 else f"every {_nth(k)} frame of the sorted list"
    return SplitView(dataset, indices, name, how)


def open_split(open_base: OpenBase, root: Path, fmt: str, split: str, splits: Any = None,
               reader_splits: Sequence[str] = ()) -> Any:
    """Open the named split ``split`` through ``open_base(base split name)``.

    Args:
        open_base: opens the reader of a base split (``None``: the reader's default).
        root: dataset folder (for ``splits.json``).
        fmt: the dataset's format name (decides the default fraction rule).
        split: the split name (see the module docstring).
        splits: scene lists (mapping or JSON file) instead of ``<root>/splits.json``.
        reader_splits: the reader's own split names; another base name is looked up in the scene lists (the
            nuScenes reader reads those itself).
    """
    base_name, selector = parse_split(split)
    if base_name not in reader_splits and base_name != PRETRAIN_SPLIT and not _reads_scene_lists(fmt):
        lists, where = scene_lists(root, splits)
        if base_name not in lists:
            raise DataError(f"{root}: unknown split '{base_name}'; choose one of {list(reader_splits)}, "
                            f"{PRETRAIN_SPLIT}, or a scene list of {where} ({sorted(lists) or 'none there'})")
        if "all" not in reader_splits:
            raise DataError(f"{where}: scene list '{base_name}' needs a reader with an 'all' split; this {fmt} reader "
                            f"has {list(reader_splits)}")
        every = open_base("all")
        wanted = set(lists[base_name])
        indices = [i for i in range(len(every)) if frame_scene(every, i) in wanted]
        if not indices:
            raise DataError(f"{where}: none of the scenes of '{base_name}' ({sorted(wanted)[:3]}...) is in {root}; "
                            f"its scenes are named like {frame_scene(every, 0)!r}")
        base = SplitView(every, indices, base_name, f"scenes listed as '{base_name}' in {where}")
        return base if selector is None else apply_selector(base, selector, fmt, split)
    if base_name == PRETRAIN_SPLIT:
        held_out = _held_out(root, fmt, splits)
        train = open_base("train")
        indices = [i for i in range(len(train)) if frame_scene(train, i) not in held_out]
        if len(indices) == len(train):
            raise DataError(f"split '{PRETRAIN_SPLIT}': none of the {len(held_out)} '{HELD_OUT_SPLIT}' scenes is in "
                            f"'train' of {root}; the scene lists do not belong to this dataset")
        dropped = len({frame_scene(train, i) for i in range(len(train))} & held_out)
        base: Any = SplitView(train, indices, PRETRAIN_SPLIT, f"train minus {dropped} '{HELD_OUT_SPLIT}' scenes")
    else:
        base = open_base(base_name)
    return base if selector is None else apply_selector(base, selector, fmt, split)


def describe_splits(open_base: OpenBase, root: Path, fmt: str, base_splits: Sequence[str],
                    splits: Any = None) -> list[str]:
    """Lines for ``lidarssl info``: each base split, the fractions of 'train' and SLidR's split, with frame counts."""
    lines = ["named splits (frames; syntax: <base>@<p>%[-scenes|-frames], <base>@<list file>, parametrizing):"]
    opened: dict[str, Any] = {}
    row = []
    for name in base_splits:
        try:
            opened[name] = open_base(name)
            row.append(f"{name} {len(opened[name])}")
        except DataError:
            row.append(f"{name} -")
    lines.append("  " + ", ".join(row) + ("  (-: not on disk, or needs a scene list)" if " -" in " ".join(row) else ""))
    train = opened.get("train")
    if train is not None:
        rule = default_rule(fmt)
        for p in FRACTIONS[:-1]:
            name = f"train@{p:g}%"
            try:
                view = apply_selector(train, Selector(percent=p), fmt, name)
                lines.append(f"  {name:<14}{len(view):>8}  {view.rule}")
            except DataError:
                lines.append(f"  {name:<14}{0:>8}  fewer than one {rule[:-1]} in {round(100 / p)}")
    try:
        view = open_split(lambda n: opened[n] if n in opened else open_base(n), root, fmt, PRETRAIN_SPLIT, splits,
                          base_splits)
        lines.append(f"  {PRETRAIN_SPLIT:<14}{len(view):>8}  {view.rule}")
    except DataError:
        lines.append(f"  {PRETRAIN_SPLIT:<14}{'-':>8}  needs '{HELD_OUT_SPLIT}' (SLidR's 100 held-out scenes) in "
                     f"{root / SPLIT_FILE}")
    return lines
