"""SemanticPOSS reader: Pandora 40-beam scans of Peking University's campus with per-point semantic labels.

SemanticPOSS ships in the SemanticKITTI layout (six sequences, 00-05)::

    <root>/dataset/sequences/XX/velodyne/NNNNNN.bin   float32 x 4: x, y, z, remission
                                 labels/NNNNNN.label  uint32 per point: semantic id (low 16 bits), instance (high 16)
                                 calib.txt, poses.txt, times.txt   optional, as in SemanticKITTI

so it is read by the SemanticKITTI reader with another split table and class map; only the labels tell the
two apart (every SemanticPOSS id is at most 22, while a SemanticKITTI scan holds road, 40, and the like).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lidarssl.data.formats.semantickitti import SemanticKITTI
from lidarssl.registry import READERS

#: Sequences of each split. The dataset defines no official split; this is the common one (the SemanticPOSS
#: paper's, and ALSO/NCLR's downstream configs): sequence 03 held out for validation, the rest for training.
SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("00", "01", "02", "04", "05"),
    "val": ("03",),
    "all": ("00", "01", "02", "03", "04", "05"),
}

#: Largest raw semantic id of SemanticPOSS (22, ground); layout detection uses it.
MAX_RAW_ID = 22

_LAYOUT = "<root>/dataset/sequences/0X/velodyne/NNNNNN.bin with labels/NNNNNN.label (sequences 00-05)"


@READERS.register
class SemanticPOSS(SemanticKITTI):
    """SemanticPOSS scans as :class:`~lidarssl.data.scan.Scan`.

    Everything but the splits and the labels is :class:`~lidarssl.data.formats.SemanticKITTI`'s (same files,
    same options). Labels map the raw ids through ``labels/semanticposs.yaml`` to 13 classes; a raw id that
    SemanticPOSS does not define is an error naming the label file.

    Args:
        root: dataset folder (``<root>/dataset/sequences`` or ``<root>/sequences``).
        split: ``"train"`` (00, 01, 02, 04, 05), ``"val"`` (03) or ``"all"``.
        **options: those of :class:`~lidarssl.data.formats.SemanticKITTI` (``with_labels``, ``with_images``,
            ``on_missing_camera``, ``cache_dir``, ``refresh``).
    """

    reader_name = "semanticposs"
    splits = tuple(SPLITS)
    split_sequences = SPLITS
    title = "SemanticPOSS"
    layout = _LAYOUT

    @classmethod
    def detect(cls, root: Path) -> bool:
        """A SemanticKITTI layout whose labels are SemanticPOSS's (:func:`holds_semanticposs`)."""
        return super().detect(root) and holds_semanticposs(cls.find_sequences(root))


def holds_semanticposs(sequences: Path) -> bool:
    """Whether a SemanticKITTI-layout folder holds SemanticPOSS: by the ids of its first label file, else its name.

    Every SemanticPOSS raw id is at most 22, while any SemanticKITTI scan holds road (40), building (50) or
    vegetation (70); only without label files does the folder name decide ("SemanticPOSS", "semantic_poss").
    """
    for seq in sorted(p for p in sequences.iterdir() if p.is_dir()):
        labels = sorted((seq / "labels").glob("*.label")) if (seq / "labels").is_dir() else []
        if labels:
            raw = np.fromfile(labels[0], dtype="<u4") & 0xFFFF
            return raw.size > 0 and int(raw.max()) <= MAX_RAW_ID
    return any("poss" in part.lower() for part in sequences.parts[-3:])
