"""The depthwise Triton kernels vs cuDNN on the 19 Scarlet-A depthwise shapes, against the floor.

    python benchmarks/bench_depthwise.py                   # GPU: issue 19 item 3 (bf16, batch 256)
    python benchmarks/bench_depthwise.py --markdown r.md --json r.json
    python benchmarks/bench_depthwise.py --layers 1-10 --json a.json   # split a long run, then
    python benchmarks/bench_depthwise.py --merge a.json b.json --markdown r.md
    python benchmarks/bench_depthwise.py --smoke           # CPU, Triton interpreter, tiny shapes

For the depthwise conv of each of the 19 Scarlet-A layers (``bench_mbconv.scarlet_a_layers``:
``E = cin * expansion`` channels, kernel ``k``, stride ``s``, the block's input size, 224x224
network input, batch 256), bf16 activations and weights, channels_last, side by side in one
process, every candidate doing the same work:

* **fwd**: the plain conv ``y = conv(x, w)``, padding ``k // 2``: ``cudnn``
  (``F.conv2d(..., groups=E)``, what eager PyTorch dispatches for channels_last bf16),
  ``tile`` and ``sweep`` (:func:`fastscarlet.kernels.depthwise.dw_conv_fwd` with
  ``mode="tile"`` / ``"sweep"``), ``halo`` (:func:`fastscarlet.kernels.depthwise_halo.dw_halo_fwd`);
* **bwd**: ``dx`` and ``dW`` from ``dy``: ``cudnn`` (``aten.convolution_backward`` with both
  outputs), ``tile-split`` and ``tile-fused`` (:func:`~fastscarlet.kernels.depthwise.dw_conv_bwd`
  with ``wgrad="split"`` / ``"fused"``), ``halo`` (:func:`~fastscarlet.kernels.depthwise_halo.dw_halo_bwd`);
* **block**: conv + BN-eval + the layer's activation (inference): ``cudnn`` is eager (conv, then
  ``F.batch_norm``, then the activation: three kernels), the Triton kernels fold BN and the
  activation into their epilogue.

The Triton kernels write into preallocated outputs (their weight gradient is fp32 and
accumulates across timing calls; values are checked on a fresh zeroed one); the host work each
launcher does per call (tap-major weight copy, the halo kernel's workspace reduction) is timed.

**Correctness first**: before timing, every candidate's outputs are compared with cuDNN's
(``max|d|`` in the tables) and judged by the error budget of ``shared/CONVENTIONS.md``
(:func:`fastscarlet.kernels.testing.budget`: ``max|out - ref_hi| <= 2 max|cudnn - ref_hi| +
atol``, ``ref_hi`` the same op in fp32 on the GPU, fp64 in smoke mode). A candidate over budget
or that raises is shown as ``WRONG`` / ``FAILED`` and never counted as fastest or as beating cuDNN.

Times are medians of ``triton.testing.do_bench`` (L2 flushed between runs), host launch cost
included (each launcher's Python and its small torch ops); ``--cudagraph`` times CUDA-graph
replays instead (``do_bench_cudagraph``), the device time alone. The floor is HBM
traffic at the copy bandwidth measured here (``BW``), every tensor moved once:

    fwd, block:  (|x| + |y| + |w|) / BW
    bwd:         (|x| + |dy| + |dx| + |w| + |dW|) / BW      (|dW| in bf16)

``% floor`` = floor / time; the FP32 FMA bound (``2 N Ho Wo E k^2`` FLOPs per conv, two convs for
the backward, at 66.9 TFLOP/s) is given beside it. ``x cuDNN`` = cuDNN time / kernel time (> 1:
faster). The summary gives, per kernel, the median of ``x cuDNN`` and how many shapes it beats
cuDNN on by >= 3% (``x cuDNN >= 1.03``) or loses by >= 3%.

Triton compiles every (kernel, k, stride, channel block) specialisation on first use; the GPU
run spends minutes compiling. Split it with ``--layers`` / ``--passes`` and ``--merge`` if a
command must stay under a time limit.

``--smoke`` runs everything on CPU under ``TRITON_INTERPRET=1`` in fp32 with tiny shapes (batch
2, 16x16 network input, at most 16 channels) to show the script works; its numbers mean nothing
and it says so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

# The benchmark folder is on sys.path when this file runs as a script.
from bench_mbconv import (
    FMA_FLOPS,
    Layer,
    copy_bandwidth,
    make_timer,
    parse_layers,
    scarlet_a_layers,
)

PASSES = ("fwd", "bwd", "block")
CANDIDATES = {
    "fwd": ("cudnn", "tile", "sweep", "halo"),
    "bwd": ("cudnn", "tile-split", "tile-fused", "halo"),
    "block": ("cudnn", "tile", "sweep", "halo"),
}
TITLES = {
    "fwd": "Forward: plain depthwise conv",
    "bwd": "Backward: dx and dW",
    "block": "Forward block: conv + BN-eval + activation (cudnn = eager conv, BN, act)",
}
BEAT = 1.03  # "beats cuDNN": at least 3% faster; within 3% is a tie (do_bench noise ~1-2%)


@dataclass
class Row:
    layer: Layer
    channels: int  # E, the depthwise channels
    out_size: int
    bytes: dict[str, float] = field(default_factory=dict)  # pass -> bytes that must move
    floor_us: dict[str, float] = field(default_factory=dict)  # pass -> bytes / BW
    fma_us: dict[str, float] = field(default_factory=dict)  # pass -> FP32 FMA bound
    # pass -> candidate -> {"us", "gbs", "ok", "failed", "diff": {out: max|d| vs cudnn},
    #                       "error": {out: max|d| vs ref_hi}, "allowed": {out: budget}}
    results: dict[str, dict[str, dict]] = field(default_factory=dict)


def depthwise_bytes(C: int, H: int, Ho: int, k: int, N: int, elem: int) -> dict[str, float]:
    x, y, w = elem * N * H * H * C, elem * N * Ho * Ho * C, elem * C * k * k
    return {"fwd": x + y + w, "block": x + y + w + 4 * 4 * C, "bwd": 2 * x + y + 2 * w}


# ---------------------------------------------------------------------------------------------


def _check(outs, lows, highs, dtype) -> dict:
    """Compare the candidate's outputs with cuDNN's (``lows``) and the high-precision reference."""
    import torch

    from fastscarlet.kernels.testing import budget

    res: dict = {"diff": {}, "error": {}, "allowed": {}, "ok": True}
    for name, out in outs.items():
        lo, hi = lows[name], highs[name]
        out = out.reshape(hi.shape)
        res["diff"][name] = float((out.float() - lo.reshape(hi.shape).float()).abs().max())
        b = budget(name, out, lo.reshape(hi.shape), hi, dtype)
        res["error"][name], res["allowed"][name] = b.error, b.allowed
        finite = bool(torch.isfinite(out).all())
        res["ok"] = res["ok"] and b.ok and finite
    return res


def _candidates(layer: Layer, args, device) -> tuple[dict, dict]:
    """``(candidates, references)``: pass -> candidate -> ``(reset, run)``, where ``run()`` is
    what is timed and returns the outputs by name, and ``reset()`` makes its preallocated
    outputs show what a run leaves unwritten; and pass -> ``ref()``, the same outputs in high
    precision (called pass by pass, so one reference is in memory at a time)."""
    import torch
    import torch.nn.functional as F

    from fastscarlet.kernels.activations import act_ref
    from fastscarlet.kernels.depthwise import dw_conv_bwd, dw_conv_fwd, dw_out_size
    from fastscarlet.kernels.depthwise_halo import dw_halo_bwd, dw_halo_fwd
    from fastscarlet.kernels.testing import rows

    cl = torch.channels_last
    N, C, H, k, s = args.batch, args.channels(layer), layer.size, layer.kernel, layer.stride
    p, Ho, geom = k // 2, dw_out_size(H, s), (N, H, H)
    dt = args.dtype
    g = torch.Generator(device=device).manual_seed(layer.index)
    x = torch.randn(N, C, H, H, generator=g, device=device).to(dt).contiguous(memory_format=cl)
    w = (torch.randn(C, 1, k, k, generator=g, device=device) / k).to(dt)  # outputs ~ unit scale
    dy = torch.randn(N, C, Ho, Ho, generator=g, device=device).to(dt).contiguous(memory_format=cl)
    f32 = dict(device=device, dtype=torch.float32)
    bn = (torch.rand(C, generator=g, device=device) + 0.5, torch.randn(C, generator=g, **f32),
          torch.randn(C, generator=g, **f32), torch.rand(C, generator=g, **f32) + 0.5)  # fmt: skip
    eps, act = 1e-5, layer.act

    def conv(xx, ww):
        return F.conv2d(xx, ww, None, s, p, 1, C)

    def block(xx, ww, v):
        return act_ref(F.batch_norm(conv(xx, ww), v[2], v[3], v[0], v[1], False, 0.0, eps), act)

    def conv_bwd(gy, xx, ww):
        dx, dw = torch.ops.aten.convolution_backward(
            gy, xx, ww, None, [s, s], [p, p], [1, 1], False, [0, 0], C, [True, True, False]
        )[:2]
        return {"dx": dx, "dw": dw.reshape(C, k * k)}

    def nothing() -> None:
        pass

    # Triton outputs, preallocated: y and dx start as NaN so that an unwritten element shows;
    # dW (fp32 [C, k*k]) is added to, so it starts at zero and accumulates while timed.
    y_t = torch.full((N, C, Ho, Ho), float("nan"), device=device, dtype=dt)
    y_t = y_t.contiguous(memory_format=cl)
    dx_t = torch.full_like(x, float("nan"))
    dw_t = torch.zeros(C, k * k, **f32)

    def fwd_candidate(name: str, epi: bool) -> tuple[Callable, Callable]:
        if name == "cudnn":
            if epi:
                return nothing, lambda: {"y": block(x, w, bn)}
            return nothing, lambda: {"y": conv(x, w)}
        kw = dict(bn_eval=bn, eps=eps, epi_act=act) if epi else {}

        def run():
            if name == "halo":
                dw_halo_fwd(rows(x), w, geom, s, out=rows(y_t), **kw)
            else:
                dw_conv_fwd(rows(x), w, geom, s, out=rows(y_t), mode=name, **kw)
            return {"y": y_t}

        return (lambda: y_t.fill_(float("nan"))), run

    def bwd_candidate(name: str) -> tuple[Callable, Callable]:
        if name == "cudnn":
            return nothing, lambda: conv_bwd(dy, x, w)

        def run():
            if name == "halo":
                dw_halo_bwd(rows(dy), rows(x), w, geom, s, rows(dx_t), dw_t)
            else:
                wgrad = name.split("-")[1]
                dw_conv_bwd(rows(dy), rows(x), w, geom, s, rows(dx_t), dw_t, wgrad=wgrad)
            return {"dx": dx_t, "dw": dw_t}

        return (lambda: (dx_t.fill_(float("nan")), dw_t.zero_())), run

    out: dict[str, dict[str, tuple[Callable, Callable]]] = {}
    if "fwd" in args.passes:
        out["fwd"] = {n: fwd_candidate(n, False) for n in CANDIDATES["fwd"]}
    if "bwd" in args.passes:
        out["bwd"] = {n: bwd_candidate(n) for n in CANDIDATES["bwd"]}
    if "block" in args.passes:
        out["block"] = {n: fwd_candidate(n, True) for n in CANDIDATES["block"]}

    # -- the high-precision references (fp32 on the GPU, fp64 in smoke) ------------------------
    hi = args.ref_dtype
    xh, wh, dyh = x.to(hi), w.to(hi), dy.to(hi)
    bnh = tuple(v.to(hi) for v in bn)
    refs: dict[str, Callable[[], dict]] = {
        "fwd": lambda: {"y": conv(xh, wh)},
        "block": lambda: {"y": block(xh, wh, bnh)},
        "bwd": lambda: conv_bwd(dyh, xh, wh),
    }
    return out, refs


def bench_layer(layer: Layer, args, device, timer) -> Row:
    import torch

    from fastscarlet.kernels.depthwise import dw_out_size

    C, H, k = args.channels(layer), layer.size, layer.kernel
    Ho = dw_out_size(H, layer.stride)
    elem = torch.finfo(args.dtype).bits // 8
    row = Row(layer, C, Ho)
    row.bytes = depthwise_bytes(C, H, Ho, k, args.batch, elem)
    flops = 2 * args.batch * Ho * Ho * C * k * k
    for ps in args.passes:
        row.floor_us[ps] = row.bytes[ps] / args.bandwidth * 1e6
        row.fma_us[ps] = (2 if ps == "bwd" else 1) * flops / FMA_FLOPS * 1e6
    cands, refs = _candidates(layer, args, device)
    for ps, pairs in cands.items():
        with torch.no_grad():
            highs = refs[ps]()
            lows = pairs["cudnn"][1]()
        res: dict[str, dict] = {}
        for name, (reset, run) in pairs.items():
            try:
                reset()
                t0 = time.perf_counter()
                with torch.no_grad():
                    outs = run()
                t_once = time.perf_counter() - t0  # smoke: the timing (the interpreter is slow)
                r = _check(outs, lows, highs, args.dtype)
                del outs
                r["failed"] = None
                r["us"] = (timer(run) if args.gpu else t_once) * 1e6
                r["gbs"] = row.bytes[ps] / r["us"] * 1e-3
            except Exception as e:  # one broken kernel must not stop the run
                r = {"ok": False, "failed": f"{type(e).__name__}: {e}"[:300], "us": None,
                     "gbs": None, "diff": {}, "error": {}, "allowed": {}}  # fmt: skip
                print(f"[bench] layer {layer.index} {ps} {name} FAILED: {r['failed']}",
                      file=sys.stderr, flush=True)  # fmt: skip
            res[name] = r
        row.results[ps] = res
        del highs, lows
    return row


# ---------------------------------------------------------------------------------------------


def speedup(row: Row, ps: str, name: str) -> float | None:
    """cuDNN time / ``name``'s time, None where either is missing or ``name`` is wrong."""
    res = row.results.get(ps, {})
    r, base = res.get(name), res.get("cudnn")
    if not r or not base or not r["ok"] or r["us"] is None or base["us"] is None:
        return None
    return base["us"] / r["us"]


def fastest(row: Row, ps: str) -> str | None:
    """The fastest correct candidate."""
    ok = {n: r["us"] for n, r in row.results.get(ps, {}).items() if r["ok"] and r["us"]}
    return min(ok, key=ok.get) if ok else None


def summarize(rows: list[Row], passes: list[str]) -> dict:
    """Per pass and candidate: median x cuDNN, shapes beating / losing to cuDNN by >= 3%, wrong
    or failed shapes, how often fastest, median % of the floor."""
    out: dict = {}
    for ps in passes:
        have = [r for r in rows if ps in r.results]
        if not have:
            continue
        per: dict = {}
        for name in CANDIDATES[ps]:
            xs = [speedup(r, ps, name) for r in have]
            xs = [v for v in xs if v is not None]
            fr = [r.floor_us[ps] / r.results[ps][name]["us"] for r in have
                  if r.results[ps].get(name, {}).get("ok") and r.results[ps][name]["us"]]  # fmt: skip
            per[name] = {
                "median_x_cudnn": statistics.median(xs) if xs else None,
                "beats": sum(v >= BEAT for v in xs),
                "loses": sum(v <= 1 / BEAT for v in xs),
                "wrong": sum(not r.results[ps].get(name, {}).get("ok", False) for r in have),
                "fastest": sum(fastest(r, ps) == name for r in have),
                "median_floor_frac": statistics.median(fr) if fr else None,
                "shapes": len(have),
            }
        out[ps] = per
    return out


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _cell(row: Row, ps: str, name: str) -> str:
    r = row.results[ps].get(name)
    if r is None:
        return "-"
    if r["failed"]:
        return "FAILED"
    pct = row.floor_us[ps] / r["us"]
    text = f"{r['us']:.1f} ({r['gbs']:.0f} GB/s, {pct:.0%}"
    base = row.results[ps].get("cudnn", {}).get("us")
    if name != "cudnn" and base:
        text += f", {base / r['us']:.2f}x"
    text += ")"
    return text if r["ok"] else f"WRONG {text}"


def _diffs(row: Row, ps: str) -> str:
    parts = []
    for name in CANDIDATES[ps][1:]:
        r = row.results[ps].get(name)
        if r and not r["failed"]:
            parts.append(name + " " + "/".join(f"{v:.2g}" for v in r["diff"].values()))
    return ", ".join(parts)


def table(rows: list[Row], summary: dict, header: dict) -> str:
    """The markdown tables (also what is printed)."""
    lines = [
        f"Device: {header['device']}; torch {header['torch']} (cuDNN {header['cudnn']}), triton "
        f"{header['triton']}; {header['date']}; batch {header['batch']}, "
        f"{header['size']}x{header['size']} network input, {header['dtype']}, channels_last; "
        f"copy bandwidth {header['bandwidth_gbs']:.0f} GB/s; timing: {header['timing']}.",
        "",
        "Cells: median us (GB/s, % of the HBM floor, x cuDNN = cuDNN time / kernel time). "
        "max|d|: largest absolute difference from cuDNN's output (bwd: dx/dW). WRONG: over the "
        "error budget against the fp32 reference; never counted as fastest.",
    ]
    for ps in header["passes"]:
        have = [r for r in rows if ps in r.results]
        if not have:
            continue
        names = CANDIDATES[ps]
        lines += ["", f"### {TITLES[ps]}", ""]
        lines.append("| # | E | in HxW k s | MB | floor us | FMA us | " + " | ".join(names)
                     + " | fastest | max\\|d\\| vs cuDNN |")  # fmt: skip
        lines.append("|" + "---|" * (8 + len(names)))
        for r in have:
            lay = r.layer
            lines.append(
                f"| {lay.index} | {r.channels} | {lay.size}x{lay.size} k{lay.kernel} "
                f"s{lay.stride} | {r.bytes[ps] / 1e6:.1f} | {r.floor_us[ps]:.1f} "
                f"| {r.fma_us[ps]:.1f} | "
                + " | ".join(_cell(r, ps, n) for n in names)
                + f" | {fastest(r, ps) or '-'} | {_diffs(r, ps)} |"
            )
        lines += ["", "| kernel | median x cuDNN | beats cuDNN by >= 3% | loses by >= 3% "
                  "| wrong/failed | fastest | median % floor |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, s in summary[ps].items():
            lines.append(
                f"| {name} | {_fmt(s['median_x_cudnn'], '.2f')} | {s['beats']}/{s['shapes']} "
                f"| {s['loses']}/{s['shapes']} | {s['wrong']} | {s['fastest']} "
                f"| {_fmt(s['median_floor_frac'], '.0%')} |"
            )
    return "\n".join(lines)


def _write(path: str, header: dict, rows: list[Row], summary: dict, smoke: bool, **extra):
    with open(path, "w") as f:
        json.dump({"header": header, "rows": [asdict(r) for r in rows], "summary": summary,
                   "smoke": smoke, **extra}, f, indent=1)  # fmt: skip


def merge(paths: list[str], markdown: str | None, json_out: str | None) -> int:
    """One table from the JSON files of partial runs (same machine; the first header is kept,
    passes are joined per layer)."""
    rows: dict[int, Row] = {}
    header = None
    passes: list[str] = []
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        header = header or dict(data["header"])
        passes += [p for p in data["header"]["passes"] if p not in passes]
        for r in data["rows"]:
            r["layer"] = Layer(**r["layer"])
            new = Row(**r)
            old = rows.setdefault(new.layer.index, new)
            if old is not new:
                for attr in ("bytes", "floor_us", "fma_us", "results"):
                    getattr(old, attr).update(getattr(new, attr))
    assert header is not None
    header["passes"] = [p for p in PASSES if p in passes]
    ordered = [rows[i] for i in sorted(rows)]
    summary = summarize(ordered, header["passes"])
    text = table(ordered, summary, header)
    print(text)
    if markdown:
        with open(markdown, "w") as f:
            f.write(text + "\n")
    if json_out:
        _write(json_out, header, ordered, summary, False, merged_from=paths)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU + Triton interpreter, tiny shapes")
    ap.add_argument("--batch", type=int, help="default 256 (smoke: 2)")
    ap.add_argument("--size", type=int, help="network input resolution, default 224 (smoke: 16)")
    ap.add_argument("--layers", help="1-based layer numbers, e.g. 1-7,9 (default: all 19)")
    ap.add_argument("--passes", default="fwd,bwd,block", help="any of fwd,bwd,block")
    ap.add_argument("--max-channels", type=int,
                    help="cap the depthwise channels (default: none; smoke: 16)")  # fmt: skip
    ap.add_argument("--rep-ms", type=int, default=100, help="do_bench repetition time per timing")
    ap.add_argument(
        "--cudagraph", action="store_true",
        help="time replays of a CUDA graph of each call (do_bench_cudagraph): device time without "
        "the host's launch cost, which can dominate the 7x7 and 14x14 layers",
    )  # fmt: skip
    ap.add_argument("--json", help="write rows and summary here (rewritten after every layer)")
    ap.add_argument("--markdown", help="write the tables here")
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="combine the --json files of partial runs into one table; runs nothing")  # fmt: skip
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.markdown, args.json)
    args.passes = [p.strip() for p in args.passes.split(",")]
    if bad := [p for p in args.passes if p not in PASSES]:
        ap.error(f"--passes: unknown {bad}; choose from {', '.join(PASSES)}")
    if args.smoke:  # before anything imports triton
        os.environ["TRITON_INTERPRET"] = "1"
    import torch

    gpu = not args.smoke
    if gpu and not torch.cuda.is_available():
        ap.error("no CUDA device: run with --smoke on CPU (numbers are then meaningless)")
    device = torch.device("cuda" if gpu else "cpu")
    args.batch = args.batch or (256 if gpu else 2)
    args.size = args.size or (224 if gpu else 16)
    cap = args.max_channels or (16 if args.smoke else None)
    args.channels = lambda layer: min(layer.cin * layer.expansion, cap or 1 << 30)
    # The interpreter runs numpy, which has no bf16: smoke runs fp32 (reference fp64).
    args.dtype = torch.bfloat16 if gpu else torch.float32
    args.ref_dtype = torch.float32 if gpu else torch.float64
    if gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = False  # the fp32 reference stays fp32
    args.gpu = gpu
    timer = make_timer(gpu, args.rep_ms)  # smoke: candidates are timed by their checked call
    if gpu and args.cudagraph:
        from triton.testing import do_bench_cudagraph

        def timer(fn, grad_to_none=None):
            return do_bench_cudagraph(fn, rep=args.rep_ms, return_mode="median") * 1e-3

    args.bandwidth = copy_bandwidth(device, timer, args.smoke)
    import triton

    header = {
        "device": torch.cuda.get_device_name(0) if gpu else f"CPU {platform.machine()} (smoke)",
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version() if gpu else None,
        "triton": triton.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "batch": args.batch,
        "size": args.size,
        "max_channels": cap,
        "dtype": str(args.dtype).replace("torch.", ""),
        "bandwidth_gbs": args.bandwidth / 1e9,
        "passes": args.passes,
        "timing": "smoke: one call"
        if not gpu
        else ("do_bench_cudagraph median" if args.cudagraph else "do_bench median"),
        "command": " ".join(["python", "benchmarks/bench_depthwise.py", *(argv or sys.argv[1:])]),
    }
    layers = scarlet_a_layers(args.size)
    if args.layers:
        keep = parse_layers(args.layers)
        layers = [layer for layer in layers if layer.index in keep]
    rows: list[Row] = []

    def dump() -> dict:
        summary = summarize(rows, args.passes)
        if args.json:
            _write(args.json, header, rows, summary, args.smoke)
        return summary

    for layer in layers:
        t0 = time.time()
        rows.append(bench_layer(layer, args, device, timer))
        dump()
        print(f"[bench] layer {layer.index:2d} E{rows[-1].channels:<5d} {layer.size:3d}x"
              f"{layer.size:<3d} k{layer.kernel} s{layer.stride} {time.time() - t0:6.1f}s",
              file=sys.stderr, flush=True)  # fmt: skip
        if gpu:
            torch.cuda.empty_cache()
    summary = dump()
    text = table(rows, summary, header)
    if args.smoke:
        text = (
            "SMOKE RUN (CPU, Triton interpreter, fp32, tiny shapes): the numbers mean nothing.\n\n"
            + text
        )
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
