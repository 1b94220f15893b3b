"""One reader per on-disk dataset format; each returns :class:`~lidarssl.data.scan.Scan` objects.

Every reader takes ``(root, split, ...)``, has ``__len__``, ``__getitem__``, a ``class_map``, its ``splits``
and a classmethod ``detect(root)`` that says whether a folder is in its layout. The readers of real datasets
cache their frame list as JSON (``<root>/.lidarssl_index/``, or a per-user cache folder when the dataset is
read-only); :func:`lidarssl.data.datasets.open_dataset` picks the reader of a folder by asking each in turn.
A reader is a class decorated with ``@register_reader`` (its ``reader_name`` is the format name) and one line in
:mod:`lidarssl.registry` declaring that name (which also sets its place in the detection order).
"""

from __future__ import annotations

from lidarssl.data.formats._common import FrameReader
from lidarssl.data.formats.kitti import KITTIObject
from lidarssl.data.formats.kitti360 import KITTI360
from lidarssl.data.formats.nuscenes import NuScenes
from lidarssl.data.formats.once import ONCE
from lidarssl.data.formats.pandaset import PandaSet
from lidarssl.data.formats.semantickitti import SemanticKITTI
from lidarssl.data.formats.semanticposs import SemanticPOSS
from lidarssl.data.formats.synthetic import SyntheticDataset
from lidarssl.registry import READERS

#: Class decorator: makes a reader available under its ``reader_name``.
register_reader = READERS.register

__all__ = ["KITTI360", "ONCE", "READERS", "FrameReader", "KITTIObject", "NuScenes", "PandaSet", "SemanticKITTI",
           "SemanticPOSS", "SyntheticDataset", "register_reader"]
