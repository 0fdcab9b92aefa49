"""Built-in evaluators: what a search measures of each genome.

An evaluator is ``evaluate(genomes: list[tuple[int, ...]]) -> list[dict[str, float]]`` (all new
genomes of a generation at once). Optional methods the engine uses: ``limits() -> {metric: (min,
max)}`` over the whole space (so an impossible constraint is an error before anything runs), and
``state_dict()``/``load_state_dict()`` (state that goes into the search checkpoint).

* :class:`CostEvaluator`: ``madds`` and ``params`` from the analytic :class:`CostModel`;
* :class:`LatencyEvaluator`: ``latency`` (ms) from a latency table (:mod:`fastscarlet.cost.latency`);
* :class:`AccuracyEvaluator`: ``acc`` (top-1, %), ``acc5`` and ``loss`` of supernet paths, BN
  recalibrated on training images read with the eval transform, measured on a held-out split
  (:class:`fastscarlet.evaluate.PopulationEvaluator`: the numbers of ``evaluate_paths``, a whole
  generation at once);
* :func:`combine`: several evaluators as one (their dicts merged).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from fastscarlet.cost import CostModel
from fastscarlet.space import Genome, SearchSpace

Evaluator = Callable[[list[Genome]], Sequence[Mapping[str, float]]]


def _table_limits(table: np.ndarray, space: SearchSpace, fixed: float) -> tuple[float, float]:
    """(min, max) over the space of ``fixed + sum_l table[l, g_l]`` (layers are independent)."""
    lo = sum(table[i, list(layer.allowed)].min() for i, layer in enumerate(space.layers))
    hi = sum(table[i, list(layer.allowed)].max() for i, layer in enumerate(space.layers))
    return float(fixed + lo), float(fixed + hi)


class CostEvaluator:
    """``madds`` and ``params`` of each genome at ``resolution`` (see :class:`CostModel`)."""

    def __init__(
        self,
        space: SearchSpace,
        resolution: int | tuple[int, int] = 224,
        identity: str = "identity",
    ) -> None:
        self.model = CostModel(space, resolution, identity=identity)
        self.space = space

    def __call__(self, genomes: list[Genome]) -> list[dict[str, float]]:
        madds, params = self.model.batch(
            np.asarray(genomes, dtype=np.int64).reshape(len(genomes), -1)
        )
        return [{"madds": float(m), "params": float(p)} for m, p in zip(madds, params)]

    def limits(self) -> dict[str, tuple[float, float]]:
        m = self.model
        return {
            "madds": _table_limits(m.madds_table, self.space, m.fixed_madds),
            "params": _table_limits(m.params_table, self.space, m.fixed_params),
        }


class LatencyEvaluator:
    """``latency`` (ms) of each genome predicted by a :class:`fastscarlet.cost.LatencyModel`."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __call__(self, genomes: list[Genome]) -> list[dict[str, float]]:
        ms = self.model.batch(np.asarray(genomes, dtype=np.int64).reshape(len(genomes), -1))
        return [{"latency": float(t)} for t in ms]

    def limits(self) -> dict[str, tuple[float, float]]:
        limits = getattr(self.model, "limits", None)
        return {"latency": tuple(limits())} if callable(limits) else {}


class AccuracyEvaluator:
    """``acc``, ``acc5`` (top-1/top-5, %) and ``loss`` of supernet paths, BN recalibrated per path.

    Each genome's path has its BN statistics recomputed on the first ``calib_batches`` batches of
    ``calib_loader``, then is evaluated on the first ``val_batches`` batches of ``val_loader``
    (None: all): the numbers of :func:`fastscarlet.evaluate.evaluate_paths`, computed for all new
    genomes of a generation at once by a :class:`fastscarlet.evaluate.PopulationEvaluator`
    (shared prefixes computed once, batches read once). The loaders must give the same batches
    on every pass (a fixed seed and epoch), so that a genome's score does not depend on when it
    is evaluated: that is what makes a resumed search identical to an uninterrupted one.
    """

    def __init__(
        self,
        supernet: Any,
        calib_loader: Iterable,
        val_loader: Iterable,
        calib_batches: int | None = 20,
        val_batches: int | None = None,
        progress: bool = False,
    ) -> None:
        from fastscarlet.evaluate import PopulationEvaluator

        self.supernet = supernet
        self.calib_loader, self.val_loader = calib_loader, val_loader
        self.calib_batches, self.val_batches = calib_batches, val_batches
        self.progress = progress
        self.population = PopulationEvaluator(
            supernet, calib_loader, val_loader, calib_batches, val_batches, progress=progress
        )

    def __call__(self, genomes: list[Genome]) -> list[dict[str, float]]:
        return self.population(genomes)


class _Combined:
    def __init__(self, evaluators: Sequence[Evaluator]) -> None:
        self.evaluators = list(evaluators)

    def __call__(self, genomes: list[Genome]) -> list[dict[str, float]]:
        out: list[dict[str, float]] = [{} for _ in genomes]
        for ev in self.evaluators:
            results = list(ev(genomes))
            if len(results) != len(genomes):
                raise ValueError(
                    f"evaluator {type(ev).__name__} returned {len(results)} results for "
                    f"{len(genomes)} genomes"
                )
            for row, res in zip(out, results):
                row.update(res)
        return out

    def limits(self) -> dict[str, tuple[float, float]]:
        out: dict[str, tuple[float, float]] = {}
        for ev in self.evaluators:
            fn = getattr(ev, "limits", None)
            if callable(fn):
                out.update(fn())
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            str(i): ev.state_dict()  # type: ignore[attr-defined]
            for i, ev in enumerate(self.evaluators)
            if hasattr(ev, "state_dict")
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for i, ev in enumerate(self.evaluators):
            if str(i) in state:
                ev.load_state_dict(state[str(i)])  # type: ignore[attr-defined]


def combine(*evaluators: Evaluator) -> Evaluator:
    """One evaluator returning the union of the given evaluators' metrics (later ones win)."""
    if not evaluators:
        raise ValueError("combine() needs at least one evaluator")
    return _Combined(evaluators)
