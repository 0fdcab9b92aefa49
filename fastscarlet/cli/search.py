"""``fastscarlet search``: NSGA-II (or MoGA's rule) over a trained supernet's architectures.

Objectives: ``acc`` (top-1 %, maximised), ``acc5``, ``loss``, ``madds``, ``params`` and ``latency``
(from ``--latency-table``); ``name:max`` or ``name:min`` overrides a direction (``--fitness moga``
maximises ``params``, as MoGA does). Works under torchrun: the evaluations of a generation are
split over the ranks and rank 0 writes.

``--shift`` (Supernet Shifting, :mod:`fastscarlet.search.shifting`): each new genome's path takes
``--shift-steps`` SGD steps on training batches before it is evaluated, so the supernet drifts
toward the architectures the search favours; the shifted supernet is written to
``OUT/supernet.pt`` (a training checkpoint). ``--transfer-data PATH`` moves the supernet to
another dataset: a fresh classifier for its classes, trained by the shift, and the search runs on
that dataset. Under torchrun every rank trains one genome per update (``--shift-parallel`` R
reproduces an R-rank run in one process).
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
    shift = parser.add_argument_group("Supernet Shifting")
    shift.add_argument(
        "--shift", action="store_true",
        help="fine-tune the supernet on each new genome's path before evaluating it",
    )  # fmt: skip
    shift.add_argument("--shift-steps", type=int, default=20, help="steps per genome (paper: 20)")
    shift.add_argument("--shift-lr", type=float, default=1e-4, help="constant SGD lr (paper: 1e-4)")
    shift.add_argument(
        "--shift-batch", type=int, help="images per step (default: the run's data.batch_size)"
    )
    shift.add_argument(
        "--shift-parallel", type=int,
        help="genomes per update (default: the number of torchrun ranks, 1 without torchrun)",
    )  # fmt: skip
    shift.add_argument(
        "--transfer-data", metavar="PATH",
        help="search on this dataset (train/ and val/ or test/): a fresh classifier for its "
        "classes is trained by the shift",
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
        AccuracyEvaluator,
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
    for flag in (
        "population", "calib_batches", "eval_batches", "batch_size", "resolution", "shift_steps",
        "shift_batch", "shift_parallel",
    ):  # fmt: skip
        _positive(getattr(args, flag), "--" + flag.replace("_", "-"))
    if args.shift and not any(n in ACCURACY for n in names):
        raise ValueError("--shift needs an accuracy objective (acc, acc5 or loss) to shift for")
    if args.transfer_data and not args.shift:
        raise ValueError("--transfer-data needs --shift: its new classifier is trained by it")
    if args.transfer_data and args.data:
        raise ValueError("--transfer-data names the dataset to search on: leave out --data")
    if args.shift_lr <= 0:
        raise ValueError(f"--shift-lr must be positive, got {args.shift_lr}")
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
        shifter = None
        if args.shift:
            supernet, shifter = _shifting(args, supernet, device, dist)
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
        if shifter is not None:
            evaluators.append(shifter)
        elif any(n in ACCURACY for n in names):
            calib, val = _eval_loaders(args, cfg, args.data or cfg.data.root, device)
            accuracy = AccuracyEvaluator(
                supernet, calib, val, args.calib_batches, args.eval_batches,
                progress=not args.no_progress and dist.rank == 0,
            )  # fmt: skip
            evaluators.append(accuracy)
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
            **({} if shifter is None else {"shift": True, **shifter.settings()}),
        )
        result = Search(space, combine(*evaluators), objectives, config).run(
            out=Path(args.out), resume=args.resume
        )
        if dist.is_main:
            print_front(space, result)
            extra = ", supernet.pt" if shifter is not None else ""
            print(
                f"outputs: {Path(args.out).resolve()} (front.json, archive.csv, front.png{extra})"
            )
    finally:
        destroy(dist)
    return 0


def _eval_loaders(args, cfg, root, device):
    """(calibration, validation) loaders of ``root`` for the accuracy of supernet paths."""
    from fastscarlet.data import build_loader

    dc = cfg.data
    if root is None:
        raise ValueError("no dataset: pass --data PATH (the run's data.root is not set)")
    batch = args.batch_size or dc.eval_batch_size
    # The run's memory format (channels_last: 1.75x faster subnets on a CPU, measured in
    # benchmarks/RESULTS.md), the same for every genome so that scores compare.
    common = dict(
        image_size=dc.image_size, device=device, num_workers=dc.num_workers, recipe=dc.recipe,
        seed=args.seed, batch_size=batch, channels_last=dc.channels_last,
    )  # fmt: skip
    # Calibration reads training images with the eval transform, in one fixed shuffled order
    # (the same batches for every genome and every generation); accuracy is measured on the
    # held-out split (val/, or test/).
    calib = build_loader(root, "train", _backend(cfg), augment=False, shuffle=True, **common)
    val = build_loader(root, "val", _backend(cfg), **common)
    if args.calib_batches > len(calib):
        print(
            f"note: --calib-batches {args.calib_batches} but the training split gives "
            f"{len(calib)} batches of {batch}; recalibrating on {len(calib)}"
        )
    return calib, val


def _backend(cfg) -> str:
    # the run's loader backend (a synthetic run is evaluated on real images through torch)
    return cfg.data.backend if cfg.data.backend != "synthetic" else "torch"


def _shifting(args, supernet, device, dist):
    """(the supernet to search, transferred if asked; its ShiftingEvaluator)."""
    from fastscarlet.data import build_loader
    from fastscarlet.search.shifting import ShiftingEvaluator, transfer_supernet
    from fastscarlet.train.checkpoint import load_checkpoint

    lanes = args.shift_parallel or dist.world_size
    if dist.world_size > 1 and lanes != dist.world_size:
        raise ValueError(
            f"under torchrun with {dist.world_size} ranks each rank trains one genome per update: "
            f"--shift-parallel must be {dist.world_size} (or left out), got {lanes}"
        )
    cfg = supernet.config
    dc = cfg.data
    root = args.transfer_data or args.data or dc.root
    if root is None:
        raise ValueError("no dataset: pass --data PATH (the run's data.root is not set)")
    batch = args.shift_batch or dc.batch_size

    def train_loader(lane: int, lanes: int):
        return build_loader(
            root, "train", _backend(cfg), batch_size=batch, image_size=dc.image_size,
            crop_scale=(dc.crop_scale_min, 1.0), device=device, num_workers=dc.num_workers,
            rank=lane, world_size=lanes, seed=args.seed, recipe=dc.recipe,
        )  # fmt: skip

    if args.transfer_data:
        classes = train_loader(0, 1).num_classes
        supernet = transfer_supernet(supernet, classes, args.transfer_data, seed=args.seed)
        cfg = supernet.config
    calib, val = _eval_loaders(args, cfg, root, device)
    if val.num_classes != calib.num_classes:
        raise ValueError(
            f"{root}: the training split has {calib.num_classes} classes, the held-out split "
            f"{val.num_classes}"
        )
    source = load_checkpoint(args.supernet, map_location=device)
    source.pop("model", None)
    shifter = ShiftingEvaluator(
        supernet, train_loader, calib, val, steps=args.shift_steps, lr=args.shift_lr,
        lanes=lanes, calib_batches=args.calib_batches, val_batches=args.eval_batches,
        source=source, seed=args.seed, progress=not args.no_progress,
    )  # fmt: skip
    return supernet, shifter


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
