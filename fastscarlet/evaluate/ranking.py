"""Ranking fidelity: how well supernet scores order architectures by their stand-alone accuracy.

Given, for ``n`` architectures, the accuracy each path gets in a trained supernet (``predicted``) and
the accuracy each gets trained on its own (``truth``):

* **Kendall tau** (tau-b, ties counted as SciPy does): ``(concordant - discordant)`` pairs over
  the number of pairs, corrected for ties; FairNAS reports this (papers.md section 6);
* **Spearman rho**: the Pearson correlation of the ranks;
* **top-k precision**: ``|top_k(predicted) ∩ top_k(truth)| / k``, the share of the supernet's ``k``
  best that really are among the ``k`` best (ties broken by position);
* **local tau**: Kendall tau among the ``m`` architectures best by ``truth``, the order-preserving
  "among the top" that Supernet Shifting claims to improve;
* **95% bootstrap confidence intervals** for each (:func:`bootstrap_ci`): the architectures are
  resampled with replacement as (predicted, truth) pairs (``scipy.stats.bootstrap``, paired,
  percentile method). With ``n`` around 20 they are wide; that width is the honest uncertainty of
  a ranking study of that size (FairNAS's tau of 0.9487 rests on 13 models).

:func:`stratified_by_madds` picks the architectures: one per equal-width MAdds bin of a large random
pool, so that the sample spans the cost range instead of piling up at its centre as uniformly
random genomes do.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from fastscarlet.cost import CostModel
from fastscarlet.space import Genome, SearchSpace

Statistic = Callable[[np.ndarray, np.ndarray], float]


def _pair(predicted: Sequence[float], truth: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(predicted, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if p.ndim != 1 or p.shape != t.shape:
        raise ValueError(
            f"predicted and truth must be 1-d and of equal length, got {p.shape} and {t.shape}"
        )
    if len(p) < 2:
        raise ValueError(f"a ranking needs at least 2 architectures, got {len(p)}")
    if not (np.isfinite(p).all() and np.isfinite(t).all()):
        raise ValueError("predicted and truth must be finite numbers")
    return p, t


def kendall_tau(predicted: Sequence[float], truth: Sequence[float]) -> float:
    """Kendall's tau-b (NaN when one side is constant)."""
    p, t = _pair(predicted, truth)
    return float(stats.kendalltau(p, t).statistic)


def spearman(predicted: Sequence[float], truth: Sequence[float]) -> float:
    """Spearman's rho (NaN when one side is constant)."""
    p, t = _pair(predicted, truth)
    return float(stats.spearmanr(p, t).statistic)


def top_indices(values: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest ``values`` (ties: the earlier position first)."""
    return np.argsort(-np.asarray(values), kind="stable")[:k]


def topk_precision(predicted: Sequence[float], truth: Sequence[float], k: int) -> float:
    """Share of the ``k`` best by ``predicted`` that are among the ``k`` best by ``truth``."""
    p, t = _pair(predicted, truth)
    if not 1 <= k <= len(p):
        raise ValueError(f"k must be in 1..{len(p)}, got {k}")
    return len(set(top_indices(p, k).tolist()) & set(top_indices(t, k).tolist())) / k


def local_tau(predicted: Sequence[float], truth: Sequence[float], top: int) -> float:
    """Kendall tau among the ``top`` architectures that are best by ``truth``."""
    p, t = _pair(predicted, truth)
    if not 2 <= top <= len(p):
        raise ValueError(f"top must be in 2..{len(p)}, got {top}")
    keep = top_indices(t, top)
    return kendall_tau(p[keep], t[keep])


def bootstrap_ci(
    statistic: Statistic,
    predicted: Sequence[float],
    truth: Sequence[float],
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(predicted, truth)`` over architectures
    resampled with replacement as pairs (``scipy.stats.bootstrap``, ``paired=True``).

    A resample on which the statistic is undefined (e.g. every copy of one architecture, so tau is
    NaN) counts as 0, no agreement: the interval then stays finite and, if anything, wider.
    """
    p, t = _pair(predicted, truth)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be positive, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")

    def defined(a: np.ndarray, b: np.ndarray) -> float:
        value = statistic(a, b)
        return 0.0 if math.isnan(value) else value

    with warnings.catch_warnings():  # resamples of one repeated architecture: said above
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        res = stats.bootstrap(
            (p, t), defined, paired=True, vectorized=False, n_resamples=n_resamples,
            confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed),
        )  # fmt: skip
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


@dataclass(frozen=True)
class RankingReport:
    """The ranking statistics of one set of supernet scores against stand-alone accuracies."""

    n: int
    kendall_tau: float
    tau_ci: tuple[float, float]
    spearman: float
    spearman_ci: tuple[float, float]
    topk_k: int
    topk_precision: float
    topk_ci: tuple[float, float]
    local_top: int
    local_tau: float
    local_tau_ci: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: tuples as lists, NaN as None."""

        def clean(v: Any) -> Any:
            if isinstance(v, (tuple, list)):
                return [clean(x) for x in v]
            if isinstance(v, float) and math.isnan(v):
                return None
            return v

        return {k: clean(v) for k, v in asdict(self).items()}


def rank_report(
    predicted: Sequence[float],
    truth: Sequence[float],
    k: int | None = None,
    top: int | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
) -> RankingReport:
    """Every statistic of the module doc with its 95% bootstrap interval.

    ``k`` (top-k precision) defaults to a quarter of the architectures, at least 1; ``top`` (local
    tau) to the better half, at least 2. The bootstrap of the local tau resamples only those
    ``top`` architectures.
    """
    p, t = _pair(predicted, truth)
    n = len(p)
    k = max(1, round(n / 4)) if k is None else k
    top = max(2, math.ceil(n / 2)) if top is None else top
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    if not 2 <= top <= n:
        raise ValueError(f"top must be in 2..{n}, got {top}")

    def ci(statistic: Statistic, a: np.ndarray = p, b: np.ndarray = t) -> tuple[float, float]:
        return bootstrap_ci(statistic, a, b, n_resamples=n_resamples, seed=seed)

    def precision(a: np.ndarray, b: np.ndarray) -> float:
        return topk_precision(a, b, k)

    keep = top_indices(t, top)
    with warnings.catch_warnings():  # a constant side gives NaN, which to_dict() writes as null
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return RankingReport(
            n=n,
            kendall_tau=kendall_tau(p, t),
            tau_ci=ci(kendall_tau),
            spearman=spearman(p, t),
            spearman_ci=ci(spearman),
            topk_k=k,
            topk_precision=topk_precision(p, t, k),
            topk_ci=ci(precision),
            local_top=top,
            local_tau=local_tau(p, t, top),
            local_tau_ci=ci(kendall_tau, p[keep], t[keep]),
        )


def random_genomes(space: SearchSpace, count: int, rng: np.random.Generator) -> np.ndarray:
    """``[count, L]`` uniformly random valid genomes (each layer uniform over its choices)."""
    cols = []
    for layer in space.layers:
        allowed = np.asarray(layer.allowed, dtype=np.int64)
        cols.append(allowed[rng.integers(0, len(allowed), size=count)])
    return np.stack(cols, axis=1)


def stratified_by_madds(
    space: SearchSpace,
    k: int,
    rng: np.random.Generator,
    resolution: int = 224,
    pool: int = 20000,
    coverage: tuple[float, float] = (0.5, 99.5),
) -> list[Genome]:
    """``k`` distinct architectures spread over the MAdds range (FairNAS's stratified sampling).

    A pool of ``pool`` uniformly random genomes is costed (plain identity, at ``resolution``); the
    range between its ``coverage`` percentiles is cut into ``k`` equal-width bins (the first and
    last also take the tails) and one genome is drawn uniformly from each bin. A bin with no
    genome left takes the unchosen genome nearest its centre. Returned in increasing MAdds.
    """
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    genomes = np.unique(random_genomes(space, pool, rng), axis=0)
    if len(genomes) < k:
        raise ValueError(
            f"the {space.name} space gave only {len(genomes)} distinct genomes for {k}"
        )
    madds = CostModel(space, resolution).batch(genomes)[0].astype(np.float64)
    lo, hi = np.percentile(madds, coverage)
    edges = np.linspace(lo, hi, k + 1)
    bins = np.clip(np.searchsorted(edges, madds, side="right") - 1, 0, k - 1)
    chosen: list[int] = []
    taken = np.zeros(len(genomes), dtype=bool)
    for b in range(k):
        members = np.flatnonzero((bins == b) & ~taken)
        if len(members) == 0:
            centre = (edges[b] + edges[b + 1]) / 2
            members = np.flatnonzero(~taken)
            members = members[[int(np.argmin(np.abs(madds[members] - centre)))]]
        pick = int(rng.choice(members))
        taken[pick] = True
        chosen.append(pick)
    chosen.sort(key=lambda i: (madds[i], tuple(genomes[i])))
    return [tuple(int(c) for c in genomes[i]) for i in chosen]


def spread_order(n: int) -> list[int]:
    """``0..n-1`` in an order whose every prefix spreads over the range: the ends, then the
    midpoints of the gaps, breadth first (``[0, 4, 2, 1, 3]`` for 5). Architectures sorted by
    MAdds and trained in this order give a partial study that still spans the cost range."""
    if n < 1:
        return []
    order = [0] + ([n - 1] if n > 1 else [])
    gaps = [(0, n - 1)]
    while gaps:
        nxt = []
        for lo, hi in gaps:
            if hi - lo < 2:
                continue
            mid = (lo + hi) // 2
            order.append(mid)
            nxt += [(lo, mid), (mid, hi)]
        gaps = nxt
    return order


def plot_ranking(path, records: Sequence[dict[str, Any]]) -> None:
    """One panel per variant: supernet accuracy (x) against stand-alone accuracy (y), with tau and
    its interval in the title. ``records`` are ``ranking.json``'s objects."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    n = len(records)
    if n == 0:
        return
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    for ax, rec in zip(axes.flat, records):
        ax.scatter(rec["supernet_acc"], rec["standalone_acc"], s=18)
        lo, hi = (float("nan") if v is None else v for v in rec["tau_ci"])
        tau = float("nan") if rec["kendall_tau"] is None else rec["kendall_tau"]
        ax.set_title(
            f"{rec['variant']}\ntau {tau:.2f} [{lo:.2f}, {hi:.2f}], n={rec['n']}", fontsize=9
        )
        ax.set_xlabel("supernet top-1 (%)")
        ax.set_ylabel("stand-alone top-1 (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
