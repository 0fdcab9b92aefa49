"""Run by tests/test_population_dist.py, alone or under ``torchrun`` (gloo): evaluate a fixed
population of tiny-space paths with the PopulationEvaluator through ``evaluate_sharded``, then a
short search whose accuracy evaluator is the PopulationEvaluator. Each rank writes
``OUT/rank<r>.json``: the gathered results, the genomes it evaluated itself, and the search's
archive as rank 0 wrote it."""

import json
import os
import sys
from pathlib import Path

import tiny
import torch

from fastscarlet.evaluate import PopulationEvaluator, evaluate_sharded
from fastscarlet.kernels.testing import randomize_bn
from fastscarlet.nn import SuperNet
from fastscarlet.search import AccuracyEvaluator, CostEvaluator, Search, SearchConfig, combine

POPULATION = [
    (0, 1, 0), (0, 1, 1), (0, 1, 2), (0, 1, 3), (0, 1, 4), (2, 4, 0), (2, 4, 3),
    (3, 0, 1), (1, 2, 2), (3, 3, 4), (0, 1, 2), (2, 0, 0),
]  # fmt: skip


def batches(n: int, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, 3, 16, 16, generator=g), torch.randint(0, 3, (batch,), generator=g))
        for _ in range(n)
    ]


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    if "WORLD_SIZE" in os.environ:
        torch.distributed.init_process_group("gloo")
    rank = int(os.environ.get("RANK", "0"))
    torch.manual_seed(0)
    net = SuperNet(tiny.tiny_space())
    randomize_bn(net, torch.Generator().manual_seed(1))
    calib, val = batches(2, 6, 5), batches(2, 7, 6)
    evaluated = []
    pop = PopulationEvaluator(net, calib, val, 2)

    def recording(genomes):
        evaluated.append([list(g) for g in genomes])
        return pop(genomes)

    results = evaluate_sharded(recording, POPULATION)
    acc = AccuracyEvaluator(net, calib, val, 2)
    searched = []

    def search_eval(genomes):
        searched.extend(list(g) for g in genomes)
        return acc(genomes)

    space = tiny.tiny_space()
    evaluator = combine(CostEvaluator(space, 16), search_eval)
    cfg = SearchConfig(population=6, generations=2, seed=0, progress=False)
    Search(space, evaluator, [("acc", "max"), ("madds", "min")], cfg).run(out / "search")
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    archive = (out / "search" / "archive.csv").read_text()
    (out / f"rank{rank}.json").write_text(
        json.dumps(
            {"results": results, "evaluated": evaluated, "searched": searched, "archive": archive}
        )
    )
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
