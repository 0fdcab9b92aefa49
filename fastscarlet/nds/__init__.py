"""NSGA-II core: non-dominated sorting, crowding distance, survival, tournament, hypervolume.

Objectives are minimized; pass ``maximize`` (one bool, or one per objective) to flip some. Every
function runs on one of two backends with identical results:

* ``"cpp"``: ``fastscarlet._C.nds``, the compiled core (O(N log N) sort for M = 2, a one-pass
  front-staircase sort for M = 3, Jensen-Fortin-Buzdalov divide and conquer O(N log^(M-1) N) for
  M >= 4; float32/float64 read in place; the GIL released);
* ``"python"``: :mod:`fastscarlet.nds._reference`, the numpy twin (O(N^2 M) sort).

Integer objectives are compared exactly: up to 2**53 in magnitude they are converted to float64
(exact); beyond that (int64/uint64 hashes, timestamps in ns, ...) a float64 cast would merge distinct
values and return wrong fronts, so the sort runs on each column's exact ranks and the crowding
distance on exact integer gaps; :func:`hypervolume` refuses them.

The environment variable ``FASTSCARLET_NDS_BACKEND`` (``auto`` | ``cpp`` | ``python``, default
``auto``) picks one; ``auto`` takes ``cpp`` when the extension loads. :func:`backend` says which
one runs.

Example::

    >>> F = np.array([[1.0, 2.0], [2.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    >>> non_dominated_sort(F)
    array([0, 0, 1, 2])
"""

from __future__ import annotations

import functools
import importlib
import operator
import os
from collections.abc import Sequence
from types import ModuleType

import numpy as np
from numpy.typing import ArrayLike

from fastscarlet.env import probe_cpp
from fastscarlet.nds import _reference

__all__ = [
    "BACKEND_ENV",
    "backend",
    "binary_tournament",
    "crowding_distance",
    "hypervolume",
    "non_dominated_sort",
    "select",
    "tournament",
]

BACKEND_ENV = "FASTSCARLET_NDS_BACKEND"
_CHOICES = ("auto", "cpp", "python")

Maximize = bool | Sequence[bool] | np.ndarray | None


@functools.cache
def _load(requested: str) -> tuple[str, ModuleType]:
    """(name, module) of the backend for a value of ``FASTSCARLET_NDS_BACKEND``."""
    if requested not in _CHOICES:
        raise ValueError(f"{BACKEND_ENV}={requested!r}; expected one of {', '.join(_CHOICES)}")
    if requested == "python":
        return "python", _reference
    probe = probe_cpp()
    reason = probe.reason
    if probe.available:
        _C = importlib.import_module("fastscarlet._C")  # probe_cpp has just imported it

        if hasattr(_C, "nds"):
            return "cpp", _C.nds
        reason = "it was built without the nds bindings; rebuild it with `pip install -e .`"
    if requested == "cpp":
        raise RuntimeError(f"{BACKEND_ENV}=cpp but {probe.name} is not usable: {reason}")
    return "python", _reference


def _impl() -> ModuleType:
    return _load(os.environ.get(BACKEND_ENV, "auto").strip().lower())[1]


def backend() -> str:
    """The backend the functions of this module run on now: ``"cpp"`` or ``"python"``."""
    return _load(os.environ.get(BACKEND_ENV, "auto").strip().lower())[0]


_FLOAT64_EXACT = 2**53  # every integer of at most this magnitude is a float64


def _objectives(F: ArrayLike, maximize: Maximize, name: str = "F") -> np.ndarray:
    """F as a 2-D float32/float64 array (no copy when it already is one), maximized columns negated.

    Integers beyond 2**53 in magnitude stay integers (see :func:`_is_exact`), their maximized
    columns bitwise-inverted: ``~x`` reverses the order and keeps every gap, and cannot overflow.
    """
    A = np.asarray(F)
    if A.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N points x M objectives), got {A.ndim}-D")
    if A.dtype.kind in "iu" and A.size and _beyond_float64(A):
        mask = _maximize_mask(maximize, A.shape[1])
        if mask is not None:
            A = A.copy()
            A[:, mask] = ~A[:, mask]
        return A
    if A.dtype not in (np.float32, np.float64):  # ints, bools, float16, non-native byte order
        A = A.astype(np.float64)
    mask = _maximize_mask(maximize, A.shape[1])
    if mask is not None:
        A = A.copy()
        A[:, mask] = -A[:, mask]
    return A


def _beyond_float64(A: np.ndarray) -> bool:
    low, high = int(A.min()), int(A.max())
    return low < -_FLOAT64_EXACT or high > _FLOAT64_EXACT


def _is_exact(A: np.ndarray) -> bool:
    """Whether ``A`` (from :func:`_objectives`) holds integers that float64 cannot represent."""
    return A.dtype.kind in "iu"


def _exact_order(A: np.ndarray) -> np.ndarray:
    """float64 (N, M): each column's dense rank. Every comparison (<, ==) between two rows in one
    objective is the same as on ``A``, so dominance, and the sort, are exact."""
    ranks = np.empty(A.shape, dtype=np.float64)
    for j in range(A.shape[1]):
        ranks[:, j] = np.unique(A[:, j], return_inverse=True)[1].reshape(-1)
    return ranks


def _maximize_mask(maximize: Maximize, m: int) -> np.ndarray | None:
    """Boolean mask (M,) of the maximized objectives, or None when there are none."""
    if maximize is None:
        return None
    mask = np.asarray(maximize)
    if mask.dtype != np.bool_ or mask.ndim > 1 or (mask.ndim == 1 and mask.shape[0] != m):
        raise ValueError(
            f"maximize must be a bool or one bool per objective ({m}), got {maximize!r}"
        )
    mask = np.broadcast_to(mask, (m,))
    return mask if mask.any() else None


def non_dominated_sort(F: ArrayLike, maximize: Maximize = None) -> np.ndarray:
    """Front index of every row of ``F`` (N, M): int64 (N,), 0 = the non-dominated front.

    Row a dominates row b iff a <= b in every objective and a < b in at least one (after negating
    the ``maximize`` objectives); equal rows share a front. Front r holds the rows dominated only
    by rows of fronts 0..r-1. Raises ``ValueError`` naming ``F`` if it is not 2-D or not finite.
    """
    A = _objectives(F, maximize)
    return _impl().non_dominated_sort(_exact_order(A) if _is_exact(A) else A)


def crowding_distance(F: ArrayLike, fronts: ArrayLike, maximize: Maximize = None) -> np.ndarray:
    """NSGA-II crowding distance of every row of ``F`` (N, M) within its front: float64 (N,).

    ``fronts`` (N,) labels each row's front (e.g. :func:`non_dominated_sort`). pymoo's "cd"
    convention: fronts of one or two rows get +inf; otherwise, per objective j, the front is
    sorted by f_j (stable, ties by row index), its two ends get +inf and every other row gets
    ``(f_j[next] - f_j[prev]) / (max f_j - min f_j)`` (0 for all rows when max == min); the sum over
    objectives is divided by M.
    """
    labels = np.asarray(fronts)
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"fronts must hold integer front indices, got dtype {labels.dtype}")
    A, labels = _objectives(F, maximize), labels.astype(np.int64, copy=False)
    if _is_exact(A):
        return _reference.crowding_by_front(A, labels)
    return _impl().crowding_distance(A, labels)


def select(F: ArrayLike, n: int, maximize: Maximize = None) -> np.ndarray:
    """NSGA-II survival of ``n`` of the N rows of ``F`` (N, M): their indices, int64 (n,).

    Whole fronts are kept in order while they fit; the front that does not fit whole is cut by
    decreasing crowding distance (ties: lower row index). Survivors are ordered by front, within a
    whole front by index, within the cut front by decreasing crowding distance. Deterministic: no
    random tie-breaking, unlike pymoo's.
    """
    A, n = _objectives(F, maximize), _index(n, "n")
    if _is_exact(A):
        _reference._check_n(n, A.shape[0])
        return _reference.survivors(A, _impl().non_dominated_sort(_exact_order(A)), n)
    return _impl().select(A, n)


def binary_tournament(fronts: ArrayLike, crowding: ArrayLike, candidates: ArrayLike) -> np.ndarray:
    """Winner of each pair of ``candidates`` (K, 2) of row indices: int64 (K,).

    The lower front wins; on equal fronts the larger crowding distance; then the first candidate.
    """
    return _impl().binary_tournament(
        np.asarray(fronts, dtype=np.int64),
        np.asarray(crowding, dtype=np.float64),
        np.asarray(candidates, dtype=np.int64),
    )


def tournament(
    fronts: ArrayLike, crowding: ArrayLike, n: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` parents by binary tournament, pairs drawn uniformly with replacement from ``rng``.

    The explicit generator makes a seed reproduce the selection. Returns int64 (n,).
    """
    n = _index(n, "n")
    n_rows = np.shape(fronts)[0] if np.ndim(fronts) else 0
    if n_rows == 0 and n > 0:
        raise ValueError("fronts is empty: there is nobody to select")
    candidates = rng.integers(0, max(n_rows, 1), size=(n, 2), dtype=np.int64)
    return binary_tournament(fronts, crowding, candidates)


def hypervolume(F: ArrayLike, ref: ArrayLike, maximize: Maximize = None) -> float:
    """Volume of the region dominated by the rows of ``F`` (N, M), M in {1, 2, 3}, inside ``ref``.

    HV = Lebesgue measure of the union over rows f of the boxes [f, ref]. Rows that do not strictly
    dominate ``ref`` in every objective add nothing (moocore's convention). With ``maximize``,
    the flagged objectives of ``F`` and ``ref`` are negated.
    """
    A = _objectives(F, maximize)
    if _is_exact(A):
        given = np.asarray(F)
        i, j = np.unravel_index(np.argmax(np.abs(given.astype(np.float64))), given.shape)
        raise ValueError(
            f"F holds integers beyond 2**53 (F[{i}, {j}] = {int(given[i, j])}), which the float64 "
            "hypervolume cannot represent exactly: shift or scale F (and ref) first"
        )
    r = np.asarray(ref, dtype=np.float64)
    mask = _maximize_mask(maximize, A.shape[1])
    if mask is not None and r.shape == mask.shape:
        r = np.where(mask, -r, r)
    return float(_impl().hypervolume(A, r))


def _index(n: int, name: str) -> int:
    try:
        return operator.index(n)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {n!r}") from None
