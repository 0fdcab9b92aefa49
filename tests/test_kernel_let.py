"""The LET stabilizer kernels (fastscarlet.kernels.let) and their fusion into the expand conv."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd

from fastscarlet.env import triton_interpret
from fastscarlet.kernels.dispatch import kernel_mode
from fastscarlet.kernels.testing import assert_within_budget, randomize_bn
from fastscarlet.nn import LinearStabilizer, MBConv, init_weights
from fastscarlet.space import SEConfig

needs_interpreter = pytest.mark.skipif(not triton_interpret(), reason="needs TRITON_INTERPRET=1")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CL = torch.channels_last


def _let(cin: int, cout: int, stride: int, seed: int = 0) -> LinearStabilizer:
    torch.manual_seed(seed)
    let = LinearStabilizer(cin, cout, stride)
    init_weights(let)
    return let


def _grads(fn, module, x, g):
    x = x.detach().clone().requires_grad_()
    for p in module.parameters():
        p.grad = None
    y = fn(module, x)
    y.backward(g.to(y.dtype))
    return y.detach(), x.grad, module.conv.weight.grad


def _check_let(cin: int, cout: int, stride: int, H: int, dtype: torch.dtype, device: str) -> None:
    from fastscarlet.kernels.let import let_forward

    let = _let(cin, cout, stride).to(device)
    x = torch.randn(3, cin, H, H, device=device).contiguous(memory_format=CL)
    Ho = (H - 1) // stride + 1
    g = torch.randn(3, cout, Ho, Ho, device=device)
    with kernel_mode("reference"):
        hi = _grads(lambda m, t: m(t), copy.deepcopy(let).double(), x.double(), g.double())
        lo = _grads(lambda m, t: m(t), copy.deepcopy(let).to(dtype), x.to(dtype), g)
    out = _grads(let_forward, copy.deepcopy(let).to(dtype), x.to(dtype), g)
    assert out[0].is_contiguous(memory_format=CL)
    for name, a, b, c in zip(("y", "dx", "dW"), out, lo, hi):
        assert_within_budget(name, a, b, c, dtype)


@needs_interpreter
@pytest.mark.interpreter
@pytest.mark.parametrize(
    ("cin", "cout", "stride", "H"),
    [(12, 12, 1, 7), (8, 24, 2, 9), (24, 12, 2, 13), (40, 40, 1, 5)],
    ids=["CxC", "widen-s2", "narrow-s2-odd", "40x40"],
)
def test_let_kernels_match_reference(cin: int, cout: int, stride: int, H: int) -> None:
    _check_let(cin, cout, stride, H, torch.float32, "cpu")


def _block(cin: int, cout: int, stride: int, se: bool) -> MBConv:
    torch.manual_seed(3)
    blk = MBConv(cin, cout, 3, 3, stride, "hswish", SEConfig() if se else None)
    init_weights(blk)
    randomize_bn(blk)
    return blk


@needs_interpreter
@pytest.mark.interpreter
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(
    ("lets", "block"),
    [
        ([(8, 8, 1)], (8, 12, 1, True)),  # no residual: folded into the expand conv
        ([(8, 8, 1), (8, 12, 2)], (12, 16, 2, False)),  # a run of two LETs, strides 2 * 2
        ([(8, 12, 2)], (12, 12, 1, False)),  # residual block: composed LET kept, not folded
    ],
    ids=["fold", "fold-run", "residual-keeps-let"],
)
def test_let_fused_into_expand_is_exact(lets, block, training: bool) -> None:
    """LET(s) + MBConv through let_mbconv_forward == the modules one after the other, with the
    gradients of every LET weight and block parameter."""
    from fastscarlet.kernels.let import let_mbconv_forward

    let_mods = [_let(*spec, seed=i) for i, spec in enumerate(lets)]
    blk = _block(*block).train(training)
    x = torch.randn(2, lets[0][0], 9, 9).contiguous(memory_format=CL)

    def chained(mods, inp):
        *ls, b = mods
        with kernel_mode("reference"):
            for m in ls:
                inp = m(inp)
            return b.forward_with_se(inp, b.se)

    def fused(mods, inp):
        *ls, b = mods
        return let_mbconv_forward(ls, b, inp, b.se)

    results = []
    for fn in (chained, fused):
        mods = copy.deepcopy([*let_mods, blk])
        inp = x.clone().requires_grad_(training)
        with torch.set_grad_enabled(training):
            y = fn(mods, inp)
            if training:
                y.square().sum().backward()
        grads = [inp.grad] if training else []
        grads += [p.grad for m in mods for p in m.parameters()] if training else []
        results.append((y.detach(), grads, [b.clone() for b in mods[-1].buffers()]))
    (y_ref, g_ref, b_ref), (y_k, g_k, b_k) = results
    assert torch.allclose(y_k, y_ref, atol=1e-4, rtol=1e-4)
    for a, b in zip(g_k, g_ref):
        assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)
    for a, b in zip(b_k, b_ref):
        assert torch.allclose(a.float(), b.float(), atol=1e-5, rtol=1e-5)


@needs_interpreter
@pytest.mark.interpreter
def test_stabilizer_module_uses_kernel_when_forced() -> None:
    let = _let(8, 16, 2)
    x = torch.randn(2, 8, 7, 7).contiguous(memory_format=CL).requires_grad_()
    with kernel_mode("triton"):
        y = let(x)
    assert "LETFunction" in type(y.grad_fn).__name__
    with kernel_mode("reference"):
        want = let(x)
    assert torch.allclose(y, want, atol=1e-5)


@needs_interpreter
@pytest.mark.interpreter
def test_let_ops_pass_opcheck() -> None:
    from fastscarlet.kernels import let as let_ops

    x = torch.randn(2, 8, 7, 7).contiguous(memory_format=CL)
    w = torch.randn(12, 8, 1, 1)
    torch.library.opcheck(let_ops.let_fwd, (x, w, 2))
    dy = torch.randn(2, 12, 4, 4).contiguous(memory_format=CL)
    torch.library.opcheck(let_ops.let_bwd, (dy, x, w, 2, True))


@needs_interpreter
@pytest.mark.interpreter
def test_let_with_a_non_contiguous_weight() -> None:
    """A weight stored transposed (same values, other strides) gives the reference's numbers."""
    from fastscarlet.kernels.let import let_forward

    let = _let(8, 12, 2)
    with torch.no_grad():
        w = let.conv.weight.detach().transpose(0, 1).contiguous().transpose(0, 1)
    assert not w.is_contiguous()
    let.conv.weight = torch.nn.Parameter(w)
    x = torch.randn(2, 8, 7, 7).contiguous(memory_format=CL)
    g = torch.randn(2, 12, 4, 4)
    with kernel_mode("reference"):
        want = _grads(lambda m, t: m(t), copy.deepcopy(let), x, g)
    got = _grads(let_forward, copy.deepcopy(let), x, g)
    for name, a, b in zip(("y", "dx", "dW"), got, want):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), name


@needs_interpreter
@pytest.mark.interpreter
def test_torch_compile_traces_the_let_kernels() -> None:
    """torch.compile(fullgraph=True) over a LET + MBConv training step with the kernels forced:
    the LET op, the LET folded into the expand conv and their backward trace without a graph
    break and give the eager kernel path's gradients."""
    from fastscarlet.kernels.let import let_mbconv_forward

    lets = [_let(8, 8, 1), _let(8, 8, 2, seed=1)]
    blk = _block(8, 12, 1, True)
    x = torch.randn(2, 8, 9, 9).contiguous(memory_format=CL)

    def loss(ls, b, inp):
        y = let_mbconv_forward([ls[0]], b, ls[1](inp), b.se)
        return (y * y).sum()

    graphs: list[str] = []

    def keep(gm, example_inputs):  # records the forward and backward graphs, runs them as is
        graphs.append(gm.code)
        return make_boxed_func(gm)

    results = []
    with kernel_mode("triton"):
        torch._dynamo.reset()
        backend = aot_autograd(fw_compiler=keep, bw_compiler=keep)
        for fn in (loss, torch.compile(loss, backend=backend, fullgraph=True)):
            ls, b, inp = copy.deepcopy(lets), copy.deepcopy(blk), x.clone().requires_grad_()
            fn(ls, b, inp).backward()
            results.append((inp.grad, ls[0].conv.weight.grad, ls[1].conv.weight.grad,
                            b.expand.weight.grad))  # fmt: skip
    ops = [set(re.findall(r"fastscarlet\.(\w+)", code)) for code in graphs]
    assert ops == [{"let_fwd", "mbconv_train_fwd"}, {"let_bwd", "mbconv_train_bwd"}]
    for a, b in zip(*results):
        assert a is not None and torch.allclose(a, b, atol=1e-5, rtol=1e-5)


def test_fold_is_rejected_in_front_of_a_residual_block() -> None:
    from fastscarlet.kernels.mbconv import mbconv_block_forward

    blk = _block(8, 8, 1, False)
    with pytest.raises(ValueError, match="no residual"):
        mbconv_block_forward(blk, torch.randn(1, 8, 5, 5), let_weight=torch.randn(8, 8, 1, 1))


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize(
    ("cin", "cout", "stride", "H"), [(40, 40, 1, 28), (80, 96, 1, 14), (96, 192, 2, 15)]
)
def test_gpu_let_within_budget(cin, cout, stride, H, dtype) -> None:
    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        _check_let(cin, cout, stride, H, dtype, "cuda")
    finally:
        torch.backends.cudnn.allow_tf32 = old


@needs_interpreter
@pytest.mark.interpreter
def test_supernet_path_with_let_runs_fused_on_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """SuperNet.forward_features hands a run of LETs to the next MBConv on the kernel path: the
    output and every gradient equal the reference path (a LET before a non-residual block is
    folded into its expand conv; one before a residual block runs as a composed launch)."""
    from fastscarlet.nn.supernet import SuperNet
    from fastscarlet.space import FirstBlock, Head, Stage, Stem, make_space, mbconv_choices

    space = make_space(
        "let_fusion",
        choices=mbconv_choices(expansions=(3,), kernels=(3,), se=(False,), identity=True),
        stem=Stem(8, "relu6"),
        first_block=FirstBlock(8, "relu6"),
        stages=[Stage(8, 2, 1, "hswish"), Stage(12, 2, 1, "hswish")],
        head=Head(16, "relu6"),
        identity="all",
        num_classes=3,
    )
    # layers: 8->8 (ID), 8->8 (ID), 8->12 (E3K3, no residual: fold), 12->12 (ID, then end: plain)
    genome = (1, 1, 0, 1)
    import fastscarlet.kernels.let as let_module

    calls = []
    real = let_module.let_mbconv_forward

    def spy(lets, block, x, se=None):
        calls.append((len(lets), block.residual))
        return real(lets, block, x, se)

    monkeypatch.setattr(let_module, "let_mbconv_forward", spy)
    torch.manual_seed(0)
    net = SuperNet(space)
    randomize_bn(net)
    ref_net = copy.deepcopy(net)
    x = torch.randn(2, 3, 11, 11)
    with kernel_mode("reference"):
        y_ref = ref_net.forward_features(x, genome)
        y_ref.square().sum().backward()
    with kernel_mode("triton"):
        y = net.forward_features(x, genome)
        y.square().sum().backward()
    assert calls == [(2, False)]  # the two leading LETs were folded into layer 3's expand conv
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    for (name, p), p_ref in zip(net.named_parameters(), ref_net.parameters()):
        if p_ref.grad is None:
            assert p.grad is None, name
        else:
            torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-3, atol=1e-4, msg=name)


def _check_lets_and_block(
    c: int, N: int, H: int, fold: bool, dtype: torch.dtype, device: str
) -> None:
    """Two LETs (c -> c) + an E6K5 SE MBConv in training mode: the fused path (folded into the
    expand conv, or one composed LET launch before a residual block) within the error budget of
    the modules run one after the other in float64; output and every gradient."""
    from fastscarlet.kernels.let import let_mbconv_forward

    lets = [_let(c, c, 1), _let(c, c, 1, seed=1)]
    torch.manual_seed(3)
    blk = MBConv(c, 2 * c if fold else c, 6, 5, 2 if fold else 1, "hswish", SEConfig())
    init_weights(blk)
    randomize_bn(blk)
    Ho = (H - 1) // 2 + 1 if fold else H
    x = torch.randn(N, c, H, H).contiguous(memory_format=CL).to(device)
    g = torch.randn(N, blk.out_channels, Ho, Ho).to(device)

    def run(mods, inp, fused):
        *ls, b = mods
        inp = inp.detach().clone().requires_grad_()
        if fused:
            y = let_mbconv_forward(ls, b, inp, b.se)
        else:
            with kernel_mode("reference"):
                y = inp
                for m in ls:
                    y = m(y)
                y = b.forward_with_se(y, b.se)
        y.backward(g.to(y.dtype))
        return y.detach(), [inp.grad] + [p.grad for m in mods for p in m.parameters()]

    mods = [*lets, blk]
    hi = run([copy.deepcopy(m).to(device, torch.float64) for m in mods], x.double(), False)
    lo = run([copy.deepcopy(m).to(device, dtype) for m in mods], x.to(dtype), False)
    out = run([copy.deepcopy(m).to(device, dtype) for m in mods], x.to(dtype), True)
    assert_within_budget("y", out[0], lo[0], hi[0], dtype)
    assert len(out[1]) == len(hi[1])
    for i, (a, b, ref) in enumerate(zip(out[1], lo[1], hi[1])):
        assert_within_budget(f"grad {i}", a, b, ref, dtype)


@needs_interpreter
@pytest.mark.interpreter
@pytest.mark.parametrize("fold", [True, False], ids=["fold", "residual-keeps-let"])
def test_lets_and_block_within_budget(fold: bool) -> None:
    _check_lets_and_block(8, 2, 7, fold, torch.float32, "cpu")


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("fold", [True, False], ids=["fold", "residual-keeps-let"])
def test_gpu_lets_and_block_within_budget(dtype: torch.dtype, fold: bool) -> None:
    """At a Scarlet stage-3 shape: 40 channels, batch 16, 28x28."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        _check_lets_and_block(40, 16, 28, fold, dtype, "cuda")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
