"""Benchmarks of the NSGA-II core (issue 5): fastscarlet.nds against moocore, pymoo and DEAP.

Everything runs in one process, on the same seeded data, so the ratios compare like with like:

* non-dominated sorting of N uniform random points, N in {1e3, 1e4, 1e5}, M in {2, 3, 4}:
  ``fastscarlet.nds.non_dominated_sort`` vs ``moocore.pareto_rank`` (what pymoo 0.6.2 calls by
  default), pymoo's compiled efficient non-dominated sort
  (``pymoo.functions.compiled.non_dominated_sorting.efficient_non_dominated_sort``, ENS-SS, Cython)
  and DEAP's ``tools.sortLogNondominated`` (pure Python);
* NSGA-II survival of 2N points to N: ``fastscarlet.nds.select`` (sort + crowding distance of the
  front that is cut) against the same work done with pymoo's pieces (``NonDominatedSorting``, i.e.
  moocore, then pymoo's "cd" crowding of the cut front: ``pymoo_sort_cd``), and against pymoo's
  whole ``RankAndCrowding`` survival, which also computes the crowding of every kept front and
  writes rank and crowding into each ``Individual`` (framework work ``select`` does not do).
  Every cell asserts that its survivors are ``nds.select``'s (as sets: pymoo breaks crowding ties
  at random);
* hypervolume, M in {2, 3}, random points and points on a sphere (all non-dominated):
  ``fastscarlet.nds.hypervolume`` vs ``moocore.hypervolume``.

pymoo's ENS and DEAP take seconds at N = 1e5: those cells run a single round (marked in the
report); every other cell is calibrated by pytest-benchmark (at least 5 rounds, about 1 s).

Each cell records the load average when it ran (``extra_info["loadavg"]``). Run, then turn the
JSON into the tables of benchmarks/RESULTS.md::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python -m pytest -o addopts="" benchmarks/bench_nds.py \
        --benchmark-only --benchmark-json=benchmarks/results/nds_cpu.json -p no:cacheprovider
    .venv/bin/python benchmarks/bench_nds.py benchmarks/results/nds_cpu.json
"""

from __future__ import annotations

import functools
import json
import os
import sys
from importlib.metadata import version

import numpy as np
import pytest

SIZES = (1_000, 10_000, 100_000)
SORTS = ("fastscarlet", "moocore", "pymoo_ens", "deap")
SLOW = {"pymoo_ens": 100_000, "deap": 100_000}  # from this N on: one round


@functools.cache
def objectives(n: int, m: int, kind: str = "random") -> np.ndarray:
    rng = np.random.default_rng(1000 * m + n % 997)
    if kind == "random":
        return rng.random((n, m))
    if kind == "front":  # on the positive orthant of the unit sphere: mutually non-dominated
        G = np.abs(rng.normal(size=(n, m)))
        return G / np.linalg.norm(G, axis=1, keepdims=True)
    raise ValueError(kind)


def versions() -> dict[str, str]:
    return {p: version(p) for p in ("numpy", "pymoo", "moocore", "deap", "pytest-benchmark")}


def measure(benchmark, fn, *, single_round: bool = False):
    benchmark.extra_info.update(versions())
    benchmark.extra_info["rounds"] = "1" if single_round else "calibrated"
    benchmark.extra_info["loadavg"] = list(os.getloadavg())  # the machine may be shared
    if single_round:
        return benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=0)
    return benchmark(fn)


@functools.cache
def deap_population(n: int, m: int) -> list:
    from deap import base, creator

    fitness, individual = f"FitnessMin{m}", f"Individual{m}"
    if not hasattr(creator, fitness):
        creator.create(fitness, base.Fitness, weights=(-1.0,) * m)
        creator.create(individual, list, fitness=getattr(creator, fitness))
    cls = getattr(creator, individual)
    population = []
    for row in objectives(n, m).tolist():
        ind = cls(row)
        ind.fitness.values = tuple(row)
        population.append(ind)
    return population


@pytest.mark.parametrize("impl", SORTS)
@pytest.mark.parametrize("m", [2, 3, 4])
@pytest.mark.parametrize("n", SIZES)
def test_sort(benchmark, n, m, impl):
    import moocore

    benchmark.group = f"sort N={n} M={m}"
    F = objectives(n, m)
    if impl == "fastscarlet":
        import fastscarlet.nds as nds

        assert nds.backend() == "cpp"
        rank = measure(benchmark, lambda: nds.non_dominated_sort(F))
        np.testing.assert_array_equal(rank, moocore.pareto_rank(F))  # same fronts, this input
    elif impl == "moocore":
        measure(benchmark, lambda: moocore.pareto_rank(F))
    elif impl == "pymoo_ens":
        from pymoo.functions.compiled.non_dominated_sorting import efficient_non_dominated_sort

        measure(
            benchmark,
            lambda: efficient_non_dominated_sort(F),
            single_round=n >= SLOW["pymoo_ens"],
        )
    else:
        from deap import tools

        population = deap_population(n, m)
        measure(
            benchmark,
            lambda: tools.sortLogNondominated(population, len(population)),
            single_round=n >= SLOW["deap"],
        )


SURVIVALS = ("fastscarlet", "pymoo_sort_cd", "pymoo_framework")


def pymoo_sort_cd(F: np.ndarray, n: int) -> np.ndarray:
    """``nds.select``'s work done with pymoo's pieces: its sort (moocore), stopped once n rows are
    ranked, then its "cd" crowding of the front that is cut; the survivors' indices."""
    from pymoo.operators.survival.rank_and_crowding.metrics import get_crowding_function
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    kept: list[np.ndarray] = []
    taken = 0
    for front in NonDominatedSorting().do(F, n_stop_if_ranked=n):
        if taken + len(front) > n:
            need = n - taken
            cd = get_crowding_function("cd").do(F[front], n_remove=len(front) - need)
            kept.append(front[np.argsort(-cd, kind="stable")[:need]])
            break
        kept.append(front)
        taken += len(front)
    return np.concatenate(kept)


@pytest.mark.parametrize("impl", SURVIVALS)
@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("n", SIZES)
def test_survival(benchmark, n, m, impl):
    """NSGA-II survival: 2N candidates -> N survivors, the same survivors from every impl."""
    import fastscarlet.nds as nds

    benchmark.group = f"survival 2N->N N={n} M={m}"
    F = objectives(2 * n, m)
    expected = set(nds.select(F, n).tolist())
    if impl == "fastscarlet":
        kept = measure(benchmark, lambda: nds.select(F, n))
    elif impl == "pymoo_sort_cd":
        kept = measure(benchmark, lambda: pymoo_sort_cd(F, n))
    else:
        from pymoo.core.population import Population
        from pymoo.core.problem import Problem
        from pymoo.operators.survival.rank_and_crowding import RankAndCrowding

        pop = Population.new("F", F, "index", np.arange(2 * n))
        problem = Problem(n_var=1, n_obj=m)
        survival = RankAndCrowding()
        rng = np.random.default_rng(0)
        out = measure(
            benchmark,
            lambda: survival.do(problem, pop, n_survive=n, random_state=rng),
        )
        kept = out.get("index")
    assert len(kept) == n and set(np.asarray(kept).tolist()) == expected, impl


@pytest.mark.parametrize("impl", ["fastscarlet", "moocore"])
@pytest.mark.parametrize("kind", ["random", "front"])
@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("n", SIZES)
def test_hypervolume(benchmark, n, m, kind, impl):
    import moocore

    benchmark.group = f"hypervolume {kind} N={n} M={m}"
    F = objectives(n, m, kind)
    ref = np.full(m, 1.1)
    expected = moocore.hypervolume(F, ref=ref)
    if impl == "fastscarlet":
        import fastscarlet.nds as nds

        got = measure(benchmark, lambda: nds.hypervolume(F, ref))
        assert got == pytest.approx(expected, rel=1e-12)
    else:
        measure(benchmark, lambda: moocore.hypervolume(F, ref=ref))


# ------------------------------------------------------------------------------------------------
# the report: python benchmarks/bench_nds.py bench_nds.json


def _cells(path: str) -> dict[tuple, dict]:
    with open(path) as f:
        data = json.load(f)
    cells = {}
    for b in data["benchmarks"]:
        p = b["params"]
        kind = b["name"].split("[")[0].removeprefix("test_")
        key = (kind, p.get("kind", ""), p["n"], p["m"], p["impl"])
        cells[key] = {
            "median": b["stats"]["median"],
            "rounds": b["stats"]["rounds"],
            "single": b["extra_info"].get("rounds") == "1",
            "load": b["extra_info"].get("loadavg", [None])[0],
        }
    return cells


def _ms(cell: dict | None) -> str:
    if cell is None:
        return "-"
    t = cell["median"] * 1e3
    text = f"{t:.3g}" if t < 100 else f"{t:,.0f}"
    return text + (" ¹" if cell["single"] else "")


def report(path: str) -> str:
    c = _cells(path)
    loads = [cell["load"] for cell in c.values() if cell["load"] is not None]
    lines = [
        f"1-minute load average while the cells ran: {min(loads):.2f}-{max(loads):.2f}"
        if loads
        else "load average: not recorded",
        "",
        "Median times in ms (¹: a single round). Ratios: time(ours) / time(moocore); "
        "speed-ups: time(baseline) / time(ours).",
        "",
        "| N | M | ours | moocore | pymoo ENS | DEAP | ours/moocore | pymoo ENS/ours | DEAP/ours |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in SIZES:
        for m in (2, 3, 4):
            row = {impl: c.get(("sort", "", n, m, impl)) for impl in SORTS}
            ours = row["fastscarlet"]["median"]

            def ratio(x, ours=ours):
                return f"{x['median'] / ours:,.0f}x" if x else "-"

            lines.append(
                f"| {n:,} | {m} | {_ms(row['fastscarlet'])} | {_ms(row['moocore'])} "
                f"| {_ms(row['pymoo_ens'])} | {_ms(row['deap'])} "
                f"| {ours / row['moocore']['median']:.2f} | {ratio(row['pymoo_ens'])} "
                f"| {ratio(row['deap'])} |"
            )
    lines += [
        "",
        "NSGA-II survival, 2N points -> N, the same survivors from all three (asserted). Equal "
        "work: ours vs `pymoo sort+cd` (pymoo's `NonDominatedSorting`, i.e. moocore's "
        "`pareto_rank` and one `np.where` per front, then its crowding of the cut front). `RankAndCrowding` is pymoo's whole survival operator: it also computes every kept "
        "front's crowding and stores rank and crowding in each `Individual`, work `select` does "
        "not do, so its ratio measures pymoo's framework, not a faster sort.",
        "",
        "| N | M | ours | pymoo sort+cd | RankAndCrowding | sort+cd / ours | RankAndCrowding / ours |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in SIZES:
        for m in (2, 3):
            ours, algo, framework = (c[("survival", "", n, m, impl)] for impl in SURVIVALS)
            lines.append(
                f"| {n:,} | {m} | {_ms(ours)} | {_ms(algo)} | {_ms(framework)} "
                f"| {algo['median'] / ours['median']:,.1f}x "
                f"| {framework['median'] / ours['median']:,.0f}x |"
            )
    lines += [
        "",
        "Hypervolume (ref = 1.1 per objective):",
        "",
        "| points | N | M | ours | moocore | ours/moocore |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in ("random", "front"):
        for n in SIZES:
            for m in (2, 3):
                ours = c[("hypervolume", kind, n, m, "fastscarlet")]
                base = c[("hypervolume", kind, n, m, "moocore")]
                lines.append(
                    f"| {kind} | {n:,} | {m} | {_ms(ours)} | {_ms(base)} "
                    f"| {ours['median'] / base['median']:.2f} |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(sys.argv[1]))
