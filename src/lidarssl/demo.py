"""The demo pipeline of ``lidarssl demo`` and ``benchmarks/demo.py``: a synthetic world, a 2D teacher, ScaLR-style
pretraining, and linear probes of the pretrained and of a random backbone."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from lidarssl.errors import ConfigError


def demo_overrides(items: Sequence[str]) -> dict[str, list[str]]:
    """Demo overrides by stage: ``world.frames=8``, ``teacher.epochs=2``, ``pretrain.optim.epochs=2``,
    ``probe.optim.lr=0.02``."""
    stages: dict[str, list[str]] = {"world": [], "teacher": [], "pretrain": [], "probe": []}
    for item in items:
        stage, _, rest = item.partition(".")
        if stage not in stages or not rest:
            raise ConfigError(f"demo override '{item}' must start with world., teacher., pretrain. or probe. "
                              "(e.g. pretrain.optim.epochs=2)")
        stages[stage].append(rest)
    return stages


def run_demo(out: Path, teacher: str = "trained", overrides: Sequence[str] = ()) -> str:
    """The main job: pretrain on the synthetic world, then probe it against a random backbone. Prints its progress
    and returns the IoU table of both probes, with a header naming the teacher."""
    import torch

    from lidarssl.checkpoints import save_weights
    from lidarssl.config import GenerateConfig, SegmentationConfig, load_config, parse_overrides
    from lidarssl.downstream.train import run_segmentation
    from lidarssl.methods.config import PretrainConfig
    from lidarssl.methods.pretrain import prepare_teacher_features, run_pretraining
    from lidarssl.methods.semantic_teacher import TeacherTraining, train_semantic_teacher
    from lidarssl.metrics import format_iou_table
    from lidarssl.models.backbones import create_backbone
    from lidarssl.synthetic.generate import generate

    stages = demo_overrides(overrides)
    trained = teacher == "trained"
    teacher_file = out / "teacher" / "resnet18_semantic.safetensors"
    teacher_keys = ["teacher.name=resnet18_semantic", f"teacher.weights={teacher_file}"] if trained else []
    world = load_config(GenerateConfig, "world-nuscenes", [
        f"out={out / 'world'}", "frames=48", "frames_per_sequence=8", "val_fraction=0.17", "image_size=[320,180]",
        "overwrite=true", *stages["world"]])
    pre = load_config(PretrainConfig, "scalr-wi-synthetic", [
        f"data.root={world.out}", f"out={out / 'pretrain'}", f"data.teacher_cache={out / 'cache'}", *teacher_keys,
        *stages["pretrain"]])
    recipe = TeacherTraining(**{"epochs": 3, **parse_overrides(stages["teacher"])})
    for run in ("pretrain", "probe-pretrained", "probe-random", "cache", "teacher"):
        shutil.rmtree(out / run, ignore_errors=True)  # the demo always starts over
    print(f"1/4 generating a synthetic world of {world.frames} frames (lidar + 6 cameras) in {world.out}", flush=True)
    generate(world)
    if trained:
        print(f"2/4 training the 2D teacher resnet18_semantic on the train split's images and class images "
              f"({recipe.epochs} epochs; it stands in for DINOv2, whose weights cannot be downloaded here), "
              "then caching its features", flush=True)
        train_semantic_teacher(world.out, teacher_file, recipe, log=lambda line: print(f"    {line}", flush=True))
    else:
        print(f"2/4 caching the features of a frozen {pre.teacher.name} teacher (random weights: none can be "
              "downloaded here)", flush=True)
    prepare_teacher_features(pre)
    print(f"3/4 pretraining {pre.backbone.name} by ScaLR-style distillation for {pre.optim.epochs} epochs", flush=True)
    pretrained = run_pretraining(pre).backbone
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(pre.seed)
        spec = create_backbone(pre.backbone.name, **pre.backbone.options)
    random = save_weights(out / "random" / "backbone.safetensors", spec.model.state_dict(),
                          {"backbone": spec.name, "options": pre.backbone.options})
    results = {}
    for name, weights in (("pretrained", pretrained), ("random", random)):
        probe = load_config(SegmentationConfig, "probe-wi-synthetic", [
            f"data.root={world.out}", f"out={out / f'probe-{name}'}", f"pretrained={weights}", *stages["probe"]])
        print(f"4/4 linear probing the {name} backbone for {probe.optim.epochs} epochs", flush=True)
        results[name] = run_segmentation(probe, mode="probe")
    return (f"linear probing on the synthetic world's val split, every point scored, teacher {pre.teacher.name} "
            f"({'trained here' if trained else 'random'}):\n"
            + format_iou_table({k: r.confusion for k, r in results.items()}, results["random"].classes))
