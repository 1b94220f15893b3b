"""The registries are the one list of names: each name loads from the module declaring it, an unknown name is
one line listing the known ones, and an installed package adds a method, backbone, teacher and reader, each one
file and one entry-point line, that config validation, the command line's help and filters, and the
registry-driven tests all pick up."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lidarssl import registry
from lidarssl.errors import ConfigError, DataError
from lidarssl.registry import BACKBONES, METHODS, READERS, TEACHERS, Registry

SRC = Path(registry.__file__).parents[1]
TESTS = Path(__file__).parent

#: Each registry and what every object in it must be.
KINDS = {"method": METHODS, "backbone": BACKBONES, "teacher": TEACHERS, "reader": READERS}


def _check_object(kind: str, name: str, obj: object) -> None:
    if kind == "method":
        from lidarssl.config import Schema
        from lidarssl.methods.base import PretrainMethod

        assert issubclass(obj, PretrainMethod) and obj.name == name and issubclass(obj.Options, Schema)
    elif kind == "reader":
        assert obj.reader_name == name and obj.default_split in obj.splits and callable(obj.detect)
    else:  # preset functions take keyword options (and a teacher its weights)
        params = inspect.signature(obj).parameters.values()
        assert obj.__name__ == name and all(p.kind is not p.POSITIONAL_ONLY for p in params)
        if kind == "teacher":
            assert "weights" in inspect.signature(obj).parameters


@pytest.mark.parametrize(("kind", "name"), [(k, n) for k, r in KINDS.items() for n in r.names()])
def test_every_registered_name_loads_from_its_module(kind: str, name: str):
    _check_object(kind, name, KINDS[kind].get(name))


def test_the_public_lists_are_the_registries():
    import lidarssl
    from lidarssl.data.formats import READERS as FORMAT_READERS

    assert lidarssl.list_methods() == sorted(METHODS.names())
    assert lidarssl.list_backbones() == sorted(BACKBONES.names())
    assert lidarssl.list_teachers() == sorted(TEACHERS.names())
    assert FORMAT_READERS is READERS and list(READERS)[:2] == ["synthetic", "nuscenes"]  # detection order


def test_unknown_names_are_one_line_listing_the_known_ones():
    from lidarssl.data.datasets import check_format
    from lidarssl.methods import method_class
    from lidarssl.models.backbones import create_backbone

    with pytest.raises(ConfigError, match=r"^unknown method 'nope'; known methods: also, depthcontrast, nclr, pointcontrast, ppkt, scalr, slidr"):
        method_class("nope")
    with pytest.raises(ConfigError, match=r"^unknown backbone 'nope'; known backbones: minkunet18, "):
        create_backbone("nope")
    with pytest.raises(DataError, match=r"^unknown dataset format 'nope'; choose one of \['synthetic', "):
        check_format("nope")


def test_a_declared_module_that_registers_nothing_is_named(tmp_path: Path, monkeypatch):
    (tmp_path / "empty_ext.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry = Registry("widget", "lidarssl.widgets")
    reg.declare("empty_ext", "w")
    assert "w" in reg and reg.names() == ["w"]
    with pytest.raises(ConfigError, match="widget 'w': module empty_ext is declared to register it but does not"):
        reg.get("w")
    first = reg.register("a")(object())
    assert reg.get("a") is first and reg.names() == ["w", "a"]
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        reg.register("a")(object())
    with pytest.raises(ValueError, match="^unknown widget 'v'; known widgets: a, w$"):
        reg.check("v")  # for schemas: pydantic reports it as the key's error


def test_schemas_check_names_without_importing_them():
    from lidarssl.config import load_config
    from lidarssl.methods.config import PretrainConfig

    with pytest.raises(ConfigError, match=r"^overrides: key 'method.name': unknown method 'nope'; known methods: al"):
        load_config(PretrainConfig, None, ["method.name=nope"])
    with pytest.raises(ConfigError, match=r"key 'teacher.name': unknown teacher 'nope'; known teachers: dino_vitb16"):
        load_config(PretrainConfig, None, ["teacher.name=nope"])


# -- a plugin: one file per extension and one entry-point line each -------------------------------------------------

TOY_FILES = {
    "method.py": '''
        """A toy pretext method: spreads the features of each batch (a loss that needs no teacher)."""
        import torch
        from pydantic import Field

        from lidarssl.config import Schema
        from lidarssl.methods.base import PretrainMethod, register_method


        class ToyOptions(Schema):
            weight: float = Field(1.0, gt=0)


        @register_method
        class Toy(PretrainMethod):
            name = "toy"
            Options = ToyOptions

            @classmethod
            def builders(cls, config, options):
                return []

            def losses(self, batch):
                feats = torch.nn.functional.normalize(self.backbone(batch), dim=1)
                return {"toy": self.options.weight * (feats @ feats.T).mean()}
    ''',
    "backbone.py": '''
        """A toy backbone: a per-point MLP on xyz and intensity, every point kept."""
        import numpy as np
        import torch
        from torch import nn

        from lidarssl.models.backbones.base import Backbone, BackboneSpec, collate_common, register_backbone


        class PointPrep:
            def __call__(self, points, intensity, rng=None):
                feats = np.concatenate([points, intensity[:, None]], axis=1).astype(np.float32)
                return {"kept": np.arange(len(points), dtype=np.int64), "feats": feats}

            def collate(self, samples):
                batch = collate_common(samples)
                batch["feats"] = torch.from_numpy(np.concatenate([s["feats"] for s in samples]))
                return batch


        class PointMLP(Backbone):
            def __init__(self, width):
                super().__init__()
                self.out_channels = width
                self.net = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, width))

            def forward(self, batch):
                return self.net(batch["feats"])


        @register_backbone
        def toy_mlp(width: int = 8) -> BackboneSpec:
            prep = PointPrep()
            return BackboneSpec(name="toy_mlp", model=PointMLP(int(width)), prep=prep, collate=prep.collate)
    ''',
    "teacher.py": '''
        """A toy image teacher: one 2x2 convolution with stride 2, random weights."""
        from torch import nn

        from lidarssl.models.teachers.base import Teacher, check_options, register_teacher


        class ToyTeacher(Teacher):
            def __init__(self, name, image_size=None, upsample=False, align_corners=False):
                super().__init__(name, image_size=image_size, upsample=upsample, align_corners=align_corners)
                self.out_channels, self.stride = 4, 2
                self.encoder = nn.Conv2d(3, 4, 2, stride=2)

            def encode(self, x):
                return self.encoder(x)

            def feature_size(self, height, width):
                return height // 2, width // 2

            def releases(self):
                return []

            def convert(self, checkpoint, source):
                return dict(checkpoint)


        @register_teacher
        def toy_teacher(weights=None, **options):
            check_options(ToyTeacher, "toy_teacher", options)
            teacher = ToyTeacher("toy_teacher", **options)
            if weights is not None:
                teacher.load(weights)
            return teacher.freeze()
    ''',
    "reader.py": '''
        """A toy dataset format: toy.json says how many frames; each frame's points are drawn from its index."""
        import json

        import numpy as np

        from lidarssl.data.formats import register_reader
        from lidarssl.data.labels import load_class_map
        from lidarssl.data.scan import Scan


        @register_reader
        class ToyFormat:
            reader_name = "toyformat"
            layout = "toy.json"  # named when no reader recognises a folder
            splits = ("train", "all")
            default_split = "all"

            @classmethod
            def detect(cls, root):
                return (root / "toy.json").is_file()

            def __init__(self, root, split="all"):
                self.root, self.split = root, split
                self.frames = list(range(json.loads((root / "toy.json").read_text())["frames"]))
                self.class_map = load_class_map("semanticposs")

            def __len__(self):
                return len(self.frames)

            def __getitem__(self, i):
                rng = np.random.default_rng(self.frames[i])
                points = rng.uniform(-10, 10, (200, 3)).astype(np.float32)
                return Scan(points=points, intensity=rng.uniform(0, 1, 200).astype(np.float32),
                            source=str(self.root / "toy.json"), dataset="toyformat", frame_id=str(i))
    ''',
}

#: The one line per extension, as a package's pyproject.toml declares it ([project.entry-points."lidarssl.*"]).
TOY_ENTRY_POINTS = """\
[lidarssl.methods]
toy = toyplugin.method

[lidarssl.backbones]
toy_mlp = toyplugin.backbone

[lidarssl.teachers]
toy_teacher = toyplugin.teacher

[lidarssl.readers]
toyformat = toyplugin.reader
"""


@pytest.fixture(scope="module")
def toy_env(tmp_path_factory) -> dict[str, str]:
    """An installed package `toyplugin` (its files and dist-info on the path): the environment to run it in."""
    site = tmp_path_factory.mktemp("site")
    (site / "toyplugin").mkdir()
    (site / "toyplugin" / "__init__.py").write_text("")
    for name, text in TOY_FILES.items():
        (site / "toyplugin" / name).write_text(textwrap.dedent(text).lstrip())
    info = site / "toyplugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toyplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(TOY_ENTRY_POINTS)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(SRC)]), "OMP_NUM_THREADS": "1"}


def _run(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd)
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def _help(env: dict[str, str], *command: str) -> tuple[str, str]:
    """The help text of `lidarssl COMMAND --help` (whitespace removed: argparse wraps lines) and the heavy
    modules it imported."""
    code = ("import sys\nfrom lidarssl.cli import main\ntry:\n    main(sys.argv[1:] + ['--help'])\n"
            "except SystemExit:\n    pass\nprint('HEAVY', [m for m in ('torch', 'lightning') if m in sys.modules])")
    out = _run(env, "-c", code, *command).stdout
    return "".join(out.split()), out.rsplit("HEAVY", 1)[1].strip()


@pytest.mark.slow
def test_a_plugin_is_picked_up_by_help_validation_filters_and_tests(toy_env, tmp_path: Path):
    names = ("toy", "toy_mlp", "toy_teacher", "toyformat")
    # the command line's help lists the plugin's names without importing it (nor torch)
    top, heavy = _help(toy_env)
    assert heavy == "[]" and all(n in top for n in names), top
    pretrain, heavy = _help(toy_env, "pretrain")
    assert heavy == "[]" and "Methods(method.name):also,nclr,ppkt,scalr,slidr,stslidr,toy." in pretrain
    assert "toy_teacher" in pretrain and "toy_mlp" in pretrain
    # `lidarssl recipes` filters accept them (no shipped recipe uses them: only the header)
    for flag, name in (("--method", "toy"), ("--backbone", "toy_mlp"), ("--dataset", "toyformat")):
        listed = _run(toy_env, "-m", "lidarssl.cli", "recipes", flag, name).stdout
        assert listed.splitlines()[0].startswith("name") and len(listed.splitlines()) == 1, listed
    # config validation accepts them, and a pretraining run uses all four (the teacher by itself: the toy method
    # needs none), through the same command a user runs
    data = tmp_path / "toy"
    data.mkdir()
    (data / "toy.json").write_text(json.dumps({"frames": 4}))
    run = _run(toy_env, "-m", "lidarssl.cli", "pretrain", f"data.root={data}", f"out={tmp_path / 'run'}",
               "method.name=toy", "backbone.name=toy_mlp", "teacher.name=toy_teacher", "data.num_workers=0",
               "optim.epochs=1", "trainer.batch_size=2", "trainer.progress_bar=false")
    assert "pretrained toy_mlp with toy" in run.stdout and (tmp_path / "run" / "backbone.safetensors").is_file()
    code = ("import torch, lidarssl\nt = lidarssl.create_teacher('toy_teacher')\n"
            "print(tuple(t(torch.zeros(1, 3, 8, 12)).shape), lidarssl.open_dataset(sys.argv[1]).__class__.__name__)")
    out = _run(toy_env, "-c", "import sys\n" + code, str(data)).stdout
    assert out.split() == ["(1,", "4,", "4,", "6)", "ToyFormat"]
    # the registry-driven tests run on them
    ids = _run(toy_env, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider", str(TESTS / "test_registry.py"),
               str(TESTS / "methods" / "test_every_method.py"), cwd=TESTS.parent).stdout
    for test_id in ("test_every_registered_name_loads_from_its_module[method-toy]",
                    "test_every_registered_name_loads_from_its_module[backbone-toy_mlp]",
                    "test_every_registered_name_loads_from_its_module[teacher-toy_teacher]",
                    "test_every_registered_name_loads_from_its_module[reader-toyformat]",
                    "test_one_training_step_with_each_method[toy]"):
        assert test_id in ids, ids
    _run(toy_env, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "toy and loads_from_its_module",
         str(TESTS / "test_registry.py"), cwd=TESTS.parent)


def test_a_reader_without_the_frame_methods_is_named_by_prepare_and_splits(tmp_path: Path):
    from lidarssl.data.prepare import frame_checks
    from lidarssl.data.splits import frame_keys, frame_scene

    class Bare:
        frames = [["a", "b"]]

    for call in (frame_checks, frame_keys, frame_scene):
        with pytest.raises(DataError, match="Bare"):
            call(Bare(), 0)


def test_recipes_filters_by_method_backbone_and_dataset(capsys):
    from lidarssl.cli import main
    from lidarssl.recipes import catalogue

    assert main(["recipes", "--json", "--kind", "probe", "--method", "slidr", "--dataset", "nuscenes"]) == 0
    rows = json.loads(capsys.readouterr().out)
    expected = [e.name for e in catalogue("probe") if e.info.method == "slidr" and e.info.dataset == "nuscenes"]
    assert rows and [r["name"] for r in rows] == expected
    assert main(["recipes", "--json", "--backbone", "waffleiron_48_768"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and {r["backbone"] for r in rows} == {"waffleiron_48_768"}
    with pytest.raises(SystemExit):
        main(["recipes", "--method", "nope"])
    assert "argument --method: invalid choice: 'nope'" in capsys.readouterr().err


def test_a_plugin_that_cannot_be_imported_is_named(tmp_path: Path, monkeypatch):
    info = tmp_path / "broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[lidarssl.widgets]\nbroken = no_such_module_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry._entry_points.cache_clear()
    try:
        reg: Registry = Registry("widget", "lidarssl.widgets")
        assert reg.names() == ["broken"]
        with pytest.raises(ConfigError, match="widget 'broken' of the entry points lidarssl.widgets: cannot import "
                           "no_such_module_here"):
            reg.get("broken")
    finally:
        registry._entry_points.cache_clear()
