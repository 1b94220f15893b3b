"""The image teacher's ceiling: its own features at the lidar points' pixels, linearly probed.

An image-to-lidar method can at best give each point what its teacher sees at the point's pixel, so a linear probe
of the teacher's features at the paired points bounds what its students' probes can reach. For every scan of the
train and val splits, each point seen by a camera (pairing of ``scalr-wi-synthetic``: whole images at 112x224,
first camera of a point seen twice) gets the teacher's feature at its pixel; a BN + linear head, as the probe recipe's,
is trained on the train points and scored on the val points (mIoU over the classes present, percent). Only paired
points count, so the number compares with a lidar probe on every point only up to the points no camera sees.

    PYTHONPATH=src python benchmarks/teacher_ceiling.py --world runs/six/201/world \
        --teacher runs/six/201/teacher/resnet18_semantic.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from feature_probe import linear_probe


def paired_features(world: Path, split: str, teacher, pairing) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, C) teacher features and (P,) labels of every paired point of ``split`` (one pixel per point)."""
    from lidarssl.data.datasets import open_dataset
    from lidarssl.data.pairing import pair_views
    from lidarssl.methods.image import sample_maps

    feats, labels = [], []
    dataset = open_dataset(world, split=split)
    for i in range(len(dataset)):
        scan = dataset[i]
        views = pair_views(scan, pairing)
        _, first = np.unique(views.point, return_index=True)
        with torch.no_grad():
            maps = teacher(torch.from_numpy(views.images).permute(0, 3, 1, 2)).float()
            f = sample_maps(maps, torch.from_numpy(views.view[first]), torch.from_numpy(views.uv[first]).float(),
                            tuple(views.images.shape[1:3]))
        feats.append(f)
        labels.append(torch.from_numpy(scan.labels[views.point[first]].astype(np.int64)))
    return torch.cat(feats), torch.cat(labels)


def teacher_ceiling(world: Path, teacher_weights: Path, epochs: int = 30, seed: int = 0) -> float:
    """Val mIoU (percent) of a BN + linear probe of ``resnet18_semantic``'s features at the paired points."""
    from lidarssl.config import load_config
    from lidarssl.data.datasets import open_dataset
    from lidarssl.methods.config import PretrainConfig
    from lidarssl.models.teachers import create_teacher

    pairing = load_config(PretrainConfig, "scalr-wi-synthetic", [f"data.root={world}"]).pairing
    teacher = create_teacher("resnet18_semantic", weights=teacher_weights).eval()
    class_map = open_dataset(world, split="train").class_map
    x, y = paired_features(world, "train", teacher, pairing)
    xv, yv = paired_features(world, "val", teacher, pairing)
    from lidarssl.metrics import miou

    return 100 * miou(linear_probe(x, y, xv, yv, class_map, epochs, seed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--teacher", type=Path, required=True, help="resnet18_semantic weights file")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    print(f"teacher ceiling: {teacher_ceiling(args.world, args.teacher, args.epochs):.1f} mIoU on the val points "
          "seen by a camera")


if __name__ == "__main__":
    main()
