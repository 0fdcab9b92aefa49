"""Optimizer and learning-rate schedule of the supernet trainer.

* SGD with (Nesterov) momentum; weight decay only on conv and linear weights, never on BN
  parameters or biases (tensors with fewer than 2 dims), as timm's ``param_groups_weight_decay``.
* Linear warm-up from 0, then cosine decay to ``min_lr``, stepped once per optimizer update.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed (conv/linear weights) and not decayed (BN gamma/beta, biases)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_sgd(
    model: nn.Module, lr: float, momentum: float, nesterov: bool, weight_decay: float
) -> torch.optim.SGD:
    if lr <= 0:
        raise ValueError(f"learning rate must be positive, got {lr}")
    return torch.optim.SGD(
        param_groups(model, weight_decay),
        lr=lr,
        momentum=momentum,
        nesterov=nesterov and momentum > 0,
    )


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier at optimizer step ``step`` (0-based): ``(step+1)/warmup`` during warm-up, then
    ``min + (1 - min) * (1 + cos(pi * t)) / 2`` with ``t`` from 0 to 1 over the remaining steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


class WarmupCosineLR(torch.optim.lr_scheduler.LRScheduler):
    """``warmup_cosine`` as a scheduler; its state is plain numbers (checkpoint-safe)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup_steps: int = 0,
        min_lr: float = 0.0,
    ) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.total_steps, self.warmup_steps, self.min_lr = total_steps, warmup_steps, min_lr
        super().__init__(optimizer)

    def load_state_dict(self, state_dict: dict) -> None:
        # The schedule's length follows the current run (resuming with more epochs stretches it);
        # only the position and the base learning rates come from the checkpoint.
        keep = (self.total_steps, self.warmup_steps, self.min_lr)
        super().load_state_dict(state_dict)
        self.total_steps, self.warmup_steps, self.min_lr = keep

    def get_lr(self) -> list[float]:
        step = self.last_epoch  # LRScheduler counts calls of step() in last_epoch
        out = []
        for base in self.base_lrs:
            ratio = self.min_lr / base if base > 0 else 0.0
            out.append(base * warmup_cosine(step, self.total_steps, self.warmup_steps, ratio))
        return out
