"""Features and figures on the real samples: the nuScenes keyframe, PandaSet (both lidars) and SemanticKITTI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lidarssl.cli import main
from lidarssl.features import FeatureExtractor
from lidarssl.viz.views import FOOTER_PX, TITLE_PX

pytestmark = pytest.mark.real


def test_features_of_every_point_of_the_nuscenes_keyframe(nuscenes_keyframe, scalr_run: Path):
    extractor = FeatureExtractor(scalr_run / "backbone.safetensors", device="cpu")
    out = extractor(nuscenes_keyframe)
    assert out.features.shape == (34688, extractor.channels)
    own, kept = extractor.kept_features(nuscenes_keyframe)
    np.testing.assert_array_equal(kept, out.kept)
    np.testing.assert_allclose(out.features[kept], own.numpy(), rtol=1e-6, atol=1e-6)


def test_similarity_on_pandar64_pandargt_and_semantickitti(real_root: Path, scalr_run: Path, tmp_path: Path):
    out = tmp_path / "sim.png"
    pandaset = real_root / "pandaset"
    assert main(["viz", "similarity", str(pandaset), f"{pandaset},sensor=pandargt",
                 str(real_root / "semantic_kitti" / "dataset"), "--weights", str(scalr_run / "backbone.safetensors"),
                 "--class", "car", "--height", "120", "--out", str(out), "--device", "cpu"]) == 0
    image = np.asarray(Image.open(out).convert("RGB"))
    # PandaSet's 1920x1080 cameras are 213 px wide at 120 px; SemanticKITTI has none (its row is the view from above)
    assert image.shape == (3 * (TITLE_PX + 120) + FOOTER_PX, 120 + 213, 3)
    kitti_bev = image[3 * TITLE_PX + 240 : 3 * TITLE_PX + 360, :120].reshape(-1, 3)
    assert len(np.unique(kitti_bev, axis=0)) > 100


def test_pixels_and_viewer_on_pandaset(real_root: Path, scalr_run: Path, tmp_path: Path):
    pytest.importorskip("rerun", reason="rerun-sdk (the viz extra) is not installed")
    from rerun.chunk import RrdReader

    pandaset = str(real_root / "pandaset")
    png = tmp_path / "pix.png"
    assert main(["viz", "pixels", str(scalr_run), "--data", pandaset, "--class", "car", "--height", "90",
                 "--out", str(png), "--device", "cpu"]) == 0
    assert Image.open(png).size == (2 * 160, TITLE_PX + 90 + FOOTER_PX)
    rrd = tmp_path / "p.rrd"
    assert main(["view", pandaset, "--out", str(rrd)]) == 0
    resolutions = {c.entity_path: c.to_record_batch().column("Pinhole:resolution").to_pylist()
                   for c in RrdReader(rrd).stream() if "Pinhole:resolution" in c.to_record_batch().schema.names}
    assert len(resolutions) == 6 and all(r == [[[1920.0, 1080.0]]] for r in resolutions.values())
