"""The numpy twin of ``fastscarlet._C.nds``: same functions, same signatures, same results.

It is the fallback when the C++ extension is missing and the oracle the extension is tested
against, so it favours the obviously right over the fast:

* non-dominated sorting peels fronts off the full dominance relation (Kahn's algorithm on the
  "dominates" graph), O(N^2 M) time, computed in row blocks so memory stays O(block * N * M);
* crowding distance, survival and tournament are direct translations of their definitions;
* hypervolume: 2-D is a vectorized sweep, 3-D a sweep in the last objective over a staircase of
  the first two kept in Python lists.

Every function validates its inputs with the same messages as the C++ bindings.
"""

from __future__ import annotations

import bisect

import numpy as np

# Rows of the dominance relation computed at once: block * N * M booleans stay around 16 MB.
_BLOCK_ELEMENTS = 1 << 24


def _check_matrix(F: np.ndarray, name: str = "F") -> np.ndarray:
    """Return F as a float array after the boundary checks of the C++ bindings."""
    F = np.asarray(F)
    if F.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N points x M objectives), got {F.ndim}-D")
    if F.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"{name} must be a float64 or float32 array, got dtype {F.dtype}; "
            f"convert it with np.asarray({name}, dtype=np.float64)"
        )
    finite = np.isfinite(F)
    if not finite.all():
        i, j = np.argwhere(~finite)[0]
        raise ValueError(f"{name} must be finite, but {name}[{i}, {j}] is {float(F[i, j])!r}")
    return F


def _check_labels(fronts: np.ndarray, n: int, name: str = "fronts") -> np.ndarray:
    fronts = np.asarray(fronts, dtype=np.int64)
    if fronts.ndim != 1 or fronts.shape[0] != n:
        raise ValueError(f"{name} must be a 1-D array with one entry per row of F ({n})")
    if fronts.size and fronts.min() < 0:
        i = int(np.argmax(fronts < 0))
        raise ValueError(f"{name} must be >= 0, but {name}[{i}] is {fronts[i]}")
    return fronts


def _dominates(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(len(A), len(B)) booleans: A[i] dominates B[j] (<= everywhere, < somewhere)."""
    le = (A[:, None, :] <= B[None, :, :]).all(axis=2)
    lt = (A[:, None, :] < B[None, :, :]).any(axis=2)
    return le & lt


def _row_blocks(rows: np.ndarray, n: int, m: int):
    step = max(1, _BLOCK_ELEMENTS // max(1, n * max(1, m)))
    for start in range(0, len(rows), step):
        yield rows[start : start + step]


def non_dominated_sort(F: np.ndarray) -> np.ndarray:
    """Front index of every row of ``F`` (N, M), int64 (N,); 0 = not dominated. Minimization.

    ``a`` dominates ``b`` iff ``a <= b`` in every objective and ``a < b`` in one; equal rows share a
    front. Front r is the set of rows whose dominators all lie in fronts 0..r-1.
    """
    F = _check_matrix(F)
    n, m = F.shape
    rank = np.zeros(n, dtype=np.int64)
    if n <= 1:
        return rank
    # Kahn's algorithm: a row joins the current front when its last dominator has been assigned.
    n_dominators = np.zeros(n, dtype=np.int64)
    for rows in _row_blocks(np.arange(n), n, m):
        n_dominators += _dominates(F[rows], F).sum(axis=0)
    unassigned = np.ones(n, dtype=bool)
    front = np.flatnonzero(n_dominators == 0)
    r = 0
    while front.size:
        rank[front] = r
        unassigned[front] = False
        for rows in _row_blocks(front, n, m):
            n_dominators -= _dominates(F[rows], F).sum(axis=0)
        front = np.flatnonzero(unassigned & (n_dominators == 0))
        r += 1
    return rank


def _front_crowding(G: np.ndarray) -> np.ndarray:
    """pymoo's crowding distance of the rows of one front G (s, M), float64 (s,).

    Integer G (the exact path of :mod:`fastscarlet.nds` for integers float64 cannot hold) has its
    gaps taken exactly in uint64 (sorted values minus the smallest, modulo 2**64, is exact) and
    rounded once to float64.
    """
    s, m = G.shape
    if s <= 2:
        return np.full(s, np.inf)
    order = np.argsort(G, axis=0, kind="stable")  # ties keep row order
    V = np.take_along_axis(G, order, axis=0)
    if V.dtype.kind in "iu":
        offset = V.astype(np.uint64) - V[0].astype(np.uint64)  # wraps exactly
        span = offset[-1].astype(np.float64)
        gaps = np.diff(offset, axis=0).astype(np.float64)
    else:
        V = V.astype(np.float64, copy=False)
        span = V[-1] - V[0]
        gaps = np.diff(V, axis=0)
    sorted_cd = np.empty((s, m))
    with np.errstate(divide="ignore", invalid="ignore"):
        sorted_cd[1:-1] = gaps[:-1] / span + gaps[1:] / span
    sorted_cd[0] = sorted_cd[-1] = np.inf
    sorted_cd[:, span == 0] = 0.0  # a flat objective separates nobody, boundaries included
    cd = np.empty((s, m))
    np.put_along_axis(cd, order, sorted_cd, axis=0)
    return cd.sum(axis=1) / m


def crowding_distance(F: np.ndarray, fronts: np.ndarray) -> np.ndarray:
    """Crowding distance of every row of ``F`` (N, M) within its front, float64 (N,).

    pymoo's "cd": fronts of one or two rows get +inf; otherwise per objective the front is sorted
    (stable, ties by row index), the two ends get +inf and row i gets
    ``(f[next] - f[prev]) / (max f - min f)`` (0 for every row if max == min); the sum over
    objectives is divided by M.
    """
    return crowding_by_front(_check_matrix(F), fronts)


def crowding_by_front(F: np.ndarray, fronts: np.ndarray) -> np.ndarray:
    """:func:`crowding_distance` without the float check of ``F`` (integer ``F`` is exact)."""
    fronts = _check_labels(fronts, F.shape[0])
    cd = np.empty(F.shape[0])
    order = np.argsort(fronts, kind="stable")
    bounds = np.flatnonzero(np.diff(fronts[order])) + 1
    for rows in np.split(order, bounds):
        if rows.size:
            cd[rows] = _front_crowding(F[rows])
    return cd


def select(F: np.ndarray, n: int) -> np.ndarray:
    """NSGA-II survival: indices of the ``n`` rows of ``F`` (N, M) kept, int64 (n,).

    Whole fronts in order while they fit; the front that does not fit is cut by decreasing crowding
    distance (ties: lower index). Ordered by front, by index within whole fronts, by decreasing
    crowding distance within the cut front.
    """
    F = _check_matrix(F)
    _check_n(n, F.shape[0])
    return survivors(F, non_dominated_sort(F), n)


def _check_n(n: int, rows: int) -> None:
    if not 0 <= n <= rows:
        raise ValueError(f"n must be in [0, {rows}] (the rows of F), got {n}")


def survivors(F: np.ndarray, rank: np.ndarray, n: int) -> np.ndarray:
    """:func:`select` given the front of every row (``rank``); integer ``F`` is exact."""
    _check_n(n, F.shape[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    by_front = np.argsort(rank, kind="stable")
    ends = np.cumsum(np.bincount(rank))
    cut = int(np.searchsorted(ends, n))  # first front whose end reaches n
    whole = int(ends[cut - 1]) if cut > 0 else 0
    members = by_front[whole : ends[cut]]
    need = n - whole
    if need == members.size:
        return by_front[:n].astype(np.int64)
    cd = _front_crowding(F[members])
    best = np.lexsort((np.arange(members.size), -cd))[:need]
    return np.concatenate([by_front[:whole], members[best]]).astype(np.int64)


def binary_tournament(
    fronts: np.ndarray, crowding: np.ndarray, candidates: np.ndarray
) -> np.ndarray:
    """Winner of each pair ``candidates`` (K, 2): lower front, then larger crowding, then the first."""
    fronts = np.asarray(fronts, dtype=np.int64)
    if fronts.ndim != 1:
        raise ValueError("fronts must be a 1-D array")
    n = fronts.shape[0]
    fronts = _check_labels(fronts, n)
    crowding = np.asarray(crowding, dtype=np.float64)
    if crowding.ndim != 1 or crowding.shape[0] != n:
        raise ValueError(f"crowding must be a 1-D array with one entry per entry of fronts ({n})")
    if np.isnan(crowding).any():
        raise ValueError(
            f"crowding must not be NaN, but crowding[{np.argmax(np.isnan(crowding))}] is"
        )
    candidates = np.asarray(candidates, dtype=np.int64)
    if candidates.ndim != 2 or candidates.shape[1] != 2:
        raise ValueError("candidates must be a (K, 2) array of row pairs")
    bad = (candidates < 0) | (candidates >= n)
    if bad.any():
        k, side = np.argwhere(bad)[0]
        raise ValueError(
            f"candidates must index rows in [0, {n}), but candidates[{k}, {side}] is "
            f"{candidates[k, side]}"
        )
    a, b = candidates[:, 0], candidates[:, 1]
    b_wins = (fronts[b] < fronts[a]) | ((fronts[b] == fronts[a]) & (crowding[b] > crowding[a]))
    return np.where(b_wins, b, a)


def hypervolume(F: np.ndarray, ref: np.ndarray) -> float:
    """Volume dominated by the rows of ``F`` (N, M), M in {1, 2, 3}, and bounded by ``ref`` (M,).

    Rows that do not strictly dominate ``ref`` add nothing.
    """
    F = _check_matrix(F)
    m = F.shape[1]
    if not 1 <= m <= 3:
        raise ValueError(f"F must have 1, 2 or 3 objectives for hypervolume, got {m}")
    ref = np.asarray(ref, dtype=np.float64)
    if ref.ndim != 1 or ref.shape[0] != m:
        raise ValueError(f"ref must be a 1-D array with one entry per objective ({m})")
    if not np.isfinite(ref).all():
        j = int(np.argmax(~np.isfinite(ref)))
        raise ValueError(f"ref must be finite, but ref[{j}] is {float(ref[j])!r}")
    pts = F.astype(np.float64)
    pts = pts[(pts < ref).all(axis=1)]
    if pts.shape[0] == 0:
        return 0.0
    if m == 1:
        return float(ref[0] - pts[:, 0].min())
    if m == 2:
        pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]  # by x, then y
        # Sweeping in x, a point adds the strip between its y and the lowest y seen before it.
        y_before = np.minimum.accumulate(np.concatenate([[ref[1]], pts[:-1, 1]]))
        strip = np.clip(y_before - pts[:, 1], 0.0, None)
        return float(np.sum((ref[0] - pts[:, 0]) * strip))
    return _hypervolume_3d(pts, ref)


def _hypervolume_3d(pts: np.ndarray, ref: np.ndarray) -> float:
    rx, ry, rz = (float(v) for v in ref)
    pts = pts[np.argsort(pts[:, 2], kind="stable")]
    xs: list[float] = []  # staircase of the (x, y) projection: x ascending, y descending
    ys: list[float] = []
    area = volume = 0.0
    for i, (x, y, z) in enumerate(pts.tolist()):
        k = bisect.bisect_right(xs, x)
        if not (k and ys[k - 1] <= y):  # not dominated in (x, y)
            s = bisect.bisect_left(xs, x)
            cap = ys[s - 1] if s else ry
            at, e, added = x, s, 0.0
            while e < len(xs) and ys[e] >= y:  # staircase points that (x, y) dominates
                added += (xs[e] - at) * (cap - y)
                at, cap = xs[e], ys[e]
                e += 1
            added += ((xs[e] if e < len(xs) else rx) - at) * (cap - y)
            xs[s:e] = [x]
            ys[s:e] = [y]
            area += added
        z_next = float(pts[i + 1, 2]) if i + 1 < len(pts) else rz
        volume += area * (z_next - z)
    return volume
