"""Several paths of the supernet in one pass, each on its own input, its channels side by side.

A strict-fairness step runs ``m`` different paths, each on its own batch; a population's trie
runs the children of a prefix on one input. Both are ``m`` paths of a layer on inputs of one shape
``[N, C, H, W]``. Here they run together on the **concatenated layout** ``[N, C_1 + ... + C_m, H,
W]`` (path ``j``'s channels after path ``j - 1``'s):

* the convolutions are grouped ops (:mod:`fastscarlet.kernels.grouped`: a grouped GEMM with
  per-group shapes for the 1x1 convs, a depthwise conv with per-group kernel size; one launch
  each on the Triton path, the loop over groups otherwise);
* batch-norm, activation and the SE gate of all paths are single ops over the concatenated
  channels: a train-mode BN over them normalises each path's channels with that path's batch
  statistics, exactly as path-by-path execution does;
* BN running statistics follow a :class:`Statistics` policy: :class:`ModuleStatistics` updates the
  modules' buffers in path order (training: a module used by two paths is updated twice, in the
  paths' order, as the loop over paths does), :class:`NodeStatistics` keeps each path's own
  statistics (the population evaluator's trie nodes).

Functions: :func:`multipath_sequential` (stem and first block: the same weights on ``m`` inputs),
:func:`multipath_layer` (one choice layer, a block per path), :func:`multipath_head`, and
:func:`multipath_forward` (whole paths: ``m`` logits). The loop over paths
(``supernet(x_j, g_j)`` for each ``j``) is the reference they are tested against; equal within
float tolerance (summation order), except head dropout, whose random masks differ.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from fastscarlet.kernels.dispatch import use_kernels
from fastscarlet.kernels.grouped_ref import (
    DepthwiseGroups,
    PointwiseGroups,
    grouped_depthwise_ref,
    grouped_pointwise_ref,
)
from fastscarlet.nn.blocks import MBConv

_BN = nn.modules.batchnorm._BatchNorm


# -- BN statistics policies -----------------------------------------------------------------------


class Statistics:
    """How a BN over the concatenated channels of ``len(bns)`` paths gets and keeps statistics.

    ``norm(y, bns, slot, paths)``: ``bns[g]`` is the BN module of path ``paths[g]`` (the same
    module may appear several times), ``slot`` its index among its block's BNs. Train mode
    (``bns[0].training``): normalise with batch statistics and record them; eval mode: normalise
    with stored ones.
    """

    def norm(
        self, y: torch.Tensor, bns: Sequence[_BN], slot: int, paths: Sequence[int]
    ) -> torch.Tensor:
        weight = torch.cat([bn.weight for bn in bns])
        bias = torch.cat([bn.bias for bn in bns])
        eps = bns[0].eps
        if any(bn.eps != eps for bn in bns):
            raise ValueError("multipath: the grouped BNs have different eps")
        sizes = [bn.num_features for bn in bns]
        if bns[0].training:
            # momentum 1 makes the buffers the batch mean and *unbiased* variance (torch's rule)
            mean = torch.zeros(sum(sizes), device=y.device, dtype=torch.float32)
            var = torch.ones_like(mean)
            out = F.batch_norm(y, mean, var, weight, bias, True, 1.0, eps)
            self.record(bns, slot, paths, mean.split(sizes), var.split(sizes))
            return out
        means, variances = self.stored(bns, slot, paths)
        return F.batch_norm(
            y, torch.cat(means), torch.cat(variances), weight, bias, False, 0.0, eps
        )

    def record(self, bns, slot, paths, means, variances) -> None:
        raise NotImplementedError

    def stored(self, bns, slot, paths) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        raise NotImplementedError


class ModuleStatistics(Statistics):
    """The BN modules' own buffers, updated as running them path after path would (momentum, or
    the cumulative average where ``momentum`` is None)."""

    def record(self, bns, slot, paths, means, variances) -> None:
        rounds: dict[tuple[int, float | None], list[int]] = {}
        uses: dict[int, int] = {}
        for g, bn in enumerate(bns):  # the r-th use of a module goes in round r
            r = uses.get(id(bn), 0)
            uses[id(bn)] = r + 1
            rounds.setdefault((r, bn.momentum), []).append(g)
        with torch.no_grad():
            for (_, momentum), gs in sorted(rounds.items(), key=lambda kv: kv[0][0]):
                tracked = [bns[g].num_batches_tracked for g in gs]
                torch._foreach_add_(tracked, 1)
                if momentum is None:
                    for g in gs:  # exact cumulative average (as torch: 1 / batches so far)
                        f = 1.0 / float(bns[g].num_batches_tracked)
                        _lerp([bns[g]], [means[g]], [variances[g]], f)
                else:
                    _lerp(
                        [bns[g] for g in gs], [means[g] for g in gs], [variances[g] for g in gs],
                        momentum,
                    )  # fmt: skip

    def stored(self, bns, slot, paths):
        return [bn.running_mean for bn in bns], [bn.running_var for bn in bns]


def _lerp(bns, means, variances, f: float) -> None:
    torch._foreach_lerp_(
        [bn.running_mean for bn in bns],
        [m.to(bn.running_mean.dtype) for bn, m in zip(bns, means)],
        f,
    )
    torch._foreach_lerp_(
        [bn.running_var for bn in bns],
        [v.to(bn.running_var.dtype) for bn, v in zip(bns, variances)],
        f,
    )


class NodeStatistics(Statistics):
    """Statistics held outside the modules, one list per path: ``stats[g][slot] = (running_mean,
    running_var, num_batches_tracked)`` (the population evaluator's trie nodes). In train mode
    each batch is averaged in with weight ``factor`` (``1 / (batch index + 1)``: the cumulative
    average of BN recalibration)."""

    def __init__(self, stats: Sequence[Sequence[tuple[torch.Tensor, ...]]], factor: float = 1.0):
        self.stats = stats
        self.factor = factor

    def record(self, bns, slot, paths, means, variances) -> None:
        entries = [self.stats[j][slot] for j in paths]
        torch._foreach_lerp_([e[0] for e in entries], list(means), self.factor)
        torch._foreach_lerp_([e[1] for e in entries], list(variances), self.factor)
        torch._foreach_add_([e[2] for e in entries], 1)

    def stored(self, bns, slot, paths):
        entries = [self.stats[j][slot] for j in paths]
        return [e[0] for e in entries], [e[1] for e in entries]


# -- grouped convolutions ---------------------------------------------------------------------------


def _pointwise(x, weight, groups: PointwiseGroups, bias=None) -> torch.Tensor:
    weight = weight.to(x.dtype)
    if use_kernels(x):
        from fastscarlet.kernels.grouped import grouped_pointwise

        return grouped_pointwise(x, weight, groups, bias)
    return grouped_pointwise_ref(x, weight, groups, bias if bias is None else bias.to(x.dtype))


def _depthwise(x, weight, groups: DepthwiseGroups, stride: int) -> torch.Tensor:
    weight = weight.to(x.dtype)
    if use_kernels(x):
        from fastscarlet.kernels.grouped import grouped_depthwise

        return grouped_depthwise(x, weight, groups, stride)
    return grouped_depthwise_ref(x, weight, groups, stride)


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


# -- the network's parts ----------------------------------------------------------------------------


def multipath_sequential(
    seq: nn.Sequential, x: torch.Tensor, m: int, stats: Statistics
) -> torch.Tensor:
    """A ``Sequential`` of convs, BNs and elementwise modules with the same weights on ``m``
    inputs side by side (the stem and the first block): each conv with ``m`` times its groups."""
    for mod in seq:
        if isinstance(mod, nn.Conv2d):
            w = mod.weight.repeat(m, 1, 1, 1).to(x.dtype)
            b = None if mod.bias is None else mod.bias.repeat(m).to(x.dtype)
            x = F.conv2d(x, w, b, mod.stride, mod.padding, mod.dilation, mod.groups * m)
        elif isinstance(mod, _BN):
            x = stats.norm(x, [mod] * m, 0, range(m))
        else:
            x = mod(x)
    return x


def _supported_block(block: nn.Module) -> bool:
    if getattr(block, "is_stabilizer", False):
        return True
    return isinstance(block, MBConv) and block.expand.stride == (1, 1)


def multipath_layer(
    layer: nn.Module,
    x: torch.Tensor,
    choices: Sequence[int],
    stats: Statistics,
    shared_input: bool = False,
) -> torch.Tensor:
    """Choice ``choices[j]`` of ``layer`` (a :class:`~fastscarlet.nn.supernet.ChoiceLayer`) on
    path ``j``'s input: ``x`` is ``[N, m * C_in, H, W]`` (path ``j`` at channels ``j * C_in``),
    or with ``shared_input`` ``[N, C_in, H, W]`` read by every path. Returns ``[N, m * C_out,
    Ho, Wo]``; BN statistics as ``stats`` says, ``slot`` = the BN's index in its block."""
    spec = layer.spec
    cin, cout, stride = spec.in_channels, spec.out_channels, spec.stride
    steps = [layer.block_of(c) for c in choices]
    m = len(steps)

    def start(j: int) -> int:
        return 0 if shared_input else j * cin

    if not all(_supported_block(b) for b, _ in steps):  # not a grouped shape: path by path
        outs = []
        for j, (block, se) in enumerate(steps):
            outs.append(block.forward_with_se(x[:, start(j) : start(j) + cin], se))
        return torch.cat(outs, dim=1)
    mb = [j for j, (b, _) in enumerate(steps) if isinstance(b, MBConv)]
    lets = [j for j in range(m) if j not in set(mb)]
    pieces: dict[int, tuple[torch.Tensor, int]] = {}  # path -> (tensor, its first channel)
    if mb:
        z = _mbconv_group(steps, mb, x, [start(j) for j in mb], cin, cout, stride, stats)
        for i, j in enumerate(mb):
            pieces[j] = (z, i * cout)
    if lets:
        xs = x[:, :, ::stride, ::stride] if stride > 1 else x
        lg = PointwiseGroups.packed([cin] * len(lets), [cout] * len(lets), [start(j) for j in lets])
        zl = _pointwise(xs, _flat([steps[j][0].weight for j in lets]), lg)
        for i, j in enumerate(lets):
            pieces[j] = (zl, i * cout)
    if not lets:
        return z
    return torch.cat([pieces[j][0][:, pieces[j][1] : pieces[j][1] + cout] for j in range(m)], 1)


def _mbconv_group(all_steps, paths, x, starts, cin, cout, stride, stats) -> torch.Tensor:
    """The MBConv blocks of ``paths`` (``all_steps[j] = (block, se)``) on their inputs at
    channels ``starts`` of ``x``: ``[N, k * C_out, Ho, Wo]``."""
    steps = [all_steps[j] for j in paths]
    blocks = [b for b, _ in steps]
    k = len(blocks)
    hidden = [b.hidden for b in blocks]
    act = blocks[0].act
    pe = PointwiseGroups.packed([cin] * k, hidden, starts)
    y = _pointwise(x, _flat([b.expand.weight for b in blocks]), pe)
    y = act(stats.norm(y, [b.bn1 for b in blocks], 0, paths))
    dg = DepthwiseGroups.packed(hidden, [b.kernel for b in blocks])
    y = _depthwise(y, _flat([b.dw.weight for b in blocks]), dg, stride)
    y = act(stats.norm(y, [b.bn2 for b in blocks], 1, paths))
    with_se = [g for g, (_, se) in enumerate(steps) if se is not None]
    if with_se:
        y = y * _se_gates(y, [steps[g][1] for g in with_se], with_se, hidden)
    pp = PointwiseGroups.packed(hidden, [cout] * k)
    z = stats.norm(
        _pointwise(y, _flat([b.project.weight for b in blocks]), pp),
        [b.bn3 for b in blocks],
        2,
        paths,
    )
    if blocks[0].residual:
        if starts == [j * cin for j in range(k)] and x.shape[1] == k * cin:
            z = z + x
        else:
            z = z + torch.cat([x[:, s : s + cin] for s in starts], dim=1)
    return z


def _se_gates(y, ses, groups, hidden) -> torch.Tensor:
    """The SE gates ``[N, sum hidden, 1, 1]`` of the groups ``groups`` (modules ``ses``); 1 on the
    channels of the groups without SE."""
    starts = PointwiseGroups.packed(hidden, hidden).in_start
    pooled = y.mean((2, 3), keepdim=True)
    reduced = [se.reduce.out_channels for se in ses]
    hid = [hidden[g] for g in groups]
    pr = PointwiseGroups.packed(hid, reduced, [starts[g] for g in groups], bias=True)
    s = _pointwise(
        pooled, _flat([se.reduce.weight for se in ses]), pr, _flat([se.reduce.bias for se in ses])
    )
    s = ses[0].act(s)
    px = PointwiseGroups.packed(reduced, hid, bias=True)
    s = ses[0].gate(
        _pointwise(
            s, _flat([se.expand.weight for se in ses]), px, _flat([se.expand.bias for se in ses])
        )
    )
    if len(groups) == len(hidden):
        return s
    parts, i = [], 0
    ones = torch.ones(1, 1, 1, 1, dtype=s.dtype, device=s.device)
    for g, h in enumerate(hidden):
        if g in groups:
            parts.append(s[:, i : i + h])
            i += h
        else:
            parts.append(ones.expand(s.shape[0], h, 1, 1))
    return torch.cat(parts, dim=1)


def multipath_head(
    head: nn.Module, x: torch.Tensor | Sequence[torch.Tensor], stats: Statistics
) -> list[torch.Tensor]:
    """The classifier head (:class:`~fastscarlet.nn.blocks.ClassifierHead`, the same weights) on
    ``m`` inputs: ``x`` ``[N, m * C, H, W]`` or a list of ``m`` tensors ``[N, C, H, W]``. Returns
    the ``m`` logits ``[N, classes]``."""
    if not isinstance(x, torch.Tensor):
        x = torch.cat(list(x), dim=1)
    c = head.conv.in_channels
    m = x.shape[1] // c
    if head.conv.stride != (1, 1):  # not the supernet's head: one path at a time
        return [head(x[:, j * c : (j + 1) * c]) for j in range(m)]
    f = head.conv.out_channels
    pg = PointwiseGroups(tuple(j * c for j in range(m)), (c,) * m, (f,) * m, (0,) * m)
    z = _pointwise(x, head.conv.weight.reshape(-1), pg)
    z = head.act(stats.norm(z, [head.bn] * m, 0, range(m)))
    n = z.shape[0]
    z = z.mean((2, 3), keepdim=True).view(n, m, f, 1, 1).transpose(0, 1).reshape(m * n, f, 1, 1)
    if head.hidden is not None:
        z = head.hidden_act(head.hidden(z))
    logits = head.classifier(head.dropout(torch.flatten(z, 1)))
    return list(logits.view(m, n, -1).unbind(0))


def multipath_forward(
    supernet: nn.Module,
    xs: Sequence[torch.Tensor],
    paths: Sequence[Sequence[int]],
    stats: Statistics | None = None,
) -> list[torch.Tensor]:
    """``[supernet(x_j, paths[j]) for j]`` in one pass: the logits of path ``j`` on its batch
    ``xs[j]`` (all of one shape). BN statistics: ``stats`` (default: the modules' own, updated
    in path order, as the loop over paths does)."""
    if len(xs) != len(paths) or not xs:
        raise ValueError(f"multipath_forward: {len(xs)} batches for {len(paths)} paths")
    stats = stats or ModuleStatistics()
    m = len(paths)
    h = multipath_sequential(supernet.stem, torch.cat(list(xs), dim=1), m, stats)
    h = multipath_sequential(supernet.first_block, h, m, stats)
    for i, layer in enumerate(supernet.layers):
        h = multipath_layer(layer, h, [p[i] for p in paths], stats)
    return multipath_head(supernet.head, h, stats)


__all__ = [
    "ModuleStatistics",
    "NodeStatistics",
    "Statistics",
    "multipath_forward",
    "multipath_head",
    "multipath_layer",
    "multipath_sequential",
]
