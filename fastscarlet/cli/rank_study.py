"""``fastscarlet rank-study``: how well supernets trained under each rule rank architectures.

Stages (every one cached under ``--out DIR``; running the same command again continues where a kill
or a signal stopped it)::

    archs       K architectures stratified by MAdds (evaluate/ranking.py)   DIR/study.json
    supernets   one supernet per variant (below), trained by the recipe     DIR/supernets/<v>/
                for --supernet-epochs (every variant sees the same images)
    shift       Supernet Shifting variants: an NSGA-II search (acc, MAdds)   DIR/shift/<v>/
                with shifting, started from the base variant's supernet
    scores      each variant's BN-recalibrated accuracy of the K paths       DIR/scores/<v>.json
    standalone  each architecture trained from scratch for                  DIR/standalone/
                --standalone-epochs (train/standalone.py), in an order
                that spreads over the MAdds range (a partial run is usable)
    report      Kendall tau, Spearman rho, top-k precision and local tau     DIR/ranking.json,
                with bootstrap 95% intervals; supernet vs stand-alone plots  DIR/ranking.png,
                                                                             DIR/architectures.csv

The report is rewritten after every stand-alone architecture, so ``ranking.json`` always holds the
numbers measured so far (``complete`` says whether all ``K`` are in).

**Variants** (:data:`VARIANTS`; add an entry to study another rule):

* ``spos_uniform``: one uniformly random path per step (SPOS), LET on identity choices;
* ``fair_let``: FairNAS strict fairness (``m`` paths per step, every choice once), LET;
* ``fair_plain``: strict fairness with plain identity choices (``space.stabilizer=false``);
* ``nao_size``: NAO-V2's sampling in proportion to the path's parameter count, LET;
* ``fair_let_shift``: ``fair_let``'s supernet after Supernet Shifting (a short shifting search).

Everything else (space, width, data recipe, optimizer) comes from the recipe (``--config``, default
``cifar10``) and its ``KEY=VALUE`` overrides; each variant only changes the sampler, the
stabilizer or the shift.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HELP = "ranking fidelity: supernet scores vs stand-alone accuracy under each sampling rule"


@dataclass(frozen=True)
class Variant:
    """A supernet under study: config values over the recipe, or a shift of another variant."""

    description: str
    values: dict[str, Any] = field(default_factory=dict)
    shift_from: str | None = None


VARIANTS: dict[str, Variant] = {
    "spos_uniform": Variant("SPOS: uniform single path, LET", {"sampler.name": "uniform"}),
    "fair_let": Variant(
        "strict fairness, LET", {"sampler.name": "strict_fair", "space.stabilizer": True}
    ),
    "fair_plain": Variant(
        "strict fairness, plain identity (no LET)",
        {"sampler.name": "strict_fair", "space.stabilizer": False},
    ),
    "nao_size": Variant(
        "NAO-V2: paths sampled in proportion to their size, LET",
        {"sampler.name": "size_proportional"},
    ),
    "fair_let_shift": Variant(
        "strict fairness, LET, after Supernet Shifting", shift_from="fair_let"
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="dataset folder with train/ and test/")
    parser.add_argument("--archs", type=int, required=True, help="architectures to rank (K)")
    parser.add_argument("--out", required=True, help="output folder (also the cache)")
    parser.add_argument("--config", default="cifar10", help="supernet recipe (default cifar10)")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS),
        help=f"comma-separated, from {', '.join(VARIANTS)} (default: all)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--supernet-epochs", type=float, default=3.0)
    sa = parser.add_argument_group("stand-alone training")
    sa.add_argument("--standalone-epochs", type=float, default=5.0)
    sa.add_argument("--standalone-batch", type=int, default=64)
    sa.add_argument("--standalone-lr", type=float, default=0.1, help="for --standalone-batch")
    sa.add_argument("--train-images", type=int, help="a fixed random subset (default: all)")
    ev = parser.add_argument_group("evaluation")
    ev.add_argument(
        "--val-images", type=int,
        help="held-out images scoring the supernet paths (a fixed random subset; default: all)",
    )  # fmt: skip
    ev.add_argument(
        "--standalone-val-images", type=int,
        help="held-out images scoring the stand-alone networks (default: all)",
    )  # fmt: skip
    ev.add_argument("--calib-batches", type=int, default=20, help="BN recalibration batches")
    ev.add_argument("--topk", type=int, help="k of top-k precision (default: K/4)")
    ev.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    ev.add_argument(
        "--noise-archs", type=int, default=0,
        help="train this many architectures again with seed+1 (after all the others) to measure "
        "how well stand-alone accuracy ranks itself (DIR/noise.json); default 0",
    )  # fmt: skip
    sh = parser.add_argument_group("Supernet Shifting variants")
    sh.add_argument("--shift-population", type=int, default=16)
    sh.add_argument("--shift-generations", type=int, default=3)
    sh.add_argument("--shift-steps", type=int, default=20, help="steps per genome (paper: 20)")
    sh.add_argument("--shift-lr", type=float, default=1e-4, help="constant SGD lr (paper: 1e-4)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--only", choices=("standalone",),
        help="only train stand-alone networks, from the other end of the order: run it next to "
        "the full command (same arguments) to use a second core or device; each process skips "
        "what the other has finished",
    )  # fmt: skip
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="recipe overrides for every supernet, e.g. space.width=0.25",
    )  # fmt: skip


def _check_args(args: argparse.Namespace) -> list[str]:
    for flag in (
        "archs", "standalone_batch", "train_images", "val_images", "standalone_val_images",
        "calib_batches", "topk", "bootstrap", "shift_population", "shift_steps", "threads",
    ):  # fmt: skip
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if args.archs < 3:
        raise ValueError(f"--archs must be at least 3 for a ranking, got {args.archs}")
    for flag in ("supernet_epochs", "standalone_epochs", "standalone_lr", "shift_lr"):
        if not getattr(args, flag) > 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be positive")
    if not 0 <= args.noise_archs <= args.archs:
        raise ValueError(f"--noise-archs must be in 0..{args.archs}, got {args.noise_archs}")
    if args.shift_generations < 0:
        raise ValueError(f"--shift-generations must be >= 0, got {args.shift_generations}")
    if args.topk is not None and args.topk > args.archs:
        raise ValueError(f"--topk {args.topk} is more than --archs {args.archs}")
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        raise ValueError(
            f"unknown variant {unknown[:1] or ['(none)']}; known: {', '.join(VARIANTS)}"
        )
    # a shifted variant needs its base's supernet: train the base too, ahead of it
    for v in list(names):
        base = VARIANTS[v].shift_from
        if base is not None and base not in names:
            names.insert(names.index(v), base)
    return names


def run(args: argparse.Namespace) -> int:
    import torch

    from fastscarlet.cli.train import resolve_config_path
    from fastscarlet.config import load_config
    from fastscarlet.env import resolve_device

    variants = _check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.data).resolve()
    if not (root / "train").is_dir():
        raise FileNotFoundError(f"no train/ folder in --data {root}")
    device = resolve_device(args.device)
    cfg = load_config(
        resolve_config_path(args.config),
        list(args.overrides),
        {"data.root": str(root), "train.seed": args.seed, "train.epochs": args.supernet_epochs},
    )
    study = Study(args, cfg, Path(args.out), device)
    study.prepare()
    if args.only == "standalone":
        study.train_standalone(reverse=True)
        return 0
    print(
        f"rank study: {len(study.genomes)} architectures, variants {', '.join(variants)}, "
        f"out {study.out}"
    )
    for name in variants:
        if VARIANTS[name].shift_from is None:
            study.train_supernet(name)
    for name in variants:
        if VARIANTS[name].shift_from is not None:
            study.shift_supernet(name)
    for name in variants:
        study.score(name)
    study.report(variants)
    study.train_standalone(after_each=lambda: study.report(variants))
    if args.noise_archs:
        study.train_standalone(seed=args.seed + 1, limit=args.noise_archs)
    records = study.report(variants)
    print(f"ranking: {study.out / 'ranking.json'} ({records} variants)")
    return 0


class Study:
    """The stages of a ranking study, each cached under ``out``."""

    def __init__(self, args: argparse.Namespace, cfg: Any, out: Path, device: Any) -> None:
        from fastscarlet.space import build_space
        from fastscarlet.train.standalone import StandaloneConfig

        self.args, self.cfg, self.out, self.device = args, cfg, out, device
        self.space = build_space(cfg.space)
        self.standalone = StandaloneConfig(
            epochs=args.standalone_epochs,
            batch_size=args.standalone_batch,
            lr=args.standalone_lr,
            label_smoothing=cfg.optim.label_smoothing,
            train_images=args.train_images,
            recipe=cfg.data.recipe,
            image_size=cfg.data.image_size,
            seed=args.seed,
        )
        self.genomes: list[tuple[int, ...]] = []
        self.progress = not args.no_progress

    # -- settings and architectures ----------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """What the cached results depend on (a different value with the same --out is an error)."""
        a = self.args
        return {
            "archs": a.archs,
            "seed": a.seed,
            "config": self.cfg.to_dict(),
            "standalone": self.standalone.to_dict(),
            "standalone_val_images": a.standalone_val_images,
            "val_images": a.val_images,
            "calib_batches": a.calib_batches,
            "shift": {
                "population": a.shift_population,
                "generations": a.shift_generations,
                "steps": a.shift_steps,
                "lr": a.shift_lr,
            },
        }

    def prepare(self) -> None:
        """Pick the architectures (or read them from ``study.json``, checking the settings)."""
        import numpy as np

        from fastscarlet.cost import CostModel
        from fastscarlet.evaluate.ranking import stratified_by_madds
        from fastscarlet.space import to_readable

        path = self.out / "study.json"
        settings = self.settings()
        if path.is_file():
            saved = json.loads(path.read_text())
            if isinstance(saved["settings"].get("config"), dict):
                # a study written before a config key existed has that key's default
                from fastscarlet.config import config_from_dict

                old = saved["settings"]["config"]
                saved["settings"]["config"] = config_from_dict(old).to_dict()
            diffs = [
                f"{k}: {saved['settings'].get(k)!r} there, {v!r} now"
                for k, v in settings.items()
                if saved["settings"].get(k) != v
            ]
            if diffs:
                raise ValueError(
                    f"{self.out} holds a study with other settings ({'; '.join(diffs)[:600]}): "
                    "rerun it with its own command (docs/ranking.md), or choose another --out"
                )
            self.genomes = [tuple(a["genome"]) for a in saved["architectures"]]
            return
        rng = np.random.default_rng(self.args.seed)
        size = self.cfg.data.image_size
        self.genomes = stratified_by_madds(self.space, self.args.archs, rng, resolution=size)
        cost = CostModel(self.space, size)
        archs = [
            {
                "genome": list(g),
                "readable": to_readable(self.space, g),
                "madds": cost.madds(g),
                "params": cost.params(g),
            }
            for g in self.genomes
        ]
        self.out.mkdir(parents=True, exist_ok=True)
        _write_json(path, {"settings": settings, "architectures": archs})

    # -- supernets ----------------------------------------------------------------------------------

    def supernet_checkpoint(self, name: str) -> Path:
        if VARIANTS[name].shift_from is not None:
            return self.out / "shift" / name / "supernet.pt"
        return self.out / "supernets" / name / "last.pt"

    def train_supernet(self, name: str) -> None:
        from fastscarlet.config import config_from_dict
        from fastscarlet.train.trainer import SupernetTrainer

        folder = self.out / "supernets" / name
        if (folder / "done.json").is_file():
            return
        values = {
            **VARIANTS[name].values,
            "train.out": str(folder),
            "train.device": self.device.type,
            "train.tensorboard": False,
            "train.progress": self.progress,
        }
        cfg = config_from_dict(self.cfg.to_dict(), values=values)
        print(f"\n== supernet {name}: {VARIANTS[name].description} ==")
        t0 = time.perf_counter()
        trainer = SupernetTrainer(cfg, resume=(folder / "last.pt").is_file())
        summary = trainer.fit()
        if summary["stopped_by_signal"] is not None:
            raise SystemExit(128 + int(summary["stopped_by_signal"]))
        summary["seconds"] = round(time.perf_counter() - t0, 1)
        _write_json(folder / "done.json", summary)

    def shift_supernet(self, name: str) -> None:
        """Supernet Shifting: a short NSGA-II search over (acc, MAdds) whose evaluations fine-tune
        the base variant's supernet on each new genome's path first (search/shifting.py)."""
        from fastscarlet.data import build_loader
        from fastscarlet.search import CostEvaluator, Search, SearchConfig, ShiftingEvaluator
        from fastscarlet.search import combine as combine_evaluators
        from fastscarlet.train.checkpoint import load_checkpoint, load_supernet

        folder = self.out / "shift" / name
        if (folder / "done.json").is_file():
            return
        a, dc = self.args, self.cfg.data
        source_path = self.supernet_checkpoint(VARIANTS[name].shift_from)
        print(f"\n== supernet {name}: {VARIANTS[name].description} ==")
        t0 = time.perf_counter()
        supernet = load_supernet(source_path, map_location=self.device)
        source = load_checkpoint(source_path, map_location=self.device)
        source.pop("model", None)

        def train_loader(lane: int, lanes: int):
            return build_loader(
                dc.root, "train", "torch", batch_size=dc.batch_size, image_size=dc.image_size,
                crop_scale=(dc.crop_scale_min, 1.0), device=self.device,
                num_workers=dc.num_workers, rank=lane, world_size=lanes, seed=a.seed,
                recipe=dc.recipe,
            )  # fmt: skip

        calib, val = self.eval_loaders(a.val_images)
        shifter = ShiftingEvaluator(
            supernet, train_loader, calib, val, steps=a.shift_steps, lr=a.shift_lr,
            calib_batches=a.calib_batches, source=source, seed=a.seed,
            progress=self.progress,
        )  # fmt: skip
        config = SearchConfig(
            population=a.shift_population, generations=a.shift_generations, seed=a.seed,
            progress=self.progress, shift=True, **shifter.settings(),
        )  # fmt: skip
        evaluate = combine_evaluators(CostEvaluator(self.space, dc.image_size), shifter)
        search = Search(self.space, evaluate, [("acc", "max"), ("madds", "min")], config)
        result = search.run(out=folder, resume=(folder / "checkpoint.pt").is_file())
        _write_json(
            folder / "done.json",
            {
                "evaluated": len(result.archive),
                "updates": shifter.updates,
                "seconds": round(time.perf_counter() - t0, 1),
            },
        )

    # -- scores ---------------------------------------------------------------------------------

    def eval_loaders(self, val_images: int | None, calib: bool = True):
        """(calibration, held-out) loaders: calibration reads training images with the eval
        transform in one fixed shuffled order; the held-out split is a fixed random subset."""
        from fastscarlet.data import build_loader

        dc = self.cfg.data
        common = dict(
            image_size=dc.image_size, device=self.device, num_workers=dc.num_workers,
            recipe=dc.recipe, seed=self.args.seed, batch_size=dc.eval_batch_size,
        )  # fmt: skip
        val = build_loader(dc.root, "val", "torch", subset=val_images, **common)
        if not calib:
            return None, val
        train = build_loader(dc.root, "train", "torch", augment=False, shuffle=True, **common)
        return train, val

    def score(self, name: str) -> None:
        """Every architecture's path in the variant's supernet, BN recalibrated, on the held-out
        images (PopulationEvaluator)."""
        from fastscarlet.evaluate import PopulationEvaluator
        from fastscarlet.train.checkpoint import load_supernet
        from fastscarlet.train.standalone import genome_key

        path = self.out / "scores" / f"{name}.json"
        if path.is_file():
            return
        t0 = time.perf_counter()
        supernet = load_supernet(self.supernet_checkpoint(name), map_location=self.device)
        calib, val = self.eval_loaders(self.args.val_images)
        evaluator = PopulationEvaluator(
            supernet, calib, val, self.args.calib_batches, None, progress=self.progress
        )
        results = evaluator.evaluate(self.genomes)
        scores = {genome_key(g): _accuracy(r) for g, r in zip(self.genomes, results)}
        _write_json(path, {"seconds": round(time.perf_counter() - t0, 1), "scores": scores})
        mean = sum(s["acc"] for s in scores.values()) / len(scores)
        print(f"scores {name}: mean top-1 {mean:.2f}% over {len(scores)} paths")

    # -- stand-alone ----------------------------------------------------------------------------

    def standalone_cache(self, seed: int | None = None) -> Path:
        """The stand-alone networks of the study's seed, or of another (the noise measurement)."""
        if seed is None or seed == self.args.seed:
            return self.out / "standalone"
        return self.out / f"standalone_seed{seed}"

    def train_standalone(
        self,
        after_each=None,
        reverse: bool = False,
        seed: int | None = None,
        limit: int | None = None,
    ) -> None:
        """Every architecture (the first ``limit`` of the spread order) trained from scratch with
        ``seed`` (default: the study's)."""
        import dataclasses

        from fastscarlet.evaluate import evaluate
        from fastscarlet.evaluate.ranking import spread_order
        from fastscarlet.train.standalone import cached_result, train_standalone

        _, val = self.eval_loaders(self.args.standalone_val_images, calib=False)
        cache = self.standalone_cache(seed)
        settings = self.standalone
        if seed is not None:
            settings = dataclasses.replace(settings, seed=seed)
        order = spread_order(len(self.genomes))[:limit]
        for i, j in enumerate(order[::-1] if reverse else order):
            g = self.genomes[j]
            if cached_result(cache, g) is not None:
                continue
            t0 = time.perf_counter()
            record = train_standalone(
                self.space, g, self.cfg.data.root, settings, cache,
                lambda net: _accuracy(evaluate(net, val)), device=self.device,
                num_workers=self.cfg.data.num_workers,
                channels_last=self.cfg.data.channels_last,
            )  # fmt: skip
            assert record is not None
            print(
                f"stand-alone {cache.name} {i + 1}/{len(order)}: top-1 {record['score']['acc']:.2f}% "
                f"({time.perf_counter() - t0:.0f} s)"
            )
            if after_each is not None:
                after_each()

    # -- report ---------------------------------------------------------------------------------

    def report(self, variants: list[str]) -> int:
        """ranking.json, architectures.csv and ranking.png from what is measured so far."""
        from fastscarlet.cost import CostModel
        from fastscarlet.evaluate.ranking import plot_ranking, rank_report
        from fastscarlet.space import to_readable
        from fastscarlet.train.standalone import cached_result, genome_key

        def accuracies(cache: Path) -> dict[tuple[int, ...], float]:
            records = {g: cached_result(cache, g) for g in self.genomes}
            return {g: r["score"]["acc"] for g, r in records.items() if r is not None}

        truth = accuracies(self.standalone_cache())
        scores = {}
        for name in variants:
            path = self.out / "scores" / f"{name}.json"
            if path.is_file():
                scores[name] = json.loads(path.read_text())["scores"]
        cost = CostModel(self.space, self.cfg.data.image_size)
        rows = []
        for g in self.genomes:
            row = {
                "genome": "-".join(map(str, g)),
                "readable": to_readable(self.space, g),
                "madds": cost.madds(g),
                "params": cost.params(g),
                "standalone": truth.get(g, ""),
            }
            row.update({n: s[genome_key(g)]["acc"] for n, s in scores.items()})
            rows.append(row)
        _write_csv(self.out / "architectures.csv", rows)
        measured = [g for g in self.genomes if g in truth]
        records = []
        if len(measured) < 3:
            return 0

        def ranked(
            predicted: dict, among: list, key: str = "supernet_acc", **extra: Any
        ) -> dict[str, Any]:
            x, y = [predicted[g] for g in among], [truth[g] for g in among]
            rep = rank_report(
                x, y, k=self.args.topk, n_resamples=self.args.bootstrap, seed=self.args.seed
            )
            return {
                **extra,
                **rep.to_dict(),
                "complete": len(among) == len(self.genomes),
                "architectures": [genome_key(g) for g in among],
                key: x,
                "standalone_acc": y,
            }

        for name, s in scores.items():
            predicted = {g: s[genome_key(g)]["acc"] for g in measured}
            records.append(
                ranked(predicted, measured, variant=name, description=VARIANTS[name].description)
            )
        _write_json(self.out / "ranking.json", records)
        plot_ranking(self.out / "ranking.png", records)
        # what a supernet has to beat: ranking by cost alone
        baselines = [
            ranked(
                {g: float(cost.madds(g)) for g in measured}, measured, "madds", baseline="madds"
            ),
            ranked(
                {g: float(cost.params(g)) for g in measured}, measured, "params", baseline="params"
            ),
        ]
        _write_json(self.out / "baselines.json", baselines)
        # how well stand-alone accuracy ranks itself: the same networks with another seed
        again = accuracies(self.standalone_cache(self.args.seed + 1))
        both = [g for g in measured if g in again]
        if len(both) >= 3:
            noise = ranked(again, both, "other_seed_acc", seed=self.args.seed + 1)
            diffs = [abs(again[g] - truth[g]) for g in both]
            noise["mean_abs_difference"] = sum(diffs) / len(diffs)
            _write_json(self.out / "noise.json", noise)
        return len(records)


def _accuracy(acc: Any) -> dict[str, float]:
    return {"acc": acc.top1, "acc5": acc.top5, "loss": acc.loss, "images": acc.images}


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two processes may write it
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
