"""`fastscarlet demo` end to end at a tiny scale (the main job must keep working), and its choice of
front members."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fastscarlet.cli import main
from fastscarlet.cli.demo import pick
from fastscarlet.search.archive import Record

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def _rec(genome: int, acc: float, madds: float) -> Record:
    return Record((genome,), {"acc": acc, "madds": madds}, 0)


def test_pick_takes_the_most_accurate_the_cheapest_and_the_knee() -> None:
    front = [_rec(0, 50, 1), _rec(1, 80, 2), _rec(2, 84, 5), _rec(3, 85, 10)]
    chosen = pick(front)
    assert chosen["most accurate"].genome == (3,)
    assert chosen["cheapest"].genome == (0,)
    # farthest above the line from (1, 50) to (10, 85) in normalised units: genome 1
    assert chosen["knee"].genome == (1,)
    assert list(pick([_rec(7, 60, 3)])) == ["most accurate"]


@pytest.mark.skipif(not CIFAR.is_dir(), reason="needs ../shared/data/cifar10")
def test_demo_runs_end_to_end_on_a_small_image_folder(tmp_path, capsys) -> None:
    data = tmp_path / "data"
    for split, n in (("train", 40), ("test", 10)):
        for cls in sorted(p.name for p in (CIFAR / split).iterdir())[:4]:
            d = data / split / cls
            d.mkdir(parents=True)
            for f in sorted((CIFAR / split / cls).iterdir())[:n]:
                (d / f.name).symlink_to(f)
    out = tmp_path / "demo"
    args = ["demo", "--data", str(data), "--out", str(out), "--device", "cpu"]
    threads = torch.get_num_threads()
    assert main([*args, "--budget-minutes", "0.6"]) == 0
    assert torch.get_num_threads() == threads  # the caller's setting is restored
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) >= {"best", "front", "seconds", "data", "device"}
    assert set(summary["best"]) == {"genome", "readable", "acc", "madds", "params"}
    assert set(summary["seconds"]) == {"data", "train", "search", "export", "report"}
    assert summary["front"] and all(set(f) >= set(summary["best"]) for f in summary["front"])
    for row in summary["exported"]:
        assert row["weights"] == "scratch" and row["finetune_steps"] >= 11
        for f in row["files"]:
            assert Path(f).stat().st_size > 0
    html = (out / "report.html").read_text()
    assert "front.png" in html and summary["best"]["readable"] in html
    assert (out / "front.png").read_bytes()[:4] == b"\x89PNG"
    assert printed.rstrip().endswith(f"report: {(out / 'report.html').resolve()}")
    # an existing output folder is kept unless --force
    assert main([*args, "--budget-minutes", "0.6"]) == 2
    assert "--force" in capsys.readouterr().err
