"""SLidR's MinkowskiEngine Res16UNet34C (``res16``): its names mapped to lidarssl's MinkUNet names."""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["res16_name"]

_BLOCK_PARTS = {"conv1": "net.0", "norm1": "net.1", "conv2": "net.3", "norm2": "net.4",
                "downsample.0": "downsample.0", "downsample.1": "downsample.1"}  # fmt: skip


def _res16_block(m: re.Match) -> str:
    b, j, part, rest = int(m[1]), int(m[2]), _BLOCK_PARTS[m[3]], m[4]
    where = f"stage{b}.{j + 1}" if b <= 4 else f"up{b - 4}.1.{j}"
    return f"{where}.{part}.{rest}"


_RES16: list[tuple[re.Pattern, Callable[[re.Match], str]]] = [
    (re.compile(r"conv0p1s1\.(.+)"), lambda m: f"stem.0.{m[1]}"),
    (re.compile(r"bn0\.(.+)"), lambda m: f"stem.1.{m[1]}"),
    (re.compile(r"conv([1-4])p\d+s2\.(.+)"), lambda m: f"stage{m[1]}.0.net.0.{m[2]}"),
    (re.compile(r"bn([1-4])\.(.+)"), lambda m: f"stage{m[1]}.0.net.1.{m[2]}"),
    (re.compile(r"convtr([4-7])p\d+s2\.(.+)"), lambda m: f"up{int(m[1]) - 3}.0.net.0.{m[2]}"),
    (re.compile(r"bntr([4-7])\.(.+)"), lambda m: f"up{int(m[1]) - 3}.0.net.1.{m[2]}"),
    (re.compile(r"block([1-8])\.(\d+)\.(conv1|norm1|conv2|norm2|downsample\.[01])\.(.+)"), _res16_block),
]


def res16_name(name: str) -> str | None:
    for pattern, target in _RES16:
        m = pattern.fullmatch(name)
        if m:
            return target(m)
    return None
