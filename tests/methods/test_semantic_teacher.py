"""The semantic 2D teacher trained here: `lidarssl prepare teacher`, its file in the teacher path, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lidarssl.cli import main
from lidarssl.models.teachers import create_teacher

TINY = ["epochs=3", "image_size=[56,112]", "batch_size=4"]


@pytest.fixture(scope="module")
def teacher_file(camera_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teacher") / "t.safetensors"
    torch.set_num_threads(1)
    assert main(["prepare", "teacher", "--root", str(camera_world), f"out={out}", *TINY]) == 0
    return out


def test_world_stores_class_images_of_every_camera(camera_world: Path):
    from lidarssl.data.formats.synthetic import SyntheticDataset

    data = SyntheticDataset(camera_world, "train")
    assert data.has_class_images
    classes = data.class_image(0, "CAM_FRONT")
    assert classes.shape == data[0].cameras[0].image.shape[:2] and classes.dtype == np.uint8
    assert 255 in classes and len(np.unique(classes)) > 4  # sky and several surfaces


def test_prepare_teacher_trains_and_loads_online_and_cached(teacher_file: Path, camera_world: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture, one_thread):
    from lidarssl.checkpoints import read_metadata

    meta = read_metadata(teacher_file)
    assert meta["split"] == "train" and meta["teacher"] == "resnet18_semantic"
    teacher = create_teacher("resnet18_semantic", weights=teacher_file)  # head.* dropped, strict load
    random = create_teacher("resnet18_semantic")
    images = torch.randint(0, 255, (1, 3, 56, 112), dtype=torch.uint8)
    assert teacher(images).shape == (1, 256, 7, 14)
    assert not torch.allclose(teacher(images), random(images))  # the weights were loaded
    cache = tmp_path / "cache"
    assert main(["prepare", "teacher-features", "--root", str(camera_world), "--split", "train",
                 "recipe=scalr-wi-synthetic", f"data.teacher_cache={cache}", "pairing.resize=[28,56]",
                 "teacher.name=resnet18_semantic", f"teacher.weights={teacher_file}"]) == 0
    assert "12 computed, 0 already cached" in capsys.readouterr().out
    files = list(cache.glob("resnet18_semantic-t-*/**/*.npy"))
    assert len([f for f in files if f.name != "mean.npy"]) == 12  # one map per image, and the mean beside them
    assert [f.parent.parent for f in files if f.name == "mean.npy"] == [cache]


def test_teacher_learns_the_classes_of_its_training_images(teacher_file: Path, camera_world: Path, one_thread):
    """The saved classifier head on the saved encoder labels the training pixels far better than chance."""
    from safetensors.torch import load_file

    from lidarssl.data.formats.synthetic import SyntheticDataset
    from lidarssl.methods.semantic_teacher import _load

    data = SyntheticDataset(camera_world, "train")
    teacher = create_teacher("resnet18_semantic", weights=teacher_file)
    head = torch.nn.Conv2d(256, data.class_map.num_classes, 1)
    head.load_state_dict({k.removeprefix("head."): v for k, v in load_file(teacher_file).items() if k.startswith("head.")})
    image, labels = _load(data, 0, "CAM_FRONT", (56, 112))
    logits = torch.nn.functional.interpolate(head(teacher(image[None])), size=labels.shape, mode="bilinear")
    valid = labels != data.class_map.ignore_index
    accuracy = float((logits[0].argmax(0) == labels)[valid].float().mean())
    assert accuracy > 0.5  # the most frequent class covers well under half of the labelled pixels


def test_only_the_training_split_is_read(camera_world: Path, tmp_path: Path, one_thread):
    world = tmp_path / "world"
    shutil.copytree(camera_world, world)
    index = json.loads((world / "index.json").read_text())
    for frame in index["frames"]:
        if frame["split"] != "train":  # val images and labels gone: training does not notice
            for rel in [frame["lidar"], *frame["cameras"].values(), *frame["class_images"].values()]:
                (world / rel).unlink()
    assert main(["prepare", "teacher", "--root", str(world), f"out={tmp_path / 't.safetensors'}", "epochs=1",
                 "image_size=[28,56]"]) == 0


def _error(capsys: pytest.CaptureFixture, *args: str) -> str:
    assert main(["prepare", "teacher", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    return err


def test_bad_input_is_one_line(camera_world: Path, tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    out = f"out={tmp_path / 't.safetensors'}"
    assert "has no camera images; generate one with cameras" in _error(capsys, "--root", str(tiny_world), out)
    assert "the teacher trains on the training split only; got --split val" in _error(
        capsys, "--root", str(camera_world), "--split", "val", out)
    empty = tmp_path / "empty"
    shutil.copytree(camera_world, empty)
    index = json.loads((empty / "index.json").read_text())
    for frame in index["frames"]:
        frame["split"] = "val"
    (empty / "index.json").write_text(json.dumps(index))
    assert "the 'train' split has no frames" in _error(capsys, "--root", str(empty), out)
    for frame in index["frames"]:
        frame["split"] = "train"
        del frame["class_images"]
    (empty / "index.json").write_text(json.dumps(index))
    assert "this world has no class images" in _error(capsys, "--root", str(empty), out)
    assert "unknown option(s) ['epoch']" in _error(capsys, "--root", str(camera_world), "epoch=2")
    assert not (tmp_path / "t.safetensors").exists()


@pytest.mark.real
def test_real_data_has_no_class_images(real_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    err = _error(capsys, "--root", str(real_root / "semantic_kitti"), f"out={tmp_path / 't.safetensors'}")
    assert "a semantickitti dataset has no per-pixel class images; the teacher trains on a synthetic world" in err


def test_demo_takes_teacher_overrides_and_the_random_variant(capsys: pytest.CaptureFixture):
    from lidarssl.cli import _parser
    from lidarssl.demo import demo_overrides

    assert demo_overrides(["teacher.epochs=2", "world.frames=4"])["teacher"] == ["epochs=2"]
    assert _parser().parse_args(["demo"]).teacher == "trained"
    assert _parser().parse_args(["demo", "--teacher", "random"]).teacher == "random"
    assert main(["demo", "teachr.epochs=2"]) == 2
    assert "must start with world., teacher., pretrain. or probe." in capsys.readouterr().err
