"""Frames per second of the synthetic world: 32-beam lidar with six 480x270 cameras, and lidar alone.

Times ``SyntheticWorld.scan(i)`` (ray casting, textures, shading, labels; a validated Scan) over
consecutive frames of one sequence after a warm-up frame, for one render thread and for one thread per
core. Also reports CPU seconds per frame (all threads), which a busy machine disturbs less than wall
time, and the load average at the start: other processes sharing the cores slow the wall-clock
numbers down. Prints a markdown table.

    PYTHONPATH=src python benchmarks/synthetic_fps.py [--frames 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from machine import cpu_name

from lidarssl.synthetic import SyntheticWorld


def measure(frames: int, seed: int, cameras: str, threads: int) -> dict[str, float]:
    """Build a world, render one warm-up frame, then time ``frames`` frames."""
    start = time.perf_counter()
    world = SyntheticWorld(seed=seed, num_frames=frames + 1, lidar="nuscenes", cameras=cameras,
                           image_size=(480, 270), threads=threads)
    build_s = time.perf_counter() - start
    world.scan(0)
    wall, cpu = time.perf_counter(), time.process_time()
    points = 0
    for i in range(1, frames + 1):
        points += len(world.scan(i))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    world.close()
    return {"fps": frames / wall, "s_per_frame": wall / frames, "cpu_per_frame": cpu / frames,
            "build_s": build_s, "points": points / frames}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = [
        ("lidar + 6 cameras 480x270", "nuscenes", 1),
        ("lidar + 6 cameras 480x270", "nuscenes", 0),
        ("lidar only", "none", 1),
    ]
    print(f"Machine: {cpu_name()}, {cores} cores, Python {platform.python_version()}; "
          f"load average at start {load:.2f}; {args.frames} frames after one warm-up, seed {args.seed}\n")
    print("| configuration | render threads | frames/s | s/frame | CPU s/frame | points/frame | world build (s) |")
    print("|---|---|---|---|---|---|---|")
    for label, cameras, threads in rows:
        r = measure(args.frames, args.seed, cameras, threads)
        shown = threads if threads > 0 else f"{min(cores, 6)} (one per core)"
        print(f"| {label} | {shown if cameras != 'none' else '-'} | {r['fps']:.2f} | {r['s_per_frame']:.3f} | "
              f"{r['cpu_per_frame']:.3f} | {r['points']:.0f} | {r['build_s']:.2f} |")


if __name__ == "__main__":
    main()
