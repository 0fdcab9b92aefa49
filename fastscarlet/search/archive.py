"""The archive: one record per distinct evaluated genome, the search's cache and its history.

A genome is never evaluated twice: before a generation is evaluated the engine asks the archive
which of its genomes are new. Records keep the order in which genomes were first evaluated, the
generation that evaluated them and every metric the evaluator returned (objectives and constrained
metrics). The archive is plain data (lists of ints and floats) so that it goes into the search
checkpoint as it is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastscarlet.space import Genome


@dataclass(frozen=True)
class Record:
    """One evaluated genome: its metrics and the generation that evaluated it (0 = initial)."""

    genome: Genome
    values: dict[str, float]
    generation: int


class Archive:
    """Evaluated genomes in first-evaluation order, looked up by genome."""

    def __init__(self, metrics: Sequence[str]) -> None:
        self.metrics = tuple(metrics)
        self._column = {m: j for j, m in enumerate(self.metrics)}
        self._records: list[Record] = []
        self._index: dict[Genome, int] = {}
        # the values again as one float64 array (rows = records), grown by doubling, so that a
        # generation's matrices are one fancy-index instead of a Python loop per genome
        self._values = np.zeros((64, len(self.metrics)))

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, genome: object) -> bool:
        return genome in self._index

    def __getitem__(self, genome: Genome) -> Record:
        return self._records[self._index[genome]]

    @property
    def records(self) -> list[Record]:
        return list(self._records)

    def new(self, genomes: Iterable[Genome]) -> list[Genome]:
        """The distinct genomes not yet in the archive, in first-seen order."""
        out, seen = [], set()
        for g in genomes:
            if g not in self._index and g not in seen:
                seen.add(g)
                out.append(g)
        return out

    def add(
        self, genomes: Sequence[Genome], results: Sequence[Mapping[str, float]], generation: int
    ) -> None:
        """Record the evaluator's ``results`` for ``genomes``, checking each (named errors)."""
        if len(results) != len(genomes):
            raise ValueError(
                f"the evaluator returned {len(results)} results for {len(genomes)} genomes"
            )
        for g, res in zip(genomes, results):
            if not isinstance(res, Mapping):
                raise ValueError(f"the evaluator returned {res!r} for genome {list(g)}, not a dict")
            values = {}
            for name in self.metrics:
                if name not in res:
                    raise ValueError(
                        f"the evaluator returned no {name!r} for genome {list(g)} "
                        f"(it returned {sorted(res)})"
                    )
                try:
                    v = float(res[name])
                except (TypeError, ValueError):
                    raise ValueError(
                        f"the evaluator returned {name}={res[name]!r} for genome {list(g)}, "
                        "not a number"
                    ) from None
                if not math.isfinite(v):
                    raise ValueError(
                        f"the evaluator returned {name}={v} for genome {list(g)}: objectives "
                        "must be finite (a diverged supernet, or an empty evaluation split?)"
                    )
                values[name] = v
            self._append(Record(g, values, generation))

    def _append(self, record: Record) -> None:
        n = len(self._records)
        if n == len(self._values):
            self._values = np.concatenate([self._values, np.zeros_like(self._values)])
        self._values[n] = [record.values[m] for m in self.metrics]
        self._index[record.genome] = n
        self._records.append(record)

    def matrix(self, genomes: Sequence[Genome], names: Sequence[str]) -> np.ndarray:
        """``[len(genomes), len(names)]`` float64 of the archived values."""
        rows = np.fromiter((self._index[g] for g in genomes), dtype=np.int64, count=len(genomes))
        cols = [self._column[n] for n in names]
        return self._values[np.ix_(rows, cols)]

    def state_dict(self) -> dict[str, Any]:
        return {
            "metrics": list(self.metrics),
            "genomes": [list(r.genome) for r in self._records],
            "values": [[r.values[m] for m in self.metrics] for r in self._records],
            "generations": [r.generation for r in self._records],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if tuple(state["metrics"]) != self.metrics:
            raise ValueError(
                f"archive metrics {state['metrics']} differ from this search's {list(self.metrics)}"
            )
        self._records, self._index = [], {}
        self._values = np.zeros((max(64, len(state["genomes"])), len(self.metrics)))
        for g, vals, gen in zip(state["genomes"], state["values"], state["generations"]):
            genome = tuple(int(c) for c in g)
            self._append(Record(genome, dict(zip(self.metrics, map(float, vals))), int(gen)))
