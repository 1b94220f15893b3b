"""Lens distortion of OpenCV's pinhole model: resample raw camera images to ideal pinhole images and back.

Cameras calibrated with OpenCV (ONCE's ``distortion``: ``k1, k2, p1, p2, k3``) map a point of normalised camera
coordinates ``(x, y)`` to ``x' = x (1 + k1 r^2 + k2 r^4 + k3 r^6) + 2 p1 x y + p2 (r^2 + 2 x^2)`` (and likewise
``y'``) before the intrinsics ``K``. lidarssl projects with ``K`` alone (:class:`~lidarssl.data.scan.CameraView`),
so a reader resamples each raw image into the undistorted image of the same ``K``: pixel ``p`` of the output
takes the raw image at ``distort(p)``, bilinearly, as OpenCV's ``undistort`` and kornia's ``undistort_image`` do
(pixel centres at integer coordinates, the dataset's own convention). The sampling map depends only on the
camera, so :class:`Undistorter` builds it once with kornia and reuses it for every image of that camera.
:class:`Distorter` is the inverse resampling, used by the synthetic writers to make raw images.
"""

from __future__ import annotations

import numpy as np
import torch
from kornia.geometry.calibration import distort_points, undistort_points
from kornia.geometry.grid import create_meshgrid
from kornia.geometry.transform import remap

from lidarssl.errors import DataError

#: Coefficient counts of the distortion vectors OpenCV (and kornia) accept.
DISTORTION_SIZES = (4, 5, 8, 12, 14)


def check_distortion(dist: object, source: str) -> np.ndarray:
    """``dist`` as a float64 vector of one of OpenCV's lengths, else a DataError naming ``source``."""
    try:
        out = np.asarray(dist, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise DataError(f"{source}: distortion coefficients must be numbers ({e})") from e
    if out.size not in DISTORTION_SIZES or not np.all(np.isfinite(out)):
        raise DataError(f"{source}: distortion must be {' / '.join(map(str, DISTORTION_SIZES))} finite numbers "
                        f"(k1, k2, p1, p2[, k3, ...]), got {out.tolist()}")
    return out


def _pixel_grid(height: int, width: int) -> torch.Tensor:
    """(H * W, 2) float64 pixel coordinates (x, y), row-major, centres at integers."""
    return create_meshgrid(height, width, normalized_coordinates=False, dtype=torch.float64).reshape(-1, 2)


def _resample(image: np.ndarray, xy: torch.Tensor) -> np.ndarray:
    """``image`` (H, W, 3) uint8 sampled bilinearly at the (H * W, 2) pixel coordinates ``xy`` (zeros outside)."""
    h, w = image.shape[:2]
    src = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1)[None]  # a copy: decoded images are read-only
    map_x = xy[:, 0].reshape(1, h, w).to(torch.float32)
    map_y = xy[:, 1].reshape(1, h, w).to(torch.float32)
    out = remap(src, map_x, map_y, align_corners=True)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


class Undistorter:
    """Resamples the raw images of one camera into undistorted images with the same intrinsics ``K``.

    Args:
        K: (3, 3) intrinsics of the raw image.
        dist: OpenCV distortion coefficients (4, 5, 8, 12 or 14 of them).
        size: ``(width, height)`` of the camera's images.
    """

    def __init__(self, K: np.ndarray, dist: np.ndarray, size: tuple[int, int]) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.identity = not np.any(dist)
        self._source: torch.Tensor | None = None
        if not self.identity:
            w, h = self.size
            K_t = torch.as_tensor(np.asarray(K, dtype=np.float64))
            self._source = distort_points(_pixel_grid(h, w), K_t, torch.as_tensor(dist, dtype=torch.float64))

    def __call__(self, image: np.ndarray, source: str = "<memory>") -> np.ndarray:
        """The undistorted (H, W, 3) uint8 image of a raw one of this camera's size."""
        if (image.shape[1], image.shape[0]) != self.size:
            raise DataError(f"{source}: image is {image.shape[1]}x{image.shape[0]}, but its camera's undistortion "
                            f"map was built for {self.size[0]}x{self.size[1]}")
        if self.identity:
            return image
        return _resample(image, self._source)


class Distorter:
    """Resamples ideal pinhole images of one camera into the raw images a lens with distortion ``dist`` takes.

    Pixel ``p`` of the raw image takes the pinhole image at ``undistort(p)``, found by kornia's fixed-point
    iteration (as OpenCV's ``undistortPoints``); :class:`Undistorter` inverts it up to bilinear resampling.
    Arguments as :class:`Undistorter`'s.
    """

    def __init__(self, K: np.ndarray, dist: np.ndarray, size: tuple[int, int], iterations: int = 20) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.identity = not np.any(dist)
        self._source: torch.Tensor | None = None
        if not self.identity:
            w, h = self.size
            K_t = torch.as_tensor(np.asarray(K, dtype=np.float64))
            self._source = undistort_points(_pixel_grid(h, w), K_t, torch.as_tensor(dist, dtype=torch.float64),
                                            num_iters=iterations)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """The raw (H, W, 3) uint8 image of a pinhole one of this camera's size."""
        if (image.shape[1], image.shape[0]) != self.size:
            raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, the map {self.size[0]}x{self.size[1]}")
        return image if self.identity else _resample(image, self._source)


def distort_image(image: np.ndarray, K: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """The raw image a camera with distortion ``dist`` takes of the ideal pinhole ``image`` (same ``K``)."""
    return Distorter(K, dist, (image.shape[1], image.shape[0]))(image)
