"""Compile the kernels a block would launch for an sm_90 (H100/H200) target, without a GPU.

The block implementations run on meta tensors inside :func:`record_launches`, which captures every
launch (kernel, constexprs, warps, stages, argument types) instead of running it; each distinct
specialisation is then compiled with ``triton.compile`` for ``GPUTarget("cuda", 90, 32)`` and its
PTX assembled by the ``ptxas`` that ships with Triton, which reports registers and spills. This
catches what the CPU interpreter cannot: ``tl.dot`` shape/dtype rules, layout conversions, and
register pressure of the tile sizes chosen for the GPU.

    python tools/aot.py              # the 19 Scarlet-A layers, train + inference
    python tools/aot.py --quick      # one representative block
    python tools/aot.py --layers 2 --sass _dw_   # + the loops of the depthwise SASS
    python tools/aot.py --dw-fwd     # the two depthwise forward kernels, per output
    python tools/aot.py --halo       # the halo depthwise kernels: registers and spills per layer
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from fastscarlet.kernels.launch import Launch, record_launches

_DTYPES = {
    torch.float32: "fp32",
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
    torch.int64: "i64",
    torch.int32: "i32",
}


@dataclass(frozen=True)
class SassLoop:
    """One backward branch of the SASS: the loop body's addresses and its opcodes (a nested
    loop's instructions are counted in its parent too; each appears once, not per trip)."""

    start: int
    end: int
    ops: dict[str, int]

    def line(self) -> str:
        keys = ("SHFL", "BAR", "FFMA", "FADD", "FMUL", "LDG", "STG", "HGMMA", "LDS", "STS")
        counts = ", ".join(f"{k} {self.ops[k]}" for k in keys if self.ops.get(k))
        return f"loop {self.start:#06x}-{self.end:#06x}: {sum(self.ops.values())} instructions ({counts})"


_SASS_INS = re.compile(r"^\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", re.M)
_PREDICATE = re.compile(r"^@!?U?P\w+\s+")


def sass_loops(sass: str) -> list[SassLoop]:
    """The loops of ``cuobjdump -sass`` output: every branch to a lower address closes one."""
    ins = [(int(a, 16), _PREDICATE.sub("", text)) for a, text in _SASS_INS.findall(sass)]
    loops = []
    for addr, text in ins:
        m = re.match(r"BRA\b.*?0x([0-9a-f]+)", text)
        if m and int(m.group(1), 16) < addr:
            start = int(m.group(1), 16)
            ops = Counter(t.split()[0].split(".")[0] for a, t in ins if start <= a <= addr)
            loops.append(SassLoop(start, addr, dict(ops)))
    return loops


@dataclass(frozen=True)
class CompiledKernel:
    name: str
    constexprs: str
    num_warps: int
    registers: int
    spill_bytes: int
    shared_bytes: int
    loads: dict[int, int]  # bytes per ld.global instruction -> how many in the PTX
    stores: dict[int, int]  # the same for st.global
    loops: list[SassLoop] = field(default_factory=list)

    @property
    def narrow_loads(self) -> int:
        """Global loads of fewer than 4 bytes each: one 16-bit element per instruction, the mark
        of an access the compiler could not vectorise (alignment or mask not provable)."""
        return sum(n for b, n in self.loads.items() if b < 4)


_MEM = re.compile(r"\b(ld|st)\.global(?:\.[A-Za-z0-9_:]+)*?(?:\.v(\d))?\.[bfsu](8|16|32|64)\b")


# global -> shared copies of software-pipelined loads (num_stages > 1): "..., [src], 0x10, ..."
_ASYNC = re.compile(
    r"\bcp\.async\.c[ag]\.shared\.global(?:\.[a-z0-9_]+)*\s+\[[^]]*\],\s*\[[^]]*\],\s*(0x[0-9a-fA-F]+|\d+)"
)


def memory_widths(ptx: str) -> tuple[dict[int, int], dict[int, int]]:
    """Count the global loads (``ld.global`` and ``cp.async``) and stores of ``ptx`` by bytes
    per instruction."""
    out: tuple[dict[int, int], dict[int, int]] = ({}, {})
    for op, vec, bits in _MEM.findall(ptx):
        width = int(vec or 1) * int(bits) // 8
        counts = out[0 if op == "ld" else 1]
        counts[width] = counts.get(width, 0) + 1
    for size in _ASYNC.findall(ptx):
        width = int(size, 0)
        out[0][width] = out[0].get(width, 0) + 1
    return out


def _int_spec(value: int) -> tuple[str, str]:
    """Triton's launch-time specialisation of an int argument: ``(type, "D" | "")``, or
    ``("constexpr", "")`` for the value 1 (Triton folds it)."""
    if value == 1:
        return "constexpr", ""
    kind = "i64" if abs(value) >= 2**31 else "i32"
    return kind, "D" if value % 16 == 0 else ""


def _signature(launch: Launch) -> tuple[dict[str, str], dict[str, object], dict]:
    """Signature, constexprs and attributes of the specialisation Triton compiles at launch.

    As ``JITFunction.run`` does: tensors (16-byte aligned, as PyTorch allocates) and ints divisible
    by 16 carry ``tt.divisibility = 16``, an int equal to 1 becomes a constant. Without these the
    compiler cannot prove alignment, and a kernel compiled here would differ from the one that runs
    (scalar instead of vector loads, other registers)."""
    fn = launch.kernel
    names = [p.name for p in fn.params if not p.is_constexpr]
    if len(names) != len(launch.args):
        raise ValueError(f"{fn.__name__}: {len(launch.args)} arguments for {len(names)} parameters")
    sig: dict[str, str] = {}
    constexprs = dict(launch.constexprs)
    attrs: dict[tuple[int, ...], list[list]] = {}
    divisible = [["tt.divisibility", 16]]
    for name, arg in zip(names, launch.args):
        idx = (fn.arg_names.index(name),)
        if isinstance(arg, torch.Tensor):
            sig[name] = "*" + _DTYPES[arg.dtype]
            attrs[idx] = divisible
        elif isinstance(arg, bool):
            sig[name] = "i1"
        elif isinstance(arg, int):
            kind, spec = _int_spec(arg)
            sig[name] = kind
            if kind == "constexpr":
                constexprs[name] = arg
            elif spec == "D":
                attrs[idx] = divisible
        elif isinstance(arg, float):
            sig[name] = "fp32"
        else:
            raise TypeError(f"{fn.__name__}.{name}: unsupported argument type {type(arg).__name__}")
    for p in fn.params:
        if p.is_constexpr:
            sig[p.name] = "constexpr"
    return sig, constexprs, attrs


def _ptxas() -> str:
    import triton.backends.nvidia as nv

    return os.path.join(os.path.dirname(nv.__file__), "bin", "ptxas")


def compile_launch(launch: Launch, arch: int = 90, sass: bool = False) -> CompiledKernel:
    """Compile one recorded launch for ``sm_<arch>``; report registers, spills, shared memory,
    global loads and stores, and with ``sass`` the loops of the SASS (``cuobjdump``)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig, constexprs, attrs = _signature(launch)
    src = ASTSource(fn=launch.kernel, signature=sig, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(
        src,
        target=GPUTarget("cuda", arch, 32),
        options={"num_warps": launch.num_warps, "num_stages": launch.num_stages},
    )
    ptx = compiled.asm["ptx"]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
        cubin = os.path.join(tmp, "k.cubin")
        out = subprocess.run(
            [_ptxas(), "-v", f"--gpu-name={gpu}", path, "-o", cubin],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        loops = []
        if sass:
            cuobjdump = os.path.join(os.path.dirname(_ptxas()), "cuobjdump")
            dump = subprocess.run(
                [cuobjdump, "-sass", cubin], capture_output=True, text=True, check=True
            ).stdout
            loops = sass_loops(dump)
    regs = re.search(r"Used (\d+) registers", out)
    spills = re.search(r"(\d+) bytes spill stores", out)
    keys = ", ".join(f"{k}={v}" for k, v in sorted(constexprs.items()))
    loads, stores = memory_widths(ptx)
    return CompiledKernel(
        launch.kernel.__name__,
        keys,
        launch.num_warps,
        int(regs.group(1)) if regs else -1,
        int(spills.group(1)) if spills else -1,
        int(compiled.metadata.shared),
        loads,
        stores,
        loops,
    )


def _key(launch: Launch) -> tuple:
    sig, constexprs, attrs = _signature(launch)
    return (
        launch.kernel.__name__,
        tuple(sorted(sig.items())),
        tuple(sorted(constexprs.items())),
        tuple(sorted(attrs)),
        launch.num_warps,
        launch.num_stages,
    )


def unique(launches: Iterable[Launch]) -> list[Launch]:
    """One launch per distinct compiled specialisation."""
    seen: dict[tuple, Launch] = {}
    for launch in launches:
        seen.setdefault(_key(launch), launch)
    return list(seen.values())


def record_block(
    cin: int,
    cout: int,
    expansion: int,
    kernel: int,
    stride: int,
    act: str = "hswish",
    se: bool = False,
    *,
    batch: int = 256,
    size: int = 56,
    dtype: torch.dtype = torch.bfloat16,
    training: bool = True,
    expand_stride: int = 1,
) -> list[Launch]:
    """The launches of one MBConv call (forward, and backward when ``training``), on meta tensors."""
    from fastscarlet.kernels.mbconv_host import (
        mbconv_infer_impl,
        mbconv_train_bwd_impl,
        mbconv_train_fwd_impl,
    )

    meta = torch.device("meta")
    hidden = cin * expansion
    red = max(1, hidden // 4)

    def t(*shape: int, dt: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.empty(shape, dtype=dt, device=meta)

    x = torch.empty((batch, cin, size, size), dtype=dtype, device=meta).contiguous(
        memory_format=torch.channels_last
    )
    w1, wdw, w3 = t(hidden, cin, 1, 1), t(hidden, 1, kernel, kernel), t(cout, hidden, 1, 1)
    v_h, v_o = t(hidden), t(cout)
    sew = (t(red, hidden, 1, 1), t(red), t(hidden, red, 1, 1), t(hidden)) if se else (None,) * 4
    names = ("relu", "hsigmoid") if se else ("none", "none")
    residual = stride == 1 and expand_stride == 1 and cin == cout
    cfg = (stride, expand_stride, act, *names, residual)
    with record_launches() as launches:
        if training:
            y, z2, z3, stats, se_buf = mbconv_train_fwd_impl(
                x, w1, v_h, v_h, wdw, v_h, v_h, w3, v_o, v_o, *sew, *cfg, 1e-5, 1e-5, 1e-5
            )
            mbconv_train_bwd_impl(
                torch.empty_like(y), x, z2, z3, stats, se_buf, w1, v_h, wdw, v_h, w3, v_o,
                *sew, *cfg, True,
            )  # fmt: skip
        else:
            mbconv_infer_impl(
                x, w1, v_h, v_h, v_h, v_h, wdw, v_h, v_h, v_h, v_h, w3, v_o, v_o, v_o, v_o, *sew,
                *cfg, 1e-5, 1e-5, 1e-5,
            )  # fmt: skip
    return launches


def scarlet_a_blocks() -> list[dict]:
    """The 19 Scarlet-A layers at 224x224 input: keyword arguments of :func:`record_block`."""
    from fastscarlet.space import get_space
    from fastscarlet.space.published import PUBLISHED

    model = PUBLISHED["scarlet_a"]
    space = get_space(model.space)
    size = 224 // space.stem.stride
    out = []
    for layer, c in zip(space.layers, model.genome):
        choice = space.choices[c]
        if not choice.identity:
            kw = dict(cin=layer.in_channels, cout=layer.out_channels, expansion=choice.expansion)
            kw.update(kernel=choice.kernel, stride=layer.stride, act=layer.activation)
            out.append(dict(kw, se=choice.se, size=size))
        size = (size - 1) // layer.stride + 1
    return out


def dw_fwd_cost(launch: Launch, loops: list[SassLoop]) -> tuple[float, float]:
    """``(warp instructions per output element, FFMA share)`` of a depthwise forward launch
    (``_dw_conv_fwd_kernel`` or ``_dw_sweep_fwd_kernel``), from its SASS loops: the kernel-row
    loop (the innermost, ``k`` trips per image) plus the rest of the image loop, for every
    program, image and warp of the grid, over the ``N Ho Wo C`` outputs. A static count of what
    the schedulers issue, including masked-off tile margins; the per-program set-up and the
    final reductions are left out."""
    k = int(launch.constexprs["KSIZE"])
    inner = min(loops, key=lambda lp: lp.end - lp.start)
    outer = max(loops, key=lambda lp: lp.end - lp.start)
    per_image = sum(outer.ops.values()) + (k - 1) * sum(inner.ops.values())
    ffma = outer.ops.get("FFMA", 0) + (k - 1) * inner.ops.get("FFMA", 0)
    C, Ho, Wo = (int(launch.args[i]) for i in (12, 15, 16))
    tiles, _, cblocks = launch.grid
    per_output = tiles * cblocks * per_image * launch.num_warps / (Ho * Wo * C)
    return per_output, ffma / per_image


def dw_fwd_table(blocks: list[tuple[int, dict]], arch: int = 90) -> list[str]:
    """Markdown rows: each ``(layer number, block)``'s depthwise forward (inference and
    training) in both ``FASTSCARLET_DW_FWD`` modes, by :func:`dw_fwd_cost`."""
    from fastscarlet.kernels.depthwise import _dw_conv_fwd_kernel, _dw_sweep_fwd_kernel

    names = (_dw_conv_fwd_kernel.__name__, _dw_sweep_fwd_kernel.__name__)
    rows = [
        "| layer | k | s | C | Ho | mode | tile instr/output | sweep instr/output | ratio "
        "| tile FFMA share | sweep FFMA share | registers tile, sweep (warps) |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    old = os.environ.get("FASTSCARLET_DW_FWD")
    try:
        for n, kw in blocks:
            for training in (False, True):
                cost, regs = [], []
                for mode in ("tile", "sweep"):
                    os.environ["FASTSCARLET_DW_FWD"] = mode
                    launch = next(
                        (lp for lp in record_block(**kw, training=training)
                         if lp.kernel.__name__ in names), None,
                    )  # fmt: skip
                    if launch is None:  # inference without SE: the fused dw + project kernel
                        break
                    compiled = compile_launch(launch, arch, sass=True)
                    cost.append(dw_fwd_cost(launch, compiled.loops))
                    regs.append(f"{compiled.registers} ({launch.num_warps})")
                    shape = launch.args[12], launch.args[15]
                if not cost:
                    continue
                (t, tf), (w, wf) = cost
                rows.append(
                    f"| {n} | {kw['kernel']} | {kw['stride']} | {shape[0]} | {shape[1]} | "
                    f"{'train' if training else 'infer'} | {t:.2f} | {w:.2f} | {t / w:.2f}x "
                    f"| {tf:.0%} | {wf:.0%} | {', '.join(regs)} |"
                )
    finally:
        if old is None:
            os.environ.pop("FASTSCARLET_DW_FWD", None)
        else:
            os.environ["FASTSCARLET_DW_FWD"] = old
    return rows


def record_halo(cin: int, expansion: int, kernel: int, stride: int, size: int, **_) -> list:
    """The launches of the halo depthwise kernels for one layer's depthwise conv (batch 256,
    bf16): a training forward with the BN1 + h-swish prologue and BN statistics, as the block
    would run it, and the backward (dx and dW)."""
    from fastscarlet.kernels.depthwise_halo import dw_halo_bwd, dw_halo_fwd

    meta, N, C, H, k, s = torch.device("meta"), 256, cin * expansion, size, kernel, stride
    Ho = (H - 1) // s + 1
    x = torch.empty(N * H * H, C, dtype=torch.bfloat16, device=meta)
    out = torch.empty(N * Ho * Ho, C, dtype=torch.bfloat16, device=meta)
    w, stats = torch.empty(C, 1, k, k, device=meta), torch.empty(2, C, device=meta)
    with record_launches() as launches:
        dw_halo_fwd(x, w, (N, H, H), s, out=out, pro_vecs=(stats[0], stats[1]),
                    pro_act="hswish", stats=stats)  # fmt: skip
        dw_halo_bwd(out, x, w, (N, H, H), s, torch.empty_like(x),
                    torch.empty(C, k * k, device=meta))  # fmt: skip
    return launches


def halo_table(blocks: list[tuple[int, dict]], arch: int = 90) -> list[str]:
    """Markdown rows: registers and spills of each layer's halo depthwise launches."""
    rows = [
        "| layer | C | H | k | s | kernel | launch | warps | registers | spill B |",
        "|---|---|---|---|---|---|---|---|---:|---:|",
    ]
    for n, kw in blocks:
        for i, launch in enumerate(record_halo(**kw)):
            c = compile_launch(launch, arch)
            rows.append(
                f"| {n} | {kw['cin'] * kw['expansion']} | {kw['size']} | {kw['kernel']} "
                f"| {kw['stride']} | {c.name} | {i + 1} | {c.num_warps} | {c.registers} "
                f"| {c.spill_bytes} |"
            )
    return rows


_TODO: list[
    Launch
] = []  # the launches of this run, for forked workers (JIT functions don't pickle)


def _compile_nth(i: int, arch: int, sass: str | None) -> CompiledKernel:
    launch = _TODO[i]
    return compile_launch(
        launch, arch, sass is not None and bool(re.search(sass, launch.kernel.__name__))
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one representative block only")
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--layers", help="1-based Scarlet-A layer numbers, e.g. 2,4,16 (all)")
    parser.add_argument("--sass", metavar="REGEX", help="print the SASS loops of these kernels")
    parser.add_argument(
        "--sass-ops", action="store_true", help="with --sass: every opcode of each loop"
    )
    parser.add_argument(
        "--dw-fwd", action="store_true", help="compare the two depthwise forward kernels"
    )
    parser.add_argument(
        "--halo", action="store_true", help="registers and spills of the halo depthwise kernels"
    )
    args = parser.parse_args(argv)
    numbered = list(enumerate(scarlet_a_blocks(), 1))
    if args.layers:
        numbered = [numbered[int(i) - 1] for i in args.layers.split(",")]
    if args.quick:
        numbered = [(0, dict(cin=40, cout=40, expansion=6, kernel=7, stride=1, se=True, size=28))]
    if args.dw_fwd:
        print("\n".join(dw_fwd_table(numbered, args.arch)))
        return 0
    if args.halo:
        print("\n".join(halo_table(numbered, args.arch)))
        return 0
    blocks = [kw for _, kw in numbered]
    launches: list[Launch] = []
    for kw in blocks:
        for training in (False, True):
            launches += record_block(**kw, training=training)
    _TODO[:] = unique(launches)
    print(f"{len(launches)} launches, {len(_TODO)} distinct specialisations, sm_{args.arch}")
    worst = 0
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        jobs = [(i, args.arch, args.sass) for i in range(len(_TODO))]
        results = pool.starmap(_compile_nth, jobs)
    for c in results:
        worst = max(worst, c.spill_bytes)
        print(
            f"{c.name:26s} warps={c.num_warps} regs={c.registers:3d} spill={c.spill_bytes:5d}B "
            f"smem={c.shared_bytes:6d}B ld={sum(c.loads.values()):4d} narrow-ld={c.narrow_loads:4d}"
            f"  {c.constexprs}"
        )
        for loop in c.loops:
            print("    " + loop.line())
            if args.sass_ops:
                ops = sorted(loop.ops.items(), key=lambda kv: (-kv[1], kv[0]))
                print("      " + ", ".join(f"{op} {n}" for op, n in ops))
    narrow = [c.narrow_loads for c in results if c.narrow_loads]
    mean_regs = sum(c.registers for c in results) / max(1, len(results))
    print(
        f"mean registers {mean_regs:.1f}; 16-bit global loads: {sum(narrow)} instructions "
        f"in {len(narrow)} kernels"
    )
    print("spills: none" if worst == 0 else f"WORST SPILL: {worst} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
