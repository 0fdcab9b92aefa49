"""``fastscarlet prepare``: ImageFolder trees from ImageNet val, Fashion-MNIST and CIFAR-10 files."""

from __future__ import annotations

import argparse

HELP = "make ImageFolder trees: sort ImageNet val into class folders, Fashion-MNIST, CIFAR-10"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dataset", metavar="DATASET")
    sub.required = True

    inet = sub.add_parser(
        "imagenet-val",
        help="sort the flat ILSVRC2012_val_*.JPEG files into <wnid>/ folders",
        description="Sort the ImageNet validation images into <wnid>/ class folders (what the "
        "authors' 51k-line preprocess_val_dataset.sh does). The labels file may be Kaggle's "
        "LOC_val_solution.csv, that shell script, '<file> <wnid>' lines, '<file> <label>' lines "
        "with --synsets, or the devkit's ILSVRC2012_validation_ground_truth.txt with --meta.",
    )
    inet.add_argument("val_dir", help="folder holding ILSVRC2012_val_*.JPEG")
    inet.add_argument("--labels", required=True, help="labels file (see above)")
    inet.add_argument("--synsets", help="wnids one per line: line i is label i (or ID i+1)")
    inet.add_argument("--meta", help="the devkit's data/meta.mat (for the ground-truth IDs)")
    inet.add_argument("--out", help="where the class folders go (default: val_dir itself)")
    inet.add_argument("--mode", choices=("move", "copy", "symlink"), default="move")
    inet.add_argument("--dry-run", action="store_true", help="report what would happen only")

    for name, what, default_src in (
        ("fashion-mnist", "the Fashion-MNIST IDX files", "/usr/share/datasets/fashion-mnist"),
        ("cifar10", "CIFAR-10 python or binary batches", None),
    ):
        p = sub.add_parser(
            name,
            help=f"write train/ and test/ JPEG trees from {what}",
            description=f"Write out/train/<class>/ and out/test/<class>/ image trees from {what}.",
        )
        if default_src:
            p.add_argument(
                "--src",
                default=default_src,
                help=f"folder of the IDX files (default {default_src}, Debian's "
                "dataset-fashion-mnist package)",
            )
        else:
            p.add_argument(
                "--src", required=True, help="cifar-10-batches-py or cifar-10-batches-bin folder"
            )
        p.add_argument("--out", required=True, help="output folder (gets train/ and test/)")
        p.add_argument("--format", choices=("jpeg", "png"), default="jpeg")
        p.add_argument("--quality", type=int, default=95, help="JPEG quality (default 95)")
        p.add_argument("--force", action="store_true", help="replace existing train/ and test/")


def run(args: argparse.Namespace) -> int:
    from fastscarlet.data import prepare

    if args.dataset == "imagenet-val":
        labels = prepare.read_imagenet_val_labels(args.labels, synsets=args.synsets, meta=args.meta)
        report = prepare.sort_imagenet_val(
            args.val_dir, labels, args.out, mode=args.mode, dry_run=args.dry_run
        )
        print(("dry run: " if args.dry_run else "") + report.summary())
        return 0 if not report.missing else 1
    if not 1 <= args.quality <= 100:
        raise ValueError(f"--quality must be in 1..100, got {args.quality}")
    make = (
        prepare.prepare_fashion_mnist
        if args.dataset == "fashion-mnist"
        else prepare.prepare_cifar10
    )
    try:
        counts = make(args.src, args.out, fmt=args.format, quality=args.quality, force=args.force)
    except FileExistsError as exc:
        raise ValueError(str(exc)) from None
    for split, per_class in counts.items():
        print(f"{args.out}/{split}: {sum(per_class.values())} images in {len(per_class)} classes")
    return 0
