"""The strict-fairness step with the ``m`` paths grouped: one pass instead of ``m``.

The trainer's step runs ``m`` paths, each on its own batch, one after another (the reference):
``for j: loss_j = CE(supernet(x_j, g_j), y_j); backward``. :func:`grouped_backward` computes the
same losses and accumulates the same gradients with all paths at once
(:func:`fastscarlet.nn.multipath.multipath_forward`: in every layer the ``m`` different choice
blocks in one grouped launch per convolution) and one backward of ``sum_j loss_j``. BN running
statistics are updated in path order, as the loop does. Equal to the loop within float tolerance
(summation order), except head dropout, whose random masks differ.

It runs behind the kernels' dispatch (:func:`fastscarlet.kernels.dispatch.use_kernels`): where the
Triton kernels are used (``FASTSCARLET_KERNELS=triton`` on CUDA, or ``auto`` once verified) and the
``m`` batches have one shape; elsewhere the trainer keeps the loop over paths.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import torch

from fastscarlet.kernels.dispatch import use_kernels
from fastscarlet.nn.multipath import ModuleStatistics, multipath_forward


def grouped_step_applies(batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> bool:
    """Whether a step over ``batches`` runs grouped: more than one path, the kernels in use on
    their device, and one batch shape (the concatenated layout needs equal ``N, H, W``)."""
    if len(batches) < 2:
        return False
    shape = batches[0][0].shape
    if any(x.shape != shape for x, _ in batches):
        return False
    return use_kernels(*(x for x, _ in batches))


def grouped_backward(
    model: torch.nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    paths: Sequence[Sequence[int]],
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    autocast: AbstractContextManager,
    scale: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
    force: bool = False,
) -> list[torch.Tensor] | None:
    """Forward all paths grouped, backward ``scale(sum of the losses)``; returns the detached
    per-path losses, or None where the step should run path by path
    (:func:`grouped_step_applies`; ``force`` skips that check, for tests of the reference ops).
    """
    if not force and not grouped_step_applies(batches):
        return None
    with autocast:
        logits = multipath_forward(model, [x for x, _ in batches], paths, ModuleStatistics())
    losses = [criterion(lg.float(), y) for lg, (_, y) in zip(logits, batches)]
    scale(torch.stack(losses).sum()).backward()
    return [loss.detach() for loss in losses]


__all__ = ["grouped_backward", "grouped_step_applies"]
