"""The halo-staged depthwise kernels (fastscarlet.kernels.depthwise_halo) against
``depthwise_halo_ref`` (``F.conv2d`` with ``groups=C``) and its autograd.

The interpreter's launch shape (2 images x 16 channels a program, strips of 2 or 4 output
columns, 3-row chunks, 2 persistent programs) makes the tiny test images span several strips,
chunks, image groups and channel blocks, with ragged edges in each."""

from __future__ import annotations

import pytest
import torch

from fastscarlet.env import triton_interpret
from fastscarlet.kernels.testing import assert_close_scaled as _close
from fastscarlet.kernels.testing import rows as _rows

CL = torch.channels_last
needs_interpreter = pytest.mark.skipif(not triton_interpret(), reason="needs TRITON_INTERPRET=1")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# (k, s, H, W, N, C, mode): every kernel size and stride, odd sizes, non-square images; the
# k <= 5 cases also ragged image groups (3 images in groups of 2) and channel blocks (20 in 16s)
FWD_CASES = [
    (3, 1, 9, 7, 3, 20, "inference"),
    (3, 2, 6, 5, 3, 20, "training"),
    (5, 2, 9, 10, 3, 20, "training"),
    (7, 1, 6, 5, 2, 16, "training"),
    (7, 2, 9, 7, 2, 16, "inference"),
]
BWD_CASES = [
    (3, 1, 9, 7, 3, 20, "both"),
    (3, 2, 6, 5, 3, 20, "both"),
    (5, 2, 9, 10, 3, 20, "both"),
    (7, 1, 6, 5, 2, 16, "dx"),  # the GPU runs k >= 7 as two launches: each alone
    (7, 1, 6, 5, 2, 16, "dw"),
    (7, 2, 7, 6, 2, 16, "both"),
    (9, 1, 5, 4, 2, 16, "both"),
]

# (N, C, H, k, s): Scarlet-A depthwise layers at batch 16 (stem stage, 56x56, 28x28, 7x7, 14x14)
GPU_CASES = [
    (16, 48, 112, 7, 2),
    (16, 192, 56, 5, 1),
    (16, 120, 28, 7, 1),
    (16, 1152, 7, 5, 1),
    (16, 576, 14, 3, 2),
]


def _bn(C: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    return (torch.rand(C, generator=g) + 0.5, torch.randn(C, generator=g),
            torch.randn(C, generator=g), torch.rand(C, generator=g) + 0.5)  # fmt: skip


@needs_interpreter
@pytest.mark.interpreter
@pytest.mark.parametrize(("k", "s", "H", "W", "N", "C", "mode"), FWD_CASES)
def test_dw_halo_fwd(k: int, s: int, H: int, W: int, N: int, C: int, mode: str) -> None:
    """inference: BN-eval + act epilogue, store, SE pooling; training: BN + act prologue (zero
    padding after it), statistics."""
    from fastscarlet.kernels.activations import act_ref
    from fastscarlet.kernels.depthwise_halo import depthwise_halo_ref, dw_halo_fwd

    g = torch.Generator().manual_seed(k * 10 + s)
    x = torch.randn(N, C, H, W, generator=g).contiguous(memory_format=CL)
    w = torch.randn(C, 1, k, k, generator=g)
    Ho, Wo = (H - 1) // s + 1, (W - 1) // s + 1
    out = torch.full((N, C, Ho, Wo), float("nan")).contiguous(memory_format=CL)
    if mode == "inference":
        bn = _bn(C, g)
        pool = torch.ones(N, C)  # added to
        dw_halo_fwd(_rows(x), w, (N, H, W), s, out=_rows(out), bn_eval=bn, eps=1e-5,
                    epi_act="hswish", pool=pool)  # fmt: skip
        ref = depthwise_halo_ref(x.double(), w.double(), s)
        sc = bn[0].double() / torch.sqrt(bn[3].double() + 1e-5)
        ref = ref * sc[:, None, None] + (bn[1].double() - bn[2].double() * sc)[:, None, None]
        ref = act_ref(ref, "hswish")
        _close(out, ref)
        _close(pool, 1 + ref.mean((2, 3)))
    else:
        sa, sb = torch.rand(C, generator=g) + 0.5, torch.randn(C, generator=g)
        stats = torch.zeros(2, C)
        dw_halo_fwd(_rows(x), w, (N, H, W), s, out=_rows(out), pro_vecs=(sa, sb),
                    pro_act="relu6", stats=stats)  # fmt: skip
        a = act_ref(x.double() * sa.double()[:, None, None] + sb.double()[:, None, None], "relu6")
        ref = depthwise_halo_ref(a, w.double(), s)
        _close(out, ref)
        _close(stats[0], ref.sum((0, 2, 3)))
        _close(stats[1], ref.square().sum((0, 2, 3)))


@needs_interpreter
@pytest.mark.interpreter
@pytest.mark.parametrize(("k", "s", "H", "W", "N", "C", "which"), BWD_CASES)
def test_dw_halo_bwd(k: int, s: int, H: int, W: int, N: int, C: int, which: str) -> None:
    """Input gradient (every input pixel written once: the output starts as NaN) and weight
    gradient (added to the given tensor), in one launch or alone."""
    from fastscarlet.kernels.depthwise_halo import depthwise_halo_ref, dw_halo_bwd

    g = torch.Generator().manual_seed(k * 10 + s + 1)
    a = torch.randn(N, C, H, W, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(C, 1, k, k, generator=g, dtype=torch.float64, requires_grad=True)
    y = depthwise_halo_ref(a, w, s)
    dz = torch.randn(y.shape, generator=g, dtype=torch.float64)
    y.backward(dz)
    af = a.detach().float().contiguous(memory_format=CL)
    dzf = dz.float().contiguous(memory_format=CL)
    dx = torch.full_like(af, float("nan")) if which != "dw" else None
    dw = torch.ones(C, k * k) if which != "dx" else None
    dw_halo_bwd(_rows(dzf), _rows(af), w.detach().float(), (N, H, W), s,
                _rows(dx) if dx is not None else None, dw)  # fmt: skip
    if dx is not None:
        _close(dx, a.grad)
    if dw is not None:
        _close(dw, 1 + w.grad.view(C, k * k))


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    ("N", "C", "H", "k", "s"),
    GPU_CASES,
)
def test_gpu_dw_halo_within_budget(N: int, C: int, H: int, k: int, s: int, dtype) -> None:
    """Scarlet-A depthwise shapes on the GPU's launch shapes: forward with statistics, input
    and weight gradients, within the error budget against fp64."""
    from fastscarlet.kernels.depthwise_halo import depthwise_halo_ref, dw_halo_bwd, dw_halo_fwd
    from fastscarlet.kernels.testing import assert_within_budget

    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(N, C, H, H, generator=g, device="cuda").contiguous(memory_format=CL)
    w = torch.randn(C, 1, k, k, generator=g, device="cuda") / k
    hi_x = x.double().requires_grad_()
    hi_w = w.double().requires_grad_()
    ref = depthwise_halo_ref(hi_x, hi_w, s)
    dz = torch.randn(ref.shape, generator=g, device="cuda").contiguous(memory_format=CL)
    ref.backward(dz.double())
    lo_x = x.to(dtype).requires_grad_()
    lo_w = w.to(dtype).requires_grad_()
    lo = depthwise_halo_ref(lo_x, lo_w, s)
    lo.backward(dz.to(dtype))
    xd = x.to(dtype).contiguous(memory_format=CL)
    out = torch.empty_like(lo).contiguous(memory_format=CL)
    stats = torch.zeros(2, C, device="cuda")
    dw_halo_fwd(_rows(xd), w, (N, H, H), s, out=_rows(out), stats=stats)
    assert_within_budget("out", out, lo, ref, dtype)
    dx = torch.empty_like(xd)
    dw = torch.zeros(C, k * k, device="cuda")
    dw_halo_bwd(_rows(dz.to(dtype)), _rows(xd), w, (N, H, H), s, _rows(dx), dw)
    assert_within_budget("dx", dx, lo_x.grad, hi_x.grad, dtype)
    assert_within_budget("dw", dw.view_as(w), lo_w.grad, hi_w.grad, dtype)
    assert_within_budget("sum", stats[0], lo.float().sum((0, 2, 3)), ref.sum((0, 2, 3)), dtype)


@pytest.mark.slow
@pytest.mark.parametrize(("C", "H", "k", "s"), [(96, 56, 3, 1), (120, 28, 7, 1)])
def test_halo_kernels_compile_for_sm90(C: int, H: int, k: int, s: int) -> None:
    """Every launch of a training forward and backward at batch 256 (bf16, the GPU's launch
    shapes) compiles for sm_90 with Triton's ptxas: the interpreter accepts code the compiler
    rejects (a ``tl.constexpr`` local re-declared in an unrolled loop did). k = 3 keeps its tiles
    in registers; k = 7 spills 96 B (forward) and 432 B (dx pass), recorded beside ``_FWD_TW``
    for every layer (``python tools/aot.py --halo``), not asserted."""
    pytest.importorskip("triton")
    from aot import compile_launch, record_halo, unique

    launches = record_halo(cin=C, expansion=1, kernel=k, stride=s, size=H)
    compiled = [compile_launch(launch) for launch in unique(launches)]
    assert {c.name for c in compiled} == {"_dw_halo_fwd_kernel", "_dw_halo_bwd_kernel"}
    assert len(compiled) == (3 if k >= 7 else 2)  # k >= 7: dx and dW as two launches
    if k == 3:
        assert not [c.spill_bytes for c in compiled if c.spill_bytes]
