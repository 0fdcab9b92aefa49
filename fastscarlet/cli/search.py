"""``fastscarlet search``: NSGA-II (or MoGA's rule) over a trained supernet's architectures.

Objectives: ``acc`` (top-1 %, maximised), ``acc5``, ``loss``, ``madds``, ``params`` and ``latency``
(from ``--latency-table``); ``name:max`` or ``name:min`` overrides a direction (``--fitness moga``
maximises ``params``, as MoGA does). Works under torchrun: the evaluations of a generation are
split over the ranks and rank 0 writes.
"""

from __future__ import annotations

import argparse

HELP = "search a trained supernet for the Pareto front of accuracy, MAdds, params and latency"

DIRECTIONS = {
    "acc": "max",
    "acc5": "max",
    "loss": "min",
    "madds": "min",
    "params": "min",
    "latency": "min",
}
ACCURACY = ("acc", "acc5", "loss")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--supernet", required=True, help="OUT/last.pt of `fastscarlet train`")
    parser.add_argument("--data", help="dataset folder (default: the run's data.root)")
    parser.add_argument(
        "--objectives", default="acc,madds",
        help="comma-separated, from acc, acc5, loss, madds, params, latency (name:max|min "
        "overrides a direction); default acc,madds",
    )  # fmt: skip
    parser.add_argument("--population", type=int, default=64)
    parser.add_argument("--generations", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mutation", choices=("random", "reinforced"), default="random")
    parser.add_argument("--fitness", choices=("nsga2", "moga"), default="nsga2")
    parser.add_argument("--max-madds", type=float, help="constraint: MAdds at most this")
    parser.add_argument("--max-params", type=float, help="constraint: parameters at most this")
    parser.add_argument("--max-latency", type=float, help="constraint: latency (ms) at most this")
    parser.add_argument("--latency-table", help="TABLE.json of `fastscarlet latency-table`")
    parser.add_argument("--resolution", type=int, help="input size for MAdds (default: the run's)")
    parser.add_argument("--calib-batches", type=int, default=20, help="BN recalibration batches")
    parser.add_argument("--eval-batches", type=int, help="evaluation batches (default: all)")
    parser.add_argument("--batch-size", type=int, help="default: the run's data.eval_batch_size")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--seed-published", action="store_true",
        help="put the published models of the space into the initial population",
    )  # fmt: skip
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--resume", action="store_true", help="continue OUT/checkpoint.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def parse_objectives(text: str, fitness: str) -> list[tuple[str, str]]:
    """``"acc,madds:min"`` -> ``[("acc", "max"), ("madds", "min")]`` (named errors)."""
    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, direction = item.partition(":")
        if name not in DIRECTIONS:
            raise ValueError(f"unknown objective {name!r}; known: {', '.join(DIRECTIONS)}")
        if not direction:
            direction = "max" if (fitness == "moga" and name == "params") else DIRECTIONS[name]
        if direction not in ("min", "max"):
            raise ValueError(f"objective {name}: direction must be min or max, not {direction!r}")
        out.append((name, direction))
    if not out:
        raise ValueError("--objectives names no objective")
    return out


def _positive(value: int | None, flag: str) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{flag} must be at least 1, got {value}")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fastscarlet.search import (
        CostEvaluator,
        LatencyEvaluator,
        Search,
        SearchConfig,
        combine,
    )
    from fastscarlet.space import PUBLISHED
    from fastscarlet.train.checkpoint import load_supernet
    from fastscarlet.train.distributed import destroy, init_distributed

    objectives = parse_objectives(args.objectives, args.fitness)
    names = [n for n, _ in objectives]
    for flag in ("population", "calib_batches", "eval_batches", "batch_size", "resolution"):
        _positive(getattr(args, flag), "--" + flag.replace("_", "-"))
    constraints = {
        k: v
        for k, v in (
            ("madds", args.max_madds),
            ("params", args.max_params),
            ("latency", args.max_latency),
        )
        if v is not None
    }
    if ("latency" in names or "latency" in constraints) and not args.latency_table:
        raise ValueError("the latency objective or --max-latency needs --latency-table TABLE.json")

    from fastscarlet.env import resolve_device

    device = resolve_device(args.device)
    dist = init_distributed(device.type)
    if device.type == "cuda":
        import torch

        device = torch.device("cuda", dist.local_rank)
    try:
        supernet = load_supernet(args.supernet, map_location=device)
        space, cfg = supernet.space, supernet.config
        resolution = args.resolution or cfg.data.image_size
        evaluators = [CostEvaluator(space, resolution)]
        if args.latency_table:
            from fastscarlet.cost import LatencyModel

            latency = LatencyModel(args.latency_table)
            if getattr(latency, "space_name", space.name) != space.name:
                raise ValueError(
                    f"{args.latency_table} was built for the {latency.space_name} space, the "
                    f"supernet is of the {space.name} space"
                )
            evaluators.append(LatencyEvaluator(latency))
        if any(n in ACCURACY for n in names):
            evaluators.append(
                _accuracy(args, supernet, cfg, device, dist.rank, progress=not args.no_progress)
            )
        seeds = tuple(
            m.genome for m in PUBLISHED.values() if args.seed_published and m.space == space.name
        )
        config = SearchConfig(
            population=args.population,
            generations=args.generations,
            seed=args.seed,
            mutation=args.mutation,
            fitness=args.fitness,
            constraints=constraints,
            seed_genomes=seeds,
            progress=not args.no_progress and dist.is_main,
        )
        result = Search(space, combine(*evaluators), objectives, config).run(
            out=Path(args.out), resume=args.resume
        )
        if dist.is_main:
            print_front(space, result)
            print(f"outputs: {Path(args.out).resolve()} (front.json, archive.csv, front.png)")
    finally:
        destroy(dist)
    return 0


def _accuracy(args, supernet, cfg, device, rank: int, progress: bool):
    from fastscarlet.data import build_loader
    from fastscarlet.search import AccuracyEvaluator

    dc = cfg.data
    root = args.data or dc.root
    if root is None:
        raise ValueError("no dataset: pass --data PATH (the run's data.root is not set)")
    batch = args.batch_size or dc.eval_batch_size
    backend = dc.backend if dc.backend != "synthetic" else "torch"
    common = dict(
        image_size=dc.image_size, device=device, num_workers=dc.num_workers, recipe=dc.recipe,
        seed=args.seed, batch_size=batch,
    )  # fmt: skip
    # Calibration reads training images with the eval transform, in one fixed shuffled order
    # (the same batches for every genome and every generation); accuracy is measured on the
    # held-out split (val/, or test/).
    calib = build_loader(root, "train", backend, augment=False, shuffle=True, **common)
    val = build_loader(root, "val", backend, **common)
    if args.calib_batches > len(calib):
        print(
            f"note: --calib-batches {args.calib_batches} but the training split gives "
            f"{len(calib)} batches of {batch}; recalibrating on {len(calib)}"
        )
    return AccuracyEvaluator(
        supernet, calib, val, args.calib_batches, args.eval_batches, progress=progress and rank == 0
    )


def print_front(space, result) -> None:
    from fastscarlet.space import to_readable

    records = result.front_records()
    names = [n for n, _ in result.objectives]
    head = f"{'#':>3}  " + "  ".join(f"{n:>12}" for n in names) + "  architecture"
    print(f"front: {len(records)} architectures ({len(result.archive)} evaluated)")
    print(head)
    print("-" * len(head))
    for i, r in enumerate(records):
        vals = "  ".join(f"{_fmt(n, r.values[n]):>12}" for n in names)
        print(f"{i:>3}  {vals}  {to_readable(space, r.genome)}")


def _fmt(name: str, v: float) -> str:
    if name in ("madds", "params"):
        return f"{v / 1e6:.2f}M"
    if name == "latency":
        return f"{v:.2f}ms"
    return f"{v:.2f}"
