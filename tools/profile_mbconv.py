"""Where the time of one MBConv block goes: per-kernel GPU times, ours vs the eager reference.

    python tools/profile_mbconv.py --layers 2,4,16      # GPU
    python tools/profile_mbconv.py --layers 5 --json p.json

Builds each Scarlet-A layer exactly as ``bench_mbconv.py`` does (batch 256, 224 input, bf16
inference / fp32 parameters under bf16 autocast for training, channels_last), runs ``--iters``
calls of the inference forward and of the training forward + backward under
``torch.profiler``, and prints, per implementation, the GPU kernels sorted by total time with
their call counts and mean microseconds. This is the profile the kernel issue's note cites.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

# The benchmark module (benchmarks/bench_mbconv.py) defines the layers and kernel variants.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_mbconv import kernel_variants, parse_layers, scarlet_a_layers


def _profile(fn, iters: int) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):  # compile, cudnn.benchmark, allocator
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
    rows = []
    for ev in prof.key_averages():
        t = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        if t <= 0 or ev.count == 0:
            continue
        rows.append({"kernel": ev.key[:90], "calls": ev.count // iters,
                     "us_per_iter": t / iters})  # fmt: skip
    rows.sort(key=lambda r: -r["us_per_iter"])
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--layers", default="2,4,16", help="1-based Scarlet-A layer numbers")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--json", help="write all rows here")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        ap.error("needs a CUDA device")
    from fastscarlet.kernels.dispatch import kernel_mode
    from fastscarlet.kernels.testing import randomize_bn
    from fastscarlet.nn.blocks import MBConv, init_weights
    from fastscarlet.space import SEConfig

    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    cl = torch.channels_last
    keep = parse_layers(args.layers)
    out: dict[str, dict] = {"kernels": kernel_variants()}
    print("kernels: " + ", ".join(f"{k}={v}" for k, v in out["kernels"].items()))
    for layer in scarlet_a_layers(args.size):
        if layer.index not in keep:
            continue
        torch.manual_seed(layer.index)
        block = MBConv(layer.cin, layer.cout, layer.expansion, layer.kernel, layer.stride,
                       layer.act, SEConfig() if layer.se else None)  # fmt: skip
        init_weights(block)
        randomize_bn(block)
        block = block.to(dev)
        x = torch.randn(args.batch, layer.cin, layer.size, layer.size, device=dev)
        x = x.to(memory_format=cl)
        inf = copy.deepcopy(block).to(torch.bfloat16).eval()
        xb = x.to(torch.bfloat16)
        tr = copy.deepcopy(block).train()
        xg = xb.detach().clone().requires_grad_()
        ho = (layer.size - 1) // layer.stride + 1
        dy = torch.randn(args.batch, layer.cout, ho, ho, device=dev, dtype=torch.bfloat16)
        dy = dy.contiguous(memory_format=cl)

        def fwd(mode, inf=inf, xb=xb):
            with torch.no_grad(), kernel_mode(mode):
                inf(xb)

        def train(mode, tr=tr, xg=xg, dy=dy):
            with kernel_mode(mode), torch.autocast("cuda", torch.bfloat16):
                y = tr(xg)
            y.backward(dy)

        key = f"{layer.index} {layer.name} {layer.shape}"
        out[key] = {}
        for what, fn in (("fwd", fwd), ("train", train)):
            for mode, label in (("auto", "ours"), ("reference", "eager")):
                rows = _profile(lambda fn=fn, mode=mode: fn(mode), args.iters)
                out[key][f"{what}/{label}"] = rows
                total = sum(r["us_per_iter"] for r in rows)
                print(f"\n## layer {key}: {what} {label}: {total:.0f} us of GPU kernels per call")
                for r in rows[: args.top]:
                    print(f"{r['us_per_iter']:9.1f} us  x{r['calls']:<3d} {r['kernel']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
