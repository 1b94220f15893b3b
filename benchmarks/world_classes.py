"""Per-class lidar point counts of the default synthetic world, sequence by sequence.

Generates the sequences that ``lidarssl generate`` writes by default (sequence ``k`` uses seed
``seed + k``), lidar only, and sums the labelled points of each of the 16 nuScenes-lidarseg classes
over the frames of each sequence. Prints a markdown table with one row per sequence, then the minimum
and mean over sequences: every class should show up in every sequence.

    PYTHONPATH=src python benchmarks/world_classes.py [--seed 0] [--sequences 4] [--frames-per-sequence 10]
"""

from __future__ import annotations

import argparse

import numpy as np

from lidarssl.data.labels import load_class_map
from lidarssl.synthetic import SyntheticWorld


def class_counts(seed: int, frames: int, num_classes: int) -> np.ndarray:
    """(C,) points per class summed over the ``frames`` sweeps of the sequence of ``seed``."""
    world = SyntheticWorld(seed=seed, num_frames=frames, cameras="none", threads=1)
    counts = np.zeros(num_classes, np.int64)
    for i in range(frames):
        labels = world.scan(i).labels
        counts += np.bincount(labels[labels < num_classes], minlength=num_classes)
    world.close()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--frames-per-sequence", type=int, default=10)
    args = parser.parse_args()
    names = load_class_map("nuscenes").classes
    rows = []
    print(f"{args.sequences} sequences of {args.frames_per_sequence} frames from seed {args.seed}, lidar points per class\n")
    print("| sequence (seed) | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for k in range(args.sequences):
        counts = class_counts(args.seed + k, args.frames_per_sequence, len(names))
        rows.append(counts)
        print(f"| {k} ({args.seed + k}) | " + " | ".join(str(int(c)) for c in counts) + " |", flush=True)
    table = np.stack(rows)
    print("| **min** | " + " | ".join(f"**{int(c)}**" for c in table.min(0)) + " |")
    print("| mean | " + " | ".join(f"{c:.0f}" for c in table.mean(0)) + " |")


if __name__ == "__main__":
    main()
