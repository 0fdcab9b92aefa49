"""``fastscarlet eval``: accuracy of supernet paths from a training checkpoint (BN recalibrated)."""

from __future__ import annotations

import argparse
import json

HELP = "evaluate paths of a trained supernet (random, or given genomes) with BN recalibration"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="OUT/last.pt of `fastscarlet train`")
    parser.add_argument("--data", help="dataset folder (default: the run's data.root)")
    parser.add_argument("--paths", type=int, default=20, help="number of random paths")
    parser.add_argument("--genome", action="append", default=[], help="a genome like 0,3,12,...")
    parser.add_argument("--calib-batches", type=int, default=20, help="BN recalibration batches")
    parser.add_argument("--val-batches", type=int, help="limit the evaluation batches")
    parser.add_argument(
        "--batch-size", type=int, help="calibration and evaluation batch (default: the run's "
        "data.eval_batch_size)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the random paths")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from fastscarlet.data import build_loader
    from fastscarlet.env import resolve_device
    from fastscarlet.evaluate import evaluate_paths
    from fastscarlet.space import random_genome, validate_genome
    from fastscarlet.train.checkpoint import load_supernet

    device = resolve_device(args.device)
    model = load_supernet(args.checkpoint, map_location=device)
    space, cfg = model.space, model.config
    rng = np.random.default_rng(args.seed)
    genomes = [validate_genome(space, [int(c) for c in g.split(",")]) for g in args.genome]
    if not genomes:
        genomes = [random_genome(space, rng) for _ in range(args.paths)]
    dc = cfg.data
    root = args.data or dc.root
    common = dict(
        image_size=dc.image_size, device=device, num_workers=dc.num_workers, recipe=dc.recipe,
        seed=args.seed,
    )  # fmt: skip
    # The run's loader backend (a synthetic run is evaluated on real images through torch).
    backend = dc.backend if dc.backend != "synthetic" else "torch"
    batch = dc.eval_batch_size if args.batch_size is None else args.batch_size
    if batch < 1:
        raise ValueError(f"--batch-size must be at least 1, got {batch}")
    # Recalibration reads training images with the eval transform (no augmentation noise).
    calib = build_loader(
        root, "train", backend, batch_size=batch, augment=False, shuffle=True,
        **common,
    )  # fmt: skip
    val = build_loader(root, "val", backend, batch_size=batch, **common)
    results = evaluate_paths(model, genomes, calib, val, args.calib_batches, args.val_batches)
    rows = [
        {"genome": list(g), "top1": r.top1, "top5": r.top5, "loss": r.loss, "images": r.images}
        for g, r in zip(genomes, results)
    ]
    top1 = [r["top1"] for r in rows]
    summary = {"paths": rows, "mean_top1": float(np.mean(top1)), "std_top1": float(np.std(top1))}
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        for r in rows:
            print(
                f"top1 {r['top1']:6.2f}  top5 {r['top5']:6.2f}  {','.join(map(str, r['genome']))}"
            )
        print(
            f"mean top1 over {len(rows)} paths: {summary['mean_top1']:.2f} "
            f"(std {summary['std_top1']:.2f})"
        )
    return 0
