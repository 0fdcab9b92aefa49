"""Bad input as a new user gives it to `fastscarlet train` / `eval` / `models`: each is a one-line
error naming the problem and the fix (exit status 2), or what a user of Unix tools expects."""

from __future__ import annotations

import math
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from tiny import make_image_folder, tiny_config_dict

from fastscarlet.cli import EXIT_BROKEN_PIPE, main
from fastscarlet.config import config_from_dict
from fastscarlet.train.checkpoint import load_checkpoint, save_atomic
from fastscarlet.train.trainer import NonFiniteLossError, SupernetTrainer


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad_input_data")
    make_image_folder(root, per_class=8, split="train")
    make_image_folder(root, per_class=4, split="val")
    return root


def write_recipe(path: Path, data_root: Path, **sections) -> Path:
    path.write_text(yaml.safe_dump(tiny_config_dict(data_root, path.parent / "run", **sections)))
    return path


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory) -> Path:
    """A one-step run of the tiny space: its OUT folder (last.pt, config.yaml)."""
    folder = tmp_path_factory.mktemp("trained")
    recipe = write_recipe(folder / "recipe.yaml", data_root)
    out = folder / "run"
    out.mkdir()
    stale = out / ".last.pt.k1ll3d.tmp"  # what a SIGKILL during save_atomic leaves
    stale.write_bytes(b"\0" * 1024)
    assert main(["train", "--config", str(recipe), "--out", str(out), "--max-steps", "1"]) == 0
    assert not stale.exists()  # cleaned when the run started
    return out


def error_of(capsys, argv: list[str]) -> str:
    """Run the CLI, expect the bad-input status 2 and a one-line error; return that line."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# --- checkpoints -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def foreign(trained, tmp_path_factory) -> Path:
    """last.pt of a tiny-space run holding the weights of the SCARLET supernet (4,599 tensors):
    what resuming or evaluating meets after a registered space's definition changed. PyTorch's
    own message for it lists every key (322 KB)."""
    from fastscarlet.nn.supernet import SuperNet
    from fastscarlet.space import get_space

    ckpt = load_checkpoint(trained / "last.pt")
    ckpt["model"] = SuperNet(get_space("scarlet")).state_dict()
    out = tmp_path_factory.mktemp("foreign") / "run"
    save_atomic(ckpt, out / "last.pt")
    return out


@pytest.mark.parametrize(
    "kind, match",
    [
        ("empty", r"is empty \(0 bytes\)"),
        ("text", r"is not a torch checkpoint \(it starts with b'step'"),
        ("foreign", r"does not fit this model \(\d+ missing: .* and \d+ more; \d+ unexpected"),
    ],
)
def test_eval_and_resume_name_what_is_wrong_with_a_checkpoint(
    kind, match, trained, foreign, data_root, tmp_path, capsys
):
    out = foreign if kind == "foreign" else tmp_path / "run"
    if kind != "foreign":
        out.mkdir()
        (out / "last.pt").write_bytes(b"" if kind == "empty" else b"step 12 loss 2.3\n")
    err = error_of(capsys, ["eval", "--checkpoint", str(out / "last.pt"), "--paths", "1"])
    assert "eval: error:" in err and len(err) < 600 and re.search(match, err)
    recipe = write_recipe(tmp_path / "recipe.yaml", data_root)
    err = error_of(capsys, ["train", "--config", str(recipe), "--out", str(out), "--resume"])
    assert "train: error:" in err and len(err) < 600 and re.search(match, err)


# --- config and data -------------------------------------------------------------------------


def test_malformed_yaml_recipe(tmp_path, capsys):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("optim:\n  lr: 0.1\n   momentum: 0.9\n")
    err = error_of(capsys, ["train", "--config", str(recipe)])
    assert "is not valid YAML" in err and "line 3" in err


def test_missing_relative_config_names_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = error_of(capsys, ["train", "--config", "configs/cifar10.yaml"])
    assert str(tmp_path / "configs" / "cifar10.yaml") in err and "current folder" in err
    assert "bundled recipes" in err and "cifar10" in err


def test_missing_relative_data_root_names_the_absolute_path(
    data_root, tmp_path, monkeypatch, capsys
):
    recipe = write_recipe(tmp_path / "recipe.yaml", data_root)
    monkeypatch.chdir(tmp_path)
    err = error_of(capsys, ["train", "--config", str(recipe), "--data", "../nowhere/cifar10"])
    assert str((tmp_path / "../nowhere/cifar10").resolve()) in str(Path(err.split(": ")[-1]))
    assert "current folder" in err


def test_num_classes_smaller_than_the_data_is_refused_before_training(data_root, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "recipe.yaml", data_root, space={"num_classes": 2})
    err = error_of(capsys, ["train", "--config", str(recipe), "--max-steps", "1"])
    assert "has 3 classes" in err and "space.num_classes=3" in err
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--max-steps", "0"], "--max-steps must be at least 1, got 0"),
        (["--epochs", "-1"], "--epochs must be positive"),
        (["optim.lr=-1"], r"optim\.lr: must be > 0"),
        (["optim.lr=.nan"], r"optim\.lr: must be a finite number"),
    ],
)
def test_out_of_range_train_flags(flags, match, data_root, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "recipe.yaml", data_root)
    err = error_of(capsys, ["train", "--config", str(recipe), *flags])
    assert re.search(match, err), err


def test_lr_written_with_an_exponent_trains(data_root, tmp_path):
    recipe = write_recipe(tmp_path / "recipe.yaml", data_root)
    assert main(["train", "--config", str(recipe), "--max-steps", "1", "optim.lr=1e-3"]) == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["optim"]["lr"] == 1e-3


# --- eval ------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--paths", "--calib-batches", "--val-batches", "--batch-size"])
def test_eval_counts_below_one_are_refused(flag, trained, capsys):
    err = error_of(capsys, ["eval", "--checkpoint", str(trained / "last.pt"), flag, "0"])
    assert f"{flag} must be at least 1, got 0" in err


def test_eval_says_when_fewer_batches_exist_and_shows_progress(trained, capsys):
    base = ["eval", "--checkpoint", str(trained / "last.pt"), "--paths", "1", "--batch-size", "8"]
    capsys.readouterr()
    assert main([*base, "--calib-batches", "40", "--val-batches", "9"]) == 0
    err = capsys.readouterr().err
    # 24 training images in batches of 8; 12 validation images
    assert "--calib-batches 40, but the training split has only 3 batches of 8" in err
    assert "--val-batches 9, but the validation split has only 2 batches of 8" in err
    assert "paths: 100%" in err and "1/1" in err  # the progress bar over the paths
    assert main([*base, "--no-progress", "--calib-batches", "2"]) == 0
    err = capsys.readouterr().err
    assert "paths:" not in err and "note" not in err


def test_eval_refuses_data_with_more_classes_than_the_network(trained, tmp_path, capsys):
    make_image_folder(tmp_path, classes=5, per_class=2, split="train")
    make_image_folder(tmp_path, classes=5, per_class=2, split="val")
    err = error_of(capsys, ["eval", "--checkpoint", str(trained / "last.pt"), "--data",
                            str(tmp_path), "--paths", "1"])  # fmt: skip
    assert "has 5 classes" in err and "3 outputs" in err


# --- Unix manners ----------------------------------------------------------------------------


def test_a_closed_pipe_ends_quietly(monkeypatch, capsys):
    """`fastscarlet info | head -0`: the reader is gone before the first write. The status is
    128 + SIGPIPE and nothing is printed (no traceback, no "Exception ignored")."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    with os.fdopen(write_end, "w") as stdout:
        monkeypatch.setattr(sys, "stdout", stdout)
        assert main(["info"]) == EXIT_BROKEN_PIPE
        stdout.write("more output after the handler: lands in /dev/null\n")
        stdout.flush()
    assert capsys.readouterr().err == ""


def test_sigterm_saves_and_exits_143_with_how_to_resume(data_root, tmp_path, capsys):
    """SIGTERM once a step is logged (the handler is installed by then): the step ends, last.pt is
    written, and `fastscarlet train` returns 128 + 15 and says how to resume."""
    recipe = write_recipe(tmp_path / "recipe.yaml", data_root)
    out = tmp_path / "run"
    log = out / "log.jsonl"

    def terminate_after_a_step():
        deadline = time.monotonic() + 120
        while not (log.exists() and len(log.read_text().splitlines()) >= 2):
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=terminate_after_a_step, daemon=True)
    killer.start()
    argv = ["train", "--config", str(recipe), "--out", str(out), "--max-steps", "100000",
            "train.checkpoint_every=0"]  # fmt: skip
    assert main(argv) == 128 + signal.SIGTERM
    killer.join()
    step = load_checkpoint(out / "last.pt")["step"]
    assert 1 <= step < 100000
    err = capsys.readouterr().err
    assert f"stopped by SIGTERM at step {step} of 100000" in err and "--resume" in err


# --- a diverged step is never saved as good ----------------------------------------------------


def tiny_trainer(data_root, out, **sections):
    return SupernetTrainer(config_from_dict(tiny_config_dict(data_root, out, **sections)))


@pytest.mark.parametrize(
    "fault, match", [("huge weight", "diverged at step 2"), ("inf gradient", "non-finite gradient")]
)
def test_a_step_that_breaks_the_weights_is_not_checkpointed(fault, match, data_root, tmp_path):
    trainer = tiny_trainer(data_root, tmp_path / "run", train={"checkpoint_every": 1})
    trainer.fit(until_step=1)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 1
    conv = trainer.model.stem[0].weight  # the stem's conv, followed by its BN
    if fault == "huge weight":  # finite, and BN after the conv keeps the loss finite too
        with torch.no_grad():
            conv.mul_(1e12)
    else:
        conv.register_hook(lambda g: g * math.inf)
    before = conv.detach().clone()
    with pytest.raises(NonFiniteLossError, match=match) as info:
        trainer.fit(until_step=3)
    assert "last good checkpoint" in str(info.value)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 1  # untouched
    if fault == "inf gradient":  # refused before the update: the weights are still finite
        assert torch.equal(conv.detach(), before)
