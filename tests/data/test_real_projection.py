"""Projection of the real nuScenes keyframe into its 6 cameras, against the counts measured in shared/data/real."""

import json

import numpy as np
import pytest
from PIL import Image

from lidarssl.data.geometry import project, project_scan
from lidarssl.data.scan import CameraView, Scan

# Points with depth > 0.1 m inside each 1600x900 image, no occlusion test (shared/data/real/README.md, section 7).
MEASURED = {"CAM_FRONT": 3067, "CAM_FRONT_RIGHT": 3079, "CAM_FRONT_LEFT": 3704, "CAM_BACK": 4826,
            "CAM_BACK_LEFT": 4097, "CAM_BACK_RIGHT": 3379}


@pytest.fixture(scope="module")
def keyframe(real_root) -> Scan:
    root = real_root / "nuscenes"
    calib = json.loads((root / "calib" / "ca9a282c9e77460f8360f564131a8af5.json").read_text())
    raw = np.fromfile(root / calib["lidar"]["file"], np.float32).reshape(-1, 5)
    cams = [
        CameraView(name=name, image=np.asarray(Image.open(root / c["file"]).convert("RGB")),
                   K=np.array(c["camera_intrinsic"]), lidar_to_cam=np.array(c["lidar2cam"]),
                   timestamp=c["timestamp_us"] * 1e-6, source=str(root / c["file"]))
        for name, c in calib["cameras"].items()
    ]
    return Scan(points=raw[:, :3].copy(), intensity=raw[:, 3].copy(), ring=raw[:, 4].astype(np.int64),
                source=calib["lidar"]["file"], dataset="nuscenes", cameras=cams)


def test_points_per_camera_match_measured_counts(keyframe: Scan):
    projections = project_scan(keyframe, min_depth=0.1)
    counts = {cam.name: int(p.valid.sum()) for cam, p in zip(keyframe.cameras, projections)}
    assert counts == MEASURED
    in_any = np.any([p.valid for p in projections], axis=0)
    assert int(in_any.sum()) == 20206  # 58.3 % of 34 688, as measured


def test_occlusion_only_removes_points(keyframe: Scan):
    plain = project_scan(keyframe, min_depth=1.0)
    hidden = project_scan(keyframe, min_depth=1.0, occlusion=True)
    for p, h in zip(plain, hidden):
        assert not np.any(h.valid & ~p.valid)
    kept = sum(int(h.valid.sum()) for h in hidden)
    assert 0.5 * sum(int(p.valid.sum()) for p in plain) < kept < sum(int(p.valid.sum()) for p in plain)


def test_ego_motion_term_matters(keyframe: Scan):
    # CAM_FRONT_LEFT fired 43 ms before the lidar while the car drove ~9 m/s: its extrinsic carries ~0.4 m
    # of motion, so dropping that term moves near points by many pixels.
    cam = keyframe.camera("CAM_FRONT_LEFT")
    shifted = cam.lidar_to_cam.copy()
    shifted[:3, 3] += cam.lidar_to_cam[:3, :3] @ np.array([0.0, 0.4, 0.0])
    a = project(keyframe.points, cam.K, cam.lidar_to_cam, cam.hw)
    b = project(keyframe.points, cam.K, shifted, cam.hw)
    both = a.valid & b.valid & (a.depth < 10)
    assert np.median(np.linalg.norm(a.uv[both] - b.uv[both], axis=1)) > 10
