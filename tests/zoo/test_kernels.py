"""A kernel stored by MinkowskiEngine, torchsparse 1.4 or spconv 1.x/2.1, converted to lidarssl's layout, gives
the output of a dense reference convolution that walks the kernel offsets in that library's own order.

The references below are written from each library's documented convention (not from lidarssl.zoo.kernels):
MinkowskiEngine and torchsparse index voxels by (x, y, z) columns and store (K^3, C_in, C_out) kernels whose
flat offset index runs x fastest, except torchsparse's even kernels (z fastest); spconv indexes (z, y, x) and
stores (kz, ky, kx, C_in, C_out) (1.x) or (kz, ky, kx, C_out, C_in) (2.0/2.1 Native).
"""

from __future__ import annotations

import itertools

import pytest
import torch

from lidarssl.models.sparse import SparseTensor
from lidarssl.models.sparse import nn as spnn
from lidarssl.zoo.kernels import LAYOUTS, from_ours, spconv_layout, to_ours

C_IN, C_OUT = 3, 4
GRID = (6, 8, 6)  # per coordinate column, even so that every site has a stride-2 parent


def me_offsets(k: int) -> list[tuple[int, int, int]]:
    """MinkowskiEngine: flat index i0 + K i1 + K^2 i2 over columns (c0, c1, c2); odd kernels centred."""
    shift = k // 2 if k % 2 else 0
    return [(i % k - shift, (i // k) % k - shift, i // k**2 - shift) for i in range(k**3)]


def torchsparse_offsets(k: int) -> list[tuple[int, int, int]]:
    """torchsparse 1.4's get_kernel_offsets: odd volumes as MinkowskiEngine, even volumes with c2 fastest."""
    if k % 2:
        return me_offsets(k)
    return [(a, b, c) for a in range(k) for b in range(k) for c in range(k)]


def random_sites(seed: int, channels: int = C_IN) -> tuple[list[tuple[int, ...]], torch.Tensor]:
    """Unique (batch, c0, c1, c2) sites of two samples, and float64 features."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(2, *GRID, generator=g) < 0.3
    sites = [tuple(s) for s in mask.nonzero().tolist()]
    return sites, torch.randn(len(sites), channels, generator=g, dtype=torch.float64)


def as_ours(sites: list[tuple[int, ...]], feats: torch.Tensor, columns_reversed: bool) -> SparseTensor:
    """A lidarssl tensor over the same sites: lidarssl's columns are (z, y, x), the originals' (x, y, z)."""
    coords = torch.tensor([(b, c2, c1, c0) if columns_reversed else (b, c0, c1, c2) for b, c0, c1, c2 in sites],
                          dtype=torch.int32)
    shape = GRID[::-1] if columns_reversed else GRID
    return SparseTensor(feats, coords, shape, 2)


def reference(sites, feats, kernel, offsets, out_sites, stride: int = 1):
    """out[o] = sum_k in[stride * o + offset_k] @ kernel[k], over active input sites."""
    index = {s: i for i, s in enumerate(sites)}
    out = torch.zeros(len(out_sites), kernel.shape[-1], dtype=torch.float64)
    for r, (b, *o) in enumerate(out_sites):
        for k, off in enumerate(offsets):
            i = index.get((b, *(stride * oc + d for oc, d in zip(o, off))))
            if i is not None:
                out[r] += feats[i] @ kernel[k]
    return out


def rows_at(x: SparseTensor, sites: list[tuple[int, ...]], columns_reversed: bool) -> torch.Tensor:
    """x's features at ``sites`` given in the original's (batch, c0, c1, c2) order."""
    lookup = {tuple(c): i for i, c in enumerate(x.coords.tolist())}
    rows = [lookup[(b, c2, c1, c0) if columns_reversed else (b, c0, c1, c2)] for b, c0, c1, c2 in sites]
    return x.features[rows]


@pytest.mark.parametrize(("library", "offsets"), [("minkowski", me_offsets), ("torchsparse14", torchsparse_offsets)])
def test_submanifold_3x3x3_kernel(library, offsets) -> None:
    sites, feats = random_sites(0)
    kernel = torch.randn(27, C_IN, C_OUT, dtype=torch.float64)
    conv = spnn.SubMConv3d(C_IN, C_OUT, 3).double()
    conv.weight.data = to_ours(kernel, library)
    out = conv(as_ours(sites, feats, True))
    torch.testing.assert_close(rows_at(out, sites, True), reference(sites, feats, kernel, offsets(3), sites))


@pytest.mark.parametrize(("library", "offsets"), [("minkowski", me_offsets), ("torchsparse14", torchsparse_offsets)])
def test_stride2_2x2x2_kernel_and_its_transpose(library, offsets) -> None:
    sites, feats = random_sites(1)
    down_kernel = torch.randn(8, C_IN, C_OUT, dtype=torch.float64)
    up_kernel = torch.randn(8, C_OUT, C_IN, dtype=torch.float64)
    down = spnn.Conv3d(C_IN, C_OUT, 2, stride=2, indice_key="d").double()
    up = spnn.ConvTranspose3d(C_OUT, C_IN, 2, indice_key="d").double()
    down.weight.data, up.weight.data = to_ours(down_kernel, library), to_ours(up_kernel, library)
    x = as_ours(sites, feats, True)
    y = down(x)
    coarse = sorted({(b, c0 // 2, c1 // 2, c2 // 2) for b, c0, c1, c2 in sites})
    expected = reference(sites, feats, down_kernel, offsets(2), coarse, stride=2)
    torch.testing.assert_close(rows_at(y, coarse, True), expected)
    # the transposed conv reuses the forward pairs: fine site 2 o + offset_k gets coarse o through kernel k
    z = up(y)
    fine = torch.zeros(len(sites), C_IN, dtype=torch.float64)
    index = {s: i for i, s in enumerate(sites)}
    for r, (b, *o) in enumerate(coarse):
        for k, off in enumerate(offsets(2)):
            i = index.get((b, *(2 * oc + d for oc, d in zip(o, off))))
            if i is not None:
                fine[i] += expected[r] @ up_kernel[k]
    torch.testing.assert_close(rows_at(z, sites, True), fine)


def test_minkowski_order_on_a_torchsparse_2x2x2_kernel_is_wrong() -> None:
    """The two libraries differ for even kernels: reading torchsparse's as MinkowskiEngine's changes outputs."""
    sites, feats = random_sites(2)
    kernel = torch.randn(8, C_IN, C_OUT, dtype=torch.float64)
    coarse = sorted({(b, c0 // 2, c1 // 2, c2 // 2) for b, c0, c1, c2 in sites})
    down = spnn.Conv3d(C_IN, C_OUT, 2, stride=2).double()
    down.weight.data = to_ours(kernel, "minkowski")
    wrong = rows_at(down(as_ours(sites, feats, True)), coarse, True)
    assert not torch.allclose(wrong, reference(sites, feats, kernel, torchsparse_offsets(2), coarse, stride=2))


@pytest.mark.parametrize("library", ["minkowski", "torchsparse14"])
def test_pointwise_kernel(library) -> None:
    """A 1x1 conv's kernel is (C_in, C_out) in both libraries."""
    sites, feats = random_sites(3)
    kernel = torch.randn(C_IN, C_OUT, dtype=torch.float64)
    conv = spnn.SubMConv3d(C_IN, C_OUT, 1).double()
    conv.weight.data = to_ours(kernel, library)
    torch.testing.assert_close(rows_at(conv(as_ours(sites, feats, True)), sites, True), feats @ kernel)


def spconv_reference(sites, feats, kernel_zyx, stride, padding, out_sites):
    """out[o] = sum over taps (a, b, c) of in[stride * o - padding + (a, b, c)] @ W[a, b, c], columns (z, y, x)."""
    index = {s: i for i, s in enumerate(sites)}
    kz, ky, kx = kernel_zyx.shape[:3]
    out = torch.zeros(len(out_sites), kernel_zyx.shape[-1], dtype=torch.float64)
    for r, (bt, *o) in enumerate(out_sites):
        for a, b, c in itertools.product(range(kz), range(ky), range(kx)):
            src = tuple(s * oc - p + t for s, oc, p, t in zip(stride, o, padding, (a, b, c)))
            i = index.get((bt, *src))
            if i is not None:
                out[r] += feats[i] @ kernel_zyx[a, b, c]
    return out


@pytest.mark.parametrize("library", ["spconv1", "spconv21_native"])
def test_spconv_kernels(library) -> None:
    """spconv 1.x (kz, ky, kx, C_in, C_out) and 2.1 Native (kz, ky, kx, C_out, C_in): a submanifold 3^3 conv
    and OpenPCDet's conv_out ((3, 1, 1) kernel, stride (2, 1, 1), no padding)."""
    sites, feats = random_sites(4)
    x = as_ours(sites, feats, False)  # spconv's columns are already (z, y, x)
    taps = torch.randn(3, 3, 3, C_IN, C_OUT, dtype=torch.float64)  # (a, b, c, in, out) of the reference
    stored = taps if library == "spconv1" else taps.transpose(-1, -2)
    conv = spnn.SubMConv3d(C_IN, C_OUT, 3).double()
    conv.weight.data = to_ours(stored, library)
    expected = spconv_reference(sites, feats, taps, (1, 1, 1), (1, 1, 1), sites)
    torch.testing.assert_close(rows_at(conv(x), sites, False), expected)

    taps = torch.randn(3, 1, 1, C_IN, C_OUT, dtype=torch.float64)
    stored = taps if library == "spconv1" else taps.transpose(-1, -2)
    down = spnn.Conv3d(C_IN, C_OUT, (3, 1, 1), stride=(2, 1, 1)).double()
    down.weight.data = to_ours(stored, library)
    y = down(x)
    out_sites = [tuple(c) for c in y.coords.tolist()]
    torch.testing.assert_close(y.features, spconv_reference(sites, feats, taps, (2, 1, 1), (0, 0, 0), out_sites))
    # every output whose receptive field holds an input is there
    expected_sites = {(b, (z - t) // 2, yy, xx) for b, z, yy, xx in sites for t in range(3)
                      if (z - t) % 2 == 0 and 0 <= (z - t) // 2 < (GRID[0] - 3) // 2 + 1}
    assert set(out_sites) == expected_sites


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(4, 3, 3, 3, 5), (4, 2, 2, 2, 5), (4, 1, 1, 1, 5), (4, 3, 1, 1, 5)])
def test_from_ours_inverts_to_ours(layout, shape) -> None:
    w = torch.randn(*shape)
    if layout in ("minkowski", "torchsparse14") and len(set(shape[1:4])) > 1:
        with pytest.raises(ValueError, match="cubes"):
            from_ours(w, layout)
        return
    stored = from_ours(w, layout)
    if layout in ("minkowski", "torchsparse14"):
        volume = shape[1] ** 3
        assert stored.shape == ((5, 4) if volume == 1 else (volume, 5, 4))
    torch.testing.assert_close(to_ours(stored, layout), w)


def test_spconv_layout_is_told_by_an_asymmetric_layer() -> None:
    ours = torch.zeros(16, 3, 3, 3, 4)
    assert spconv_layout(ours, 16) == "spconv2"
    assert spconv_layout(from_ours(ours, "spconv1"), 16) == "spconv1"
    assert spconv_layout(from_ours(ours, "spconv21_native"), 16) == "spconv21_native"
    assert spconv_layout(torch.zeros(3, 3, 3, 16, 16), 16) is None  # a square layer fits two layouts
    assert spconv_layout(torch.zeros(8, 3, 3, 3, 4), 16) is None
    with pytest.raises(ValueError, match="not a cube"):
        to_ours(torch.zeros(26, 3, 4), "minkowski")
