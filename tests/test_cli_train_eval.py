"""`fastscarlet train` and `fastscarlet eval` end to end on a tiny JPEG folder, and the evaluation
functions against independent computations (numpy formulas, a hand-written BN recalibration)."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tiny import make_image_folder, tiny_config_dict
from torch import nn

from fastscarlet.cli import main
from fastscarlet.config import config_from_dict
from fastscarlet.data import build_loader
from fastscarlet.evaluate import evaluate, evaluate_paths, recalibrate_bn
from fastscarlet.nn.supernet import SuperNet
from fastscarlet.space import build_space
from fastscarlet.train.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli_data")
    make_image_folder(root, per_class=8, split="train")
    make_image_folder(root, per_class=4, split="val")
    return root


@pytest.fixture()
def recipe(data_root, tmp_path) -> Path:
    path = tmp_path / "recipe.yaml"
    cfg = tiny_config_dict(data_root, tmp_path / "unused")
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_cli_flags_overrides_and_resume(recipe, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--config", str(recipe), "--out", str(out), "--device", "cpu", "--seed", "3"]
    assert main([*args, "--max-steps", "2", "optim.lr=0.05", "sampler.name=uniform"]) == 0
    ck = load_checkpoint(out / "last.pt")
    assert ck["step"] == 2
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["optim"]["lr"] == 0.05 and saved["train"]["seed"] == 3
    assert saved["sampler"]["name"] == "uniform"
    steps = [json.loads(ln)["step"] for ln in (out / "log.jsonl").read_text().splitlines()[1:]]
    assert steps[:2] == [1, 2]
    # --resume continues the same run (same recipe and overrides) to step 3.
    resume = [*args, "--max-steps", "3", "optim.lr=0.05", "sampler.name=uniform", "--resume"]
    assert main(resume) == 0
    assert load_checkpoint(out / "last.pt")["step"] == 3
    capsys.readouterr()
    # An unknown key is a one-line error naming it, exit status 2.
    assert main([*args, "--max-steps", "1", "optim.lrr=0.1"]) == 2
    assert "optim.lrr" in capsys.readouterr().err


def test_sigkill_then_resume_equals_an_uninterrupted_run(recipe, tmp_path):
    """`fastscarlet train` with a checkpoint every step, killed with SIGKILL (no handler, no
    cleanup) once a checkpoint exists, then `--resume`: the final last.pt holds the weights of an
    uninterrupted run bit for bit. Uniform sampling: 6 steps per epoch, so the kill lands
    mid-epoch and the resumed run crosses an epoch boundary."""
    args = ["train", "--config", str(recipe), "--device", "cpu", "--max-steps", "8",
            "sampler.name=uniform", "train.checkpoint_every=1"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    out = tmp_path / "killed"
    # the child registers the tiny space (tests/cli_entry.py), then runs fastscarlet.cli.main
    cmd = [sys.executable, str(Path(__file__).with_name("cli_entry.py")), *args, "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (out / "last.pt").exists():
        assert proc.poll() is None, f"ended before its first checkpoint: {proc.stdout.read()}"
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.005)
    proc.kill()
    assert proc.wait() == -signal.SIGKILL
    proc.stdout.close()
    killed_at = load_checkpoint(out / "last.pt")
    assert 1 <= killed_at["step"] < 8 and killed_at["batch_in_epoch"] > 0  # mid-run, mid-epoch
    assert main([*args, "--out", str(out), "--resume"]) == 0
    whole, final = load_checkpoint(tmp_path / "whole" / "last.pt"), load_checkpoint(out / "last.pt")
    assert final["step"] == whole["step"] == 8 and final["epoch"] == whole["epoch"] == 1
    assert final["model"].keys() == whole["model"].keys()
    for k, v in whole["model"].items():
        assert torch.equal(final["model"][k], v), k
    assert final["sampler"] == whole["sampler"]


def _reference_path_accuracy(ck: dict, genome: list[int], root: Path, calib_batches: int):
    """A hand-written BN recalibration (per-batch statistics averaged over the batches) and a plain
    argmax loop: an implementation independent of fastscarlet.evaluate."""
    cfg = config_from_dict(ck["config"])
    model = SuperNet(build_space(cfg.space))
    model.load_state_dict(ck["model"])
    sub = model.subnet(genome, identity="let")
    dc = cfg.data
    common = dict(image_size=dc.image_size, num_workers=0, recipe=dc.recipe, seed=0)
    calib = build_loader(root, "train", "torch", batch_size=dc.eval_batch_size, augment=False,
                         shuffle=True, **common)  # fmt: skip
    bns = [m for m in sub.modules() if isinstance(m, nn.BatchNorm2d)]
    stats: dict[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]] = {m: [] for m in bns}

    def hook(m, inp, _out):
        x = inp[0].double()
        stats[m].append((x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=True)))

    handles = [m.register_forward_hook(hook) for m in bns]
    sub.train()
    with torch.no_grad():
        for i, (x, _) in enumerate(calib):
            if i == calib_batches:
                break
            sub(x)
    for h in handles:
        h.remove()
    for m in bns:
        m.running_mean.copy_(torch.stack([s[0] for s in stats[m]]).mean(0))
        m.running_var.copy_(torch.stack([s[1] for s in stats[m]]).mean(0))
    sub.eval()
    val = build_loader(root, "val", "torch", batch_size=5, **common)
    hits = n = 0
    with torch.no_grad():
        for x, y in val:
            hits += int((sub(x).argmax(1) == y).sum())
            n += len(y)
    return 100.0 * hits / n, n


def test_eval_cli_matches_a_hand_written_recalibration(recipe, data_root, tmp_path, capsys):
    out = tmp_path / "run"
    train = ["train", "--config", str(recipe), "--out", str(out), "--max-steps", "4"]
    assert main([*train, "data.eval_batch_size=6"]) == 0
    genomes = ["0,4,2", "1,1,3"]
    capsys.readouterr()
    argv = ["eval", "--checkpoint", str(out / "last.pt"), "--calib-batches", "3", "--json"]
    assert main([*argv, *[a for g in genomes for a in ("--genome", g)]]) == 0
    report = json.loads(capsys.readouterr().out)
    ck = load_checkpoint(out / "last.pt")
    for g, row in zip(genomes, report["paths"], strict=True):
        top1, n = _reference_path_accuracy(ck, [int(c) for c in g.split(",")], data_root, 3)
        assert row["genome"] == [int(c) for c in g.split(",")]
        assert row["images"] == n == 12
        assert row["top1"] == pytest.approx(top1, abs=1e-9)
    assert report["mean_top1"] == pytest.approx(np.mean([r["top1"] for r in report["paths"]]))
    # Random paths: --paths N rows; a file that is not a checkpoint: a one-line error.
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--paths", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["paths"]) == 3
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--batch-size", "0"]) == 2
    assert "--batch-size must be at least 1" in capsys.readouterr().err
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": torch.zeros(1)}, bogus)
    assert main(["eval", "--checkpoint", str(bogus)]) == 2
    assert "not a fastscarlet supernet checkpoint" in capsys.readouterr().err


def test_recalibrate_bn_is_the_mean_of_the_batch_statistics():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    model = nn.Sequential(conv, nn.BatchNorm2d(4, momentum=0.3), nn.ReLU())
    model[1].running_mean.fill_(5.0)  # stale statistics to be replaced
    model.eval()
    batches = [(torch.randn(6, 3, 8, 8) * (i + 1), torch.zeros(6)) for i in range(3)]
    assert recalibrate_bn(model, batches, num_batches=2) == 12
    with torch.no_grad():
        z = [conv(x).double() for x, _ in batches[:2]]
    mean = torch.stack([t.mean((0, 2, 3)) for t in z]).mean(0)
    var = torch.stack([t.var((0, 2, 3), unbiased=True) for t in z]).mean(0)
    torch.testing.assert_close(model[1].running_mean.double(), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model[1].running_var.double(), var, rtol=1e-5, atol=1e-6)
    assert model[1].momentum == 0.3 and not model.training  # restored
    with pytest.raises(ValueError, match="no batches"):
        recalibrate_bn(model, [])


def test_evaluate_top1_top5_and_loss_against_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(37, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 37)
    batches = [(torch.from_numpy(logits[i : i + 8]), torch.from_numpy(labels[i : i + 8]))
               for i in range(0, 37, 8)]  # fmt: skip
    acc = evaluate(nn.Identity(), batches)
    order = np.argsort(-logits, axis=1)
    top1 = 100 * np.mean(order[:, 0] == labels)
    top5 = 100 * np.mean([labels[i] in order[i, :5] for i in range(37)])
    lse = np.log(np.exp(logits.astype(np.float64)).sum(1))
    loss = np.mean(lse - logits[np.arange(37), labels])
    assert acc.images == 37
    assert acc.top1 == pytest.approx(top1) and acc.top5 == pytest.approx(top5)
    assert math.isclose(acc.loss, loss, rel_tol=1e-5)


def test_evaluate_paths_leaves_the_supernet_untouched(data_root):
    cfg = config_from_dict(tiny_config_dict(data_root, "unused"))
    net = SuperNet(build_space(cfg.space))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    common = dict(image_size=16, num_workers=0, recipe="cifar")
    calib = build_loader(data_root, "train", "torch", batch_size=6, augment=False, **common)
    val = build_loader(data_root, "val", "torch", batch_size=6, **common)
    res = evaluate_paths(net, [[0, 4, 2], [3, 3, 3]], calib, val, calib_batches=2)
    assert [r.images for r in res] == [12, 12]
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
