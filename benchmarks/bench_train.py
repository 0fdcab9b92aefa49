"""Images/s of a strict-fairness supernet step: fastscarlet's trainer vs a plain PyTorch loop.

    python benchmarks/bench_train.py                  # CPU: CIFAR recipe (32x32, batch 32/path)
    python benchmarks/bench_train.py --device cuda    # GPU: 224x224, batch 128/path, bf16, NHWC

Both run the same SCARLET supernet, the same 13 paths per step and the same in-memory batches (so the
data loader is not measured), side by side in one process, alternating, after warm-up:

* ``plain``: ``for path: loss = CE(net(x, path)); loss.backward()`` then ``opt.step()``, autocast and
  channels_last as the trainer (what a user would write by hand);
* ``trainer``: :meth:`fastscarlet.train.trainer.SupernetTrainer.train_step` (gradient bookkeeping of
  ``shared_grad=mean``, non-finite check, clipping, scheduler).

With ``--with-data PATH`` a third row times the trainer's whole loop (``fit``) on real images.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time

import torch

from fastscarlet.config import config_from_dict
from fastscarlet.train.samplers import StrictFairSampler
from fastscarlet.train.trainer import SupernetTrainer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--batch", type=int, help="images per path (default 32 CPU, 128 GPU)")
    ap.add_argument("--size", type=int, help="input size (default 32 CPU, 224 GPU)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--with-data", help="also time fit() on this ImageFolder root (train/)")
    ap.add_argument("--json", help="write the results to this file")
    args = ap.parse_args()
    dev = torch.device(args.device)
    gpu = dev.type == "cuda"
    batch = args.batch or (128 if gpu else 32)
    size = args.size or (224 if gpu else 32)
    classes = 1000 if gpu else 10

    tmp = tempfile.mkdtemp()
    cfg = config_from_dict(
        {
            "space": {"name": "scarlet", "num_classes": classes},
            "data": {"backend": "synthetic", "image_size": size, "batch_size": batch,
                     "channels_last": gpu, "recipe": "imagenet" if gpu else "cifar"},
            "train": {"device": args.device, "amp": "bf16" if gpu else "none", "max_steps": 10**6,
                      "out": tmp, "progress": False, "tensorboard": False},
        }
    )  # fmt: skip
    trainer = SupernetTrainer(cfg)
    net = trainer.model
    plain_opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9, nesterov=True)
    mem = torch.channels_last if gpu else torch.contiguous_format
    sampler = StrictFairSampler(trainer.space, seed=0)
    m = sampler.paths_per_step
    g = torch.Generator(device="cpu").manual_seed(0)
    batches = [
        (
            torch.randn(batch, 3, size, size, generator=g).to(dev, memory_format=mem),
            torch.randint(0, classes, (batch,), generator=g).to(dev),
        )
        for _ in range(m)
    ]
    ce = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def plain_step(paths):
        net.train()
        plain_opt.zero_grad(set_to_none=True)
        for (x, y), p in zip(batches, paths):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=gpu):
                loss = ce(net(x, p).float(), y)
            loss.backward()
        plain_opt.step()

    def trainer_step(paths):
        trainer.train_step(batches, paths)

    rates: dict[str, list[float]] = {"plain": [], "trainer": []}
    fns = {"plain": plain_step, "trainer": trainer_step}
    t_start = time.perf_counter()
    for name in fns:  # warm-up (cuDNN autotuning, kernel compilation, allocator)
        fns[name](sampler.sample())
        _sync(dev)
        print(f"[bench] warm-up {name}: {time.perf_counter() - t_start:.1f}s", file=sys.stderr,
              flush=True)  # fmt: skip
    for _ in range(args.rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn(sampler.sample())
            _sync(dev)
            rates[name].append(args.steps * m * batch / (time.perf_counter() - t0))
            print(f"[bench] {name}: {rates[name][-1]:.1f} img/s", file=sys.stderr, flush=True)

    result = {
        "device": torch.cuda.get_device_name(0) if gpu else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "input": size,
        "batch_per_path": batch,
        "paths_per_step": m,
        "amp": "bf16" if gpu else "fp32",
        "channels_last": gpu,
        "img_per_s": {k: statistics.median(v) for k, v in rates.items()},
    }
    result["trainer_vs_plain"] = result["img_per_s"]["trainer"] / result["img_per_s"]["plain"]

    if args.with_data:
        cfg2 = config_from_dict(
            {
                **cfg.to_dict(),
                "data": {**cfg.data.__dict__, "backend": "torch", "root": args.with_data},
                "train": {**cfg.train.__dict__, "out": tempfile.mkdtemp(), "max_steps": 10**6},
            }
        )
        tr2 = SupernetTrainer(cfg2)
        tr2.fit(until_step=1)  # warm-up, loader start
        t0 = time.perf_counter()
        n = args.steps * args.rounds
        tr2.fit(until_step=1 + n)
        _sync(dev)
        result["img_per_s"]["trainer_fit_with_data"] = n * m * batch / (time.perf_counter() - t0)

    print(f"{'method':<24} {'img/s':>10}")
    for k, v in result["img_per_s"].items():
        print(f"{k:<24} {v:>10.1f}")
    print(f"trainer / plain = {result['trainer_vs_plain']:.3f}")
    print(json.dumps(result), file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
