"""Compile the kernels a block would launch for an sm_90 (H100/H200) target, without a GPU.

The block implementations run on meta tensors inside :func:`record_launches`, which captures every
launch (kernel, constexprs, warps, stages, argument types) instead of running it; each distinct
specialisation is then compiled with ``triton.compile`` for ``GPUTarget("cuda", 90, 32)`` and its
PTX assembled by the ``ptxas`` that ships with Triton, which reports registers and spills. This
catches what the CPU interpreter cannot: ``tl.dot`` shape/dtype rules, layout conversions, and
register pressure of the tile sizes chosen for the GPU.

    python -m fastscarlet.kernels.aot              # the 19 Scarlet-A layers, train + inference
    python -m fastscarlet.kernels.aot --quick      # one representative block
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from .launch import Launch, record_launches

_DTYPES = {
    torch.float32: "fp32",
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
    torch.int64: "i64",
    torch.int32: "i32",
}


@dataclass(frozen=True)
class CompiledKernel:
    name: str
    constexprs: str
    num_warps: int
    registers: int
    spill_bytes: int
    shared_bytes: int


def _signature(launch: Launch) -> tuple[dict[str, str], dict[str, object]]:
    fn = launch.kernel
    names = [p.name for p in fn.params if not p.is_constexpr]
    if len(names) != len(launch.args):
        raise ValueError(f"{fn.__name__}: {len(launch.args)} arguments for {len(names)} parameters")
    sig: dict[str, str] = {}
    for name, arg in zip(names, launch.args):
        if isinstance(arg, torch.Tensor):
            sig[name] = "*" + _DTYPES[arg.dtype]
        elif isinstance(arg, bool):
            sig[name] = "i1"
        elif isinstance(arg, int):
            sig[name] = "i64" if abs(arg) >= 2**31 else "i32"
        elif isinstance(arg, float):
            sig[name] = "fp32"
        else:
            raise TypeError(f"{fn.__name__}.{name}: unsupported argument type {type(arg).__name__}")
    constexprs = dict(launch.constexprs)
    for p in fn.params:
        if p.is_constexpr:
            sig[p.name] = "constexpr"
    return sig, constexprs


def _ptxas() -> str:
    import triton.backends.nvidia as nv

    return os.path.join(os.path.dirname(nv.__file__), "bin", "ptxas")


def compile_launch(launch: Launch, arch: int = 90) -> CompiledKernel:
    """Compile one recorded launch for ``sm_<arch>``; report registers, spills, shared memory."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig, constexprs = _signature(launch)
    src = ASTSource(fn=launch.kernel, signature=sig, constexprs=constexprs)
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
        out = subprocess.run(
            [_ptxas(), "-v", f"--gpu-name={gpu}", path, "-o", os.path.join(tmp, "k.cubin")],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
    regs = re.search(r"Used (\d+) registers", out)
    spills = re.search(r"(\d+) bytes spill stores", out)
    keys = ", ".join(f"{k}={v}" for k, v in sorted(constexprs.items()))
    return CompiledKernel(
        launch.kernel.__name__,
        keys,
        launch.num_warps,
        int(regs.group(1)) if regs else -1,
        int(spills.group(1)) if spills else -1,
        int(compiled.metadata.shared),
    )


def _key(launch: Launch) -> tuple:
    sig, constexprs = _signature(launch)
    return (
        launch.kernel.__name__,
        tuple(sorted(sig.items())),
        tuple(sorted(constexprs.items())),
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
    from .mbconv import (
        _mbconv_infer_impl,
        _mbconv_train_bwd_impl,
        _mbconv_train_fwd_impl,
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
            y, z2, z3, stats, se_buf = _mbconv_train_fwd_impl(
                x, w1, v_h, v_h, wdw, v_h, v_h, w3, v_o, v_o, *sew, *cfg, 1e-5, 1e-5, 1e-5
            )
            _mbconv_train_bwd_impl(
                torch.empty_like(y), x, z2, z3, stats, se_buf, w1, v_h, wdw, v_h, w3, v_o,
                *sew, *cfg, True,
            )  # fmt: skip
        else:
            _mbconv_infer_impl(
                x, w1, v_h, v_h, v_h, v_h, wdw, v_h, v_h, v_h, v_h, w3, v_o, v_o, v_o, v_o, *sew,
                *cfg, 1e-5, 1e-5, 1e-5,
            )  # fmt: skip
    return launches


def scarlet_a_blocks() -> list[dict]:
    """The 19 Scarlet-A layers at 224x224 input: keyword arguments of :func:`record_block`."""
    from fastscarlet.models import PUBLISHED
    from fastscarlet.space import get_space

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


_TODO: list[
    Launch
] = []  # the launches of this run, for forked workers (JIT functions don't pickle)


def _compile_nth(i: int, arch: int) -> CompiledKernel:
    return compile_launch(_TODO[i], arch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one representative block only")
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    blocks = scarlet_a_blocks()
    if args.quick:
        blocks = [dict(cin=40, cout=40, expansion=6, kernel=7, stride=1, se=True, size=28)]
    launches: list[Launch] = []
    for kw in blocks:
        for training in (False, True):
            launches += record_block(**kw, training=training)
    _TODO[:] = unique(launches)
    print(f"{len(launches)} launches, {len(_TODO)} distinct specialisations, sm_{args.arch}")
    worst = 0
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        results = pool.starmap(_compile_nth, [(i, args.arch) for i in range(len(_TODO))])
    for c in results:
        worst = max(worst, c.spill_bytes)
        print(
            f"{c.name:26s} warps={c.num_warps} regs={c.registers:3d} spill={c.spill_bytes:5d}B "
            f"smem={c.shared_bytes:6d}B  {c.constexprs}"
        )
    print("spills: none" if worst == 0 else f"WORST SPILL: {worst} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
