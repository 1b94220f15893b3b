"""Point-pixel pairs for image-to-lidar training, kept valid through the augmentations.

Points are paired with pixels in the scan's own geometry (:func:`~lidarssl.data.geometry.project`), then every
augmentation moves the pairs together with what it changes:

* a point-cloud augmentation ``A`` (rotation, flips, scaling, translation; a (4, 4) affine acting on the points)
  is folded into each view's extrinsic, ``lidar_to_cam @ inv(A)``, so the augmented points project where the
  original ones did;
* a per-image resized crop (SLidR: 224x416, random area and aspect) or a whole-image resize (ScaLR) maps the
  continuous pixel coordinates by ``(uv - corner) * scale`` and the intrinsics by the same affine; the image
  and its superpixels are cropped and resized together (bilinear and nearest);
* a horizontal flip maps ``u -> W - u`` and the intrinsics with it (fx turns negative: the camera is mirrored).

So after any augmentation each paired point projects, through the view's ``K`` and ``lidar_to_cam``, onto its
paired pixel; ``tests/data/test_pairing.py`` checks this on the real nuScenes sample. Pixel ``(row, col)``
covers ``[col, col + 1) x [row, row + 1)`` in continuous coordinates, as everywhere in lidarssl.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image
from pydantic import Field

from lidarssl.batch import Batch, Sample, concat_rows
from lidarssl.data.geometry import occluded, project
from lidarssl.data.scan import Scan
from lidarssl.errors import ConfigError, DataError
from lidarssl.schema import Schema

if TYPE_CHECKING:
    from lidarssl.data.loader import AugmentedScan

__all__ = ["PairingConfig", "PairedViews", "PixelMap", "PairBuilder", "pair_views", "keeps_pairs"]


class PairingConfig(Schema):
    """Which pixels each point is paired with, and how images are augmented.

    ``crop_size`` (SLidR) and ``resize`` (ScaLR) are exclusive; with neither, images keep their size (all
    cameras of a scan must then share one size to be batched).
    """

    cameras: Literal["all", "one"] = Field("all", description="pair with every camera, or one drawn per scan")
    min_depth: float = Field(1.0, ge=0, description="points at this camera depth or nearer are not paired (m)")
    occlusion: bool = Field(False, description="drop points hidden behind a nearer point (z-buffer test)")
    occlusion_window: int = Field(5, ge=1, description="z-buffer neighbourhood in pixels (odd)")
    crop_size: tuple[int, int] | None = Field(None, description="[H, W] of SLidR's random resized crop")
    crop_area: tuple[float, float] = Field((0.3, 1.0), description="range of the crop's share of the image area")
    crop_aspect: tuple[float, float] = Field((14 / 9, 17 / 9), description="range of the crop's width / height")
    crop_min_pairs: int = Field(1024, ge=0, description="a crop is redrawn (up to 10 times) until it keeps this "
                                "many pairs or crop_keep_fraction of them")
    crop_keep_fraction: float = Field(0.75, ge=0, le=1)
    resize: tuple[int, int] | None = Field(None, description="[H, W] every whole image is resized to (ScaLR)")
    flip: float = Field(0.0, ge=0, le=1, description="probability of a horizontal flip of each image")

    def model_post_init(self, _context: object) -> None:
        if self.crop_size is not None and self.resize is not None:
            raise ConfigError("pairing: crop_size and resize are exclusive (a crop is already resized); set one")
        if self.occlusion_window % 2 == 0:
            raise ConfigError(f"pairing.occlusion_window must be odd, got {self.occlusion_window}")

    @property
    def augments_images(self) -> bool:
        """Whether image content depends on random draws (then image features cannot be cached)."""
        return self.crop_size is not None or self.flip > 0


@dataclass
class PairedViews:
    """The camera views of one scan after augmentation, and the point-pixel pairs between them.

    Attributes:
        names: camera name of each view.
        images: (V, H, W, 3) uint8 RGB, augmented.
        K: (V, 3, 3) intrinsics of the augmented images.
        lidar_to_cam: (V, 4, 4) transform from the **augmented** points to each camera (affine when the
            augmentation scales).
        point: (P,) int64 index of each paired point in the scan.
        view: (P,) int64 view of each pair.
        uv: (P, 2) float64 continuous pixel coordinates (u = column, v = row) in the augmented image.
        maps: per-pixel maps augmented with the images, (V, H, W) each, by name: ``superpixels`` (uint16 segment
            ids), ``pixel_classes`` (per-pixel classes, the oracle teacher's input), any other a builder carries.
    """

    names: list[str]
    images: np.ndarray
    K: np.ndarray
    lidar_to_cam: np.ndarray
    point: np.ndarray
    view: np.ndarray
    uv: np.ndarray
    maps: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def superpixels(self) -> np.ndarray | None:
        """(V, H, W) uint16 segment ids of the augmented images, when given."""
        return self.maps.get("superpixels")

    @property
    def classes(self) -> np.ndarray | None:
        """(V, H, W) per-pixel classes of the augmented images, when given (the oracle teacher)."""
        return self.maps.get("pixel_classes")

    @property
    def pixels(self) -> np.ndarray:
        """(P, 2) int64 ``(row, col)`` of each pair's pixel."""
        return np.floor(self.uv[:, ::-1]).astype(np.int64)


def _crop_box(cfg: PairingConfig, hw: tuple[int, int], uv: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float, float]:
    """``(x0, y0, w, h)`` of a random resized crop keeping enough pairs (SLidR's rule)."""
    H, W = hw
    box = (0.0, 0.0, float(W), float(H))
    for _ in range(10):
        area = rng.uniform(*cfg.crop_area) * H * W
        aspect = np.exp(rng.uniform(*np.log(cfg.crop_aspect)))
        w, h = min(W, np.sqrt(area * aspect)), min(H, np.sqrt(area / aspect))
        x0, y0 = rng.uniform(0, W - w), rng.uniform(0, H - h)
        box = (x0, y0, w, h)
        inside = int(np.count_nonzero((uv[:, 0] >= x0) & (uv[:, 0] < x0 + w) & (uv[:, 1] >= y0) & (uv[:, 1] < y0 + h)))
        if inside >= cfg.crop_min_pairs or inside >= cfg.crop_keep_fraction * len(uv):
            break
    return box


def _resample(array: np.ndarray, box: tuple[float, float, float, float], size_hw: tuple[int, int], nearest: bool) -> np.ndarray:
    """``array``'s region ``box`` (x0, y0, w, h) resized to ``size_hw`` (PIL: pixel i spans [i, i + 1))."""
    x0, y0, w, h = box
    H, W = size_hw
    if (x0, y0, w, h) == (0.0, 0.0, float(array.shape[1]), float(array.shape[0])) and (H, W) == array.shape[:2]:
        return array
    if nearest:  # PIL's 16-bit mode keeps superpixel ids exactly
        img = Image.fromarray(array.astype(np.uint16))
        out = img.resize((W, H), Image.Resampling.NEAREST, box=(x0, y0, x0 + w, y0 + h))
        return np.asarray(out, dtype=np.uint16)
    img = Image.fromarray(array)
    return np.asarray(img.resize((W, H), Image.Resampling.BILINEAR, box=(x0, y0, x0 + w, y0 + h)))


def pair_views(
    scan: Scan,
    config: PairingConfig,
    A: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
    superpixels: list[np.ndarray] | None = None,
    camera: int | None = None,
    classes: list[np.ndarray] | None = None,
    maps: Mapping[str, Sequence[np.ndarray]] | None = None,
) -> PairedViews:
    """Pair the scan's points with pixels of its cameras and augment the images.

    Args:
        scan: the scan, in its own (unaugmented) geometry.
        config: pairing and image augmentation settings.
        A: (4, 4) affine point augmentation already applied to the points the backbone sees (identity if None).
        rng: random generator for the camera choice, crops and flips; ``None``: no random image augmentation
            (the first camera when ``cameras: one``).
        superpixels: one (H, W) id map per camera of ``scan.cameras``, augmented with the images.
        camera: pair with this camera only (the one whose frustum an input crop kept), whatever ``cameras``.
        classes: one (H, W) class map per camera of ``scan.cameras``, augmented with the images.
        maps: per-pixel maps by name, each one (H, W) array per camera of ``scan.cameras``, cropped, resized
            (nearest) and flipped with the images; ``superpixels`` and ``classes`` are two of them
            (``superpixels`` and ``pixel_classes``).

    Raises:
        DataError: the scan has no camera, or cameras of different sizes without crop or resize.
    """
    if not scan.cameras:
        raise DataError(f"{scan.source}: scan has no camera views; image-to-lidar pairing needs cameras")
    maps = {**(maps or {}), **({"superpixels": superpixels} if superpixels is not None else {}),
            **({"pixel_classes": classes} if classes is not None else {})}
    for key, per_camera in maps.items():
        if len(per_camera) != len(scan.cameras):
            what = "superpixel" if key == "superpixels" else f"'{key}'"
            raise DataError(f"{scan.source}: {len(per_camera)} {what} maps for {len(scan.cameras)} cameras")
    A = np.eye(4) if A is None else np.asarray(A, dtype=np.float64)
    A_inv = np.linalg.inv(A)
    chosen = range(len(scan.cameras))
    if camera is not None:
        chosen = [camera]
    elif config.cameras == "one":
        chosen = [int(rng.integers(len(scan.cameras))) if rng is not None else 0]
    names, images, Ks, extrinsics, points, views, uvs = [], [], [], [], [], [], []
    out_maps: dict[str, list[np.ndarray]] = {key: [] for key in maps}
    for v, c in enumerate(chosen):
        cam = scan.cameras[c]
        proj = project(scan.points, cam.K, cam.lidar_to_cam, cam.hw, config.min_depth)
        valid = proj.valid
        if config.occlusion:
            valid = valid & ~occluded(proj.uv, proj.depth, valid, cam.hw, config.occlusion_window)
        idx = np.flatnonzero(valid)
        uv = proj.uv[idx]
        H, W = cam.hw
        out_hw = config.crop_size or config.resize or (H, W)
        box = (0.0, 0.0, float(W), float(H))
        if config.crop_size is not None and rng is not None:
            box = _crop_box(config, cam.hw, uv, rng)
        x0, y0, w, h = box
        scale = np.array([out_hw[1] / w, out_hw[0] / h])
        uv = (uv - [x0, y0]) * scale
        # intrinsics of the cropped and resized image: the same affine map of pixel coordinates
        S = np.array([[scale[0], 0, -x0 * scale[0]], [0, scale[1], -y0 * scale[1]], [0, 0, 1]])
        K = S @ cam.K
        image = _resample(cam.image, box, out_hw, nearest=False)
        pixel_maps = {key: _resample(per_camera[c], box, out_hw, nearest=True) for key, per_camera in maps.items()}
        if rng is not None and config.flip > 0 and rng.uniform() < config.flip:
            uv[:, 0] = out_hw[1] - uv[:, 0]
            K = np.array([[-1, 0, out_hw[1]], [0, 1, 0], [0, 0, 1]]) @ K
            image = image[:, ::-1]
            pixel_maps = {key: m[:, ::-1] for key, m in pixel_maps.items()}
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < out_hw[1]) & (uv[:, 1] >= 0) & (uv[:, 1] < out_hw[0])
        names.append(cam.name)
        images.append(np.ascontiguousarray(image))
        Ks.append(K)
        extrinsics.append(cam.lidar_to_cam @ A_inv)
        points.append(idx[inside])
        views.append(np.full(int(inside.sum()), v, np.int64))
        uvs.append(uv[inside])
        for key, m in pixel_maps.items():
            out_maps[key].append(np.ascontiguousarray(m))
    sizes = {im.shape for im in images}
    if len(sizes) > 1:
        raise DataError(f"{scan.source}: cameras have different image sizes {sorted(sizes)}; set pairing.resize "
                        "or pairing.crop_size so the views can be batched")
    return PairedViews(names=names, images=np.stack(images), K=np.stack(Ks), lidar_to_cam=np.stack(extrinsics),
                       point=np.concatenate(points).astype(np.int64), view=np.concatenate(views),
                       uv=np.concatenate(uvs), maps={key: np.stack(m) for key, m in out_maps.items()})


def keeps_pairs(scan: Scan, keep: np.ndarray, min_pairs: int, min_depth: float = 1.0) -> bool:
    """Whether every camera of ``scan`` still sees at least ``min_pairs`` of the points in the ``keep`` mask.

    SLidR undoes a DropCuboids that leaves any image with fewer than 1024 pairs.
    """
    points = scan.points[keep]
    return all(np.count_nonzero(project(points, cam.K, cam.lidar_to_cam, cam.hw, min_depth).valid) >= min_pairs
               for cam in scan.cameras)


@dataclass(frozen=True)
class PixelMap:
    """A per-pixel map that travels with the camera images through pairing: ``source.get(scan, camera)`` gives
    one (H, W) array per camera, cropped, resized (nearest) and flipped with the images. ``key`` names it in the
    sample and the batch (a row of the table in :mod:`lidarssl.batch`), ``dtype`` is its type in the sample
    (uint16 maps become int32 in the batch: torch has no uint16 arithmetic)."""

    key: str
    source: Any
    dtype: type = np.uint16


class PairBuilder:
    """Point-pixel pairs, augmented images and, when asked, per-pixel maps (superpixels, class images, ...) or
    cached teacher features.

    Adds to each sample ``images`` (V, H, W, 3) uint8, ``K`` (V, 3, 3), ``lidar_to_cam`` (V, 4, 4) from the
    augmented points, ``pair_row`` (P,) feature row of each paired point (pairs of points the backbone dropped
    are left out), ``pair_view`` (P,) and ``pair_uv`` (P, 2); optionally ``superpixels`` (V, H, W) and
    ``teacher_maps`` (V, C, h, w) or ``pixel_classes`` (V, H, W). In the batch, rows and views are offset to index the whole batch, and
    ``view_batch`` (sum V,) says which scan each view belongs to.

    Args:
        config: pairing settings.
        superpixels: a superpixel source with ``get(scan, camera_index) -> (H, W) uint16`` (cached or computed).
        teacher_cache: a teacher feature cache (:mod:`lidarssl.methods.teacher_cache`); only for images that are
            not randomly augmented (the cache holds the features of the deterministic image).
        classes: a class-image source with ``get(scan, camera_index) -> (H, W) uint8`` (the oracle teacher's input).
        maps: further per-pixel maps (:class:`PixelMap`); ``superpixels`` and ``classes`` are two of them.
    """

    def __init__(self, config: PairingConfig, superpixels=None, teacher_cache=None, classes=None,
                 maps: Sequence[PixelMap] = ()) -> None:
        if teacher_cache is not None and config.augments_images:
            raise DataError("cached teacher features need deterministic images: set pairing.crop_size: null and "
                            "pairing.flip: 0, or compute teacher features online (no teacher cache)")
        self.config, self.teacher_cache = config, teacher_cache
        self.maps = [*([PixelMap("superpixels", superpixels, np.uint16)] if superpixels is not None else []),
                     *maps, *([PixelMap("pixel_classes", classes, np.uint8)] if classes is not None else [])]

    def __call__(self, view: AugmentedScan, rng: np.random.Generator | None) -> Sample:
        scan = view.scan
        maps = {m.key: [m.source.get(scan, c) for c in range(len(scan.cameras))] for m in self.maps}
        views = pair_views(scan, self.config, view.A, rng, camera=view.camera, maps=maps)
        rows = view.row_of_point[views.point]
        keep = rows >= 0
        sample = {"images": views.images, "K": views.K.astype(np.float32),
                  "lidar_to_cam": views.lidar_to_cam.astype(np.float32), "pair_row": rows[keep],
                  "pair_view": views.view[keep], "pair_uv": views.uv[keep].astype(np.float32)}
        for m in self.maps:
            sample[m.key] = views.maps[m.key].astype(m.dtype, copy=False)
        if self.teacher_cache is not None:
            sample["teacher_maps"] = np.stack([self.teacher_cache.load_for(scan, name) for name in views.names])
        return sample

    def collate(self, samples: Sequence[Sample], batch: Batch) -> None:
        import torch  # imported on use: `lidarssl pretrain --help` reads PairingConfig without loading torch

        n_views = np.array([len(s["images"]) for s in samples])
        view_offsets = np.concatenate([[0], np.cumsum(n_views)[:-1]])
        batch["images"] = torch.from_numpy(np.concatenate([s["images"] for s in samples]))
        batch["K"] = concat_rows(samples, "K")
        batch["lidar_to_cam"] = concat_rows(samples, "lidar_to_cam")
        batch["view_batch"] = torch.from_numpy(np.repeat(np.arange(len(samples)), n_views))
        batch["pair_row"] = concat_rows(samples, "pair_row", batch["offsets"].numpy())
        batch["pair_view"] = concat_rows(samples, "pair_view", view_offsets)
        batch["pair_uv"] = concat_rows(samples, "pair_uv")
        for m in self.maps:
            maps = np.concatenate([s[m.key] for s in samples])
            batch[m.key] = torch.from_numpy(maps.astype(np.int32) if maps.dtype == np.uint16 else maps)
        if "teacher_maps" in samples[0]:
            batch["teacher_maps"] = torch.from_numpy(np.concatenate([s["teacher_maps"] for s in samples]))


class ClassImageSource:
    """The per-pixel class images of a synthetic world's cameras, as training ids (the oracle teacher's input).

    ``lidarssl generate`` writes ``class_images/<CAMERA>/<stem>.png`` beside ``cameras/<CAMERA>/<stem>.jpg``
    (raw nuScenes-lidarseg ids, 255 = sky); :meth:`get` maps them to training ids, every unlabelled pixel (sky
    included) to ``num_classes``. Real datasets have no such images.
    """

    def __init__(self) -> None:
        from lidarssl.data.labels import load_class_map

        self.class_map = load_class_map("nuscenes")
        table = np.full(256, self.class_map.num_classes, np.uint8)
        known = self.class_map.lookup_table
        table[: len(known)] = np.where(known == self.class_map.ignore_index, self.class_map.num_classes, known)
        self.table = table

    def path(self, scan: Scan, camera: int) -> Path:
        image = Path(scan.cameras[camera].source)
        return image.parents[2] / "class_images" / image.parent.name / f"{image.stem}.png"

    def get(self, scan: Scan, camera: int) -> np.ndarray:
        path = self.path(scan, camera)
        if scan.dataset != "synthetic" or not path.is_file():
            raise DataError(f"{scan.source}: teacher 'oracle' needs the per-pixel class images of a synthetic world "
                            f"written by `lidarssl generate` ({path} not found); real datasets have none: use an "
                            "image network as teacher")
        with Image.open(path) as im:
            return self.table[np.asarray(im)]
