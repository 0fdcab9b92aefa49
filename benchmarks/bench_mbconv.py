"""Fused MBConv Triton kernels vs PyTorch eager vs torch.compile, against the physical floor.

    python benchmarks/bench_mbconv.py                      # GPU: the issue-6 table (bf16)
    python benchmarks/bench_mbconv.py --markdown r.md --json r.json
    python benchmarks/bench_mbconv.py --smoke              # CPU, Triton interpreter, tiny shapes

For each of the 19 Scarlet-A layers (``fastscarlet.models.PUBLISHED["scarlet_a"]``, the
Scarlet space's shapes at 224x224 input, batch 256), side by side in one process:

* **fwd**: inference forward of the block in eval mode, bf16 parameters and activations,
  channels_last, ``torch.no_grad()``: ours (the module with the kernels, BN folded in-kernel),
  ``eager`` (the same module forced to the PyTorch reference: cuDNN convs, BN, activations, SE),
  ``compile`` (``torch.compile`` of the reference);
* **train**: forward + backward in training mode (batch-statistics BN, running-statistics update),
  fp32 parameters under bf16 autocast (AMP), channels_last, same three implementations;
* **step**: one whole single-path Scarlet-A training step (forward, cross-entropy, backward, SGD)
  at batch 256, AMP bf16, channels_last: ours vs eager vs compile; images/s.

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


def scarlet_a_layers(size: int) -> list[Layer]:
    from fastscarlet.models import PUBLISHED
    from fastscarlet.space import get_space

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

    from fastscarlet.blocks import MBConv, init_weights
    from fastscarlet.space import SEConfig

    torch.manual_seed(layer.index)
    block = MBConv(layer.cin, layer.cout, layer.expansion, layer.kernel, layer.stride, layer.act,
                   SEConfig() if layer.se else None)  # fmt: skip
    init_weights(block)
    randomize_bn(block)
    block = block.to(device)
    ours_mode = "triton" if args.smoke else "auto"
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

    impls = {"ours": run(ours_mode), "eager": run("reference")}
    if not args.no_compile:
        torch._dynamo.reset()
        compiled = torch.compile(inf, backend=args.compile_backend)
        impls["compile"] = run("reference", compiled)
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

    impls = {"ours": step(ours_mode, tr), "eager": step("reference", tr)}
    if not args.no_compile:
        torch._dynamo.reset()
        impls["compile"] = step("reference", torch.compile(tr, backend=args.compile_backend))
    for name, fn in impls.items():
        row.train_us[name] = timer(fn, grad_to_none=params) * 1e6
    return row


def bench_step(args, device, timer) -> dict[str, float]:
    """Images/s of one whole single-path Scarlet-A training step (AMP bf16, channels_last)."""
    import copy

    import torch
    from fastscarlet.kernels.dispatch import kernel_mode

    from fastscarlet.models import PUBLISHED
    from fastscarlet.network import build_network
    from fastscarlet.space import get_space

    model = PUBLISHED["scarlet_a"]
    torch.manual_seed(0)
    net = build_network(get_space(model.space), model.genome).to(device)
    net = net.to(memory_format=torch.channels_last).train()
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 1000, (args.batch,), device=device)
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")
    out = {}
    variants = [("ours", "triton" if args.smoke else "auto", False), ("eager", "reference", False)]
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

    s = {
        "fwd_x_eager": med([_ratio(r.fwd_us.get("ours"), r.fwd_us.get("eager")) for r in rows]),
        "fwd_x_compile": med([_ratio(r.fwd_us.get("ours"), r.fwd_us.get("compile")) for r in rows]),
        "fwd_floor_frac": med([_ratio(r.fwd_us.get("ours"), r.floor_fwd_us) for r in rows]),
        "train_x_eager": med(
            [_ratio(r.train_us.get("ours"), r.train_us.get("eager")) for r in rows]
        ),
        "train_x_compile": med(
            [_ratio(r.train_us.get("ours"), r.train_us.get("compile")) for r in rows]
        ),
        "train_floor_frac": med([_ratio(r.train_us.get("ours"), r.floor_train_us) for r in rows]),
    }
    if step:
        s["step_img_s"] = step
        s["step_x_eager"] = step["ours"] / step["eager"]
        if "compile" in step:
            s["step_x_compile"] = step["ours"] / step["compile"]
    return s


GOALS = [
    ("fwd_x_eager", 2.5, "inference fwd >= 2.5x eager (median)"),
    ("fwd_x_compile", 1.5, "inference fwd >= 1.5x torch.compile (median)"),
    ("fwd_floor_frac", 0.5, "inference fwd >= 50% of the floor (median)"),
    ("train_x_eager", 1.5, "training fwd+bwd >= 1.5x eager (median)"),
    ("train_x_compile", 1.2, "training fwd+bwd >= 1.2x torch.compile (median)"),
    ("step_x_eager", 1.3, "Scarlet-A training step >= 1.3x eager AMP"),
]


def table(rows: list[Row], summary: dict, header: dict) -> str:
    """The markdown table (also what is printed)."""
    lines = [
        f"Device: {header['device']}; torch {header['torch']}, triton {header['triton']}; "
        f"{header['date']}; batch {header['batch']}, {header['size']}x{header['size']} input, "
        f"{header['dtype']}; copy bandwidth {header['bandwidth_gbs']:.0f} GB/s.",
        "",
        "| # | block | shape | fwd floor us | fwd ours | eager | compile | x eager | x compile "
        "| % floor | train floor us | train ours | eager | compile | x eager | x compile | % floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f, t = r.fwd_us, r.train_us
        lines.append(
            f"| {r.layer.index} | {r.layer.name} | {r.layer.shape} | {r.floor_fwd_us:.1f} "
            f"| {_fmt(f.get('ours'), '.1f')} | {_fmt(f.get('eager'), '.1f')} "
            f"| {_fmt(f.get('compile'), '.1f')} "
            f"| {_fmt(_ratio(f.get('ours'), f.get('eager')), '.2f')} "
            f"| {_fmt(_ratio(f.get('ours'), f.get('compile')), '.2f')} "
            f"| {_fmt(_ratio(f.get('ours'), r.floor_fwd_us), '.0%')} "
            f"| {r.floor_train_us:.1f} | {_fmt(t.get('ours'), '.1f')} "
            f"| {_fmt(t.get('eager'), '.1f')} | {_fmt(t.get('compile'), '.1f')} "
            f"| {_fmt(_ratio(t.get('ours'), t.get('eager')), '.2f')} "
            f"| {_fmt(_ratio(t.get('ours'), t.get('compile')), '.2f')} "
            f"| {_fmt(_ratio(t.get('ours'), r.floor_train_us), '.0%')} |"
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU + Triton interpreter, tiny shapes")
    ap.add_argument("--batch", type=int, help="default 256 (smoke: 2)")
    ap.add_argument("--size", type=int, help="input resolution, default 224 (smoke: 32)")
    ap.add_argument("--layers", help="comma-separated 1-based layer numbers (default: all 19)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile columns")
    ap.add_argument(
        "--step", action=argparse.BooleanOptionalAction, default=None,
        help="time the whole Scarlet-A step (default: yes on GPU, no with --smoke: the "
        "interpreter needs ~5 min for it)",
    )  # fmt: skip
    ap.add_argument("--rep-ms", type=int, default=100, help="do_bench repetition time per timing")
    ap.add_argument("--json", help="write rows and summary here (rewritten after every layer)")
    ap.add_argument("--markdown", help="write the table here")
    args = ap.parse_args(argv)
    if args.smoke:  # before anything imports triton
        os.environ["TRITON_INTERPRET"] = "1"
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
    args.bandwidth = copy_bandwidth(device, timer, args.smoke)
    import triton

    header = {
        "device": torch.cuda.get_device_name(0) if gpu else f"CPU {platform.processor()} (smoke)",
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
        keep = {int(v) for v in args.layers.split(",")}
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
