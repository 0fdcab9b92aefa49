"""``fastscarlet export``: a subnet of a trained supernet as a PyTorch file, ONNX or timm model.

    fastscarlet export --supernet OUT/last.pt --front SEARCH/ --index 0 --format onnx --out a.onnx
    fastscarlet export --supernet OUT/last.pt --readable E3K7-E6K5-... --format torch --out a.pt \\
        --data ../shared/data/cifar10 --calib-batches 20

The subnet keeps the supernet's weights; ``--identity`` says what identity layers become (``fold``,
the default: the LET folded into the next 1x1 conv where exact, kept elsewhere, the supernet path's
function; ``let``: kept as 1x1 convs; ``plain``: a plain identity, what the papers retrain).
``--calib-batches`` recomputes the BN statistics for this subnet first.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "export a subnet of a trained supernet (PyTorch file, ONNX, timm)"

FORMATS = ("torch", "onnx", "timm")
IDENTITY = {"plain": "identity", "let": "let", "fold": "fold"}  # CLI word -> Network mode


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--supernet", required=True, help="OUT/last.pt of `fastscarlet train`")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--genome", help="choice indices, e.g. 0,3,12,...")
    which.add_argument("--readable", help="e.g. E3K7-E6K5-...-ID-E6K7SE")
    which.add_argument("--arch-def", help="arch-def JSON (a string, or a file holding it)")
    which.add_argument("--front", help="a `fastscarlet search` output folder (its front.json)")
    parser.add_argument("--index", type=int, default=0, help="element of front.json (0-based)")
    parser.add_argument("--format", required=True, help="torch, onnx or timm")
    parser.add_argument("--out", required=True, help="output file")
    parser.add_argument(
        "--identity", default="fold", help="identity layers: fold (default), let or plain"
    )
    parser.add_argument("--resolution", type=int, help="input size (default: the run's)")
    parser.add_argument("--data", help="dataset folder for --calib-batches (default: the run's)")
    parser.add_argument("--calib-batches", type=int, help="recalibrate BN on this many batches")
    parser.add_argument("--batch-size", type=int, help="calibration batch (default: the run's)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (17 or newer)")


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise ValueError(f"{flag} {text!r} is not a comma-separated list of integers") from None


def front_genome(folder: str | Path, index: int) -> list[int]:
    """Element ``index`` of ``folder/front.json`` (a list of ``{"genome": [...], ...}``)."""
    path = Path(folder) / "front.json"
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"--front {folder}: no such folder")
    if not path.is_file():
        raise FileNotFoundError(
            f"--front {folder} has no front.json (pass the output folder of `fastscarlet search`)"
        )
    try:
        front = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    if not isinstance(front, list) or not front:
        raise ValueError(f"{path} holds no architectures (expected a non-empty JSON list)")
    if not 0 <= index < len(front):
        raise ValueError(
            f"--index {index} is out of range: {path} has {len(front)} architectures "
            f"(indices 0..{len(front) - 1})"
        )
    item = front[index]
    if not isinstance(item, dict) or "genome" not in item:
        raise ValueError(f"{path}: element {index} has no 'genome'")
    return item["genome"]


def select_genome(args: argparse.Namespace, space):
    """The genome the arguments name, validated against ``space``."""
    from fastscarlet.space import from_arch_def, from_readable, validate_genome

    if args.genome is not None:
        return validate_genome(space, _ints(args.genome, "--genome"))
    if args.readable is not None:
        return from_readable(space, args.readable)
    if args.arch_def is not None:
        text = args.arch_def
        if not text.lstrip().startswith("[") and Path(text).is_file():
            text = Path(text).read_text()
        return from_arch_def(space, text)
    return validate_genome(space, front_genome(args.front, args.index))


def _calibrate(args: argparse.Namespace, sub, cfg, resolution: int, device) -> int:
    from fastscarlet.data import build_loader
    from fastscarlet.evaluate import recalibrate_bn

    if args.calib_batches < 1:
        raise ValueError(f"--calib-batches must be at least 1, got {args.calib_batches}")
    dc = cfg.data
    root = args.data or dc.root
    if not root:
        raise ValueError("--calib-batches needs --data PATH (the run has no data.root)")
    batch = args.batch_size or dc.eval_batch_size
    # Training images with the eval transform, as `fastscarlet eval` recalibrates.
    backend = dc.backend if dc.backend != "synthetic" else "torch"
    loader = build_loader(
        root, "train", backend, batch_size=batch, image_size=resolution, device=device,
        num_workers=dc.num_workers, recipe=dc.recipe, augment=False, shuffle=True, seed=0,
    )  # fmt: skip
    sub.to(device)
    seen = recalibrate_bn(sub, loader, args.calib_batches)
    sub.cpu().eval()
    return seen


def run(args: argparse.Namespace) -> int:
    if args.format not in FORMATS:
        raise ValueError(f"unknown format {args.format!r}; expected one of {', '.join(FORMATS)}")
    if args.identity not in IDENTITY:
        raise ValueError(
            f"unknown --identity {args.identity!r}; expected one of {', '.join(IDENTITY)}"
        )
    if args.data and args.calib_batches is None:
        raise ValueError("--data is for BN recalibration: add --calib-batches N")
    from fastscarlet.env import resolve_device
    from fastscarlet.space import to_readable
    from fastscarlet.train.checkpoint import load_supernet

    device = resolve_device(args.device)
    supernet = load_supernet(args.supernet, map_location="cpu")
    space, cfg = supernet.space, supernet.config
    genome = select_genome(args, space)
    resolution = args.resolution or cfg.data.image_size
    mode = IDENTITY[args.identity]
    sub = supernet.subnet(genome, identity=mode).eval()
    del supernet
    meta = {"supernet": str(args.supernet), "calib_batches": 0}
    if args.calib_batches is not None:
        meta["calib_images"] = _calibrate(args, sub, cfg, resolution, device)
        meta["calib_batches"] = args.calib_batches
    out = Path(args.out)
    what = f"{space.name} {to_readable(space, genome)}, {resolution}x{resolution}, identity {args.identity}"
    if args.format == "torch":
        from fastscarlet.export import save

        save(sub, out, resolution=resolution, identity=mode, meta=meta)
        print(f"wrote {out} ({what}); load it with fastscarlet.export.load")
    elif args.format == "onnx":
        from fastscarlet.export import export_onnx

        report = export_onnx(sub, out, resolution, opset=args.opset)
        print(
            f"wrote {out} ({what}; opset {report['opset']}, {report['exporter']} exporter, "
            f"dynamic batch); onnxruntime vs PyTorch max abs diff {report['max_abs_diff']:.2e}"
        )
    else:
        from fastscarlet.export import save_timm

        spec_path, weights = save_timm(sub, out)
        spec = json.loads(spec_path.read_text())
        print(f"wrote {spec_path} and {weights} ({what}; timm {spec['model_class']})")
        print(f"arch_def = {json.dumps(spec['arch_def'])}")
    return 0
