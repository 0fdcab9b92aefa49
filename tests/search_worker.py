"""Run a search on the known-optimum problem in its own process (tests/test_search_engine.py).

``python search_worker.py OUT [--resume] [--hang-at K] [--generations G] [--mutation M]``: the
evaluator touches ``OUT/call<k>`` when its k-th call starts; with ``--hang-at K`` the K-th call
sleeps (the test SIGKILLs the process there, mid-generation). Under torchrun every rank runs it
and the evaluation is sharded; each rank writes ``OUT/rank<r>.json`` with what it evaluated.
"""

import argparse
import json
import os
import time
from pathlib import Path

from fastscarlet.search import Search, SearchConfig, TableProblem


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--hang-at", type=int, default=-1)
    p.add_argument("--generations", type=int, default=6)
    p.add_argument("--mutation", default="reinforced")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    problem = TableProblem("scarlet", seed=3)
    rank = int(os.environ.get("RANK", "0"))
    if "WORLD_SIZE" in os.environ:
        import torch.distributed as dist

        dist.init_process_group("gloo")
    calls = {"n": 0}
    seen: list[list[int]] = []

    def evaluate(genomes):
        k = calls["n"]
        calls["n"] += 1
        (out / f"call{k}").touch()
        if k == args.hang_at:
            time.sleep(600)
        seen.extend(list(g) for g in genomes)
        return problem(genomes)

    cfg = SearchConfig(
        population=24, generations=args.generations, seed=11, mutation=args.mutation,
        constraints={"cost": 1100.0}, progress=False,
    )  # fmt: skip
    Search("scarlet", evaluate, [("score", "max"), ("cost", "min")], cfg).run(out, args.resume)
    (out / f"rank{rank}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    main()
