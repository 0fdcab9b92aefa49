"""What a search writes for people to read: CSV and JSON of every evaluation, PNG plots.

In the search's ``out`` folder:

* ``archive.csv``: one row per evaluated genome: ``readable``, ``genome`` (the integers joined by
  ``,``), every metric, ``generation``, ``feasible``;
* ``front.json``: the final front, a list of ``{"genome": [ints], "readable": str, <objective>:
  value, ...}`` in the result's deterministic order;
* ``history.csv``: per generation ``generation, hypervolume, front_size, evaluations,
  total_evaluations, seconds, engine_seconds`` (and ``controller_reward`` with reinforced
  mutation);
* ``front.png``: every evaluated genome for each pair of objectives, coloured by generation, the
  front drawn over them; ``hypervolume.png``: hypervolume per generation.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fastscarlet.search.archive import Record
from fastscarlet.space import SearchSpace, to_readable


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def front_rows(
    space: SearchSpace, records: Sequence[Record], objectives: Sequence[str]
) -> list[dict[str, Any]]:
    """``front.json``'s objects for ``records``."""
    return [
        {
            "genome": list(r.genome),
            "readable": to_readable(space, r.genome),
            **{name: r.values[name] for name in objectives},
        }
        for r in records
    ]


def write_front_json(
    path: Path, space: SearchSpace, records: Sequence[Record], objectives: Sequence[str]
) -> None:
    _atomic_text(path, json.dumps(front_rows(space, records, objectives), indent=1) + "\n")


def write_archive_csv(
    path: Path,
    space: SearchSpace,
    records: Sequence[Record],
    metrics: Sequence[str],
    feasible: Sequence[bool],
) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["readable", "genome", *metrics, "generation", "feasible"])
        for r, ok in zip(records, feasible):
            w.writerow(
                [
                    to_readable(space, r.genome),
                    ",".join(map(str, r.genome)),
                    *(repr(r.values[m]) for m in metrics),
                    r.generation,
                    int(ok),
                ]
            )
    os.replace(tmp, path)


def write_history_csv(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
    if not history:
        return
    keys = list(history[0])
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for row in history:
            w.writerow({k: row.get(k) for k in keys})
    os.replace(tmp, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_front(
    path: Path,
    records: Sequence[Record],
    front: Sequence[Record],
    objectives: Sequence[tuple[str, str]],
) -> None:
    """Every evaluated point and the front, for each pair of objectives (one panel per pair)."""
    plt = _pyplot()
    names = [n for n, _ in objectives]
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))] or [(0, 0)]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs), 4.5), squeeze=False)
    gens = [r.generation for r in records]
    for ax, (i, j) in zip(axes[0], pairs):
        xi, yj = names[j], names[i]  # the second objective (usually a cost) on x
        sc = ax.scatter(
            [r.values[xi] for r in records],
            [r.values[yj] for r in records],
            c=gens,
            cmap="viridis",
            s=9,
            alpha=0.7,
        )
        fr = sorted(front, key=lambda r: r.values[xi])
        ax.plot(
            [r.values[xi] for r in fr],
            [r.values[yj] for r in fr],
            "o-",
            color="crimson",
            ms=4,
            lw=1.2,
            label=f"front ({len(fr)})",
        )
        ax.set_xlabel(f"{xi} ({dict(objectives)[xi]})")
        ax.set_ylabel(f"{yj} ({dict(objectives)[yj]})")
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
        fig.colorbar(sc, ax=ax, label="generation")
    fig.suptitle(f"{len(records)} evaluated architectures")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_hypervolume(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot([h["generation"] for h in history], [h["hypervolume"] for h in history], "o-", ms=3)
    ax.set_xlabel("generation")
    ax.set_ylabel("hypervolume (normalised by generation 0)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
