from pathlib import Path

import pytest
import yaml

from lidarssl.config import (
    GenerateConfig,
    SegmentationConfig,
    list_recipes,
    load_config,
    parse_overrides,
    resolve_recipe,
    to_yaml,
)
from lidarssl.errors import ConfigError


def test_defaults_recipe_and_overrides_merge(tmp_path: Path):
    recipe = tmp_path / "world.yaml"
    recipe.write_text("frames: 10\nlidar: kitti\nimage_size: [320, 180]\n")
    cfg = load_config(GenerateConfig, recipe, ["frames=12", "cameras=none"])
    assert (cfg.frames, cfg.lidar, cfg.cameras, cfg.image_size) == (12, "kitti", "none", (320, 180))
    assert cfg.seed == 0  # untouched default
    assert "frames: 12" in to_yaml(cfg)


def test_nested_overrides_parse_yaml_values():
    assert parse_overrides(["a.b=1", "a.c=[1, 2]", "d=x", "e=0.5"]) == {"a": {"b": 1, "c": [1, 2]}, "d": "x", "e": 0.5}


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_config(GenerateConfig, None, ["frame=3"])
    assert "unknown key 'frame'; valid keys here: out, frames, frames_per_sequence, val_fraction, seed, lidar, cameras, image_size, overwrite" in str(err.value)


def test_wrong_type_names_key_and_file(tmp_path: Path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("frames: many\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: key 'frames': Input should be a valid integer.*'many'"):
        load_config(GenerateConfig, recipe)
    with pytest.raises(ConfigError, match=r"key 'lidar': Input should be 'nuscenes', 'kitti', 'pandar64' or 'once'"):
        load_config(GenerateConfig, None, ["lidar=velodyne"])
    with pytest.raises(ConfigError, match=r"key 'frames': Input should be greater than 0"):
        load_config(GenerateConfig, None, ["frames=0"])


@pytest.mark.parametrize("text, message", [("- a\n- b\n", "a recipe must be a mapping"), ("a: [1\n", "not valid YAML")])
def test_bad_recipe_files(tmp_path: Path, text: str, message: str):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(GenerateConfig, recipe)


def test_missing_recipe_and_malformed_override(tmp_path: Path):
    with pytest.raises(ConfigError, match="nope.yaml: recipe file not found"):
        load_config(GenerateConfig, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="override 'frames' must look like key=value"):
        load_config(GenerateConfig, None, ["frames"])


@pytest.mark.parametrize("name", list_recipes())
def test_every_shipped_recipe_validates(name: str):
    from lidarssl.methods import method_class
    from lidarssl.methods.config import PretrainConfig

    header = (yaml.safe_load(resolve_recipe(name).read_text()) or {}).get("recipe")
    kind = header["kind"] if header else "world"  # `generate` recipes describe a world, not a run
    schema = {"world": GenerateConfig, "pretrain": PretrainConfig}.get(kind, SegmentationConfig)
    cfg = load_config(schema, name)
    assert cfg == load_config(schema, Path(__file__).parents[1] / "configs" / f"{name}.yaml")  # repo configs/ is the same
    if schema is PretrainConfig:
        assert cfg.method.name == header["method"]
        method_class(cfg.method.name).parse_options(cfg.method.options)  # the method's own options validate too


def test_unknown_recipe_lists_shipped_ones():
    with pytest.raises(ConfigError, match="nope: recipe file not found; shipped recipes: .*seg-wi-synthetic"):
        load_config(SegmentationConfig, "nope")
