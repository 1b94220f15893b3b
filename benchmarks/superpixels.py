"""SLIC superpixels: speed per core and agreement with full resolution, by working scale.

SLidR runs ``slic(n_segments=150, compactness=6, sigma=3.0, start_label=0)`` on every full-resolution
camera image. ``SuperpixelParams.scale`` runs SLIC on the image area-averaged to ``scale`` times its size
(float32, ``sigma`` scaled) and upsamples the labels with nearest neighbour. For each scale this prints,
over real nuScenes (1600x900) and PandaSet (1920x1080) images:

- CPU seconds per image on one thread (BLAS/OpenMP pinned to one thread; CPU time is less disturbed
  by other processes on a shared machine than wall time), images/s per core and the speed-up;
- agreement with the full-resolution map: achievable segmentation accuracy (ASA: every fast superpixel
  takes the full-resolution superpixel it overlaps most; share of pixels that then agree) and boundary
  recall (share of full-resolution boundary pixels with a fast boundary within 2 px);
- the number of superpixels produced (mean, min-max; ids must stay below SLidR's per-image offset).

A second table calibrates ASA: full-resolution SLIC against itself under changes that should not
matter (JPEG re-encoding, a 1-pixel shift, 20 instead of 10 iterations) and a fixed grid of as many cells.

    PYTHONPATH=src python benchmarks/superpixels.py [--scales 1,0.6,0.5,0.4,0.3] [--segments 150,30] [--max-images 12]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import io  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from machine import cpu_name  # noqa: E402
from PIL import Image  # noqa: E402

from lidarssl.data.superpixels import (  # noqa: E402
    SLIC_MAX_ITER,
    SuperpixelParams,
    achievable_segmentation_accuracy,
    boundary_recall,
    compute_superpixels,
)

REAL = Path(os.environ.get("LIDARSSL_REAL_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "real"))


def find_images(root: Path, limit: int) -> list[Path]:
    """nuScenes camera images and PandaSet frame-00 images, alternating so a limit keeps both."""
    nus = sorted(root.glob("nuscenes/samples/CAM_*/*.jpg"))
    pds = sorted(root.glob("pandaset/*/camera/*/00.jpg"))
    mixed = [p for pair in zip(nus, pds) for p in pair] + nus[len(pds):] + pds[len(nus):]
    return mixed[:limit]


def timed(fn, image: np.ndarray) -> tuple[np.ndarray, float]:
    cpu = time.process_time()
    out = fn(image)
    return out, time.process_time() - cpu


def grid(shape: tuple[int, int], n: int) -> np.ndarray:
    """A regular grid of about ``n`` cells of the image's aspect ratio."""
    h, w = shape
    rows = max(1, round(np.sqrt(n * h / w)))
    cols = max(1, round(n / rows))
    return (np.arange(h)[:, None] * rows // h) * cols + (np.arange(w)[None, :] * cols // w)


def jpeg(image: np.ndarray, quality: int = 95) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1,0.6,0.5,0.4,0.3")
    parser.add_argument("--segments", default="150,30")
    parser.add_argument("--max-images", type=int, default=12)
    parser.add_argument("--no-calibration", action="store_true", help="skip the second table")
    args = parser.parse_args()
    scales = [float(s) for s in args.scales.split(",")]
    if 1.0 not in scales:
        scales.insert(0, 1.0)
    scales.sort(reverse=True)
    segments = [int(s) for s in args.segments.split(",")]
    paths = find_images(REAL, args.max_images)
    if not paths:
        raise SystemExit(f"no real images under {REAL} (set LIDARSSL_REAL_DATA)")
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    sizes = sorted({f"{im.shape[1]}x{im.shape[0]}" for im in images})
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"Machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}; one thread; "
          f"load average at start {load:.2f}; {len(images)} real images ({', '.join(sizes)}: "
          f"{sum('nuscenes' in str(p) for p in paths)} nuScenes, {sum('pandaset' in str(p) for p in paths)} PandaSet), "
          f"one pass each after a warm-up\n")
    compute_superpixels(images[0][:225, :400].copy(), SuperpixelParams())  # warm-up (imports, caches)

    print("| n_segments | scale | CPU s/image | images/s per core | speed-up | ASA mean (min) | boundary recall 2px | "
          "superpixels mean (min-max) |")
    print("|---|---|---|---|---|---|---|---|")
    full_maps: dict[int, list[np.ndarray]] = {}
    for n in segments:
        base_cpu = None
        for scale in scales:
            params = SuperpixelParams(n_segments=n, scale=scale)
            maps, cpu = [], 0.0
            for im in images:
                ids, t = timed(lambda x: compute_superpixels(x, params), im)
                maps.append(ids)
                cpu += t
            cpu /= len(images)
            if scale == 1.0:
                full_maps[n], base_cpu = maps, cpu
            asa = [achievable_segmentation_accuracy(m, f) for m, f in zip(maps, full_maps[n])]
            br = [boundary_recall(m, f, 2) for m, f in zip(maps, full_maps[n])]
            counts = [int(m.max()) + 1 for m in maps]
            print(f"| {n} | {scale:g} | {cpu:.3f} | {1 / cpu:.2f} | {base_cpu / cpu:.1f}x | {np.mean(asa):.3f} "
                  f"({np.min(asa):.3f}) | {np.mean(br):.3f} | {np.mean(counts):.1f} ({min(counts)}-{max(counts)}) |")

    if args.no_calibration:
        return
    from skimage.segmentation import slic

    print("\nCalibration: full-resolution SLIC against itself under small changes (same ASA/recall as above).\n")
    print("| n_segments | variant | CPU s/image | ASA mean (min) | boundary recall 2px |")
    print("|---|---|---|---|---|")
    for n in segments:
        params = SuperpixelParams(n_segments=n)
        kw = dict(n_segments=n, compactness=params.compactness, sigma=params.sigma, start_label=0, channel_axis=-1)

        def shifted(x: np.ndarray) -> np.ndarray:
            ids = compute_superpixels(np.concatenate([x[:, :1], x[:, :-1]], axis=1), params)
            return np.concatenate([ids[:, 1:], ids[:, -1:]], axis=1)

        variants = {
            "JPEG re-encoded (q95)": lambda x: compute_superpixels(jpeg(x), params),
            "image shifted 1 px": shifted,
            f"max_num_iter 20 (default {SLIC_MAX_ITER})": lambda x: slic(x, max_num_iter=20, **kw),
            "max_num_iter 5": lambda x: slic(x, max_num_iter=5, **kw),
            "enforce_connectivity=False": lambda x: slic(x, enforce_connectivity=False, **kw),
            "float32 input": lambda x: slic(x.astype(np.float32) / np.float32(255), **kw),
            "regular grid": lambda x: grid(x.shape[:2], int(n)),
        }
        for name, fn in variants.items():
            asa, br, cpu = [], [], 0.0
            for im, ref in zip(images, full_maps[n]):
                ids, t = timed(fn, im)
                cpu += t
                asa.append(achievable_segmentation_accuracy(ids, ref))
                br.append(boundary_recall(ids, ref, 2))
            print(f"| {n} | {name} | {cpu / len(images):.3f} | {np.mean(asa):.3f} ({np.min(asa):.3f}) | "
                  f"{np.mean(br):.3f} |")


if __name__ == "__main__":
    main()
