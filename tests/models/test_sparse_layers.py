"""Sparse layers against dense ``torch.nn.functional`` references on small grids (same weights)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lidarssl.models.sparse import SparseTensor, cat
from lidarssl.models.sparse import functional as SF
from lidarssl.models.sparse import nn as spnn

SHAPE = (7, 9, 8)  # (Z, Y, X), odd and even sizes on purpose
BATCH = 2


def random_sites(seed: int, density: float = 0.25, channels: int = 3) -> SparseTensor:
    """A float64 sparse tensor with random active sites and features."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(BATCH, *SHAPE, generator=g) < density
    coords = mask.nonzero().int()
    feats = torch.randn(len(coords), channels, generator=g, dtype=torch.float64)
    return SparseTensor(feats, coords, SHAPE, BATCH)


def at_sites(dense: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """(N, C) rows of a (B, C, Z, Y, X) grid at (batch, z, y, x) coords."""
    c = coords.long()
    return dense[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]]


def dense_weight(w: torch.Tensor) -> torch.Tensor:
    """spconv layout (C_out, kz, ky, kx, C_in) to torch (C_out, C_in, kz, ky, kx)."""
    return w.permute(0, 4, 1, 2, 3)


def check_grads(x: SparseTensor, conv: torch.nn.Module, sparse_out: SparseTensor, dense_fn) -> None:
    """Gradients of a random linear loss agree for features and weights."""
    g = torch.Generator().manual_seed(7)
    r = torch.randn(sparse_out.features.shape, generator=g, dtype=torch.float64)
    gx, gw = torch.autograd.grad((sparse_out.features * r).sum(), [x.features, conv.weight])
    xd = x.dense().detach().requires_grad_(True)
    wd = conv.weight.detach().clone().requires_grad_(True)
    dense_out = dense_fn(xd, wd)
    gxd, gwd = torch.autograd.grad((at_sites(dense_out, sparse_out.coords) * r).sum(), [xd, wd])
    torch.testing.assert_close(gx, at_sites(gxd, x.coords))
    torch.testing.assert_close(gw, gwd)


@pytest.mark.parametrize(("kernel", "dilation"), [(3, 1), ((3, 1, 5), 1), (3, 2)])
def test_submanifold_conv_matches_dense_at_input_sites(kernel, dilation) -> None:
    x = random_sites(0)
    x = x.replace_features(x.features.requires_grad_(True))
    conv = spnn.SubMConv3d(3, 4, kernel, dilation=dilation, bias=True).double()
    out = conv(x)
    assert out.coords is x.coords  # submanifold: the input sites, nothing else
    k = conv.kernel_size
    pad = tuple(kk // 2 * conv.dilation[i] for i, kk in enumerate(k))

    def dense_fn(xd, wd):
        return F.conv3d(xd, dense_weight(wd), conv.bias, padding=pad, dilation=conv.dilation)

    torch.testing.assert_close(out.features, at_sites(dense_fn(x.dense(), conv.weight), x.coords))
    check_grads(x, conv, out, dense_fn)


@pytest.mark.parametrize(
    ("kernel", "stride", "padding"),
    [(3, 2, 1), (2, 2, 0), ((3, 1, 1), (2, 1, 1), 0), (3, 1, 0), (3, 2, (0, 1, 1))],
)
def test_regular_conv_matches_dense_on_its_active_sites(kernel, stride, padding) -> None:
    x = random_sites(1)
    x = x.replace_features(x.features.requires_grad_(True))
    conv = spnn.Conv3d(3, 5, kernel, stride=stride, padding=padding, bias=True).double()
    out = conv(x)

    def dense_fn(xd, wd):
        return F.conv3d(xd, dense_weight(wd), conv.bias, stride=conv.stride, padding=padding)

    dense = dense_fn(x.dense(), conv.weight)
    assert out.spatial_shape == tuple(dense.shape[2:])
    torch.testing.assert_close(out.features, at_sites(dense, out.coords))
    # The active sites are exactly those whose receptive field holds an input site.
    occupancy = F.conv3d(
        (x.dense().abs().sum(1, keepdim=True) > 0).double(), torch.ones(1, 1, *conv.kernel_size, dtype=torch.float64),
        stride=conv.stride, padding=padding,
    )  # fmt: skip
    expected = set(map(tuple, (occupancy[:, 0] > 0).nonzero().tolist()))
    assert set(map(tuple, out.coords.tolist())) == expected
    check_grads(x, conv, out, dense_fn)


@pytest.mark.parametrize(("kernel", "stride", "padding"), [(2, 2, 0), (3, 2, 1)])
def test_transposed_conv_inverts_the_recorded_conv(kernel, stride, padding) -> None:
    x = random_sites(2)
    down = spnn.Conv3d(3, 6, kernel, stride=stride, padding=padding, indice_key="down").double()
    y = down(x)
    y = y.replace_features(torch.randn_like(y.features).requires_grad_(True))
    up = spnn.ConvTranspose3d(6, 4, kernel, indice_key="down", bias=True).double()
    out = up(y)
    assert out.coords is x.coords and out.spatial_shape == x.spatial_shape

    def dense_fn(yd, wd):
        # conv_transpose3d weight is (C_in, C_out, k...); output_padding restores the input grid size.
        natural = [(n - 1) * stride - 2 * padding + kernel for n in yd.shape[2:]]
        extra = tuple(s - n for s, n in zip(SHAPE, natural))
        return F.conv_transpose3d(
            yd, wd.permute(4, 0, 1, 2, 3), up.bias, stride=stride, padding=padding, output_padding=extra
        )

    torch.testing.assert_close(out.features, at_sites(dense_fn(y.dense(), up.weight), x.coords))
    check_grads(y, up, out, dense_fn)


def test_pointwise_conv_batchnorm_relu_and_cat() -> None:
    x = random_sites(3)
    seq = torch.nn.Sequential(spnn.SubMConv3d(3, 4, 1, bias=True), spnn.BatchNorm(4), spnn.ReLU()).double()
    out = seq(x)
    ref = torch.relu(F.batch_norm(x.features @ seq[0].weight.view(4, 3).T + seq[0].bias, None, None, training=True))
    torch.testing.assert_close(out.features, ref)
    assert list(seq.state_dict()) == [
        "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked",
    ]  # fmt: skip
    both = cat([out, x])
    assert both.features.shape == (len(x.coords), 7)
    with pytest.raises(ValueError, match="same sites"):
        cat([x, random_sites(4)])


def test_transposed_conv_without_recorded_key_names_the_key() -> None:
    up = spnn.ConvTranspose3d(3, 3, 2, indice_key="nowhere").double()
    with pytest.raises(ValueError, match="nowhere"):
        up(random_sites(5))


def test_point_voxel_maps() -> None:
    """Nearest and trilinear voxel-to-point, and point-to-voxel means, on a stride-2 tensor."""
    g = torch.Generator().manual_seed(0)
    shape = (6, 10, 8)  # even, so that every site has a stride-2 parent
    pts = torch.rand(200, 3, generator=g, dtype=torch.float64) * torch.tensor(shape, dtype=torch.float64)
    bidx = torch.randint(0, BATCH, (200,), generator=g)
    base = torch.unique(torch.cat([bidx[:, None], pts.floor().long()], 1), dim=0).int()
    x = SparseTensor(torch.zeros(len(base), 1, dtype=torch.float64), base, shape, BATCH)
    y = spnn.Conv3d(1, 1, 2, stride=2).double()(x)  # sites floor(c / 2), stride 2
    assert y.stride == (2, 2, 2)
    sites = SF.point_sites(y, bidx, pts)
    torch.testing.assert_close(sites[:, 1:], torch.div(pts.floor().long(), 2, rounding_mode="floor"))
    # A linear field of the site centres is reproduced exactly by trilinear interpolation where all 8
    # neighbours are active; nearest returns the holding site's value.
    centres = (y.coords[:, 1:].double() + 0.5) * 2
    field = centres @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    y = y.replace_features(field.unsqueeze(1))
    near = SF.voxel_to_point(y, bidx, pts, "nearest")[:, 0]
    rows = SF.lookup(y, sites)
    assert (rows >= 0).all()
    torch.testing.assert_close(near, field[rows])
    tri = SF.voxel_to_point(y, bidx, pts, "trilinear")[:, 0]
    corner = torch.floor(pts / 2 - 0.5).long()
    full = torch.ones(200, dtype=torch.bool)
    for d in torch.cartesian_prod(*[torch.tensor([0, 1])] * 3):
        full &= SF.lookup(y, torch.cat([bidx[:, None], corner + d], 1)) >= 0
    assert full.sum() > 10
    linear = pts @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(tri[full], linear[full])
    assert torch.isfinite(tri).all()
    # Points to voxels: per-site mean.
    vals = torch.randn(200, 2, generator=g, dtype=torch.float64)
    pooled = SF.point_to_voxel(y, vals, bidx, pts).features
    torch.testing.assert_close(pooled[rows[0]], vals[rows == rows[0]].mean(0))


def test_chunked_im2col_gives_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large inputs are processed in chunks of output rows; the result must not depend on the chunking."""
    x = random_sites(6)
    x = x.replace_features(x.features.requires_grad_(True))
    conv = spnn.SubMConv3d(3, 4, 3).double()

    def run() -> tuple[torch.Tensor, ...]:
        y = conv(SparseTensor(x.features, x.coords, SHAPE, BATCH))
        return (y.features, *torch.autograd.grad(y.features.square().sum(), [x.features, conv.weight]))

    whole = run()
    monkeypatch.setattr(SF, "_CHUNK_ELEMENTS", 200)  # a few output rows per chunk
    for a, b in zip(run(), whole):
        torch.testing.assert_close(a, b)
