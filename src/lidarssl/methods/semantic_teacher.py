"""``lidarssl prepare teacher``: train the small semantic image teacher on a synthetic world's training split.

The seeds distill a strong 2D teacher (DINOv2, MoCo, DINO ResNet-50) into the 3D backbone. Without network
access no such weights exist here, so this trains one: ``resnet18_semantic``
(:mod:`lidarssl.models.teachers.semantic`) plus a 1x1 classifier, by per-pixel cross-entropy on the camera
images and the per-pixel class images of the training split only (3D labels are never read). The saved file
holds the encoder and the classifier (``head.*``); loading it as a teacher keeps the encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lidarssl.checkpoints import save_weights
from lidarssl.data.datasets import detect_format
from lidarssl.data.formats.synthetic import SyntheticDataset
from lidarssl.errors import DataError
from lidarssl.models.teachers import create_teacher

__all__ = ["TeacherTraining", "train_semantic_teacher"]

#: Raw id of the sky in class images (lidarssl.synthetic.camera.SKY_CLASS; methods must not import synthetic).
SKY = 255


@dataclass(frozen=True)
class TeacherTraining:
    """The recipe of the teacher's training.

    Attributes:
        epochs: passes over the training split's camera images.
        lr: AdamW learning rate (cosine decay to zero).
        batch_size: images per step.
        image_size: ``(H, W)`` images and class images are resized to (bilinear / nearest).
        seed: initialisation and shuffling.
    """

    epochs: int = 4
    lr: float = 2e-3
    batch_size: int = 8
    image_size: tuple[int, int] = (112, 224)
    seed: int = 0


def _training_images(root: Path, split: str) -> tuple[SyntheticDataset, list[tuple[int, str]]]:
    """The synthetic world at ``root`` and its (frame, camera) images, with the errors the user can act on."""
    if split != "train":
        raise DataError(f"the teacher trains on the training split only; got --split {split} (use --split train)")
    if not root.is_dir():
        raise DataError(f"{root}: no such dataset folder")
    fmt = detect_format(root)
    if fmt != "synthetic":
        raise DataError(f"{root}: a {fmt} dataset has no per-pixel class images; the teacher trains on a synthetic "
                        "world (`lidarssl generate out=WORLD`)")
    dataset = SyntheticDataset(root, split=split)
    if len(dataset) == 0:
        raise DataError(f"{root}: the 'train' split has no frames; generate a world with at least two sequences")
    if not dataset.has_class_images:
        raise DataError(f"{root}: this world has no class images (written by an older lidarssl); regenerate it with "
                        f"`lidarssl generate out={root} overwrite=true`")
    pairs = [(i, name) for i, f in enumerate(dataset.frames) for name in f["cameras"]]
    if not pairs:
        raise DataError(f"{root}: this world has no camera images; generate one with cameras (cameras=nuscenes)")
    return dataset, pairs


def _load(dataset: SyntheticDataset, i: int, camera: str, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One (3, H, W) uint8 image and its (H, W) int64 training-class image at ``size``."""
    from PIL import Image

    path = dataset.root / dataset.frames[i]["cameras"][camera]
    try:
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB").resize(size[::-1], Image.BILINEAR))
    except OSError as e:
        raise DataError(f"{path}: unreadable image ({e}); regenerate the dataset") from None
    raw = dataset.class_image(i, camera)
    raw = np.asarray(Image.fromarray(raw).resize(size[::-1], Image.NEAREST))
    labels = np.full(raw.shape, dataset.class_map.ignore_index, np.int64)  # sky and unlabelled ids: ignored
    ground = raw != SKY
    labels[ground] = dataset.class_map.map(raw[ground], str(path))
    return torch.from_numpy(image.copy()).permute(2, 0, 1), torch.from_numpy(labels.astype(np.int64))


def train_semantic_teacher(root: str | Path, out: str | Path, recipe: TeacherTraining = TeacherTraining(),
                           split: str = "train", log: Callable[[str], None] = print) -> dict[str, float]:
    """Train ``resnet18_semantic`` on ``root``'s training images and save it to ``out`` (safetensors, atomic).

    Returns:
        ``{"loss": last epoch's mean loss, "pixel_accuracy": of the last epoch, "images": count}``.

    Raises:
        DataError: ``root`` is not a synthetic world with class images, or its training split is empty.
    """
    dataset, pairs = _training_images(Path(root), split)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        teacher = create_teacher("resnet18_semantic")
        head = nn.Conv2d(teacher.out_channels, dataset.class_map.num_classes, 1)
    encoder = teacher.encoder
    encoder.requires_grad_(True)
    params = [*encoder.parameters(), *head.parameters()]
    steps = recipe.epochs * -(-len(pairs) // recipe.batch_size)
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe.lr, total_steps=max(steps, 1), pct_start=0.1)
    ignore = dataset.class_map.ignore_index
    log(f"training resnet18_semantic on {len(pairs)} camera images of {root} (train split) for {recipe.epochs} epochs")
    samples = [_load(dataset, i, cam, recipe.image_size) for i, cam in pairs]  # small worlds: keep them in memory
    rng = np.random.default_rng(recipe.seed)
    loss_sum = correct = seen = 0.0
    for epoch in range(recipe.epochs):
        encoder.train()  # Teacher.train() pins eval mode; the encoder itself trains (BatchNorm statistics too)
        loss_sum = correct = seen = 0.0
        order = rng.permutation(len(samples))
        for start in range(0, len(order), recipe.batch_size):
            chunk = [samples[k] for k in order[start:start + recipe.batch_size]]
            images = torch.stack([c[0] for c in chunk])
            labels = torch.stack([c[1] for c in chunk])
            logits = F.interpolate(head(encoder(teacher.prepare(images))), size=labels.shape[-2:], mode="bilinear",
                                   align_corners=False)
            loss = F.cross_entropy(logits, labels, ignore_index=ignore)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            valid = labels != ignore
            loss_sum += float(loss.detach()) * len(chunk)
            correct += float((logits.argmax(1) == labels)[valid].sum())
            seen += float(valid.sum())
        log(f"teacher epoch {epoch + 1}/{recipe.epochs}: loss {loss_sum / len(samples):.3f}, "
            f"pixel accuracy {correct / max(seen, 1):.3f}")
    state = {**encoder.state_dict(), **{f"head.{k}": v for k, v in head.state_dict().items()}}
    save_weights(out, state, {"teacher": "resnet18_semantic", "world": str(root), "split": split,
                              "epochs": recipe.epochs, "image_size": list(recipe.image_size),
                              "classes": list(dataset.class_map.classes)})
    return {"loss": loss_sum / len(samples), "pixel_accuracy": correct / max(seen, 1), "images": len(samples)}
