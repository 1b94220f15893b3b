"""Image teachers: official key layouts load strictly, bad files fail with a key report, shapes and freezing.

Checkpoints are written here from the published key layouts (random tensors of the right names and shapes),
never downloaded. Big variants are built on the meta device, so only their layouts and shapes are checked.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from timm.layers import SwiGLUPacked
from torch import nn
from torchvision.models import resnet50 as tv_resnet50

from lidarssl.errors import CheckpointError, ConfigError
from lidarssl.models.teachers import Teacher, create_teacher, list_teachers
from lidarssl.models.teachers.base import read_checkpoint
from lidarssl.models.teachers.resnet import FORMATS, ResNetTeacher, detect_format
from lidarssl.models.teachers.vit import convert_dinov2, interpolate_pos_embed

# name: (embed dim, depth, patch, native grid, DINOv2?, SwiGLU hidden width or None)
VITS = {
    "dinov2_vits14": (384, 12, 14, 37, True, None),
    "dinov2_vitb14": (768, 12, 14, 37, True, None),
    "dinov2_vitl14": (1024, 24, 14, 37, True, None),
    "dinov2_vitg14": (1536, 40, 14, 37, True, 4096),
    "dino_vits16": (384, 12, 16, 14, False, None),
    "dino_vits8": (384, 12, 8, 28, False, None),
    "dino_vitb16": (768, 12, 16, 14, False, None),
    "dino_vitb8": (768, 12, 8, 28, False, None),
}


def _tensor(shape: tuple[int, ...], device: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    if device == "meta":
        return torch.empty(shape, device="meta", dtype=dtype)
    return torch.zeros(shape, dtype=dtype) if dtype == torch.int64 else torch.rand(shape, dtype=dtype)


def official_vit_layout(name: str) -> dict[str, tuple[int, ...]]:
    """Names and shapes of an official DINOv2 ``dinov2_*_pretrain.pth`` or DINO ``dino_*_pretrain.pth``."""
    dim, depth, patch, grid, dinov2, swiglu = VITS[name]
    layout = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, 1 + grid * grid, dim),
        "patch_embed.proj.weight": (dim, 3, patch, patch),
        "patch_embed.proj.bias": (dim,),
    }
    if dinov2:
        layout["mask_token"] = (1, dim)
    for i in range(depth):
        b = f"blocks.{i}."
        layout |= {b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
                   b + "attn.qkv.weight": (3 * dim, dim), b + "attn.qkv.bias": (3 * dim,),
                   b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),
                   b + "norm2.weight": (dim,), b + "norm2.bias": (dim,)}  # fmt: skip
        if dinov2:
            layout |= {b + "ls1.gamma": (dim,), b + "ls2.gamma": (dim,)}
        if swiglu:
            layout |= {b + "mlp.w12.weight": (2 * swiglu, dim), b + "mlp.w12.bias": (2 * swiglu,),
                       b + "mlp.w3.weight": (dim, swiglu), b + "mlp.w3.bias": (dim,)}  # fmt: skip
        else:
            layout |= {b + "mlp.fc1.weight": (4 * dim, dim), b + "mlp.fc1.bias": (4 * dim,),
                       b + "mlp.fc2.weight": (dim, 4 * dim), b + "mlp.fc2.bias": (dim,)}  # fmt: skip
    layout |= {"norm.weight": (dim,), "norm.bias": (dim,)}
    return layout


def official_vit_state(name: str, device: str = "cpu") -> dict[str, torch.Tensor]:
    return {k: _tensor(s, device) for k, s in official_vit_layout(name).items()}


@pytest.fixture(scope="module")
def torchvision_state() -> dict[str, torch.Tensor]:
    """A torchvision ResNet-50 state dict (with ``fc``) of random tensors; the layout every format wraps."""
    with torch.device("meta"):
        layout = tv_resnet50(weights=None).state_dict()
    gen = torch.Generator().manual_seed(0)
    return {k: torch.zeros(v.shape, dtype=v.dtype) if v.dtype == torch.int64 else torch.rand(v.shape, generator=gen)
            for k, v in layout.items()}  # fmt: skip


def resnet_file_content(fmt: str, tv: dict[str, torch.Tensor]) -> dict:
    """What the official file of ``fmt`` holds, with ``tv`` as its backbone."""
    backbone = {k: v for k, v in tv.items() if not k.startswith("fc.")}
    if fmt == "moco":
        heads = {"fc.0.weight": torch.rand(2048, 2048), "fc.0.bias": torch.rand(2048),
                 "fc.2.weight": torch.rand(128, 2048), "fc.2.bias": torch.rand(128)}  # fmt: skip
        state = {f"module.encoder_q.{k}": v for k, v in (backbone | heads).items()}
        state |= {f"module.encoder_k.{k}": v for k, v in list(backbone.items())[:3]}
        state |= {"module.queue": torch.rand(128, 16), "module.queue_ptr": torch.zeros(1, dtype=torch.int64)}
        return {"epoch": 800, "arch": "resnet50", "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}
    if fmt == "swav":
        heads = {"projection_head.0.weight": torch.rand(2048, 2048), "projection_head.1.weight": torch.rand(2048),
                 "projection_head.3.weight": torch.rand(128, 2048),
                 "prototypes.weight": torch.rand(3000, 128)}  # fmt: skip
        return {f"module.{k}": v for k, v in (backbone | heads).items()}
    if fmt == "dino":
        return backbone
    if fmt == "obow":
        return {"network": backbone}
    return dict(tv)  # torchvision, with its ImageNet classifier


@pytest.fixture(scope="module")
def resnet_plain() -> Teacher:
    return create_teacher("resnet50")


# -- registry and options -------------------------------------------------------------------------------


def test_registry_names_every_variant() -> None:
    # the variants these tests know are registered; the full list is lidarssl.registry's (tests/test_registry.py)
    assert set(list_teachers()) >= {*VITS, "oracle", "resnet18_semantic", "resnet50", "resnet50_dilated"}


def test_unknown_name_option_and_format_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="known teachers: .*dinov2_vitl14"):
        create_teacher("dinov3_vitl16")
    with pytest.raises(ConfigError, match=r"no option \['format'\]"):
        create_teacher("dino_vits16", format="moco")
    with pytest.raises(ConfigError, match="unknown weights format 'simclr'"):
        create_teacher("resnet50", format="simclr")


def test_weights_none_builds_a_random_frozen_teacher() -> None:
    teacher = create_teacher("dino_vits16", weights="none")
    assert teacher.weights is None and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())


# -- missing and unreadable files -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("dinov2_vitl14", {}, ["dinov2_vitl14_pretrain.pth", "facebookresearch/dinov2",
                               "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth"]),
        ("dino_vits16", {}, ["dino_deitsmall16_pretrain.pth", "facebookresearch/dino"]),
        ("resnet50_dilated", {"format": "moco_v2"}, ["moco_v2_800ep_pretrain.pth.tar", "facebookresearch/moco"]),
        ("resnet50", {}, [r.filename for r in FORMATS.values()]),
    ],
)  # fmt: skip
def test_missing_file_names_the_official_release(name: str, options: dict, expected: list[str], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pth"
    with torch.device("meta"), pytest.raises(CheckpointError) as err:
        create_teacher(name, weights=missing, **options)
    message = str(err.value)
    assert str(missing) in message and "not found" in message and "weights: none" in message
    for text in expected:
        assert text in message


def test_checkpoint_with_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"model": nn.Linear(2, 2)}, path)  # a pickled module: weights_only refuses it
    with pytest.raises(CheckpointError, match=r"evil.pth: refused: unpickling it would call torch.nn.modules.linear.Linear, which is code"):
        read_checkpoint(path)


# -- ViT layouts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dinov2_vits14", "dino_vits16"])
def test_small_vit_loads_official_file_strictly(name: str, tmp_path: Path) -> None:
    state = official_vit_state(name)
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    teacher = create_teacher(name, weights=path)
    assert teacher.weights == path
    loaded = teacher.encoder.state_dict()
    for key in ("pos_embed", "blocks.11.attn.qkv.weight", "norm.bias"):
        assert torch.equal(loaded[key], state[key])


@pytest.mark.parametrize("name", [n for n in VITS if n not in ("dinov2_vits14", "dino_vits16")])
def test_big_vit_layouts_match(name: str) -> None:
    with torch.device("meta"):
        teacher = create_teacher(name)
    teacher.load_state(official_vit_state(name, device="meta"), f"{name}.pth")
    dim, _, patch, *_ = VITS[name]
    assert (teacher.out_channels, teacher.stride) == (dim, patch)
    assert teacher.feature_size(224, 448) == (224 // patch, 448 // patch)


def test_dinov2_conversion_drops_mask_token_and_renames_swiglu() -> None:
    state = official_vit_state("dinov2_vitg14", device="meta")
    converted = convert_dinov2(state)
    assert "mask_token" not in converted
    assert "blocks.39.mlp.fc1.weight" in converted and "blocks.39.mlp.w12.weight" not in converted


def test_swiglu_rename_keeps_the_computation() -> None:
    """DINOv2's fused SwiGLU is silu(first half of w12) * second half, then w3: timm's SwiGLUPacked."""
    dim, hidden = 8, 12
    w12, b12, w3, b3 = torch.randn(2 * hidden, dim), torch.randn(2 * hidden), torch.randn(dim, hidden), torch.randn(dim)
    mlp = SwiGLUPacked(dim, 2 * hidden)
    prefix = "blocks.0.mlp."
    converted = convert_dinov2({prefix + "w12.weight": w12, prefix + "w12.bias": b12,
                                prefix + "w3.weight": w3, prefix + "w3.bias": b3})  # fmt: skip
    mlp.load_state_dict({k.removeprefix(prefix): v for k, v in converted.items()}, strict=True)
    x = torch.randn(5, dim)
    x1, x2 = (x @ w12.T + b12).chunk(2, dim=-1)
    expected = (nn.functional.silu(x1) * x2) @ w3.T + b3
    torch.testing.assert_close(mlp(x), expected)


def test_corrupted_vit_file_lists_the_bad_keys(tmp_path: Path) -> None:
    state = official_vit_state("dino_vits16")
    del state["blocks.3.norm1.weight"]
    state["head.weight"] = torch.rand(1000, 384)
    state["pos_embed"] = torch.rand(1, 50, 384)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        create_teacher("dino_vits16", weights=path)
    message = str(err.value)
    assert str(path) in message
    assert "missing: blocks.3.norm1.weight" in message
    assert "unexpected: head.weight" in message
    assert "pos_embed (1, 50, 384) vs (1, 197, 384)" in message


def test_dino_file_given_to_dinov2_teacher_fails(tmp_path: Path) -> None:
    with torch.device("meta"), pytest.raises(CheckpointError, match="ls1.gamma"):
        create_teacher("dinov2_vitb14").load_state(official_vit_state("dino_vitb16", "meta"), "dino_vitbase16.pth")


def test_resnet_file_given_to_vit_teacher_names_expected_file(torchvision_state: dict) -> None:
    with torch.device("meta"):
        teacher = create_teacher("dinov2_vitl14")
    with pytest.raises(CheckpointError, match="not a DINOV2 ViT backbone file.*dinov2_vitl14_pretrain.pth"):
        teacher.load_state(torchvision_state, "resnet50.pth")


# -- ResNet formats -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["moco", "swav", "dino", "obow", "torchvision"])
def test_resnet_formats_are_detected_and_load_strictly(
    fmt: str, torchvision_state: dict, resnet_plain: Teacher, tmp_path: Path
) -> None:
    content = resnet_file_content(fmt, torchvision_state)
    path = tmp_path / f"{fmt}.pth.tar"
    torch.save(content, path)
    assert detect_format(read_checkpoint(path)) == fmt
    resnet_plain.load(path)
    loaded = resnet_plain.encoder.state_dict()
    for key in ("conv1.weight", "layer4.2.bn3.running_var", "layer2.0.downsample.0.weight"):
        assert torch.equal(loaded[key], torchvision_state[key])


def test_resnet_format_override_is_strict(torchvision_state: dict) -> None:
    teacher = ResNetTeacher("resnet50", dilated=False, format="dino")  # a torchvision file still holds fc
    with pytest.raises(CheckpointError, match="unexpected: fc.weight, fc.bias"):
        teacher.load_state(torchvision_state, "resnet50-0676ba61.pth")
    teacher.format = "moco"
    with pytest.raises(CheckpointError, match="format 'moco' expects a 'state_dict'"):
        teacher.load_state(torchvision_state, "resnet50-0676ba61.pth")


def test_corrupted_resnet_file_lists_the_bad_keys(torchvision_state: dict, resnet_plain: Teacher) -> None:
    content = resnet_file_content("obow", torchvision_state)
    network = dict(content["network"])
    del network["layer3.1.conv2.weight"]
    network["layer5.0.conv1.weight"] = torch.rand(1)
    network["bn1.weight"] = torch.rand(32)
    with pytest.raises(CheckpointError) as err:
        resnet_plain.load_state({"network": network}, "obow.pt")
    message = str(err.value)
    assert "obow.pt" in message and "missing: layer3.1.conv2.weight" in message
    assert "unexpected: layer5.0.conv1.weight" in message and "bn1.weight (32,) vs (64,)" in message


def test_vit_file_given_to_resnet_teacher(resnet_plain: Teacher) -> None:
    with pytest.raises(CheckpointError, match="not a ResNet-50 weights file.*looks like a ViT.*moco_v2_800ep"):
        resnet_plain.load_state(official_vit_state("dino_vits16", "meta"), "dino_deitsmall16_pretrain.pth")


# -- features -------------------------------------------------------------------------------------------


def test_dinov2_patch_grid_and_norm_option() -> None:
    teacher = create_teacher("dinov2_vits14")
    images = torch.randint(0, 256, (1, 3, 224, 448), dtype=torch.uint8)
    pre = teacher(images)
    assert pre.shape == (1, 384, 16, 32)
    teacher.after_norm = True
    post = teacher(images)
    # After the final LayerNorm (weight 1, bias 0 at init) every token has zero mean over channels.
    torch.testing.assert_close(post.mean(dim=1), torch.zeros(1, 16, 32), atol=1e-4, rtol=0)
    assert not torch.allclose(pre, post)


def test_vit_encode_matches_timm_at_native_size() -> None:
    teacher = create_teacher("dino_vits16", after_norm=True)
    x = torch.randn(1, 3, 224, 224)
    tokens = teacher.encoder.forward_features(x)[:, 1:]
    expected = tokens.transpose(1, 2).reshape(1, 384, 14, 14)
    torch.testing.assert_close(teacher.encode(x), expected)


def test_pos_embed_resampling() -> None:
    table = torch.randn(1, 1 + 37 * 37, 8)
    assert interpolate_pos_embed(table, (37, 37)) is table
    out = interpolate_pos_embed(table, (16, 30))
    assert out.shape == (1, 1 + 16 * 30, 8) and torch.equal(out[:, 0], table[:, 0])


def test_vit_sizes_round_to_patch_multiples() -> None:
    teacher = create_teacher("dino_vits16", upsample=True)
    images = torch.rand(2, 3, 56, 84)  # 3.5 x 5.25 patches: resized to 64 x 80
    assert teacher.network_size(56, 84) == (64, 80)
    assert teacher.feature_size(56, 84) == (4, 5)
    assert teacher(images).shape == (2, 384, 56, 84)
    resized = create_teacher("dino_vits16", image_size=(30, 50))
    assert resized(images).shape == (2, 384, 2, 3)


@pytest.mark.parametrize(("name", "stride"), [("resnet50_dilated", 4), ("resnet50", 32)])
@pytest.mark.parametrize(("height", "width"), [(64, 96), (57, 83)])
def test_resnet_strides(name: str, stride: int, height: int, width: int) -> None:
    teacher = create_teacher(name)
    features = teacher(torch.rand(1, 3, height, width))
    assert features.shape == (1, 2048, *teacher.feature_size(height, width))
    if height % stride == 0:
        assert features.shape[-2:] == (height // stride, width // stride)


def test_uint8_and_float_inputs_agree(resnet_plain: Teacher) -> None:
    images = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    torch.testing.assert_close(resnet_plain(images), resnet_plain(images.float() / 255))


def test_bad_image_tensors_are_refused(resnet_plain: Teacher) -> None:
    with pytest.raises(ValueError, match="channels last"):
        resnet_plain(torch.zeros(1, 32, 32, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        resnet_plain(torch.zeros(1, 3, 32, 32, dtype=torch.int32))


# -- frozen ---------------------------------------------------------------------------------------------


def test_teacher_stays_in_eval_mode(resnet_plain: Teacher) -> None:
    parent = nn.ModuleDict({"student": nn.Linear(2, 2), "teacher": resnet_plain})
    parent.train()
    assert parent["student"].training
    assert not any(m.training for m in resnet_plain.modules())
    resnet_plain.train(True)
    assert not any(m.training for m in resnet_plain.modules())


def test_no_gradient_reaches_the_teacher(resnet_plain: Teacher) -> None:
    images = torch.rand(1, 3, 64, 64, requires_grad=True)
    target = resnet_plain(images)
    assert not target.requires_grad
    student = nn.Conv2d(3, 2048, 32, stride=32)
    loss = (student(images) - target).square().mean()
    loss.backward()
    assert student.weight.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in resnet_plain.parameters())
    # Batch-norm statistics are not updated by forward passes either.
    before = resnet_plain.encoder.bn1.running_mean.clone()
    resnet_plain(torch.rand(1, 3, 64, 64))
    assert torch.equal(before, resnet_plain.encoder.bn1.running_mean)
