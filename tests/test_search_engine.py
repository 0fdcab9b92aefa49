"""The search engine (fastscarlet.search) against independent references: the exact front of a
separable problem (dynamic programming), nds.select, Deb's constrained domination written out,
uninterrupted runs (resume), one process (torchrun with 2 gloo ranks)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fastscarlet import nds
from fastscarlet.search import (
    CostEvaluator,
    Search,
    SearchConfig,
    TableProblem,
    combine,
)
from fastscarlet.search.fitness import objective_weights, rank_and_crowding, survive
from fastscarlet.search.operators import (
    SpaceTables,
    crossover,
    mutation_mask,
    random_mutation,
    sample_population,
)
from fastscarlet.search.reinforced import ReinforcedMutation
from fastscarlet.space import get_space, validate_genome

HERE = Path(__file__).parent
OBJ = [("score", "max"), ("cost", "min")]


def hv_ratio(problem: TableProblem, front_values: np.ndarray) -> float:
    """HV of a (score, cost) front over the exact front's, both normalised by the exact front's
    ideal and nadir points, reference point 1.1 (a common normalisation)."""
    true = problem.exact_front()
    T = np.c_[-true[:, 0], true[:, 1]]
    F = np.c_[-front_values[:, 0], front_values[:, 1]]
    ideal, nadir = T.min(0), T.max(0)

    def hv(A):
        return nds.hypervolume((A - ideal) / (nadir - ideal), [1.1, 1.1])

    return hv(F) / hv(T)


def test_exact_front_by_dp_matches_brute_force_on_a_small_space() -> None:
    """The DP front equals the front of all genomes enumerated (the tiny space: 5^3 genomes)."""
    import tiny  # noqa: F401

    space = get_space("tiny")
    prob = TableProblem(space, seed=1)
    genomes = list(itertools.product(*[layer.allowed for layer in space.layers]))
    vals = np.array([[r["score"], r["cost"]] for r in prob(genomes)])
    front = vals[nds.non_dominated_sort(vals, maximize=[True, False]) == 0]
    best_per_cost = {}
    for s, c in front:
        best_per_cost[c] = max(s, best_per_cost.get(c, -np.inf))
    brute = np.array(sorted((s, c) for c, s in best_per_cost.items()), dtype=float)
    dp = prob.exact_front()
    np.testing.assert_allclose(dp[np.argsort(dp[:, 1])], brute[np.argsort(brute[:, 1])])


@pytest.mark.parametrize("mutation", ["random", "reinforced"])
def test_known_optimum_front_reaches_95_percent_hypervolume(mutation: str) -> None:
    """Acceptance: population 64, 50 generations, scarlet space (19 x 13 choices)."""
    prob = TableProblem("scarlet", seed=0)
    cfg = SearchConfig(population=64, generations=50, seed=0, mutation=mutation, progress=False)
    res = Search("scarlet", prob, OBJ, cfg).run()
    F = np.array([[r.values["score"], r.values["cost"]] for r in res.front_records()])
    assert hv_ratio(prob, F) >= 0.95
    # the front is non-dominated and made of archived, valid genomes
    assert (nds.non_dominated_sort(F, maximize=[True, False]) == 0).all()
    space = get_space("scarlet")
    for g in res.front:
        assert validate_genome(space, g) == g


def test_every_child_is_valid_and_identity_only_where_allowed() -> None:
    space = get_space("scarlet")
    tables = SpaceTables(space)
    rng = np.random.default_rng(0)
    pop = sample_population(tables, 200, rng)
    assert len({tuple(g) for g in pop.tolist()}) == 200
    kids = crossover(tables, pop[:100], pop[100:], rng, 1.0, 0.5)
    mask = mutation_mask(tables, 100, rng, 0.3)
    mutated = random_mutation(tables, kids, mask, rng)
    ident = space.identity_index
    no_id = [i for i, layer in enumerate(space.layers) if ident not in layer.allowed]
    assert no_id, "the scarlet space forbids identity at stride-2 / channel-changing layers"
    for g in np.concatenate([pop, kids, mutated]).tolist():
        validate_genome(space, g)
        assert all(g[i] != ident for i in no_id)
    # mutation changes exactly the masked genes, each to another allowed choice
    assert ((mutated != kids) == mask).all()


def test_stage_crossover_copies_whole_stages() -> None:
    space = get_space("scarlet")
    tables = SpaceTables(space)
    rng = np.random.default_rng(1)
    a = np.zeros((50, space.num_layers), dtype=np.int64)
    b = np.ones((50, space.num_layers), dtype=np.int64)
    kids = crossover(tables, a, b, rng, prob=1.0, stage_prob=1.0)
    for kid in kids:
        for s in range(space.num_stages):
            layers = list(space.stage_layers(s))
            assert len(set(kid[layers].tolist())) == 1
    assert (kids == 0).any() and (kids == 1).any()


def test_nsga2_survival_keeps_what_nds_select_keeps() -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):
        F = rng.integers(0, 12, size=(60, 2)).astype(float)  # ties and duplicates
        keep = survive(F, np.zeros(60), 25)
        assert sorted(keep.tolist()) == sorted(nds.select(F, 25).tolist())


def test_constrained_domination_follows_debs_rule() -> None:
    """Feasible genomes by Pareto fronts, then infeasible ones by increasing violation."""
    F = np.array([[5.0, 5.0], [1.0, 1.0], [2.0, 0.5], [0.0, 0.0], [0.1, 0.1], [3.0, 3.0]])
    v = np.array([0.0, 0.0, 0.0, 0.7, 0.2, 0.2])
    fronts, _ = rank_and_crowding(F, v)
    assert fronts.tolist() == [1, 0, 0, 3, 2, 2]
    # a point that dominates everything but is infeasible still loses to every feasible one
    assert survive(F, v, 3).tolist()[:2] == [1, 2] or survive(F, v, 3).tolist()[:2] == [2, 1]
    assert set(survive(F, v, 3).tolist()) == {0, 1, 2}


def test_moga_weights_equal_is_nsga2_and_weights_change_the_cut() -> None:
    rng = np.random.default_rng(3)
    F = rng.random((40, 3))
    v = np.zeros(40)
    _, cd = rank_and_crowding(F, v)
    _, cd_eq = rank_and_crowding(F, v, np.full(3, 1 / 3))
    np.testing.assert_allclose(cd_eq, cd)
    w = objective_weights(["acc", "latency", "params"], None)
    np.testing.assert_allclose(w, [0.4, 0.4, 0.2])
    _, cd_w = rank_and_crowding(F, v, w)
    finite = np.isfinite(cd)
    assert not np.allclose(cd_w[finite], cd[finite])
    with pytest.raises(ValueError, match="not among"):
        objective_weights(["acc"], {"latency": 1.0})


def test_controller_learns_the_rewarded_choice_and_round_trips() -> None:
    space = get_space("moga")
    tables = SpaceTables(space)
    ctl = ReinforcedMutation(tables, lr=1.0)
    rng = np.random.default_rng(4)
    target = 7
    for _ in range(60):
        pop = np.tile(np.array([[0] * space.num_layers]), (32, 1))
        mask = np.zeros_like(pop, dtype=bool)
        mask[:, 0] = True
        kids = ctl.mutate(pop, mask, np.arange(32), rng)
        ctl.update((kids[:, 0] == target).astype(float))
    p = np.exp(ctl.logits[0, tables.allowed[0]])
    p /= p.sum()
    assert p[tables.position[0, target]] > 0.5  # started at 1/12
    twin = ReinforcedMutation(tables)
    twin.load_state_dict(ctl.state_dict())
    np.testing.assert_array_equal(twin.logits, ctl.logits)
    assert twin.baseline == ctl.baseline


def _files(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in ("front.json", "archive.csv")}


def test_resume_after_an_interrupted_generation_is_exact(tmp_path) -> None:
    """An evaluator that dies inside generation 3, then resume: the same front.json and
    archive.csv (bytes) as the uninterrupted run; no genome evaluated twice in either."""
    prob = TableProblem("scarlet", seed=5)
    cfg = SearchConfig(
        population=16, generations=6, seed=7, mutation="reinforced",
        constraints={"cost": 1000.0}, progress=False,
    )  # fmt: skip
    seen: list = []

    def evaluate(genomes):
        assert not set(genomes) & set(seen), "a genome was evaluated twice"
        seen.extend(genomes)
        return prob(genomes)

    full = Search("scarlet", evaluate, OBJ, cfg).run(tmp_path / "full")
    assert len(seen) == len(full.archive)

    calls = {"n": 0}

    def dying(genomes):
        calls["n"] += 1
        if calls["n"] == 4:  # generation 3's evaluation
            raise KeyboardInterrupt
        return prob(genomes)

    with pytest.raises(KeyboardInterrupt):
        Search("scarlet", dying, OBJ, cfg).run(tmp_path / "cut")
    ck = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert ck["generation"] == 2
    resumed = Search("scarlet", prob, OBJ, cfg).run(tmp_path / "cut", resume=True)
    assert _files(tmp_path / "cut") == _files(tmp_path / "full")
    assert resumed.front == full.front
    assert [r.genome for r in resumed.archive] == [r.genome for r in full.archive]


def test_sigkill_mid_generation_then_resume_is_exact(tmp_path) -> None:
    """The worker is SIGKILLed while its evaluator runs generation 3; the resumed run ends with
    the uninterrupted run's files."""
    env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}
    worker = [sys.executable, str(HERE / "search_worker.py")]
    subprocess.run([*worker, str(tmp_path / "full")], env=env, check=True, timeout=120)
    cut = tmp_path / "cut"
    proc = subprocess.Popen([*worker, str(cut), "--hang-at", "3"], env=env)
    deadline = time.time() + 60
    while not (cut / "call3").exists():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert not (cut / "front.json").exists()
    subprocess.run([*worker, str(cut), "--resume"], env=env, check=True, timeout=120)
    assert _files(cut) == _files(tmp_path / "full")


def test_resume_with_another_configuration_names_the_difference(tmp_path) -> None:
    prob = TableProblem("scarlet", seed=5)
    cfg = SearchConfig(population=8, generations=1, seed=0, progress=False)
    Search("scarlet", prob, OBJ, cfg).run(tmp_path)
    with pytest.raises(ValueError, match=r"population: checkpoint 8, this run 10"):
        Search(
            "scarlet", prob, OBJ, SearchConfig(population=10, generations=1, progress=False)
        ).run(tmp_path, resume=True)
    with pytest.raises(FileExistsError, match="resume"):
        Search("scarlet", prob, OBJ, cfg).run(tmp_path)
    # more generations extend a finished search
    more = SearchConfig(population=8, generations=3, seed=0, progress=False)
    res = Search("scarlet", prob, OBJ, more).run(tmp_path, resume=True)
    assert [h["generation"] for h in res.history] == [0, 1, 2, 3]


def test_outputs_are_written_and_consistent(tmp_path) -> None:
    prob = TableProblem("moga", seed=2)
    cfg = SearchConfig(population=12, generations=3, seed=1, progress=False)
    res = Search("moga", prob, OBJ, cfg).run(tmp_path)
    front = json.loads((tmp_path / "front.json").read_text())
    assert [f["genome"] for f in front] == [list(g) for g in res.front]
    assert set(front[0]) == {"genome", "readable", "score", "cost"}
    rows = (tmp_path / "archive.csv").read_text().splitlines()
    assert rows[0] == "readable,genome,score,cost,generation,feasible"
    assert len(rows) == 1 + len(res.archive)
    hist = (tmp_path / "history.csv").read_text().splitlines()
    assert len(hist) == 1 + 4 and hist[0].startswith("generation,hypervolume,front_size")
    hv = [h["hypervolume"] for h in res.history]
    # the archive front never gets worse
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(hv))
    for png in ("front.png", "hypervolume.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_constraints_are_met_by_the_front_and_impossible_ones_are_named() -> None:
    space = get_space("scarlet")
    cost = CostEvaluator(space, 224)
    prob = TableProblem("scarlet", seed=0)
    lo, hi = cost.limits()["madds"]
    evaluate = combine(prob, cost)
    bound = lo + 0.5 * (hi - lo)  # about the median of random genomes
    cfg = SearchConfig(
        population=16, generations=4, seed=0, constraints={"madds": bound}, progress=False
    )
    res = Search(space, evaluate, [("score", "max"), ("madds", "min")], cfg).run()
    assert res.front and all(r.values["madds"] <= bound for r in res.front_records())
    # limits() is the exact range: the genome of each layer's cheapest choice costs `lo`
    table = cost.model.madds_table
    cheapest = tuple(
        min(layer.allowed, key=lambda c, i=i: table[i, c]) for i, layer in enumerate(space.layers)
    )
    assert cost([cheapest])[0]["madds"] == lo
    bad = SearchConfig(population=8, generations=1, constraints={"madds": lo - 1}, progress=False)
    with pytest.raises(ValueError, match=r"no genome of the scarlet space can meet madds <="):
        Search(space, evaluate, [("score", "max"), ("madds", "min")], bad)
    # a bound the initial population misses but the space allows: a warning, then a search
    tight = SearchConfig(
        population=8, generations=1, constraints={"madds": lo * 1.01}, progress=False
    )
    with pytest.warns(RuntimeWarning, match="no genome of the initial population"):
        Search(space, evaluate, [("score", "max"), ("madds", "min")], tight).run()


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ({"score": float("nan"), "cost": 1.0}, r"score=nan for genome \["),
        ({"score": 1.0}, r"no 'cost' for genome \["),
        ({"score": "high", "cost": 1.0}, r"score='high' for genome \["),
    ],
)
def test_bad_evaluator_results_name_the_genome(result, message) -> None:
    cfg = SearchConfig(population=4, generations=0, progress=False)
    with pytest.raises(ValueError, match=message):
        Search("scarlet", lambda gs: [dict(result) for _ in gs], OBJ, cfg).run()


def test_bad_objectives_and_config_are_named() -> None:
    with pytest.raises(ValueError, match="direction must be 'min' or 'max'"):
        Search("scarlet", TableProblem("scarlet"), [("score", "up")])
    with pytest.raises(ValueError, match="at least one objective"):
        Search("scarlet", TableProblem("scarlet"), [])
    with pytest.raises(ValueError, match="mutation must be one of"):
        SearchConfig(mutation="smart")
    with pytest.raises(ValueError, match="population must be an integer >= 2"):
        SearchConfig(population=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process(tmp_path) -> None:
    """torchrun, 2 CPU processes: the same files as one process; the evaluations are split (each
    genome evaluated on exactly one rank) and only rank 0 writes the outputs."""
    env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}
    one = tmp_path / "one"
    subprocess.run(
        [sys.executable, str(HERE / "search_worker.py"), str(one)], env=env, check=True, timeout=120
    )
    two = tmp_path / "two"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={_free_port()}", str(HERE / "search_worker.py"), str(two),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _files(two) == _files(one)
    r0 = {tuple(g) for g in json.loads((two / "rank0.json").read_text())}
    r1 = {tuple(g) for g in json.loads((two / "rank1.json").read_text())}
    everything = {tuple(g) for g in json.loads((one / "rank0.json").read_text())}
    assert r0 and r1 and not r0 & r1 and r0 | r1 == everything
