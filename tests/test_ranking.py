"""The ranking study's statistics (evaluate/ranking.py) against independent references: pair
counting for Kendall tau, the closed form for Spearman rho, hand-made top-k and local cases, the
bootstrap interval's behaviour, and the stratified choice of architectures."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fastscarlet.cost import CostModel
from fastscarlet.evaluate.ranking import (
    bootstrap_ci,
    kendall_tau,
    local_tau,
    random_genomes,
    rank_report,
    spearman,
    spread_order,
    stratified_by_madds,
    topk_precision,
)
from fastscarlet.space import get_space, validate_genome


def tau_by_pairs(x, y) -> float:
    """Kendall's tau-a by counting pairs (no ties in the inputs it is used on: tau-a = tau-b)."""
    pairs = list(itertools.combinations(range(len(x)), 2))
    s = sum(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]) for i, j in pairs)
    return float(s) / len(pairs)


def test_kendall_tau_counts_concordant_pairs():
    truth = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert kendall_tau(truth, truth) == pytest.approx(1.0)
    assert kendall_tau(truth[::-1], truth) == pytest.approx(-1.0)
    # one swapped neighbour pair: 9 concordant, 1 discordant of 10 -> 0.8
    assert kendall_tau([1, 3, 2, 4, 5], truth) == pytest.approx(0.8)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, y = rng.normal(size=12), rng.normal(size=12)
        assert kendall_tau(x, y) == pytest.approx(tau_by_pairs(x, y), abs=1e-12)


def test_kendall_tau_is_tau_b_with_ties():
    # tau-b = (C - D) / sqrt((n0 - t_x)(n0 - t_y)); x has one tied pair, y none; 5 items, n0 = 10
    x, y = [1, 1, 2, 3, 4], [1, 2, 3, 4, 5]
    c, d = 9, 0  # the tied pair (0, 1) is neither
    assert kendall_tau(x, y) == pytest.approx((c - d) / math.sqrt((10 - 1) * 10))


def test_spearman_closed_form_without_ties():
    x, y = [1, 3, 2, 4, 5], [1, 2, 3, 4, 5]
    d2 = sum((a - b) ** 2 for a, b in zip(x, y))
    assert spearman(x, y) == pytest.approx(1 - 6 * d2 / (5 * (5**2 - 1)))  # 0.9


def test_topk_precision_known_cases():
    truth = [90, 80, 70, 60, 50]  # a, b, c, d, e
    pred = [0.9, 0.2, 0.8, 0.1, 0.3]  # supernet's best two: a, c; truly best two: a, b
    assert topk_precision(pred, truth, 2) == 0.5
    assert topk_precision(pred, truth, 1) == 1.0
    assert topk_precision(pred, truth, 5) == 1.0
    assert topk_precision([5, 4, 3, 2, 1], [1, 2, 3, 4, 5], 2) == 0.0
    with pytest.raises(ValueError, match="k must be"):
        topk_precision(pred, truth, 6)


def test_local_tau_looks_only_at_the_best_by_truth():
    truth = [1, 2, 3, 10, 20, 30]
    # the three best by truth (10, 20, 30) are perfectly ordered, the rest reversed
    pred = [9, 8, 7, 10, 20, 30]
    assert local_tau(pred, truth, 3) == pytest.approx(1.0)
    assert kendall_tau(pred, truth) == pytest.approx((12 - 3) / 15)  # the 3 low pairs discordant
    assert local_tau([3, 2, 1, 30, 20, 10], truth, 3) == pytest.approx(-1.0)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="equal length"):
        kendall_tau([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 2"):
        spearman([1], [1])
    with pytest.raises(ValueError, match="finite"):
        kendall_tau([1, float("nan")], [1, 2])


def _noisy_ranking(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=n)
    return truth + rng.normal(scale=0.7, size=n), truth


def test_bootstrap_ci_contains_the_estimate_and_shrinks_with_n():
    widths = []
    for n in (10, 40, 160):
        pred, truth = _noisy_ranking(n, seed=n)
        lo, hi = bootstrap_ci(kendall_tau, pred, truth, n_resamples=300, seed=1)
        assert lo <= kendall_tau(pred, truth) <= hi
        assert -1 <= lo < hi <= 1
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    # the width scales roughly as 1/sqrt(n): 16x the architectures, about a quarter of the width
    assert widths[2] < 0.5 * widths[0]


def test_bootstrap_ci_is_reproducible_and_resamples_pairs():
    pred, truth = _noisy_ranking(20, seed=3)
    a = bootstrap_ci(spearman, pred, truth, n_resamples=300, seed=7)
    assert a == bootstrap_ci(spearman, pred, truth, n_resamples=300, seed=7)
    # a perfect ranking stays perfect in every paired resample (unpaired resampling would not)
    lo, hi = bootstrap_ci(kendall_tau, truth, truth, n_resamples=300, seed=7)
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.0)


def test_rank_report_defaults_and_json_form():
    pred, truth = _noisy_ranking(20, seed=5)
    rep = rank_report(pred, truth, n_resamples=200, seed=0)
    assert (rep.n, rep.topk_k, rep.local_top) == (20, 5, 10)
    assert rep.kendall_tau == pytest.approx(kendall_tau(pred, truth))
    assert rep.spearman == pytest.approx(spearman(pred, truth))
    assert rep.topk_precision == topk_precision(pred, truth, 5)
    assert rep.local_tau == pytest.approx(local_tau(pred, truth, 10))
    # the local interval resamples only the better half: perfectly ordered there, reversed below
    truth = np.arange(20.0)
    pred = np.concatenate([truth[:10][::-1], truth[10:]])
    rep = rank_report(pred, truth, n_resamples=200, seed=0)
    assert rep.local_tau_ci == (pytest.approx(1.0), pytest.approx(1.0))
    assert rep.tau_ci[1] < 1
    d = rep.to_dict()
    assert isinstance(d["tau_ci"], list) and len(d["tau_ci"]) == 2
    constant = rank_report([1, 1, 1, 1], [1, 2, 3, 4], n_resamples=50)
    assert constant.to_dict()["kendall_tau"] is None  # NaN (undefined) is written as null


def test_stratified_sample_spans_the_madds_range():
    space = get_space("scarlet")
    rng = np.random.default_rng(0)
    picked = stratified_by_madds(space, 20, rng, resolution=32, pool=4000)
    assert len(set(picked)) == 20
    assert all(validate_genome(space, g) == g for g in picked)
    cost = CostModel(space, 32)
    madds = [cost.madds(g) for g in picked]
    assert madds == sorted(madds)
    pool = cost.batch(random_genomes(space, 4000, np.random.default_rng(1)))[0]
    lo, hi = np.percentile(pool, [0.5, 99.5])
    # one per equal-width bin: the sample covers the range evenly, which 20 uniformly random
    # genomes do not (they pile up around the mean)
    assert min(madds) < lo + 0.1 * (hi - lo) and max(madds) > hi - 0.1 * (hi - lo)
    gaps = np.diff(madds)
    assert gaps.max() < 3 * (hi - lo) / 20
    random20 = np.sort(cost.batch(random_genomes(space, 20, np.random.default_rng(2)))[0])
    assert random20[-1] - random20[0] < 0.8 * (max(madds) - min(madds))
    again = stratified_by_madds(space, 20, np.random.default_rng(0), resolution=32, pool=4000)
    assert again == picked


def test_spread_order_prefixes_span_the_range():
    for n in (1, 2, 5, 24):
        order = spread_order(n)
        assert sorted(order) == list(range(n))
    assert spread_order(5) == [0, 4, 2, 1, 3]
    order = spread_order(24)
    # after a quarter of the architectures, no gap between chosen positions exceeds a quarter
    assert np.diff(sorted(order[:6])).max() <= 6
