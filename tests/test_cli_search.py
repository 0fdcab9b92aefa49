"""`fastscarlet search` end to end on a short CIFAR-10 supernet from `fastscarlet train`: a front,
an exact resume after SIGKILL mid-generation, torchrun with 2 gloo ranks equal to one process, and
the bad inputs of the issue (named errors, exit status 2)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fastscarlet.cli import main
from fastscarlet.cli.search import parse_objectives
from fastscarlet.space import get_space, validate_genome

HERE = Path(__file__).parent
CIFAR = HERE.parent.parent / "shared" / "data" / "cifar10"

pytestmark = pytest.mark.skipif(not CIFAR.is_dir(), reason="needs ../shared/data/cifar10")


def cifar_subset(root: Path, train: int, test: int) -> Path:
    """A small ImageFolder of real CIFAR-10 JPEGs, linked (not copied) from ../shared."""
    for split, n in (("train", train), ("test", test)):
        for cls in sorted(p.name for p in (CIFAR / split).iterdir()):
            d = root / split / cls
            d.mkdir(parents=True)
            for f in sorted((CIFAR / split / cls).iterdir())[:n]:
                (d / f.name).symlink_to(f)
    return root


@pytest.fixture(scope="module")
def supernet(tmp_path_factory) -> Path:
    """A tiny-space supernet trained 3 strict-fairness steps on 200 CIFAR-10 images."""
    import tiny

    base = tmp_path_factory.mktemp("search_cli")
    data = cifar_subset(base / "cifar", train=20, test=6)
    cfg = tiny.tiny_config_dict(
        data, base / "run", space={"num_classes": 10},
        data={"image_size": 32, "batch_size": 8, "eval_batch_size": 20},
    )  # fmt: skip
    recipe = base / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(recipe), "--max-steps", "3"]) == 0
    return base / "run" / "last.pt"


def search_args(ckpt: Path, out: Path, *extra: str) -> list[str]:
    return [
        "search", "--supernet", str(ckpt), "--objectives", "acc,madds,params",
        "--population", "6", "--generations", "3", "--seed", "2", "--mutation", "reinforced",
        "--calib-batches", "2", "--eval-batches", "2", "--device", "cpu", "--no-progress",
        "--out", str(out), *extra,
    ]  # fmt: skip


def _files(out: Path) -> dict[str, bytes]:
    return {n: (out / n).read_bytes() for n in ("front.json", "archive.csv")}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, str(HERE / "cli_entry.py"), *args]


def test_search_finds_a_front_and_prints_it(supernet, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(search_args(supernet, out, "--max-params", "1e9")) == 0
    printed = capsys.readouterr().out
    front = json.loads((out / "front.json").read_text())
    assert front and f"front: {len(front)} architectures" in printed
    space = get_space("tiny", num_classes=10)
    for f in front:
        assert validate_genome(space, f["genome"]) == tuple(f["genome"])
        assert 0 <= f["acc"] <= 100 and f["madds"] > 0 and f["params"] > 0
        assert f["readable"] in printed
    rows = (out / "archive.csv").read_text().splitlines()
    assert rows[0] == "readable,genome,acc,madds,params,generation,feasible"
    assert len(rows) - 1 == len({r.split(",")[0] for r in rows[1:]})  # each genome once
    assert (out / "front.png").exists() and (out / "hypervolume.png").exists()


def test_sigkill_mid_generation_then_resume_is_exact(supernet, tmp_path):
    full = tmp_path / "full"
    subprocess.run(_cli(*search_args(supernet, full)), env=_env(), check=True, timeout=300)
    cut = tmp_path / "cut"
    proc = subprocess.Popen(_cli(*search_args(supernet, cut)), env=_env())
    deadline = time.time() + 240
    # generation 1 is written: kill during generation 2's evaluation
    while (
        not (cut / "history.csv").exists()
        or len((cut / "history.csv").read_text().splitlines()) < 3
    ):
        assert proc.poll() is None, "the search ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert not (cut / "front.json").exists()
    subprocess.run(
        _cli(*search_args(supernet, cut, "--resume")), env=_env(), check=True, timeout=300
    )
    assert _files(cut) == _files(full)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_gloo_ranks_equal_one_process(supernet, tmp_path):
    one = tmp_path / "one"
    assert main(search_args(supernet, one)) == 0
    two = tmp_path / "two"
    launcher = HERE / "cli_entry.py"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={_free_port()}", str(launcher), *search_args(supernet, two),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _files(two) == _files(one)
    assert proc.stdout.count("front: ") == 1  # only rank 0 prints


def test_bad_input_is_a_named_error(supernet, tmp_path, capsys):
    out = tmp_path / "bad"

    def err(*args: str) -> str:
        capsys.readouterr()
        assert main(list(args)) == 2
        return capsys.readouterr().err

    base = search_args(supernet, out)
    i = base.index("--objectives")
    assert "unknown objective 'speed'" in err(*base[: i + 1], "acc,speed", *base[i + 2 :])
    assert "needs --latency-table" in err(*base[: i + 1], "acc,latency", *base[i + 2 :])
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    j = base.index("--supernet")
    assert "is not a torch checkpoint" in err(*base[: j + 1], str(text), *base[j + 2 :])
    assert "no genome of the tiny space can meet madds <= 1" in err(*base, "--max-madds", "1")
    assert "--population must be at least 1" in err(*base, "--population", "0")


def test_objective_directions():
    assert parse_objectives("acc,madds", "nsga2") == [("acc", "max"), ("madds", "min")]
    assert parse_objectives("acc,latency,params", "moga")[2] == ("params", "max")
    assert parse_objectives("acc,params:max", "nsga2")[1] == ("params", "max")
    with pytest.raises(ValueError, match="direction must be min or max"):
        parse_objectives("acc:up", "nsga2")


def test_latency_objective_from_a_table(supernet, tmp_path):
    """`--objectives acc,latency --latency-table T --max-latency L`: every front member carries
    the table's prediction for its genome, and meets the constraint."""
    from fastscarlet.cost import LatencyModel

    table = tmp_path / "tiny.json"
    args = ["latency-table", "--space", "tiny", "--resolution", "32", "--rounds", "1"]
    args += ["--passes", "1", "--calib-subnets", "2", "--no-progress", "--out", str(table)]
    assert main(args) == 0
    model = LatencyModel(table)
    out = tmp_path / "lat"
    base = search_args(supernet, out, "--latency-table", str(table))
    i = base.index("--objectives")
    base[i + 1] = "acc,latency"
    space = get_space("tiny", num_classes=10)
    bound = float(sorted(model(g) for g in _all_genomes(space))[len(_all_genomes(space)) // 2])
    assert main([*base, "--max-latency", str(bound)]) == 0
    front = json.loads((out / "front.json").read_text())
    assert front
    for rec in front:
        assert rec["latency"] == pytest.approx(model(rec["genome"]), rel=1e-9)
        assert rec["latency"] <= bound


def _all_genomes(space) -> list[tuple[int, ...]]:
    import itertools

    return list(itertools.product(*(layer.allowed for layer in space.layers)))
