"""The demo's strict-fairness step on a small CPU: torch threads, alone and beside another process.

    python benchmarks/bench_demo_threads.py [--threads 1,2] [--steps 5]
        [--json benchmarks/results/demo_threads_cpu.json]

For each torch thread count, the median time of one strict-fairness step of the demo's supernet
(configs/demo_cpu.yaml at 28x28: 13 paths of 64 synthetic images, ``fastscarlet.cli.demo``'s own
probe) measured twice in the same run: alone, and while a competing process keeps one core busy
(a 1-thread PyTorch matmul loop, standing in for another job or the loader's worker). On a 2-core
machine ``threads = 2`` beside a competitor asks for more cores than there are; the question is
how much worse than the 2x of sharing that gets. ``OMP_WAIT_POLICY`` is reported: the demo's
script sets it to PASSIVE (waiting OpenMP threads sleep instead of spinning).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import time
from pathlib import Path

import torch

from fastscarlet.cli.demo import CONFIGS, probe_step_seconds
from fastscarlet.config import load_config


def _busy(stop: mp.Event) -> None:  # type: ignore[valid-type]
    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    while not stop.is_set():  # type: ignore[attr-defined]
        a = torch.tanh(a @ a)


def step_seconds(threads: int, steps: int, competitor: bool) -> float:
    cfg = load_config(CONFIGS / "demo_cpu.yaml", values={"data.image_size": 28})
    torch.set_num_threads(threads)
    stop, proc = None, None
    if competitor:
        ctx = mp.get_context("spawn")
        stop = ctx.Event()
        proc = ctx.Process(target=_busy, args=(stop,), daemon=True)
        proc.start()
        time.sleep(2.0)  # let it start spinning
    try:
        return probe_step_seconds(cfg, torch.device("cpu"), steps=steps)
    finally:
        if proc is not None:
            stop.set()
            proc.join(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per setting (median)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    rows = []
    for t in (int(x) for x in args.threads.split(",")):
        alone = step_seconds(t, args.steps, competitor=False)
        shared = step_seconds(t, args.steps, competitor=True)
        rows.append({"threads": t, "alone_s": alone, "beside_competitor_s": shared})
        print(f"threads {t}: {alone:.2f} s alone, {shared:.2f} s beside a busy process "
              f"({shared / alone:.2f}x)", flush=True)  # fmt: skip
    out = {
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "loadavg_1m_end": os.getloadavg()[0],
        "rows": rows,
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
