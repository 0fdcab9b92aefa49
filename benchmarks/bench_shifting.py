"""Supernet Shifting on a CPU: local ranking of the top-10 and transfer to Fashion-MNIST.

    python benchmarks/bench_shifting.py                       # ~45 min on 2 cores shared with other jobs
    python benchmarks/bench_shifting.py --work /tmp/bs --json benchmarks/results/shifting_cpu.json

One command, five stages (each reuses its output in ``--work`` if it is already there):

1. **Supernet**: SCARLET at width 0.25 (stem stride 2, 32x32 CIFAR-10), uniform single-path
   sampling (SPOS, the shifting paper's stage 1), ``--supernet-steps`` steps of 64 images.
2. **Searches** (``fastscarlet search``): accuracy only, MAdds at most the median of random
   genomes (the paper's single objective under a FLOPs limit), population ``--population``,
   ``--generations``; once plain, once with ``--shift`` (the paper's 20 steps at lr 1e-4, on
   batches of ``--shift-batch``). Scores: BN recalibrated on 100 training images, top-1 on 500
   test images (50 a class).
3. **Stand-alone**: every architecture of the two top-10s trained from scratch (plain identity, as
   the papers retrain), ``--standalone-steps`` SGD steps of 64 images, the same init seed and data
   order for all, scored on the same 500 test images. This stands in for the ranking-study tool
   (``fastscarlet rank-study``, issue 18), which does not exist yet.
4. **Local Kendall tau** (tau-b) between supernet scores and stand-alone accuracy within each
   top-10: the plain search's (original supernet), the shifted search's as the search saw them
   (each genome scored right after its own shift steps), and the same ten re-scored by the original
   and by the final shifted supernet.
5. **Transfer**: the CIFAR-10 supernet searched on Fashion-MNIST with ``--shift --transfer-data``
   (``--transfer-lr``: a fresh classifier does not learn at 1e-4 in a few hundred updates) against a
   supernet trained from scratch on Fashion-MNIST on as many training images as the shift used,
   then searched plainly with the same settings. For each, the best architecture found: its
   supernet score and its stand-alone accuracy (same recipe as stage 3, on Fashion-MNIST).

Needs ../shared/data/cifar10 and Debian's dataset-fashion-mnist (``fastscarlet prepare``).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fastscarlet.cli import main as cli
from fastscarlet.config import config_from_dict
from fastscarlet.cost import CostModel
from fastscarlet.data import build_loader
from fastscarlet.evaluate import evaluate, evaluate_paths
from fastscarlet.nn.supernet import SuperNet
from fastscarlet.space import build_space, random_genome
from fastscarlet.train.checkpoint import load_supernet
from fastscarlet.train.optim import WarmupCosineLR, build_sgd
from fastscarlet.train.trainer import SupernetTrainer

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
EVAL_BATCH, CALIB_BATCHES, VAL_BATCHES = 100, 1, 5  # 100 calibration, 500 test images


def subset(src: Path, dst: Path, per_class: int) -> Path:
    """``dst/train`` -> all of ``src/train``; ``dst/test``: the first ``per_class`` test images of
    each class (symlinks)."""
    if (dst / "test").is_dir():
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "train").symlink_to((src / "train").resolve())
    for cls in sorted(p.name for p in (src / "test").iterdir()):
        d = dst / "test" / cls
        d.mkdir(parents=True)
        for f in sorted((src / "test" / cls).iterdir())[:per_class]:
            (d / f.name).symlink_to(f.resolve())
    return dst


def supernet_config(root: Path, out: Path, steps: int, seed: int) -> dict:
    return {
        "space": {
            "name": "scarlet", "num_classes": 10, "width": 0.25, "stem_stride": 2,
            "zero_init_residual": True, "let_init": "identity",
        },
        "sampler": {"name": "uniform"},  # SPOS, the shifting paper's stage 1
        "data": {
            "root": str(root), "recipe": "cifar", "image_size": 32, "batch_size": 64,
            "eval_batch_size": EVAL_BATCH, "num_workers": 1, "channels_last": True,
        },
        "optim": {"lr": 0.1, "nesterov": True, "weight_decay": 5e-5, "warmup_epochs": 0.05},
        "train": {
            "max_steps": steps, "seed": seed, "device": "cpu", "amp": "none", "log_every": 25,
            "checkpoint_every": 0, "out": str(out), "tensorboard": False, "progress": False,
        },
    }  # fmt: skip


def train_supernet(root: Path, out: Path, steps: int, seed: int) -> Path:
    if not (out / "last.pt").exists():
        SupernetTrainer(config_from_dict(supernet_config(root, out, steps, seed))).fit()
    return out / "last.pt"


def search(ckpt: Path, out: Path, args, *extra: str) -> list[dict]:
    if not (out / "archive.csv").exists():
        code = cli(
            [
                "search", "--supernet", str(ckpt), "--objectives", "acc",
                "--max-madds", str(args.max_madds), "--population", str(args.population),
                "--generations", str(args.generations), "--seed", str(args.seed),
                "--calib-batches", str(CALIB_BATCHES), "--eval-batches", str(VAL_BATCHES),
                "--batch-size", str(EVAL_BATCH), "--device", "cpu", "--no-progress",
                "--out", str(out), *extra,
            ]
        )  # fmt: skip
        assert code == 0, f"search into {out} failed"
    with open(out / "archive.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["feasible"] == "1"]
    for r in rows:
        r["genome"] = tuple(int(c) for c in r["genome"].split(","))
        r["acc"] = float(r["acc"])
    return sorted(rows, key=lambda r: (-r["acc"], r["genome"]))


def scores(net, genomes, root: Path, seed: int) -> dict[tuple, float]:
    common = dict(
        image_size=32, batch_size=EVAL_BATCH, num_workers=1, recipe="cifar", seed=seed
    )  # fmt: skip
    calib = build_loader(root, "train", augment=False, shuffle=True, **common)
    val = build_loader(root, "val", **common)
    accs = evaluate_paths(net, genomes, calib, val, CALIB_BATCHES, VAL_BATCHES)
    return {tuple(g): a.top1 for g, a in zip(genomes, accs)}


def standalone(space, genome, root: Path, steps: int, seed: int) -> float:
    """Top-1 (%) on the test subset after ``steps`` SGD steps of 64 augmented images from scratch."""
    torch.manual_seed(seed)
    net = SuperNet(space, let_init="identity", zero_init_residual=True)
    model = net.subnet(genome, identity="identity").to(memory_format=torch.channels_last)
    opt = build_sgd(model, 0.1, 0.9, True, 5e-5)
    sched = WarmupCosineLR(opt, steps, max(1, steps // 20))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    loader = build_loader(
        root, "train", batch_size=64, image_size=32, num_workers=1, recipe="cifar", seed=seed,
        channels_last=True,
    )  # fmt: skip
    model.train()
    step, epoch = 0, 0
    while step < steps:
        loader.set_epoch(epoch)
        for x, y in loader:
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step == steps:
                break
        epoch += 1
    val = build_loader(
        root, "val", batch_size=EVAL_BATCH, image_size=32, num_workers=1, recipe="cifar"
    )  # fmt: skip
    return evaluate(model, val, VAL_BATCHES).top1


def kendall(a: list[float], b: list[float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)  # tau-b (ties in either ranking)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", default="/tmp/bench_shifting", help="intermediate runs (reused)")
    ap.add_argument("--json", default="benchmarks/results/shifting_cpu.json")
    ap.add_argument("--supernet-steps", type=int, default=300)
    ap.add_argument("--population", type=int, default=10)
    ap.add_argument("--generations", type=int, default=2)
    ap.add_argument("--shift-batch", type=int, default=16)
    ap.add_argument("--standalone-steps", type=int, default=30)
    ap.add_argument("--transfer-lr", type=float, default=0.01)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)  # 2 cores shared with a data worker (and other jobs)
    work = Path(args.work)
    t0 = time.time()
    times: dict[str, float] = {}

    def lap(name: str) -> None:
        times[name] = round(time.time() - t0 - sum(times.values()), 1)
        print(f"[{time.time() - t0:7.0f} s] {name} done", flush=True)

    cifar = subset(CIFAR, work / "cifar", 50)
    space = build_space(config_from_dict(supernet_config(cifar, work, 1, 0)).space)
    rng = np.random.default_rng(args.seed)
    madds = CostModel(space, 32).batch(np.array([random_genome(space, rng) for _ in range(2000)]))[
        0
    ]
    args.max_madds = float(np.median(madds))

    # 1-2: the CIFAR-10 supernet, a plain and a shifted search
    sup = train_supernet(cifar, work / "supernet", args.supernet_steps, args.seed)
    lap("supernet")
    plain = search(sup, work / "search_plain", args)
    lap("search_plain")
    shift = ("--shift", "--shift-batch", str(args.shift_batch))
    shifted = search(sup, work / "search_shift", args, *shift)
    lap("search_shift")
    top_plain = [r["genome"] for r in plain[: args.top]]
    top_shift = [r["genome"] for r in shifted[: args.top]]
    original, final = load_supernet(sup), load_supernet(work / "search_shift" / "supernet.pt")
    by_original = {r["genome"]: r["acc"] for r in plain}
    missing = [g for g in top_shift if g not in by_original]
    by_original.update(scores(original, missing, cifar, args.seed))
    by_final = scores(final, sorted(set(top_plain) | set(top_shift)), cifar, args.seed)
    lap("rescore")

    # 3: stand-alone training of both top-10s
    alone = {
        g: standalone(space, g, cifar, args.standalone_steps, args.seed)
        for g in sorted(set(top_plain) | set(top_shift))
    }
    lap("standalone")
    seen_shift = {r["genome"]: r["acc"] for r in shifted}
    ranking = {
        "plain top-10, original supernet (the plain search's scores)": (top_plain, by_original),
        "plain top-10, final shifted supernet": (top_plain, by_final),
        "shifted top-10, scores the shifted search saw": (top_shift, seen_shift),
        "shifted top-10, original supernet": (top_shift, by_original),
        "shifted top-10, final shifted supernet": (top_shift, by_final),
    }
    taus = {
        name: {
            "tau": kendall([s[g] for g in gs], [alone[g] for g in gs]),
            "supernet": [s[g] for g in gs],
            "standalone": [alone[g] for g in gs],
        }
        for name, (gs, s) in ranking.items()
    }

    # 5: transfer to Fashion-MNIST against a supernet trained there from scratch
    from fastscarlet.data.prepare import prepare_fashion_mnist

    if not (work / "fmnist_full" / "test").is_dir():
        prepare_fashion_mnist(out=work / "fmnist_full")
    fmnist = subset(work / "fmnist_full", work / "fmnist", 50)
    lap("prepare_fmnist")
    transfer = search(
        sup, work / "search_transfer", args, *shift, "--transfer-data", str(fmnist),
        "--shift-lr", str(args.transfer_lr),
    )  # fmt: skip
    lap("search_transfer")
    state = torch.load(work / "search_transfer" / "checkpoint.pt", weights_only=True)
    images = int(state["evaluator"]["1"]["updates"]) * args.shift_batch  # the shift's images
    scratch_steps = max(1, round(images / 64))
    scratch_sup = train_supernet(fmnist, work / "supernet_fmnist", scratch_steps, args.seed)
    lap("supernet_fmnist")
    scratch = search(scratch_sup, work / "search_fmnist", args)
    lap("search_fmnist")
    fspace = load_supernet(scratch_sup).space
    best = {
        "transferred CIFAR-10 supernet (shift + transfer)": transfer[0],
        "Fashion-MNIST supernet from scratch (plain search)": scratch[0],
    }
    transfer_rows = {
        name: {
            "genome": list(r["genome"]),
            "supernet_acc": r["acc"],
            "standalone_acc": standalone(
                fspace, r["genome"], fmnist, args.standalone_steps, args.seed
            ),
        }
        for name, r in best.items()
    }
    lap("standalone_fmnist")

    result = {
        "command": " ".join(sys.argv),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "settings": {**vars(args), "scratch_supernet_steps": scratch_steps, "shift_images": images},
        "seconds": times,
        "kendall_tau_top10": taus,
        "transfer": transfer_rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    for name, t in taus.items():
        print(f"tau {t['tau']:+.3f}  {name}")
    for name, r in transfer_rows.items():
        print(f"{name}: supernet {r['supernet_acc']:.1f}%, stand-alone {r['standalone_acc']:.1f}%")


if __name__ == "__main__":
    main()
