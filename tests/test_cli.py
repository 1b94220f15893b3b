"""The command line as a user runs it: generate, info (with overlay), errors as one line, --debug."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lidarssl.cli import main
from lidarssl.errors import ConfigError


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "world"
    assert main(["generate", f"out={out}", "frames=4", "frames_per_sequence=2", "image_size=[240,135]", "seed=3"]) == 0
    return out


def test_generate_writes_a_dataset_info_reads(world: Path, capsys):
    assert (world / "index.json").is_file()
    assert main(["info", str(world)]) == 0
    out = capsys.readouterr().out
    assert "dataset: synthetic  (4 frames summarised of 4)" in out
    assert "driveable_surface" in out and "cameras (6): CAM_FRONT 240x135" in out


def test_info_overlay_puts_points_on_the_image(world: Path, tmp_path: Path, capsys):
    png = tmp_path / "overlay.png"
    assert main(["info", str(world), "--max-frames", "1", "--overlay", str(png), "--camera", "CAM_FRONT"]) == 0
    assert f"saved to {png}" in capsys.readouterr().out
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape[1] >= 960  # small cameras are drawn enlarged


def test_generate_refuses_to_overwrite_and_recipe_errors_are_one_line(world: Path, tmp_path: Path, capsys):
    assert main(["generate", f"out={world}", "frames=2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lidarssl generate: error:") and str(world) in err and err.count("\n") == 1
    recipe = tmp_path / "r.yaml"
    recipe.write_text("frame: 3\n")
    assert main(["generate", str(recipe)]) == 2
    assert f"{recipe}: unknown key 'frame'; valid keys here: out, frames" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path: Path):
    with pytest.raises(ConfigError):
        main(["--debug", "generate", "frames=zero"])


def test_info_on_a_folder_that_is_no_dataset(tmp_path: Path, capsys):
    assert main(["info", str(tmp_path)]) == 2
    assert "not a dataset layout lidarssl recognises" in capsys.readouterr().err


def test_print_config_shows_resolved_recipe(capsys):
    assert main(["train", "--print-config", "optim.lr=0.5", "trainer.batch_size=3"]) == 0
    out = capsys.readouterr().out
    assert "lr: 0.5" in out and "batch_size: 3" in out
