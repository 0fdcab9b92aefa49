"""The supernet trainer on CPU: step semantics, exact resume, checkpoints, bad input, DDP (gloo)."""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tiny
import torch
from torch import nn

from fastscarlet.config import config_from_dict
from fastscarlet.data import build_loader
from fastscarlet.nn.supernet import SuperNet
from fastscarlet.train.checkpoint import save_atomic
from fastscarlet.train.samplers import StrictFairSampler, make_sampler
from fastscarlet.train.trainer import NonFiniteLossError, SupernetTrainer

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tiny.make_image_folder(tmp_path_factory.mktemp("imgs"), per_class=16)


def make_trainer(data_root, out, resume=False, overrides=(), **sections):
    cfg = config_from_dict(tiny.tiny_config_dict(data_root, out, **sections), list(overrides))
    return SupernetTrainer(cfg, resume=resume)


def flat_state(t: SupernetTrainer):
    return {k: v.clone() for k, v in t.model.state_dict().items()}


def test_strict_fair_step_matches_a_plain_loop(data_root, tmp_path):
    """One strict-fairness step == a hand-written loop: per path its own batch, backward,
    gradients accumulated (sum), one SGD update. Checked with plain SGD so update = -lr * grad."""
    tr = make_trainer(
        data_root,
        tmp_path / "a",
        optim={"momentum": 0.0, "weight_decay": 0.0, "grad_clip": 0.0, "shared_grad": "sum",
               "warmup_epochs": 0, "label_smoothing": 0.0},
    )  # fmt: skip
    ref = SuperNet(tr.space)
    ref.load_state_dict(tr.model.state_dict())
    paths = StrictFairSampler(tr.space, seed=0).sample()
    assert len(paths) == 5
    tr.loader.set_epoch(0)
    it = iter(tr.loader)
    batches = [next(it) for _ in paths]
    lr = tr.optimizer.param_groups[0]["lr"]
    tr.train_step(batches, paths)
    ref.train()
    for (x, y), g in zip(batches, paths):
        nn.functional.cross_entropy(ref(x, g), y).backward()
    for (name, p_new), p_ref in zip(tr.model.named_parameters(), ref.parameters()):
        expected = p_ref.detach() - lr * (p_ref.grad if p_ref.grad is not None else 0)
        torch.testing.assert_close(p_new.detach(), expected, rtol=1e-5, atol=1e-6, msg=name)
    # every choice of every layer was updated in this one step
    for layer_new, layer_old in zip(tr.model.layers, ref.layers):
        for name in layer_new.candidates:
            w_new = next(layer_new.candidates[name].parameters())
            w_old = next(layer_old.candidates[name].parameters())
            assert not torch.equal(w_new, w_old), f"choice {name} was not trained"


def test_shared_grad_mean_divides_by_use_count(data_root, tmp_path):
    common = {"momentum": 0.0, "weight_decay": 0.0, "grad_clip": 0.0, "warmup_epochs": 0}
    ts = make_trainer(data_root, tmp_path / "s", optim={**common, "shared_grad": "sum"})
    tm = make_trainer(data_root, tmp_path / "m", optim={**common, "shared_grad": "mean"})
    paths = StrictFairSampler(ts.space, seed=0).sample()
    ts.loader.set_epoch(0)
    batches = [b for b, _ in zip(ts.loader, paths)]
    before = {k: v.clone() for k, v in ts.model.named_parameters()}
    ts.train_step(batches, paths)
    tm.train_step(batches, paths)
    ds = {k: before[k] - v.detach() for k, v in ts.model.named_parameters()}
    dm = {k: before[k] - v.detach() for k, v in tm.model.named_parameters()}
    # shared (stem/head): mean = sum / 5 paths; a choice used by exactly one path: equal
    torch.testing.assert_close(dm["head.classifier.weight"], ds["head.classifier.weight"] / 5)
    torch.testing.assert_close(dm["stem.0.weight"], ds["stem.0.weight"] / 5)
    torch.testing.assert_close(
        dm["layers.2.candidates.E2K5.expand.weight"], ds["layers.2.candidates.E2K5.expand.weight"]
    )


@pytest.fixture(scope="module")
def uninterrupted(data_root, tmp_path_factory):
    """4 steps in one go: 2 epochs of 2 steps (5 batches each)."""
    full = make_trainer(data_root, tmp_path_factory.mktemp("full"), train={"max_steps": 4})
    full.fit()
    assert full.steps_per_epoch == 2 and full.epoch == 2
    return full


@pytest.mark.parametrize("stop", [1, 2, 3], ids=["mid_epoch_0", "epoch_boundary", "mid_epoch_1"])
def test_exact_resume_is_bitwise(data_root, tmp_path, uninterrupted, stop):
    """Stopped after ``stop`` steps (mid-epoch: the checkpoint holds a batch offset into the
    epoch), resumed from last.pt: weights, BN statistics, momentum and sampler state equal the
    uninterrupted run's bit for bit."""
    part = make_trainer(data_root, tmp_path, train={"max_steps": 4})
    part.fit(until_step=stop)
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    assert (ck["step"], ck["epoch"], ck["batch_in_epoch"]) == (stop, stop // 2, 5 * (stop % 2))
    resumed = make_trainer(data_root, tmp_path, resume=True, train={"max_steps": 4})
    assert resumed.step == stop
    resumed.fit()
    a, b = flat_state(uninterrupted), flat_state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa, sb = uninterrupted.optimizer.state_dict(), resumed.optimizer.state_dict()
    for i in sa["state"]:
        assert torch.equal(sa["state"][i]["momentum_buffer"], sb["state"][i]["momentum_buffer"])
    assert uninterrupted.sampler.state_dict() == resumed.sampler.state_dict()
    assert (resumed.step, resumed.epoch) == (4, 2)


def test_checkpoint_is_plain_data(data_root, tmp_path):
    tr = make_trainer(data_root, tmp_path, train={"max_steps": 2, "keep_step_checkpoints": True,
                                                  "checkpoint_every": 1})  # fmt: skip
    tr.fit()
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ck["step"] == 2 and set(ck["model"]) == set(tr.model.state_dict())
    for key in ("optimizer", "scheduler", "scaler", "sampler", "rng", "epoch", "batch_in_epoch"):
        assert key in ck
    assert (tmp_path / "step_1.pt").exists() and (tmp_path / "step_2.pt").exists()
    # a supernet built from the checkpoint computes what the trained one does
    net = SuperNet(tr.space)
    net.load_state_dict(ck["model"])
    g = tr.sampler.sample()[0]
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(net.eval()(x, g), tr.model.eval()(x, g))


def test_atomic_write_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    save_atomic({"step": 1}, target)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"step": 2}, target)
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_observability_files(data_root, tmp_path):
    tr = make_trainer(data_root, tmp_path, train={"max_steps": 3, "tensorboard": True})
    tr.fit()
    records = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "step" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert {"loss", "lr", "img_per_s", "grad_norm", "epoch"} <= set(steps[0])
    assert all(math.isfinite(r["loss"]) for r in steps)
    saved = (tmp_path / "config.yaml").read_text()
    assert "strict_fair" in saved and "max_steps: 3" in saved
    assert any((tmp_path / "tb").iterdir())


def test_lr_schedule_warmup_then_cosine(data_root, tmp_path):
    tr = make_trainer(data_root, tmp_path, optim={"warmup_epochs": 1.0, "lr": 0.1},
                      train={"epochs": 3})  # fmt: skip
    lrs = []
    for _ in range(tr.total_steps):
        lrs.append(tr.optimizer.param_groups[0]["lr"])
        tr.optimizer.step()
        tr.scheduler.step()
    base = 0.1 * 4 / 128  # linear scaling from the reference batch of 128
    # 2 steps/epoch: warm-up over 2 steps (1/2, 2/2), then cosine over the remaining 4
    expected = [base * 0.5, base] + [base * 0.5 * (1 + math.cos(math.pi * t / 4)) for t in range(4)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-9)
    # no weight decay on BN parameters and biases
    groups = tr.optimizer.param_groups
    assert groups[1]["weight_decay"] == 0 and all(p.ndim == 1 for p in groups[1]["params"])


def test_nonfinite_loss_stops_and_keeps_last_good(data_root, tmp_path):
    tr = make_trainer(data_root, tmp_path, train={"max_steps": 5, "checkpoint_every": 1})
    tr.fit(until_step=2)
    good = torch.load(tmp_path / "last.pt", weights_only=True)
    with torch.no_grad():
        tr.model.head.classifier.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="step 3"):
        tr.fit()
    after = torch.load(tmp_path / "last.pt", weights_only=True)
    assert after["step"] == 2
    assert torch.equal(after["model"]["stem.0.weight"], good["model"]["stem.0.weight"])


def test_resume_with_other_space_or_recipe_is_refused(data_root, tmp_path):
    make_trainer(data_root, tmp_path, train={"max_steps": 1}).fit()
    with pytest.raises(ValueError, match=r"space\.num_classes: checkpoint 3, this run 4"):
        make_trainer(data_root, tmp_path, resume=True, space={"num_classes": 4},
                     train={"max_steps": 2})  # fmt: skip
    with pytest.raises(ValueError, match=r"sampler\.name"):
        make_trainer(data_root, tmp_path, resume=True, sampler={"name": "uniform"})
    with pytest.raises(FileExistsError, match="--resume"):
        make_trainer(data_root, tmp_path, train={"max_steps": 1})


def test_bad_data_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data root .*missing' is not a folder"):
        make_trainer(tmp_path / "missing", tmp_path / "o")
    empty = tmp_path / "empty"
    (empty / "train" / "cat").mkdir(parents=True)
    (empty / "train" / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(FileNotFoundError, match=r"no images in .*empty/train.* 1 class folders"):
        make_trainer(empty, tmp_path / "o2")


def test_corrupt_images_skip_or_stop(tmp_path):
    root = tiny.make_image_folder(tmp_path / "d", per_class=16)
    bad = root / "train" / "class_1" / "img_3.jpg"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated JPEG
    tr = make_trainer(root, tmp_path / "skip", data={"verify": "decode"}, train={"max_steps": 1})
    assert tr.fit()["corrupt_images"] == 1
    with pytest.raises(ValueError, match=r"img_3\.jpg"):
        make_trainer(root, tmp_path / "stop", data={"verify": "decode", "on_corrupt": "error"},
                     train={"max_steps": 1}).fit()  # fmt: skip


@pytest.mark.parametrize("name", ["uniform", "size_proportional"])
def test_single_path_samplers_train_the_paths_they_draw(data_root, tmp_path, name):
    """One path per step, the sampler's own sequence (same seed), and in each step exactly the
    choices on that step's path move: every other candidate, including one trained in an
    earlier step, has no gradient, so neither momentum nor weight decay touches it."""
    tr = make_trainer(data_root, tmp_path, sampler={"name": name}, train={"max_steps": 3})
    assert tr.paths_per_step == 1
    sampler = make_sampler(name, tr.space, seed=tr.cfg.train.seed)
    paths = [sampler.sample()[0] for _ in range(3)]
    assert len(set(paths)) == 3
    names = {}  # (layer, choice) -> the names of its parameters
    for i, layer in enumerate(tr.model.layers):
        for c in layer.spec.allowed:
            ids = {id(p) for p in layer.parameters_of(c)}
            names[i, c] = {n for n, p in tr.model.named_parameters() if id(p) in ids}
    for step, path in enumerate(paths, 1):
        before = flat_state(tr)
        out = tr.fit(until_step=step)
        assert out["step"] == step and math.isfinite(out["loss"])
        after = flat_state(tr)
        moved = {
            ic for ic, ns in names.items() if any(not torch.equal(before[n], after[n]) for n in ns)
        }
        assert moved == set(enumerate(path)), step


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_equals_single_process(data_root, tmp_path):
    """torchrun, 2 CPU processes (gloo): both ranks end with identical weights, only rank 0 writes,
    and the weights equal a single-process loop over the same global batches (each global batch
    made of the two ranks' shards; per-shard BN statistics, gradients averaged)."""
    out = tmp_path / "ddp"
    steps = 3
    cfg = tiny.tiny_config_dict(
        data_root, out, train={"max_steps": steps, "checkpoint_every": 1},
        optim={"shared_grad": "sum", "grad_clip": 0.0, "warmup_epochs": 0},
    )  # fmt: skip
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={_free_port()}", str(HERE / "dist_worker.py"), str(cfg_path), str(dumps),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = torch.load(dumps / "rank0.pt", weights_only=True)
    r1 = torch.load(dumps / "rank1.pt", weights_only=True)
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"ranks differ in {k}"
    # one all-reduce of the gradients per step (plus one of the non-finite-loss flag), not per path
    for r in range(2):
        assert json.loads((dumps / f"rank{r}.json").read_text())["all_reduce"] == 2 * steps
    # only rank 0 wrote the run folder's files
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "last.pt", "log.jsonl"]

    # the single-process reference: same init, same paths, global batch = both shards
    single = SupernetTrainer(config_from_dict(tiny.tiny_config_dict(
        data_root, tmp_path / "single", train={"max_steps": steps},
        optim={"shared_grad": "sum", "grad_clip": 0.0, "warmup_epochs": 0})))  # fmt: skip
    model, opt, sched = single.model, single.optimizer, single.scheduler
    # the reference runs with a global batch of 8 (2 x 4): rescale the LR as the 2-rank run does
    for group in opt.param_groups:
        group["lr"] *= 2
        group["initial_lr"] *= 2
    sched.base_lrs = [b * 2 for b in sched.base_lrs]
    shards = [
        build_loader(data_root, "train", "torch", batch_size=4, image_size=16, num_workers=0,
                     rank=r, world_size=2, seed=0, recipe="cifar")
        for r in range(2)
    ]  # fmt: skip
    sampler = StrictFairSampler(single.space, seed=0)
    per_epoch = len(shards[0]) // len(sampler.sample())  # whole steps per epoch (5 batches each)
    sampler = StrictFairSampler(single.space, seed=0)
    for step in range(steps):
        epoch, k = divmod(step, per_epoch)
        if k == 0:
            for s in shards:
                s.set_epoch(epoch)
            its = [iter(s) for s in shards]
        paths = sampler.sample()
        opt.zero_grad(set_to_none=True)
        model.train()
        for g in paths:
            for it in its:
                x, y = next(it)
                (single.criterion(model(x, g), y) / 2).backward()
        opt.step()
        sched.step()
    ref = {
        k: v for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k
    }
    for k, v in ref.items():
        torch.testing.assert_close(r0[k], v, rtol=1e-5, atol=1e-6, msg=k)
