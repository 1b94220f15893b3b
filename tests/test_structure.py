"""The package's shape: imports point down the layers, the flat public API, the version."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib import import_module, metadata
from pathlib import Path

import pytest

import lidarssl

PACKAGE = Path(lidarssl.__file__).parent

#: Subpackage -> subpackages of lidarssl it must never import (directly, lazily or for type checking).
FORBIDDEN = {
    "data": {"synthetic", "methods", "downstream", "models", "viz", "cli", "runs"},
    "models": {"synthetic", "methods", "downstream", "viz", "cli", "runs"},
    "methods": {"downstream", "synthetic", "viz", "cli"},
    "downstream": {"methods", "synthetic", "viz", "cli"},
    "synthetic": {"methods", "downstream", "models", "cli", "runs"},
    "zoo": {"methods", "synthetic", "viz", "cli"},
}
_ABOVE_BASE = {"data", "models", "methods", "downstream", "synthetic", "viz", "zoo", "cli", "runs", "features"}
#: Root module -> modules and subpackages of lidarssl it must never import: the base layer imports nothing above it.
ROOT_FORBIDDEN = {
    **{m: _ABOVE_BASE for m in ("errors", "registry", "schema", "config", "io", "batch", "checkpoints", "losses",
                                "metrics", "optim", "run_folder", "recipes")},
    "runs": {"methods", "downstream", "synthetic", "viz", "zoo", "cli", "features"},
    "features": {"methods", "downstream", "synthetic", "viz", "zoo", "cli"},
    "demo": {"viz", "zoo", "cli"},  # the demo pipeline sits just below the command line
}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``import lidarssl.x`` / ``from lidarssl.x import ...`` in a file, nested ones too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return [(line, m) for line, m in found if m == "lidarssl" or m.startswith("lidarssl.")]


def test_imports_point_down():
    wrong = []
    walks = [*((sorted((PACKAGE / sub).rglob("*.py")), forbidden) for sub, forbidden in FORBIDDEN.items()),
             *(([PACKAGE / f"{name}.py"], forbidden) for name, forbidden in ROOT_FORBIDDEN.items())]
    for paths, forbidden in walks:
        for path in paths:
            for line, module in _imports(path):
                parts = module.split(".")
                if len(parts) > 1 and parts[1] in forbidden:
                    wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    assert not wrong, "imports that point up the layers:\n" + "\n".join(wrong)


def test_every_root_module_has_its_layer():
    roots = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "cli"}  # the interface may import anything
    assert roots == set(ROOT_FORBIDDEN), f"root modules without a layer in ROOT_FORBIDDEN: {roots - set(ROOT_FORBIDDEN)}"


def test_moved_config_sections_are_still_exported():
    from lidarssl import config

    for name, module in config.MOVED.items():
        assert getattr(config, name) is getattr(import_module(module), name), name
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        config.Nope  # noqa: B018


def test_the_walk_sees_lazy_imports(tmp_path: Path):
    code = "def f():\n    from lidarssl.methods.base import x\n    import lidarssl.downstream.train\n"
    (tmp_path / "m.py").write_text(code)
    assert _imports(tmp_path / "m.py") == [(2, "lidarssl.methods.base"), (3, "lidarssl.downstream.train")]


def test_version_is_the_installed_metadata():
    assert lidarssl.__version__ == metadata.version("lidarssl")
    out = subprocess.run([sys.executable, "-c", "import lidarssl; print(lidarssl.__version__)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == metadata.version("lidarssl")


def test_flat_public_api():
    assert set(lidarssl.__all__) >= {"create_backbone", "list_backbones", "create_teacher", "list_teachers",
                                     "list_methods", "open_dataset", "Scan", "CameraView", "load_config"}
    for name in lidarssl.__all__:
        assert getattr(lidarssl, name) is not None, name
    assert "waffleiron_48_768" in lidarssl.list_backbones()
    assert set(lidarssl.list_methods()) >= {"ppkt", "slidr", "stslidr", "scalr", "also", "nclr", "pointcontrast",
                                            "depthcontrast"}
    assert "dinov2_vitl14" in lidarssl.list_teachers()
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lidarssl.nope  # noqa: B018


def test_import_is_lazy():
    """``import lidarssl`` loads neither torch nor Lightning: the command line's --help stays fast."""
    code = "import sys, lidarssl; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
