"""A population's evaluation split over torch.distributed ranks or over the devices of one node.

Sharing survives the split when each shard is a run of the *sorted* population: genomes with a
common prefix are neighbours in sorted order, so a contiguous shard keeps them on one rank (the
search engine shards a generation the same way, ``fastscarlet.search.engine``, and calls the
evaluator on each rank with its shard; under the engine an evaluator must not gather itself).

* :func:`prefix_shards`: the sorted population cut into ``parts`` contiguous shards;
* :func:`evaluate_sharded`: for direct use under ``torchrun``: this rank evaluates its shard,
  results are gathered (``all_gather_object``) and returned in input order on every rank;
* :class:`MultiDeviceEvaluator`: the GPUs of one node from one process (no torchrun): one
  :class:`~fastscarlet.evaluate.population.PopulationEvaluator` per device on a copy of the
  supernet, the shards run in threads (CUDA kernels release the GIL), the batches read once and
  copied to every device.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from fastscarlet.evaluate.batches import CachedBatches
from fastscarlet.evaluate.population import PopulationEvaluator

Evaluator = Callable[[list[tuple[int, ...]]], Sequence[Mapping[str, float]]]


def prefix_shards(genomes: Sequence[Sequence[int]], parts: int) -> list[list[int]]:
    """Indices into ``genomes`` of ``parts`` shards: contiguous runs of the sorted order, sizes
    differing by at most one (the search engine's rule)."""
    if parts < 1:
        raise ValueError(f"parts must be positive, got {parts}")
    order = sorted(range(len(genomes)), key=lambda i: tuple(genomes[i]))
    bounds = np.linspace(0, len(order), parts + 1).round().astype(int)
    return [order[bounds[k] : bounds[k + 1]] for k in range(parts)]


def _merge(n: int, parts: Iterable[Sequence[tuple[int, Mapping[str, float]]]]) -> list[Any]:
    out: list[Any] = [None] * n
    for part in parts:
        for i, r in part:
            out[i] = dict(r)
    return out


def _run_shard(evaluate: Evaluator, genomes, mine: list[int]) -> list[tuple[int, Any]]:
    local = list(evaluate([tuple(genomes[i]) for i in mine])) if mine else []
    if len(local) != len(mine):
        raise ValueError(f"the evaluator returned {len(local)} results for {len(mine)} genomes")
    return list(zip(mine, local))


def evaluate_sharded(
    evaluate: Evaluator, genomes: Sequence[Sequence[int]], group: Any = None
) -> list[dict[str, float]]:
    """Evaluate ``genomes`` split over the ranks of ``group`` (default: the world), every rank
    returning all results in input order. Without an initialised process group of more than one
    rank: ``evaluate(genomes)``."""
    import torch.distributed as dist

    world = dist.get_world_size(group) if dist.is_available() and dist.is_initialized() else 1
    if world == 1:
        return [dict(r) for r in evaluate([tuple(g) for g in genomes])]
    rank = dist.get_rank(group)
    mine = prefix_shards(genomes, world)[rank]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, _run_shard(evaluate, genomes, mine), group=group)
    return _merge(len(genomes), gathered)


class MultiDeviceEvaluator:
    """:class:`~fastscarlet.evaluate.population.PopulationEvaluator` over several devices of one
    process: ``evaluator(genomes) -> [{"acc", "acc5", "loss"}]`` in input order, each device
    evaluating one prefix shard (see the module doc). Keyword arguments go to every
    ``PopulationEvaluator``."""

    def __init__(
        self,
        supernet: torch.nn.Module,
        calib_loader: Iterable,
        val_loader: Iterable,
        calib_batches: int | None = 20,
        val_batches: int | None = None,
        devices: Sequence[torch.device | str] = ("cuda:0",),
        **kwargs: Any,
    ) -> None:
        if not devices:
            raise ValueError("MultiDeviceEvaluator needs at least one device")
        self.devices = [torch.device(d) for d in devices]
        # Read once, on this thread: the loaders are not safe to iterate from several threads.
        self.calib = CachedBatches(calib_loader, calib_batches, "cpu")
        self.val = CachedBatches(val_loader, val_batches, "cpu")
        self.evaluators = []
        for dev in self.devices:
            net = copy.deepcopy(supernet).to(dev)  # one copy per device, also for twice "cpu"
            self.evaluators.append(
                PopulationEvaluator(net, self.calib, self.val, None, None, dev, **kwargs)
            )

    def __call__(self, genomes: Sequence[Sequence[int]]) -> list[dict[str, float]]:
        for _ in self.calib:  # fill the shared caches before the threads read them
            pass
        for _ in self.val:
            pass
        shards = prefix_shards(genomes, len(self.evaluators))
        with ThreadPoolExecutor(len(self.evaluators)) as pool:
            parts = list(
                pool.map(lambda ev, mine: _run_shard(ev, genomes, mine), self.evaluators, shards)
            )
        return _merge(len(genomes), parts)


__all__ = ["MultiDeviceEvaluator", "evaluate_sharded", "prefix_shards"]
