"""`pretrain` then `probe` for every image-to-lidar method on a tiny synthetic world with cameras."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from lidarssl.config import SegmentationConfig, load_config
from lidarssl.errors import ConfigError, DataError
from lidarssl.methods.config import PretrainConfig
from lidarssl.methods.pretrain import (
    build_method,
    prepare_teacher_features,
    run_pretraining,
    teacher_cache,
)

TINY_BACKBONE = ["backbone.name=waffleiron_4_32", "backbone.options.voxel_size=0.4",
                 "backbone.options.grid_shapes=[[32,32],[32,8],[32,8]]"]
IMAGE_METHODS = {
    "ppkt": ["teacher.name=resnet50", "pairing.crop_size=[48,80]", "pairing.flip=0.5", "method.options.max_pairs=512"],
    "slidr": ["teacher.name=resnet50", "pairing.crop_size=[48,80]", "pairing.flip=0.5",
              "method.options.superpixels=slic30_fast"],
    "stslidr": ["teacher.name=resnet50", "pairing.crop_size=[48,80]", "method.options.superpixels=slic30_fast",
                "augment.drop_cuboid=0.2", "augment.drop_cuboid_min_pairs=10"],
    "scalr": ["teacher.name=dino_vits16", "pairing.resize=[48,96]", "pairing.cameras=one"],
}


def _config(root: Path, out: Path, method: str, *extra: str) -> PretrainConfig:
    return load_config(PretrainConfig, None, [
        f"out={out}", f"data.root={root}", "data.num_workers=0", f"method.name={method}", *TINY_BACKBONE,
        "optim.epochs=1", "trainer.batch_size=2", "trainer.progress_bar=false", *IMAGE_METHODS.get(method, []), *extra])


@pytest.mark.slow
@pytest.mark.parametrize("method", IMAGE_METHODS)
def test_pretrain_then_probe(camera_world: Path, tmp_path: Path, method: str):
    result = run_pretraining(_config(camera_world, tmp_path / "pre", method))
    assert np.isfinite(result.loss)
    with safe_open(str(result.backbone), "pt") as f:
        keys = list(f.keys())
        meta = f.metadata()
    assert keys and not any(k.startswith(("teacher.", "head.", "pixel_head.")) for k in keys)
    assert '"method": "' + method in meta["lidarssl"]
    ckpt = torch.load(tmp_path / "pre" / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any(k.startswith("teacher.") for k in ckpt["state_dict"])  # the frozen teacher is never saved
    assert any(k.startswith("head.") for k in ckpt["state_dict"])  # the heads are
    probe = load_config(SegmentationConfig, None, [
        f"data.root={camera_world}", f"out={tmp_path / 'probe'}", f"pretrained={result.backbone}", "data.num_workers=0",
        *TINY_BACKBONE, "optim.epochs=1", "trainer.batch_size=2", "trainer.progress_bar=false"])
    from lidarssl.downstream.train import run_segmentation

    scores = run_segmentation(probe, mode="probe")
    assert 0 <= scores.miou <= 100


def test_teacher_cache_gives_the_online_loss(camera_world: Path, tmp_path: Path):
    online = _config(camera_world, tmp_path / "a", "scalr")
    cached = _config(camera_world, tmp_path / "b", "scalr", f"data.teacher_cache={tmp_path / 'cache'}")
    counts = prepare_teacher_features(cached)
    assert counts == {"computed": 12, "skipped": 0}  # 2 train frames x 6 cameras
    assert prepare_teacher_features(cached) == {"computed": 0, "skipped": 12}  # resumable: nothing redone
    losses = []
    for cfg in (online, cached):
        torch.manual_seed(0)
        module, spec, builders = build_method(cfg)
        from lidarssl.data.datasets import open_dataset
        from lidarssl.data.loader import ScanCollate, ScanSamples

        samples = ScanSamples(open_dataset(camera_world, "train"), spec.prep, builders, seed=0,
                                  augment=cfg.augment.point_augment())
        batch = ScanCollate(spec.prep, builders)([samples[(0, 0)], samples[(1, 0)]])
        assert ("teacher_maps" in batch) == (cfg is cached)
        losses.append(module.losses(batch)["distill"].item())
    assert losses[0] == pytest.approx(losses[1], abs=2e-3)  # half-precision cache


def test_cache_refuses_augmented_images(camera_world: Path, tmp_path: Path):
    cfg = _config(camera_world, tmp_path, "scalr", "pairing.flip=0.5", f"data.teacher_cache={tmp_path / 'c'}")
    with pytest.raises(DataError, match="cached teacher features need deterministic images"):
        build_method(cfg)
    key = teacher_cache(cfg).root.name
    assert key == "dino_vits16-random0-48x96"
    # a teacher setting that changes its features also changes the cache folder
    resized = _config(camera_world, tmp_path, "scalr", "teacher.image_size=[64,128]", f"data.teacher_cache={tmp_path / 'c'}")
    assert teacher_cache(resized).root.name.startswith("dino_vits16-random0-48x96-")


def test_bad_method_options_name_the_valid_keys(camera_world: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match=r"method.options of 'ppkt': .*max_pair.*valid keys: dim, temperature, max_pairs"):
        build_method(_config(camera_world, tmp_path, "ppkt", "method.options.max_pair=3"))
    with pytest.raises(ConfigError, match="unknown key 'method.nme'"):
        _config(camera_world, tmp_path, "ppkt", "method.nme=x")


def test_cli_prepare_teacher_features_then_pretrain(camera_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    from lidarssl.cli import main

    cache = tmp_path / "cache"
    tiny = [f"data.teacher_cache={cache}", "pairing.resize=[28,56]", "data.num_workers=0", *TINY_BACKBONE,
            "trainer.batch_size=2", "trainer.progress_bar=false"]
    assert main(["prepare", "teacher-features", "--root", str(camera_world), "--split", "train",
                 "recipe=scalr-wi-synthetic", "data.teacher_cache=" + str(cache), "pairing.resize=[28,56]"]) == 0
    assert "12 computed, 0 already cached" in capsys.readouterr().out
    assert main(["pretrain", "scalr-wi-synthetic", f"data.root={camera_world}", f"out={tmp_path / 'run'}",
                 "optim.epochs=1", *tiny]) == 0
    assert "backbone weights: " in capsys.readouterr().out
    assert (tmp_path / "run" / "backbone.safetensors").is_file()
    # a second fresh run into the same folder is refused instead of overwriting it
    assert main(["pretrain", "scalr-wi-synthetic", f"data.root={camera_world}", f"out={tmp_path / 'run'}", *tiny]) == 2
    assert "already holds checkpoints" in capsys.readouterr().err
    # without the cache, the error names the missing file and the command that makes it
    assert main(["pretrain", "scalr-wi-synthetic", f"data.root={camera_world}", f"out={tmp_path / 'other'}",
                 *tiny, f"data.teacher_cache={tmp_path / 'empty'}"]) == 2
    assert "run `lidarssl prepare teacher-features RECIPE`" in capsys.readouterr().err


def test_slidr_global_scope_equals_process_scope_in_one_process(camera_world: Path, tmp_path: Path):
    losses = []
    for scope in ("process", "global"):
        cfg = _config(camera_world, tmp_path, "slidr", f"loss_scope={scope}")
        torch.manual_seed(0)
        module, spec, builders = build_method(cfg)
        from lidarssl.data.datasets import open_dataset
        from lidarssl.data.loader import ScanCollate, ScanSamples

        samples = ScanSamples(open_dataset(camera_world, "train"), spec.prep, builders, seed=0)
        batch = ScanCollate(spec.prep, builders)([samples[(0, 0)], samples[(1, 0)]])
        losses.append(float(module.losses(batch)["slidr"].detach()))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    with pytest.raises(ConfigError, match="stslidr: loss_scope 'global' is not supported"):
        build_method(_config(camera_world, tmp_path, "stslidr", "loss_scope=global"))


@pytest.mark.parametrize("method", ["also", "nclr", "pointcontrast", "depthcontrast"])
def test_lidar_and_calibration_methods_pretrain_then_finetune(camera_world: Path, tmp_path: Path, method: str):
    from lidarssl.downstream.train import run_segmentation

    tiny = {"also": "method.options={queries: 128, max_neighbors: 4}",
            "pointcontrast": "method.options={npos: 256, match_radius: 0.6}",
            "depthcontrast": "method.options={queue: 2, dim: 16, hidden: 16}",
            "nclr": "method.options={points_per_view: 256, pairs_per_scan: 64, fused_pairs_per_scan: 64, keypoints: 16, "
                    "pose_start_epoch: 0}"}[method]
    config = load_config(PretrainConfig, f"{method}-wi-synthetic", [
        f"data.root={camera_world}", f"out={tmp_path / 'pre'}", "data.num_workers=0", *TINY_BACKBONE, tiny,
        "optim.epochs=1", "trainer.batch_size=2", "trainer.progress_bar=false"])
    result = run_pretraining(config)
    assert np.isfinite(result.loss)
    finetune = load_config(SegmentationConfig, None, [
        f"data.root={camera_world}", f"out={tmp_path / 'ft'}", f"pretrained={result.backbone}", "data.num_workers=0",
        *TINY_BACKBONE, "optim.epochs=1", "trainer.batch_size=2", "trainer.progress_bar=false"])
    before = {k: v.clone() for k, v in torch.load(tmp_path / "pre" / "checkpoints" / "last.ckpt",
                                                  weights_only=True)["state_dict"].items() if k.startswith("backbone.")}
    scores = run_segmentation(finetune, mode="finetune")
    assert 0 <= scores.miou <= 100
    from lidarssl.checkpoints import load_weights

    after, _ = load_weights(tmp_path / "ft" / "backbone.safetensors")
    changed = [k for k, v in after.items() if v.is_floating_point() and not torch.equal(v, before[f"backbone.{k}"])]
    assert changed  # finetuning trains the pretrained backbone


def test_slidr_reads_the_prepared_superpixels(camera_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    from lidarssl.cli import main

    cache = tmp_path / "superpixels"
    assert main(["prepare", "superpixels", "--root", str(camera_world), "--split", "train", "--workers", "1",
                 "preset=slic30_fast", f"cache={cache}"]) == 0
    assert "12 computed, 0 already cached" in capsys.readouterr().out
    assert len(list(cache.rglob("*.png"))) == 12  # 2 frames x 6 cameras
    result = run_pretraining(_config(camera_world, tmp_path / "run", "slidr", f"data.superpixel_cache={cache}"))
    assert np.isfinite(result.loss)
    with pytest.raises(DataError, match="superpixels not cached; run `lidarssl prepare superpixels`"):
        run_pretraining(_config(camera_world, tmp_path / "other", "slidr", f"data.superpixel_cache={tmp_path / 'none'}"))


def test_slidr_computes_each_image_superpixels_once(camera_world: Path, monkeypatch: pytest.MonkeyPatch):
    import dataclasses

    from lidarssl.data.datasets import open_dataset
    from lidarssl.data.superpixels import compute_superpixels
    from lidarssl.methods import slidr

    calls = []
    monkeypatch.setattr(slidr, "compute_superpixels", lambda *a, **k: calls.append(1) or compute_superpixels(*a, **k))
    scans = [open_dataset(camera_world, "train")[i] for i in range(2)]
    one_map = scans[0].cameras[0].image.shape[0] * scans[0].cameras[0].image.shape[1] * 2  # uint16
    source = slidr.SuperpixelSource("slic30_fast", None, memory_bytes=6 * one_map)
    for _ in range(2):  # two epochs of scan 0: SLIC runs once per image
        for c, cam in enumerate(scans[0].cameras):
            ids = source.get(scans[0], c)
            assert np.array_equal(ids, compute_superpixels(cam.image, source.params)) and not ids.flags.writeable
    assert len(calls) == 6
    source.get(scans[1], 0)  # a seventh map: the least recently used one leaves memory
    source.get(scans[0], 5)
    source.get(scans[0], 0)
    assert len(calls) == 8
    unnamed = dataclasses.replace(scans[1], frame_id="")  # no name to remember it by: computed every time
    source.get(unnamed, 1), source.get(unnamed, 1)
    assert len(calls) == 10


def test_drop_cuboid_is_undone_when_a_camera_would_lose_its_pairs(camera_world: Path):
    from lidarssl.data.datasets import open_dataset
    from lidarssl.data.loader import ScanSamples
    from lidarssl.data.transforms import PointAugment
    from lidarssl.models.backbones import create_backbone

    spec = create_backbone("waffleiron_4_32", voxel_size=0.4, grid_shapes=[[32, 32], [32, 8], [32, 8]])
    dataset = open_dataset(camera_world, "train")
    kept = {}
    for name, max_side, min_pairs in (("none", None, 0), ("drop", 0.5, 0), ("undone", 0.5, 10**9)):
        drop = PointAugment(rotate=False, flip=False, scale=None, drop_cuboid=max_side, drop_cuboid_min_pairs=min_pairs)
        samples = ScanSamples(dataset, spec.prep, [], seed=3, augment=drop)
        kept[name] = samples[(0, 0)]["kept"]
    assert len(kept["drop"]) < len(kept["none"])
    assert len(kept["undone"]) == len(kept["none"])  # every voxel is back (its representative point is a random draw)
