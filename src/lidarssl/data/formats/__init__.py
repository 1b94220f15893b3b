"""One reader per on-disk dataset format; each returns :class:`~lidarssl.data.scan.Scan` objects.

Every reader takes ``(root, split, ...)``, has ``__len__``, ``__getitem__`` and a ``class_map``, and caches its
frame list as JSON (``<root>/.lidarssl_index/``, or a per-user cache folder when the dataset is read-only).
"""

from __future__ import annotations

from lidarssl.data.formats._common import FrameReader, user_cache_dir
from lidarssl.data.formats.kitti import KITTIObject
from lidarssl.data.formats.kitti360 import KITTI360
from lidarssl.data.formats.nuscenes import NuScenes
from lidarssl.data.formats.once import ONCE
from lidarssl.data.formats.pandaset import PandaSet
from lidarssl.data.formats.semantickitti import SemanticKITTI
from lidarssl.data.formats.semanticposs import SemanticPOSS

#: Reader class of each format name.
READERS: dict[str, type[FrameReader]] = {
    "semantickitti": SemanticKITTI,
    "semanticposs": SemanticPOSS,
    "kitti": KITTIObject,
    "pandaset": PandaSet,
    "nuscenes": NuScenes,
    "kitti360": KITTI360,
    "once": ONCE,
}

__all__ = ["KITTI360", "ONCE", "READERS", "FrameReader", "KITTIObject", "NuScenes", "PandaSet", "SemanticKITTI",
           "SemanticPOSS", "user_cache_dir"]
