"""``fastscarlet train``: train a supernet from a YAML recipe (torchrun for several processes).

Exit status: 0 when the run reached its end; 128 + the signal's number (130 for SIGINT, 143 for
SIGTERM) when a signal stopped it after writing ``last.pt``, so a scheduler sees an unfinished job
(the message says how to resume); 2 for bad input.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

HELP = "train a supernet (strict fairness, SPOS or NAO-V2 sampling) from a YAML recipe"

_REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML recipe, e.g. configs/cifar10.yaml")
    parser.add_argument("--data", help="dataset folder with train/ and val/ (or test/)")
    parser.add_argument("--out", help="output folder (checkpoints, logs, config)")
    parser.add_argument("--epochs", type=float, help="epochs to train")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--resume", action="store_true", help="continue OUT/last.pt exactly")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides: optim.lr=0.1"
    )


def resolve_config_path(name: str) -> Path:
    """``name`` as a path (from the current folder), else a bundled recipe's name (``cifar10``)."""
    from fastscarlet.config import describe_path

    p = Path(name)
    if p.is_file():
        return p
    for cand in (_REPO_CONFIGS / name, _REPO_CONFIGS / f"{name}.yaml"):
        if cand.is_file():
            return cand
    bundled = sorted(c.stem for c in _REPO_CONFIGS.glob("*.yaml"))
    raise FileNotFoundError(
        f"config file not found: {describe_path(name)}"
        + (
            f"; bundled recipes, usable by name from anywhere: {', '.join(bundled)}"
            if bundled
            else ""
        )
    )


def run(args: argparse.Namespace) -> int:
    from fastscarlet.config import load_config
    from fastscarlet.train.trainer import SupernetTrainer

    values = {}
    for flag, key in [
        ("data", "data.root"),
        ("out", "train.out"),
        ("epochs", "train.epochs"),
        ("max_steps", "train.max_steps"),
        ("seed", "train.seed"),
        ("device", "train.device"),
    ]:
        value = getattr(args, flag)
        if value is not None:
            values[key] = value
    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError(
            f"--max-steps must be at least 1, got {args.max_steps} (leave it out to train "
            "train.epochs epochs)"
        )
    if args.epochs is not None and not args.epochs > 0:
        raise ValueError(f"--epochs must be positive, got {args.epochs}")
    cfg = load_config(resolve_config_path(args.config), list(args.overrides), values)
    trainer = SupernetTrainer(cfg, resume=args.resume)
    summary = trainer.fit()
    stopped = summary.get("stopped_by_signal")
    if trainer.dist.is_main:
        checkpoint = trainer.out / "last.pt"
        if stopped is not None:
            print(
                f"stopped by {signal.Signals(stopped).name} at step {summary['step']} of "
                f"{trainer.total_steps}; saved {checkpoint}. To continue exactly, run the same "
                "command with --resume",
                file=sys.stderr,
            )
        else:
            print(
                f"done: step {summary['step']}, epoch {summary['epoch']}, "
                f"loss {summary.get('loss', float('nan')):.4f}, checkpoint {checkpoint}"
            )
    return 0 if stopped is None else 128 + int(stopped)
