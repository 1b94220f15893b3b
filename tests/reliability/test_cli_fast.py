"""The command line starts fast: `lidarssl --help` imports neither torch nor Lightning (the registries know their
names without importing their code); --version and each command's help."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import lidarssl
from lidarssl import cli
from lidarssl.config import list_recipes


def test_recipe_names_match_the_config_code():
    assert cli._recipes() == list_recipes()


def test_help_imports_no_torch_and_lists_the_names():
    code = ("import sys; from lidarssl.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'lightning', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    flat = "".join(out.split())  # argparse wraps lines at hyphens
    assert f"{len(list_recipes())}shippedrecipes(`lidarsslrecipes`" in flat  # the recipes command lists them
    for name in ("waffleiron_48_768", "stslidr", "dinov2_vits14", "pandaset"):
        assert name.replace(" ", "") in flat


def test_every_command_help_imports_no_torch():
    """`lidarssl COMMAND --help` for every command stays fast: it lists schema keys, recipes and registry names
    without loading torch or Lightning (2-5 s of imports)."""
    commands = cli.command_names()
    assert ["pretrain"] in commands and ["import"] in commands and ["viz", "similarity"] in commands
    code = ("import json, sys\nfrom lidarssl.cli import main\n"
            "for command in json.loads(sys.argv[1]):\n"
            "    try:\n        main([*command, '--help'])\n    except SystemExit:\n        pass\n"
            "    heavy = [m for m in ('torch', 'lightning') if m in sys.modules]\n"
            "    if heavy:\n        sys.exit(f'lidarssl {\" \".join(command)} --help imports {heavy}')\n")
    run = subprocess.run([sys.executable, "-c", code, json.dumps(commands)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"lidarssl {lidarssl.__version__}\n"


@pytest.mark.parametrize(("command", "names"), [
    ("pretrain", ["scalr-wi-synthetic", "Methods (method.name): also", "dino_vits8", "Keys: "]),
    ("probe", ["probe-wi-synthetic", "waffleiron_4_32"]),
    ("generate", ["world-nuscenes", "frames"]),
    ("import", ["--origin"]),
])
def test_command_help_lists_what_a_user_needs(command, names, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    out = "".join(capsys.readouterr().out.split())
    for name in names:
        assert name.replace(" ", "") in out, name


@pytest.mark.slow
def test_a_training_command_prints_no_library_noise(tiny_world, tmp_path):
    args = [f"data.root={tiny_world}", f"out={tmp_path / 'run'}", "data.num_workers=0", "trainer.batch_size=2",
            "trainer.progress_bar=false", "optim.epochs=1", "backbone.name=waffleiron_4_32",
            "backbone.options={fov_min: [-40, -40, -4], fov_max: [40, 40, 4]}"]
    run = subprocess.run([sys.executable, "-m", "lidarssl.cli", "train", *args], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0 and run.stderr == ""
    for noise in ("GPU available", "TPU", "Tip", "deprecated", "LitLogger"):
        assert noise not in run.stdout
    assert run.stdout.count("mIoU") == 1 and run.stdout.rstrip().endswith(f"run directory: {tmp_path / 'run'}")


def test_ctrl_c_is_one_line_with_how_to_continue(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_segmentation", lambda mode: interrupted)
    assert cli.main(["train", "out=x"]) == 130
    assert capsys.readouterr().err == ("lidarssl train: interrupted; rerun with --resume to continue from the last "
                                       "finished epoch\n")
