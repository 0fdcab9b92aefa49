"""Stage 5, multi-objective architecture search over a trained supernet.

::

    from fastscarlet.search import Search, SearchConfig
    result = Search(space, evaluate, objectives=[("acc", "max"), ("madds", "min")],
                    config=SearchConfig(population=64, generations=30, seed=0)).run(out="runs/s")

- :mod:`~fastscarlet.search.engine`: :class:`Search` (NSGA-II generations, constraints, exact
  resume, distributed evaluation), :class:`SearchConfig`, :class:`SearchResult`;
- :mod:`~fastscarlet.search.operators`: sampling, crossover per stage or layer, mutation, mating
  restriction;
- :mod:`~fastscarlet.search.reinforced`: MoreMNAS reinforced mutation (a REINFORCE policy);
- :mod:`~fastscarlet.search.fitness`: constrained domination, NSGA-II and MoGA's weighted rule;
- :mod:`~fastscarlet.search.archive`: every evaluated genome (the cache);
- :mod:`~fastscarlet.search.outputs`: ``archive.csv``, ``front.json``, ``history.csv``, plots;
- :mod:`~fastscarlet.search.evaluators`: accuracy (supernet), MAdds/params, latency, ``combine``;
- :mod:`~fastscarlet.search.shifting`: Supernet Shifting (the supernet fine-tuned on each new
  genome's path before it is scored; transfer to a new dataset);
- :mod:`~fastscarlet.search.problems`: a test problem with an exactly known front.

It reads spaces, costs and evaluators from the stages below; only :mod:`fastscarlet.cli` imports it.
"""

from fastscarlet.search.archive import Archive, Record
from fastscarlet.search.engine import Search, SearchConfig, SearchResult
from fastscarlet.search.evaluators import (
    AccuracyEvaluator,
    CostEvaluator,
    LatencyEvaluator,
    combine,
)
from fastscarlet.search.problems import TableProblem
from fastscarlet.search.shifting import ShiftingEvaluator, transfer_supernet

__all__ = [
    "AccuracyEvaluator",
    "Archive",
    "CostEvaluator",
    "LatencyEvaluator",
    "Record",
    "Search",
    "SearchConfig",
    "SearchResult",
    "ShiftingEvaluator",
    "TableProblem",
    "combine",
    "transfer_supernet",
]
