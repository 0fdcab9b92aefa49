"""Throughput of the analytic cost model (issue 2: at least 10,000 genomes/s on the CI CPU).

    python benchmarks/bench_cost.py [--n 20000] [--json benchmarks/results/cost_cpu.json]

Times three ways to cost random SCARLET genomes at 224: ``CostModel.__call__`` (validated, one
genome at a time), ``CostModel.batch`` (vectorised), and, as the baseline, building the model and
counting with hooks (what the cost model replaces). ``--json`` writes the figures with the
machine, the versions, the date and the load average (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone

import numpy as np
import torch

from fastscarlet.cost import CostModel, count_by_hooks
from fastscarlet.cost.timing import device_name
from fastscarlet.nn.network import build_network
from fastscarlet.space import get_space
from fastscarlet.space.genome import random_genome


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--space", default="scarlet")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()
    load_before = os.getloadavg()
    torch.set_num_threads(1)
    space = get_space(args.space)
    rng = np.random.default_rng(0)
    genomes = np.array([random_genome(space, rng) for _ in range(args.n)])
    model = CostModel(space, 224)

    t0 = time.perf_counter()
    for g in genomes:
        model(g)
    scalar = args.n / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    model.batch(genomes)
    batch = args.n / (time.perf_counter() - t0)

    k = 5
    t0 = time.perf_counter()
    for g in genomes[:k]:
        count_by_hooks(build_network(space, g), 224)
    hooks = k / (time.perf_counter() - t0)

    rates = {
        "CostModel(genome)": scalar,
        "CostModel.batch(genomes)": batch,
        "build + hook count": hooks,
    }
    cpu = device_name(torch.device("cpu"))
    print(f"space={args.space} n={args.n} cpu={cpu}")
    print(f"{'method':<28} {'genomes/s':>12} {'vs hooks':>10}")
    for name, rate in rates.items():
        print(f"{name:<28} {rate:>12,.0f} {rate / hooks:>9,.0f}x")
    if args.json:
        result = {
            "env": {
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "cpu": cpu,
                "nproc": os.cpu_count(),
                "loadavg_before": list(load_before),
                "loadavg_after": list(os.getloadavg()),
                "python": platform.python_version(),
                "numpy": np.__version__,
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
            },
            "args": {"n": args.n, "space": args.space, "resolution": 224, "hook_genomes": k},
            "genomes_per_s": rates,
            "vs_hooks": {name: rate / hooks for name, rate in rates.items()},
        }
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
