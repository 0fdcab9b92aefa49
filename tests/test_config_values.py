"""Config values as a new user writes them: YAML 1.2 floats, ranges, malformed YAML, relative paths."""

from pathlib import Path

import pytest

from fastscarlet.config import load_config, parse_override


@pytest.mark.parametrize(
    "text, value", [("1e-3", 0.001), ("5E+4", 5e4), (".5e2", 50.0), ("-2e-1", -0.2)]
)
def test_exponent_without_dot_is_a_float(text, value):
    assert parse_override(f"optim.lr={text}") == ("optim.lr", value)


def test_exponent_floats_in_a_recipe_and_an_override(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim:\n  lr: 1e-3\n  weight_decay: 4e-5\n")
    cfg = load_config(recipe, ["optim.min_lr=1e-6"])
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.min_lr) == (1e-3, 4e-5, 1e-6)


@pytest.mark.parametrize(
    "override, match",
    [
        ("optim.lr=-1", r"optim\.lr: must be > 0, got -1\.0"),
        ("optim.lr=0", r"optim\.lr: must be > 0"),
        ("optim.lr=.nan", r"optim\.lr: must be a finite number, got nan"),
        ("optim.lr=.inf", r"optim\.lr: must be a finite number, got inf"),
        ("optim.momentum=1", r"optim\.momentum: must be in \[0, 1\), got 1\.0"),
        ("optim.momentum=-0.1", r"optim\.momentum: must be in \[0, 1\)"),
        ("optim.weight_decay=-1e-5", r"optim\.weight_decay: must be >= 0"),
        ("optim.label_smoothing=1", r"optim\.label_smoothing: must be in \[0, 1\)"),
        ("optim.warmup_epochs=-1", r"optim\.warmup_epochs: must be >= 0"),
        ("optim.min_lr=-.inf", r"optim\.min_lr: must be a finite number"),
        ("optim.grad_clip=-1", r"optim\.grad_clip: must be >= 0"),
        ("data.batch_size=0", r"data\.batch_size: must be >= 1, got 0"),
        ("data.eval_batch_size=0", r"data\.eval_batch_size: must be >= 1"),
        ("data.num_workers=-1", r"data\.num_workers: must be >= 0"),
        ("data.image_size=0", r"data\.image_size: must be >= 1"),
        ("data.crop_scale_min=0", r"data\.crop_scale_min: must be in \(0, 1\]"),
        ("data.crop_scale_min=1.5", r"data\.crop_scale_min: must be in \(0, 1\]"),
        ("space.num_classes=0", r"space\.num_classes: must be >= 1"),
        ("space.width=0", r"space\.width: must be > 0"),
        ("space.stem_stride=0", r"space\.stem_stride: must be >= 1"),
        ("train.epochs=-1", r"train\.epochs: must be >= 0"),
        ("train.max_steps=0", r"train\.max_steps: must be >= 1 \(null lets train\.epochs decide\)"),
        ("train.seed=-1", r"train\.seed: must be >= 0"),
        ("train.log_every=0", r"train\.log_every: must be >= 1"),
        ("train.checkpoint_every=-1", r"train\.checkpoint_every: must be >= 0"),
    ],
)
def test_out_of_range_values_are_named(override, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, [override])


def test_range_ends_that_are_allowed():
    cfg = load_config(
        None,
        [
            "optim.momentum=0",
            "optim.weight_decay=0",
            "optim.label_smoothing=0",
            "data.crop_scale_min=1",
            "data.num_workers=0",
            "train.epochs=0",
            "train.max_steps=1",
            "train.checkpoint_every=0",
            "space.stem_stride=null",
        ],
    )
    assert cfg.optim.momentum == 0.0 and cfg.data.crop_scale_min == 1.0 and cfg.train.max_steps == 1


def test_range_check_applies_to_recipes_and_flag_values(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optim:\n  lr: -0.1\n")
    with pytest.raises(ValueError, match=r"optim\.lr: must be > 0"):
        load_config(recipe)
    with pytest.raises(ValueError, match=r"train\.max_steps: must be >= 1"):
        load_config(None, values={"train.max_steps": 0})


def test_malformed_yaml_recipe_names_file_and_line(tmp_path):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("optim:\n  lr: 0.1\n   momentum: 0.9\n")
    with pytest.raises(ValueError, match=r"config file .*broken\.yaml is not valid YAML: .*line 3"):
        load_config(recipe)


def test_malformed_yaml_override_is_a_value_error():
    with pytest.raises(ValueError, match=r"override 'optim\.lr=\[1' is not valid YAML"):
        load_config(None, ["optim.lr=[1"])


def test_missing_relative_config_names_the_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as info:
        load_config("configs/nope.yaml")
    msg = str(info.value)
    assert str(tmp_path / "configs" / "nope.yaml") in msg and "current folder" in msg


def test_recipe_data_root_is_taken_from_the_recipe_folder(tmp_path, monkeypatch):
    (tmp_path / "data" / "c10").mkdir(parents=True)
    recipe = tmp_path / "recipes" / "r.yaml"
    recipe.parent.mkdir()
    recipe.write_text("data:\n  root: ../data/c10\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_config(recipe).data.root == str(tmp_path / "data" / "c10")
    # missing beside the recipe: left as written, taken from the current folder
    recipe.write_text("data:\n  root: ../nowhere\n")
    assert load_config(recipe).data.root == "../nowhere"
    # a root given as an override is the user's, from the current folder
    assert load_config(recipe, ["data.root=../data/c10"]).data.root == "../data/c10"


def test_bundled_cifar_recipe_points_beside_the_checkout():
    import yaml

    recipe = Path(__file__).resolve().parents[1] / "configs" / "cifar10.yaml"
    written = yaml.safe_load(recipe.read_text())["data"]["root"]
    # relative to the recipe's folder, so `--config .../configs/cifar10.yaml` works from anywhere
    assert (recipe.parent / written).resolve() == recipe.parents[2] / "shared" / "data" / "cifar10"


def test_missing_relative_data_root_names_the_absolute_path(tmp_path, monkeypatch):
    from fastscarlet.data.folder import resolve_split, scan_image_folder

    monkeypatch.chdir(tmp_path)
    for call in (lambda: resolve_split("data/c10", "train"), lambda: scan_image_folder("d/train")):
        with pytest.raises(FileNotFoundError) as info:
            call()
        assert str(tmp_path) in str(info.value) and "current folder" in str(info.value)


# What is known of the papers' (or the nearest public third-party) supernet training, papers.md 2.2:
# FairNAS accumulates the path gradients (UniNAS sums them), UniNAS's SGD has no Nesterov, its cosine
# ends at 1e-5, nnabla-nas clips at 5.
KNOWN_TRAINING = {
    "optim.shared_grad": "sum",
    "optim.nesterov": False,
    "optim.min_lr": 1e-5,
    "optim.grad_clip": 5.0,
}


def test_the_paper_scale_recipe_names_each_deviation_in_its_header():
    recipe = Path(__file__).resolve().parents[1] / "configs" / "imagenet.yaml"
    cfg = load_config(recipe).to_dict()
    text = recipe.read_text()
    header = text[text.index("DEVIATES") : text.index("\nspace:")]
    for key, known in KNOWN_TRAINING.items():
        section, name = key.split(".")
        if cfg[section][name] != known:
            assert f"- {key}: " in header, f"{key} differs from the papers' {known!r}, unexplained"
