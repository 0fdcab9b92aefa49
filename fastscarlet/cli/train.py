"""``fastscarlet train``: train a supernet from a YAML recipe (torchrun for several processes)."""

from __future__ import annotations

import argparse
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
    p = Path(name)
    if p.is_file():
        return p
    for cand in (_REPO_CONFIGS / name, _REPO_CONFIGS / f"{name}.yaml"):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"config file not found: {name}")


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
    cfg = load_config(resolve_config_path(args.config), list(args.overrides), values)
    trainer = SupernetTrainer(cfg, resume=args.resume)
    summary = trainer.fit()
    if trainer.dist.is_main:
        print(
            f"done: step {summary['step']}, epoch {summary['epoch']}, "
            f"loss {summary.get('loss', float('nan')):.4f}, checkpoint {trainer.out / 'last.pt'}"
        )
    return 0
