"""Supernet training: strict fairness / SPOS / NAO-V2 sampling, AMP, torchrun DDP, exact resume.

One **step** draws the sampler's paths (``m`` for strict fairness, 1 otherwise), gives each path its
own batch (the FairNAS rule), runs forward and backward per path accumulating gradients, then makes
**one** optimizer update::

    for (x_j, y_j), g_j in zip(m batches, m paths):   loss_j = CE(supernet(x_j, g_j), y_j); backward
    combine gradients (shared_grad), all-reduce once across ranks, clip, SGD step, LR schedule step

**shared_grad** (FairNAS issues #5 and #8 ask this; the authors never answered). With ``"sum"`` every
parameter gets the sum of the gradients of the paths that used it: the stem, first block and head get
``m`` batch gradients per update, each choice one. With ``"mean"`` (our default) each parameter's
accumulated gradient is divided by the number of paths that used it in the step. Reason: with
``sum`` the shared weights take steps ``m`` times (13x for SCARLET) larger than the choice weights
for the same learning rate, so a learning rate and a clipping threshold tuned for single-path
training are 13x too large for them; with ``mean`` every parameter moves on the scale of one batch
gradient, the shared ones with ``m``-fold lower variance, and recipes transfer between samplers.

**Bad steps.** A step is good when its losses, its gradient norm and the updated weights are all
finite and no weight has grown past ``DIVERGED_WEIGHT``: BN after most convs keeps the loss finite
while weights run away (1e29 were seen), so checking the loss alone let a diverged state be saved as
"the last good checkpoint". A bad step raises :class:`NonFiniteLossError` before anything is saved.

**Stopping.** SIGINT/SIGTERM finish the current step, write ``last.pt`` and return
``stopped_by_signal``; ``fastscarlet train`` then exits with 128 + the signal (130, 143), as shells
and schedulers expect of a job that did not finish, and prints how to resume. Temporaries of a save
that was killed (SIGKILL cannot clean up) are removed when the next run starts.

Checkpoints (``OUT/last.pt``, optionally ``OUT/step_<n>.pt``) hold the model, optimizer, scheduler,
grad scaler, sampler and RNG states, the data position and the step, as tensors and plain containers
(``torch.load(..., weights_only=True)``), written atomically. ``resume=True`` continues exactly:
the data order and augmentation depend only on ``(seed, epoch, index)`` and the sampler's state is
restored, so on CPU 2 steps + resume + 2 steps equals 4 steps bit for bit.
"""

from __future__ import annotations

import math
import signal
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastscarlet.config import Config, dump_config
from fastscarlet.env import resolve_device
from fastscarlet.nn.supernet import SuperNet
from fastscarlet.space import build_space
from fastscarlet.train.checkpoint import (
    CHECKPOINT_FORMAT,
    capture_rng,
    check_format,
    clean_stale_temporaries,
    load_checkpoint,
    load_state_checked,
    restore_rng,
    save_atomic,
)
from fastscarlet.train.distributed import (
    GradientSync,
    all_ranks_flag,
    barrier,
    broadcast_parameters,
    init_distributed,
)
from fastscarlet.train.grouped_step import grouped_backward
from fastscarlet.train.monitor import Monitor
from fastscarlet.train.optim import WarmupCosineLR, build_sgd
from fastscarlet.train.samplers import make_sampler

REFERENCE_BATCH = 128  # optim.lr is given for this global batch per path (linear scaling)
# A weight or BN statistic past this magnitude means the run diverged. Healthy ones are O(1)
# (measured: |w| <= 1.56 at SCARLET's init; after 20 steps of the tests' tiny run at lr 0.1,
# |w| <= 2.2 and BN statistics <= 4.4). fp32 BN still normalises far larger weights (its variance
# overflows only near 1e19), so the loss alone stays finite while the weights run away.
DIVERGED_WEIGHT = 1e6

# Config keys that must agree between a checkpoint and the run resuming it.
RESUME_KEYS = (
    "space",
    "sampler",
    "data.recipe",
    "data.image_size",
    "data.crop_scale_min",
    "data.batch_size",
    "optim",
    "train.seed",
    "train.amp",
)


class NonFiniteLossError(RuntimeError):
    """Raised when a step's loss or gradient is NaN or inf, or its update makes a weight NaN, inf or
    larger than ``DIVERGED_WEIGHT``; the last good checkpoint is left untouched."""


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(saved: dict, current: dict, keys=RESUME_KEYS) -> list[str]:
    """Human-readable differences between two config dicts on the resume-critical ``keys``."""
    a, b = _flatten(saved), _flatten(current)
    diffs = []
    for full in sorted(set(a) | set(b)):
        if any(full == k or full.startswith(k + ".") for k in keys) and a.get(full) != b.get(full):
            diffs.append(f"{full}: checkpoint {a.get(full)!r}, this run {b.get(full)!r}")
    return diffs


class SupernetTrainer:
    """Train a :class:`~fastscarlet.nn.supernet.SuperNet` as ``cfg`` says; ``fit()`` runs to the end."""

    def __init__(self, cfg: Config, resume: bool = False) -> None:
        self.cfg = cfg
        tc = cfg.train
        device = resolve_device(tc.device)
        self.dist = init_distributed(device.type)
        if device.type == "cuda":
            device = torch.device("cuda", self.dist.local_rank)
        self.device = device
        self.out = Path(tc.out)
        if tc.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        # Same seed on every rank: same initial weights, same paths each step.
        torch.manual_seed(tc.seed)
        self.space = build_space(cfg.space)
        self.model = SuperNet(
            self.space,
            share_se=cfg.space.share_se,
            let_init=cfg.space.let_init,
            zero_init_residual=cfg.space.zero_init_residual,
            aligned_init=cfg.space.aligned_init,
            stabilizer=cfg.space.stabilizer,
        )
        # channels_last on the CPU too: oneDNN's depthwise convs ran a width-0.25 SCARLET
        # strict-fairness step 3.3x faster in it (28x28 inputs, batch 64; benchmarks/RESULTS.md)
        self.channels_last = cfg.data.channels_last
        self.model.to(device, memory_format=torch.channels_last if self.channels_last else None)
        if self.dist.enabled:
            broadcast_parameters(self.model)
        self.grad_sync = GradientSync(self.model, self.dist)

        self.sampler = make_sampler(cfg.sampler.name, self.space, seed=tc.seed)
        self.paths_per_step = self.sampler.paths_per_step
        self.loader = self._build_loader()
        batches = len(self.loader)
        if batches < self.paths_per_step:
            raise ValueError(
                f"the training split gives {batches} batches of {cfg.data.batch_size} per epoch on "
                f"each of {self.dist.world_size} rank(s), but one {cfg.sampler.name} step needs "
                f"{self.paths_per_step}: use a smaller data.batch_size"
            )
        self._check_classes()
        self.steps_per_epoch = batches // self.paths_per_step
        if tc.max_steps is not None:
            self.total_steps = tc.max_steps
        else:
            self.total_steps = math.ceil(tc.epochs * self.steps_per_epoch)
        if self.total_steps < 1:
            raise ValueError(
                f"nothing to train: train.epochs={tc.epochs:g} and train.max_steps={tc.max_steps} "
                "give 0 steps"
            )

        oc = cfg.optim
        self.global_batch = cfg.data.batch_size * self.dist.world_size
        lr = oc.lr * (self.global_batch / REFERENCE_BATCH if oc.scale_lr else 1.0)
        self.optimizer = build_sgd(self.model, lr, oc.momentum, oc.nesterov, oc.weight_decay)
        warmup = min(round(oc.warmup_epochs * self.steps_per_epoch), self.total_steps - 1)
        self.scheduler = WarmupCosineLR(self.optimizer, self.total_steps, max(0, warmup), oc.min_lr)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=oc.label_smoothing)
        amp = tc.amp if device.type == "cuda" else "none"  # CPU runs fp32
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
        self._shared = [
            *self.model.stem.parameters(),
            *self.model.first_block.parameters(),
            *self.model.head.parameters(),
        ]

        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self._stop_signal: int | None = None
        if resume:
            self._resume()
        elif (self.out / "last.pt").exists():
            raise FileExistsError(
                f"{self.out / 'last.pt'} exists: pass --resume to continue that run, or choose "
                "another --out"
            )

    # -- setup -------------------------------------------------------------------------------------

    def _build_loader(self):
        from fastscarlet.data import build_loader

        dc = self.cfg.data
        if dc.root is None and dc.backend != "synthetic":
            raise ValueError("data.root is not set: pass --data PATH (or data.backend=synthetic)")
        return build_loader(
            dc.root,
            "train",
            dc.backend,
            batch_size=dc.batch_size,
            image_size=dc.image_size,
            crop_scale=(dc.crop_scale_min, 1.0),
            device=self.device,
            num_workers=dc.num_workers,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            seed=self.cfg.train.seed,
            recipe=dc.recipe,
            augment=dc.augment,
            channels_last=self.channels_last,
            verify=dc.verify,
            num_classes=self.cfg.space.num_classes if dc.backend == "synthetic" else None,
        )

    def _check_classes(self) -> None:
        """Labels past the network's outputs would fail inside the loss, mid-step: say so now."""
        have, outputs = self.loader.num_classes, self.cfg.space.num_classes
        if have > outputs:
            raise ValueError(
                f"the training data has {have} classes ({self.cfg.data.root}) but the network has "
                f"space.num_classes={outputs} outputs: set space.num_classes={have}"
            )

    # -- checkpoints -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": capture_rng(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "world_size": self.dist.world_size,
            "config": self.cfg.to_dict(),
        }

    def save_checkpoint(self, extra_step_file: bool = False) -> Path | None:
        """Write ``OUT/last.pt`` (and ``OUT/step_<n>.pt``) on rank 0; other ranks write nothing."""
        path = None
        if self.dist.is_main:
            state = self.state_dict()
            path = save_atomic(state, self.out / "last.pt")
            if extra_step_file:
                save_atomic(state, self.out / f"step_{self.step}.pt")
        barrier(self.dist)
        return path

    def _resume(self) -> None:
        path = self.out / "last.pt"
        ckpt = load_checkpoint(path, map_location=self.device)
        check_format(ckpt, path)
        diffs = config_differences(ckpt["config"], self.cfg.to_dict())
        if ckpt.get("world_size") != self.dist.world_size:
            diffs.append(
                f"world size: checkpoint {ckpt.get('world_size')}, this run {self.dist.world_size}"
            )
        if diffs:
            raise ValueError(f"cannot resume from {path}: " + "; ".join(diffs))
        load_state_checked(self.model, ckpt["model"], path)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.sampler.load_state_dict(ckpt["sampler"])
        restore_rng(ckpt["rng"])
        self.step, self.epoch = int(ckpt["step"]), int(ckpt["epoch"])
        self.batch_in_epoch = int(ckpt["batch_in_epoch"])

    # -- one step ----------------------------------------------------------------------------------

    def _use_counts(self, paths) -> dict[int, int]:
        """How many of this step's paths used each parameter (by ``id``)."""
        counts = {id(p): len(paths) for p in self._shared}
        for i, layer in enumerate(self.model.layers):
            for g in paths:
                for p in layer.parameters_of(g[i]):
                    counts[id(p)] = counts.get(id(p), 0) + 1
        return counts

    def train_step(self, batches, paths) -> dict[str, float]:
        """One update from ``len(paths)`` (batch, path) pairs. Returns loss and grad norm."""
        model, opt = self.model, self.optimizer
        model.train()
        opt.zero_grad(set_to_none=True)
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else nullcontext()
        )
        # Where the kernels run, the m paths go through one grouped pass (train/grouped_step.py).
        losses = grouped_backward(
            model, batches, paths, self.criterion, autocast, self.scaler.scale
        )
        if losses is None:  # the loop over paths (the reference)
            losses = []
            for (x, y), g in zip(batches, paths):
                with autocast:
                    logits = model(x, g)
                loss = self.criterion(logits.float(), y)
                losses.append(loss.detach())
                self.scaler.scale(loss).backward()
        loss_t = torch.stack(losses)
        finite = torch.isfinite(loss_t)
        if all_ranks_flag(not bool(finite.all()), self.dist, self.device):
            bad = [i for i, ok in enumerate(finite.tolist()) if not ok]
            where = f"path {bad[0]} {paths[bad[0]]}" if bad else "another rank"
            raise NonFiniteLossError(
                f"non-finite loss at step {self.step + 1} ({where}); stopped without updating. "
                f"The last good checkpoint is {self.out / 'last.pt'}"
            )
        self.scaler.unscale_(opt)
        if self.cfg.optim.shared_grad == "mean" and len(paths) > 1:
            counts = self._use_counts(paths)
            for p in model.parameters():
                if p.grad is not None and counts.get(id(p), 1) > 1:
                    p.grad.div_(counts[id(p)])
        self.grad_sync()
        params = [p for p in model.parameters() if p.grad is not None]
        if self.cfg.optim.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
        # fp16's scaler skips steps with inf gradients itself; without it they would reach the
        # weights. The gradients are all-reduced by now, so every rank decides the same.
        if not self.scaler.is_enabled() and not bool(torch.isfinite(norm)):
            raise NonFiniteLossError(
                f"non-finite gradient norm ({float(norm)}) at step {self.step + 1}; stopped "
                f"without updating. The last good checkpoint is {self.out / 'last.pt'}"
            )
        self.scaler.step(opt)
        self.scaler.update()
        self.scheduler.step()
        self._check_weights()
        return {"loss": float(loss_t.mean()), "grad_norm": float(norm)}

    def _check_weights(self) -> None:
        """After an update: every parameter and buffer finite, no weight past ``DIVERGED_WEIGHT``.
        Weights and buffers are the same on every rank (synchronised), so every rank decides the
        same without another collective."""
        tensors = [p.detach() for p in self.model.parameters()]
        tensors += [b for b in self.model.buffers() if b.is_floating_point()]
        peak_value = float(torch.stack(torch._foreach_norm(tensors, float("inf"))).max())
        if not peak_value <= DIVERGED_WEIGHT:
            raise NonFiniteLossError(
                f"training diverged at step {self.step + 1}: a weight or BN statistic reached "
                f"{peak_value:.3g} (healthy ones stay O(1); the limit is {DIVERGED_WEIGHT:g}). "
                f"Nothing was saved: the last good checkpoint is {self.out / 'last.pt'}; lower "
                "optim.lr, or set optim.grad_clip"
            )

    # -- the loop ----------------------------------------------------------------------------------

    def _epoch_iterator(self):
        self.loader.set_epoch(self.epoch)
        start = self.batch_in_epoch
        if start and hasattr(self.loader, "set_start_batch"):
            self.loader.set_start_batch(start)
            return iter(self.loader)
        it = iter(self.loader)
        for _ in range(start):  # loaders without random access: read and discard
            next(it)
        return it

    def _check_corrupt(self, seen: int) -> int:
        n = self.loader.num_skipped
        if n > seen and self.cfg.data.on_corrupt == "error":
            bad = self.loader.skipped[seen]
            raise ValueError(f"unreadable image {bad.path}: {bad.reason} (data.on_corrupt=error)")
        return n

    def _on_signal(self, signum, frame) -> None:
        self._stop_signal = signum

    def _fit_deadline(
        self, deadline: float, t_fit: float, step_fit: int, stop_at: int, monitor: Monitor
    ) -> int:
        """The step to stop at so that the run ends by ``deadline`` at the speed measured since
        ``t_fit``; shortens ``total_steps`` and the schedule when that is earlier."""
        now = time.monotonic()
        per_step = (now - t_fit) / max(1, self.step - step_fit)
        fits = self.step + max(0, int((deadline - now) / per_step))
        if fits < self.total_steps:
            self.total_steps = max(self.step, fits)
            self.scheduler.total_steps = max(1, self.total_steps)
            monitor.set_total(self.total_steps)
        return min(stop_at, self.total_steps)

    def fit(self, until_step: int | None = None, deadline: float | None = None) -> dict[str, Any]:
        """Train until ``total_steps`` (or ``until_step``, for training in chunks); checkpoint every
        ``checkpoint_every`` steps and at the end.

        ``deadline`` (a ``time.monotonic()`` value) budgets the run by wall-clock time: after each
        step the run is shortened, if needed, to the steps that the speed measured so far fits
        before the deadline, and the LR schedule's length with it (the cosine then ends at the new
        last step). Used by ``fastscarlet demo``; a resumed run's schedule follows its config.

        SIGINT/SIGTERM finish the current step, write ``last.pt`` and return (the summary's
        ``stopped_by_signal`` is the signal's number, else None).
        """
        tc = self.cfg.train
        stop_at = self.total_steps if until_step is None else min(until_step, self.total_steps)
        m = self.paths_per_step
        monitor = Monitor(
            self.out, self.total_steps, self.step, self.dist.is_main, tc.tensorboard, tc.progress
        )
        if self.dist.is_main:
            stale = clean_stale_temporaries(self.out)
            if stale:
                monitor.message(
                    f"removed {len(stale)} temporary file(s) of a checkpoint save that was killed: "
                    f"{', '.join(p.name for p in stale)}"
                )
            (self.out / "config.yaml").write_text(dump_config(self.cfg))
            monitor.message(
                f"training {self.space.name} supernet: {self.cfg.sampler.name} ({m} path(s)/step), "
                f"{self.steps_per_epoch} steps/epoch, {self.total_steps} steps, "
                f"{self.dist.world_size} rank(s) on {self.device}, from step {self.step}"
            )
        old_handlers = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                old_handlers[sig] = signal.signal(sig, self._on_signal)
        except ValueError:  # not the main thread
            old_handlers = {}
        corrupt_seen = self._check_corrupt(0)
        t_fit, step_fit = time.monotonic(), self.step
        t_last, imgs = time.perf_counter(), 0
        last_stats: dict[str, float] = {}
        try:
            while self.step < stop_at and self._stop_signal is None:
                it = self._epoch_iterator()
                while (
                    self.batch_in_epoch + m <= self.steps_per_epoch * m
                    and self.step < stop_at
                    and self._stop_signal is None
                ):
                    batches = [next(it) for _ in range(m)]
                    corrupt_seen = self._check_corrupt(corrupt_seen)
                    paths = self.sampler.sample()
                    last_stats = self.train_step([(b[0], b[1]) for b in batches], paths)
                    self.step += 1
                    self.batch_in_epoch += m
                    imgs += sum(int(b[0].shape[0]) for b in batches) * self.dist.world_size
                    monitor.advance()
                    if deadline is not None:
                        stop_at = self._fit_deadline(deadline, t_fit, step_fit, stop_at, monitor)
                    if self.step % tc.log_every == 0 or self.step == self.total_steps:
                        now = time.perf_counter()
                        monitor.log(
                            self.step,
                            epoch=self.epoch,
                            lr=self.optimizer.param_groups[0]["lr"],
                            img_per_s=imgs / max(now - t_last, 1e-9),
                            **last_stats,
                        )
                        t_last, imgs = now, 0
                    if tc.checkpoint_every and self.step % tc.checkpoint_every == 0:
                        self.save_checkpoint(tc.keep_step_checkpoints)
                if self.batch_in_epoch + m > self.steps_per_epoch * m:
                    self.epoch += 1
                    self.batch_in_epoch = 0
            self.save_checkpoint(tc.keep_step_checkpoints)
            if self._stop_signal is not None:
                monitor.message(f"stopped by signal {self._stop_signal} at step {self.step}")
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            monitor.close()
        return {
            "step": self.step,
            "epoch": self.epoch,
            "corrupt_images": self.loader.num_skipped,
            "stopped_by_signal": self._stop_signal,
            **last_stats,
        }
