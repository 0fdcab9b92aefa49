"""CUDA graphs for Scarlet-A's late stages (issue 19 item 4): eager vs graphed, side by side.

    python benchmarks/bench_cuda_graphs.py                      # GPU: the whole table
    python benchmarks/bench_cuda_graphs.py --json r.json --markdown r.md
    python benchmarks/bench_cuda_graphs.py --smoke              # CPU, tiny shapes, no claims

In one process, on Scarlet-A (``create_model("scarlet_a")``, 224x224, channels_last):

* **inference** at batch 1, 32 and 256 (bf16 parameters and activations, eval,
  ``torch.inference_mode()``): ``eager``; ``late`` = the late segments (input <= 14x14: blocks
  8-15, blocks 16-19, head) graphed by :func:`fastscarlet.nn.cuda_graphs.graph_late_stages` with
  ``policy="on"``; ``late-auto`` = what ``policy="auto"`` keeps (its per-segment times and choices
  are in the JSON); ``whole`` = the whole network captured as one ``torch.cuda.CUDAGraph``
  (:class:`~fastscarlet.nn.cuda_graphs.InferenceGraph` over the network; the floor for launch
  overhead);
* **training step** at batch 256: forward, cross-entropy, backward, SGD step (momentum,
  ``zero_grad(set_to_none=True)``), fp32 parameters under bf16 autocast (AMP), channels_last:
  ``eager`` vs ``late`` (``make_graphed_callables`` per segment, ``policy="on"``) vs
  ``late-auto``.

Times are wall-clock medians over ``--reps`` repetitions of ``--calls`` back-to-back calls with a
``torch.cuda.synchronize()`` around each repetition (the host's launch time is what graphs save, so
it is measured, not hidden behind the GPU's queue); images/s = batch / median. Each variant's
output is compared with eager's (max |diff| column: bf16 rounding, not an error budget).

``--smoke`` runs on CPU at batch 2 and 32x32 to show the script works: graphs need CUDA, so every
graphed variant reports "not on CUDA" and runs eagerly; its numbers mean nothing and it says so.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable

BATCHES = (1, 32, 256)


def wall_timer(
    device, calls: int, reps: int, warmup: int = 3
) -> Callable[[Callable[[], object]], float]:
    """``timer(fn) -> seconds per call``: median over ``reps`` of ``calls`` back-to-back calls,
    synchronised before and after each repetition (after ``warmup`` untimed calls)."""
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timer(fn: Callable[[], object]) -> float:
        for _ in range(warmup):
            fn()
        samples = []
        for _ in range(reps):
            sync()
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            sync()
            samples.append((time.perf_counter() - t0) / calls)
        return statistics.median(samples)

    return timer


def scarlet_a(device):
    import torch

    from fastscarlet.nn import create_model

    torch.manual_seed(0)
    return create_model("scarlet_a").to(device, memory_format=torch.channels_last)


def bench_inference(args, device, timer, base) -> list[dict]:
    import torch

    from fastscarlet.nn.cuda_graphs import InferenceGraph, graph_late_stages

    rows = []
    for batch in args.batches:
        net = copy.deepcopy(base).to(args.dtype).eval()
        x = torch.randn(batch, 3, args.size, args.size, device=device, dtype=args.dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            ref = net(x).float()

        def infer(fn, x=x):
            def call():
                with torch.inference_mode():
                    return fn(x)

            return call

        row: dict = {"batch": batch, "ms": {}, "img_s": {}, "max_diff": {}, "reports": {}}

        def record(name, fn, x=x, ref=ref, row=row, batch=batch):
            with torch.inference_mode():
                out = fn(x).float()
            row["max_diff"][name] = float((out - ref).abs().max())
            t = timer(infer(fn, x))
            row["ms"][name], row["img_s"][name] = t * 1e3, batch / t

        record("eager", net)
        for name, policy in (("late", "on"), ("late-auto", "auto")):
            report = graph_late_stages(net, x, training=False, policy=policy)
            row["reports"][name] = report.to_dict()
            print(report.summary(), file=sys.stderr, flush=True)
            record(name, net)
            report.restore()
        if device.type == "cuda":
            try:
                whole = InferenceGraph([net], x)
                record("whole", lambda x, g=whole: g(x))
                del whole
            except Exception as exc:  # record why, keep the other columns
                row["whole_error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
        print(f"[bench] inference batch {batch}: "
              + ", ".join(f"{k} {v:.3f} ms" for k, v in row["ms"].items()),
              file=sys.stderr, flush=True)  # fmt: skip
        del net
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def bench_train(args, device, timer, base) -> dict:
    import torch

    from fastscarlet.nn.cuda_graphs import graph_late_stages

    batch = args.train_batch
    x = torch.randn(batch, 3, args.size, args.size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 1000, (batch,), device=device)
    amp = args.amp if device.type == "cuda" else None
    out: dict = {"batch": batch, "ms": {}, "img_s": {}, "loss": {}, "reports": {}}
    for name, policy in (("eager", None), ("late", "on"), ("late-auto", "auto")):
        net = copy.deepcopy(base).train()
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)  # stays finite on noise
        if policy is not None:
            report = graph_late_stages(net, x, training=True, policy=policy, autocast=amp)
            out["reports"][name] = report.to_dict()
            print(report.summary(), file=sys.stderr, flush=True)

        def step(net=net, opt=opt):
            with torch.autocast(device.type, amp or torch.bfloat16, enabled=amp is not None):
                loss = torch.nn.functional.cross_entropy(net(x), target)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.detach()

        out["loss"][name] = float(step())  # the first step from the same weights
        t = timer(step)
        out["ms"][name], out["img_s"][name] = t * 1e3, batch / t
        print(f"[bench] training step {name}: {t * 1e3:.2f} ms", file=sys.stderr, flush=True)
        del net, opt
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def table(header: dict, inference: list[dict], train: dict | None) -> str:
    names = ["eager", "late", "late-auto", "whole"]
    lines = [
        f"Device: {header['device']}; torch {header['torch']}; {header['date']}; "
        f"{header['size']}x{header['size']} input, channels_last; inference {header['dtype']}, "
        f"training AMP {header['amp']}; median of {header['reps']} x {header['calls']} calls.",
        "",
        "Inference (eval, inference_mode):",
        "",
        "| batch | " + " | ".join(f"{n} ms" for n in names)
        + " | late x eager | late-auto x eager | whole x eager | late img/s | max abs diff late |",
        "|---" * (len(names) + 6) + "|",
    ]  # fmt: skip
    for r in inference:
        ms = r["ms"]

        def ratio(n, ms=ms):
            return f"{ms['eager'] / ms[n]:.2f}" if n in ms else "-"

        lines.append(
            f"| {r['batch']} | "
            + " | ".join(f"{ms[n]:.3f}" if n in ms else "-" for n in names)
            + f" | {ratio('late')} | {ratio('late-auto')} | {ratio('whole')} "
            f"| {r['img_s']['late']:.0f} | {r['max_diff']['late']:.3g} |"
        )
    if train:
        ms = train["ms"]
        lines += [
            "",
            f"Training step (batch {train['batch']}, forward + cross-entropy + backward + SGD):",
            "",
            "| variant | ms | img/s | x eager | first loss |",
            "|---|---|---|---|---|",
        ]
        for n in ms:
            lines.append(
                f"| {n} | {ms[n]:.2f} | {train['img_s'][n]:.0f} | {ms['eager'] / ms[n]:.2f} "
                f"| {train['loss'][n]:.5f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU, batch 2, 32x32: no claims")
    ap.add_argument("--size", type=int, help="input resolution, default 224 (smoke: 64)")
    ap.add_argument("--batches", type=int, nargs="+", help=f"inference batches, default {BATCHES}")
    ap.add_argument("--train-batch", type=int, help="training step batch, default 256 (smoke: 2)")
    ap.add_argument("--no-train", action="store_true", help="skip the training step")
    ap.add_argument("--calls", type=int, help="back-to-back calls per repetition (default 20)")
    ap.add_argument("--reps", type=int, help="repetitions, median taken (default 15)")
    ap.add_argument("--json", help="write header, rows and reports here")
    ap.add_argument("--markdown", help="write the tables here")
    args = ap.parse_args(argv)
    import torch

    gpu = not args.smoke
    if gpu and not torch.cuda.is_available():
        ap.error("no CUDA device: run with --smoke on CPU (numbers are then meaningless)")
    device = torch.device("cuda" if gpu else "cpu")
    args.size = args.size or (224 if gpu else 32)
    args.batches = args.batches or (list(BATCHES) if gpu else [2])
    args.train_batch = args.train_batch or (256 if gpu else 2)
    args.calls = args.calls or (20 if gpu else 1)
    args.reps = args.reps or (15 if gpu else 1)
    args.dtype = torch.bfloat16 if gpu else torch.float32
    args.amp = torch.bfloat16 if gpu else None
    if gpu:
        torch.backends.cudnn.benchmark = True
    else:  # one thread: two oneDNN threads on a shared 2-core machine took 6 s per step, one 0.2 s
        torch.set_num_threads(1)
    timer = wall_timer(device, args.calls, args.reps, warmup=3 if gpu else 0)
    header = {
        "device": torch.cuda.get_device_name(0) if gpu else f"CPU {platform.processor()} (smoke)",
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "size": args.size,
        "dtype": str(args.dtype).replace("torch.", ""),
        "amp": str(args.amp).replace("torch.", "") if args.amp else "off",
        "calls": args.calls,
        "reps": args.reps,
        "command": " ".join(["python", "benchmarks/bench_cuda_graphs.py", *(argv or sys.argv[1:])]),
    }
    base = scarlet_a(device)
    inference = bench_inference(args, device, timer, base)
    train = None if args.no_train else bench_train(args, device, timer, base)
    text = table(header, inference, train)
    if args.smoke:
        text = (
            "SMOKE RUN (CPU, tiny shapes, graphs need CUDA): the numbers mean nothing.\n\n" + text
        )
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "inference": inference, "train": train,
                       "smoke": args.smoke}, f, indent=1)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
