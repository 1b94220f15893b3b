"""Known-answer tests with the oracle teacher (features = a fixed one-hot embedding of each pixel's class, read
from the synthetic world's class images): the oracle's input reaches the batch, ScaLR's student recovers the
classes, and the oracle is refused where there are no class images.

Not asserted here (measured, see the issue-14 note): that every image method's backbone makes the classes more
linearly separable than a random backbone. On this 2-frame world after 40 steps it does not (held-out-frame probe
mIoU: random 57.9, PPKT 54.6, SLidR 52.2, ST-SLidR 48.5, ScaLR 49.7).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lidarssl.config import load_config
from lidarssl.data.datasets import open_dataset
from lidarssl.data.loader import LabelBuilder, ScanCollate, ScanSamples
from lidarssl.errors import ConfigError, DataError
from lidarssl.methods.config import PretrainConfig
from lidarssl.methods.pretrain import build_method

BACKBONE = ["backbone.name=waffleiron_4_32", "backbone.options.voxel_size=0.4",
            "backbone.options.grid_shapes=[[32,32],[32,8],[32,8]]"]
ORACLE = {
    "ppkt": ["pairing.resize=[45,80]", "method.options.max_pairs=4096"],
    "slidr": ["pairing.resize=[45,80]", "method.options.superpixels=slic30_fast"],
    "stslidr": ["pairing.resize=[45,80]", "method.options.superpixels=slic30_fast"],
    "scalr": ["pairing.resize=[45,80]"],
}


def _config(root: Path, out: Path, method: str, *extra: str) -> PretrainConfig:
    return load_config(PretrainConfig, None, [
        f"out={out}", f"data.root={root}", "data.num_workers=0", f"method.name={method}", "teacher.name=oracle",
        "pairing.cameras=all", *BACKBONE, "optim.epochs=20", "optim.lr=0.01", "optim.warmup_epochs=0",
        "trainer.batch_size=1", "trainer.progress_bar=false",
        *ORACLE.get(method, []), *extra])


def test_scalr_student_recovers_the_oracle_classes(camera_world: Path, tmp_path: Path, one_thread):
    """ScaLR regresses the oracle's one-hot class features: after 60 steps its head names the class of the
    training points (labelled, paired or not) far more often than the most frequent class covers them."""
    config = _config(camera_world, tmp_path, "scalr")
    torch.manual_seed(0)
    module, spec, builders = build_method(config)
    samples = ScanSamples(open_dataset(camera_world, "train"), spec.prep, builders, seed=0,
                          augment=config.augment.point_augment())
    collate = ScanCollate(spec.prep, builders)
    assert "pixel_classes" in collate([samples[(0, 0)]])  # the oracle's input reached the batch
    opt = torch.optim.AdamW(module.parameters(), lr=0.01)
    for step in range(60):
        loss = module.losses(collate([samples[(step % 2, step)]]))["distill"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()
    plain = ScanSamples(open_dataset(camera_world, "train"), spec.prep, [LabelBuilder()], train=False)
    with torch.no_grad():
        agree = []
        for i in range(len(plain)):
            batch = ScanCollate(spec.prep, [LabelBuilder()])([plain[i]])
            y = batch["labels"]
            pred = module.head(spec.model(batch)).argmax(1)
            majority = float(torch.bincount(y[y != 255]).max()) / int((y != 255).sum())
            agree.append((float((pred == y)[y != 255].float().mean()), majority))
    for accuracy, majority in agree:
        print(f"scalr with the oracle: head accuracy {accuracy:.3f}, most frequent class {majority:.3f}")
        assert accuracy > majority + 0.1  # measured: +0.19 and +0.24


def test_oracle_needs_class_images(camera_world: Path, tmp_path: Path):
    from lidarssl.data.pairing import ClassImageSource

    scan = open_dataset(camera_world, "train")[0]
    scan.cameras[0].source = str(tmp_path / "cameras" / "CAM_FRONT" / "x.jpg")  # as a real dataset's image
    with pytest.raises(DataError, match="teacher 'oracle' needs the per-pixel class images of a synthetic world"):
        ClassImageSource().get(scan, 0)
    with pytest.raises(ConfigError, match="teacher 'oracle' computes its features from class images"):
        build_method(_config(camera_world, tmp_path, "scalr", f"data.teacher_cache={tmp_path}"))
