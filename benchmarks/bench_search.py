"""The search engine: quality on a problem with a known optimum, and its own time per generation.

    python benchmarks/bench_search.py quality   [--seeds 10] [--json F] [--png F]
    python benchmarks/bench_search.py overhead  [--population 1000] [--json F]

``quality``: :class:`fastscarlet.search.TableProblem` on the scarlet space (19 layers x 12-13
choices; per-(layer, choice) scores and costs summed, the exact front by dynamic programming),
population 64, 50 generations, random against reinforced mutation over the seeds: the front's
hypervolume as a fraction of the exact front's after every generation (objectives normalised by
the exact front's ideal and nadir points, reference point 1.1), a PNG of the mean curves.

``overhead``: the engine's own time per generation (everything but the evaluator: selection,
variation, duplicate redraws, archive, survival, front, hypervolume) at population 1,000, without
and with the per-generation checkpoint; medians over 20 generations. The evaluator is the table
problem (its time is excluded: the engine times ``evaluate`` and subtracts it).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from fastscarlet import nds
from fastscarlet.search import Search, SearchConfig, TableProblem

OBJ = [("score", "max"), ("cost", "min")]


def hv_ratio(true: np.ndarray, front: np.ndarray) -> float:
    T = np.c_[-true[:, 0], true[:, 1]]
    F = np.c_[-front[:, 0], front[:, 1]]
    ideal, nadir = T.min(0), T.max(0)

    def hv(A: np.ndarray) -> float:
        return nds.hypervolume((A - ideal) / (nadir - ideal), [1.1, 1.1])

    return hv(F) / hv(T)


class Tracker:
    """The problem as an evaluator that remembers every point (for the per-generation front)."""

    def __init__(self, prob: TableProblem) -> None:
        self.prob = prob
        self.seen: list[tuple[float, float]] = []

    def __call__(self, genomes):
        res = self.prob(genomes)
        self.seen += [(r["score"], r["cost"]) for r in res]
        return res


def quality(seeds: int, generations: int = 50) -> dict:
    out: dict = {"population": 64, "generations": generations, "runs": []}
    for mutation in ("random", "reinforced"):
        for seed in range(seeds):
            prob = TableProblem("scarlet", seed=seed)
            true = prob.exact_front()
            curve = []

            track = Tracker(prob)
            cfg = SearchConfig(population=64, generations=generations, seed=seed,
                               mutation=mutation, progress=False)  # fmt: skip
            search = Search("scarlet", track, OBJ, cfg)
            search._fresh_state()
            for _ in range(generations + 1):
                search._generation()
                V = np.array(track.seen)
                fr = V[nds.non_dominated_sort(V, maximize=[True, False]) == 0]
                curve.append(hv_ratio(true, fr))
            out["runs"].append({"mutation": mutation, "seed": seed, "hv_ratio": curve})
            print(f"{mutation:<10} seed {seed}: final {curve[-1]:.4f}")
    for mutation in ("random", "reinforced"):
        final = [r["hv_ratio"][-1] for r in out["runs"] if r["mutation"] == mutation]
        out[mutation] = {"mean": float(np.mean(final)), "min": float(np.min(final)),
                         "max": float(np.max(final))}  # fmt: skip
        print(f"{mutation}: mean {np.mean(final):.4f}, min {np.min(final):.4f}, "
              f"max {np.max(final):.4f} of the exact front's hypervolume")  # fmt: skip
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for mutation, color in (("random", "tab:blue"), ("reinforced", "tab:red")):
        curves = np.array([r["hv_ratio"] for r in result["runs"] if r["mutation"] == mutation])
        g = np.arange(curves.shape[1])
        ax.plot(g, curves.mean(0), color=color, label=f"{mutation} (mean of {len(curves)})")
        ax.fill_between(g, curves.min(0), curves.max(0), color=color, alpha=0.15)
    ax.axhline(0.95, color="gray", ls="--", lw=1)
    ax.set_xlabel("generation")
    ax.set_ylabel("hypervolume / exact front's")
    ax.set_ylim(0.5, 1.0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("NSGA-II on the known-optimum problem (P = 64)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def overhead(population: int, generations: int = 20) -> dict:
    import tempfile

    from fastscarlet.train.checkpoint import save_atomic

    cfg = SearchConfig(population=population, generations=generations, seed=0, progress=False)
    search = Search("scarlet", TableProblem("scarlet"), OBJ, cfg)
    res = search.run()
    ms = [1000 * h["engine_seconds"] for h in res.history[1:]]
    with tempfile.TemporaryDirectory() as tmp:  # the per-generation checkpoint, archive full
        t = []
        for _ in range(5):
            t0 = time.perf_counter()
            save_atomic(search.state_dict(), Path(tmp) / "checkpoint.pt")
            t.append(1000 * (time.perf_counter() - t0))
    out = {
        "population": population,
        "layers": 19,
        "generations": generations,
        "engine_median_ms": float(np.median(ms)),
        "engine_max_ms": float(np.max(ms)),
        "checkpoint_median_ms": float(np.median(t)),
        "archive_records": len(res.archive),
    }
    print(f"engine: {np.median(ms):.1f} ms per generation (median of {len(ms)}, max "
          f"{np.max(ms):.1f}); checkpoint with {len(res.archive)} records: "
          f"{np.median(t):.1f} ms")  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("quality", "overhead"))
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--population", type=int, default=1000)
    p.add_argument("--json", type=Path)
    p.add_argument("--png", type=Path)
    args = p.parse_args()
    torch.set_num_threads(1)
    result = quality(args.seeds) if args.what == "quality" else overhead(args.population)
    result["machine"] = {"platform": platform.platform(), "python": platform.python_version(),
                         "numpy": np.__version__, "nds": nds.backend(),
                         "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    if args.png and args.what == "quality":
        plot(result, args.png)


if __name__ == "__main__":
    main()
