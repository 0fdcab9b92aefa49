"""Config: recipes load, overrides apply, bad keys and values are named."""

from pathlib import Path

import pytest

from fastscarlet.config import Config, dump_config, load_config, parse_override

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_recipes_load_and_round_trip(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    import yaml

    from fastscarlet.config import config_from_dict

    assert config_from_dict(yaml.safe_load(dump_config(cfg))) == cfg


def test_recipes_exist():
    assert {p.name for p in CONFIGS} >= {"cifar10.yaml", "imagenet.yaml"}


def test_overrides_and_values():
    cfg = load_config(
        None, ["optim.lr=0.3", "train.max_steps=7", "data.root=~"], {"data.root": "/x/1"}
    )
    assert cfg.optim.lr == 0.3 and cfg.train.max_steps == 7 and cfg.data.root == "/x/1"
    assert load_config(None, ["train.max_steps=null"]).train.max_steps is None
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0  # int accepted for float
    assert parse_override("a.b= yes") == ("a.b", True)


@pytest.mark.parametrize(
    "override, match",
    [
        ("optim.lrr=0.1", r"unknown config key optim\.lrr"),
        ("trian.epochs=1", "unknown config key trian"),
        ("optim.lr=fast", r"optim\.lr: expected float"),
        ("train.max_steps=1.5", r"train\.max_steps: expected int"),
        ("data.backend=ffcv", r"data\.backend: must be one of"),
        ("optim.shared_grad=avg", "shared_grad"),
        ("lr", "must look like"),
        ("optim=3", "must be a mapping"),
    ],
)
def test_bad_overrides_are_named(override, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, [override])


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config("configs/nope.yaml")
