"""Survival rules: NSGA-II with constrained domination, and MoGA's weighted variant.

Objectives arrive as a matrix ``F [N, M]`` to **minimise** (maximised objectives negated by the
engine) and a constraint violation ``v [N] >= 0`` (0: feasible). Both rules rank the same way:

* **Constrained domination** (Deb 2002): a feasible genome beats an infeasible one; two infeasible
  genomes compare by violation (smaller wins); two feasible ones by Pareto domination. So the
  feasible genomes take fronts ``0..r`` by non-dominated sorting (:func:`fastscarlet.nds`), and the
  infeasible ones follow, one front per distinct violation, in increasing order.
* **Crowding** inside a front: ``nsga2`` uses NSGA-II's crowding distance (the mean over the
  objectives of the normalised gap between a genome's neighbours, +inf at a front's ends);
  ``moga`` weights that mean: ``sum_j w_j cd_j`` with ``sum_j w_j = 1``. With equal weights the two
  are identical.

MoGA (papers.md section 5.3) "replaces traditional multi-objective optimisation with a weighted
fitness strategy" over accuracy, latency and parameters and "lays more attention on accuracy and
latency than the number of parameters"; its weights and its exact NSGA-II modification are not
published. Our reading keeps Pareto ranking (so the front stays a true front) and puts the
weights where NSGA-II has a free choice, the crowding that cuts the last front and breaks
tournament ties: a front is thinned where the heavily weighted objectives are crowded, keeping
spread in accuracy and latency before spread in params. :data:`MOGA_WEIGHTS` are our defaults.

Survival keeps the ``n`` best by (front, -crowding, row index): whole fronts while they fit, the
front that does not fit cut by decreasing crowding. Deterministic: ties go to the lower row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fastscarlet import nds

FITNESS_RULES = ("nsga2", "moga")

# Our MoGA weights (the paper's are not published): accuracy and latency before params; MAdds
# stands in for latency when no latency table is given. Objectives not listed share what is left.
MOGA_WEIGHTS: dict[str, float] = {"acc": 0.4, "latency": 0.4, "madds": 0.4, "params": 0.2}


def objective_weights(names: Sequence[str], weights: Mapping[str, float] | None) -> np.ndarray:
    """Weights for ``names`` summing to 1: ``weights`` where given (else :data:`MOGA_WEIGHTS`),
    1/M for objectives neither names; then normalised."""
    table = dict(MOGA_WEIGHTS if weights is None else weights)
    unknown = sorted(set(table) - set(names)) if weights is not None else []
    if unknown:
        raise ValueError(f"weights name objectives {unknown} that are not among {list(names)}")
    w = np.array([float(table.get(n, 1.0 / len(names))) for n in names], dtype=np.float64)
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {dict(zip(names, w))}")
    return w / w.sum()


def constraint_violation(values: np.ndarray, bounds: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Total relative violation ``[N]`` of the bounds.

    ``values [N, K]`` are the constrained metrics, ``bounds [K]`` their limits, ``upper [K]`` True
    for ``value <= bound`` (minimised metrics), False for ``value >= bound``. Each violation is
    relative to ``|bound|`` (absolute when the bound is 0), so metrics of different scales (MAdds,
    params, ms) add up commensurably.
    """
    if values.shape[1] == 0:
        return np.zeros(len(values))
    excess = np.where(upper, values - bounds, bounds - values)
    scale = np.where(bounds != 0, np.abs(bounds), 1.0)
    return np.maximum(excess / scale, 0.0).sum(axis=1)


def rank_and_crowding(
    F: np.ndarray, violation: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Front index (int64 [N]) and crowding (float64 [N]) under constrained domination.

    ``weights`` None: NSGA-II crowding; else the weighted crowding of :mod:`this module <.>`.
    Infeasible genomes get crowding 0 (they are ordered by violation alone).
    """
    n = len(F)
    fronts = np.zeros(n, dtype=np.int64)
    crowd = np.zeros(n, dtype=np.float64)
    feasible = violation <= 0
    offset = 0
    if feasible.any():
        Ff = np.ascontiguousarray(F[feasible], dtype=np.float64)
        ff = nds.non_dominated_sort(Ff)
        fronts[feasible] = ff
        if weights is None:
            crowd[feasible] = nds.crowding_distance(Ff, ff)
        else:
            cd = np.zeros(len(Ff))
            for j, w in enumerate(weights):
                if w > 0:  # 0 * inf would be nan at a front's ends
                    cd += w * nds.crowding_distance(Ff[:, j : j + 1], ff)
            crowd[feasible] = cd
        offset = int(ff.max()) + 1
    if (~feasible).any():
        _, level = np.unique(violation[~feasible], return_inverse=True)
        fronts[~feasible] = offset + level
    return fronts, crowd


def survival_order(fronts: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """All rows, best first: by front, then decreasing crowding, then row index."""
    return np.lexsort((np.arange(len(fronts)), -crowd, fronts))


def survive(
    F: np.ndarray, violation: np.ndarray, n: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """Indices of the ``n`` survivors of ``F`` (best first); see the module doc."""
    fronts, crowd = rank_and_crowding(F, violation, weights)
    return survival_order(fronts, crowd)[:n]
