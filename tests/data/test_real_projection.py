"""Projection of the real nuScenes keyframe into its 6 cameras, against the counts measured in shared/data/real."""

import numpy as np

from lidarssl.data.geometry import project, project_scan
from lidarssl.data.scan import Scan

# Points with depth > 0.1 m inside each 1600x900 image, no occlusion test (shared/data/real/README.md, section 7).
MEASURED = {"CAM_FRONT": 3067, "CAM_FRONT_RIGHT": 3079, "CAM_FRONT_LEFT": 3704, "CAM_BACK": 4826,
            "CAM_BACK_LEFT": 4097, "CAM_BACK_RIGHT": 3379}


def test_points_per_camera_match_measured_counts(nuscenes_keyframe: Scan):
    keyframe = nuscenes_keyframe
    projections = project_scan(keyframe, min_depth=0.1)
    counts = {cam.name: int(p.valid.sum()) for cam, p in zip(keyframe.cameras, projections)}
    assert counts == MEASURED
    in_any = np.any([p.valid for p in projections], axis=0)
    assert int(in_any.sum()) == 20206  # 58.3 % of 34 688, as measured


def test_occlusion_only_removes_points(nuscenes_keyframe: Scan):
    keyframe = nuscenes_keyframe
    plain = project_scan(keyframe, min_depth=1.0)
    hidden = project_scan(keyframe, min_depth=1.0, occlusion=True)
    for p, h in zip(plain, hidden):
        assert not np.any(h.valid & ~p.valid)
    kept = sum(int(h.valid.sum()) for h in hidden)
    assert 0.5 * sum(int(p.valid.sum()) for p in plain) < kept < sum(int(p.valid.sum()) for p in plain)


def test_ego_motion_term_matters(nuscenes_keyframe: Scan):
    keyframe = nuscenes_keyframe
    # CAM_FRONT_LEFT fired 43 ms before the lidar while the car drove ~9 m/s: its extrinsic carries ~0.4 m
    # of motion, so dropping that term moves near points by many pixels.
    cam = keyframe.camera("CAM_FRONT_LEFT")
    shifted = cam.lidar_to_cam.copy()
    shifted[:3, 3] += cam.lidar_to_cam[:3, :3] @ np.array([0.0, 0.4, 0.0])
    a = project(keyframe.points, cam.K, cam.lidar_to_cam, cam.hw)
    b = project(keyframe.points, cam.K, shifted, cam.hw)
    both = a.valid & b.valid & (a.depth < 10)
    assert np.median(np.linalg.norm(a.uv[both] - b.uv[both], axis=1)) > 10
