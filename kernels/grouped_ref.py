"""Grouped multi-path convolutions: the group layouts and the plain-PyTorch references.

``m`` paths of a supernet layer (strict fairness: the ``m`` different choice blocks of one layer,
each on its own batch; population evaluation: the children of a prefix on one input) are run
together on tensors whose channels are the groups' channels side by side, ``[N, C_1 + ... + C_m,
H, W]``: every path has the same ``N, H, W`` (same batch size and resolution), only its channel
counts, kernel size and weights differ. Then batch-norm, activations and the SE gate of all
groups are single ops over the concatenated channels, and the convolutions are grouped ops:

* :func:`grouped_pointwise_ref`: ``y[:, o_g : o_g + N_g] = conv1x1(x[:, i_g : i_g + K_g], W_g) +
  b_g``; outputs in group order (``o_g = N_1 + ... + N_{g-1}``). Groups may read overlapping input
  channels (a shared input) and may share weights (``w_off`` equal: the head of ``m`` paths);
* :func:`grouped_depthwise_ref`: ``y[:, c_g : c_g + C_g] = dwconv_{k_g}(x[:, c_g : c_g + C_g],
  W_g)``, stride ``s`` (the same for all groups: one layer), padding ``k_g // 2``.

The weights of all groups are one flat tensor (``torch.cat`` of the flattened weights, so autograd
returns each group's gradient to its own parameter); ``W_g`` is ``w[w_off_g : w_off_g + N_g K_g]``
viewed ``[N_g, K_g]`` (pointwise) or ``[C_g, k_g, k_g]`` (depthwise).

This module imports no Triton: the references are the fallback of :mod:`.grouped` (the Triton
kernels) and the CPU path; each is the loop over groups, i.e. the loop over paths.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class PointwiseGroups:
    """Group ``g`` maps input channels ``[in_start[g], in_start[g] + in_ch[g])`` to ``out_ch[g]``
    output channels with the weight at ``w_off[g]`` (``[out_ch, in_ch]``, row-major) and, with a
    bias, ``b_off[g]`` (``[out_ch]``)."""

    in_start: tuple[int, ...]
    in_ch: tuple[int, ...]
    out_ch: tuple[int, ...]
    w_off: tuple[int, ...]
    b_off: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.in_ch)
        lens = [len(self.in_start), len(self.out_ch), len(self.w_off)]
        if self.b_off is not None:
            lens.append(len(self.b_off))
        if n == 0 or any(k != n for k in lens):
            raise ValueError(f"PointwiseGroups: {n} groups but field lengths {lens}")

    @property
    def out_start(self) -> tuple[int, ...]:
        return _starts(self.out_ch)

    @property
    def total_out(self) -> int:
        return sum(self.out_ch)

    @property
    def disjoint_inputs(self) -> bool:
        """No input channel is read by two groups (the input gradient needs no accumulation)."""
        spans = sorted(zip(self.in_start, self.in_ch))
        return all(a + k <= b for (a, k), (b, _) in itertools.pairwise(spans))

    @classmethod
    def packed(
        cls,
        in_ch: Sequence[int],
        out_ch: Sequence[int],
        in_start: Sequence[int] | None = None,
        bias: bool = False,
    ) -> PointwiseGroups:
        """Weights (and biases) packed one after the other in group order; inputs side by side
        unless ``in_start`` says otherwise."""
        sizes = [o * i for o, i in zip(out_ch, in_ch)]
        return cls(
            tuple(_starts(in_ch) if in_start is None else in_start),
            tuple(in_ch),
            tuple(out_ch),
            _starts(sizes),
            _starts(out_ch) if bias else None,
        )


@dataclass(frozen=True)
class DepthwiseGroups:
    """Group ``g`` owns ``channels[g]`` consecutive channels (of input and output) and a
    ``kernel[g] x kernel[g]`` depthwise kernel at ``w_off[g]`` (``[channels, k, k]``)."""

    channels: tuple[int, ...]
    kernel: tuple[int, ...]
    w_off: tuple[int, ...]

    def __post_init__(self) -> None:
        n = len(self.channels)
        if n == 0 or len(self.kernel) != n or len(self.w_off) != n:
            raise ValueError("DepthwiseGroups: channels, kernel and w_off need one entry per group")
        for k in self.kernel:
            if k < 1 or k % 2 == 0:
                raise ValueError(f"DepthwiseGroups: kernel sizes must be odd, got {k}")

    @property
    def start(self) -> tuple[int, ...]:
        return _starts(self.channels)

    @property
    def total(self) -> int:
        return sum(self.channels)

    @classmethod
    def packed(cls, channels: Sequence[int], kernel: Sequence[int]) -> DepthwiseGroups:
        sizes = [c * k * k for c, k in zip(channels, kernel)]
        return cls(tuple(channels), tuple(kernel), _starts(sizes))


def _starts(sizes: Sequence[int]) -> tuple[int, ...]:
    out, acc = [], 0
    for s in sizes:
        out.append(acc)
        acc += int(s)
    return tuple(out)


def grouped_pointwise_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    groups: PointwiseGroups,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[N, Cx, H, W] -> [N, sum out_ch, H, W]``: one ``conv1x1`` per group, concatenated."""
    outs = []
    for g, (i0, k, o) in enumerate(zip(groups.in_start, groups.in_ch, groups.out_ch)):
        w = weight[groups.w_off[g] : groups.w_off[g] + o * k].view(o, k, 1, 1)
        b = None
        if bias is not None and groups.b_off is not None:
            b = bias[groups.b_off[g] : groups.b_off[g] + o]
        outs.append(F.conv2d(x[:, i0 : i0 + k], w, b))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)


def grouped_depthwise_ref(
    x: torch.Tensor, weight: torch.Tensor, groups: DepthwiseGroups, stride: int = 1
) -> torch.Tensor:
    """``[N, sum C_g, H, W] -> [N, sum C_g, Ho, Wo]``: one depthwise conv per group (padding
    ``k_g // 2``, so ``Ho = (H - 1) // stride + 1`` for every group), concatenated."""
    outs = []
    for c0, c, k, off in zip(groups.start, groups.channels, groups.kernel, groups.w_off):
        w = weight[off : off + c * k * k].view(c, 1, k, k)
        outs.append(F.conv2d(x[:, c0 : c0 + c], w, None, stride, k // 2, 1, c))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)


__all__ = [
    "DepthwiseGroups",
    "PointwiseGroups",
    "grouped_depthwise_ref",
    "grouped_pointwise_ref",
]
