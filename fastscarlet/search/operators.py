"""Variation operators on populations of genomes: sampling, crossover and random mutation.

A population is an int64 array ``[n, L]``, one genome per row. Every operator draws from the
explicit ``numpy.random.Generator`` it is given (so a seed reproduces a run and a checkpoint resumes
it) and keeps every child valid for its space: each layer only ever takes one of its allowed
choices (identity only where the space allows it), because crossover copies a layer's value from
a valid parent and mutation draws from the layer's allowed list.

* :func:`sample_population`: the initial population, uniform valid genomes plus optional seeds
  (e.g. the published models), without duplicates;
* :func:`crossover`: per stage (each stage copied whole from one parent: swapping stages keeps
  the depth pattern of a stage's identity choices) with probability ``stage_prob``, otherwise
  per layer (uniform crossover);
* :func:`random_mutation`: each searchable layer, with probability ``prob``, moves to another of
  its allowed choices, uniformly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from fastscarlet.space import Genome, SearchSpace, validate_genome


class SpaceTables:
    """The space as arrays, for vectorised operators.

    ``allowed[l]``: int64 array of layer ``l``'s allowed choices; ``position[l, c]``: the index of
    choice ``c`` in ``allowed[l]`` (-1 if not allowed); ``stage[l]``: the stage of layer ``l``;
    ``searchable``: the layers with more than one choice.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.num_layers = space.num_layers
        self.allowed = [np.asarray(layer.allowed, dtype=np.int64) for layer in space.layers]
        self.counts = np.array([len(a) for a in self.allowed], dtype=np.int64)
        self.position = np.full((space.num_layers, space.num_choices), -1, dtype=np.int64)
        for i, a in enumerate(self.allowed):
            self.position[i, a] = np.arange(len(a))
        self.stage = np.array([layer.stage for layer in space.layers], dtype=np.int64)
        self.num_stages = int(self.stage.max()) + 1
        self.searchable = np.flatnonzero(self.counts > 1)

    def random(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` uniformly random valid genomes ``[n, L]``."""
        out = np.empty((n, self.num_layers), dtype=np.int64)
        for i, a in enumerate(self.allowed):
            out[:, i] = a[rng.integers(0, len(a), size=n)]
        return out


def unique_rows(pop: np.ndarray, exclude: Iterable[Genome] = ()) -> np.ndarray:
    """The rows of ``pop`` that are new: not in ``exclude`` and not an earlier row (order kept)."""
    seen = set(exclude)
    keep = []
    for i, row in enumerate(map(tuple, pop.tolist())):
        if row not in seen:
            seen.add(row)
            keep.append(i)
    return pop[keep]


def sample_population(
    tables: SpaceTables,
    n: int,
    rng: np.random.Generator,
    seeds: Sequence[Sequence[int]] = (),
    max_tries: int = 100,
) -> np.ndarray:
    """``n`` distinct valid genomes: the ``seeds`` first (validated, duplicates dropped), then
    uniform random ones. Fewer than ``n`` only when the space has fewer distinct genomes."""
    space = tables.space
    rows = [validate_genome(space, g) for g in seeds]
    pop = unique_rows(np.asarray(rows, dtype=np.int64).reshape(-1, tables.num_layers))[:n]
    for _ in range(max_tries):
        if len(pop) >= n:
            break
        extra = tables.random(2 * (n - len(pop)), rng)
        pop = np.concatenate([pop, unique_rows(extra, map(tuple, pop.tolist()))])[:n]
    return pop


def crossover(
    tables: SpaceTables,
    a: np.ndarray,
    b: np.ndarray,
    rng: np.random.Generator,
    prob: float = 0.9,
    stage_prob: float = 0.5,
) -> np.ndarray:
    """One child per pair of rows of ``a`` and ``b`` (``[n, L]`` each).

    With probability ``prob`` a pair is crossed, otherwise the child is a copy of ``a``. A crossed
    pair is crossed per stage with probability ``stage_prob`` (each stage taken whole from ``a`` or
    ``b``), else per layer (each layer from ``a`` or ``b``, uniformly).
    """
    n = len(a)
    crossed = rng.random(n) < prob
    per_stage = rng.random(n) < stage_prob
    layer_pick = rng.random((n, tables.num_layers)) < 0.5
    stage_pick = rng.random((n, tables.num_stages)) < 0.5
    take_b = np.where(per_stage[:, None], stage_pick[:, tables.stage], layer_pick)
    take_b &= crossed[:, None]
    return np.where(take_b, b, a)


def nearest_neighbours(F: np.ndarray, k: int) -> np.ndarray:
    """``[n, k]``: each row's ``k`` nearest other rows of ``F [n, M]`` in objective space (each
    column scaled to [0, 1]), nearest first, ties by index (deterministic)."""
    n = len(F)
    k = max(1, min(k, n - 1))
    span = F.max(axis=0) - F.min(axis=0)
    Z = (F - F.min(axis=0)) / np.where(span > 0, span, 1.0)
    Z = Z.astype(np.float32)  # float32 distances: half the memory traffic of the n x n matrix
    D = np.zeros((n, n), dtype=np.float32)
    for col in Z.T:  # one [n, n] temporary per objective, not an [n, n, M] one
        D += np.square(col[:, None] - col[None, :])
    np.fill_diagonal(D, np.inf)  # not itself
    near = np.argpartition(D, k - 1, axis=1)[:, :k] if k < n - 1 else np.argsort(D, axis=1)
    near = near[:, :k]
    order = np.lexsort((near, np.take_along_axis(D, near, axis=1)), axis=1)
    return np.take_along_axis(near, order, axis=1)


def neighbour_mates(
    neighbours: np.ndarray, first: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """For each parent index in ``first``, a mate drawn uniformly from its row of
    ``neighbours`` (:func:`nearest_neighbours`).

    Mating restriction (as MOEA/D's neighbourhoods): two parents from the same region of the
    front recombine into a child of that region, where a random pair (a cheap and an expensive
    architecture) gives a middling child that the front already dominates.
    """
    k = neighbours.shape[1]
    return neighbours[first, rng.integers(0, k, size=len(first))]


def mutation_mask(tables: SpaceTables, n: int, rng: np.random.Generator, prob: float) -> np.ndarray:
    """Which (child, layer) pairs mutate: searchable layers, each with probability ``prob``."""
    mask = rng.random((n, tables.num_layers)) < prob
    mask[:, tables.counts <= 1] = False
    return mask


def random_mutation(
    tables: SpaceTables, pop: np.ndarray, mask: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Move every masked gene to another allowed choice of its layer, uniformly."""
    out = pop.copy()
    for layer in np.flatnonzero(mask.any(axis=0)):
        rows = np.flatnonzero(mask[:, layer])
        allowed = tables.allowed[layer]
        cur = tables.position[layer, pop[rows, layer]]
        # uniform over the other len(allowed) - 1 choices: draw in [0, k - 1) and skip `cur`
        draw = rng.integers(0, len(allowed) - 1, size=len(rows))
        draw += draw >= cur
        out[rows, layer] = allowed[draw]
    return out
