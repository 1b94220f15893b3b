"""Sparse-convolution kernel layouts of the libraries the seed projects used, and lidarssl's.

lidarssl stores every sparse kernel as ``(C_out, kz, ky, kx, C_in)``, kernel dims following the voxel index
columns ``(z, y, x)``: spconv 2.x's KRSC layout (``spconv/pytorch/conv.py``, every algorithm from 2.2 on),
which OpenPCDet loads unchanged. The other layouts:

* ``minkowski`` (MinkowskiEngine 0.5, ``MinkowskiConvolution.kernel``): ``(K^3, C_in, C_out)``, or
  ``(C_in, C_out)`` for a 1x1 conv. Coordinates are ``(x, y, z)`` and the flat offset is
  ``i_x + K i_y + K^2 i_z``: the *first* coordinate varies fastest (ME's ``KernelRegion``). Transposed
  convolutions reuse the forward map, so they share the order.
* ``torchsparse14`` (torchsparse 1.4, ``spnn.Conv3d.kernel``): same shapes; odd kernels enumerate offsets
  like MinkowskiEngine, even kernels with the *last* coordinate fastest (``get_kernel_offsets`` in
  ``torchsparse/nn/utils/kernel.py``). Applying the MinkowskiEngine order to a 2^3 torchsparse kernel mixes
  up its taps.
* ``spconv1`` (spconv 1.x): ``(kz, ky, kx, C_in, C_out)``.
* ``spconv21_native`` (spconv 2.0 / 2.1, Native algorithm): ``(kz, ky, kx, C_out, C_in)``.
"""

from __future__ import annotations

import torch

__all__ = ["LAYOUTS", "LAYOUT_NAMES", "from_ours", "spconv_layout", "to_ours"]

#: Layout names and what they are, for reports.
LAYOUT_NAMES = {
    "spconv2": "spconv 2.x KRSC (C_out, kz, ky, kx, C_in), lidarssl's own",
    "spconv1": "spconv 1.x (kz, ky, kx, C_in, C_out)",
    "spconv21_native": "spconv 2.0/2.1 Native (kz, ky, kx, C_out, C_in)",
    "minkowski": "MinkowskiEngine 0.5 (K^3, C_in, C_out), x fastest",
    "torchsparse14": "torchsparse 1.4 (K^3, C_in, C_out), x fastest for odd K, z fastest for even K",
}
LAYOUTS = tuple(LAYOUT_NAMES)


def _cube_side(volume: int) -> int:
    side = round(volume ** (1 / 3))
    if side**3 != volume:
        raise ValueError(f"a kernel of {volume} offsets is not a cube")
    return side


def to_ours(weight: torch.Tensor, layout: str) -> torch.Tensor:
    """A kernel of ``layout`` in lidarssl's ``(C_out, kz, ky, kx, C_in)`` layout (contiguous).

    Raises:
        ValueError: when the tensor's shape does not fit the layout.
    """
    if layout == "spconv2":
        if weight.dim() != 5:
            raise ValueError(f"expected a 5-D kernel, got {tuple(weight.shape)}")
        return weight.contiguous()
    if layout in ("spconv1", "spconv21_native"):
        if weight.dim() != 5:
            raise ValueError(f"expected a 5-D kernel, got {tuple(weight.shape)}")
        order = (4, 0, 1, 2, 3) if layout == "spconv1" else (3, 0, 1, 2, 4)
        return weight.permute(*order).contiguous()
    if layout not in ("minkowski", "torchsparse14"):
        raise ValueError(f"unknown kernel layout '{layout}'; known: {', '.join(LAYOUTS)}")
    if weight.dim() == 2:  # 1x1 convolution
        weight = weight.unsqueeze(0)
    if weight.dim() != 3:
        raise ValueError(f"expected a (K^3, C_in, C_out) or (C_in, C_out) kernel, got {tuple(weight.shape)}")
    volume, c_in, c_out = weight.shape
    k = _cube_side(volume)
    cube = weight.reshape(k, k, k, c_in, c_out)
    if layout == "torchsparse14" and k % 2 == 0:
        return cube.permute(4, 2, 1, 0, 3).contiguous()  # stored (x, y, z): z fastest
    return cube.permute(4, 0, 1, 2, 3).contiguous()  # stored (z, y, x): x fastest


def from_ours(weight: torch.Tensor, layout: str) -> torch.Tensor:
    """The inverse of :func:`to_ours`: a ``(C_out, kz, ky, kx, C_in)`` kernel in ``layout`` (contiguous).

    Raises:
        ValueError: on a kernel that is not 5-D, or not cubic for the MinkowskiEngine and torchsparse layouts.
    """
    if weight.dim() != 5:
        raise ValueError(f"expected a (C_out, kz, ky, kx, C_in) kernel, got {tuple(weight.shape)}")
    if layout == "spconv2":
        return weight.contiguous()
    if layout == "spconv1":
        return weight.permute(1, 2, 3, 4, 0).contiguous()
    if layout == "spconv21_native":
        return weight.permute(1, 2, 3, 0, 4).contiguous()
    if layout not in ("minkowski", "torchsparse14"):
        raise ValueError(f"unknown kernel layout '{layout}'; known: {', '.join(LAYOUTS)}")
    c_out, kz, ky, kx, c_in = weight.shape
    if not kz == ky == kx:
        raise ValueError(f"{layout} kernels are cubes, got {(kz, ky, kx)}")
    if kz == 1:
        return weight.reshape(c_out, c_in).t().contiguous()
    if layout == "torchsparse14" and kz % 2 == 0:
        return weight.permute(3, 2, 1, 4, 0).reshape(kz**3, c_in, c_out).contiguous()
    return weight.permute(1, 2, 3, 4, 0).reshape(kz**3, c_in, c_out).contiguous()


def spconv_layout(weight: torch.Tensor, c_out: int, kernel: tuple[int, int, int] = (3, 3, 3)) -> str | None:
    """Which spconv layout a 5-D kernel of known output width and kernel size is stored in.

    Use a layer whose ``C_in`` differs from ``C_out`` (OpenPCDet's ``conv_input``: 16 outputs, 4 or 5 inputs);
    a square layer fits two layouts and gives ``None``, as does a tensor no layout fits.
    """
    shape = tuple(weight.shape)
    if weight.dim() != 5:
        return None
    fits = []
    if shape[0] == c_out and shape[1:4] == kernel:
        fits.append("spconv2")
    if shape[:3] == kernel and shape[4] == c_out:
        fits.append("spconv1")
    if shape[:3] == kernel and shape[3] == c_out:
        fits.append("spconv21_native")
    return fits[0] if len(fits) == 1 else None
