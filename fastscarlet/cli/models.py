"""``fastscarlet models``: the published models with MAdds, params and depth from the built models."""

from __future__ import annotations

import argparse
import json

HELP = "list the published models (name, space, genome, MAdds, params, depth)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument("--resolution", type=int, default=224, help="input size (default 224)")
    parser.add_argument(
        "--se-multiply", action="store_true", help="count the SE channel multiply in MAdds"
    )


def model_rows(resolution: int = 224, se_multiply: bool = False) -> list[dict]:
    """One row per published model, counted with hooks on the built model."""
    from fastscarlet.cost import count_by_hooks
    from fastscarlet.nn import create_model
    from fastscarlet.space import PUBLISHED, to_readable

    rows = []
    for name, pub in PUBLISHED.items():
        net = create_model(name)
        cost = count_by_hooks(net, resolution, se_multiply=se_multiply)
        rows.append(
            {
                "name": name,
                "space": pub.space,
                "genome": list(pub.genome),
                "arch": to_readable(net.space, pub.genome),
                "madds": cost.madds,
                "params": cost.params,
                "depth": net.depth,
                "published_madds_m": pub.madds_m,
                "published_params_m": pub.params_m,
                "top1": pub.top1,
            }
        )
    return rows


def run(args: argparse.Namespace) -> int:
    if args.resolution < 1:
        raise ValueError(f"--resolution must be positive, got {args.resolution}")
    rows = model_rows(args.resolution, args.se_multiply)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    head = f"{'name':<13} {'space':<10} {'MAdds(M)':>9} {'pub':>5} {'params(M)':>9} {'pub':>5} {'depth':>5}  genome"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['name']:<13} {r['space']:<10} {r['madds'] / 1e6:>9.2f} {r['published_madds_m']:>5g} "
            f"{r['params'] / 1e6:>9.3f} {r['published_params_m']:>5g} {r['depth']:>5}  "
            f"{','.join(map(str, r['genome']))}"
        )
    return 0
