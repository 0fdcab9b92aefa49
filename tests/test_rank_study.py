"""`fastscarlet rank-study` end to end at a tiny scale on real CIFAR-10 images (linked from
../shared): every variant trained, scored and ranked; the same command continues from its cache
(nothing retrained); a helper process's stand-alone networks are used; other settings are refused."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from test_cli_search import CIFAR, cifar_subset
from tiny import tiny_config_dict

from fastscarlet.cli import main
from fastscarlet.cli.rank_study import VARIANTS
from fastscarlet.nn import LinearStabilizer
from fastscarlet.train.checkpoint import load_supernet

pytestmark = pytest.mark.skipif(not CIFAR.is_dir(), reason="needs ../shared/data/cifar10")

KEYS = {"variant", "kendall_tau", "tau_ci", "spearman", "topk_precision"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("rank_study")
    data = cifar_subset(base / "cifar", train=8, test=3)
    cfg = tiny_config_dict(
        data, base / "unused", space={"num_classes": 10},
        data={"image_size": 16, "batch_size": 8, "eval_batch_size": 15},
    )  # fmt: skip
    recipe = base / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(cfg))
    return data, recipe


def study_args(data: Path, recipe: Path, out: Path, *extra: str) -> list[str]:
    return [
        "rank-study", "--data", str(data), "--archs", "3", "--out", str(out),
        "--config", str(recipe), "--supernet-epochs", "1", "--standalone-epochs", "1",
        "--standalone-batch", "16", "--calib-batches", "2", "--bootstrap", "50",
        "--shift-population", "2", "--shift-generations", "1", "--shift-steps", "2",
        "--noise-archs", "3", "--device", "cpu", "--no-progress", *extra,
    ]  # fmt: skip


def mtimes(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow  # five supernets, a shifting search and three networks, twice: ~30 s
def test_rank_study_end_to_end_and_resumed(setup, tmp_path, capsys):
    data, recipe = setup
    out = tmp_path / "study"
    # a helper process's share first: the stand-alone networks only, nothing else
    assert main(study_args(data, recipe, out, "--only", "standalone")) == 0
    assert len(list((out / "standalone").glob("*.json"))) == 3
    assert not (out / "supernets").exists() and not (out / "ranking.json").exists()
    standalone = mtimes(out / "standalone")

    assert main(study_args(data, recipe, out)) == 0
    assert mtimes(out / "standalone") == standalone  # the helper's networks were used
    records = json.loads((out / "ranking.json").read_text())
    assert [r["variant"] for r in records] == list(VARIANTS)
    study = json.loads((out / "study.json").read_text())
    assert len(study["architectures"]) == 3
    madds = [a["madds"] for a in study["architectures"]]
    assert madds == sorted(madds)
    for r in records:
        assert set(r) >= KEYS and r["n"] == 3 and r["complete"]
        assert len(r["tau_ci"]) == 2 and len(r["supernet_acc"]) == 3
        assert r["tau_ci"][0] <= r["tau_ci"][1]
        assert 0 <= r["topk_precision"] <= 1
    assert (out / "ranking.png").stat().st_size > 1000
    baselines = json.loads((out / "baselines.json").read_text())
    assert [b["baseline"] for b in baselines] == ["madds", "params"]
    madds_rank = baselines[0]
    assert (
        madds_rank["madds"] == madds
        and madds_rank["n"] == 3
        and KEYS - {"variant"} < set(madds_rank)
    )
    # the noise measurement: the same three networks trained again with seed 1
    noise = json.loads((out / "noise.json").read_text())
    assert (
        noise["seed"] == 1
        and noise["n"] == 3
        and len(list((out / "standalone_seed1").glob("*.json"))) == 3
    )
    assert noise["standalone_acc"] == records[0]["standalone_acc"]
    seed1 = [
        json.loads((out / "standalone_seed1" / f"{key}.json").read_text())["score"]["acc"]
        for key in noise["architectures"]
    ]
    assert noise["other_seed_acc"] == seed1
    assert noise["mean_abs_difference"] == pytest.approx(
        sum(abs(a - b) for a, b in zip(noise["other_seed_acc"], noise["standalone_acc"])) / 3
    )
    with open(out / "architectures.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and set(VARIANTS) < set(rows[0])
    # the plain-identity supernet has no LET; the shift trained fair_let's supernet further
    plain = load_supernet(out / "supernets" / "fair_plain" / "last.pt")
    assert not any(isinstance(m, LinearStabilizer) for m in plain.modules())
    assert json.loads((out / "shift" / "fair_let_shift" / "done.json").read_text())["updates"] > 0
    assert "scores fair_plain" in capsys.readouterr().out

    # the same command again: everything comes from the cache, also for a study written before a
    # config key existed (its default is what that study ran with)
    study = json.loads((out / "study.json").read_text())
    del study["settings"]["config"]["data"]["augment"]
    (out / "study.json").write_text(json.dumps(study))
    before = mtimes(out / "supernets") | mtimes(out / "shift") | mtimes(out / "scores")
    assert main(study_args(data, recipe, out)) == 0
    after = mtimes(out / "supernets") | mtimes(out / "shift") | mtimes(out / "scores")
    assert after == before
    assert json.loads((out / "ranking.json").read_text()) == records

    # another setting with the same --out is refused, naming it
    capsys.readouterr()
    assert main(study_args(data, recipe, out, "--seed", "1")) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "seed: 0 there, 1 now" in err


def test_bad_arguments_are_named(setup, tmp_path, capsys):
    data, recipe = setup
    for extra, message in [
        (["--variants", "fair_let,nope"], "unknown variant ['nope']"),
        (["--topk", "4"], "--topk 4 is more than --archs 3"),
        (["--standalone-epochs", "0"], "--standalone-epochs must be positive"),
    ]:
        assert main(study_args(data, recipe, tmp_path / "x", *extra)) == 2
        assert message in capsys.readouterr().err
    args = study_args(data, recipe, tmp_path / "x")
    args[args.index("--archs") + 1] = "2"
    assert main(args) == 2
    assert "--archs must be at least 3" in capsys.readouterr().err
