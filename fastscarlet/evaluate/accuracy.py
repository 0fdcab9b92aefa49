"""Evaluating networks and supernet paths: BN recalibration, top-1/top-5 accuracy.

A path of a supernet shares its BN layers' running statistics with every other path through the
same choice, so they describe a mixture of paths. Before a path is evaluated its statistics are
recomputed on training images (OFA's ``set_running_statistics``; SPOS issue #13): reset, then an
exact cumulative average (``momentum=None``) over ``num_batches`` batches in train mode, without
gradients.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Accuracy:
    top1: float  # percent
    top5: float  # percent
    loss: float  # mean cross-entropy
    images: int


class Tally:
    """Top-1/top-5 hits and the cross-entropy sum of one network over batches of logits.

    Kept as tensors on the logits' device (no host sync per batch); the loss is summed in float64
    from each batch's float32 sum, which is exactly what adding ``.item()`` to a Python float does.
    """

    __slots__ = ("correct1", "correct5", "loss_sum", "n")

    def __init__(self) -> None:
        self.correct1: torch.Tensor | int = 0
        self.correct5: torch.Tensor | int = 0
        self.loss_sum: torch.Tensor | float = 0.0
        self.n = 0

    def add(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        logits = logits.float()
        loss = nn.functional.cross_entropy(logits, y, reduction="sum")
        self.loss_sum = self.loss_sum + loss.double()
        k = min(5, logits.shape[1])
        hit = logits.topk(k, dim=1).indices.eq(y[:, None])
        self.correct1 = self.correct1 + hit[:, 0].sum()
        self.correct5 = self.correct5 + hit.any(dim=1).sum()
        self.n += y.shape[0]

    def result(self) -> Accuracy:
        if self.n == 0:
            raise ValueError("evaluation got no batches")
        n = self.n
        c1, c5, loss = int(self.correct1), int(self.correct5), float(self.loss_sum)
        return Accuracy(100.0 * c1 / n, 100.0 * c5 / n, loss / n, n)


def _batches(loader: Iterable, num_batches: int | None):
    for i, batch in enumerate(loader):
        if num_batches is not None and i >= num_batches:
            return
        yield batch[0], batch[1]


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module, loader: Iterable, num_batches: int | None = None, forward=None
) -> int:
    """Recompute every BN layer's running mean/var of ``model`` on ``loader``; returns images used.

    ``forward(model, x)`` defaults to ``model(x)`` (pass a closure to run a supernet path).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = the exact mean over the batches
    model.train()
    seen = 0
    try:
        for x, _ in _batches(loader, num_batches):
            (forward or (lambda mdl, inp: mdl(inp)))(model, x)
            seen += x.shape[0]
    finally:
        for m, (mom, _) in zip(bns, saved):
            m.momentum = mom
        model.train(was_training)
    if seen == 0:
        raise ValueError("BN recalibration got no batches")
    return seen


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: Iterable, num_batches: int | None = None, forward=None
) -> Accuracy:
    """Top-1/top-5 accuracy (%) and mean cross-entropy of ``model`` in eval mode."""
    was_training = model.training
    model.eval()
    tally = Tally()
    try:
        for x, y in _batches(loader, num_batches):
            tally.add((forward or (lambda mdl, inp: mdl(inp)))(model, x), y)
    finally:
        model.train(was_training)
    return tally.result()


def evaluate_paths(
    supernet: nn.Module,
    genomes: Sequence[Sequence[int]],
    calib_loader: Iterable,
    val_loader: Iterable,
    calib_batches: int | None = 20,
    val_batches: int | None = None,
) -> list[Accuracy]:
    """For each path: extract the subnet (LET kept: the exact path function), recalibrate its BN on
    ``calib_batches`` batches of ``calib_loader``, evaluate it on ``val_loader``."""
    results = []
    for g in genomes:
        sub = supernet.subnet(g, identity="let")
        recalibrate_bn(sub, calib_loader, calib_batches)
        results.append(evaluate(sub, val_loader, val_batches))
    return results
