"""Fused MBConv Triton kernels vs PyTorch eager vs torch.compile, against the physical floor.

    python benchmarks/bench_mbconv.py                      # GPU: the issue-6 table (bf16)
    python benchmarks/bench_mbconv.py --markdown r.md --json r.json
    python benchmarks/bench_mbconv.py --smoke              # CPU, Triton interpreter, tiny shapes

For each of the 19 Scarlet-A layers (``fastscarlet.space.published.PUBLISHED["scarlet_a"]``, the
Scarlet space's shapes at 224x224 input, batch 256), side by side in one process:

* **fwd**: inference forward of the block in eval mode, bf16 parameters and activations,
  channels_last, ``torch.no_grad()``, every candidate of the kernels' dispatch side by side:
  ``triton`` (the whole-block kernels, BN folded in-kernel), ``partial`` (Triton 1x1 GEMMs with
  BN/activation/SE fused around PyTorch's cuDNN depthwise), ``eager`` (the module's PyTorch code:
  cuDNN convs, BN, activations, SE), ``compile`` (``torch.compile`` of it), and ``dispatch``: what
  ``FASTSCARLET_KERNELS=measure`` runs, i.e. the candidate the measured dispatch chose for this
  block signature (checked against the reference, timed, taken only beyond a 3% margin; the
  choice, every candidate's time in the dispatch's own measurement and the reason are in the
  JSON rows and the dispatch table). The default ``auto`` runs the same measurement among the
  candidates verified on a GPU (``kernels.dispatch.VERIFIED_CANDIDATES``; none yet: the
  reference);
* **train**: forward + backward in training mode (batch-statistics BN, running-statistics update),
  fp32 parameters under bf16 autocast (AMP), channels_last, the same implementations;
* **step**: one whole single-path Scarlet-A training step (forward, cross-entropy, backward, SGD)
  at batch 256, AMP bf16, channels_last: dispatch vs triton vs partial vs eager vs compile;
  images/s.

"ours" in the goals is ``dispatch``. The dispatch measures into a fresh cache folder per run
(``--cache-dir`` keeps one).

Times are medians of ``triton.testing.do_bench`` (L2 flushed between runs). The floor of a block
is ``performance.md`` section 2.5 with the copy bandwidth measured here (``BW``):

    B_fused = 2 (P_in Cin + P_out Cout) + 2 (Cin E + k^2 E + E Cout [+ 2 E R])     bytes
    t_floor = max(B_fused / BW,  2 (P_in Cin E + P_out E Cout) / 989e12 + 2 P_out E k^2 / 66.9e12)

and for forward + backward ``max(2 (3 |x| + 2 |y|) / BW, 3 (t_TC + t_dw))`` (backward ~ 2x the
forward FLOPs; traffic x, y forward and x, dy, dx backward). Peak rates are H100 SXM's (989 TFLOP/s
dense bf16 tensor cores, 66.9 TFLOP/s FP32 FMA; H200 has the same compute). ``% floor`` =
floor / time.

``--smoke`` runs everything on CPU under ``TRITON_INTERPRET=1`` with tiny shapes to show the script
works; its numbers mean nothing and it says so.
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

TC_FLOPS = 989e12  # H100 SXM dense bf16 tensor cores (performance.md section 1)
FMA_FLOPS = 66.9e12  # H100 SXM FP32 on CUDA cores


@dataclass
class Layer:
    index: int
    cin: int
    cout: int
    expansion: int
    kernel: int
    stride: int
    act: str
    se: bool
    size: int

    @property
    def name(self) -> str:
        return f"E{self.expansion}K{self.kernel}{'SE' if self.se else ''}"

    @property
    def shape(self) -> str:
        return f"{self.cin}->{self.cout} {self.size}x{self.size} s{self.stride}"


@dataclass
class Row:
    layer: Layer
    floor_fwd_us: float
    floor_train_us: float
    fwd_us: dict[str, float] = field(default_factory=dict)
    train_us: dict[str, float] = field(default_factory=dict)
    # the measured dispatch's decision per pass: {"fwd": {choice, times, reason, rejected}, ...}
    choice: dict[str, dict] = field(default_factory=dict)


def scarlet_a_layers(size: int) -> list[Layer]:
    from fastscarlet.space import get_space
    from fastscarlet.space.published import PUBLISHED

    model = PUBLISHED["scarlet_a"]
    space = get_space(model.space)
    hw = (size - 1) // space.stem.stride + 1
    layers = []
    for i, (spec, c) in enumerate(zip(space.layers, model.genome)):
        ch = space.choices[c]
        if not ch.identity:
            shape = (spec.in_channels, spec.out_channels, ch.expansion, ch.kernel, spec.stride)
            layers.append(Layer(i + 1, *shape, spec.activation, ch.se, hw))
        hw = (hw - 1) // spec.stride + 1
    return layers


def floors(layer: Layer, batch: int, bw: float) -> tuple[float, float]:
    """(forward, forward+backward) floors in seconds, performance.md section 2.5 (bf16)."""
    b = 2
    E = layer.cin * layer.expansion
    ho = (layer.size - 1) // layer.stride + 1
    p_in, p_out = batch * layer.size**2, batch * ho**2
    x_bytes, y_bytes = b * p_in * layer.cin, b * p_out * layer.cout
    weights = layer.cin * E + layer.kernel**2 * E + E * layer.cout
    if layer.se:
        weights += 2 * E * max(1, E // 4)
    t_hbm = (x_bytes + y_bytes + b * weights) / bw
    t_tc = 2 * (p_in * layer.cin * E + p_out * E * layer.cout) / TC_FLOPS
    t_dw = 2 * p_out * E * layer.kernel**2 / FMA_FLOPS
    fwd = max(t_hbm, t_tc + t_dw)
    train = max((3 * x_bytes + 2 * y_bytes) / bw, 3 * (t_tc + t_dw))
    return fwd, train


def traffic(layer: Layer, batch: int) -> tuple[float, float]:
    """Bytes our kernels move (forward inference, forward + backward training), counting each
    pass's reads and writes once (halo re-reads of the depthwise conv are assumed to hit L1/L2).

    inference, no SE (fused dw + project):  x + 2 h1 + y (+ y residual)
    inference, SE (h2 written once):        x + 2 h1 + 2 h2 + y (+ y)
    training forward:                       3 x + 2 h1 + (2 + SE) h2 + 3 y (+ y)
    training backward:                      4 x + 3 h1 + 6 h2 + 4 y (+ y) (+ 2 y + h2 unfused dW3)

    (training: BN1's statistics come from the Gram matrix of x, so the expand conv writes the
    activated ``h1`` directly and the backward rebuilds the expand output from ``x``.)
    """
    b = 2
    E = layer.cin * layer.expansion
    ho = (layer.size - 1) // layer.stride + 1
    p_in, p_out = batch * layer.size**2, batch * ho**2
    x, y = b * p_in * layer.cin, b * p_out * layer.cout
    h1, h2 = b * p_in * E, b * p_out * E
    res = y if (layer.stride == 1 and layer.cin == layer.cout) else 0
    fused_fwd = not layer.se and layer.cout <= 256
    fwd = x + 2 * h1 + (0 if fused_fwd else 2 * h2) + y + res
    train_fwd = 3 * x + 2 * h1 + (3 if layer.se else 2) * h2 + 3 * y + res
    train_bwd = 4 * x + 3 * h1 + 6 * h2 + 4 * y + res + (2 * y + h2 if layer.cout > 128 else 0)
    return fwd, train_fwd + train_bwd


def eager_traffic(layer: Layer, batch: int) -> float:
    """B_unfused of performance.md section 2.5 (inference; every op reads and writes HBM), plus
    the SE's pooling read and gating read + write of h2."""
    b = 2
    E = layer.cin * layer.expansion
    ho = (layer.size - 1) // layer.stride + 1
    p_in, p_out = batch * layer.size**2, batch * ho**2
    byt = (p_in * layer.cin + p_in * E) + 4 * p_in * E + (p_in * E + p_out * E) + 4 * p_out * E
    byt += p_out * E + p_out * layer.cout + 2 * p_out * layer.cout
    if layer.stride == 1 and layer.cin == layer.cout:
        byt += 3 * p_out * layer.cout
    if layer.se:
        byt += 3 * p_out * E
    return b * byt


def model_table(layers: list[Layer], batch: int, bw: float) -> str:
    """Floors and the traffic of our passes, derived (no timing): the best fraction of the floor
    this pass structure can reach if every pass ran at ``bw``."""
    lines = [
        f"Derived at {bw / 1e12:.2f} TB/s, batch {batch} (no measurement):",
        "",
        "| # | block | shape | fwd floor us | fwd eager MB | fwd ours MB | fwd ours at BW us "
        "| ceiling % | train floor us | train ours MB | train ours at BW us | ceiling % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    fr_f, fr_t, ratio = [], [], []
    for layer in layers:
        f_fwd, f_train = floors(layer, batch, bw)
        b_fwd, b_train = traffic(layer, batch)
        E = layer.cin * layer.expansion
        ho = (layer.size - 1) // layer.stride + 1
        t_c = (
            2 * (batch * layer.size**2 * layer.cin * E + batch * ho**2 * E * layer.cout) / TC_FLOPS
        )
        t_c += 2 * batch * ho**2 * E * layer.kernel**2 / FMA_FLOPS
        t_fwd, t_train = max(b_fwd / bw, t_c), max(b_train / bw, 3 * t_c)
        fr_f.append(f_fwd / t_fwd)
        fr_t.append(f_train / t_train)
        b_eager = eager_traffic(layer, batch)
        ratio.append(b_eager / b_fwd)
        lines.append(
            f"| {layer.index} | {layer.name} | {layer.shape} | {f_fwd * 1e6:.1f} "
            f"| {b_eager / 1e6:.0f} | {b_fwd / 1e6:.0f} | {t_fwd * 1e6:.1f} | {fr_f[-1]:.0%} "
            f"| {f_train * 1e6:.1f} "
            f"| {b_train / 1e6:.0f} | {t_train * 1e6:.1f} | {fr_t[-1]:.0%} |"
        )
    lines.append("")
    lines.append(
        f"Median ceiling: inference {statistics.median(fr_f):.0%} of the floor, training "
        f"{statistics.median(fr_t):.0%}. Median eager/ours inference traffic: "
        f"{statistics.median(ratio):.1f}x."
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def make_timer(gpu: bool, rep_ms: int) -> Callable[..., float]:
    """``timer(fn, grad_to_none=None) -> seconds`` (median)."""
    if gpu:
        from triton.testing import do_bench

        def timer(fn, grad_to_none=None):
            ms = do_bench(fn, warmup=max(5, rep_ms // 4), rep=rep_ms, grad_to_none=grad_to_none,
                          return_mode="median")  # fmt: skip
            return ms * 1e-3

        return timer

    def timer(fn, grad_to_none=None):  # smoke: one warm call, one timed call, no claims
        fn()
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    return timer


def copy_bandwidth(device, timer, smoke: bool) -> float:
    """Bytes/s of a device-to-device copy (read + write) of 1 GiB (16 MiB in smoke mode)."""
    import torch

    n = (16 if smoke else 1024) * 2**20 // 2
    a = torch.empty(n, dtype=torch.bfloat16, device=device)
    b = torch.empty_like(a)
    t = timer(lambda: b.copy_(a))
    return 2 * n * 2 / t


def bench_layer(layer: Layer, args, device, timer) -> Row:
    import copy

    import torch

    from fastscarlet.kernels.dispatch import kernel_mode
    from fastscarlet.kernels.testing import randomize_bn
    from fastscarlet.nn.blocks import MBConv, init_weights
    from fastscarlet.space import SEConfig

    torch.manual_seed(layer.index)
    block = MBConv(layer.cin, layer.cout, layer.expansion, layer.kernel, layer.stride, layer.act,
                   SEConfig() if layer.se else None)  # fmt: skip
    init_weights(block)
    randomize_bn(block)
    block = block.to(device)
    cl = torch.channels_last
    x = torch.randn(args.batch, layer.cin, layer.size, layer.size, device=device).to(
        memory_format=cl
    )
    bw = args.bandwidth
    f_fwd, f_train = floors(layer, args.batch, bw)
    row = Row(layer, f_fwd * 1e6, f_train * 1e6)

    # -- inference forward: bf16 module, eval, no_grad --------------------------------------
    inf = copy.deepcopy(block).to(args.dtype).eval()
    xb = x.to(args.dtype)

    def run(mode: str, fn=None):
        def call():
            with torch.no_grad(), kernel_mode(mode):
                return (fn if fn is not None else inf)(xb)

        return call

    impls = {name: run(name) for name in args.candidates}
    impls["dispatch"] = run("measure")
    impls["eager"] = run("reference")
    if not args.no_compile:
        torch._dynamo.reset()
        compiled = torch.compile(inf, backend=args.compile_backend)
        impls["compile"] = run("reference", compiled)
    impls["dispatch"]()  # the dispatch measures and decides here, outside the timing
    with torch.no_grad(), kernel_mode("measure"):
        row.choice["fwd"] = _decision(inf, xb)
    for name, fn in impls.items():
        row.fwd_us[name] = timer(fn) * 1e6

    # -- training forward + backward: fp32 module, bf16 autocast -----------------------------
    tr = copy.deepcopy(block).train()
    # Under AMP a block's input is the previous block's bf16 output.
    xg = x.to(args.dtype if device.type == "cuda" else torch.float32).requires_grad_()
    ho = (layer.size - 1) // layer.stride + 1
    dy = torch.randn(args.batch, layer.cout, ho, ho, device=device, dtype=torch.bfloat16)
    dy = dy.contiguous(memory_format=cl)
    params = [*tr.parameters(), xg]
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")

    def step(mode: str, module):
        def call():
            with kernel_mode(mode), autocast:
                y = module(xg)
            y.backward(dy.to(y.dtype))

        return call

    impls = {name: step(name, tr) for name in args.candidates}
    impls["dispatch"] = step("measure", tr)
    impls["eager"] = step("reference", tr)
    if not args.no_compile:
        torch._dynamo.reset()
        impls["compile"] = step("reference", torch.compile(tr, backend=args.compile_backend))
    impls["dispatch"]()
    with kernel_mode("measure"), autocast:
        row.choice["train"] = _decision(tr, xg)
    for name, fn in impls.items():
        row.train_us[name] = timer(fn, grad_to_none=params) * 1e6
    return row


def _decision(block, x) -> dict:
    """The measured dispatch's decision for ``block(x)`` in the current modes (cached by the
    call before: nothing is measured here)."""
    from dataclasses import asdict

    from fastscarlet.kernels import block_choice

    d = block_choice.choose(block, block.se, x)
    out = asdict(d)
    out.pop("cached")
    return out


def bench_step(args, device, timer) -> dict[str, float]:
    """Images/s of one whole single-path Scarlet-A training step (AMP bf16, channels_last)."""
    import copy

    import torch

    from fastscarlet.kernels.dispatch import kernel_mode
    from fastscarlet.nn.network import build_network
    from fastscarlet.space import get_space
    from fastscarlet.space.published import PUBLISHED

    model = PUBLISHED["scarlet_a"]
    torch.manual_seed(0)
    net = build_network(get_space(model.space), model.genome).to(device)
    net = net.to(memory_format=torch.channels_last).train()
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 1000, (args.batch,), device=device)
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")
    out = {}
    variants = [(name, name, False) for name in args.candidates]
    variants += [("dispatch", "measure", False), ("eager", "reference", False)]
    if not args.no_compile:
        variants.append(("compile", "reference", True))
    for name, mode, comp in variants:
        m = copy.deepcopy(net)
        opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)  # stays finite on noise
        fwd = torch.compile(m, backend=args.compile_backend) if comp else m
        if comp:
            torch._dynamo.reset()

        def call(fwd=fwd, opt=opt, mode=mode):
            with kernel_mode(mode), autocast:
                loss = torch.nn.functional.cross_entropy(fwd(x), target)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        if mode == "measure":
            call()  # every block's dispatch measures and decides here, outside the timing
        out[name] = args.batch / timer(call)
    return out


# ---------------------------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or a <= 0 else b / a


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def summarize(rows: list[Row], step: dict[str, float] | None) -> dict:
    def med(vals):
        vals = [v for v in vals if v is not None]
        return statistics.median(vals) if vals else None

    def lowest(vals):
        vals = [v for v in vals if v is not None]
        return min(vals) if vals else None

    f = [(r.fwd_us.get(OURS), r) for r in rows]
    t = [(r.train_us.get(OURS), r) for r in rows]
    s = {
        "fwd_x_eager": med([_ratio(o, r.fwd_us.get("eager")) for o, r in f]),
        "fwd_x_compile": med([_ratio(o, r.fwd_us.get("compile")) for o, r in f]),
        "fwd_floor_frac": med([_ratio(o, r.floor_fwd_us) for o, r in f]),
        "train_x_eager": med([_ratio(o, r.train_us.get("eager")) for o, r in t]),
        "train_x_compile": med([_ratio(o, r.train_us.get("compile")) for o, r in t]),
        "train_floor_frac": med([_ratio(o, r.floor_train_us) for o, r in t]),
        # the floor goal: the worst shape's eager/dispatch (1.0 = as fast as the reference)
        "fwd_worst_x_eager": lowest([_ratio(o, r.fwd_us.get("eager")) for o, r in f]),
        "train_worst_x_eager": lowest([_ratio(o, r.train_us.get("eager")) for o, r in t]),
        "choices": {
            p: {
                c: sum(1 for r in rows if r.choice.get(p, {}).get("choice") == c)
                for c in sorted({r.choice.get(p, {}).get("choice", "-") for r in rows})
            }
            for p in ("fwd", "train")
        },
    }
    if step:
        s["step_img_s"] = step
        s["step_x_eager"] = step[OURS] / step["eager"]
        s["step_worst_x_eager"] = s["step_x_eager"]
        if "compile" in step:
            s["step_x_compile"] = step[OURS] / step["compile"]
    return s


OURS = "dispatch"
NOISE = 0.97  # "no slower than the reference beyond the noise": do_bench medians differ ~1-3%

GOALS = [
    ("fwd_worst_x_eager", NOISE, "floor: no inference shape slower than eager (worst shape)"),
    ("train_worst_x_eager", NOISE, "floor: no training shape slower than eager (worst shape)"),
    ("step_worst_x_eager", NOISE, "floor: the whole step no slower than eager"),
    ("fwd_x_eager", 2.5, "inference fwd >= 2.5x eager (median)"),
    ("fwd_x_compile", 1.5, "inference fwd >= 1.5x torch.compile (median)"),
    ("fwd_floor_frac", 0.5, "inference fwd >= 50% of the floor (median)"),
    ("train_x_eager", 1.5, "training fwd+bwd >= 1.5x eager (median)"),
    ("train_x_compile", 1.2, "training fwd+bwd >= 1.2x torch.compile (median)"),
    ("step_x_eager", 1.3, "Scarlet-A training step >= 1.3x eager AMP"),
]


def kernel_variants() -> dict[str, str]:
    """The kernel choices in force (``FASTSCARLET_KERNELS``, ``FASTSCARLET_DW_FWD``,
    ``FASTSCARLET_DW_WGRAD``), recorded with every result."""
    from fastscarlet.kernels.depthwise import fwd_mode, wgrad_mode
    from fastscarlet.kernels.dispatch import current_mode

    return {"kernels": current_mode(), "dw_fwd": fwd_mode(), "dw_wgrad": wgrad_mode()}


def table(rows: list[Row], summary: dict, header: dict) -> str:
    """The markdown tables (also what is printed): inference, training, the dispatch's choices,
    the step and the goals."""
    lines = [
        f"Device: {header['device']}; torch {header['torch']}, triton {header['triton']}; "
        f"{header['date']}; batch {header['batch']}, {header['size']}x{header['size']} input, "
        f"{header['dtype']}; copy bandwidth {header['bandwidth_gbs']:.0f} GB/s; kernels "
        + ", ".join(f"{k}={v}" for k, v in header.get("kernels", {}).items())
        + ".",
    ]
    cands = header.get("candidates", ["triton", "partial"])
    cols = [*cands, "eager", "compile", OURS]
    for title, key, floor in (("Inference forward", "fwd_us", "floor_fwd_us"),
                              ("Training forward + backward", "train_us", "floor_train_us")):  # fmt: skip
        lines += [
            "",
            f"{title}, us (median); x = eager / dispatch; % floor = floor / dispatch:",
            "",
            "| # | block | shape | floor | "
            + " | ".join(cols)
            + " | x eager | x compile | % floor |",
            "|---|---|---|---|" + "---|" * (len(cols) + 3),
        ]
        for r in rows:
            t = getattr(r, key)
            ours = t.get(OURS)
            lines.append(
                f"| {r.layer.index} | {r.layer.name} | {r.layer.shape} | {getattr(r, floor):.1f} | "
                + " | ".join(_fmt(t.get(c), ".1f") for c in cols)
                + f" | {_fmt(_ratio(ours, t.get('eager')), '.2f')}"
                f" | {_fmt(_ratio(ours, t.get('compile')), '.2f')}"
                f" | {_fmt(_ratio(ours, getattr(r, floor)), '.0%')} |"
            )
    lines += [
        "",
        "Dispatch table (FASTSCARLET_KERNELS=measure; each candidate's time in the dispatch's own "
        "measurement, us):",
        "",
        "| # | block | shape | pass | chose | candidate times | why |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for p in ("fwd", "train"):
            d = r.choice.get(p)
            if not d:
                continue
            times = ", ".join(f"{n} {v * 1e6:.1f}" for n, v in sorted(d.get("times", {}).items()))
            lines.append(
                f"| {r.layer.index} | {r.layer.name} | {r.layer.shape} | {p} | {d['choice']} "
                f"| {times} | {d.get('reason', '')} |"
            )
    lines.append("")
    if "step_img_s" in summary:
        st = summary["step_img_s"]
        parts = ", ".join(f"{k} {v:.0f} img/s" for k, v in st.items())
        lines.append(f"Whole Scarlet-A training step: {parts}.")
        lines.append("")
    lines.append("| goal | measured | met |")
    lines.append("|---|---|---|")
    for key, target, text in GOALS:
        v = summary.get(key)
        shown = "-" if v is None else (f"{v:.0%}" if "frac" in key else f"{v:.2f}x")
        met = "-" if v is None else ("yes" if v >= target else "no")
        lines.append(f"| {text} | {shown} | {met} |")
    return "\n".join(lines)


def parse_layers(text: str) -> set[int]:
    """``"1-7,9"`` -> {1, ..., 7, 9}."""
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def merge(paths: list[str], markdown: str | None, json_out: str | None) -> int:
    """One table from the JSON files of partial runs (same machine; the first header is kept)."""
    rows: dict[int, Row] = {}
    header, step = None, None
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        header = header or data["header"]
        for r in data["rows"]:
            r["layer"] = Layer(**r["layer"])
            rows[r["layer"].index] = Row(**r)
        step = data["summary"].get("step_img_s") or step
    ordered = [rows[i] for i in sorted(rows)]
    summary = summarize(ordered, step)
    text = table(ordered, summary, header)
    print(text)
    if markdown:
        with open(markdown, "w") as f:
            f.write(text + "\n")
    if json_out:
        with open(json_out, "w") as f:
            json.dump({"header": header, "rows": [asdict(r) for r in ordered], "summary": summary,
                       "smoke": False, "merged_from": paths}, f, indent=1)  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU + Triton interpreter, tiny shapes")
    ap.add_argument(
        "--model", action="store_true",
        help="print the floors and our pass traffic (derived, no timing, no GPU needed)",
    )  # fmt: skip
    ap.add_argument("--bandwidth", type=float, default=3.35e12, help="B/s for --model")
    ap.add_argument("--batch", type=int, help="default 256 (smoke: 2)")
    ap.add_argument("--size", type=int, help="input resolution, default 224 (smoke: 32)")
    ap.add_argument("--layers", help="1-based layer numbers, e.g. 1-7,9 (default: all 19)")
    ap.add_argument(
        "--merge", nargs="+", metavar="JSON",
        help="combine the --json files of partial runs (e.g. --layers 1-10 / 11-19 --no-step / "
        "--layers 0 --step) into one table; runs nothing",
    )  # fmt: skip
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile columns")
    ap.add_argument(
        "--candidates", default="triton,partial",
        help="the kernel candidates timed as forced columns (the dispatch measures all of them)",
    )  # fmt: skip
    ap.add_argument(
        "--cache-dir",
        help="the dispatch's decision cache (default: a fresh temporary folder, so every "
        "signature is measured in this run)",
    )  # fmt: skip
    ap.add_argument(
        "--step", action=argparse.BooleanOptionalAction, default=None,
        help="time the whole Scarlet-A step (default: yes on GPU, no with --smoke: the "
        "interpreter needs ~5 min for it)",
    )  # fmt: skip
    ap.add_argument("--rep-ms", type=int, default=100, help="do_bench repetition time per timing")
    ap.add_argument("--json", help="write rows and summary here (rewritten after every layer)")
    ap.add_argument("--markdown", help="write the table here")
    args = ap.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.markdown, args.json)
    if args.model:
        layers = scarlet_a_layers(args.size or 224)
        print(model_table(layers, args.batch or 256, args.bandwidth))
        return 0
    if args.smoke:  # before anything imports triton
        os.environ["TRITON_INTERPRET"] = "1"
    import tempfile

    os.environ["FASTSCARLET_CACHE_DIR"] = args.cache_dir or tempfile.mkdtemp(prefix="dispatch-")
    args.candidates = [c.strip() for c in args.candidates.split(",") if c.strip()]
    import torch

    gpu = not args.smoke
    if gpu and not torch.cuda.is_available():
        ap.error("no CUDA device: run with --smoke on CPU (numbers are then meaningless)")
    device = torch.device("cuda" if gpu else "cpu")
    args.batch = args.batch or (256 if gpu else 2)
    args.size = args.size or (224 if gpu else 32)
    args.compile_backend = "inductor" if gpu else "aot_eager"
    # The interpreter's bf16 tl.dot is wrong (numpy has no bf16): smoke runs fp32.
    args.dtype = torch.bfloat16 if gpu else torch.float32
    if args.smoke and not args.layers:
        args.layers = "1,5"  # a strided and an SE block; the interpreter takes ~10 s per layer
    if gpu:
        torch.backends.cudnn.benchmark = True
    timer = make_timer(gpu, args.rep_ms)
    args.bandwidth = copy_bandwidth(device, timer, args.smoke)  # measured, replaces --bandwidth
    import triton

    header = {
        "device": torch.cuda.get_device_name(0) if gpu else f"CPU {platform.processor()} (smoke)",
        "kernels": kernel_variants(),
        "candidates": args.candidates,
        "dispatch_cache": os.environ["FASTSCARLET_CACHE_DIR"],
        "torch": torch.__version__,
        "triton": triton.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "batch": args.batch,
        "size": args.size,
        "bandwidth_gbs": args.bandwidth / 1e9,
        "dtype": str(args.dtype).replace("torch.", ""),
        "command": " ".join(["python", "benchmarks/bench_mbconv.py", *(argv or sys.argv[1:])]),
    }
    layers = scarlet_a_layers(args.size)
    if args.layers:
        keep = parse_layers(args.layers)
        layers = [layer for layer in layers if layer.index in keep]
    rows: list[Row] = []
    step = None

    def dump() -> dict:
        summary = summarize(rows, step)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"header": header, "rows": [asdict(r) for r in rows],
                           "summary": summary, "smoke": args.smoke}, f, indent=1)  # fmt: skip
        return summary

    for layer in layers:
        t0 = time.time()
        rows.append(bench_layer(layer, args, device, timer))
        dump()
        print(f"[bench] layer {layer.index:2d} {layer.name:8s} {layer.shape:22s} "
              f"{time.time() - t0:5.1f}s", file=sys.stderr, flush=True)  # fmt: skip
    if args.step if args.step is not None else gpu:
        t0 = time.time()
        step = bench_step(args, device, timer)
        print(f"[bench] whole step {time.time() - t0:.1f}s", file=sys.stderr, flush=True)
    summary = dump()
    text = table(rows, summary, header)
    if args.smoke:
        text = (
            "SMOKE RUN (CPU, Triton interpreter, tiny shapes): the numbers mean nothing.\n\n" + text
        )
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
