"""Supernet Shifting (fastscarlet.search.shifting): each new genome trained then scored, against a
written-out SGD reference; two lanes against per-lane copies; exact state round trip; optimizer
reuse; transfer; the engine's checks. Through the CLI on a CIFAR-10 subset: SIGKILL mid-generation
and --resume, torchrun 2 gloo ranks equal to one process with --shift-parallel 2, transfer (the
result opens with eval and train --resume), bad input."""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import test_cli_search
import tiny
import torch
import yaml
from test_cli_search import CIFAR, _free_port

from fastscarlet.cli import main
from fastscarlet.config import config_from_dict
from fastscarlet.data import build_loader
from fastscarlet.evaluate import evaluate_paths
from fastscarlet.nn.supernet import SuperNet
from fastscarlet.search import CostEvaluator, Search, SearchConfig, combine
from fastscarlet.search.shifting import ShiftingEvaluator, transfer_supernet
from fastscarlet.train.checkpoint import load_supernet
from fastscarlet.train.optim import build_sgd

HERE = Path(__file__).parent
GENOMES = [(0, 1, 2), (3, 3, 4), (1, 0, 0), (2, 4, 1)]
needs_cifar = pytest.mark.skipif(not CIFAR.is_dir(), reason="needs ../shared/data/cifar10")


# -- in process, on a tiny 3-class image folder ------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shift_images")
    tiny.make_image_folder(root, classes=3, per_class=14, split="train")  # 5 batches of 8
    tiny.make_image_folder(root, classes=3, per_class=4, split="val")
    return root


def make_net(folder: Path, seed: int = 0) -> SuperNet:
    torch.manual_seed(seed)
    net = SuperNet(tiny.tiny_space(3))
    net.config = config_from_dict(tiny.tiny_config_dict(folder, folder / "run"))
    return net


def loaders(folder: Path):
    def train(lane: int, lanes: int):
        return build_loader(
            folder, "train", batch_size=4, image_size=16, num_workers=0, recipe="cifar", seed=0,
            rank=lane, world_size=lanes,
        )  # fmt: skip

    common = dict(batch_size=12, image_size=16, num_workers=0, recipe="cifar")
    calib = build_loader(folder, "train", augment=False, shuffle=True, **common)
    return train, calib, build_loader(folder, "val", **common)


def shifter(net, folder: Path, **kw) -> ShiftingEvaluator:
    train, calib, val = loaders(folder)
    kw = {"steps": 4, "lr": 0.05, "calib_batches": 1, **kw}
    return ShiftingEvaluator(net, train, calib, val, **kw)


def sgd(net, lr=0.05):
    return build_sgd(net, lr, 0.9, False, 4e-5)  # decay on conv/linear weights only


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    bad = [k for k in a if not torch.equal(a[k], b[k])]
    assert not bad, f"{len(bad)} tensors differ, e.g. {bad[:3]}"


def test_each_genome_is_trained_then_scored_like_a_written_out_reference(folder):
    """4 genomes x 4 steps (16 batches: the 10-batch epoch wraps): the same scores and weights as
    plain SGD (momentum 0.9, wd 4e-5 on weights, label smoothing 0.1) on each path in turn, each
    genome scored after its own steps; choices no genome uses are untouched."""
    net = make_net(folder)
    start = copy.deepcopy(net.state_dict())
    ev = shifter(net, folder)
    got = ev(GENOMES)

    ref = make_net(folder)
    opt = sgd(ref)
    train, calib, val = loaders(folder)
    loader = train(0, 1)
    batches = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        batches += [(x, y) for x, y in loader]
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    want = []
    for i, g in enumerate(GENOMES):
        for x, y in batches[4 * i : 4 * i + 4]:
            ref.train()
            opt.zero_grad(set_to_none=True)
            loss_fn(ref(x, g), y).backward()
            opt.step()
        (acc,) = evaluate_paths(ref, [g], calib, val, 1)
        want.append({"acc": acc.top1, "acc5": acc.top5, "loss": acc.loss})
    assert got == want
    assert_same_state(net.state_dict(), ref.state_dict())
    assert ev.positions == [[1, 6]] and ev.updates == 16
    unused = [k for k in start if k.startswith("layers.2.candidates.E2K5SE.")]  # choice 3
    assert unused and all(torch.equal(net.state_dict()[k], start[k]) for k in unused)


def test_two_lanes_average_the_gradients_of_the_paths_that_use_them(folder):
    """One update with 2 lanes: each lane's own batch (shard k of 2) from the same start; every
    parameter gets the mean of the lanes that used it, every BN the mean of their statistics."""
    net = make_net(folder)
    ref = make_net(folder)
    genomes = [(0, 1, 2), (0, 3, 4)]  # layer 0 shared, layers 1-2 not
    shifter(net, folder, steps=1, lanes=2)(genomes)

    train, _, _ = loaders(folder)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    grads: dict[str, list] = {}
    stats: dict[str, list] = {}
    for lane, g in enumerate(genomes):
        m = copy.deepcopy(ref)
        x, y = next(iter(train(lane, 2)))
        loss_fn(m(x, g), y).backward()
        for name, p in m.named_parameters():
            if p.grad is not None:
                grads.setdefault(name, []).append(p.grad)
        for name, b in m.named_buffers():
            if not torch.equal(b, ref.get_buffer(name)) and "num_batches" not in name:
                stats.setdefault(name, []).append(b)
    assert len(grads["layers.0.candidates.E2K3.expand.weight"]) == 2
    assert len(grads["layers.1.candidates.E2K5.expand.weight"]) == 1
    opt = sgd(ref)
    for name, p in ref.named_parameters():
        if name in grads:
            p.grad = torch.stack(grads[name]).sum(0) / len(grads[name])
    opt.step()
    for name, values in stats.items():
        ref.get_buffer(name).copy_(torch.stack(values).sum(0) / len(values))
        if name.endswith("running_mean"):
            ref.get_buffer(name.replace("running_mean", "num_batches_tracked")).add_(1)
    assert_same_state(net.state_dict(), ref.state_dict())


def test_state_round_trip_continues_exactly(folder):
    """Stop after two genomes, save the state (weights_only), load it into a fresh evaluator:
    the next genomes give the same scores, weights, momentum and data positions."""
    a = shifter(make_net(folder), folder)
    a(GENOMES[:2])
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = shifter(make_net(folder, seed=1), folder)
    b.load_state_dict(torch.load(buf, weights_only=True))
    assert b(GENOMES[2:]) == a(GENOMES[2:])
    assert_same_state(a.supernet.state_dict(), b.supernet.state_dict())
    sa, sb = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k]["momentum_buffer"], sb[k]["momentum_buffer"]) for k in sa)
    assert a.positions == b.positions and a.updates == b.updates == 16


def test_the_checkpoints_momentum_is_reused_with_the_shifts_hyperparameters(folder):
    net = make_net(folder)
    trained = sgd(net, lr=0.5)  # a training run's optimizer, one step in
    _, calib, _ = loaders(folder)
    x, y = next(iter(calib))
    torch.nn.functional.cross_entropy(net(x, GENOMES[0]), y).backward()
    trained.step()
    source = {"optimizer": trained.state_dict(), "config": net.config.to_dict(), "step": 7}
    ev = shifter(net, folder, lr=1e-4, source=source)
    assert [g["lr"] for g in ev.optimizer.param_groups] == [1e-4, 1e-4]
    assert [g["weight_decay"] for g in ev.optimizer.param_groups] == [4e-5, 0.0]
    assert not any(g["nesterov"] for g in ev.optimizer.param_groups)
    for p in net.parameters():
        want = trained.state.get(p, {}).get("momentum_buffer")
        got = ev.optimizer.state.get(p, {}).get("momentum_buffer")
        assert (want is None and got is None) or torch.equal(want, got)
    ckpt = ev.training_checkpoint()
    assert ckpt["step"] == 7  # the training run's entries are carried over
    assert ckpt["optimizer"]["param_groups"] == trained.state_dict()["param_groups"]

    moved = transfer_supernet(net, 5, str(folder), seed=0)
    ev = shifter(moved, folder, source=source)
    assert moved.head.classifier.weight not in ev.optimizer.state
    assert moved.head.conv.weight in ev.optimizer.state

    with pytest.warns(UserWarning, match="no optimizer state: the shift starts a fresh SGD"):
        ev = shifter(make_net(folder), folder, source={"config": net.config.to_dict()})
    assert not ev.optimizer.state


def test_transfer_keeps_every_weight_but_a_fresh_seeded_classifier(folder):
    net = make_net(folder)
    moved = transfer_supernet(net, 5, "/data/new", seed=3)
    old, new = net.state_dict(), moved.state_dict()
    assert old.keys() == new.keys()
    for k in old:
        if k.startswith("head.classifier."):
            assert new[k].shape[0] == 5
        else:
            assert torch.equal(old[k], new[k]), k
    again = transfer_supernet(net, 5, "/data/new", seed=3).head.classifier.weight
    other = transfer_supernet(net, 5, "/data/new", seed=4).head.classifier.weight
    assert torch.equal(again, moved.head.classifier.weight)
    assert not torch.equal(other, moved.head.classifier.weight)
    assert moved.space.num_classes == moved.config.space.num_classes == 5
    assert moved.config.data.root == "/data/new"
    assert moved(torch.randn(2, 3, 16, 16), GENOMES[0]).shape == (2, 5)
    with pytest.raises(ValueError, match="has 1 class"):
        transfer_supernet(net, 1, "/data/one")


def test_the_engine_checks_the_shift_settings(folder, tmp_path):
    net = make_net(folder)
    ev = shifter(net, folder, steps=2, lr=1e-4)
    both = combine(CostEvaluator(net.space, 16), ev)
    objectives = [("acc", "max")]
    with pytest.raises(ValueError, match="set SearchConfig.shift=True"):
        Search(net.space, both, objectives, SearchConfig(population=2))
    with pytest.raises(ValueError, match="needs a ShiftingEvaluator"):
        Search(
            net.space, CostEvaluator(net.space, 16), [("madds", "min")], SearchConfig(shift=True)
        )
    with pytest.raises(ValueError, match="shift_steps: config 20, evaluator 2"):
        Search(net.space, both, objectives, SearchConfig(population=2, shift=True))
    for bad in ({"shift_steps": 0}, {"shift_parallel": 0}, {"shift_lr": 0.0}, {"shift_batch": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SearchConfig(**bad)
    with pytest.raises(ValueError, match="must be at least 1"):
        shifter(net, folder, lanes=0)

    cfg = SearchConfig(population=2, generations=0, shift=True, shift_steps=2, progress=False)
    Search(net.space, both, objectives, cfg).run(tmp_path)
    assert load_supernet(tmp_path / "supernet.pt").space.num_classes == 3
    ev3 = shifter(make_net(folder), folder, steps=3, lr=1e-4)
    cfg3 = SearchConfig(population=2, generations=0, shift=True, shift_steps=3, progress=False)
    with pytest.raises(ValueError, match="shift_steps: checkpoint 2, this run 3"):
        Search(net.space, ev3, objectives, cfg3).run(tmp_path, resume=True)


# -- the CLI on a CIFAR-10 subset ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def supernet(tmp_path_factory) -> Path:
    """test_cli_search's: a tiny-space supernet trained 3 steps on 200 CIFAR-10 images."""
    if not CIFAR.is_dir():
        pytest.skip("needs ../shared/data/cifar10")
    return test_cli_search.supernet.__wrapped__(tmp_path_factory)


def shift_args(ckpt: Path, out: Path, *extra: str) -> list[str]:
    return [
        "search", "--supernet", str(ckpt), "--objectives", "acc,madds", "--population", "4",
        "--generations", "2", "--seed", "2", "--calib-batches", "1", "--eval-batches", "1",
        "--device", "cpu", "--no-progress", "--shift", "--shift-steps", "3", "--out", str(out),
        *extra,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}


def _run(*args: str) -> None:
    cmd = [sys.executable, str(HERE / "cli_entry.py"), *args]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _outputs(out: Path) -> dict[str, bytes]:
    return {n: (out / n).read_bytes() for n in ("front.json", "archive.csv", "supernet.pt")}


@needs_cifar
def test_sigkill_mid_generation_then_resume_with_shift_is_exact(supernet, tmp_path):
    full = tmp_path / "full"
    _run(*shift_args(supernet, full))
    cut = tmp_path / "cut"
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "cli_entry.py"), *shift_args(supernet, cut)], env=_env()
    )
    history = cut / "history.csv"
    deadline = time.time() + 240
    while not history.exists() or len(history.read_text().splitlines()) < 2:
        assert proc.poll() is None, "the search ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    # generation 0 is written: kill inside generation 1, after some of its shift updates (a
    # quarter of generation 0's time; generation 1 evaluates 1 to 4 new genomes)
    time.sleep(0.25 * float(history.read_text().splitlines()[1].split(",")[5]))
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert not (cut / "front.json").exists()
    _run(*shift_args(supernet, cut, "--resume"))
    assert _outputs(cut) == _outputs(full)


@needs_cifar
@pytest.mark.slow
def test_two_gloo_ranks_shift_like_one_process_with_shift_parallel_2(supernet, tmp_path):
    one = tmp_path / "one"
    _run(*shift_args(supernet, one, "--shift-parallel", "2"))
    two = tmp_path / "two"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={_free_port()}", str(HERE / "cli_entry.py"), *shift_args(supernet, two),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("front.json", "archive.csv"):
        assert (two / name).read_bytes() == (one / name).read_bytes()
    a, b = (torch.load(d / "supernet.pt", weights_only=True) for d in (one, two))
    assert_same_state(a["model"], b["model"])
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k]["momentum_buffer"], sb[k]["momentum_buffer"]) for k in sa)


@needs_cifar
def test_transfer_to_another_class_count_gives_a_supernet_eval_and_train_accept(
    supernet, folder, tmp_path, capsys
):
    out = tmp_path / "t"
    args = shift_args(supernet, out, "--transfer-data", str(folder), "--generations", "0")
    assert main(args) == 0
    front = json.loads((out / "front.json").read_text())
    assert front and all(0 <= f["acc"] <= 100 for f in front)
    moved = load_supernet(out / "supernet.pt")
    assert moved.head.classifier.weight.shape[0] == moved.space.num_classes == 3
    assert moved.config.data.root == str(folder)
    before = load_supernet(supernet).state_dict()
    assert not torch.equal(before["stem.0.weight"], moved.state_dict()["stem.0.weight"])  # shifted

    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "supernet.pt"), "--paths", "1",
                 "--calib-batches", "1", "--device", "cpu", "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["paths"][0]["images"] == 12  # the new val split

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(out / "supernet.pt", run / "last.pt")
    recipe = yaml.safe_load((supernet.parent.parent / "recipe.yaml").read_text())
    recipe["space"]["num_classes"] = 3
    recipe["data"]["root"] = str(folder)
    recipe["train"]["out"] = str(run)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["train", "--config", str(tmp_path / "recipe.yaml"), "--resume",
                 "--max-steps", "4"]) == 0  # fmt: skip
    assert torch.load(run / "last.pt", weights_only=True)["step"] == 4


def cli_error(capsys, *args: str) -> str:
    """What a `fastscarlet` call that must fail with status 2 printed on stderr."""
    capsys.readouterr()
    assert main(list(args)) == 2
    return capsys.readouterr().err


@needs_cifar
def test_bad_input_is_named_and_no_optimizer_state_starts_fresh(supernet, tmp_path, capsys):
    base = shift_args(supernet, tmp_path / "bad")

    def err(*extra: str) -> str:
        return cli_error(capsys, *extra)

    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    assert "no class folders" in err(*base, "--transfer-data", str(empty))
    hollow = tmp_path / "hollow"
    (hollow / "train" / "a").mkdir(parents=True)
    (hollow / "train" / "b").mkdir(parents=True)
    assert "no images in" in err(*base, "--transfer-data", str(hollow))
    one = tmp_path / "one"
    tiny.make_image_folder(one, classes=1, per_class=4, split="train")
    tiny.make_image_folder(one, classes=1, per_class=2, split="val")
    assert "has 1 class(es); a classifier needs at least 2" in err(
        *base, "--transfer-data", str(one)
    )
    no_shift = [a for a in base if a not in ("--shift", "--shift-steps", "3")]
    assert "--transfer-data needs --shift" in err(*no_shift, "--transfer-data", str(one))
    i = base.index("--objectives")
    assert "needs an accuracy objective" in err(*base[: i + 1], "madds", *base[i + 2 :])
    assert "--shift-parallel must be at least 1" in err(*base, "--shift-parallel", "0")

    bare = tmp_path / "bare.pt"
    ckpt = torch.load(supernet, weights_only=True)
    torch.save({k: v for k, v in ckpt.items() if k != "optimizer"}, bare)
    fresh = shift_args(bare, tmp_path / "fresh", "--generations", "0", "--population", "2")
    with pytest.warns(UserWarning, match="no optimizer state: the shift starts a fresh SGD"):
        assert main(fresh) == 0
    written = torch.load(tmp_path / "fresh" / "supernet.pt", weights_only=True)
    assert written["optimizer"]["param_groups"][0]["lr"] == 1e-4  # the shift's own optimizer
