"""Non-dominated sorting, crowding distance, survival and tournament (fastscarlet.nds).

Both backends (the C++ extension and the numpy twin) are held to pymoo 0.6.2 (whose sort is
moocore's), to pymoo's own compiled ENS sort, to the twin, and to the definition of a front.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastscarlet.nds as nds
from fastscarlet.env import Probe, probe_cpp
from fastscarlet.nds import _reference

HAS_CPP = probe_cpp().available
needs_cpp = pytest.mark.skipif(not HAS_CPP, reason="fastscarlet._C not built")


@pytest.fixture(params=["cpp", "python"])
def backend(request, monkeypatch):
    """Run the test once per backend, selected the way users select it."""
    if request.param == "cpp" and not HAS_CPP:
        pytest.skip("fastscarlet._C not built")
    monkeypatch.setenv(nds.BACKEND_ENV, request.param)
    assert nds.backend() == request.param
    return request.param


# --------------------------------------------------------------------------------------------
# oracles


def pymoo_ranks(F: np.ndarray) -> np.ndarray:
    """pymoo 0.6.2's default sort (moocore.pareto_rank underneath)."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    if len(F) == 0:
        return np.zeros(0, dtype=np.int64)
    return NonDominatedSorting().do(F.astype(np.float64), return_rank=True)[1]


def ens_ranks(F: np.ndarray) -> np.ndarray:
    """pymoo's compiled efficient non-dominated sort (ENS-SS), an independent implementation."""
    from pymoo.functions.compiled.non_dominated_sorting import efficient_non_dominated_sort

    rank = np.full(len(F), -1, dtype=np.int64)
    if len(F):
        for r, front in enumerate(efficient_non_dominated_sort(F.astype(np.float64))):
            rank[np.asarray(front, dtype=np.int64)] = r
    return rank


def assert_front_definition(F: np.ndarray, rank: np.ndarray) -> None:
    """rank[j] = 0 without dominators, else 1 + the largest rank among j's dominators."""
    expected = np.empty_like(rank)
    for start in range(0, len(F), 256):  # columns in blocks: memory N * 256 * M
        B = F[start : start + 256]
        le = (F[:, None, :] <= B[None, :, :]).all(axis=2)
        lt = (F[:, None, :] < B[None, :, :]).any(axis=2)
        dominators = le & lt  # [i, j]: row i dominates row start + j
        expected[start : start + 256] = np.where(dominators, rank[:, None], -1).max(axis=0) + 1
    np.testing.assert_array_equal(rank, expected)


# --------------------------------------------------------------------------------------------
# data

KINDS = ("random", "quantized", "duplicates", "equal_coordinates")


def make(kind: str, n: int, m: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.random((n, m))
    if kind == "quantized":  # 4 levels per objective: ties everywhere, many duplicates
        return rng.integers(0, 4, (n, m)).astype(np.float64)
    if kind == "duplicates":  # every row appears about 4 times
        base = rng.random((max(1, n // 4), m))
        return base[rng.integers(0, len(base), n)]
    if kind == "equal_coordinates":  # one constant objective, one with 5 levels
        F = rng.random((n, m))
        F[:, 0] = 0.5
        F[:, 1] = np.round(F[:, 1] * 4) / 4
        return F
    raise ValueError(kind)


def structured(name: str, n: int) -> np.ndarray:
    """Shapes that stress particular paths of the C++ sort."""
    i = np.arange(n, dtype=np.float64)
    rng = np.random.default_rng(1)
    if name == "chain3":  # one front whose staircase is inserted at the front: forces the
        return np.c_[i, -i, i]  # divide and conquer fallback of the M = 3 pass
    if name == "chain3_layers":
        C = np.c_[i, -i, i]
        return rng.permutation(np.r_[C, C + 1, C + 2, rng.random((n, 3)) * n])
    if name == "line":  # every point its own front
        return rng.permutation(np.c_[i, 2 * i, 3 * i])
    if name == "sphere":
        G = np.abs(rng.normal(size=(n, 3)))
        return G / np.linalg.norm(G, axis=1, keepdims=True)
    if name == "simplex_layers":
        S = rng.dirichlet(np.ones(3), n // 3)
        return np.r_[S, S + 0.01, 2 * S]
    if name == "chain4":
        return np.c_[i, -i, i, -i]
    if name == "mixed5":
        return np.c_[rng.random(n), -i, i, rng.integers(0, 3, n), -i]
    raise ValueError(name)


# --------------------------------------------------------------------------------------------
# non_dominated_sort


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("m", [2, 3, 4, 5])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 1000])
def test_ranks_match_pymoo_moocore_ens_and_twin(backend, kind, n, m):
    F = make(kind, n, m, seed=n * 10 + m)
    rank = nds.non_dominated_sort(F)
    assert rank.dtype == np.int64 and rank.shape == (n,)
    np.testing.assert_array_equal(rank, pymoo_ranks(F))
    np.testing.assert_array_equal(rank, ens_ranks(F))
    if backend == "cpp":
        np.testing.assert_array_equal(rank, _reference.non_dominated_sort(F))
        from fastscarlet._C import nds as C

        np.testing.assert_array_equal(C._non_dominated_sort_divide_and_conquer(F), rank)


@needs_cpp
@pytest.mark.parametrize(
    "name", ["chain3", "chain3_layers", "line", "sphere", "simplex_layers", "chain4", "mixed5"]
)
def test_structured_inputs_match_pymoo(name, monkeypatch):
    monkeypatch.setenv(nds.BACKEND_ENV, "cpp")
    F = structured(name, 1000)  # chain3 hands over to the divide and conquer after ~400 points
    rank = nds.non_dominated_sort(F)
    np.testing.assert_array_equal(rank, pymoo_ranks(F))
    assert_front_definition(F, rank)


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_ranks_satisfy_the_definition(backend, m):
    F = np.r_[make("quantized", 300, m, seed=m), make("random", 300, m, seed=m)]
    assert_front_definition(F, nds.non_dominated_sort(F))


def test_one_objective_ranks_distinct_values(backend):
    F = np.array([[3.0], [1.0], [2.0], [1.0], [3.0]])
    np.testing.assert_array_equal(nds.non_dominated_sort(F), [2, 0, 1, 0, 2])


def test_negative_zero_equals_zero(backend):
    F = np.array([[-0.0, 1.0, 0.0], [0.0, 1.0, -0.0], [0.0, 0.5, 1.0]])
    np.testing.assert_array_equal(nds.non_dominated_sort(F), [0, 0, 0])
    F2 = np.array([[-0.0, 1.0], [0.0, 1.0], [0.0, 2.0]])
    np.testing.assert_array_equal(nds.non_dominated_sort(F2), [0, 0, 1])


def test_small_cases_by_hand(backend):
    F = np.array([[1.0, 2.0], [2.0, 1.0], [2.0, 2.0], [3.0, 3.0], [1.0, 2.0]])
    np.testing.assert_array_equal(nds.non_dominated_sort(F), [0, 0, 1, 2, 0])
    # weak domination: equal in one objective, better in the other
    np.testing.assert_array_equal(nds.non_dominated_sort([[0, 0], [0, 1], [1, 0]]), [0, 1, 1])


@pytest.mark.parametrize("m", [2, 3, 4])
def test_float32_and_strided_inputs(backend, m):
    F = make("random", 500, 2 * m, seed=3)
    F32 = F.astype(np.float32)
    expected = pymoo_ranks(F32.astype(np.float64))  # float32 -> float64 is exact
    np.testing.assert_array_equal(nds.non_dominated_sort(F32[:, :m]), pymoo_ranks(F32[:, :m]))
    np.testing.assert_array_equal(nds.non_dominated_sort(F32), expected)
    strided = F[:, ::2]  # a view with a column stride of 2 elements
    np.testing.assert_array_equal(
        nds.non_dominated_sort(strided), pymoo_ranks(np.ascontiguousarray(strided))
    )
    fortran = np.asfortranarray(F)
    np.testing.assert_array_equal(nds.non_dominated_sort(fortran), pymoo_ranks(F))


def test_integer_and_list_inputs(backend):
    np.testing.assert_array_equal(nds.non_dominated_sort([[1, 2], [2, 1], [2, 2]]), [0, 0, 1])
    F = np.array([[1, 2], [2, 1], [2, 2]], dtype=np.int32)
    np.testing.assert_array_equal(nds.non_dominated_sort(F), [0, 0, 1])


def test_maximize_mask(backend):
    F = make("random", 400, 3, seed=5)
    mask = [True, False, True]
    expected = nds.non_dominated_sort(F * np.array([-1.0, 1.0, -1.0]))
    np.testing.assert_array_equal(nds.non_dominated_sort(F, maximize=mask), expected)
    np.testing.assert_array_equal(
        nds.non_dominated_sort(F, maximize=True), nds.non_dominated_sort(-F)
    )
    np.testing.assert_array_equal(
        nds.non_dominated_sort(F, maximize=False), nds.non_dominated_sort(F)
    )
    F_before = F.copy()
    nds.non_dominated_sort(F, maximize=mask)
    np.testing.assert_array_equal(F, F_before)  # the caller's array is not negated in place


# --------------------------------------------------------------------------------------------
# validation at the boundary


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_objectives_raise_naming_f(backend, bad):
    F = make("random", 5, 3)
    F[1, 2] = bad
    labels = np.zeros(5, dtype=np.int64)
    with pytest.raises(ValueError, match=r"F must be finite, but F\[1, 2\] is"):
        nds.non_dominated_sort(F)
    with pytest.raises(ValueError, match=r"F must be finite"):
        nds.crowding_distance(F, labels)
    with pytest.raises(ValueError, match=r"F must be finite"):
        nds.select(F, 2)
    with pytest.raises(ValueError, match=r"F must be finite"):
        nds.hypervolume(F, np.full(3, 2.0))
    with pytest.raises(ValueError, match=r"F must be finite"):
        nds.non_dominated_sort(F.astype(np.float32))


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4), ()])
def test_non_2d_objectives_raise_naming_f(backend, shape):
    with pytest.raises(ValueError, match="F must be a 2-D array"):
        nds.non_dominated_sort(np.zeros(shape))


def test_empty_and_single_point(backend):
    for m in (1, 2, 3, 5):
        F0 = np.zeros((0, m))
        assert nds.non_dominated_sort(F0).shape == (0,)
        assert nds.crowding_distance(F0, np.zeros(0, dtype=np.int64)).shape == (0,)
        assert nds.select(F0, 0).shape == (0,)
        F1 = np.full((1, m), 0.25)
        np.testing.assert_array_equal(nds.non_dominated_sort(F1), [0])
        np.testing.assert_array_equal(nds.crowding_distance(F1, [0]), [np.inf])
        np.testing.assert_array_equal(nds.select(F1, 1), [0])
        if m <= 3:
            assert nds.hypervolume(F0, np.ones(m)) == 0.0
            assert nds.hypervolume(F1, np.ones(m)) == pytest.approx(0.75**m, rel=1e-15)
    # no objectives at all: every row equals every other
    np.testing.assert_array_equal(nds.non_dominated_sort(np.zeros((4, 0))), [0, 0, 0, 0])


def test_argument_errors_name_the_argument(backend):
    F = make("random", 6, 2)
    with pytest.raises(ValueError, match="fronts must be a 1-D array with one entry per row"):
        nds.crowding_distance(F, np.zeros(5, dtype=np.int64))
    with pytest.raises(ValueError, match=r"fronts must be >= 0, but fronts\[2\] is -1"):
        nds.crowding_distance(F, [0, 0, -1, 0, 0, 0])
    with pytest.raises(TypeError, match="fronts must hold integer"):
        nds.crowding_distance(F, np.zeros(6))
    with pytest.raises(ValueError, match=r"n must be in \[0, 6\]"):
        nds.select(F, 7)
    with pytest.raises(ValueError, match=r"n must be in \[0, 6\]"):
        nds.select(F, -1)
    with pytest.raises(TypeError, match="n must be an integer"):
        nds.select(F, 2.5)
    with pytest.raises(ValueError, match="maximize must be a bool or one bool per objective"):
        nds.non_dominated_sort(F, maximize=[True, False, True])
    with pytest.raises(ValueError, match=r"candidates must index rows in \[0, 3\)"):
        nds.binary_tournament([0, 0, 1], [1.0, 2.0, 3.0], [[0, 3]])
    with pytest.raises(ValueError, match=r"candidates must be a \(K, 2\) array"):
        nds.binary_tournament([0, 0, 1], [1.0, 2.0, 3.0], [0, 1])
    with pytest.raises(ValueError, match="crowding must be a 1-D array"):
        nds.binary_tournament([0, 0, 1], [1.0, 2.0], [[0, 1]])
    with pytest.raises(ValueError, match="crowding must not be NaN"):
        nds.binary_tournament([0, 0, 1], [1.0, np.nan, 2.0], [[0, 1]])


@needs_cpp
def test_extension_releases_the_gil():
    """Another Python thread runs while the extension sorts, which it cannot if the GIL is held.

    With a switch interval of 100 s the interpreter never takes the GIL from the main thread, so
    the watcher (which gives the GIL back in every iteration) can only run while the main thread
    waits: inside the extension's released section, or in join() at the end.
    """
    from fastscarlet._C import nds as C

    F = make("random", 20_000, 4)  # ~10-20 ms per sort
    state = {"in_sort": False, "ran_during_sort": False, "done": False}

    def watcher():
        while not state["done"]:
            if state["in_sort"]:
                state["ran_during_sort"] = True
            time.sleep(1e-4)  # releases the GIL

    interval = sys.getswitchinterval()
    sys.setswitchinterval(100.0)
    thread = threading.Thread(target=watcher)
    try:
        thread.start()
        for _ in range(20):
            state["in_sort"] = True
            C.non_dominated_sort(F)
            state["in_sort"] = False
            if state["ran_during_sort"]:
                break
    finally:
        state["done"] = True
        thread.join()
        sys.setswitchinterval(interval)
    assert state["ran_during_sort"]


@needs_cpp
def test_extension_reads_float_arrays_only():
    from fastscarlet._C import nds as C

    with pytest.raises(TypeError, match="F must be a float64 or float32 array"):
        C.non_dominated_sort(np.zeros((3, 2), dtype=np.int64))


# --------------------------------------------------------------------------------------------
# the loader


def test_backend_env_is_validated(monkeypatch):
    monkeypatch.setenv(nds.BACKEND_ENV, "fortran")
    with pytest.raises(ValueError, match="FASTSCARLET_NDS_BACKEND='fortran'"):
        nds.backend()


def test_auto_prefers_cpp_and_falls_back_to_python(monkeypatch):
    monkeypatch.setenv(nds.BACKEND_ENV, "auto")
    assert nds.backend() == ("cpp" if HAS_CPP else "python")
    missing = Probe("fastscarlet._C", False, "", "C++ extension not built (test)")
    monkeypatch.setattr(nds, "probe_cpp", lambda: missing)
    nds._load.cache_clear()
    try:
        assert nds.backend() == "python"
        np.testing.assert_array_equal(nds.non_dominated_sort([[1, 2], [2, 1], [2, 2]]), [0, 0, 1])
        monkeypatch.setenv(nds.BACKEND_ENV, "cpp")
        with pytest.raises(RuntimeError, match="C\\+\\+ extension not built"):
            nds.backend()
    finally:
        nds._load.cache_clear()


@pytest.mark.skipif(not os.environ.get("CI"), reason="CI only: the compiled core must be in use")
def test_ci_runs_the_compiled_backend(monkeypatch):
    monkeypatch.delenv(nds.BACKEND_ENV, raising=False)
    assert nds.backend() == "cpp"


# --------------------------------------------------------------------------------------------
# crowding distance


def crowding_direct(F: np.ndarray, fronts: np.ndarray) -> np.ndarray:
    """Crowding distance straight from the definition, in plain Python: O(M N log N)."""
    n, m = F.shape
    rows_of: dict[int, list[int]] = {}
    for i, f in enumerate(fronts.tolist()):
        rows_of.setdefault(f, []).append(i)
    cd = [0.0] * n
    for rows in rows_of.values():
        if len(rows) <= 2:
            for i in rows:
                cd[i] = math.inf
            continue
        for j in range(m):
            order = sorted(rows, key=lambda i, j=j: (F[i, j], i))
            lo, hi = float(F[order[0], j]), float(F[order[-1], j])
            if hi == lo:
                continue
            cd[order[0]] = cd[order[-1]] = math.inf
            for prev, i, nxt in zip(order, order[1:], order[2:]):
                cd[i] += (float(F[nxt, j]) - float(F[prev, j])) / (hi - lo)
        for i in rows:
            cd[i] /= m
    return np.array(cd)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("m", [2, 3, 5])
def test_crowding_matches_direct_and_pymoo(backend, kind, m):
    from pymoo.operators.survival.rank_and_crowding.metrics import get_crowding_function

    F = make(kind, 400, m, seed=7 * m)
    fronts = nds.non_dominated_sort(F)
    cd = nds.crowding_distance(F, fronts)
    assert cd.dtype == np.float64 and cd.shape == (400,)
    np.testing.assert_allclose(cd, crowding_direct(F, fronts), rtol=1e-12, atol=0)
    pymoo_cd = get_crowding_function("cd")
    for f in np.unique(fronts):
        rows = np.flatnonzero(fronts == f)
        np.testing.assert_allclose(cd[rows], pymoo_cd.do(F[rows]), rtol=1e-12, atol=0)


def test_crowding_by_hand(backend):
    F = np.array([[0.0, 4.0], [1.0, 3.0], [3.0, 1.0], [4.0, 0.0], [5.0, 5.0]])
    cd = nds.crowding_distance(F, [0, 0, 0, 0, 1])
    # inner points: ((3 - 0) / 4 + (4 - 1) / 4) / 2 = 0.75, likewise for x = 3
    np.testing.assert_allclose(cd, [np.inf, 0.75, 0.75, np.inf, np.inf])
    # a flat objective adds nothing, not even at its ends
    G = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    # x: (2 - 0) / 4 and (4 - 1) / 4, halved over the two objectives
    np.testing.assert_allclose(
        nds.crowding_distance(G, [0, 0, 0, 0]), [np.inf, 0.25, 0.375, np.inf]
    )
    H = np.ones((3, 2))
    np.testing.assert_array_equal(nds.crowding_distance(H, [0, 0, 0]), [0.0, 0.0, 0.0])


def test_crowding_uses_any_front_labels(backend):
    F = make("random", 50, 3, seed=2)
    labels = np.random.default_rng(0).integers(0, 5, 50) * 1000  # sparse labels
    np.testing.assert_allclose(
        nds.crowding_distance(F, labels), crowding_direct(F, labels), rtol=1e-12
    )


# --------------------------------------------------------------------------------------------
# survival


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("m", [2, 3, 4])
def test_select_keeps_fronts_then_crowding(backend, kind, m):
    F = make(kind, 300, m, seed=m)
    fronts = nds.non_dominated_sort(F)
    cd = nds.crowding_distance(F, fronts)
    for n in (0, 1, 37, 150, 299, 300):
        kept = nds.select(F, n)
        assert kept.dtype == np.int64 and kept.shape == (n,)
        assert len(np.unique(kept)) == n
        if n == 0:
            continue
        cut = fronts[kept].max()
        assert set(np.flatnonzero(fronts < cut)) <= set(kept.tolist())  # whole better fronts
        assert np.all(np.diff(fronts[kept]) >= 0)  # ordered by front
        in_cut = kept[fronts[kept] == cut]
        left_out = np.setdiff1d(np.flatnonzero(fronts == cut), in_cut)
        if left_out.size:
            assert cd[in_cut].min() >= cd[left_out].max()
            # decreasing crowding, ties by lower index
            key = list(zip((-cd[in_cut]).tolist(), in_cut.tolist()))
            assert key == sorted(key)
        np.testing.assert_array_equal(kept, _reference.select(F, n))


def test_select_by_hand(backend):
    F = np.array([[0.0, 4.0], [1.0, 3.0], [3.0, 1.0], [4.0, 0.0], [5.0, 5.0], [2.0, 2.5]])
    # front 0: rows 0, 1, 5, 2, 3 (x ascending); crowding of the inner ones:
    # row 1: ((2-0)/4 + (4-2.5)/4)/2 = 0.4375, row 5: ((3-1)/4 + (3-1)/4)/2 = 0.5,
    # row 2: ((4-2)/4 + (2.5-0)/4)/2 = 0.5625
    np.testing.assert_array_equal(nds.select(F, 4), [0, 3, 2, 5])
    np.testing.assert_array_equal(nds.select(F, 6), [0, 1, 2, 3, 5, 4])


# --------------------------------------------------------------------------------------------
# tournament


def test_binary_tournament_rules(backend):
    fronts = [0, 1, 0, 0]
    crowding = [1.0, 5.0, 2.0, 1.0]
    pairs = [[0, 1], [1, 0], [0, 2], [2, 0], [0, 3], [3, 0], [1, 1]]
    # lower front wins; then larger crowding; then the first candidate
    np.testing.assert_array_equal(
        nds.binary_tournament(fronts, crowding, pairs), [0, 0, 2, 2, 0, 3, 1]
    )


def test_tournament_is_reproducible_and_prefers_better(backend):
    F = make("random", 200, 2, seed=4)
    fronts = nds.non_dominated_sort(F)
    cd = nds.crowding_distance(F, fronts)
    a = nds.tournament(fronts, cd, 500, np.random.default_rng(11))
    b = nds.tournament(fronts, cd, 500, np.random.default_rng(11))
    np.testing.assert_array_equal(a, b)
    candidates = np.random.default_rng(11).integers(0, 200, size=(500, 2), dtype=np.int64)
    np.testing.assert_array_equal(a, nds.binary_tournament(fronts, cd, candidates))
    loser = np.where(a == candidates[:, 0], candidates[:, 1], candidates[:, 0])
    assert np.all(fronts[a] <= fronts[loser])
    assert fronts[a].mean() < fronts.mean()  # selection pressure


# --------------------------------------------------------------------------------------------
# fuzzing the extension against the twin

TIES = st.sampled_from([0.0, -0.0, 1.0, 2.0, -1.0, 0.5])
FLOATS = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


def objective_arrays(max_m: int = 5):
    shape = st.tuples(st.integers(0, 40), st.integers(1, max_m))
    return hnp.arrays(np.float64, shape, elements=st.one_of(TIES, FLOATS))


@needs_cpp
@settings(max_examples=300, deadline=None)
@given(F=objective_arrays(), data=st.data())
def test_fuzz_extension_matches_twin(F, data):
    from fastscarlet._C import nds as C

    rank = C.non_dominated_sort(F)
    np.testing.assert_array_equal(rank, _reference.non_dominated_sort(F))
    np.testing.assert_array_equal(C._non_dominated_sort_divide_and_conquer(F), rank)
    F32 = F.astype(np.float32)
    np.testing.assert_array_equal(C.non_dominated_sort(F32), _reference.non_dominated_sort(F32))
    np.testing.assert_allclose(
        C.crowding_distance(F, rank), _reference.crowding_distance(F, rank), rtol=1e-12, atol=0
    )
    n = data.draw(st.integers(0, len(F)))
    np.testing.assert_array_equal(C.select(F, n), _reference.select(F, n))
    if len(F):
        cd = C.crowding_distance(F, rank)
        pairs = np.asarray(
            data.draw(st.lists(st.tuples(*[st.integers(0, len(F) - 1)] * 2), max_size=20)),
            dtype=np.int64,
        ).reshape(-1, 2)
        np.testing.assert_array_equal(
            C.binary_tournament(rank, cd, pairs), _reference.binary_tournament(rank, cd, pairs)
        )


# --------------------------------------------------------------------------------------------
# integers beyond float64 (2**53): exact, never silently rounded


@pytest.mark.parametrize(
    "base, dtype", [(2**60, np.int64), (-(2**62), np.int64), (2**63, np.uint64)]
)
def test_integers_beyond_2_53_sort_exactly(backend, base, dtype):
    small = np.random.default_rng(3).integers(0, 20, (300, 3))
    big = small.astype(dtype) + np.array(base, dtype=dtype)  # same order, same gaps
    assert len(np.unique(big.astype(np.float64)[:, 0])) < len(np.unique(big[:, 0]))  # a cast merges
    for maximize in (None, [True, False, True]):
        fronts = nds.non_dominated_sort(small, maximize)
        np.testing.assert_array_equal(nds.non_dominated_sort(big, maximize), fronts)
        np.testing.assert_array_equal(
            nds.select(big, 77, maximize), nds.select(small, 77, maximize)
        )
        np.testing.assert_array_equal(
            nds.crowding_distance(big, fronts, maximize),
            nds.crowding_distance(small, fronts, maximize),
        )


def test_integer_extremes_with_maximize(backend):
    lo, hi = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    F = np.array([[lo, hi], [hi, lo], [lo + 1, hi - 1], [hi - 1, hi - 1]], dtype=np.int64)
    np.testing.assert_array_equal(nds.non_dominated_sort(F), [0, 0, 0, 1])
    np.testing.assert_array_equal(nds.non_dominated_sort(F, maximize=True), [0, 0, 1, 0])


def test_hypervolume_refuses_integers_beyond_2_53(backend):
    F = np.array([[2**60, 1], [1, 2**60]], dtype=np.int64)
    with pytest.raises(ValueError, match=r"F holds integers beyond 2\*\*53 \(F\[0, 0\]"):
        nds.hypervolume(F, [2**61, 2**61])
    assert nds.hypervolume(np.array([[1, 2], [2, 1]]), [3, 3]) == 3.0  # small ints: exact floats
