"""The README's "Using it" commands run verbatim, in order, on the world they generate, with only size overrides
appended (fewer frames, one epoch, small images); each later step uses what an earlier one wrote (the trained 2D
teacher, the pretrained backbones, the runs). Lines that need real data or a downloaded release are skipped."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

from lidarssl.cli import main

REPO = Path(__file__).resolve().parents[2]
TRAIN = ["optim.epochs=1", "trainer.batch_size=2", "data.num_workers=0", "trainer.progress_bar=false"]
#: appended to each command (the first words of its line) to keep it tiny
TINY = {
    "generate": ["frames=4", "frames_per_sequence=2", "val_fraction=0.5", "image_size=[160,90]"],
    "prepare teacher": ["epochs=1", "image_size=[56,112]"],
    "pretrain": TRAIN, "probe": TRAIN, "finetune": TRAIN, "train": TRAIN,
}
#: lines needing data a clone does not have (a real dataset, a seed's release file) or an optional viewer
NEEDS_DOWNLOADS = ("/data/sets/", "lidarssl import ", "lidarssl view ")


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Using it\n\n```bash\n(.*?)```", text, re.S).group(1)
    lines = [line.split("  #")[0].strip() for line in block.splitlines()]
    return [line for line in lines if line.startswith("lidarssl ")]


def test_the_readme_commands_work_verbatim(tmp_path: Path, monkeypatch, capsys):
    commands = readme_commands()
    assert len(commands) >= 20 and any("teacher.weights=cache/teacher/" in c for c in commands)
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ran = []
    for line in commands:
        if any(skip in line for skip in NEEDS_DOWNLOADS):
            continue
        argv = shlex.split(line)[1:]
        key = " ".join(argv[:2]) if " ".join(argv[:2]) in TINY else argv[0]
        tiny = [] if "--help" in argv else TINY.get(key, [])
        try:
            code = main([*argv, *tiny])
        except SystemExit as done:  # argparse's --help
            code = done.code
        out = capsys.readouterr()
        assert code == 0, f"{line}\n{out.err[-2000:]}"
        ran.append(line)
    assert len(ran) >= 17
    # the trained teacher was used: its feature cache exists, and the pretraining run names its weights
    assert list(Path("cache/teacher").glob("resnet18_semantic-*/cache.json"))
    assert "cache/teacher/resnet18_semantic.safetensors" in Path("runs/scalr/config.yaml").read_text()
    for path in ("runs/ft/metrics.json", "runs/wi/metrics.json", "pcdet.pth", "feats/index.json", "similarity.png"):
        assert Path(path).is_file(), path
