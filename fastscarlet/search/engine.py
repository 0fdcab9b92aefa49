"""The search engine: NSGA-II over genomes of a space, with exact resume.

::

    result = Search(space, evaluate, objectives=[("acc", "max"), ("madds", "min")],
                    config=SearchConfig(population=64, generations=30, seed=0)).run(out="runs/s")
    result.front    # non-dominated feasible genomes, deterministic order
    result.archive  # one Record per distinct evaluated genome

One **generation** (generation 0 is the initial population)::

    parents   = binary tournament on (front, crowding) of the population     (nds.tournament)
    children  = crossover (per stage or per layer) + mutation (random, or the MoreMNAS policy
                for a roulette share); duplicates of the population or of each other redrawn
    evaluate(children not yet in the archive)   <- the caller's evaluator, all at once
    population = survival of the best P of population + children            (fitness.py)

``evaluate(genomes: list[tuple[int, ...]]) -> list[dict[str, float]]`` returns every objective and
every constrained metric for each genome; under ``torch.distributed`` with more than one rank the
genomes are sorted (so that shared prefixes stay together), split into one contiguous shard per
rank, evaluated there and gathered; every rank runs the same engine from the same seed, and only
rank 0 writes. An evaluator with ``state_dict()``/``load_state_dict()`` (Supernet Shifting's, which
changes the supernet while it evaluates) has its state saved in the checkpoint too.

**Supernet Shifting** (``SearchConfig.shift``; :mod:`~fastscarlet.search.shifting`): the evaluator
is (or, through ``combine``, holds) a :class:`~fastscarlet.search.shifting.ShiftingEvaluator` whose
settings match the config's ``shift_*`` fields. Its evaluations train the supernet, so they are
collective: every rank is given all new genomes (the shifter splits the work over the ranks and
returns every result), and after each generation ``out/supernet.pt`` is written (a training
checkpoint of the shifted supernet), before ``out/checkpoint.pt``, so that it is never older than
the checkpoint a resume starts from.

**Exact resume.** After every generation ``out/checkpoint.pt`` is written atomically: the
population, the archive, the generator's state, the controller, the history and the evaluator's
state, as tensors and plain containers (``torch.load(..., weights_only=True)``). The engine draws
every random number from its one ``numpy.random.Generator``, so a run killed at any moment and
restarted with ``resume=True`` redoes the interrupted generation with the same draws and ends
with the same front and archive as the uninterrupted run (for a deterministic evaluator).
Resuming with another configuration is an error naming what differs; ``generations`` may grow
(to extend a finished search).

**Constraints** (``SearchConfig.constraints``, ``{metric: bound}``): an upper bound for a
minimised objective or a metric that is not an objective, a lower bound for a maximised one;
handled by constrained domination (see :mod:`~fastscarlet.search.fitness`). If the evaluator
knows the range of a metric over the whole space (``evaluate.limits()``, as the cost evaluator
does) a bound no genome can meet is an error before anything is evaluated; otherwise an initial
population with no feasible genome gets a warning.

**Hypervolume** (``history.csv``, ``hypervolume.png``): of the archive's feasible front, in
objectives normalised by the initial population (its best value 0, its worst value plus 10% of its
range 1, the reference point), so that generations compare; only for 1 to 3 objectives.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastscarlet import nds
from fastscarlet.search import outputs
from fastscarlet.search.archive import Archive, Record
from fastscarlet.search.fitness import (
    FITNESS_RULES,
    constraint_violation,
    objective_weights,
    rank_and_crowding,
    survival_order,
)
from fastscarlet.search.operators import (
    SpaceTables,
    crossover,
    mutation_mask,
    nearest_neighbours,
    neighbour_mates,
    random_mutation,
    sample_population,
)
from fastscarlet.search.reinforced import ReinforcedMutation
from fastscarlet.search.shifting import find_shifter
from fastscarlet.space import Genome, SearchSpace, get_space
from fastscarlet.train.checkpoint import load_checkpoint, save_atomic

CHECKPOINT_FORMAT = "fastscarlet.search/1"
MUTATIONS = ("random", "reinforced")
DIRECTIONS = ("min", "max")
Evaluator = Callable[[list[Genome]], Sequence[Mapping[str, float]]]


@dataclass(frozen=True)
class SearchConfig:
    """Settings of a search. Defaults follow NSGA-II practice (pymoo) where the papers are silent.

    Args:
        population: genomes kept per generation (and offspring drawn per generation).
        generations: generations after the initial population (generation 0).
        seed: seeds the engine's one generator.
        mutation: ``random`` or ``reinforced`` (MoreMNAS: the policy for a ``reinforced_share``
            of the offspring, random mutation for the rest).
        fitness: ``nsga2`` or ``moga`` (weighted crowding; ``weights``).
        constraints: ``{metric: bound}``; see the module doc.
        crossover_prob: probability that a pair of parents is crossed (else the child copies one).
        stage_crossover_prob: probability that a crossing is per stage rather than per layer.
        mutation_prob: per searchable layer; None = 0.4 / (number of searchable layers).
        mating_neighbours: the second parent is drawn from the first's nearest neighbours in
            objective space (mating restriction); None = population / 8 (at least 2), 0 = a
            second binary tournament (classic NSGA-II).
        reinforced_share: the roulette's share of offspring the policy mutates.
        controller_lr: the policy's learning rate.
        weights: MoGA's objective weights (None: :data:`fitness.MOGA_WEIGHTS`).
        seed_genomes: genomes put into the initial population (e.g. the published models).
        progress: show a progress bar per generation.
        shift: Supernet Shifting (see the module doc); the evaluator must hold a
            ``ShiftingEvaluator`` built with the ``shift_*`` settings below.
        shift_steps: training steps on each new genome's path before it is evaluated.
        shift_lr: the shift's (constant) SGD learning rate.
        shift_batch: images per shift step (None: whatever the shifter's loader gives).
        shift_parallel: genomes trained per update (one per rank under torch.distributed; set it
            to R in one process to reproduce an R-rank run).
    """

    population: int = 64
    generations: int = 30
    seed: int = 0
    mutation: str = "random"
    fitness: str = "nsga2"
    constraints: Mapping[str, float] = field(default_factory=dict)
    crossover_prob: float = 1.0
    stage_crossover_prob: float = 0.5
    mutation_prob: float | None = None
    mating_neighbours: int | None = None
    reinforced_share: float = 0.5
    controller_lr: float = 0.5
    weights: Mapping[str, float] | None = None
    seed_genomes: tuple[tuple[int, ...], ...] = ()
    progress: bool = True
    # Supernet Shifting: the paper's code takes 20 steps per candidate at lr 1e-4 (papers.md 5.5)
    shift: bool = False
    shift_steps: int = 20
    shift_lr: float = 1e-4
    shift_batch: int | None = None
    shift_parallel: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.population, int) or self.population < 2:
            raise ValueError(f"population must be an integer >= 2, got {self.population!r}")
        if not isinstance(self.generations, int) or self.generations < 0:
            raise ValueError(f"generations must be an integer >= 0, got {self.generations!r}")
        if self.mutation not in MUTATIONS:
            raise ValueError(f"mutation must be one of {MUTATIONS}, got {self.mutation!r}")
        if self.fitness not in FITNESS_RULES:
            raise ValueError(f"fitness must be one of {FITNESS_RULES}, got {self.fitness!r}")
        for name in ("crossover_prob", "stage_crossover_prob", "reinforced_share"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")
        if self.mutation_prob is not None and not 0.0 < self.mutation_prob <= 1.0:
            raise ValueError(f"mutation_prob must be in (0, 1], got {self.mutation_prob!r}")
        if self.mating_neighbours is not None and self.mating_neighbours < 0:
            raise ValueError(f"mating_neighbours must be >= 0, got {self.mating_neighbours!r}")
        for k, v in self.constraints.items():
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"constraint {k!r} must be a finite number, got {v!r}")
        for name in ("shift_steps", "shift_parallel", "shift_batch"):
            v = getattr(self, name)
            if v is None and name == "shift_batch":
                continue
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not (isinstance(self.shift_lr, (int, float)) and 0 < self.shift_lr < math.inf):
            raise ValueError(f"shift_lr must be a positive number, got {self.shift_lr!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["constraints"] = {k: float(v) for k, v in sorted(self.constraints.items())}
        d["weights"] = None if self.weights is None else dict(sorted(self.weights.items()))
        d["seed_genomes"] = [list(g) for g in self.seed_genomes]
        return d


# Keys that may differ between a checkpoint and the run that resumes it.
_RESUMABLE_DIFFERENCES = ("generations", "progress")


@dataclass
class SearchResult:
    """What :meth:`Search.run` returns (also written to ``out``)."""

    front: list[Genome]
    archive: list[Record]
    history: list[dict[str, Any]]
    population: list[Genome]
    objectives: list[tuple[str, str]]
    out: Path | None = None

    def front_records(self) -> list[Record]:
        index = {r.genome: r for r in self.archive}
        return [index[g] for g in self.front]


def _parse_objectives(objectives: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    if not objectives:
        raise ValueError("a search needs at least one objective, e.g. [('acc', 'max')]")
    for item in objectives:
        try:
            name, direction = item
        except (TypeError, ValueError):
            raise ValueError(f"an objective is a (name, 'min'|'max') pair, got {item!r}") from None
        if direction not in DIRECTIONS:
            raise ValueError(
                f"objective {name!r}: direction must be 'min' or 'max', not {direction!r}"
            )
        out.append((str(name), direction))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"objectives repeat a name: {names}")
    return out


class _Distributed:
    """torch.distributed, if initialised with more than one rank (else a single process)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.on = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.rank = dist.get_rank() if self.on else 0
        self.world = dist.get_world_size() if self.on else 1
        self.dist = dist

    def evaluate(
        self, evaluate: Evaluator, genomes: list[Genome], collective: bool = False
    ) -> list[Mapping[str, float]]:
        """Every genome's results; ``collective``: the evaluator is called on every rank with all
        genomes and splits the work itself (Supernet Shifting)."""
        if not self.on or collective:
            return list(evaluate(genomes))
        # Sorted order keeps common prefixes on one rank (a prefix-sharing evaluator keeps its
        # savings); contiguous shards of the sorted list, results put back in input order.
        order = sorted(range(len(genomes)), key=lambda i: genomes[i])
        bounds = np.linspace(0, len(order), self.world + 1).round().astype(int)
        mine = order[bounds[self.rank] : bounds[self.rank + 1]]
        local = list(evaluate([genomes[i] for i in mine])) if mine else []
        if len(local) != len(mine):
            raise ValueError(f"the evaluator returned {len(local)} results for {len(mine)} genomes")
        gathered: list[Any] = [None] * self.world
        self.dist.all_gather_object(gathered, [(i, dict(r)) for i, r in zip(mine, local)])
        out: list[Any] = [None] * len(genomes)
        for part in gathered:
            for i, r in part:
                out[i] = r
        return out

    def barrier(self) -> None:
        if self.on:
            self.dist.barrier()


class Search:
    """NSGA-II (or MoGA's weighted rule) over ``space`` with ``evaluate``; see the module doc."""

    def __init__(
        self,
        space: SearchSpace | str,
        evaluate: Evaluator,
        objectives: Sequence[tuple[str, str]] = (("acc", "max"), ("madds", "min")),
        config: SearchConfig | None = None,
    ) -> None:
        self.space = get_space(space)
        self.evaluate = evaluate
        self.objectives = _parse_objectives(objectives)
        self.config = config or SearchConfig()
        cfg = self.config
        self.names = [n for n, _ in self.objectives]
        self.sign = np.array([-1.0 if d == "max" else 1.0 for _, d in self.objectives])
        directions = dict(self.objectives)
        self.constraint_names = list(cfg.constraints)
        self.constraint_bounds = np.array(
            [float(cfg.constraints[k]) for k in self.constraint_names]
        )
        # upper bound unless the metric is a maximised objective
        self.constraint_upper = np.array(
            [directions.get(k) != "max" for k in self.constraint_names], dtype=bool
        )
        self.metrics = self.names + [k for k in self.constraint_names if k not in self.names]
        self.weights = objective_weights(self.names, cfg.weights) if cfg.fitness == "moga" else None
        self.tables = SpaceTables(self.space)
        searchable = max(1, len(self.tables.searchable))
        # Measured on the known-optimum problem (benchmarks/bench_search.py, 10 seeds, P = 64,
        # 50 generations): mating restriction lifted the front's hypervolume from ~90% to ~96% of
        # the true front's, and 0.4 mutated genes per child beat 1 (with mating restriction):
        # duplicates are redrawn anyway, so a low rate wastes no evaluation.
        self.mutation_prob = cfg.mutation_prob or 0.4 / searchable
        self.neighbours = (
            max(2, cfg.population // 8) if cfg.mating_neighbours is None else cfg.mating_neighbours
        )
        self.seed_genomes = [tuple(g) for g in cfg.seed_genomes]
        self._dist = _Distributed()
        self.shifter = self._check_shifter()
        self._check_limits()

    # -- state -------------------------------------------------------------------------------------

    def _fresh_state(self) -> None:
        self.rng = np.random.default_rng(self.config.seed)
        self.archive = Archive(self.metrics)
        self.controller = (
            ReinforcedMutation(self.tables, lr=self.config.controller_lr)
            if self.config.mutation == "reinforced"
            else None
        )
        self.population: list[Genome] = []
        self.generation = -1  # the last completed generation
        self.history: list[dict[str, Any]] = []
        self.front_idx: list[int] = []  # archive rows of the feasible front
        self._front_seen = 0  # archive rows the front has been computed from
        self.hv_norm: tuple[np.ndarray, np.ndarray] | None = None  # (ideal, reference)

    def _identity(self) -> dict[str, Any]:
        """What a checkpoint must agree on to be resumed by this search."""
        return {
            "space": self.space.name,
            "layers": self.space.num_layers,
            "choices": list(self.space.choice_names),
            "allowed": [list(layer.allowed) for layer in self.space.layers],
            "objectives": [list(o) for o in self.objectives],
            "config": self.config.to_dict(),
        }

    def state_dict(self) -> dict[str, Any]:
        arch = self.archive
        n = len(arch)
        genomes = np.array([r.genome for r in arch.records], dtype=np.int64).reshape(n, -1)
        values = arch.matrix([r.genome for r in arch.records], self.metrics)
        state = {
            "format": CHECKPOINT_FORMAT,
            "identity": self._identity(),
            "generation": self.generation,
            "rng": self.rng.bit_generator.state,
            "population": torch.from_numpy(
                np.array(self.population, dtype=np.int64).reshape(len(self.population), -1)
            ),
            "archive_genomes": torch.from_numpy(genomes),
            "archive_values": torch.from_numpy(values),
            "archive_generations": torch.tensor([r.generation for r in arch.records]),
            "front": list(self.front_idx),
            "history": self.history,
            "hv_norm": None
            if self.hv_norm is None
            else [self.hv_norm[0].tolist(), self.hv_norm[1].tolist()],
            "controller": None if self.controller is None else self.controller.state_dict(),
        }
        if hasattr(self.evaluate, "state_dict"):
            state["evaluator"] = self.evaluate.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any], path: Path | str = "checkpoint") -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a fastscarlet search checkpoint")
        self._check_same_search(state["identity"], path)
        self._fresh_state()
        self.rng.bit_generator.state = state["rng"]
        gens = state["archive_genomes"].tolist()
        vals = state["archive_values"].tolist()
        self.archive.load_state_dict(
            {
                "metrics": self.metrics,
                "genomes": gens,
                "values": vals,
                "generations": state["archive_generations"].tolist(),
            }
        )
        self.population = [tuple(g) for g in state["population"].tolist()]
        self.generation = int(state["generation"])
        self.front_idx = [int(i) for i in state["front"]]
        self._front_seen = len(self.archive)  # checkpoints are written after the update
        self.history = [dict(h) for h in state["history"]]
        if state["hv_norm"] is not None:
            self.hv_norm = (np.array(state["hv_norm"][0]), np.array(state["hv_norm"][1]))
        if self.controller is not None:
            self.controller.load_state_dict(state["controller"])
        if "evaluator" in state:
            if not hasattr(self.evaluate, "load_state_dict"):
                raise ValueError(f"{path} holds evaluator state but this evaluator takes none")
            self.evaluate.load_state_dict(state["evaluator"])

    def _check_same_search(self, saved: Mapping[str, Any], path: Path | str) -> None:
        mine = self._identity()
        diffs = []
        for key in mine:
            if key == "config":
                defaults = SearchConfig().to_dict()  # keys a checkpoint of an older version lacks
                for k in sorted(set(mine["config"]) | set(saved.get("config", {}))):
                    if k in _RESUMABLE_DIFFERENCES:
                        continue
                    a, b = saved.get("config", {}).get(k, defaults.get(k)), mine["config"].get(k)
                    if a != b:
                        diffs.append(f"{k}: checkpoint {a!r}, this run {b!r}")
            elif saved.get(key) != mine[key]:
                diffs.append(f"{key}: checkpoint {saved.get(key)!r}, this run {mine[key]!r}")
        if diffs:
            raise ValueError(f"cannot resume from {path}: " + "; ".join(diffs))

    # -- objectives --------------------------------------------------------------------------------

    def _check_shifter(self) -> Any:
        """The evaluator's ShiftingEvaluator, checked against ``config.shift*`` (None: no shift)."""
        cfg, shifter = self.config, find_shifter(self.evaluate)
        if shifter is None:
            if cfg.shift:
                raise ValueError(
                    "SearchConfig.shift needs a ShiftingEvaluator (fastscarlet.search.shifting) "
                    "as the evaluator or among combine()'s evaluators"
                )
            return None
        if not cfg.shift:
            raise ValueError("the evaluator shifts the supernet: set SearchConfig.shift=True")
        diffs = [
            f"{k}: config {getattr(cfg, k)!r}, evaluator {v!r}"
            for k, v in shifter.settings().items()
            if getattr(cfg, k) != v and not (k == "shift_batch" and cfg.shift_batch is None)
        ]
        if diffs:
            raise ValueError("the ShiftingEvaluator does not match the config: " + "; ".join(diffs))
        return shifter

    def _check_limits(self) -> None:
        """A bound no genome can meet (when the evaluator knows the range) is an error now."""
        limits = getattr(self.evaluate, "limits", None)
        if not callable(limits) or not self.constraint_names:
            return
        ranges = limits()
        for name, bound, upper in zip(
            self.constraint_names, self.constraint_bounds, self.constraint_upper
        ):
            if name not in ranges:
                continue
            lo, hi = ranges[name]
            if (upper and lo > bound) or (not upper and hi < bound):
                best = lo if upper else hi
                raise ValueError(
                    f"no genome of the {self.space.name} space can meet {name} "
                    f"{'<=' if upper else '>='} {bound:g}: the {'smallest' if upper else 'largest'}"
                    f" possible is {best:g}"
                )

    def _matrices(self, genomes: Sequence[Genome]) -> tuple[np.ndarray, np.ndarray]:
        """(F to minimise [n, M], constraint violation [n])."""
        F = self.archive.matrix(genomes, self.names) * self.sign
        C = self.archive.matrix(genomes, self.constraint_names)
        return F, constraint_violation(C, self.constraint_bounds, self.constraint_upper)

    def _evaluate_new(self, genomes: Sequence[Genome], generation: int) -> int:
        new = self.archive.new(genomes)
        if new:
            results = self._dist.evaluate(self.evaluate, list(new), self.shifter is not None)
            self.archive.add(new, results, generation)
        return len(new)

    # -- one generation ----------------------------------------------------------------------------

    def _offspring(self) -> tuple[list[Genome], list[tuple[Any, np.ndarray]]]:
        """``population`` distinct children not in the population; and, for the controller, what
        it mutated per attempt with each attempt row's index among the children (-1: dropped)."""
        cfg, tables, rng = self.config, self.tables, self.rng
        P = cfg.population
        pop = np.array(self.population, dtype=np.int64)
        F, v = self._matrices(self.population)
        fronts, crowd = rank_and_crowding(F, v, self.weights)
        near = nearest_neighbours(F, self.neighbours) if self.neighbours else None
        children = np.empty((0, tables.num_layers), dtype=np.int64)
        pending: list[tuple[Any, np.ndarray]] = []
        seen = set(self.population)
        for _ in range(10):  # redraw duplicates; a nearly exhausted space may give fewer
            need = P - len(children)
            if need <= 0:
                break
            first = nds.tournament(fronts, crowd, need, rng)
            if near is not None:
                second = neighbour_mates(near, first, rng)
            else:
                second = nds.tournament(fronts, crowd, need, rng)
            kids = crossover(
                tables, pop[first], pop[second], rng,
                cfg.crossover_prob, cfg.stage_crossover_prob,
            )  # fmt: skip
            mask = mutation_mask(tables, need, rng, self.mutation_prob)
            if self.controller is not None:
                policy = rng.random(need) < cfg.reinforced_share
                kids_r = self.controller.mutate(kids, mask, np.flatnonzero(policy), rng)
                mask[policy] = False
                kids = random_mutation(tables, kids_r, mask, rng)
                attempt = self.controller.take_pending()
            else:
                kids = random_mutation(tables, kids, mask, rng)
            index = np.full(need, -1, dtype=np.int64)
            keep = []
            for i, row in enumerate(map(tuple, kids.tolist())):
                if row not in seen:
                    seen.add(row)
                    index[i] = len(children) + len(keep)
                    keep.append(i)
            children = np.concatenate([children, kids[keep]])
            if self.controller is not None:
                pending.append((attempt, index))
        return [tuple(c) for c in children.tolist()], pending

    def _survive(self, candidates: list[Genome]) -> list[Genome]:
        F, v = self._matrices(candidates)
        fronts, crowd = rank_and_crowding(F, v, self.weights)
        keep = survival_order(fronts, crowd)[: self.config.population]
        return [candidates[i] for i in keep]

    def _update_front(self) -> None:
        """The archive's feasible non-dominated set: the previous front and the records added
        since it was computed (a record dominated once stays dominated)."""
        records = self.archive.records
        rows = self.front_idx + list(range(self._front_seen, len(records)))
        self._front_seen = len(records)
        if not rows:
            return
        F, v = self._matrices([records[i].genome for i in rows])
        ok = np.flatnonzero(v <= 0)
        if not len(ok):
            self.front_idx = []
            return
        fr = nds.non_dominated_sort(np.ascontiguousarray(F[ok]))
        self.front_idx = sorted(rows[i] for i in ok[fr == 0])

    def _front_order(self) -> list[int]:
        """Front rows in a deterministic order: by each objective (best first), then genome."""
        records = self.archive.records
        idx = list(self.front_idx)
        F = self.archive.matrix([records[i].genome for i in idx], self.names) * self.sign
        return [
            idx[k]
            for k in sorted(range(len(idx)), key=lambda k: (tuple(F[k]), records[idx[k]].genome))
        ]

    def _hypervolume(self) -> float:
        if not 1 <= len(self.names) <= 3 or self.hv_norm is None or not self.front_idx:
            return float("nan")
        records = self.archive.records
        F = self.archive.matrix([records[i].genome for i in self.front_idx], self.names)
        ideal, ref = self.hv_norm
        Z = (F * self.sign - ideal) / (ref - ideal)
        return float(nds.hypervolume(Z, np.ones(len(self.names))))

    def _set_hv_norm(self) -> None:
        F, _ = self._matrices(self.population)
        lo, hi = F.min(axis=0), F.max(axis=0)
        span = np.where(hi > lo, hi - lo, np.maximum(np.abs(hi), 1.0))
        self.hv_norm = (lo, hi + 0.1 * span)

    def _generation(self) -> dict[str, Any]:
        """Run the next generation; returns its history row."""
        gen = self.generation + 1
        t0 = time.perf_counter()
        t_eval = 0.0
        reward = None
        if gen == 0:
            pop = sample_population(
                self.tables, self.config.population, self.rng, self.seed_genomes
            )
            self.population = [tuple(g) for g in pop.tolist()]
            te = time.perf_counter()
            evaluations = self._evaluate_new(self.population, gen)
            t_eval = time.perf_counter() - te
            self._set_hv_norm()
            _, v = self._matrices(self.population)
            if not (v <= 0).any() and self.constraint_names:
                warnings.warn(
                    f"no genome of the initial population of {len(self.population)} meets the "
                    f"constraints {dict(self.config.constraints)}; the search moves toward them "
                    "by constrained domination",
                    RuntimeWarning,
                    stacklevel=3,
                )
        else:
            children, pending = self._offspring()
            te = time.perf_counter()
            evaluations = self._evaluate_new(children, gen)
            t_eval = time.perf_counter() - te
            survivors = self._survive(self.population + children)
            if self.controller is not None:
                alive = set(survivors)
                attempts = []
                for attempt, index in pending:
                    r = np.array([float(i >= 0 and children[i] in alive) for i in index.tolist()])
                    attempts.append((attempt, r))
                reward = self.controller.update_attempts(attempts)
            self.population = survivors
        self.generation = gen
        self._update_front()
        seconds = time.perf_counter() - t0
        row = {
            "generation": gen,
            "hypervolume": self._hypervolume(),
            "front_size": len(self.front_idx),
            "evaluations": evaluations,
            "total_evaluations": len(self.archive),
            "seconds": round(seconds, 6),
            "engine_seconds": round(seconds - t_eval, 6),
        }
        if self.controller is not None:
            row["controller_reward"] = float("nan") if reward is None else reward
        self.history.append(row)
        return row

    # -- the run -----------------------------------------------------------------------------------

    def run(self, out: str | Path | None = None, resume: bool = False) -> SearchResult:
        """Run to ``config.generations`` (continuing ``out/checkpoint.pt`` with ``resume``)."""
        out_dir = Path(out) if out is not None else None
        main = self._dist.rank == 0
        ckpt = out_dir / "checkpoint.pt" if out_dir is not None else None
        self._fresh_state()
        if resume:
            if ckpt is None:
                raise ValueError("resume=True needs the out folder of the run to continue")
            if ckpt.exists():
                self.load_state_dict(load_checkpoint(ckpt), ckpt)
            else:
                warnings.warn(f"{ckpt} does not exist: starting a new search", stacklevel=2)
        elif ckpt is not None and ckpt.exists():
            raise FileExistsError(
                f"{ckpt} exists: pass resume=True (--resume) to continue that search, or "
                "choose another out folder"
            )
        if out_dir is not None and main:
            out_dir.mkdir(parents=True, exist_ok=True)
            from fastscarlet.train.checkpoint import clean_stale_temporaries

            clean_stale_temporaries(out_dir)
        total = self.config.generations + 1
        bar = None
        if self.config.progress and main:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=self.generation + 1, desc="search", unit="gen")
        try:
            while self.generation + 1 < total:
                row = self._generation()
                if out_dir is not None and main:
                    if self.shifter is not None:
                        save_atomic(self.shifter.training_checkpoint(), out_dir / "supernet.pt")
                    save_atomic(self.state_dict(), ckpt)
                    outputs.write_history_csv(out_dir / "history.csv", self.history)
                self._dist.barrier()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        hv=f"{row['hypervolume']:.4f}", front=row["front_size"],
                        evals=row["total_evaluations"],
                    )  # fmt: skip
        finally:
            if bar is not None:
                bar.close()
        result = self.result(out_dir)
        if out_dir is not None and main:
            self.write_outputs(out_dir)
        return result

    def result(self, out: Path | None = None) -> SearchResult:
        records = self.archive.records
        return SearchResult(
            front=[records[i].genome for i in self._front_order()],
            archive=records,
            history=[dict(h) for h in self.history],
            population=list(self.population),
            objectives=list(self.objectives),
            out=out,
        )

    def write_outputs(self, out: Path) -> None:
        """archive.csv, front.json, history.csv, front.png, hypervolume.png (see outputs.py)."""
        records = self.archive.records
        front = [records[i] for i in self._front_order()]
        _, v = self._matrices([r.genome for r in records])
        outputs.write_front_json(out / "front.json", self.space, front, self.names)
        outputs.write_archive_csv(out / "archive.csv", self.space, records, self.metrics, v <= 0)
        outputs.write_history_csv(out / "history.csv", self.history)
        if records:
            outputs.plot_front(out / "front.png", records, front, self.objectives)
        if self.history:
            outputs.plot_hypervolume(out / "hypervolume.png", self.history)
