"""``fastscarlet eval``: accuracy of supernet paths from a training checkpoint (BN recalibrated)."""

from __future__ import annotations

import argparse
import json
import sys

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
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (on stderr) over the paths"
    )


def _at_least_one(args: argparse.Namespace, *flags: str) -> None:
    for flag in flags:
        value = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")


def _note_short(flag: str, asked: int | None, loader, split: str) -> None:
    """Say so when a batch limit asks for more batches than the split has (all are used)."""
    if asked is not None and asked > len(loader):
        print(
            f"fastscarlet eval: note: {flag} {asked}, but the {split} split has only "
            f"{len(loader)} batches of {loader.batch_size} ({loader.num_samples} images): "
            f"using all {len(loader)}",
            file=sys.stderr,
        )


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from fastscarlet.data import build_loader
    from fastscarlet.env import resolve_device
    from fastscarlet.evaluate import evaluate_paths
    from fastscarlet.space import random_genome, validate_genome
    from fastscarlet.train.checkpoint import load_supernet

    _at_least_one(args, "--paths", "--calib-batches", "--val-batches", "--batch-size")
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
    # Recalibration reads training images with the eval transform (no augmentation noise).
    calib = build_loader(
        root, "train", backend, batch_size=batch, augment=False, shuffle=True,
        **common,
    )  # fmt: skip
    val = build_loader(root, "val", backend, batch_size=batch, **common)
    outputs = cfg.space.num_classes
    for loader, split in ((calib, "training"), (val, "validation")):
        if loader.num_classes > outputs:
            raise ValueError(
                f"the {split} data at {root} has {loader.num_classes} classes, but the checkpoint's "
                f"network has {outputs} outputs (its run's space.num_classes): pass --data with "
                "the dataset it was trained on"
            )
    _note_short("--calib-batches", args.calib_batches, calib, "training")
    _note_short("--val-batches", args.val_batches, val, "validation")
    results = []
    progress = tqdm(genomes, desc="paths", unit="path", disable=args.no_progress, file=sys.stderr)
    for g in progress:  # one path at a time: recalibrate its BN, then evaluate it
        results += evaluate_paths(model, [g], calib, val, args.calib_batches, args.val_batches)
        progress.set_postfix(top1=f"{results[-1].top1:.2f}")
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
