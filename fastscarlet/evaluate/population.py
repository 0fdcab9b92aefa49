"""Evaluating a population of supernet paths at once: shared prefixes, batches read once.

:func:`~fastscarlet.evaluate.accuracy.evaluate_paths` evaluates one genome at a time: copy the
subnet, recalibrate its BN on the calibration batches (train mode, exact cumulative average),
measure it on the validation batches. :class:`PopulationEvaluator` computes the same numbers for a
whole population with less work, exactly:

* **Shared prefixes.** In train-mode BN (recalibration) a layer's output depends only on the
  weights of the layers before it and on the batch, so genomes with a common prefix have identical
  prefix activations *and* identical recalibrated statistics in the prefix; in eval mode the same
  holds with those statistics. The population becomes a trie over layers (root: stem + first block,
  shared by every genome; a node at depth ``d``: a distinct prefix ``g[:d]``; leaves: genomes, which
  also own the head's statistics, since the head's BN sees the last layer's output). Each node's
  block runs once per batch, with the node's own BN statistics swapped into the supernet's BN
  modules (``momentum=None`` in the calibration pass: the cumulative average of per-batch mean and
  unbiased variance that :func:`~fastscarlet.evaluate.accuracy.recalibrate_bn` computes).
  Calibration pass over every calibration batch first, then the evaluation pass; within a batch
  the trie is walked depth first, so at most one activation per depth is alive.
* **Batches read once** (:class:`~fastscarlet.evaluate.batches.CachedBatches`): held on the
  device when they fit, in host memory otherwise, replayed for every genome and every call.
* **A memory budget** for the statistics of the trie (``memory_budget``, bytes): a population
  whose trie would exceed it is evaluated in chunks of consecutive (sorted) genomes, each chunk a
  trie of its own.
* **Several subnets per pass** (``group_siblings``; default on CUDA): the children of a trie node
  share their input, so their blocks run as one multi-path layer
  (:func:`fastscarlet.nn.multipath.multipath_layer`: grouped 1x1 GEMMs and a grouped depthwise
  conv over the concatenated channels), and the leaves under one node run the head together.
  Equal to one-by-one evaluation within float tolerance (summation order), not bit for bit.

Sharding over ranks or devices: :mod:`fastscarlet.evaluate.sharding`.

Cost: a population of ``P`` genomes of ``L`` layers whose trie has ``T`` nodes runs ``T`` block
forwards per batch instead of ``P * L`` (stem and first block once instead of ``P`` times).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fastscarlet.evaluate.accuracy import Accuracy, Tally
from fastscarlet.evaluate.batches import CachedBatches
from fastscarlet.space import Genome, validate_genome

_BN = nn.modules.batchnorm._BatchNorm
# One BN's running statistics: (running_mean, running_var, num_batches_tracked).
_Stats = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(eq=False)
class Node:
    """A distinct prefix ``genome[:depth]`` of the population (the root: depth 0)."""

    depth: int
    choice: int | None  # the choice of layer ``depth - 1`` (None at the root)
    children: dict[int, Node] = field(default_factory=dict)
    genomes: list[Genome] = field(default_factory=list)  # at a leaf: the genome(s) it is
    stats: list[_Stats] = field(default_factory=list)  # its block's BNs (root: stem + first)
    head_stats: list[_Stats] = field(default_factory=list)  # leaves: the head's BNs
    tally: Tally | None = None  # leaves: the evaluation pass's scores

    def walk(self) -> Iterable[Node]:
        yield self
        for child in self.children.values():
            yield from child.walk()


def build_trie(genomes: Sequence[Genome]) -> Node:
    """The prefix tree of ``genomes``; children in increasing choice order."""
    root = Node(0, None)
    for g in sorted(set(genomes)):
        node = root
        for d, c in enumerate(g):
            child = node.children.get(c)
            if child is None:
                child = node.children[c] = Node(d + 1, c)
            node = child
        node.genomes.append(g)
    return root


def trie_size(genomes: Sequence[Genome]) -> int:
    """Block forwards per batch the trie of ``genomes`` needs (its nodes below the root)."""
    uniq = sorted(set(genomes))
    return sum(len(g) - _common_prefix(a, g) for a, g in zip([(), *uniq[:-1]], uniq))


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _bns(module: nn.Module) -> list[_BN]:
    return [m for m in module.modules() if isinstance(m, _BN)]


def _fresh(bns: Sequence[_BN]) -> list[_Stats]:
    """Statistics as ``reset_running_stats`` leaves them (mean 0, var 1, no batches)."""
    return [
        (
            torch.zeros_like(bn.running_mean),
            torch.ones_like(bn.running_var),
            torch.zeros_like(bn.num_batches_tracked),
        )
        for bn in bns
    ]


def _load(bns: Sequence[_BN], stats: Sequence[_Stats]) -> None:
    """Make ``stats`` the running statistics the BN modules read (eval) and update (train)."""
    for bn, (mean, var, count) in zip(bns, stats):
        buffers = bn._buffers
        buffers["running_mean"], buffers["running_var"] = mean, var
        buffers["num_batches_tracked"] = count


def _state_bytes(bns: Sequence[_BN]) -> int:
    return sum(2 * bn.running_mean.numel() * bn.running_mean.element_size() + 8 for bn in bns)


class PopulationEvaluator:
    """Top-1/top-5 (%) and cross-entropy of supernet paths, BN recalibrated per path, for a whole
    population at once; equal to :func:`~fastscarlet.evaluate.accuracy.evaluate_paths` on the same
    batches (see the module doc).

    ``evaluator(genomes) -> [{"acc", "acc5", "loss"}, ...]`` in input order: a search evaluator
    (:class:`fastscarlet.search.Search`). :meth:`evaluate` gives
    :class:`~fastscarlet.evaluate.accuracy.Accuracy` records.

    Args:
        supernet: a :class:`~fastscarlet.nn.supernet.SuperNet` (left as it was after each call).
        calib_loader, val_loader: yield ``(images, labels)``, the same batches on every pass.
        calib_batches, val_batches: batches used of each (None: all), as ``evaluate_paths``.
        device: where to compute (default: the supernet's); on another device a copy of the
            supernet is used.
        memory_budget: bytes of BN statistics one trie may hold (default: 1 GiB); a population
            needing more is evaluated in chunks.
        cache_bytes: bytes of batches to hold on the device (see
            :class:`~fastscarlet.evaluate.batches.CachedBatches`).
        group_siblings: run the children of a trie node as one multi-path layer and the leaves
            under a node through the head together (default: on CUDA only).
        channels_last: hold the batches channels_last whatever layout the loaders deliver (the
            convolutions' preferred layout: a SCARLET subnet at 32x32 ran 1.75x faster on this
            project's CPU; equal to ``evaluate_paths`` on the loaders' batches within float
            tolerance only, so near-tied logits may flip a top-1 count). Default False: the
            batches as delivered, bit-identical to ``evaluate_paths`` on the CPU; give the
            loaders ``channels_last=True`` to have both.
        progress: a progress bar over the batches of each pass.
    """

    def __init__(
        self,
        supernet: nn.Module,
        calib_loader: Iterable,
        val_loader: Iterable,
        calib_batches: int | None = 20,
        val_batches: int | None = None,
        device: torch.device | str | None = None,
        *,
        memory_budget: int | None = None,
        cache_bytes: int | None = None,
        group_siblings: bool | None = None,
        channels_last: bool = False,
        progress: bool = False,
    ) -> None:
        own = next(supernet.parameters()).device
        self.device = torch.device(device) if device is not None else own
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.supernet = supernet if self.device == own else copy.deepcopy(supernet).to(self.device)
        self.space = supernet.space
        self.calib = CachedBatches(
            calib_loader, calib_batches, self.device, cache_bytes, channels_last=channels_last
        )
        self.val = CachedBatches(
            val_loader, val_batches, self.device, cache_bytes, channels_last=channels_last
        )
        self.memory_budget = 1 << 30 if memory_budget is None else int(memory_budget)
        self.group_siblings = (
            self.device.type == "cuda" if group_siblings is None else bool(group_siblings)
        )
        self.progress = progress
        net = self.supernet
        self._trunk_bns = _bns(net.stem) + _bns(net.first_block)
        self._head_bns = _bns(net.head)
        self._blocks: dict[tuple[int, int], tuple[nn.Module, nn.Module | None, list[_BN]]] = {}
        self.statistics: dict[Genome, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
        self.last_stats: dict[str, Any] = {}
        self._factor = 1.0  # the calibration batch's weight in the cumulative average

    # -- the public calls ---------------------------------------------------------------------------

    def __call__(self, genomes: Sequence[Sequence[int]]) -> list[dict[str, float]]:
        return population_results(self.evaluate(list(genomes)))

    def evaluate(
        self, genomes: Sequence[Sequence[int]], keep_statistics: bool = False
    ) -> list[Accuracy]:
        """One :class:`Accuracy` per genome, in input order (duplicates evaluated once).

        With ``keep_statistics`` the recalibrated BN statistics of every genome are kept in
        :attr:`statistics` (``{genome: {subnet BN name: (running_mean, running_var)}}``, names as
        in ``supernet.subnet(genome)``), for checking against one-by-one recalibration.
        """
        gs = [validate_genome(self.space, g) for g in genomes]
        if not gs:
            return []
        self.statistics = {}
        results: dict[Genome, Accuracy] = {}
        chunks = self.chunks(sorted(set(gs)))
        net = self.supernet
        saved = [(bn, dict(bn._buffers), bn.momentum) for bn in _bns(net)]
        was_training = net.training
        try:
            with torch.no_grad():
                for chunk in chunks:
                    root = build_trie(chunk)
                    self._calibrate(root)
                    self._evaluate(root)
                    for leaf in root.walk():
                        if leaf.tally is None:
                            continue
                        acc = leaf.tally.result()
                        for g in leaf.genomes:
                            results[g] = acc
                            if keep_statistics:
                                self.statistics[g] = self._named_statistics(root, g)
        finally:
            for bn, buffers, momentum in saved:
                bn._buffers.update(buffers)
                bn.momentum = momentum
            net.train(was_training)
        self.last_stats = {
            "genomes": len(results),
            "chunks": len(chunks),
            "block_forwards_per_batch": sum(trie_size(c) for c in chunks),
            "one_by_one_block_forwards_per_batch": len(results) * self.space.num_layers,
            "calib_batches_held": self.calib.where,
            "val_batches_held": self.val.where,
        }
        return [results[g] for g in gs]

    def chunks(self, genomes: Sequence[Genome]) -> list[list[Genome]]:
        """Consecutive runs of the sorted ``genomes`` whose tries fit in ``memory_budget``."""
        fixed = _state_bytes(self._trunk_bns)
        head = _state_bytes(self._head_bns)
        out: list[list[Genome]] = []
        used = fixed
        prev: Genome = ()
        for g in genomes:
            shared = _common_prefix(prev, g)
            need = head + sum(_state_bytes(self._block(d, g[d])[2]) for d in range(shared, len(g)))
            if out and used + need > self.memory_budget:
                need = head + sum(_state_bytes(self._block(d, c)[2]) for d, c in enumerate(g))
                out.append([])
                used = fixed
            if not out:
                out.append([])
            out[-1].append(g)
            used += need
            prev = g
        return out

    # -- the two passes ---------------------------------------------------------------------------

    def _block(self, layer: int, choice: int) -> tuple[nn.Module, nn.Module | None, list[_BN]]:
        key = (layer, choice)
        if key not in self._blocks:
            block, se = self.supernet.layers[layer].block_of(choice)
            self._blocks[key] = (block, se, _bns(block))
        return self._blocks[key]

    def _batches(self, cached: CachedBatches, desc: str):
        if not self.progress:
            return iter(cached)
        from tqdm.auto import tqdm

        return tqdm(cached, desc=desc, unit="batch", leave=False)

    def _calibrate(self, root: Node) -> None:
        """Calibration pass: train-mode BN, every node accumulating its own statistics."""
        net = self.supernet
        net.train()
        bns = _bns(net)
        root.stats = _fresh(self._trunk_bns)
        for node in root.walk():
            if node is not root:
                node.stats = _fresh(self._block(node.depth - 1, node.choice)[2])
            if node.genomes:
                node.head_stats = _fresh(self._head_bns)
        seen = 0
        for b, (x, _) in enumerate(self._batches(self.calib, "recalibrate")):
            # The cumulative average (momentum None) weighs batch b by 1 / (b + 1); given as the
            # momentum it is the same number without torch reading num_batches_tracked back
            # from the device (a sync per BN call).
            self._factor = 1.0 / (b + 1)
            for bn in bns:
                bn.momentum = self._factor
            _load(self._trunk_bns, root.stats)
            self._descend(root, net.first_block(net.stem(x)), None)
            seen += x.shape[0]
        if seen == 0:
            raise ValueError("BN recalibration got no batches")

    def _evaluate(self, root: Node) -> None:
        """Evaluation pass: eval-mode BN with each node's recalibrated statistics."""
        net = self.supernet
        net.eval()
        for leaf in root.walk():
            if leaf.genomes:
                leaf.tally = Tally()
        for x, y in self._batches(self.val, "evaluate"):
            _load(self._trunk_bns, root.stats)
            self._descend(root, net.first_block(net.stem(x)), y)

    def _descend(self, node: Node, h: torch.Tensor, y: torch.Tensor | None) -> None:
        """Run ``node``'s children on its activation ``h`` (depth first); score the leaves on
        ``y`` (evaluation pass) or only update their statistics (calibration: ``y`` is None)."""
        children = list(node.children.values())
        if self.group_siblings and len(children) > 1:
            outs = self._children_grouped(node, children, h)
        else:
            outs = (self._child(child, h) for child in children)
        leaves: list[tuple[Node, torch.Tensor]] = []
        for child, hc in zip(children, outs):
            if child.children:
                self._descend(child, hc, y)
            else:
                leaves.append((child, hc))
        if not leaves:
            return
        if self.group_siblings and len(leaves) > 1:
            self._heads_grouped(leaves, y)
            return
        for leaf, hc in leaves:
            _load(self._head_bns, leaf.head_stats)
            logits = self.supernet.head(hc)
            if y is not None:
                leaf.tally.add(logits, y)  # type: ignore[union-attr]

    def _child(self, child: Node, h: torch.Tensor) -> torch.Tensor:
        block, se, bns = self._block(child.depth - 1, child.choice)  # type: ignore[arg-type]
        _load(bns, child.stats)
        return block.forward_with_se(h, se)

    # -- several subnets per pass -----------------------------------------------------------------

    def _children_grouped(self, node: Node, children: list[Node], h: torch.Tensor):
        from fastscarlet.nn.multipath import NodeStatistics, multipath_layer

        layer = self.supernet.layers[node.depth]
        norm = NodeStatistics([c.stats for c in children], self._factor)
        y = multipath_layer(layer, h, [c.choice for c in children], norm, shared_input=True)
        return list(y.split(layer.spec.out_channels, dim=1))

    def _heads_grouped(self, leaves: list[tuple[Node, torch.Tensor]], y: torch.Tensor | None):
        from fastscarlet.nn.multipath import NodeStatistics, multipath_head

        norm = NodeStatistics([leaf.head_stats for leaf, _ in leaves], self._factor)
        logits = multipath_head(self.supernet.head, [hc for _, hc in leaves], norm)
        if y is not None:
            for (leaf, _), lg in zip(leaves, logits):
                leaf.tally.add(lg, y)  # type: ignore[union-attr]

    # -- statistics for checks --------------------------------------------------------------------

    def _named_statistics(
        self, root: Node, genome: Genome
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        net = self.supernet
        out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

        def put(prefix: str, module: nn.Module, stats: Sequence[_Stats]) -> None:
            names = [n for n, m in module.named_modules() if isinstance(m, _BN)]
            for name, (mean, var, _) in zip(names, stats):
                out[f"{prefix}.{name}"] = (mean.clone(), var.clone())

        trunk = len(_bns(net.stem))
        put("stem", net.stem, root.stats[:trunk])
        put("first_block", net.first_block, root.stats[trunk:])
        node = root
        for d, c in enumerate(genome):
            node = node.children[c]
            put(f"blocks.{d}", self._block(d, c)[0], node.stats)
        put("head", net.head, node.head_stats)
        return out


def population_results(accuracies: Sequence[Accuracy]) -> list[dict[str, float]]:
    """``[{"acc", "acc5", "loss"}]`` of :class:`Accuracy` records (the search's metric names)."""
    return [{"acc": a.top1, "acc5": a.top5, "loss": a.loss} for a in accuracies]


__all__ = ["Node", "PopulationEvaluator", "build_trie", "population_results", "trie_size"]
