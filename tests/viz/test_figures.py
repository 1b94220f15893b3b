"""`lidarssl viz similarity | pca | pixels | predictions`: figures of the expected size with real content, and the
one-line errors of bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from lidarssl.cli import main
from lidarssl.data.datasets import open_dataset
from lidarssl.data.geometry import project
from lidarssl.data.scan import IGNORE_INDEX
from lidarssl.errors import ConfigError, DataError
from lidarssl.features import extract_features
from lidarssl.viz.pca import pca_colours, pca_panel, save_pca
from lidarssl.viz.predictions import CORRECT_COLOUR, ERROR_COLOUR, _error_colours
from lidarssl.viz.query import select_query
from lidarssl.viz.similarity import CMAP, save_similarity, similarity_panel
from lidarssl.viz.views import FOOTER_PX, TITLE_PX, figure_size


@pytest.fixture(scope="module")
def val(camera_world: Path):
    return open_dataset(camera_world, split="val")


@pytest.fixture(scope="module")
def weights(scalr_run: Path) -> Path:
    return scalr_run / "backbone.safetensors"


def _image(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _assert_rich(region: np.ndarray, colours: int = 100) -> None:
    """Not a blank or flat picture: many distinct colours and real contrast."""
    flat = region.reshape(-1, 3)
    assert len(np.unique(flat, axis=0)) >= colours
    assert flat.astype(np.float32).std() > 10


def test_similarity_figure_size_and_content(val, weights: Path, tmp_path: Path):
    scans = [val[0], val[1]]
    panels = []
    for scan in scans:
        feats = extract_features(weights, scan, device="cpu")
        q = select_query(scan, cls="car", class_names=val.class_map.classes)
        panels.append(similarity_panel(scan, feats, q, f"frame {scan.frame_id}"))
    out = save_similarity(panels, tmp_path / "sim.png", height=120)
    image = _image(out)
    # 160x90 cameras at 120 px: 213 px wide beside a 120 px bird's-eye view; two rows, a title band each, a footer
    assert figure_size([p.cameras for p in panels], 120) == (333, 2 * (TITLE_PX + 120) + FOOTER_PX)
    assert image.shape == (2 * (TITLE_PX + 120) + FOOTER_PX, 333, 3)
    _assert_rich(image[TITLE_PX : TITLE_PX + 120, :120])  # first row's bird's-eye view
    _assert_rich(image[TITLE_PX : TITLE_PX + 120, 120:])  # its camera
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_query_point_gets_the_top_colour_and_is_drawn_last(val, weights: Path):
    import matplotlib

    scan = val[0]
    panel = similarity_panel(scan, extract_features(weights, scan, device="cpu"), 5, "t")
    top = matplotlib.colormaps[CMAP](1.0)[:3]
    np.testing.assert_allclose(panel.colours[5], top)
    np.testing.assert_allclose(panel.colours[panel.order[-1]], top)  # the most similar points are drawn on top
    assert panel.query == 5


def test_class_query_picks_a_point_of_that_class_seen_by_a_camera(val):
    scan = val[0]
    names = val.class_map.classes
    q = select_query(scan, cls="car", class_names=names)
    assert names[scan.labels[q]] == "car"
    assert any(project(scan.points[q : q + 1], c.K, c.lidar_to_cam, c.hw, 1.0).valid[0] for c in scan.cameras)
    with pytest.raises(ConfigError, match="class 'carr' is not a class of synthetic; classes: barrier, bicycle"):
        select_query(scan, cls="carr", class_names=names)
    with pytest.raises(ConfigError, match="exactly one of --point INDEX, --xyz X,Y,Z or --class NAME"):
        select_query(scan, point=1, cls="car", class_names=names)
    assert select_query(scan, xyz=scan.points[17].tolist()) == 17


def test_similarity_command_datasets_and_weights_side_by_side(camera_world: Path, weights: Path, seg_run: Path,
                                                              tmp_path: Path, capsys):
    out = tmp_path / "sim.png"
    assert main(["viz", "similarity", f"{camera_world},split=val", f"{camera_world},split=train,frame=1",
                 "--weights", str(weights), str(seg_run / "backbone.safetensors"), "--class", "car",
                 "--height", "100", "--out", str(out), "--device", "cpu"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert _image(out).shape[0] == 4 * (TITLE_PX + 100) + FOOTER_PX  # 2 datasets x 2 weights


def test_query_point_out_of_range_is_one_line(camera_world: Path, weights: Path, val, tmp_path: Path, capsys):
    scan = val[0]
    n = len(scan)
    assert main(["viz", "similarity", f"{camera_world},split=val", "--weights", str(weights), "--point", str(n),
                 "--out", str(tmp_path / "s.png"), "--device", "cpu"]) == 2
    assert capsys.readouterr().err == (f"lidarssl viz: error: query point {n} is out of range: {scan.source} has "
                                       f"{n} points (0..{n - 1})\n")
    assert not (tmp_path / "s.png").exists()


def test_pca_colours_separate_feature_clusters():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.05, (200, 16)) + 1.0
    b = rng.normal(0, 0.05, (200, 16)) - 1.0
    colours = pca_colours(np.vstack([a, b]))
    assert colours.shape == (400, 3) and colours.min() >= 0 and colours.max() <= 1
    gap = np.linalg.norm(colours[:200].mean(0) - colours[200:].mean(0))
    spread = max(colours[:200].std(0).max(), colours[200:].std(0).max())
    assert gap > 0.8 and gap > 3 * spread


def test_pca_figure(val, weights: Path, tmp_path: Path):
    scan = val[1]
    panel = pca_panel(scan, extract_features(weights, scan, device="cpu"), "pca", cameras="all")
    out = save_pca([panel], tmp_path / "pca.png", height=180)
    image = _image(out)
    # six cameras on two lines of 90 px, 3 columns of 160 px, beside a 180 px bird's-eye view
    assert image.shape == (TITLE_PX + 180 + FOOTER_PX, 180 + 3 * 160, 3)
    _assert_rich(image[TITLE_PX : TITLE_PX + 180, :180])
    small = save_pca([panel], tmp_path / "small.png", height=180, compact=True)
    with Image.open(small) as im:
        assert im.mode == "P" and im.size == (image.shape[1], image.shape[0])
    assert small.stat().st_size < out.stat().st_size
    _assert_rich(_image(small)[TITLE_PX : TITLE_PX + 180, :180], colours=40)  # 256 colours in all


def test_error_colours_mark_wrong_labelled_points():
    labels = np.array([0, 1, 2, IGNORE_INDEX])
    pred = np.array([0, 2, 2, 1])
    colours, order, share = _error_colours(labels, pred)
    assert tuple(colours[1]) == ERROR_COLOUR and tuple(colours[0]) == tuple(colours[2]) == CORRECT_COLOUR
    assert tuple(colours[3]) not in (ERROR_COLOUR, CORRECT_COLOUR)  # unlabelled: neither right nor wrong
    assert order[-1] == 1 and share == pytest.approx(100 / 3)


def test_predictions_command(seg_run: Path, val, tmp_path: Path, capsys):
    from lidarssl.viz.predictions import RunPredictor, legend_layout

    out = tmp_path / "pred.png"
    assert main(["viz", "predictions", str(seg_run), "--frame", "1", "--height", "120", "--out", str(out),
                 "--device", "cpu"]) == 0
    image = _image(out)
    scan = val[1]
    pred = RunPredictor(seg_run, device="cpu")(scan)
    assert pred.shape == scan.labels.shape
    classes = np.unique(np.concatenate([scan.labels, pred]))
    entries = int(np.sum(classes < len(val.class_map.classes))) + 3  # + wrong, right, unlabelled
    assert legend_layout(entries, 333) == (2, 12 + 15 * -(-entries // 2))  # 140 px a column
    # labels, predictions, errors; the legend's band below
    assert image.shape == (3 * (TITLE_PX + 120) + legend_layout(entries, 333)[1], 333, 3)
    errors = image[3 * TITLE_PX + 240 : 3 * TITLE_PX + 360, :120].reshape(-1, 3).astype(int)
    red = (errors[:, 0] > 200) & (errors[:, 1] < 100)  # a one-epoch model gets many points wrong
    assert red.sum() > 20


@pytest.mark.real
def test_predictions_need_a_dataset_of_the_runs_classes(seg_run: Path, real_root: Path, tmp_path: Path, capsys):
    kitti = real_root / "semantic_kitti" / "dataset"
    assert main(["viz", "predictions", str(seg_run), "--data", str(kitti), "--out", str(tmp_path / "p.png")]) == 2
    assert capsys.readouterr().err.startswith(f"lidarssl viz: error: {kitti}: its labels use the semantickitti "
                                              "classes, which the run does not predict (barrier, bicycle, bus, car, ...)")


@pytest.mark.parametrize("run", ["scalr_run", "ppkt_run"])
def test_pixels_figure(run: str, camera_world: Path, tmp_path: Path, request, capsys):
    from lidarssl.viz.pixels import PretrainedRun

    run_dir = request.getfixturevalue(run)
    out = tmp_path / "pix.png"
    assert main(["viz", "pixels", str(run_dir), "--data", f"{camera_world},split=val", "--class", "car",
                 "--height", "90", "--out", str(out), "--device", "cpu"]) == 0
    image = _image(out)
    assert image.shape == (TITLE_PX + 90 + FOOTER_PX, 2 * 160, 3)
    _assert_rich(image[TITLE_PX : TITLE_PX + 90, 160:])  # the similarity map
    scan = open_dataset(camera_world, split="val")[0]
    q = select_query(scan, cls="car", class_names=open_dataset(camera_world).class_map.classes)
    result = PretrainedRun(run_dir, device="cpu").pixel_similarity(scan, q)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert result.similarity.shape == tuple(config["pairing"]["resize"] or config["pairing"]["crop_size"])
    assert np.isfinite(result.similarity).all() and np.abs(result.similarity).max() <= 1 + 1e-5
    assert result.similarity.std() > 0


def test_pixels_on_a_frame_without_cameras(scalr_run: Path, tiny_world: Path, tmp_path: Path, capsys):
    source = open_dataset(tiny_world)[0].source
    assert main(["viz", "pixels", str(scalr_run), "--data", str(tiny_world), "--point", "0",
                 "--out", str(tmp_path / "p.png"), "--device", "cpu"]) == 2
    assert capsys.readouterr().err == (
        f"lidarssl viz: error: {source}: this frame has no cameras; `pixels` compares a point with the pixels of "
        "the camera that sees it: use a dataset with cameras (synthetic, nuScenes, PandaSet, KITTI)\n")


def test_pixels_of_a_point_no_camera_sees(scalr_run: Path, val):
    from lidarssl.viz.pixels import PretrainedRun

    scan = val[0]
    seen = np.zeros(len(scan), bool)
    for c in scan.cameras:
        seen |= project(scan.points, c.K, c.lidar_to_cam, c.hw, 1.0).valid
    unseen = np.flatnonzero(~seen)
    assert len(unseen)  # points within a metre of a camera, under the car, ...
    with pytest.raises(DataError, match=f"query point {unseen[0]} is not seen by any camera"):
        PretrainedRun(scalr_run, device="cpu").pixel_similarity(scan, int(unseen[0]))


def test_pixels_needs_an_image_method(scalr_run: Path, tmp_path: Path):
    from lidarssl.viz.pixels import PretrainedRun

    also = tmp_path / "also"
    also.mkdir()
    config = yaml.safe_load((scalr_run / "config.yaml").read_text())
    config["method"] = {"name": "also", "options": {}}
    (also / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"method 'also' compares no points with pixels; `pixels` needs a run of an "
                                          r"image method \(nclr, ppkt, scalr, slidr, stslidr\)"):
        PretrainedRun(also)
    shutil.rmtree(also)


def test_run_figures_name_the_folder_they_need(tmp_path: Path):
    from lidarssl.errors import CheckpointError
    from lidarssl.viz.pixels import PretrainedRun
    from lidarssl.viz.predictions import RunPredictor

    with pytest.raises(CheckpointError, match=r"not a segmentation run directory \(no config.yaml\); pass the `out` "
                       "folder of lidarssl train, probe or finetune"):
        RunPredictor(tmp_path)
    with pytest.raises(CheckpointError, match=r"not a pretraining run directory \(no config.yaml\); pass the `out` "
                       "folder of lidarssl pretrain"):
        PretrainedRun(tmp_path)
    # a run of the other kind is named as such, before its config meets the wrong schema
    from lidarssl.config import SegmentationConfig, to_yaml
    from lidarssl.methods.config import PretrainConfig

    (tmp_path / "pre").mkdir()
    (tmp_path / "pre" / "config.yaml").write_text(to_yaml(PretrainConfig()))
    (tmp_path / "seg").mkdir()
    (tmp_path / "seg" / "config.yaml").write_text(to_yaml(SegmentationConfig()))
    with pytest.raises(ConfigError) as err:
        RunPredictor(tmp_path / "pre")
    assert str(err.value) == (f"{tmp_path / 'pre'} is a pretraining run (scalr), not a segmentation run; pass the "
                              "`out` folder of lidarssl train, probe or finetune")
    with pytest.raises(ConfigError) as err:
        PretrainedRun(tmp_path / "seg")
    assert str(err.value) == (f"{tmp_path / 'seg'} is a segmentation run, not a pretraining run; pass the `out` "
                              "folder of lidarssl pretrain")
