"""Hypervolume (fastscarlet.nds.hypervolume) against a direct grid computation and moocore."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastscarlet.nds as nds
from fastscarlet.env import probe_cpp
from fastscarlet.nds import _reference

HAS_CPP = probe_cpp().available


@pytest.fixture(params=["cpp", "python"])
def backend(request, monkeypatch):
    if request.param == "cpp" and not HAS_CPP:
        pytest.skip("fastscarlet._C not built")
    monkeypatch.setenv(nds.BACKEND_ENV, request.param)
    assert nds.backend() == request.param
    return request.param


def hv_grid(pts: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume by brute force on the grid of all coordinates: O(N^(M+1)), small N only.

    Every cell between consecutive distinct coordinates (and ref) is either inside the dominated
    region or not; it is inside iff some point is <= its lower corner.
    """
    P = pts[(pts < ref).all(axis=1)].astype(np.float64)
    if len(P) == 0:
        return 0.0
    axes = [np.unique(np.r_[P[:, j], ref[j]]) for j in range(pts.shape[1])]
    lows = np.meshgrid(*[a[:-1] for a in axes], indexing="ij")
    widths = np.meshgrid(*[np.diff(a) for a in axes], indexing="ij")
    corners = np.stack([c.ravel() for c in lows], axis=1)
    cell_volume = np.prod(np.stack([w.ravel() for w in widths], axis=1), axis=1)
    covered = (P[None, :, :] <= corners[:, None, :]).all(axis=2).any(axis=1)
    return float(cell_volume[covered].sum())


def points(kind: str, n: int, m: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.random((n, m))
    if kind == "front":  # all mutually non-dominated: the staircase is long
        G = np.abs(rng.normal(size=(n, m)))
        return G / np.linalg.norm(G, axis=1, keepdims=True)
    if kind == "ties":  # duplicates and shared coordinates, some points beyond ref
        return rng.integers(0, 6, (n, m)) / 4.0
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["random", "front", "ties"])
@pytest.mark.parametrize(("m", "n"), [(1, 30), (2, 60), (3, 20)])
def test_hypervolume_matches_grid(backend, kind, m, n):
    for seed in range(3):
        F = points(kind, n, m, seed)
        ref = np.full(m, 1.1)
        assert nds.hypervolume(F, ref) == pytest.approx(hv_grid(F, ref), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("kind", ["random", "front", "ties"])
@pytest.mark.parametrize("m", [2, 3])
def test_hypervolume_matches_moocore(backend, kind, m):
    moocore = pytest.importorskip("moocore")
    F = points(kind, 2000, m, seed=m)
    for ref in (np.full(m, 1.1), np.full(m, 0.8), np.linspace(0.9, 1.3, m)):
        expected = moocore.hypervolume(F, ref=ref)
        assert nds.hypervolume(F, ref) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_hypervolume_by_hand(backend):
    # two boxes [0.5, 1]^2 and [0.2,1]x[0.8,1] overlapping in [0.5,1]x[0.8,1]
    F = np.array([[0.5, 0.5], [0.2, 0.8]])
    assert nds.hypervolume(F, [1.0, 1.0]) == pytest.approx(0.25 + 0.8 * 0.2 - 0.5 * 0.2)
    # points on or beyond the reference add nothing
    assert nds.hypervolume([[1.0, 0.0], [2.0, 2.0], [0.0, 1.0]], [1.0, 1.0]) == 0.0
    assert nds.hypervolume([[0.5, 0.5, 0.5]], [1.0, 1.0, 1.0]) == pytest.approx(0.125)
    # duplicates count once
    assert nds.hypervolume([[0.5, 0.5, 0.5]] * 4, [1.0, 1.0, 1.0]) == pytest.approx(0.125)


def test_hypervolume_dtype_and_maximize(backend):
    F = points("random", 300, 3, seed=9)
    ref = np.array([1.2, 1.1, 1.3])
    F32 = F.astype(np.float32)
    assert nds.hypervolume(F32, ref) == nds.hypervolume(F32.astype(np.float64), ref)
    assert nds.hypervolume(np.asfortranarray(F), ref) == nds.hypervolume(F, ref)
    mask = [True, False, True]
    sign = np.array([-1.0, 1.0, -1.0])
    flipped = nds.hypervolume(F * sign, ref * sign, maximize=mask)
    assert flipped == pytest.approx(nds.hypervolume(F, ref), rel=1e-12)


def test_hypervolume_argument_errors(backend):
    with pytest.raises(ValueError, match="F must have 1, 2 or 3 objectives"):
        nds.hypervolume(np.zeros((3, 4)), np.ones(4))
    with pytest.raises(ValueError, match="ref must be a 1-D array with one entry per objective"):
        nds.hypervolume(np.zeros((3, 2)), np.ones(3))
    with pytest.raises(ValueError, match=r"ref must be finite, but ref\[1\] is nan"):
        nds.hypervolume(np.zeros((3, 2)), [1.0, np.nan])
    with pytest.raises(ValueError, match=r"F must be finite, but F\[0, 1\] is inf"):
        nds.hypervolume([[0.0, np.inf]], [1.0, 1.0])


@pytest.mark.skipif(not HAS_CPP, reason="fastscarlet._C not built")
@settings(max_examples=200, deadline=None)
@given(
    F=hnp.arrays(
        np.float64,
        st.tuples(st.integers(0, 30), st.integers(1, 3)),
        elements=st.one_of(
            st.sampled_from([0.0, 0.25, 0.5, 1.0, 1.5]),
            st.floats(-10, 10, allow_nan=False, allow_infinity=False),
        ),
    ),
    shift=st.floats(0.0, 2.0),
)
def test_fuzz_extension_matches_twin(F, shift):
    from fastscarlet._C import nds as C

    ref = np.full(F.shape[1], 1.0 + shift)
    assert C.hypervolume(F, ref) == pytest.approx(
        _reference.hypervolume(F, ref), rel=1e-12, abs=1e-12
    )
