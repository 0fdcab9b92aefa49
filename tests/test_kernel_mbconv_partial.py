"""The partial fusion (fastscarlet.kernels.mbconv_partial: Triton GEMMs and BN steps around
PyTorch's depthwise conv) against the module's own PyTorch code.

Interpreter tests (``TRITON_INTERPRET=1``, CPU, fp32, tiny odd shapes): outputs, the gradient of
the input and of every block and SE parameter, and the BN running statistics, in training and
inference mode, under the error budget of ``shared/CONVENTIONS.md``. GPU tests repeat them at
Scarlet-A shapes in bf16. The block cases come from ``test_kernel_mbconv``.
"""

from __future__ import annotations

import copy

import pytest
import torch
from test_kernel_mbconv import (
    FAIRNAS_SE,
    Case,
    _autocast_runs,
    _reference,
    exact_fp32,  # noqa: F401  (the fixture, for usefixtures below)
)
from test_kernel_mbconv import _compare as compare_with_reference

from fastscarlet.env import triton_interpret
from fastscarlet.kernels.testing import assert_within_budget
from fastscarlet.nn.blocks import MBConv

needs_interpreter = pytest.mark.skipif(not triton_interpret(), reason="needs TRITON_INTERPRET=1")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CL = torch.channels_last


def _partial(m: MBConv, x: torch.Tensor) -> torch.Tensor:
    from fastscarlet.kernels.mbconv_partial import mbconv_partial_forward

    return mbconv_partial_forward(m, x, m.se)


def _compare(case: Case, training: bool, dtype: torch.dtype, device: str) -> None:
    """The partial fusion covers the case (:func:`partial_unsupported_reason`), and passes
    ``test_kernel_mbconv``'s comparison: vs the reference in ``dtype`` and in float64, the output,
    every gradient (training) and the BN buffers after the call."""
    from fastscarlet.kernels.mbconv_partial import partial_unsupported_reason

    blk = case.block().to(device)
    blk.train(training)
    x = case.input().to(device)
    with torch.set_grad_enabled(training):
        assert partial_unsupported_reason(blk, blk.se, x.to(dtype).requires_grad_(training)) is None
        compare_with_reference(case, training, dtype, device, _partial)


# k 3/5/7, stride 1 and 2 on odd sizes, SE (both flavours) and none, residual and not,
# relu/relu6/hswish/swish, channels 24 and 40 (Cout 40: the unfused project weight gradient in
# the interpreter's 32-wide tile), a folded expand stride, a batch of 3 (ragged image groups).
TRAIN_CASES = [
    Case(8, 8, 3, 3, 1, "relu", False, 9),
    Case(8, 12, 6, 5, 2, "relu6", True, 9),
    Case(12, 12, 3, 7, 1, "hswish", True, 7),
    Case(12, 24, 3, 3, 2, "hswish", False, 11),
    Case(8, 8, 3, 3, 1, "swish", True, 7, se_cfg=FAIRNAS_SE),
    Case(24, 40, 3, 5, 1, "relu6", False, 7),
    Case(8, 12, 3, 3, 1, "hswish", False, 9, expand_stride=2),
    Case(8, 8, 6, 5, 1, "hswish", True, 5, N=3),
]

INFER_CASES = [
    Case(8, 8, 3, 3, 1, "relu", False, 9),  # residual, BN2 in the project prologue
    Case(8, 12, 6, 7, 2, "hswish", True, 13),  # SE pool pass, gate in the project prologue
    Case(24, 40, 3, 5, 1, "relu6", False, 7),
    Case(8, 8, 3, 5, 1, "hswish", True, 7),  # SE and the residual together
    Case(8, 8, 6, 3, 2, "swish", True, 7, N=3, se_cfg=FAIRNAS_SE),
    Case(8, 12, 3, 5, 1, "relu6", True, 9, expand_stride=2),
]


@needs_interpreter
@pytest.mark.interpreter
@pytest.mark.parametrize("case", TRAIN_CASES, ids=str)
def test_training_partial_matches_reference(case: Case) -> None:
    _compare(case, True, torch.float32, "cpu")


@needs_interpreter
@pytest.mark.interpreter
@pytest.mark.parametrize("case", INFER_CASES, ids=str)
def test_inference_partial_matches_reference(case: Case) -> None:
    _compare(case, False, torch.float32, "cpu")


@needs_interpreter
@pytest.mark.interpreter
def test_cumulative_bn_average_and_autograd_node() -> None:
    """BN with ``momentum=None`` over three batches: BatchNorm2d's cumulative averages (and not
    the last batch's statistics); the output's autograd node is the partial fusion's."""
    case = Case(8, 12, 3, 3, 2, "relu6", True, 7)
    blk = case.block().train()
    for bn in (blk.bn1, blk.bn2, blk.bn3):
        bn.reset_running_stats()
        bn.momentum = None
    xs = [case.input(seed) * (seed + 1) for seed in range(3)]
    ref, ker = copy.deepcopy(blk), copy.deepcopy(blk)
    with torch.no_grad():
        for x in xs[:-1]:
            _reference(ref, x)
            _partial(ker, x)
    _reference(ref, xs[-1])
    y = _partial(ker, xs[-1])
    assert "MBConvPartialTrainFunction" in type(y.grad_fn).__name__
    for name, want in ref.named_buffers():
        assert torch.allclose(ker.get_buffer(name), want, atol=1e-4, rtol=1e-4), name
    assert int(ker.bn2.num_batches_tracked) == 3
    last = copy.deepcopy(blk)
    with torch.no_grad():
        for bn in (last.bn1, last.bn2, last.bn3):
            bn.momentum = 1.0
        _reference(last, xs[-1])
    assert not torch.allclose(last.bn2.running_var, ker.bn2.running_var, atol=1e-3)


@needs_interpreter
@pytest.mark.interpreter
def test_unsupported_reason() -> None:
    """Eval-mode BN with gradients (no inference backward) and a non-BN layer are refused with
    the whole-block check's words; a covered call gets None."""
    from torch import nn

    from fastscarlet.kernels.mbconv_partial import partial_unsupported_reason

    case = Case(8, 8, 3, 3, 1, "relu", False, 5)
    blk = case.block().eval()
    x = case.input()
    assert "no_grad" in partial_unsupported_reason(blk, None, x)
    with torch.no_grad():
        assert partial_unsupported_reason(blk, None, x) is None
    blk.train()
    assert partial_unsupported_reason(blk, None, x) is None
    blk.bn2 = nn.Identity()
    assert "BatchNorm2d" in partial_unsupported_reason(blk, None, x)


@needs_interpreter
@pytest.mark.interpreter
def test_custom_ops_pass_opcheck() -> None:
    """Schema, fake implementations and strides of the three custom ops agree with the real
    ones (torch.compile relies on the fakes)."""
    from fastscarlet.kernels import mbconv_partial as mp

    case = Case(8, 12, 3, 3, 2, "hswish", True, 5)
    blk = case.block()
    x = case.input()
    se = blk.se
    sw = (se.reduce.weight, se.reduce.bias, se.expand.weight, se.expand.bias)
    b1, b2, b3 = blk.bn1, blk.bn2, blk.bn3
    cfg = (2, 1, "hswish", "relu", "hsigmoid", False)
    tests = ("test_schema", "test_faketensor")  # test_aot_dispatch compiles: ~10 s more here
    with torch.no_grad():
        infer_args = (
            x, blk.expand.weight, b1.weight, b1.bias, b1.running_mean, b1.running_var,
            blk.dw.weight, b2.weight, b2.bias, b2.running_mean, b2.running_var,
            blk.project.weight, b3.weight, b3.bias, b3.running_mean, b3.running_var, *sw, *cfg,
            1e-5, 1e-5, 1e-5,
        )  # fmt: skip
        torch.library.opcheck(mp.mbconv_partial_infer, infer_args, test_utils=tests)
        fwd_args = (
            x, blk.expand.weight, b1.weight, b1.bias, blk.dw.weight, b2.weight, b2.bias,
            blk.project.weight, b3.weight, b3.bias, *sw, *cfg, 1e-5, 1e-5, 1e-5,
        )  # fmt: skip
        torch.library.opcheck(mp.mbconv_partial_train_fwd, fwd_args, test_utils=tests)
        y, a1, z2, z3, stats, se_buf = mp.mbconv_partial_train_fwd(*fwd_args)
        bwd_args = (
            torch.randn_like(y), x, a1, z2, z3, stats, se_buf, blk.expand.weight, b1.weight,
            blk.dw.weight, b2.weight, blk.project.weight, b3.weight, *sw, *cfg, True,
        )  # fmt: skip
        torch.library.opcheck(mp.mbconv_partial_train_bwd, bwd_args, test_utils=tests)


@needs_interpreter
@pytest.mark.interpreter
def test_torch_compile_traces_the_partial_path() -> None:
    """torch.compile(fullgraph=True) over a training step: dynamo traces the autograd function
    and the custom ops without a graph break, and the compiled step gives the eager partial
    path's gradients and running statistics."""
    case = Case(8, 8, 3, 3, 1, "hswish", True, 5)
    blk = case.block()
    x = case.input()

    def loss(m: MBConv, inp: torch.Tensor) -> torch.Tensor:
        y = _partial(m, inp)
        return (y * y).sum()

    results = []
    torch._dynamo.reset()
    for fn in (loss, torch.compile(loss, backend="aot_eager", fullgraph=True)):
        m, inp = copy.deepcopy(blk), x.clone().requires_grad_()
        fn(m, inp).backward()
        results.append((inp.grad, m.expand.weight.grad, m.dw.weight.grad,
                        m.se.reduce.weight.grad, m.bn2.running_var))  # fmt: skip
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# The launch sequence, recorded on meta tensors (no interpreter needed), and its sm_90 build.
# ---------------------------------------------------------------------------------------------


def _record(training: bool, se: bool, cin: int = 40, expansion: int = 6, k: int = 7):
    """The Triton launches of one Scarlet-A-sized call (batch 256, 28x28, bf16) on meta tensors,
    with the calls to PyTorch's depthwise conv counted."""
    from fastscarlet.kernels import mbconv_partial as mp
    from fastscarlet.kernels.launch import record_launches

    meta = torch.device("meta")
    E, red = cin * expansion, cin * expansion // 4

    def t(*shape: int) -> torch.Tensor:
        return torch.empty(shape, device=meta)

    x = torch.empty((256, cin, 28, 28), dtype=torch.bfloat16, device=meta)
    x = x.contiguous(memory_format=CL)
    w1, wdw, w3, vh, vo = t(E, cin, 1, 1), t(E, 1, k, k), t(cin, E, 1, 1), t(E), t(cin)
    sew = (t(red, E, 1, 1), t(red), t(E, red, 1, 1), t(E)) if se else (None,) * 4
    cfg = (1, 1, "hswish", *(("relu", "hsigmoid") if se else ("none", "none")), True)
    calls = []
    real_fwd, real_bwd = mp.dw_forward, mp.dw_backward

    def count(name, fn):
        def wrapped(*args):
            calls.append(name)
            return fn(*args)

        return wrapped

    with pytest.MonkeyPatch.context() as mpatch, record_launches() as launches:
        mpatch.setattr(mp, "dw_forward", count("dw_forward", real_fwd))
        mpatch.setattr(mp, "dw_backward", count("dw_backward", real_bwd))
        if training:
            y, a1, z2, z3, stats, se_buf = mp.partial_train_fwd_impl(
                x, w1, vh, vh, wdw, vh, vh, w3, vo, vo, *sew, *cfg, 1e-5, 1e-5, 1e-5
            )
            mp.partial_train_bwd_impl(
                torch.empty_like(y), x, a1, z2, z3, stats, se_buf, w1, vh, wdw, vh, w3, vo,
                *sew, *cfg, True,
            )  # fmt: skip
        else:
            mp.partial_infer_impl(
                x, w1, vh, vh, vh, vh, wdw, vh, vh, vh, vh, w3, vo, vo, vo, vo, *sew, *cfg,
                1e-5, 1e-5, 1e-5,
            )  # fmt: skip
    return launches, calls


@pytest.mark.parametrize(
    ("training", "se", "triton_launches"),
    [(True, True, 8 + 3 + 9), (True, False, 8 + 9), (False, True, 3 + 3), (False, False, 3)],
)
def test_launch_sequence_has_no_triton_depthwise(training, se, triton_launches) -> None:
    """The depthwise conv is PyTorch's (one forward call, one backward call) and no Triton
    depthwise kernel runs; the number of Triton launches is the module doc's."""
    launches, calls = _record(training, se)
    names = [lp.kernel.__name__ for lp in launches]
    assert not [n for n in names if "_dw_" in n], names
    assert calls == (["dw_forward", "dw_backward"] if training else ["dw_forward"])
    assert len(names) == triton_launches, names
    # training: du1 by the expand GEMM with the EPI_ACT_BWD epilogue (z1 rebuilt from x)
    assert sum(lp.constexprs.get("EPI") == 4 for lp in launches) == (1 if training else 0)


@pytest.mark.slow
def test_partial_launches_compile_for_sm90_without_spills() -> None:
    """Every distinct Triton specialisation of the partial path (Scarlet-A layer 5's shape,
    40 -> 240 -> 40, k 7, SE, bf16; training and inference) compiles for sm_90 with Triton's
    ptxas, without spills or 16-bit loads. Includes the expand GEMM with the ``EPI_ACT_BWD``
    epilogue, which only this path launches."""
    pytest.importorskip("triton")
    from aot import compile_launch, unique

    launches = _record(True, True)[0] + _record(False, True)[0] + _record(False, False)[0]
    compiled = [compile_launch(lp) for lp in unique(launches)]
    assert any("EPI=4" in c.constexprs for c in compiled)
    assert {"_bn_eval_fold_kernel", "_project_bwd_kernel"} <= {c.name for c in compiled}
    spills = {f"{c.name} [{c.constexprs}]": c.spill_bytes for c in compiled if c.spill_bytes}
    assert not spills, spills
    narrow = {f"{c.name} [{c.constexprs}]": c.narrow_loads for c in compiled if c.narrow_loads}
    assert not narrow, narrow


# ---------------------------------------------------------------------------------------------
# GPU: Scarlet-A shapes at batch 16, bf16 (and fp32 parameters under bf16 autocast).
# ---------------------------------------------------------------------------------------------

GPU_CASES = [
    Case(16, 32, 6, 7, 2, "hswish", False, 112, N=16),  # layer 1's shape, E6 (Scarlet-A has E3)
    Case(32, 32, 3, 5, 1, "hswish", True, 56, N=16),
    Case(40, 40, 3, 7, 1, "hswish", True, 28, N=16),  # layer 4: 120 channels
    Case(96, 192, 6, 5, 2, "hswish", False, 14, N=16),
    Case(192, 320, 6, 3, 1, "hswish", True, 7, N=16),
    Case(24, 24, 3, 3, 1, "relu6", False, 13, N=16),
]


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", GPU_CASES, ids=str)
@pytest.mark.usefixtures("exact_fp32")
def test_gpu_partial_within_budget(case: Case, training: bool) -> None:
    _compare(case, training, torch.bfloat16, "cuda")


@needs_cuda
@pytest.mark.gpu
@pytest.mark.usefixtures("exact_fp32")
def test_gpu_autocast_partial_within_budget() -> None:
    """fp32 parameters under bf16 autocast (the AMP training setting): bf16 output, fp32
    gradients within the bf16 budget, the BN buffers too."""
    hi, lo, out = _autocast_runs(_partial)
    for name in hi.grads:
        assert out.grads[name].dtype == lo.grads[name].dtype, name
        assert_within_budget(name, out.grads[name], lo.grads[name], hi.grads[name], torch.bfloat16)
    for name, ref in hi.buffers.items():
        if not name.endswith("num_batches_tracked"):
            assert_within_budget(name, out.buffers[name], lo.buffers[name], ref, torch.bfloat16)
