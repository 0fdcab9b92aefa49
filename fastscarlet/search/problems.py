"""Test problems with a known optimum, for checking and benchmarking the engine (as pymoo's are).

:class:`TableProblem`: every (layer, choice) of a space gets a fixed random **score** and an
integer **cost**; a genome's ``score`` (maximised) and ``cost`` (minimised) are the sums over its
layers. The problem is separable, so its exact Pareto front follows by dynamic programming over
layers: ``best[c]`` = the highest score of any genome of total cost ``c`` is built layer by layer
(``best_l[c] = max_k best_{l-1}[c - cost_l(k)] + score_l(k)``), and the front is the staircase of
``best`` (costs in increasing order where the best score strictly increases). Scores are drawn with
a per-layer trend against cost (a cheap choice tends to score lower), so the front is a real trade
off, not one genome.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fastscarlet.space import Genome, SearchSpace, get_space


class TableProblem:
    """A separable bi-objective problem on ``space`` with an exactly computable front."""

    def __init__(self, space: SearchSpace | str, seed: int = 0, max_cost: int = 100) -> None:
        self.space = get_space(space)
        rng = np.random.default_rng(seed)
        L, C = self.space.num_layers, self.space.num_choices
        self.cost = rng.integers(1, max_cost + 1, size=(L, C))
        noise = rng.normal(0.0, 0.3, size=(L, C))
        self.score = np.round(self.cost / max_cost + noise, 4)
        self.calls = 0

    def __call__(self, genomes: Sequence[Genome]) -> list[dict[str, float]]:
        """The search's evaluator: ``score`` (max) and ``cost`` (min) of each genome."""
        self.calls += 1
        g = np.asarray(genomes, dtype=np.int64).reshape(len(genomes), self.space.num_layers)
        rows = np.arange(self.space.num_layers)
        return [
            {"score": float(self.score[rows, x].sum()), "cost": float(self.cost[rows, x].sum())}
            for x in g
        ]

    def exact_front(self) -> np.ndarray:
        """The true Pareto front ``[k, 2]`` of (score, cost), cost increasing."""
        total = int(sum(self.cost[i, list(layer.allowed)].max() for i, layer in
                        enumerate(self.space.layers)))  # fmt: skip
        best = np.full(total + 1, -np.inf)
        best[0] = 0.0
        for i, layer in enumerate(self.space.layers):
            nxt = np.full(total + 1, -np.inf)
            for k in layer.allowed:
                c, s = int(self.cost[i, k]), self.score[i, k]
                cand = np.full(total + 1, -np.inf)
                cand[c:] = best[: total + 1 - c] + s
                np.maximum(nxt, cand, out=nxt)
            best = nxt
        front, top = [], -np.inf
        for c in range(total + 1):
            if best[c] > top + 1e-12:
                top = best[c]
                front.append((best[c], c))
        return np.array(front, dtype=np.float64)
