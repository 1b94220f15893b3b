"""A small sparse-convolution layer with the backend behind one interface.

* :class:`SparseTensor` (``tensor.py``): features on active voxel sites ``(batch, z, y, x)``;
* :mod:`~lidarssl.models.sparse.functional`: convolutions and point-voxel maps as functions;
* :mod:`~lidarssl.models.sparse.nn`: layers mirroring ``torch.nn`` (``SubMConv3d``, ``Conv3d``,
  ``ConvTranspose3d``, ``BatchNorm``, ``ReLU``, ``Dropout``), in spconv's parameter layout;
* :mod:`~lidarssl.models.sparse.backend`: rulebooks from spconv (more libraries can register there).
"""

from lidarssl.models.sparse import functional, nn
from lidarssl.models.sparse.backend import Rulebook, get_backend
from lidarssl.models.sparse.tensor import SparseTensor, cat

__all__ = ["Rulebook", "SparseTensor", "cat", "functional", "get_backend", "nn"]
