"""``fastscarlet latency-table``: build a latency lookup table on this device, or validate one.

    fastscarlet latency-table --space scarlet --resolution 224 --threads 1 --out scarlet.json
    fastscarlet latency-table --table scarlet.json --validate 50 --out scarlet_validate/

Building times every (layer, allowed choice) block of the space at its input shape, and the stem,
first block and head (:mod:`fastscarlet.cost.latency`); validating times N random subnets end to
end and compares them with the table's predictions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "time every block of a search space on this device (a latency table), or validate a table"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--space", help="build a table for this registered space (scarlet, moga, ...)")
    src.add_argument(
        "--supernet", help="build a table for the space of this training checkpoint (OUT/last.pt)"
    )
    src.add_argument("--table", help="an existing TABLE.json (with --validate)")
    parser.add_argument("--resolution", type=int, help="input size (default 224, or the run's)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved sweeps per pass")
    parser.add_argument("--passes", type=int, default=3, help="passes (the minimum is kept)")
    parser.add_argument(
        "--calib-subnets", type=int, default=8,
        help="subnets timed whole to measure the fixed overhead (default 8)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--validate", type=int, metavar="N",
        help="time N random subnets end to end against the table's predictions",
    )  # fmt: skip
    parser.add_argument(
        "--out",
        help="TABLE.json when building (validation then writes to TABLE_validate/); with --table, "
        "the folder of validate.json and validate.png (default: the table's folder)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _space_and_resolution(args: argparse.Namespace):
    if args.supernet:
        from fastscarlet.train.checkpoint import load_supernet

        supernet = load_supernet(args.supernet)
        return supernet.space, args.resolution or supernet.config.data.image_size
    from fastscarlet.space import get_space

    return get_space(args.space), args.resolution or 224


def run(args: argparse.Namespace) -> int:
    from fastscarlet.cost.latency import (
        LatencyModel,
        build_latency_table,
        save_table,
        validate_latency_table,
    )

    progress = not args.no_progress
    if args.validate is not None and args.validate < 2:
        raise ValueError(f"--validate needs at least 2 subnets, got {args.validate}")
    if args.table:
        if args.validate is None:
            raise ValueError("--table is for validation: add --validate N")
        table_path = Path(args.table)
        table = LatencyModel(table_path).table
    else:
        if not args.out:
            raise ValueError("building a table needs --out TABLE.json")
        space, resolution = _space_and_resolution(args)
        table = build_latency_table(
            space, resolution, args.batch, args.device, args.dtype, args.threads,
            rounds=args.rounds, passes=args.passes, calib_subnets=args.calib_subnets,
            seed=args.seed, progress=progress,
        )  # fmt: skip
        table_path = save_table(table, args.out)
        model = LatencyModel(table)
        fast, slow = model.limits()
        print(f"wrote {table_path}: {model.describe()}")
        print(
            f"built in {table['build_seconds']:.1f} s; fixed overhead {table['overhead_ms']:.3f} "
            f"ms; predictions span {fast:.2f}-{slow:.2f} ms"
        )
    if args.validate is None:
        return 0
    if args.table:
        out_dir = Path(args.out) if args.out else table_path.parent
    else:  # --out named the table
        out_dir = table_path.parent / f"{table_path.stem}_validate"
    result = validate_latency_table(
        table, args.validate, seed=args.seed + 1, out_dir=out_dir, progress=progress
    )
    print(f"wrote {out_dir / 'validate.json'} and {out_dir / 'validate.png'}")
    print(
        f"{result['n']} subnets: max relative error {100 * result['max_rel_error']:.1f}%, "
        f"Spearman {result['spearman']:.3f}"
    )
    print(f"mean relative error {100 * result['mean_rel_error']:.1f}%")
    return 0
