"""State dicts in the seed projects' own layouts, written from their network definitions (WaffleIron's
``Segmenter``, SLidR's MinkowskiEngine ``Res16UNet34C``, ALSO's torchsparse ``MinkUNet``/``SPVCNN``,
SegContrast/NCLR's MinkowskiEngine ``MinkUNet``, OpenPCDet's ``VoxelBackBone8x``), independently of the
importer's key maps. ``make`` fills tensors: ``torch.randn`` for value checks, ``torch.empty`` for full-size
key/shape checks (no memory is touched).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

Make = Callable[..., torch.Tensor]
CS = (32, 32, 64, 128, 256, 256, 128, 96, 96)  # stem, stage1-4, up1-4 widths of ALSO's and SegContrast's nets
PLANES = (32, 64, 128, 256, 256, 128, 96, 96)
L34 = (2, 3, 4, 6, 2, 2, 2, 2)
L18 = (2,) * 8


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


def bn(prefix: str, c: int, make: Make = _randn, me: bool = False) -> dict[str, torch.Tensor]:
    """A BatchNorm's five entries; MinkowskiEngine's MinkowskiBatchNorm nests them under ``.bn``."""
    p = f"{prefix}.bn." if me else f"{prefix}."
    return {p + "weight": make(c), p + "bias": make(c), p + "running_mean": make(c), p + "running_var": make(c).abs(),
            p + "num_batches_tracked": torch.tensor(7)}


class Originals:
    """Writers of original-layout state dicts."""

    @staticmethod
    def waffleiron(channels: int, depth: int, layernorm: bool, head: str | None = None, classes: int = 16,
                   c_in: int = 5, make: Make = _randn) -> dict[str, torch.Tensor]:
        """WaffleIron's Segmenter (waffleiron/segmenter.py): embedding, ``depth`` channel and spatial mixes,
        ``classif``: ``conv`` (Conv1d), ``bn_conv`` (ScaLR's BatchNorm1d + Conv1d) or none."""
        c = channels
        s = bn("embed.norm", c_in, make)
        s |= {"embed.conv1.weight": make(c, c_in, 1), "embed.conv1.bias": make(c)}
        s |= bn("embed.conv2.0", c_in, make) | {"embed.conv2.1.weight": make(c, c_in, 1, 1)}
        s |= bn("embed.conv2.2", c, make) | {"embed.conv2.4.weight": make(c, c, 1, 1)}
        s |= {"embed.final.weight": make(c, 2 * c, 1), "embed.final.bias": make(c)}
        for mix in ("channel_mix", "spatial_mix"):
            for d in range(depth):
                p = f"waffleiron.{mix}.{d}"
                s |= {f"{p}.norm.weight": make(c), f"{p}.norm.bias": make(c)} if layernorm else bn(f"{p}.norm", c, make)
                if mix == "channel_mix":
                    s |= {f"{p}.mlp.0.weight": make(c, c, 1), f"{p}.mlp.0.bias": make(c),
                          f"{p}.mlp.2.weight": make(c, c, 1), f"{p}.mlp.2.bias": make(c)}
                else:
                    s |= {f"{p}.ffn.0.weight": make(c, 1, 3, 3), f"{p}.ffn.0.bias": make(c),
                          f"{p}.ffn.2.weight": make(c, 1, 3, 3), f"{p}.ffn.2.bias": make(c)}
                s[f"{p}.scale.weight"] = make(c, 1, 1)
        if head == "conv":
            s |= {"classif.weight": make(classes, c, 1), "classif.bias": make(classes)}
        elif head == "bn_conv":
            s |= bn("classif.0", c, make) | {"classif.1.weight": make(classes, c, 1), "classif.1.bias": make(classes)}
        return s

    @staticmethod
    def me_res16unet(planes=PLANES, layers=L34, init_dim: int = 32, c_in: int = 1, n_out: int | None = 64,
                     make: Make = _randn) -> dict[str, torch.Tensor]:
        """SLidR's Res16UNet34C (model/res16unet.py) in MinkowskiEngine 0.5: kernels (K^3, C_in, C_out), 1x1
        kernels (C_in, C_out), MinkowskiBatchNorm under ``.bn``, BasicBlock conv1/norm1/conv2/norm2/downsample."""
        s: dict[str, torch.Tensor] = {"conv0p1s1.kernel": make(27, c_in, init_dim)} | bn("bn0", init_dim, make, True)
        inplanes = init_dim

        def blocks(b: int, planes_b: int, count: int) -> None:
            nonlocal inplanes
            for j in range(count):
                p = f"block{b}.{j}"
                s[f"{p}.conv1.kernel"] = make(27, inplanes, planes_b)
                s.update(bn(f"{p}.norm1", planes_b, make, True))
                s[f"{p}.conv2.kernel"] = make(27, planes_b, planes_b)
                s.update(bn(f"{p}.norm2", planes_b, make, True))
                if j == 0 and inplanes != planes_b:
                    s[f"{p}.downsample.0.kernel"] = make(inplanes, planes_b)
                    s.update(bn(f"{p}.downsample.1", planes_b, make, True))
                inplanes = planes_b

        for i, name in enumerate(("conv1p1s2", "conv2p2s2", "conv3p4s2", "conv4p8s2"), start=1):
            s[f"{name}.kernel"] = make(8, inplanes, inplanes)
            s.update(bn(f"bn{i}", inplanes, make, True))
            blocks(i, planes[i - 1], layers[i - 1])
        skips = (planes[2], planes[1], planes[0], init_dim)
        for i, name in enumerate(("convtr4p16s2", "convtr5p8s2", "convtr6p4s2", "convtr7p2s2")):
            s[f"{name}.kernel"] = make(8, inplanes, planes[4 + i])
            s.update(bn(f"bntr{4 + i}", planes[4 + i], make, True))
            inplanes = planes[4 + i] + skips[i]
            blocks(5 + i, planes[4 + i], layers[4 + i])
        if n_out:
            s |= {"final.kernel": make(planes[7], n_out), "final.bias": make(1, n_out)}
        return s

    @staticmethod
    def sparse_unet(cs=CS, layers=L18, stem_convs: int = 1, c_in: int = 1, spvcnn: bool = False,
                    minkowski: bool = False, head: str | None = None, head_out: int = 128,
                    make: Make = _randn) -> dict[str, torch.Tensor]:
        """ALSO's torchsparse 1.4 MinkUNet/SPVCNN (networks/backbone/torchsparse/), or with ``minkowski`` the
        SegContrast MinkowskiEngine MinkUNet NCLR uses (same names, ME kernels and ``.bn``). ``head``:
        ``classifier`` (ALSO's Sequential(Linear)) or ``final`` (NCLR's Sequential(Linear))."""
        s: dict[str, torch.Tensor] = {}

        def conv(name: str, k: int, a: int, b: int) -> None:
            s[f"{name}.kernel"] = make(k**3, a, b) if k > 1 else make(a, b)

        def norm(name: str, c: int) -> None:
            s.update(bn(name, c, make, minkowski))

        conv("stem.0", 3, c_in, cs[0])
        norm("stem.1", cs[0])
        if stem_convs == 2:
            conv("stem.3", 3, cs[0], cs[0])
            norm("stem.4", cs[0])

        def residual(p: str, a: int, b: int) -> None:
            conv(f"{p}.net.0", 3, a, b)
            norm(f"{p}.net.1", b)
            conv(f"{p}.net.3", 3, b, b)
            norm(f"{p}.net.4", b)
            if a != b:
                conv(f"{p}.downsample.0", 1, a, b)
                norm(f"{p}.downsample.1", b)

        width = cs[0]
        for i in range(4):
            conv(f"stage{i + 1}.0.net.0", 2, width, width)
            norm(f"stage{i + 1}.0.net.1", width)
            for j in range(layers[i]):
                residual(f"stage{i + 1}.{j + 1}", width if j == 0 else cs[i + 1], cs[i + 1])
            width = cs[i + 1]
        skips = (cs[3], cs[2], cs[1], cs[0])
        for i in range(4):
            out = cs[5 + i]
            conv(f"up{i + 1}.0.net.0", 2, width, out)
            norm(f"up{i + 1}.0.net.1", out)
            for j in range(layers[4 + i]):
                residual(f"up{i + 1}.1.{j}", out + skips[i] if j == 0 else out, out)
            width = out
        if spvcnn:
            for i, (a, b) in enumerate(((cs[0], cs[4]), (cs[4], cs[6]), (cs[6], cs[8]))):
                s |= {f"point_transforms.{i}.0.weight": make(b, a), f"point_transforms.{i}.0.bias": make(b)}
                s |= bn(f"point_transforms.{i}.1", b, make)
        if head:
            s |= {f"{head}.0.weight": make(head_out, cs[8]), f"{head}.0.bias": make(head_out)}
        return s

    @staticmethod
    def voxelbackbone8x(c_in: int = 4, layout: str = "spconv2", final: int | None = None,
                        make: Make = _randn) -> dict[str, torch.Tensor]:
        """OpenPCDet's VoxelBackBone8x (pcdet/models/backbones_3d/spconv_backbone.py) in a spconv layout;
        ``final``: SLidR's extra 1x1 SparseConv3d 128 -> final (model/spconv_backbone.py)."""

        def kernel(k: tuple[int, int, int], a: int, b: int) -> torch.Tensor:
            if layout == "spconv1":
                return make(*k, a, b)
            if layout == "spconv21_native":
                return make(*k, b, a)
            return make(b, *k, a)

        s = {"conv_input.0.weight": kernel((3, 3, 3), c_in, 16)} | bn("conv_input.1", 16, make)
        plan = {"conv1": [(16, 16)], "conv2": [(16, 32), (32, 32), (32, 32)], "conv3": [(32, 64), (64, 64), (64, 64)],
                "conv4": [(64, 64), (64, 64), (64, 64)]}
        for stage, convs in plan.items():
            for j, (a, b) in enumerate(convs):
                s[f"{stage}.{j}.0.weight"] = kernel((3, 3, 3), a, b)
                s |= bn(f"{stage}.{j}.1", b, make)
        s["conv_out.0.weight"] = kernel((3, 1, 1), 64, 128)
        s |= bn("conv_out.1", 128, make)
        if final:
            s["final.weight"] = kernel((1, 1, 1), 128, final)
        return s


@pytest.fixture(scope="session")
def originals() -> type[Originals]:
    return Originals
