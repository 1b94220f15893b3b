"""Scans per second of the nuScenes reader: one keyframe of 35,000 points with six 1600x900 JPEG cameras, read
(point file, lidarseg labels, six image decodes, calibration chain) and projected into every camera.

Writes a synthetic world in the nuScenes layout at the real image size (``lidarssl.synthetic.write_nuscenes``),
pads each sweep to 35,000 points (real keyframes hold ~34,700; the synthetic lidar returns ~30,000), then times
``reader[i]`` followed by ``project_scan`` on one process and one thread, after one warm-up pass so the files are
in the page cache (as in every epoch after the first). When the real nuScenes sample of ``shared/data/real`` is
present, a second dataset gets its six camera JPEGs in place of the synthetic ones (real photographs compress
to about half the bytes of the synthetic frames at quality 95, and decode a little faster). CPU seconds per
scan are reported beside wall time: on a shared machine they are the steadier number. Each dataset is timed at
full image size and with ``image_scale=0.5`` (JPEGs decoded at 800x450 by DCT scaling, intrinsics halved), the
speed-up for consumers that resize the images down anyway. Target: 10 scans/s per worker. Prints a markdown
table.

    PYTHONPATH=src python benchmarks/reader_speed.py [--frames 4] [--repeats 5] [--out /tmp/lidarssl-reader-bench]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per worker, before numpy loads its BLAS
import platform
import shutil
import time
from pathlib import Path

import numpy as np
from machine import cpu_name

from lidarssl.data.formats import NuScenes
from lidarssl.data.geometry import project_scan
from lidarssl.synthetic import write_nuscenes

POINTS = 35_000
REAL = Path(os.environ.get("LIDARSSL_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))


def write_world(root: Path, frames: int) -> None:
    """A synthetic nuScenes-layout dataset with 1600x900 cameras and 35,000-point sweeps."""
    if root.exists():
        shutil.rmtree(root)
    world = {"seed": 0, "lidar": "nuscenes", "cameras": "nuscenes", "image_size": (1600, 900), "threads": 0}
    write_nuscenes(world, root, frames, frames_per_sequence=frames, val_fraction=0.0)
    for frame in NuScenes(root, "all", with_images=False).frames:
        record = frame[2]
        lidar, labels = root / record["lidar"]["file"], root / record["lidarseg"]
        pts = np.fromfile(lidar, "<f4").reshape(-1, 5)
        lab = np.fromfile(labels, "u1")
        take = np.arange(POINTS) % len(pts)  # repeat the sweep's own points up to the real size
        pts[take].tofile(lidar)
        lab[take].tofile(labels)


def with_real_images(src: Path, dst: Path) -> bool:
    """A copy of ``src`` whose camera JPEGs are the real nuScenes sample's; False when that sample is absent."""
    real = {p.parent.name: p for p in (REAL / "nuscenes" / "samples").glob("CAM_*/*.jpg")}
    if len(real) < 6:
        return False
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".lidarssl_index"))
    for jpg in (dst / "samples").glob("CAM_*/*.jpg"):
        shutil.copyfile(real[jpg.parent.name], jpg)
    return True


def measure(root: Path, repeats: int, image_scale: float) -> dict[str, float]:
    """Read and project every frame ``repeats`` times after one warm-up pass; per-scan averages."""
    reader = NuScenes(root, "all", image_scale=image_scale)
    for i in range(len(reader)):
        project_scan(reader[i])
    n = repeats * len(reader)
    wall, cpu = time.perf_counter(), time.process_time()
    valid = points = 0
    for _ in range(repeats):
        for i in range(len(reader)):
            scan = reader[i]
            valid += sum(int(p.valid.sum()) for p in project_scan(scan))
            points += len(scan)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    hw = reader[0].cameras[0].hw
    return {"fps": n / wall, "cpu_fps": n / cpu, "ms": 1e3 * wall / n, "cpu_ms": 1e3 * cpu / n, "points": points / n,
            "valid": valid / n, "size": f"{hw[1]}x{hw[0]}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4, help="keyframes written (each is read --repeats times)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("/tmp/lidarssl-reader-bench"))
    args = parser.parse_args()
    synthetic, real = args.out / "synthetic", args.out / "real-images"
    write_world(synthetic, args.frames)
    rows = [("synthetic JPEGs (quality 95)", synthetic)]
    if with_real_images(synthetic, real):
        rows.append(("real nuScenes JPEGs", real))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"Machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}; load average at start "
          f"{load:.2f}; one process, one thread; {args.frames} keyframes x {args.repeats} after one warm-up pass\n")
    print("| images | decoded size | points/scan | points in a camera | scans/s (wall) | ms/scan | "
          "scans/s (CPU) | CPU ms/scan |")
    print("|---|---|---|---|---|---|---|---|")
    for (label, root), scale in ((row, scale) for row in rows for scale in (1.0, 0.5)):
        r = measure(root, args.repeats, scale)
        label = label + (f", image_scale={scale:g}" if scale != 1 else "")
        print(f"| {label} | 6 x {r['size']} | {r['points']:.0f} | {r['valid']:.0f} | {r['fps']:.1f} | {r['ms']:.1f} | "
              f"{r['cpu_fps']:.1f} | {r['cpu_ms']:.1f} |")


if __name__ == "__main__":
    main()
