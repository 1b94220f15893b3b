"""What the published-setting recipes run, behaviour by behaviour, against the originals' code (issue #26)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lidarssl.config import SegmentationConfig, load_config
from lidarssl.data.datasets import open_dataset
from lidarssl.data.loader import LabelBuilder, ScanCollate, ScanSamples
from lidarssl.data.scan import Scan
from lidarssl.data.splits import frame_scene
from lidarssl.downstream.segmentation import SegmentationModule
from lidarssl.downstream.train import run_segmentation
from lidarssl.errors import ConfigError, DataError
from lidarssl.models.backbones import create_backbone

# the synthetic nuScenes world has no cameras; segmentation reads the lidar only
pytestmark = pytest.mark.filterwarnings("ignore:.*keyframe; skipping this camera")

CELLS_01P = ("scratch-minkunet34-nuscenes-train-01p", "also-minkunet34-nuscenes-finetune-01p",
             "nclr-minkunet34-nuscenes-finetune-01p")


# --- SLidR's downstream: one loss row per voxel, on its representative point's label ------------------------------


def _scan(n: int = 400, seed: int = 0) -> Scan:
    rng = np.random.default_rng(seed)
    points = rng.uniform([-6, -6, -1], [6, 6, 1], (n, 3)).astype(np.float32)
    return Scan(points=points, intensity=rng.uniform(0, 1, n).astype(np.float32),
                labels=rng.integers(0, 3, n).astype(np.int64))


def test_voxel_loss_support_is_slidrs_per_voxel_cross_entropy():
    # dataloader_nuscenes.py: discrete_coords, indexes, inverse = sparse_quantize(...); unique_labels =
    # points_labels[indexes]; the network's voxel logits meet those labels, one row per voxel
    spec = create_backbone("minkunet_tiny", voxel_features="first")
    samples = ScanSamples([_scan(), _scan(seed=1)], spec.prep, [LabelBuilder()], seed=0, augment=None)
    batch = ScanCollate(spec.prep, [LabelBuilder()])([samples[(0, 0)], samples[(1, 0)]])
    voxels = len(batch["voxel_coords"])
    assert len(batch["voxel_point"]) == voxels < len(batch["labels"])  # fewer voxels than points
    # each representative lies in its own voxel, and it is the point whose features the voxel took
    assert torch.equal(batch["point2voxel"][batch["voxel_point"]], torch.arange(voxels))
    module = SegmentationModule(spec.model, ("a", "b", "c"), loss="ce", loss_support="voxel", ignore_index=255)
    logits = torch.randn(len(batch["labels"]), 3)
    voxel_logits = torch.zeros(voxels, 3).index_copy(0, batch["point2voxel"], logits)  # any point: same voxel
    logits = voxel_logits[batch["point2voxel"]]  # what the network gives: each point its voxel's logits
    reference = F.cross_entropy(voxel_logits, batch["labels"][batch["voxel_point"]])
    assert torch.allclose(module._loss(*module._supported(logits, batch)), reference)
    per_point = SegmentationModule(spec.model, ("a", "b", "c"), loss="ce", ignore_index=255)
    assert not torch.allclose(per_point._loss(*per_point._supported(logits, batch)), reference)  # the old loss


def test_voxel_loss_support_needs_a_voxel_backbone():
    spec = create_backbone("waffleiron_4_32")
    samples = ScanSamples([_scan()], spec.prep, [LabelBuilder()], seed=0)
    batch = ScanCollate(spec.prep, [LabelBuilder()])([samples[(0, 0)]])
    module = SegmentationModule(spec.model, ("a", "b", "c"), loss_support="voxel")
    with pytest.raises(ConfigError, match=r"^optim.loss_support=voxel needs a voxel backbone .*: set "
                       r"optim.loss_support=point$"):
        module._supported(torch.zeros(len(batch["labels"]), 3), batch)


@pytest.mark.parametrize("name", ["slidr-res16unet34c-nuscenes-finetune-1p",
                                  "ppkt-res16unet34c-semantickitti-finetune-1p",
                                  "stslidr-stslidr-moco-res16unet34c-nuscenes-probe",
                                  "scratch-res16unet34c-nuscenes-train-10p"])
def test_slidr_family_recipes_train_on_voxels_and_score_every_point(name: str):
    config = load_config(SegmentationConfig, name)
    assert config.optim.loss_support == "voxel"
    # evaluation still scores every original point (LabelBuilder's `nearest` for each of them)
    scan = _scan()
    spec = create_backbone("minkunet_tiny")
    val = ScanSamples([scan], spec.prep, [LabelBuilder()], train=False)[0]
    assert len(val["nearest"]) == len(val["point_labels"]) == len(scan)


# --- SLidR's SemanticKITTI input: remission + 1 ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["slidr-res16unet34c-semantickitti-finetune-1p",
                                  "ppkt-res16unet34c-semantickitti-finetune-1p",
                                  "scratch-res16unet34c-semantickitti-train-1p"])
def test_slidr_semantickitti_recipes_feed_remission_plus_one(name: str):
    # dataloader_kitti.py: unique_feats = points[indexes][:, 3:] + 1.
    options = load_config(SegmentationConfig, name).backbone.options
    prep = create_backbone("res16unet34c", width=0.03, **options).prep
    scan = _scan()
    sample = prep(scan.points, scan.intensity)
    reps = sample["kept"][sample["voxel_point"]]
    np.testing.assert_allclose(sample["voxel_feats"][:, 0], scan.intensity[reps] + 1.0, rtol=1e-6)
    nus = load_config(SegmentationConfig, name.replace("semantickitti", "nuscenes")).backbone.options
    nus_prep = create_backbone("res16unet34c", width=0.03, **nus).prep
    nus_sample = nus_prep(scan.points, scan.intensity)  # dataloader_nuscenes.py: the raw intensity
    reps = nus_sample["kept"][nus_sample["voxel_point"]]
    np.testing.assert_allclose(nus_sample["voxel_feats"][:, 0], scan.intensity[reps])


# --- ScaLR and WaffleIron: RandomApply(FlipXY, 2/3) ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["scalr-wi48x768-nuscenes-finetune", "scalr-wi48x768-semantickitti-probe",
                                  "seg-wi48x384-nuscenes", "seg-wi48x256-semantickitti"])
def test_scalr_and_waffleiron_recipes_mirror_two_scans_in_three(name: str):
    augment = load_config(SegmentationConfig, name).augment.point_augment()
    rng = np.random.default_rng(0)
    mirrored = np.mean([np.linalg.det(augment.matrix(rng)[:3, :3]) < 0 for _ in range(3000)])
    assert abs(mirrored - 2 / 3) < 0.03  # 3000 draws: standard error 0.009; the old recipes mirrored every scan


# --- ScaLR's 1 % nuScenes list, from the user's copy of its info_datasets archive ---------------------------------


@pytest.fixture(scope="module")
def nuscenes_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic world in the nuScenes layout whose second train scene is named scene-0392 (as in nuScenes)."""
    from lidarssl.synthetic.writers.nuscenes import write_nuscenes

    root = tmp_path_factory.mktemp("nuscenes_world")
    write_nuscenes({"seed": 3, "lidar": "nuscenes", "cameras": "none"}, root, 3, frames_per_sequence=1,
                   val_fraction=0.34)
    for path in (root / "v1.0-trainval" / "scene.json", root / "splits.json"):
        path.write_text(path.read_text().replace("scene-0002", "scene-0392"))
    splits = json.loads((root / "splits.json").read_text())
    (root / "splits.json").write_text(json.dumps({**splits, "verifying": ["scene-0001"]}))
    return root


def test_scalr_one_percent_recipe_trains_on_the_frames_of_scalrs_list(nuscenes_world: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch):
    config = load_config(SegmentationConfig, "scalr-wi48x768-nuscenes-finetune-1p")
    split = config.data.train_split
    assert split == "train@datasets/nuscenes-ratio_100-v_0.npy"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"^datasets/nuscenes-ratio_100-v_0.npy: frame list not found; it ships in "
                       r"ScaLR's info_datasets archive \(https://github.com/valeoai/ScaLR/releases/download/v0.1.0/"
                       r"info_datasets.tar.gz, .*\)$"):
        open_dataset(nuscenes_world, split=split, on_missing_camera="skip")
    # ScaLR's format (datasets/nuscenes_for_scalr.py: rows of [lidar file, lidarseg file, token]), here one frame
    train = open_dataset(nuscenes_world, split="train", on_missing_camera="skip")
    lidar = train.frames[1][2]["lidar"]
    rows = np.array([[lidar["file"], f"lidarseg/v1.0-trainval/{lidar['token']}_lidarseg.bin", lidar["token"]]])
    (tmp_path / "datasets").mkdir()
    np.save(tmp_path / "datasets" / "nuscenes-ratio_100-v_0.npy", rows)
    view = open_dataset(nuscenes_world, split=split, on_missing_camera="skip")
    assert view.indices == [1]


# --- the 0.1 % cells: ALSO's and NCLR's one-scene fallback ----------------------------------------------------------


@pytest.mark.parametrize("name", CELLS_01P)
def test_tenth_of_a_percent_recipes_train_on_scene_0392(name: str, nuscenes_world: Path):
    config = load_config(SegmentationConfig, name)
    view = open_dataset(nuscenes_world, split=config.data.train_split, on_missing_camera="skip")
    assert {frame_scene(view, i) for i in range(len(view))} == {"scene-0392"}
    # every 1000th of the parametrizing scenes keeps none: the originals' fallback is the only way to a split
    with pytest.raises(DataError, match="every 1000th scene"):
        open_dataset(nuscenes_world, split="parametrizing@0.1%-scenes", on_missing_camera="skip")


def test_tenth_of_a_percent_recipe_runs_as_shipped(nuscenes_world: Path, tmp_path: Path, one_thread):
    overrides = [f"data.root={nuscenes_world}", f"out={tmp_path / 'run'}", "data.num_workers=0",
                 "data.options={on_missing_camera: skip}", "optim.epochs=1", "trainer.batch_size=1",
                 "trainer.progress_bar=false", "backbone.name=minkunet_tiny"]
    result = run_segmentation(load_config(SegmentationConfig, "scratch-minkunet34-nuscenes-train-01p", overrides),
                              "scratch")
    assert 0 <= result.miou <= 100


def test_a_scene_list_naming_scenes_the_dataset_lacks(tmp_path: Path, nuscenes_world: Path):
    world = tmp_path / "world"
    shutil.copytree(nuscenes_world, world)
    for path in (world / "v1.0-trainval" / "scene.json", world / "splits.json"):
        path.write_text(path.read_text().replace("scene-0392", "scene-0002"))
    with pytest.raises(DataError) as err:
        open_dataset(world, split="parametrizing@nuscenes-0.1p-scene-0392.json", on_missing_camera="skip")
    message = str(err.value)
    assert "\n" not in message and message.endswith(
        "nuscenes-0.1p-scene-0392.json: scenes ['scene-0392'] are not in split 'parametrizing' of "
        f"{world} (ALSO's and NCLR's 0.1 % nuScenes split (their one-scene fallback))")


def test_scalr_scratch_cell_decays_learning_rates_by_layer_as_finetune_py():
    # finetune.py builds param_groups_lrd whether or not --pretrained_ckpt is given
    from types import SimpleNamespace

    from lidarssl.downstream.train import build_module

    config = load_config(SegmentationConfig, "scratch-wi48x768-nuscenes-train")
    assert config.optim.layer_decay == 0.99
    spec = create_backbone("waffleiron_4_32")
    module = build_module(config, spec, SimpleNamespace(classes=("a", "b"), ignore_index=255), "scratch")
    type(module).trainer = property(lambda self: SimpleNamespace(max_epochs=25, estimated_stepping_batches=100))
    try:
        groups = module.configure_optimizers()["optimizer"].param_groups
    finally:
        del type(module).trainer
    rates = sorted({round(g["initial_lr"] * g["lr_scale"], 12) for g in groups})  # the peak rate of each group
    depth = spec.model.num_layers + 1  # embedding 0, blocks 1..L, head L + 1
    assert len(rates) == depth + 1 and rates[-1] == pytest.approx(2e-3)
    assert rates[0] == pytest.approx(2e-3 * 0.99**depth)  # the embedding's, as finetune.py's layer_scales
