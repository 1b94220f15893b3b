"""Checkpoint converters, one module per network family (see :func:`~lidarssl.zoo.formats.network_family`).

:func:`lidarssl.zoo.convert.convert` picks the family's converter: :mod:`.waffleiron`, or :mod:`.sparse` for the
three sparse families, which share kernel layouts and heads and keep their own parts in :mod:`.res16`, :mod:`.unet`
and :mod:`.voxelbackbone`; :mod:`.slidr` reads SLidR's image branch and config. Every converter records where each
key goes (:class:`~lidarssl.zoo.families.keys.Keys`).

* ``waffleiron``: WaffleIron's ``Segmenter`` keeps its names (``embed.*``, ``waffleiron.*``); depth, width and
  norm are read from the tensors. The ``classif`` head becomes ScaLR's distillation head (``head.weight``),
  or a segmentation head (``head.0`` BatchNorm, ``head.1`` linear: :class:`SegmentationModule`'s names).
* ``res16``: SLidR's MinkowskiEngine Res16UNet34C. ``conv0p1s1``/``bn0`` become ``stem.0``/``stem.1``,
  ``conv{i}p*s2``/``bn{i}`` ``stage{i}.0.net.{0,1}``, ``block{b}.{j}`` ``stage{b}.{j+1}`` (b <= 4) or
  ``up{b-4}.1.{j}``, ``convtr{k}p*s2``/``bntr{k}`` ``up{k-3}.0.net.{0,1}``; inside blocks ``conv1, norm1, conv2,
  norm2`` become ``net.0, net.1, net.3, net.4``. ``final`` (1x1 conv) becomes the point head ``head``.
* ``unet``: torchsparse-named U-Nets (ALSO's MinkUNet and SPVCNN, SegContrast/NCLR's MinkowskiEngine
  MinkUNet) keep their names; ``classifier``/``final`` become ``head``.
* ``voxelbackbone``: OpenPCDet's VoxelBackBone8x keeps its names; SLidR's ``final`` 1x1 conv becomes ``final``.

MinkowskiEngine BatchNorms lose their ``.bn.``; every ``.kernel`` becomes ``.weight`` in lidarssl's layout
(:mod:`lidarssl.zoo.kernels`).
"""
