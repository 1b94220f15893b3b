"""The seed projects' model zoo: import their releases and checkpoints, export lidarssl backbones.

* :mod:`~lidarssl.zoo.reading`: read a checkpoint or release archive without running code from it;
* :mod:`~lidarssl.zoo.formats`: which format a checkpoint is and where its network's tensors are;
* :mod:`~lidarssl.zoo.kernels`: sparse-kernel layouts of MinkowskiEngine, torchsparse and spconv;
* :mod:`~lidarssl.zoo.convert`: a checkpoint to a lidarssl preset, its heads and a record of every key, by the
  converter of its network family (:mod:`~lidarssl.zoo.families`);
* :mod:`~lidarssl.zoo.release`: ``lidarssl import`` (the release folder and its report);
* :mod:`~lidarssl.zoo.origins` and :mod:`~lidarssl.zoo.evaluate`: the preprocessing of each release's origin,
  and ``lidarssl evaluate`` of an imported segmentation release;
* :mod:`~lidarssl.zoo.export`: ``lidarssl export`` to OpenPCDet or a plain state dict.

The names below are imported on first use, so ``lidarssl import --help`` loads no torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = ["export_backbone", "import_checkpoint", "read_release"]

_EXPORTS = {"export_backbone": "lidarssl.zoo.export", "import_checkpoint": "lidarssl.zoo.release",
            "read_release": "lidarssl.zoo.release"}

if TYPE_CHECKING:
    from lidarssl.zoo.export import export_backbone
    from lidarssl.zoo.release import import_checkpoint, read_release


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lidarssl.zoo' has no attribute '{name}'")
