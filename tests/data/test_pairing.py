"""Point-pixel pairs stay valid through every augmentation (real nuScenes keyframe)."""

import numpy as np
import pytest

from lidarssl.data.geometry import project, project_scan
from lidarssl.data.pairing import PairingConfig, keeps_pairs, pair_views
from lidarssl.data.scan import Scan
from lidarssl.data.transforms import PointAugment, apply_affine, drop_cuboid
from lidarssl.errors import ConfigError, DataError

SETTINGS = {
    "plain": {},
    "slidr_crop_flip": {"crop_size": (224, 416), "flip": 1.0},
    "slidr_crop": {"crop_size": (224, 416), "flip": 0.0},
    "scalr_resize_one_camera": {"resize": (224, 448), "cameras": "one"},
    "occlusion": {"occlusion": True, "flip": 0.5, "crop_size": (224, 416)},
}


def _reprojected_pixels(views, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of each paired point projected through its view's augmented K and extrinsic."""
    T = views.lidar_to_cam[views.view]
    p = points[views.point]
    cam = np.einsum("pij,pj->pi", T[:, :3, :3], p) + T[:, :3, 3]
    hom = np.einsum("pij,pj->pi", views.K[views.view], cam)
    uv = hom[:, :2] / hom[:, 2:]
    return uv, cam[:, 2]


@pytest.mark.parametrize("name", SETTINGS)
def test_paired_points_project_onto_paired_pixels_after_augmentation(nuscenes_keyframe: Scan, name: str):
    scan = nuscenes_keyframe
    cfg = PairingConfig(**SETTINGS[name])
    rng = np.random.default_rng(3)
    A = PointAugment(scale=(0.9, 1.1)).matrix(rng)
    A[:3, 3] = [1.5, -2.0, 0.1]  # a translation too (NCLR's perturbation)
    views = pair_views(scan, cfg, A, rng)
    moved = apply_affine(A, scan.points)
    uv, depth = _reprojected_pixels(views, moved)
    assert len(views.point) > 500
    assert np.all(depth > 0)
    np.testing.assert_allclose(uv, views.uv, atol=1e-3)
    rc = views.pixels
    H, W = views.images.shape[1:3]
    assert rc[:, 0].min() >= 0 and rc[:, 0].max() < H and rc[:, 1].min() >= 0 and rc[:, 1].max() < W
    if cfg.crop_size:
        assert views.images.shape[1:3] == cfg.crop_size
    if cfg.cameras == "one":
        assert len(views.names) == 1 and views.images.shape[1:3] == (224, 448)


def test_flip_mirrors_the_image_and_the_pixels(nuscenes_keyframe: Scan):
    scan = nuscenes_keyframe
    plain = pair_views(scan, PairingConfig(resize=(90, 160)))
    flipped = pair_views(scan, PairingConfig(resize=(90, 160), flip=1.0), rng=np.random.default_rng(0))
    np.testing.assert_array_equal(flipped.images, plain.images[:, :, ::-1])
    np.testing.assert_array_equal(flipped.point, plain.point)
    np.testing.assert_allclose(flipped.uv[:, 0], 160 - plain.uv[:, 0])
    # colour under each pair is unchanged by the flip (same scene pixel)
    a = plain.images[plain.view, *plain.pixels.T]
    b = flipped.images[flipped.view, *flipped.pixels.T]
    assert np.mean(np.all(a == b, axis=1)) > 0.99


def test_pairs_without_augmentation_match_the_measured_counts(nuscenes_keyframe: Scan):
    views = pair_views(nuscenes_keyframe, PairingConfig(min_depth=0.1))
    counts = np.bincount(views.view, minlength=6)
    # shared/data/real/README.md: points with depth > 0.1 m inside each image
    assert dict(zip(views.names, counts.tolist())) == {"CAM_FRONT": 3067, "CAM_FRONT_RIGHT": 3079,
                                                       "CAM_FRONT_LEFT": 3704, "CAM_BACK": 4826,
                                                       "CAM_BACK_LEFT": 4097, "CAM_BACK_RIGHT": 3379}


def test_superpixels_follow_the_image_augmentation(nuscenes_keyframe: Scan):
    scan = nuscenes_keyframe
    # a "superpixel" map that encodes each pixel's column bucket: after the same crop and flip, the id under
    # each pair must be the bucket of the pair's original column
    maps = []
    for cam in scan.cameras:
        H, W = cam.hw
        maps.append(np.broadcast_to((np.arange(W) // 40).astype(np.uint16), (H, W)).copy())
    rng = np.random.default_rng(5)
    cfg = PairingConfig(crop_size=(224, 416), flip=0.5)
    views = pair_views(scan, cfg, rng=rng, superpixels=maps)
    plain = pair_views(scan, PairingConfig())
    original_col = {}
    for p, v, u in zip(plain.point, plain.view, plain.uv[:, 0]):
        original_col[(int(v), int(p))] = u
    ids = views.superpixels[views.view, *views.pixels.T]
    expected = np.array([original_col[(int(v), int(p))] // 40 for p, v in zip(views.point, views.view)])
    assert np.mean(ids == expected) > 0.97  # nearest resampling can move a boundary by one output pixel
    assert views.superpixels.dtype == np.uint16


def test_bad_settings_and_scans():
    with pytest.raises(ConfigError, match="crop_size and resize are exclusive"):
        PairingConfig(crop_size=(224, 416), resize=(224, 448))
    scan = Scan(points=np.zeros((3, 3), np.float32), intensity=np.zeros(3, np.float32), source="x.bin")
    with pytest.raises(DataError, match="x.bin: scan has no camera views"):
        pair_views(scan, PairingConfig())


def test_drop_cuboid_removes_a_box_around_a_point():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-10, 10, (5000, 3)).astype(np.float32)
    keep = drop_cuboid(pts, np.random.default_rng(1), max_side=0.5)
    assert 0 < (~keep).sum() < len(pts) * 0.2
    dropped = pts[~keep]
    lo, hi = dropped.min(0), dropped.max(0)
    inside_box = np.all((pts >= lo) & (pts <= hi), axis=1)
    assert not np.any(inside_box & keep)  # the dropped points are exactly those inside one box


def test_keeps_pairs_counts_points_seen_by_every_camera(nuscenes_keyframe: Scan):
    keep = np.ones(len(nuscenes_keyframe), bool)
    fewest = min(int(p.valid.sum()) for p in project_scan(nuscenes_keyframe, min_depth=1.0))
    assert keeps_pairs(nuscenes_keyframe, keep, fewest)
    assert not keeps_pairs(nuscenes_keyframe, keep, fewest + 1)
    front = nuscenes_keyframe.cameras[0]
    seen = project(nuscenes_keyframe.points, front.K, front.lidar_to_cam, front.hw).valid
    assert not keeps_pairs(nuscenes_keyframe, keep & ~seen, 1)  # a drop that blinds one camera is refused
