"""Path samplers for supernet training: which single paths one training step trains.

A sampler is any object with ``sample() -> list[Genome]`` (the paths of one step; the trainer gives
each path its own batch and makes one optimizer update per step) and ``state_dict()`` /
``load_state_dict()`` holding plain containers only, so that a checkpoint resumes the exact
sequence. All randomness comes from the sampler's own seeded ``numpy.random.Generator``.

Built in (``make_sampler(name, space, seed)``):

* ``uniform``: one uniformly random path per step (SPOS; "expectation fairness").
* ``strict_fair``: FairNAS strict fairness. One step draws ``m`` paths, ``m`` = the largest number
  of choices of any layer, and in every layer the ``m`` paths use a random permutation of its
  choices, so each choice is trained exactly once per step. A layer with fewer than ``m`` choices
  (SCARLET's 6 layers without identity have 12 of 13; FairNAS's fixed last layer has 1) uses all
  of its choices once and fills the remaining slots with a uniform draw without replacement
  from its choices (cycling when it has fewer than ``m - a`` choices); this is our rule, the
  papers only define spaces where every layer has ``m`` choices.
* ``size_proportional``: NAO-V2's balanced sampling, one path per step drawn with probability
  proportional to its stand-alone parameter count. Over the whole space this is sampled exactly
  (see :class:`SizeProportionalSampler`); over a fixed pool of architectures (NAO-V2's
  ``child_arch_pool``) it is a categorical draw.

User samplers: subclass :class:`PathSampler` (or duck-type it) and ``register_sampler(name, cls)``;
the class is built as ``cls(space, seed=seed, **options)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fastscarlet.space import SearchSpace
from fastscarlet.space.genome import Genome, random_genome, validate_genome


class PathSampler:
    """Base class: a seeded generator and its checkpointable state."""

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        self.space = space
        self.rng = np.random.default_rng(seed)

    @property
    def paths_per_step(self) -> int:
        return 1

    def sample(self) -> list[Genome]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]


class UniformSampler(PathSampler):
    """SPOS: one uniformly random path per step."""

    def sample(self) -> list[Genome]:
        return [random_genome(self.space, self.rng)]


class StrictFairSampler(PathSampler):
    """FairNAS strict fairness: ``m`` paths per step, a permutation of each layer's choices."""

    @property
    def paths_per_step(self) -> int:
        return max(len(layer.allowed) for layer in self.space.layers)

    def sample(self) -> list[Genome]:
        m = self.paths_per_step
        columns = []
        for layer in self.space.layers:
            allowed = np.asarray(layer.allowed)
            col = self.rng.permutation(allowed)
            while len(col) < m:  # fewer choices than m: fill without replacement, cycling
                extra = self.rng.permutation(allowed)[: m - len(col)]
                col = np.concatenate([col, extra])
            columns.append(col)
        grid = np.stack(columns, axis=1)  # [m, L]
        return [tuple(int(c) for c in row) for row in grid]


class SizeProportionalSampler(PathSampler):
    """NAO-V2: P(path) proportional to its stand-alone parameter count.

    Over the whole space, ``params(g) = F + sum_i t_i(g_i)`` is additive, so

        P(g) = [F + sum_i t_i(g_i)] / Z

    is a mixture of ``L + 1`` components: with weight ``F`` a uniform genome, and with weight
    ``mean_c t_i(c)`` a genome whose layer ``i`` is drawn proportional to ``t_i`` and the rest
    uniformly. Drawing the component, then the genome, samples ``P`` exactly, in O(L).

    With ``pool`` (a list of genomes), draw from the pool with ``p_j = params_j / sum params``.
    """

    def __init__(
        self, space: SearchSpace, seed: int = 0, pool: Sequence[Sequence[int]] | None = None
    ) -> None:
        super().__init__(space, seed)
        from fastscarlet.cost import CostModel

        # Parameters do not depend on the resolution; "identity" = the stand-alone model.
        self.cost = CostModel(space, 32, identity="identity")
        self.pool: list[Genome] | None = None
        if pool is not None:
            self.pool = [validate_genome(space, g) for g in pool]
            if not self.pool:
                raise ValueError("size_proportional: the pool is empty")
            _, params = self.cost.batch(np.array(self.pool))
            self.pool_probs = params / params.sum()
        table = self.cost.params_table.astype(np.float64)
        self.layer_probs = []
        comp = [float(self.cost.fixed_params)]
        for layer in space.layers:
            t = table[layer.index, list(layer.allowed)]
            self.layer_probs.append(t / t.sum())
            comp.append(float(t.mean()))
        self.component_probs = np.asarray(comp) / sum(comp)

    def probability(self, genome: Sequence[int]) -> float:
        """Exact P(genome) of the whole-space sampler (for tests and diagnostics)."""
        g = validate_genome(self.space, genome)
        size = self.space.size()
        mean_params = self.cost.fixed_params + sum(
            float(self.cost.params_table[ly.index, list(ly.allowed)].mean())
            for ly in self.space.layers
        )
        return self.cost.params(g) / (mean_params * size)

    def sample(self) -> list[Genome]:
        if self.pool is not None:
            return [self.pool[int(self.rng.choice(len(self.pool), p=self.pool_probs))]]
        k = int(self.rng.choice(len(self.component_probs), p=self.component_probs))
        genome = list(random_genome(self.space, self.rng))
        if k > 0:
            layer = self.space.layers[k - 1]
            genome[k - 1] = int(self.rng.choice(layer.allowed, p=self.layer_probs[k - 1]))
        return [tuple(genome)]


_SAMPLERS: dict[str, Callable[..., PathSampler]] = {
    "uniform": UniformSampler,
    "strict_fair": StrictFairSampler,
    "size_proportional": SizeProportionalSampler,
}


def register_sampler(name: str, factory: Callable[..., PathSampler]) -> None:
    """Register ``factory(space, seed=..., **options)`` under ``name`` (config ``sampler.name``)."""
    if name in _SAMPLERS:
        raise ValueError(f"a sampler named {name!r} is already registered")
    _SAMPLERS[name] = factory


def list_samplers() -> list[str]:
    return sorted(_SAMPLERS)


def make_sampler(name: str, space: SearchSpace, seed: int = 0, **options: Any) -> PathSampler:
    try:
        factory = _SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; known: {list_samplers()}") from None
    return factory(space, seed=seed, **options)
