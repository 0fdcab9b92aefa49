"""Population evaluation and the grouped strict-fairness step, each against its naive baseline,
side by side in one run.

    python benchmarks/bench_population.py                  # CPU: CIFAR-10 JPEGs, SCARLET at 32x32
    python benchmarks/bench_population.py --device cuda    # GPU: 224x224, 1,000 subnets, 2,000 +
                                                           # 10,000 images each (synthetic data)

**Population evaluation.** The same genomes and the same batches through:

* ``naive``: :func:`fastscarlet.evaluate.evaluate_paths` on the loaders: one subnet at a time,
  eager, every batch decoded again for every genome (what every peer does);
* ``one-by-one, cached``: ``evaluate_paths`` on :class:`~fastscarlet.evaluate.CachedBatches`
  (isolates what reading the batches once is worth);
* ``population``: :class:`~fastscarlet.evaluate.PopulationEvaluator` with its defaults (prefix
  trie, batches read once; on CUDA also several subnets per pass).

All rows read the same loaders, channels_last by default (``--layout``; on this CPU a SCARLET
subnet at 32x32 runs 1.75x faster so, for the naive loop as for the others: a layout is not a
population technique). On the CPU the records must be bit-identical (asserted); on a GPU, where
several subnets per pass sum in another order, top-1/top-5 counts are compared and the largest
relative loss difference reported. Wall time and
process CPU time are both recorded (on a shared machine the CPU time of a ``--threads 1`` run is
the steadier measure of work). Two populations: the offspring of
the last generations of a real NSGA-II run of the search engine (objectives: accuracy from a
1-batch PopulationEvaluator, and MAdds) and uniform random genomes (the worst case for sharing).
``--naive-subnets`` runs the naive loop on the first genomes only (a GPU cannot afford 1,000) and
compares subnets/s.

**Strict-fairness step** (``--step``): forward + backward of the ``m`` = 13 paths of a step, each
on its own batch: the loop over paths vs the grouped pass (fastscarlet.train.grouped_step) with
the reference convs, and on CUDA with the Triton grouped kernels; losses compared.

Results go to ``benchmarks/results/population_<device>.json``; figures in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fastscarlet.config import SpaceConfig, load_config
from fastscarlet.data import build_loader
from fastscarlet.evaluate import CachedBatches, PopulationEvaluator, evaluate_paths, trie_size
from fastscarlet.kernels.dispatch import kernel_mode
from fastscarlet.nn import SuperNet
from fastscarlet.search import CostEvaluator, Search, SearchConfig, combine
from fastscarlet.space import build_space, random_genome

HERE = Path(__file__).resolve().parent
CIFAR = HERE.parent.parent / "shared" / "data" / "cifar10"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _loaders(args, device: torch.device, num_classes: int):
    common = dict(
        image_size=args.size, device=device, batch_size=args.batch, recipe=args.recipe,
        channels_last=args.layout == "channels_last",
    )  # fmt: skip
    if args.data:
        calib = build_loader(
            args.data, "train", "torch", augment=False, shuffle=True, num_workers=args.workers,
            **common,
        )  # fmt: skip
        val = build_loader(args.data, "val", "torch", num_workers=args.workers, **common)
    else:  # synthetic: one random batch per pass, drawn on the CPU and copied (decode stand-in)
        n_calib, n_val = args.batch * args.calib_batches, args.batch * args.val_batches
        calib = build_loader(
            None, "train", "synthetic", num_images=n_calib, num_classes=num_classes, **common
        )
        val = build_loader(
            None, "val", "synthetic", num_images=n_val, num_classes=num_classes, **common
        )
    return calib, val


def nsga2_population(net, space, calib, val, args) -> tuple[list[tuple[int, ...]], list[int]]:
    """Offspring of the last generations of a real NSGA-II run (accuracy on one calibration and
    one validation batch, MAdds), the most recent first, ``args.subnets`` of them."""
    proxy = PopulationEvaluator(net, calib, val, 1, 1)
    calls: list[list[tuple[int, ...]]] = []

    def accuracy(genomes):
        calls.append([tuple(g) for g in genomes])
        return proxy(genomes)

    cfg = SearchConfig(
        population=args.population, generations=args.generations, seed=args.seed, progress=False
    )
    evaluator = combine(CostEvaluator(space, args.size), accuracy)
    Search(space, evaluator, [("acc", "max"), ("madds", "min")], cfg).run()
    out: list[tuple[int, ...]] = []
    for gen in reversed(calls[1:]):  # generation 0 is the random initial population
        out.extend(gen)
        if len(out) >= args.subnets:
            break
    return out[: args.subnets], [len(c) for c in calls]


def _time(fn, device):
    """``(result, wall seconds, process CPU seconds)``."""
    _sync(device)
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t, time.process_time() - c


def bench_population(name, genomes, net, calib, val, args, device) -> dict:
    cb, vb = args.calib_batches, args.val_batches
    images = cb * args.batch + vb * args.batch
    naive_genomes = genomes[: args.naive_subnets] if args.naive_subnets else genomes
    # warm-up (first-call costs of the conv backends), not timed
    evaluate_paths(net, genomes[:1], calib, val, 1, 1)
    PopulationEvaluator(net, calib, val, 1, 1)(genomes[:2])
    rows = {}
    load0 = _loadavg()
    naive, *t = _time(lambda: evaluate_paths(net, naive_genomes, calib, val, cb, vb), device)
    rows["naive"] = (len(naive_genomes), *t)
    ccal, cval = CachedBatches(calib, cb, device), CachedBatches(val, vb, device)
    cached, *t = _time(lambda: evaluate_paths(net, naive_genomes, ccal, cval, None, None), device)
    rows["one-by-one, cached"] = (len(naive_genomes), *t)
    ev = PopulationEvaluator(net, calib, val, cb, vb, device=device)
    pop, *t = _time(lambda: ev.evaluate(genomes), device)
    rows["population"] = (len(genomes), *t)
    load1 = _loadavg()
    by_genome = dict(zip(genomes, pop))
    top1_equal = all(
        a.top1 == by_genome[g].top1 and a.top5 == by_genome[g].top5
        for g, a in zip(naive_genomes, naive)
    )
    identical = cached == naive and all(by_genome[g] == a for g, a in zip(naive_genomes, naive))
    if device.type == "cpu" and not identical:
        raise AssertionError(f"{name}: the records differ from one-by-one evaluation")
    base_wall = rows["naive"][0] / rows["naive"][1]
    base_cpu = rows["naive"][0] / rows["naive"][2]
    table = {
        k: {
            "subnets": n,
            "seconds": round(t, 3),
            "cpu_seconds": round(c, 3),
            "subnets_per_s": round(n / t, 4),
            "images_per_s": round(n * images / t, 1),
            "speedup_vs_naive": round((n / t) / base_wall, 2),
            "speedup_vs_naive_cpu_time": round((n / c) / base_cpu, 2),
        }
        for k, (n, t, c) in rows.items()
    }
    uniq = sorted(set(genomes))
    return {
        "population": name,
        "subnets": len(genomes),
        "distinct": len(uniq),
        "images_per_subnet": images,
        "block_forwards_per_batch": trie_size(uniq),
        "one_by_one_block_forwards_per_batch": len(uniq) * len(uniq[0]),
        "evaluator": ev.last_stats,
        "rows": table,
        "top1_counts_equal": top1_equal,
        "records_identical": identical,
        "loss_max_relative_difference": max(
            abs(a.loss - by_genome[g].loss) / abs(a.loss) for g, a in zip(naive_genomes, naive)
        ),
        "loadavg_before_after": [load0, load1],
    }


def bench_step(space, args, device) -> dict:
    """The strict-fairness step: the loop over paths vs the grouped pass."""
    from fastscarlet.train.grouped_step import grouped_backward
    from fastscarlet.train.samplers import StrictFairSampler

    torch.manual_seed(0)
    net = SuperNet(space).to(device)
    mem = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    net = net.to(memory_format=mem).train()
    sampler = StrictFairSampler(space, seed=0)
    m = sampler.paths_per_step
    g = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randn(args.step_batch, 3, args.size, args.size, generator=g).to(
                device, memory_format=mem
            ),
            torch.randint(0, space.num_classes, (args.step_batch,), generator=g).to(device),
        )
        for _ in range(m)
    ]
    ce = torch.nn.CrossEntropyLoss()
    amp = device.type == "cuda"
    autocast = (
        (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if amp else contextlib.nullcontext
    )

    def loop(paths):
        losses = []
        for (x, y), p in zip(batches, paths):
            with autocast():
                logits = net(x, p)
            loss = ce(logits.float(), y)
            loss.backward()
            losses.append(loss.detach())
        return torch.stack(losses)

    def grouped(paths):
        return torch.stack(grouped_backward(net, batches, paths, ce, autocast(), force=True))

    variants = {
        "sequential paths": ("reference", loop),
        "grouped, reference convs": ("reference", grouped),
    }
    if device.type == "cuda":
        variants["grouped, Triton kernels"] = ("triton", grouped)
    times: dict[str, list[float]] = {k: [] for k in variants}
    losses: dict[str, list[float]] = {}
    state = copy.deepcopy(net.state_dict())
    for r in range(args.step_rounds + 1):  # round 0: warm-up (compilation, autotuning)
        paths = sampler.sample()
        for name, (mode, fn) in variants.items():
            net.load_state_dict(state)
            net.zero_grad(set_to_none=True)
            with kernel_mode(mode):
                out, t, _ = _time(lambda fn=fn, paths=paths: fn(paths), device)
            if r > 0:
                times[name].append(t)
            losses[name] = out.float().tolist()
    base = float(np.median(times["sequential paths"]))
    rows = {
        k: {
            "median_s": round(float(np.median(v)), 4),
            "images_per_s": round(m * args.step_batch / float(np.median(v)), 1),
            "speedup_vs_sequential": round(base / float(np.median(v)), 2),
        }
        for k, v in times.items()
    }
    ref = np.asarray(losses["sequential paths"])
    diffs = {k: float(np.abs(np.asarray(v) - ref).max()) for k, v in losses.items()}
    return {"paths": m, "batch_per_path": args.step_batch, "amp": "bf16" if amp else "none",
            "rows": rows, "max_loss_difference": diffs}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--data", help="ImageFolder root (default: ../shared/data/cifar10 on the CPU, "
                    "synthetic on a GPU); 'synthetic' forces random batches")  # fmt: skip
    ap.add_argument("--config", default=str(HERE.parent / "configs" / "cifar10.yaml"),
                    help="the space section of this recipe (CPU; the GPU uses ImageNet SCARLET)")  # fmt: skip
    ap.add_argument("--checkpoint", help="a trained supernet (default: freshly initialised)")
    ap.add_argument("--size", type=int, help="image side (default 32 CPU, 224 GPU)")
    ap.add_argument("--batch", type=int, help="images per batch (default 50 CPU, 200 GPU)")
    ap.add_argument("--calib-batches", type=int, help="default 4 CPU (200 images), 10 GPU (2,000)")
    ap.add_argument(
        "--val-batches", type=int, help="default 20 CPU (1,000 images), 50 GPU (10,000)"
    )
    ap.add_argument("--population", type=int, help="NSGA-II population (default 24 CPU, 100 GPU)")
    ap.add_argument("--generations", type=int, help="NSGA-II generations (default 4 CPU, 10 GPU)")
    ap.add_argument("--subnets", type=int, help="genomes per benchmark population (24 / 1000)")
    ap.add_argument("--naive-subnets", type=int, help="run the naive loop on the first N only "
                    "(default: all on the CPU, 16 on a GPU)")  # fmt: skip
    ap.add_argument("--sources", default="nsga2,random", help="populations to time ('': none)")
    ap.add_argument("--workers", type=int, default=0, help="decoding processes of the loaders")
    ap.add_argument("--layout", default="channels_last", choices=("channels_last", "nchw"),
                    help="memory format the loaders deliver (every row reads the same)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    ap.add_argument("--step", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the strict-fairness step")  # fmt: skip
    ap.add_argument("--step-batch", type=int, help="images per path (default 32 CPU, 128 GPU)")
    ap.add_argument("--step-rounds", type=int, default=3)
    ap.add_argument(
        "--json", help="output file (default benchmarks/results/population_<device>.json)"
    )
    args = ap.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    for key, cpu_value, gpu_value in (
        ("size", 32, 224), ("batch", 50, 200), ("calib_batches", 4, 10), ("val_batches", 20, 50),
        ("population", 24, 100), ("generations", 4, 10), ("subnets", 24, 1000),
        ("naive_subnets", 0, 16), ("step_batch", 32, 128),
    ):  # fmt: skip
        if getattr(args, key) is None:
            setattr(args, key, gpu_value if gpu else cpu_value)
    if args.data is None and not gpu and CIFAR.is_dir():
        args.data = str(CIFAR)
    if args.data == "synthetic":
        args.data = None
    args.recipe = "cifar" if args.size <= 64 else "imagenet"
    if gpu:
        space = build_space(SpaceConfig(name="scarlet", num_classes=1000))
    else:
        space = build_space(load_config(args.config).space)
    torch.manual_seed(args.seed)
    if args.checkpoint:
        from fastscarlet.train.checkpoint import load_supernet

        net = load_supernet(args.checkpoint, map_location=device)
        space = net.space
    else:
        net = SuperNet(space).to(device)
    calib, val = _loaders(args, device, space.num_classes)
    result = {
        "machine": {
            "platform": platform.platform(), "python": sys.version.split()[0],
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(device) if gpu else None,
        },
        "args": {k: v for k, v in vars(args).items() if k != "json"},
        "populations": [],
    }  # fmt: skip
    for source in filter(None, args.sources.split(",")):
        t = time.perf_counter()
        if source == "nsga2":
            genomes, calls = nsga2_population(net, space, calib, val, args)
            extra = {"nsga2_evaluations_per_generation": calls}
        elif source == "random":
            rng = np.random.default_rng(args.seed)
            genomes = [random_genome(space, rng) for _ in range(args.subnets)]
            extra = {}
        else:
            raise SystemExit(f"unknown population source {source!r}")
        print(f"[{source}] {len(genomes)} genomes in {time.perf_counter() - t:.1f} s", flush=True)
        res = bench_population(source, genomes, net, calib, val, args, device)
        res.update(extra)
        result["populations"].append(res)
        print(json.dumps({k: res[k] for k in ("population", "rows", "top1_counts_equal")}, indent=1),
              flush=True)  # fmt: skip
    if args.step:
        result["step"] = bench_step(space, args, device)
        print(json.dumps(result["step"], indent=1), flush=True)
    out = Path(args.json or HERE / "results" / f"population_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
