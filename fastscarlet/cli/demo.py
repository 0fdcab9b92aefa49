"""``fastscarlet demo``: the whole pipeline on real data, end to end, inside a time budget.

Stages (each timed; ``DIR`` defaults to ``runs/demo``)::

    data     Fashion-MNIST as an ImageFolder tree (from Debian's dataset-fashion-mnist), or --data
    train    a strict-fairness SCARLET supernet sized for the machine (configs/demo_cpu.yaml:
             width 0.25 on a CPU; configs/demo_gpu.yaml: full width on a GPU), as many steps as
             the budget's share allows (measured on the machine first)
    search   NSGA-II over accuracy (BN-recalibrated supernet paths) and MAdds
    export   the chosen architectures of the front (most accurate, cheapest, the knee),
             trained in the time left (from scratch, as the papers retrain the architectures
             they pick; --export-weights supernet fine-tunes the inherited weights instead), BN
             recalibrated, as PyTorch files and ONNX models; their top-1 on the whole test split
             computed from the exported PyTorch files
    report   DIR/report.html, DIR/front.png, DIR/summary.json; the front as a table

The search scores architectures on a fixed subset of the test split (the demo has no other held-out
images); the exported models' accuracy is then measured on the whole test split, so the reported
number carries the small optimism of having picked among a handful of front members.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HELP = "run the whole pipeline (train, search, export, report) on real data inside a time budget"

FASHION_MNIST_SRC = "/usr/share/datasets/fashion-mnist"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# Shares of the budget (after data preparation) per stage: training gets the most.
SHARES = {"train": 0.45, "search": 0.25, "export": 0.30}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        help="an ImageFolder tree with train/ and test/ (or val/); default: Fashion-MNIST, "
        "prepared under runs/fashion-mnist",
    )
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--budget-minutes", type=float, default=8.0,
        help="time for data, training, search and export (default 8; the report comes after)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int,
        help="torch threads (default: the cores not used by the loader's worker)",
    )  # fmt: skip
    parser.add_argument(
        "--export-weights", choices=("scratch", "supernet"), default="scratch",
        help="the chosen architectures' starting weights before their training in the export "
        "stage: fresh (default; as the papers retrain) or inherited from the supernet (measured "
        "worse at the demo's scale: benchmarks/RESULTS.md)",
    )  # fmt: skip
    parser.add_argument("--force", action="store_true", help="delete and replace an existing DIR")


def run(args: argparse.Namespace) -> int:
    import torch

    from fastscarlet.env import resolve_device

    if not args.budget_minutes > 0:
        raise ValueError(f"--budget-minutes must be positive, got {args.budget_minutes}")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        if not args.force:
            raise ValueError(
                f"{out} is not empty: pass --force to replace it, or choose another --out"
            )
        import shutil

        shutil.rmtree(out)
    device = resolve_device(args.device)
    recipe = CONFIGS / ("demo_gpu.yaml" if device.type == "cuda" else "demo_cpu.yaml")
    workers = 1 if device.type == "cpu" else 8
    threads = args.threads or max(1, (os.cpu_count() or 2) - workers)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(args, out, device, recipe, workers, threads)
    finally:
        torch.set_num_threads(before)  # a caller's process (a test, a notebook) keeps its own


def _run(
    args: argparse.Namespace, out: Path, device: Any, recipe: Path, workers: int, threads: int
) -> int:
    budget = args.budget_minutes * 60.0
    clock = Clock()
    print(f"fastscarlet demo: {device}, {threads} torch thread(s), budget {budget / 60:.1f} min")

    with clock("data"):
        root = Path(args.data) if args.data else ensure_fashion_mnist(Path("runs/fashion-mnist"))
        fitted = data_values(root, device, recipe)
    left = budget - clock.total()

    with clock("train"):
        ckpt = train_supernet(root, fitted, out / "supernet", recipe, device, workers,
                              args.seed, SHARES["train"] * left)  # fmt: skip
    with clock("search"):
        search_dir = out / "search"
        result, space, image_size = search(ckpt, search_dir, device, args.seed,
                                           budget - clock.total() - SHARES["export"] * left)  # fmt: skip
    with clock("export"):
        chosen = export_chosen(ckpt, result, out / "models", device, budget - clock.total(),
                               weights=args.export_weights, seed=args.seed)  # fmt: skip
    with clock("report"):
        summary = write_report(out, root, device, result, space, image_size, chosen, clock)
    summary["seconds"] = dict(clock.seconds)  # with the report's own time (the page has the rest)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print_front(summary)
    print(f"report: {(out / 'report.html').resolve()}")
    return 0


class Clock:
    """Seconds per stage (``with clock("train"): ...``)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t0 = time.perf_counter()

    def __call__(self, stage: str):
        clock = self

        class _Stage:
            def __enter__(self) -> None:
                self.t = time.perf_counter()
                print(f"\n== {stage} ==")

            def __exit__(self, *exc: object) -> None:
                clock.seconds[stage] = round(time.perf_counter() - self.t, 2)

        return _Stage()

    def total(self) -> float:
        return time.perf_counter() - self._t0


# -- data ------------------------------------------------------------------------------------------


def ensure_fashion_mnist(root: Path) -> Path:
    """``root`` with train/ and test/ JPEG trees, written once from the Debian package's files."""
    if (root / "train").is_dir() and (root / "test").is_dir():
        print(f"data: {root} (prepared before)")
        return root
    from fastscarlet.data.prepare import prepare_fashion_mnist

    src = Path(FASHION_MNIST_SRC)
    if not src.is_dir():
        raise FileNotFoundError(
            f"Fashion-MNIST is not installed ({src} is missing). Install it with:\n"
            "    sudo apt-get install -y dataset-fashion-mnist\n"
            "(bash scripts/demo.sh does this), or pass --data PATH to any ImageFolder tree"
        )
    print(f"data: writing Fashion-MNIST from {src} to {root} (once)")
    prepare_fashion_mnist(src, root, force=True)
    return root


def inspect_data(root: Path) -> tuple[int, int, int]:
    """(classes, training images, side of the first training image) of an ImageFolder tree."""
    from PIL import Image

    from fastscarlet.data import resolve_split, scan_image_folder

    files = scan_image_folder(resolve_split(root, "train"), verify="none")
    if len(files.classes) < 2:
        raise ValueError(
            f"{resolve_split(root, 'train')} has {len(files.classes)} class folder(s); "
            "a classifier needs at least 2"
        )
    with Image.open(files.paths[0]) as im:
        side = min(im.size)
    return len(files.classes), len(files), side


def data_values(root: Path, device: Any, recipe: Path, paths_per_step: int = 13) -> dict:
    """Config values that fit the recipe to the data: its classes, an input size from its images
    (their own size up to 64 on a CPU, 224 on a GPU; larger images are resized by the imagenet
    recipe) and a batch small enough for two strict-fairness steps per epoch."""
    from fastscarlet.config import load_config

    classes, images, side = inspect_data(root)
    cap = 224 if device.type == "cuda" else 64
    size = min(side, cap)
    batch = load_config(recipe).data.batch_size
    batch = max(1, min(batch, images // (2 * paths_per_step)))
    values: dict[str, Any] = {
        "space.num_classes": classes,
        "data.image_size": size,
        "data.batch_size": batch,
    }
    if side > cap:
        values["data.recipe"] = "imagenet"
    return values


# -- train -----------------------------------------------------------------------------------------


def probe_step_seconds(cfg: Any, device: Any, steps: int = 3) -> float:
    """Seconds per strict-fairness step of ``cfg``'s supernet on this machine (synthetic batches;
    the median of ``steps`` after one warm-up)."""
    import torch

    from fastscarlet.nn import SuperNet
    from fastscarlet.space import build_space
    from fastscarlet.train.samplers import make_sampler

    space = build_space(cfg.space)
    net = SuperNet(space, zero_init_residual=True, let_init="identity").to(device)
    fmt = torch.channels_last if cfg.data.channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    sampler = make_sampler(cfg.sampler.name, space, seed=0)
    b, s = cfg.data.batch_size, cfg.data.image_size
    x = torch.randn(b, 3, s, s, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, space.num_classes, (b,), device=device)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        opt.zero_grad()
        for g in sampler.sample():
            torch.nn.functional.cross_entropy(net(x, g), y).backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times[1:])[len(times[1:]) // 2]


def train_supernet(
    root: Path, fitted: dict[str, Any], out: Path, recipe: Path, device: Any, workers: int,
    seed: int, seconds: float,
) -> Path:  # fmt: skip
    """Train for ``seconds``: as many steps as the speed measured here fits (at most 30 epochs),
    shortened on the way if the machine turns out slower (the trainer's ``deadline``)."""
    from fastscarlet.config import load_config
    from fastscarlet.train.trainer import SupernetTrainer

    t0 = time.monotonic()
    values = {
        **fitted,
        "data.root": str(root),
        "data.num_workers": workers,
        "train.out": str(out),
        "train.seed": seed,
        "train.device": device.type,
    }
    cfg = load_config(recipe, values=values)
    step_s = probe_step_seconds(cfg, device)
    planned = max(10, int((seconds - (time.monotonic() - t0)) / step_s))
    trainer = SupernetTrainer(load_config(recipe, values={**values, "train.max_steps": planned}))
    epochs_cap = 30 * trainer.steps_per_epoch
    if planned > epochs_cap:
        trainer = SupernetTrainer(
            load_config(recipe, values={**values, "train.max_steps": epochs_cap})
        )
    print(
        f"train: {step_s:.2f} s per step measured: {trainer.total_steps} steps "
        f"({trainer.total_steps / trainer.steps_per_epoch:.2f} epochs) in {seconds / 60:.1f} min"
    )
    trainer.fit(deadline=t0 + seconds)
    return out / "last.pt"


# -- search ----------------------------------------------------------------------------------------


def search_loaders(supernet: Any, root: Path, device: Any, seed: int, val_images: int = 2000):
    """(calibration, evaluation) loaders: training images with the eval transform in one fixed
    order, and a fixed subset of the held-out split."""
    from fastscarlet.data import build_loader

    dc = supernet.config.data
    common = dict(
        image_size=dc.image_size, device=device, num_workers=0, recipe=dc.recipe, seed=seed,
        batch_size=dc.eval_batch_size, channels_last=dc.channels_last,
    )  # fmt: skip
    calib = build_loader(
        root, "train", "torch", augment=False, shuffle=True, drop_last=False, **common
    )
    val = build_loader(root, "val", "torch", subset=val_images, **common)
    return calib, val


CALIB_BATCHES = 4  # 1,000 training images per BN recalibration (at eval batch 250)


def search(ckpt: Path, out: Path, device: Any, seed: int, seconds: float):
    """NSGA-II over (acc, madds); population and generations sized to ``seconds``."""
    import numpy as np

    from fastscarlet.search import AccuracyEvaluator, CostEvaluator, Search, SearchConfig, combine
    from fastscarlet.space import random_genome
    from fastscarlet.train.checkpoint import load_supernet

    supernet = load_supernet(ckpt, map_location=device)
    space = supernet.space
    calib, val = search_loaders(supernet, Path(supernet.config.data.root), device, seed)
    accuracy = AccuracyEvaluator(supernet, calib, val, CALIB_BATCHES, None, progress=True)
    evaluate = combine(accuracy, CostEvaluator(space, supernet.config.data.image_size))
    # size the search from the cost of evaluating a few random genomes here
    rng = np.random.default_rng(seed + 1)
    probe = [random_genome(space, rng) for _ in range(4)]
    t = time.perf_counter()
    accuracy(probe)
    per_genome = (time.perf_counter() - t) / len(probe)
    evaluations = max(24, int(seconds / per_genome))
    population = int(np.clip(evaluations // 8, 8, 32))
    generations = max(1, evaluations // population - 1)
    print(f"search: {per_genome:.2f} s per architecture: population {population}, "
          f"{generations} generations")  # fmt: skip
    cfg = SearchConfig(population=population, generations=generations, seed=seed)
    result = Search(space, evaluate, [("acc", "max"), ("madds", "min")], cfg).run(out)
    return result, space, supernet.config.data.image_size


# -- export ----------------------------------------------------------------------------------------


def pick(records: list[Any]) -> dict[str, Any]:
    """The front members to export: the most accurate, the cheapest and the knee (the member
    farthest from the line between those two in normalised (madds, acc))."""
    best = max(records, key=lambda r: (r.values["acc"], -r.values["madds"]))
    cheap = min(records, key=lambda r: (r.values["madds"], -r.values["acc"]))
    chosen = {"most accurate": best}
    if cheap.genome != best.genome:
        chosen["cheapest"] = cheap
        m0, m1 = cheap.values["madds"], best.values["madds"]
        a0, a1 = cheap.values["acc"], best.values["acc"]

        def gap(r: Any) -> float:
            x = (r.values["madds"] - m0) / max(m1 - m0, 1e-9)
            y = (r.values["acc"] - a0) / max(a1 - a0, 1e-9)
            return y - x

        rest = [r for r in records if r.genome not in (best.genome, cheap.genome)]
        if rest:
            knee = max(rest, key=gap)
            if gap(knee) > 0:
                chosen["knee"] = knee
    return chosen


def finetune(net: Any, loader: Any, seconds: float, lr: float = 0.1) -> int:
    """Train the standalone network for ``seconds``: SGD with Nesterov
    momentum, a cosine schedule over the steps that steps 2..11 measure (the first waits for the
    loader's workers), label smoothing 0.1.
    Returns the steps taken."""
    import math

    import torch

    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-5)  # fmt: skip
    t0, step, total = time.perf_counter(), 0, None
    t1 = t0  # after the first step: the loader's workers have started
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        for x, y in loader:
            if total is not None and step >= total:
                return step
            frac = 0.0 if total is None else step / total
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * frac))
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x), y, label_smoothing=0.1).backward()
            opt.step()
            step += 1
            if step == 1:
                t1 = time.perf_counter()
            elif step == 11:  # plan the schedule from the speed of steps 2..11
                per_step = (time.perf_counter() - t1) / 10
                left = seconds - (time.perf_counter() - t0)
                total = max(11, step + int(left / per_step))
        epoch += 1


def export_chosen(
    ckpt: Path, result: Any, out: Path, device: Any, seconds: float,
    weights: str = "scratch", seed: int = 0,
) -> list[dict[str, Any]]:  # fmt: skip
    """The picked front members: trained in the time left from fresh weights (``weights=
    "scratch"``, as the papers retrain the architectures they pick) or from the supernet's
    (``"supernet"``), BN recalibrated, exported as PyTorch and ONNX files, and measured on the
    whole test split from the exported PyTorch file."""
    import copy

    import torch

    from fastscarlet import export
    from fastscarlet.data import build_loader
    from fastscarlet.evaluate import evaluate, recalibrate_bn
    from fastscarlet.nn.network import build_network
    from fastscarlet.space import to_readable
    from fastscarlet.train.checkpoint import load_supernet

    supernet = load_supernet(ckpt, map_location=device)
    space, dc = supernet.space, supernet.config.data
    root = Path(dc.root)
    fmt = torch.channels_last if dc.channels_last else torch.contiguous_format
    calib, _ = search_loaders(supernet, root, device, seed=0)
    common = dict(image_size=dc.image_size, device=device, recipe=dc.recipe)
    train = build_loader(root, "train", "torch", batch_size=dc.batch_size, num_workers=1,
                         augment=dc.augment, channels_last=dc.channels_last, **common)  # fmt: skip
    test = build_loader(root, "val", "torch", batch_size=dc.eval_batch_size, num_workers=0,
                        **common)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    chosen = pick(result.front_records())
    t0 = time.perf_counter()
    rows = []
    for i, (role, rec) in enumerate(chosen.items()):
        name = role.replace(" ", "_")
        if weights == "supernet":
            net = supernet.subnet(rec.genome, identity="fold")
        else:
            torch.manual_seed(seed + i)
            net = build_network(space, rec.genome, identity="fold", zero_init_residual=True)
        net = net.to(device=device, memory_format=fmt).train()
        share = (seconds - (time.perf_counter() - t0)) / (len(chosen) - i)
        steps = finetune(net, train, 0.8 * share)  # the rest: recalibration, export, test
        recalibrate_bn(net, calib, CALIB_BATCHES)
        net = copy.deepcopy(net).cpu().eval().to(memory_format=torch.contiguous_format)
        pt, onnx = out / f"{name}.pt", out / f"{name}.onnx"
        meta = {"role": role, "weights": weights, "finetune_steps": steps,
                "calib_images": CALIB_BATCHES * 250}  # fmt: skip
        export.save(net, pt, resolution=dc.image_size, meta=meta)
        export.export_onnx(net, onnx, dc.image_size)
        loaded = export.load(pt).to(device)  # the file, rebuilt without the supernet
        acc = evaluate(loaded, test)
        print(f"export: {role}: {steps} training steps from {weights} weights, top-1 {acc.top1:.2f}% on "
              f"{acc.images} test images ({pt})")  # fmt: skip
        rows.append(
            {
                "role": role,
                "genome": list(rec.genome),
                "readable": to_readable(space, rec.genome),
                "acc": acc.top1,
                "search_acc": rec.values["acc"],
                "madds": int(rec.values["madds"]),
                "params": int(sum(p.numel() for p in loaded.parameters())),
                "weights": weights,
                "finetune_steps": steps,
                "files": [str(pt), str(onnx)],
            }
        )
    return rows


# -- report ----------------------------------------------------------------------------------------


def write_report(
    out: Path, root: Path, device: Any, result: Any, space: Any, image_size: int,
    chosen: list[dict[str, Any]], clock: Clock,
) -> dict[str, Any]:  # fmt: skip
    import shutil

    from fastscarlet.cli import _report
    from fastscarlet.cost import CostModel
    from fastscarlet.space import to_readable

    cost = CostModel(space, image_size)
    front = []
    for r in result.front_records():
        c = cost(r.genome)
        front.append(
            {
                "genome": list(r.genome),
                "readable": to_readable(space, r.genome),
                "acc": r.values["acc"],
                "madds": int(r.values["madds"]),
                "params": int(c.params),
            }
        )
    best = max(chosen, key=lambda row: row["acc"])
    summary = {
        "best": {k: best[k] for k in ("genome", "readable", "acc", "madds", "params")},
        "front": front,
        "exported": chosen,
        "seconds": dict(clock.seconds),
        "data": str(root.resolve()),
        "device": str(device),
        "command": " ".join(["fastscarlet", *sys.argv[1:]]) if sys.argv else "fastscarlet demo",
        "versions": _report.versions(),
    }
    shutil.copyfile(out / "search" / "front.png", out / "front.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "report.html").write_text(_report.render(summary, result))
    return summary


def print_front(summary: dict[str, Any]) -> None:
    print(f"\nfront ({len(summary['front'])} architectures; search top-1 on the held-out subset):")
    print(f"{'#':>3} {'top-1':>7} {'MAdds':>9} {'params':>9}  architecture")
    for i, f in enumerate(summary["front"]):
        print(f"{i:>3} {f['acc']:>6.2f}% {f['madds'] / 1e6:>8.2f}M {f['params'] / 1e6:>8.3f}M  "
              f"{f['readable']}")  # fmt: skip
    b = summary["best"]
    print(f"best exported: top-1 {b['acc']:.2f}% on the test split, {b['madds'] / 1e6:.2f}M MAdds")
