"""Training one architecture stand-alone, from scratch, cached per genome and resumable.

The ranking study (:mod:`fastscarlet.cli.rank_study`) compares supernet scores with the accuracy of
each architecture trained on its own. That training is the expensive part, so every architecture
has its own files in a cache folder::

    CACHE/<key>.pt     the training state (weights, optimizer, schedule, data position, step),
                       written atomically every ``checkpoint_every`` steps and at each epoch's end;
                       after the last step, the trained network
    CACHE/<key>.json   written once the network is trained and scored: the score, the settings,
                       the steps and the training seconds

``<key>`` is the genome's choices joined by ``-``. :func:`train_standalone` returns the JSON's
content when it exists; otherwise it continues from the ``.pt`` (or starts), so a run killed at any
moment loses at most ``checkpoint_every`` steps, and a resumed run computes the same weights as
an uninterrupted one (data order and augmentations depend only on ``(seed, epoch, index)``, the
random numbers of a step's forward pass, e.g. dropout, only on ``(seed, step)``). A cache written with other settings is an error that names them.

The score is computed by the caller's ``score(network)`` (e.g.
:func:`fastscarlet.evaluate.evaluate` on a held-out split): the training stage does not import the
evaluation stage.

Recipe: the network of :func:`fastscarlet.nn.build_network` (plain identity layers, what the
papers retrain), SGD with Nesterov momentum, weight decay on conv/linear weights only, linear
warm-up then cosine to 0, label smoothing, the data recipe's augmentation.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastscarlet.nn import build_network
from fastscarlet.space import SearchSpace, validate_genome
from fastscarlet.train.checkpoint import (
    clean_stale_temporaries,
    load_checkpoint,
    save_atomic,
)
from fastscarlet.train.optim import WarmupCosineLR, build_sgd

STANDALONE_FORMAT = "fastscarlet.standalone/1"


@dataclass(frozen=True)
class StandaloneConfig:
    """How one architecture is trained stand-alone (every field goes into its cache files)."""

    epochs: float = 5.0
    batch_size: int = 64
    lr: float = 0.1  # for batch_size (not rescaled)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-5
    warmup_epochs: float = 0.2
    label_smoothing: float = 0.1
    train_images: int | None = None  # a fixed random subset of the training split (None: all)
    recipe: str = "cifar"
    image_size: int = 32
    seed: int = 0
    checkpoint_every: int = 50  # steps; 0: only at the end of each epoch

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs > 0,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "momentum": 0 <= self.momentum < 1,
            "weight_decay": self.weight_decay >= 0,
            "warmup_epochs": self.warmup_epochs >= 0,
            "label_smoothing": 0 <= self.label_smoothing < 1,
            "train_images": self.train_images is None or self.train_images >= 1,
            "checkpoint_every": self.checkpoint_every >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"stand-alone {name}: out of range, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def genome_key(genome: Sequence[int]) -> str:
    """The cache file name of ``genome``: its choices joined by ``-`` (``"2-4-1-12"``)."""
    return "-".join(str(int(c)) for c in genome)


def cached_result(cache: str | os.PathLike, genome: Sequence[int]) -> dict[str, Any] | None:
    """The finished record of ``genome`` in ``cache`` (None: not trained to the end yet)."""
    path = Path(cache) / f"{genome_key(genome)}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _differences(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    return [
        f"{k}: cached {saved.get(k)!r}, asked {wanted.get(k)!r}"
        for k in sorted(set(saved) | set(wanted))
        if saved.get(k) != wanted.get(k)
    ]


def _check_settings(saved: Mapping[str, Any], wanted: Mapping[str, Any], path: Path) -> None:
    diffs = _differences(saved, wanted)
    if diffs:
        raise ValueError(
            f"{path} was trained with other stand-alone settings ({'; '.join(diffs)}): use "
            "another cache folder, or delete it to retrain"
        )


def _write_json(path: Path, record: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # processes sharing the cache
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, path)


def train_standalone(
    space: SearchSpace,
    genome: Sequence[int],
    root: str | os.PathLike,
    cfg: StandaloneConfig,
    cache: str | os.PathLike,
    score: Callable[[nn.Module], Mapping[str, float]],
    *,
    device: str | torch.device = "cpu",
    num_workers: int = 1,
    channels_last: bool = True,
    until_step: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any] | None:
    """Train ``genome`` stand-alone on ``root``'s training split (resuming its cache), score it.

    Returns the record written to ``CACHE/<key>.json``: ``genome``, ``settings`` (``cfg``),
    ``score`` (what ``score(network)`` returned, the network in eval mode), ``steps``,
    ``train_seconds`` (summed over resumed runs) and ``format``. ``until_step`` stops after that
    many steps in total, saving the state and returning None (training in chunks; tests use it to
    stand for a kill).
    """
    genome = validate_genome(space, genome)
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    key = genome_key(genome)
    json_path, state_path = cache / f"{key}.json", cache / f"{key}.pt"
    settings = cfg.to_dict()
    done = cached_result(cache, genome)
    if done is not None:
        _check_settings(done["settings"], settings, json_path)
        return done
    clean_stale_temporaries(cache, older_than_s=600.0)  # a save that a kill interrupted

    from fastscarlet.data import build_loader

    device = torch.device(device)
    loader = build_loader(
        root, "train", "torch", batch_size=cfg.batch_size, image_size=cfg.image_size,
        device=device, num_workers=num_workers, seed=cfg.seed, recipe=cfg.recipe,
        subset=cfg.train_images, channels_last=channels_last,
    )  # fmt: skip
    steps_per_epoch = len(loader)
    if steps_per_epoch < 1:
        raise ValueError(
            f"{root}: the training split gives no batch of {cfg.batch_size}; lower the batch size"
        )
    total = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)  # the same initial weights whenever it (re)starts
        net = build_network(space, genome, identity="identity")
    net.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    opt = build_sgd(net, cfg.lr, cfg.momentum, cfg.nesterov, cfg.weight_decay)
    warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total - 1)
    sched = WarmupCosineLR(opt, total, max(0, warmup))
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    step, epoch, batch_in_epoch, seconds = 0, 0, 0, 0.0
    if state_path.is_file():
        state = load_checkpoint(state_path, map_location=device)
        if state.get("format") != STANDALONE_FORMAT:
            raise ValueError(f"{state_path} is not a stand-alone training state of fastscarlet")
        _check_settings(state["settings"], settings, state_path)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        seconds = float(state["train_seconds"])

    def save() -> None:
        save_atomic(
            {
                "format": STANDALONE_FORMAT,
                "genome": list(genome),
                "settings": settings,
                "model": net.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "step": step,
                "epoch": epoch,
                "batch_in_epoch": batch_in_epoch,
                "train_seconds": seconds,
            },
            state_path,
        )

    stop = total if until_step is None else min(total, until_step)
    # Dropout draws from the global generator, which the DataLoader also draws from once per
    # iterator (its base seed), so a state captured mid-epoch would not resume exactly: each step's
    # forward is seeded by (seed, step) instead, inside a fork that leaves the caller's RNG alone.
    with torch.random.fork_rng(devices=[]):
        net.train()
        t0 = time.perf_counter()
        while step < stop:
            loader.set_epoch(epoch)
            loader.set_start_batch(batch_in_epoch)
            for x, y in loader:
                torch.manual_seed(cfg.seed * 2**32 + step)
                loss = criterion(net(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step, batch_in_epoch = step + 1, batch_in_epoch + 1
                if not math.isfinite(float(loss.detach())):
                    raise RuntimeError(
                        f"stand-alone training of {key} diverged at step {step} (loss {loss}); "
                        "lower the stand-alone learning rate"
                    )
                if step >= stop or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                    seconds, t0 = seconds + time.perf_counter() - t0, time.perf_counter()
                    if step >= stop and batch_in_epoch == steps_per_epoch:
                        epoch, batch_in_epoch = epoch + 1, 0
                    save()
                if step >= stop:
                    break
            else:
                epoch, batch_in_epoch = epoch + 1, 0
                seconds, t0 = seconds + time.perf_counter() - t0, time.perf_counter()
                save()
            if log is not None:
                log(f"{key}: step {step}/{total}, loss {float(loss):.3f}")
        if step < total:
            return None
        net.eval()
        record = {
            "format": STANDALONE_FORMAT,
            "genome": list(genome),
            "settings": settings,
            "score": dict(score(net)),
            "steps": step,
            "train_seconds": round(seconds, 2),
        }
        _write_json(json_path, record)
        return record
