"""The fused MBConv kernels (fastscarlet.kernels.mbconv) against the PyTorch reference.

Interpreter tests (``TRITON_INTERPRET=1``, CPU, fp32, tiny odd shapes) cover every kernel through
the block: outputs, the gradient of the input and of every parameter, and the BN running
statistics, in training and inference mode. GPU tests repeat them at real shapes in fp32, bf16
and fp16 with the error budget of ``shared/CONVENTIONS.md`` (see ``fastscarlet.kernels.testing``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch

from fastscarlet.env import triton_interpret
from fastscarlet.kernels.dispatch import kernel_mode
from fastscarlet.kernels.testing import (
    assert_within_budget,
    clone_as,
    randomize_bn,
    run_module,
)
from fastscarlet.nn.blocks import MBConv, init_weights
from fastscarlet.space import SEConfig

needs_interpreter = pytest.mark.skipif(not triton_interpret(), reason="needs TRITON_INTERPRET=1")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CL = torch.channels_last
FAIRNAS_SE = SEConfig(base="input", ratio=1.0, act=None, gate="sigmoid")


@dataclass(frozen=True)
class Case:
    cin: int
    cout: int
    e: int
    k: int
    s: int
    act: str
    se: bool
    H: int
    N: int = 2
    expand_stride: int = 1
    se_cfg: SEConfig | None = field(default=None)
    x_offset: float = 0.0  # a non-centred input (BN1's statistics come from x's Gram matrix)

    def __str__(self) -> str:
        tag = f"c{self.cin}-{self.cout}_e{self.e}k{self.k}s{self.s}_{self.act}_H{self.H}_N{self.N}"
        if self.se:
            tag += "_se" if self.se_cfg is None else "_se-sigmoid"
        if self.expand_stride > 1:
            tag += f"_es{self.expand_stride}"
        if self.x_offset:
            tag += f"_offset{self.x_offset:g}"
        return tag

    def block(self, seed: int = 0) -> MBConv:
        torch.manual_seed(seed)
        se = (self.se_cfg or SEConfig()) if self.se else None
        blk = MBConv(
            self.cin, self.cout, self.e, self.k, self.s, self.act, se,
            expand_stride=self.expand_stride,
        )  # fmt: skip
        init_weights(blk)
        randomize_bn(blk)
        return blk

    def input(self, seed: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(self.N, self.cin, self.H, self.H, generator=g) + self.x_offset
        return x.contiguous(memory_format=CL)


def _reference(m: MBConv, x: torch.Tensor) -> torch.Tensor:
    with kernel_mode("reference"):
        return m.forward_with_se(x, m.se)


def _kernel(m: MBConv, x: torch.Tensor) -> torch.Tensor:
    from fastscarlet.kernels.mbconv import mbconv_block_forward

    return mbconv_block_forward(m, x, m.se)


def _compare(
    case: Case,
    training: bool,
    dtype: torch.dtype,
    device: str,
    forward: Callable[[MBConv, torch.Tensor], torch.Tensor] = _kernel,
) -> None:
    """``forward`` (the whole-block kernels unless given) vs reference in ``dtype`` vs reference
    in float64, for outputs, all gradients (training) and the BN buffers."""
    blk = case.block().to(device)
    blk.train(training)
    x = case.input().to(device)
    g = torch.randn(
        case.N, case.cout, *(_out_hw(case)), generator=torch.Generator().manual_seed(2)
    ).to(device)
    grad = g if training else None
    hi = run_module(clone_as(blk, torch.float64), _reference, x.double(), grad)
    lo = run_module(clone_as(blk, dtype), _reference, x.to(dtype), grad)
    out = run_module(clone_as(blk, dtype), forward, x.to(dtype), grad)
    assert out.out.dtype == dtype and out.out.is_contiguous(memory_format=CL)
    assert_within_budget("output", out.out, lo.out, hi.out, dtype)
    assert set(out.grads) == set(hi.grads)
    if training:  # x, expand/dw/project weights, 3 BN affines (and the SE convs)
        assert len(hi.grads) == 1 + 3 + 6 + (4 if case.se else 0)
    for name in hi.grads:
        assert_within_budget(f"grad {name}", out.grads[name], lo.grads[name], hi.grads[name], dtype)
    for name, ref in hi.buffers.items():
        if name.endswith("num_batches_tracked"):
            assert torch.equal(out.buffers[name], ref), name
        else:
            assert_within_budget(name, out.buffers[name], lo.buffers[name], ref, dtype)


def _out_hw(case: Case) -> tuple[int, int]:
    h = (case.H - 1) // case.expand_stride + 1
    h = (h - 1) // case.s + 1
    return h, h


# Every kernel size, stride, expansion, activation, SE on/off (both SE flavours), residual on/off,
# odd sizes, a channel count past one channel tile, the unfused project-backward path (Cout 40 >
# the interpreter's 32-wide tile), a folded-LET expand stride, a batch of 3 (ragged image groups
# of 2), and channel counts 7 -> 21 -> 10 whose alignment hints are 1 and 2 (kernels/alignment.py).
TRAIN_CASES = [
    Case(8, 8, 3, 3, 1, "relu", False, 9),
    Case(8, 12, 6, 5, 2, "relu6", True, 9),
    Case(12, 12, 6, 7, 1, "hswish", True, 7),
    Case(12, 24, 6, 3, 2, "hswish", False, 13),
    Case(24, 24, 3, 5, 1, "hswish", True, 7),
    Case(8, 12, 3, 7, 2, "relu", True, 13),
    Case(12, 40, 3, 3, 1, "relu6", False, 7),
    Case(8, 8, 3, 3, 1, "swish", True, 7, se_cfg=FAIRNAS_SE),
    Case(8, 12, 3, 3, 1, "hswish", False, 9, expand_stride=2),
    Case(8, 8, 6, 5, 1, "hswish", True, 5, N=3),
    Case(12, 12, 3, 3, 1, "relu6", False, 7, x_offset=3.0),
    Case(7, 10, 3, 5, 1, "hswish", True, 7),
]

INFER_CASES = [
    Case(8, 8, 3, 3, 1, "relu", False, 9),  # fused dw + project, residual
    Case(8, 12, 6, 7, 2, "hswish", True, 13),  # SE: h2 written, gate in the project prologue
    Case(12, 40, 6, 5, 1, "relu6", False, 7),  # fused, Cout 40 in a 64-wide tile
    Case(8, 300, 3, 3, 1, "hswish", False, 5),  # Cout > 256: the unfused dw + GEMM path
    Case(8, 12, 3, 5, 1, "relu6", True, 9, expand_stride=2),
    Case(8, 8, 6, 3, 2, "swish", True, 7, N=3, se_cfg=FAIRNAS_SE),
    Case(6, 6, 3, 3, 1, "relu", False, 7),  # 6 -> 18 -> 6 channels: alignment hint 2, residual
    Case(8, 16, 6, 7, 2, "swish", False, 9),  # fused dw + project at k = 7, stride 2
    Case(8, 8, 3, 5, 1, "hswish", True, 7),  # SE and the residual together
]


@needs_interpreter
@pytest.mark.interpreter
@pytest.mark.parametrize("case", TRAIN_CASES, ids=str)
def test_training_block_matches_reference(case: Case) -> None:
    _compare(case, True, torch.float32, "cpu")


@needs_interpreter
@pytest.mark.interpreter
@pytest.mark.parametrize("case", INFER_CASES, ids=str)
def test_inference_block_matches_reference(case: Case) -> None:
    with torch.no_grad():
        _compare(case, False, torch.float32, "cpu")


# The depthwise forward's column-sweep kernel (FASTSCARLET_DW_FWD=sweep) inside the block:
# training (statistics) and inference with SE (pooling), stride 2, k = 7, a ragged image group.
SWEEP_CASES = [
    (Case(12, 12, 6, 7, 1, "hswish", True, 7), True),
    (Case(8, 12, 6, 5, 2, "relu6", True, 9), True),
    (Case(8, 8, 6, 5, 1, "hswish", True, 5, N=3), True),
    (Case(8, 12, 6, 7, 2, "hswish", True, 13), False),
]


@needs_interpreter
@pytest.mark.interpreter
@pytest.mark.parametrize(("case", "training"), SWEEP_CASES, ids=str)
def test_block_with_sweep_depthwise_matches_reference(
    case: Case, training: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTSCARLET_DW_FWD", "sweep")
    with torch.set_grad_enabled(training):
        _compare(case, training, torch.float32, "cpu")


@needs_interpreter
@pytest.mark.interpreter
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_every_weight_changes_the_output(training: bool) -> None:
    """Perturb each parameter (and, in eval mode, each running statistic): the kernel output must
    move. Catches a kernel that ignores a tensor it is given."""
    case = Case(8, 8, 3, 3, 1, "hswish", True, 5)
    blk = case.block()
    blk.train(training)
    x = case.input()
    with torch.no_grad():
        base = _kernel(copy.deepcopy(blk), x)
        names = [n for n, _ in blk.named_parameters()]
        if not training:
            names += [n for n, b in blk.named_buffers() if b.is_floating_point()]
        for name in names:
            m = copy.deepcopy(blk)
            t = m.get_parameter(name) if name in dict(m.named_parameters()) else m.get_buffer(name)
            t.add_(0.5 * torch.randn_like(t).abs() + 0.1)
            moved = (_kernel(m, x) - base).abs().max().item()
            assert moved > 1e-3, f"perturbing {name} did not change the output"


@needs_interpreter
@pytest.mark.interpreter
def test_modules_use_kernels_when_forced() -> None:
    """With FASTSCARLET_KERNELS=triton semantics, MBConv.forward (and forward_with_se with an
    external SE, as the shared-SE supernet calls it) run the kernels: same numbers as the direct
    entry point, and the autograd node is the kernel's."""
    from fastscarlet.nn.supernet import ChoiceLayer
    from fastscarlet.space import get_space

    case = Case(8, 8, 3, 3, 1, "hswish", True, 5)
    blk = case.block()
    x = case.input().requires_grad_()
    with kernel_mode("triton"):
        y = blk(x)
    assert "MBConvTrainFunction" in type(y.grad_fn).__name__
    direct = _kernel(copy.deepcopy(blk), case.input())
    assert torch.allclose(y, direct, atol=1e-6)

    space = get_space("scarlet")
    layer = ChoiceLayer(space, 0, share_se=True)  # 16 -> 32, stride 2; SE outside the MBConv
    randomize_bn(layer)
    choice = space.choice_names.index("E3K3SE")
    xl = torch.randn(2, 16, 7, 7).contiguous(memory_format=CL)
    with torch.no_grad():
        layer.eval()
        with kernel_mode("triton"):
            got = layer(xl, choice)
        with kernel_mode("reference"):
            want = layer(xl, choice)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


def _make_strided(module: torch.nn.Module) -> None:
    """Give every parameter (and BN buffer) the same values in a non-contiguous layout: conv
    weights with two dimensions' strides swapped, vectors as every other element of a buffer."""
    with torch.no_grad():
        for mod in module.modules():
            for name, t in list(mod.named_parameters(recurse=False)) + list(
                mod.named_buffers(recurse=False)
            ):
                if not t.is_floating_point():
                    continue
                if t.dim() == 4:
                    d = (2, 3) if t.shape[2] > 1 else (0, 1)
                    q = t.detach().transpose(*d).contiguous().transpose(*d)
                else:
                    q = torch.empty(2 * t.numel(), dtype=t.dtype)[::2].copy_(t)
                assert not q.is_contiguous()
                if isinstance(t, torch.nn.Parameter):
                    setattr(mod, name, torch.nn.Parameter(q))
                else:
                    setattr(mod, name, q)


@needs_interpreter
@pytest.mark.interpreter
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_non_contiguous_parameters(training: bool) -> None:
    """Parameters stored with other strides (a transposed or tied weight) give the reference's
    outputs, gradients and running statistics: the kernels index parameters densely."""
    case = Case(8, 8, 3, 3, 1, "hswish", True, 5)
    blk = case.block()
    _make_strided(blk)
    assert not blk.expand.weight.is_contiguous() and not blk.dw.weight.is_contiguous()
    blk.train(training)
    x = case.input()
    grad = torch.randn(case.N, case.cout, 5, 5, generator=torch.Generator().manual_seed(2))
    grad = grad if training else None
    ref = run_module(copy.deepcopy(blk), _reference, x, grad)
    out = run_module(copy.deepcopy(blk), _kernel, x, grad)
    assert torch.allclose(out.out, ref.out, atol=1e-4, rtol=1e-4)
    assert set(out.grads) == set(ref.grads)
    for name in ref.grads:
        assert torch.allclose(out.grads[name], ref.grads[name], atol=1e-4, rtol=1e-4), name
    for name in ref.buffers:
        assert torch.allclose(out.buffers[name], ref.buffers[name], atol=1e-5), name


@needs_interpreter
@pytest.mark.interpreter
def test_cumulative_bn_average_matches_batchnorm() -> None:
    """BN with ``momentum=None`` (BN recalibration's exact mean over batches) on the kernels:
    after three batches the running statistics are BatchNorm2d's cumulative averages."""
    from fastscarlet.kernels.mbconv import mbconv_supported

    case = Case(8, 12, 3, 3, 2, "relu6", True, 7)
    blk = case.block().train()
    for bn in (blk.bn1, blk.bn2, blk.bn3):
        bn.reset_running_stats()
        bn.momentum = None
    xs = [case.input(seed) * (seed + 1) for seed in range(3)]
    assert mbconv_supported(blk, blk.se, xs[0])
    ref, ker = copy.deepcopy(blk), copy.deepcopy(blk)
    with torch.no_grad():
        for x in xs:
            _reference(ref, x)
            _kernel(ker, x)
    for name, want in ref.named_buffers():
        got = ker.get_buffer(name)
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), name
    assert int(ker.bn2.num_batches_tracked) == 3
    # and not the last batch's statistics alone (what a momentum of 1 would leave)
    last = copy.deepcopy(blk)
    for bn in (last.bn1, last.bn2, last.bn3):
        bn.momentum = 1.0
    with torch.no_grad():
        _reference(last, xs[-1])
    assert not torch.allclose(last.bn2.running_var, ker.bn2.running_var, atol=1e-3)


@needs_interpreter
@pytest.mark.interpreter
def test_eval_with_gradients_falls_back_to_reference() -> None:
    """The inference kernel has no backward: eval-mode BN with gradients runs the reference."""
    from fastscarlet.kernels.mbconv import mbconv_supported, unsupported_reason

    case = Case(8, 8, 3, 3, 1, "relu", False, 5)
    blk = case.block().eval()
    x = case.input()
    assert not mbconv_supported(blk, None, x)
    assert "no_grad" in unsupported_reason(blk, None, x)
    with kernel_mode("triton"):
        y = blk(x.requires_grad_())
    y.sum().backward()
    assert blk.expand.weight.grad is not None
    with torch.no_grad():
        assert mbconv_supported(blk, None, x)


@needs_interpreter
@pytest.mark.interpreter
def test_custom_ops_pass_opcheck() -> None:
    """Schema, fake (meta) implementations and strides agree with the real ones."""
    from fastscarlet.kernels import mbconv_ops as mb

    case = Case(8, 12, 3, 3, 2, "hswish", True, 5)
    blk = case.block()
    x = case.input()
    se = blk.se
    sw = (se.reduce.weight, se.reduce.bias, se.expand.weight, se.expand.bias)
    b1, b2, b3 = blk.bn1, blk.bn2, blk.bn3
    cfg = (2, 1, "hswish", "relu", "hsigmoid", False)
    with torch.no_grad():
        infer_args = (
            x, blk.expand.weight, b1.weight, b1.bias, b1.running_mean, b1.running_var,
            blk.dw.weight, b2.weight, b2.bias, b2.running_mean, b2.running_var,
            blk.project.weight, b3.weight, b3.bias, b3.running_mean, b3.running_var, *sw, *cfg,
            1e-5, 1e-5, 1e-5,
        )  # fmt: skip
        torch.library.opcheck(mb.mbconv_infer, infer_args)
        fwd_args = (
            x, blk.expand.weight, b1.weight, b1.bias, blk.dw.weight, b2.weight, b2.bias,
            blk.project.weight, b3.weight, b3.bias, *sw, *cfg, 1e-5, 1e-5, 1e-5,
        )  # fmt: skip
        torch.library.opcheck(mb.mbconv_train_fwd, fwd_args)
        y, z2, z3, stats, se_buf = mb.mbconv_train_fwd(*fwd_args)
        bwd_args = (
            torch.randn_like(y), x, z2, z3, stats, se_buf, blk.expand.weight, b1.weight,
            blk.dw.weight, b2.weight, blk.project.weight, b3.weight, *sw, *cfg, True,
        )  # fmt: skip
        torch.library.opcheck(mb.mbconv_train_bwd, bwd_args)


@needs_interpreter
@pytest.mark.interpreter
def test_torch_compile_traces_the_kernel_path() -> None:
    """torch.compile(fullgraph=True) over a training step of the module with kernels forced:
    dynamo traces the dispatch, the autograd function and the custom ops (register_fake) without
    a graph break, and the compiled step computes what the eager kernel path computes."""
    case = Case(8, 8, 3, 3, 1, "hswish", True, 5)
    blk = case.block()
    x = case.input()

    def loss(m: MBConv, inp: torch.Tensor) -> torch.Tensor:
        y = m(inp)
        return (y * y).sum()

    results = []
    with kernel_mode("triton"):
        torch._dynamo.reset()
        for fn in (loss, torch.compile(loss, backend="aot_eager", fullgraph=True)):
            m, inp = copy.deepcopy(blk), x.clone().requires_grad_()
            fn(m, inp).backward()
            results.append(
                (inp.grad, m.expand.weight.grad, m.se.reduce.weight.grad, m.bn2.running_var)
            )
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# GPU: real shapes (Scarlet layers at batch 16) and dtypes, the error budget.
# ---------------------------------------------------------------------------------------------

GPU_CASES = [
    Case(16, 32, 6, 7, 2, "hswish", False, 112, N=16),
    Case(32, 32, 3, 5, 1, "hswish", True, 56, N=16),
    Case(40, 40, 6, 7, 1, "hswish", True, 28, N=16),
    Case(40, 40, 3, 7, 1, "hswish", True, 28, N=16),  # Scarlet-A layer 4: 120 channels, align 8
    Case(80, 96, 6, 3, 1, "hswish", True, 14, N=16),
    Case(96, 192, 6, 5, 2, "hswish", False, 14, N=16),
    Case(192, 320, 6, 3, 1, "hswish", True, 7, N=16),
    Case(24, 24, 3, 3, 1, "relu6", False, 13, N=16),
    Case(40, 40, 6, 5, 1, "swish", True, 15, N=16, se_cfg=FAIRNAS_SE),
]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.fixture
def exact_fp32():
    """cuDNN convolutions in fp32 without TF32, so the fp32 reference is fp32."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", GPU_CASES, ids=str)
def test_gpu_training_block_within_budget(case: Case, dtype: torch.dtype, exact_fp32) -> None:
    _compare(case, True, dtype, "cuda")


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", GPU_CASES, ids=str)
def test_gpu_inference_block_within_budget(case: Case, dtype: torch.dtype, exact_fp32) -> None:
    with torch.no_grad():
        _compare(case, False, dtype, "cuda")


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", [GPU_CASES[0], GPU_CASES[3], GPU_CASES[6]], ids=str)
def test_gpu_block_with_sweep_depthwise_within_budget(
    case: Case, training: bool, dtype: torch.dtype, exact_fp32, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The column-sweep depthwise forward at real shapes: layer 1 (k 7, stride 2, 112x112),
    layer 4 (k 7, 120 channels), 7x7 images (8-row tiles)."""
    monkeypatch.setenv("FASTSCARLET_DW_FWD", "sweep")
    with torch.set_grad_enabled(training):
        _compare(case, training, dtype, "cuda")


@needs_cuda
@pytest.mark.gpu
def test_gpu_autocast_module_within_budget(exact_fp32) -> None:
    """fp32 parameters under bf16 autocast (the AMP training setting the benchmark uses)."""
    hi, lo, out = _autocast_runs(_kernel)
    for name in hi.grads:
        assert_within_budget(name, out.grads[name], lo.grads[name], hi.grads[name], torch.bfloat16)


def _autocast_runs(forward: Callable[[MBConv, torch.Tensor], torch.Tensor]):
    """A training step of a layer-4-sized block with fp32 parameters under bf16 autocast: the
    float64 reference, the reference and ``forward`` under autocast (``run_module`` results),
    after checking that ``forward``'s output is bf16 and within the bf16 budget."""
    case = Case(40, 40, 6, 5, 1, "hswish", True, 28, N=16)
    blk = case.block().cuda()
    x = case.input().cuda()
    g = torch.randn(16, 40, 28, 28, device="cuda")

    def amp(fn):
        def run(m, inp):
            with torch.autocast("cuda", torch.bfloat16):
                return fn(m, inp)

        return run

    hi = run_module(clone_as(blk, torch.float64), _reference, x.double(), g.double())
    lo = run_module(copy.deepcopy(blk), amp(_reference), x, g)
    out = run_module(copy.deepcopy(blk), amp(forward), x, g)
    assert out.out.dtype == torch.bfloat16
    assert_within_budget("output", out.out, lo.out, hi.out, torch.bfloat16)
    return hi, lo, out


@needs_cuda
@pytest.mark.gpu
def test_gpu_module_default_is_kernels_and_compiles() -> None:
    """On CUDA the module runs the kernels by default; torch.compile (inductor, fullgraph) over a
    training step gives the eager kernel path's output, gradients and running statistics."""
    from fastscarlet.kernels.testing import assert_close_scaled

    case = Case(32, 32, 3, 5, 1, "hswish", True, 56, N=8)
    blk = case.block().cuda()
    x = case.input().cuda()
    runs = []
    torch._dynamo.reset()
    for compiled in (False, True):
        m, inp = copy.deepcopy(blk), x.clone().requires_grad_()
        y = (torch.compile(m, fullgraph=True) if compiled else m)(inp)
        if not compiled:
            assert "MBConvTrainFunction" in type(y.grad_fn).__name__
        y.square().sum().backward()
        runs.append((y, inp.grad, m.expand.weight.grad, m.dw.weight.grad, m.bn2.running_var))
    for a, b in zip(*runs):
        assert_close_scaled(b, a, tol=1e-4)


@needs_interpreter
@pytest.mark.interpreter
def test_benchmark_smoke_runs(tmp_path) -> None:
    """benchmarks/bench_mbconv.py --smoke works end to end (the GPU run is the same code)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_mbconv.py"
    out = tmp_path / "r.json"
    cmd = [
        sys.executable,
        str(script),
        "--smoke",
        "--layers",
        "5",
        "--rep-ms",
        "1",
        "--json",
        str(out),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "SMOKE RUN" in res.stdout and "| 5 | E6K3SE |" in res.stdout
    data = json.loads(out.read_text())
    cols = {"triton", "partial", "dispatch", "eager", "compile"}
    row = data["rows"][0]
    assert data["smoke"] and set(row["train_us"]) == cols and set(row["fwd_us"]) == cols
    for p in ("fwd", "train"):  # the dispatch table: a choice, with every candidate's time
        assert row["choice"][p]["choice"] in ("reference", "triton", "partial")
        assert set(row["choice"][p]["times"]) | set(row["choice"][p]["rejected"]) == {
            "reference", "triton", "partial",
        }  # fmt: skip
    assert "Dispatch table" in res.stdout
    assert data["header"]["kernels"]["dw_fwd"] in ("tile", "sweep")  # which kernels were timed


# ---------------------------------------------------------------------------------------------
# Compile for sm_90 without a GPU (catches what the interpreter cannot: tl.dot rules, spills).
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_kernels_compile_for_sm90_without_spills() -> None:
    pytest.importorskip("triton")
    from aot import compile_launch, record_block, unique

    launches = record_block(40, 40, 6, 7, 1, se=True, size=28, training=True)
    launches += record_block(40, 40, 6, 5, 1, se=False, size=28, training=False)
    names = set()
    for launch in unique(launches):
        c = compile_launch(launch)
        names.add(c.name)
        assert c.spill_bytes <= 64, f"{c.name} spills {c.spill_bytes} B ({c.constexprs})"
    assert {
        "_pw_conv_fwd_kernel",
        "_pw_conv_wgrad_kernel",
        "_dw_conv_fwd_kernel",
        "_dw_conv_bwd_kernel",
        "_dw_wgrad_kernel",
        "_dw_project_fwd_kernel",
        "_project_bwd_kernel",
        "_affine_act_kernel",
        "_bn_bwd_apply_kernel",
    } <= names
