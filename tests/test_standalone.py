"""Stand-alone training of one architecture (train/standalone.py): its cache per genome, an exact
resume after a stop or a SIGKILL, and settings that do not match the cache."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny import make_image_folder, tiny_space

from fastscarlet.data import build_loader
from fastscarlet.evaluate import evaluate
from fastscarlet.space import Head
from fastscarlet.train.checkpoint import load_checkpoint
from fastscarlet.train.standalone import (
    StandaloneConfig,
    cached_result,
    genome_key,
    train_standalone,
)

HERE = Path(__file__).parent
GENOME = (1, 4, 2)  # E2K5, ID, E2K3SE
# dropout in the head: the forward pass draws random numbers, so a resume must restore the RNG
SPACE = dataclasses.replace(tiny_space(), head=Head(32, "relu6", dropout=0.3))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("standalone_data")
    make_image_folder(root, classes=3, per_class=12, size=16)
    make_image_folder(root, classes=3, per_class=4, size=16, split="val")
    return root


def config(**kw) -> StandaloneConfig:
    base = dict(epochs=2, batch_size=8, lr=0.05, image_size=16, checkpoint_every=2)
    return StandaloneConfig(**{**base, **kw})


class Scorer:
    """Top-1 on the val split; counts its calls."""

    def __init__(self, root: Path) -> None:
        self.val = build_loader(
            root, "val", batch_size=6, image_size=16, num_workers=0, recipe="cifar"
        )
        self.calls = 0

    def __call__(self, net) -> dict[str, float]:
        self.calls += 1
        acc = evaluate(net, self.val)
        return {"acc": acc.top1, "loss": acc.loss}


def train(data: Path, cache: Path, cfg: StandaloneConfig, **kw):
    return train_standalone(SPACE, GENOME, data, cfg, cache, Scorer(data), num_workers=0, **kw)


def weights(cache: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(cache / f"{genome_key(GENOME)}.pt")["model"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("straight")
    record = train(data, cache, config())
    assert record is not None and record["steps"] == 8  # 36 images: 4 full batches of 8, 2 epochs
    return cache


def test_the_cache_holds_the_score_and_the_trained_network(data, uninterrupted):
    record = cached_result(uninterrupted, GENOME)
    assert record["genome"] == list(GENOME) and record["settings"] == config().to_dict()
    assert set(record["score"]) == {"acc", "loss"} and record["train_seconds"] > 0
    state = load_checkpoint(uninterrupted / f"{genome_key(GENOME)}.pt")
    assert state["step"] == 8 and state["epoch"] == 2 and state["batch_in_epoch"] == 0
    # a second call returns the record without training or scoring again
    scorer = Scorer(data)
    again = train_standalone(SPACE, GENOME, data, config(), uninterrupted, scorer)
    assert again == record and scorer.calls == 0


def test_stop_and_resume_equals_an_uninterrupted_run(data, uninterrupted, tmp_path):
    for stop in (3, 6):  # mid-epoch after a checkpoint at 2; on a checkpoint mid-epoch 2
        cache = tmp_path / str(stop)
        assert train(data, cache, config(), until_step=stop) is None
        assert cached_result(cache, GENOME) is None
        assert load_checkpoint(cache / f"{genome_key(GENOME)}.pt")["step"] == stop
        record = train(data, cache, config())
        assert same_weights(weights(cache), weights(uninterrupted))
        expect = cached_result(uninterrupted, GENOME)
        assert record["score"] == expect["score"] and record["steps"] == expect["steps"]


KILLED = """
import sys
sys.path.insert(0, {here!r})
from pathlib import Path
from test_standalone import config, train
train(Path({data!r}), Path({cache!r}), config(epochs=400, checkpoint_every=1))
"""


@pytest.mark.slow  # a subprocess: its imports take most of the time
def test_sigkill_mid_training_then_resume(data, tmp_path):
    cache = tmp_path / "killed"
    script = KILLED.format(here=str(HERE), data=str(data), cache=str(cache))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    state = cache / f"{genome_key(GENOME)}.pt"
    try:
        deadline = time.monotonic() + 120
        while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state.exists(), "the training process never wrote its state"
        time.sleep(0.3)  # a few more steps, some of them mid-save
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(state)["step"]
    assert 1 <= killed_at < 1600 and cached_result(cache, GENOME) is None
    # resume to a short end: 400 epochs would take too long, so compare a prefix exactly; with
    # the killed process's one thread (oneDNN sums in another order with another count)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = config(epochs=400, checkpoint_every=1)
        assert train(data, cache, cfg, until_step=killed_at + 3) is None
        straight = tmp_path / "straight"
        train(data, straight, cfg, until_step=killed_at + 3)
    finally:
        torch.set_num_threads(threads)
    assert same_weights(weights(cache), weights(straight))


def test_other_settings_are_refused(data, uninterrupted, tmp_path):
    with pytest.raises(ValueError, match=r"lr: cached 0\.05, asked 0\.1"):
        train(data, uninterrupted, config(lr=0.1))
    cache = tmp_path / "partial"
    train(data, cache, config(), until_step=2)
    with pytest.raises(ValueError, match="epochs: cached 2, asked 3"):
        train(data, cache, config(epochs=3))
    with pytest.raises(ValueError, match="batch_size"):
        StandaloneConfig(batch_size=0)
    record = json.loads((uninterrupted / f"{genome_key(GENOME)}.json").read_text())
    assert record["format"] == "fastscarlet.standalone/1"
