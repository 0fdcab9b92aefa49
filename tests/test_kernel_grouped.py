"""The grouped multi-path kernels (fastscarlet.kernels.grouped) against their references: the
grouped GEMM of the 1x1 convs (per-group shapes, shared inputs, shared weights, bias) and the
depthwise conv with per-group kernel size, forward and every gradient; the decision kernel vs
reference."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from fastscarlet.env import triton_interpret
from fastscarlet.kernels.dispatch import kernel_mode
from fastscarlet.kernels.grouped_ref import (
    DepthwiseGroups,
    PointwiseGroups,
    grouped_depthwise_ref,
    grouped_pointwise_ref,
)
from fastscarlet.kernels.testing import assert_close_scaled, assert_within_budget

needs_interpreter = pytest.mark.skipif(not triton_interpret(), reason="needs TRITON_INTERPRET=1")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CL = torch.channels_last

# Channel counts not multiples of any tile; one group wider than a tile; a 1-channel group.
POINTWISE_CASES = {
    "side_by_side": PointwiseGroups.packed([5, 7, 5], [9, 4, 17], bias=True),
    "shared_input": PointwiseGroups.packed([6, 6, 6], [5, 19, 1], in_start=[0, 0, 0]),
    "shared_weight": PointwiseGroups((0, 7, 14), (7, 7, 7), (10, 10, 10), (0, 0, 0)),
}
DEPTHWISE_CASES = [
    ([5, 9, 3], [3, 7, 5], 1, (5, 4)),
    ([3, 20, 4], [7, 3, 5], 2, (7, 5)),  # stride 2 on odd sizes; 20 channels: two tiles
]


def _inputs(c: int, hw: tuple[int, int], n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, *hw, generator=g).contiguous(memory_format=CL)


def _pw_weights(groups: PointwiseGroups, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    size = max(w + i * o for w, i, o in zip(groups.w_off, groups.in_ch, groups.out_ch))
    w = torch.randn(size, generator=g)
    b = torch.randn(groups.total_out, generator=g) if groups.b_off is not None else None
    return w, b


def _in_channels(groups: PointwiseGroups) -> int:
    return max(s + k for s, k in zip(groups.in_start, groups.in_ch))


def _close(names, got, want) -> None:
    for name, a, c in zip(names, got, want):
        try:
            assert_close_scaled(a, c, 1e-5)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None


def _grads(fn, tensors, dy):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in tensors]
    y = fn(*leaves)
    y.backward(dy)
    return [y.detach()] + [t.grad for t in leaves if t is not None]


def test_pointwise_reference_is_a_1x1_conv_per_group():
    """The layout is what the module doc says: group g's outputs at channels o_g, from input
    channels i_g, with the weight at w_off_g (checked on F.conv2d with a grouped weight)."""
    groups = PointwiseGroups.packed([4, 4], [3, 5])
    x = _inputs(8, (3, 3))
    w, _ = _pw_weights(groups)
    y = grouped_pointwise_ref(x, w, groups)
    w0 = w[:12].view(3, 4, 1, 1)
    w1 = w[12:32].view(5, 4, 1, 1)
    torch.testing.assert_close(y[:, :3], F.conv2d(x[:, :4], w0))
    torch.testing.assert_close(y[:, 3:], F.conv2d(x[:, 4:], w1))


def test_depthwise_reference_pads_each_group_by_its_kernel():
    groups = DepthwiseGroups.packed([2, 3], [3, 5])
    x = _inputs(5, (6, 6))
    w = torch.randn(2 * 9 + 3 * 25)
    y = grouped_depthwise_ref(x, w, groups, 2)
    assert y.shape == (2, 5, 3, 3)
    want = F.conv2d(x[:, 2:], w[18:].view(3, 1, 5, 5), None, 2, 2, 1, 3)
    torch.testing.assert_close(y[:, 2:], want)


def test_group_layouts_validate():
    assert PointwiseGroups.packed([4, 4], [3, 5]).disjoint_inputs
    assert not POINTWISE_CASES["shared_input"].disjoint_inputs
    with pytest.raises(ValueError, match="odd"):
        DepthwiseGroups.packed([4], [4])
    with pytest.raises(ValueError, match="groups"):
        PointwiseGroups((0,), (1, 2), (3,), (0,))


@pytest.mark.parametrize("kernels", ["reference", "triton"])
def test_decision_kernel_or_reference(kernels, monkeypatch):
    """The front doors run the kernel only where use_kernels says so and the tensors are
    supported (float64 is not): a reference-mode or float64 call never reaches the kernel."""
    pytest.importorskip("triton")
    from fastscarlet.kernels import grouped

    if kernels == "triton" and not triton_interpret():
        pytest.skip("triton mode on CPU needs TRITON_INTERPRET=1")
    calls = []
    monkeypatch.setattr(grouped, "pointwise_forward", lambda *a: calls.append(a) or a[0])
    groups = PointwiseGroups.packed([3], [3])
    x, w = _inputs(3, (2, 2)), torch.randn(9)
    with kernel_mode(kernels):
        grouped.grouped_pointwise(x, w, groups)
        grouped.grouped_pointwise(x.double(), w.double(), groups)
    assert len(calls) == (1 if kernels == "triton" else 0)
    assert grouped.unsupported_reason(x.double()) is not None
    assert grouped.unsupported_reason(x, w) is None


@needs_interpreter
@pytest.mark.interpreter
@pytest.mark.parametrize("case", sorted(POINTWISE_CASES))
@pytest.mark.parametrize("hw", [(5, 3), (2, 1)])  # the weight gradient in 2 splits, and in 1
def test_grouped_pointwise_kernel_matches_reference(case, hw):
    from fastscarlet.kernels.grouped import GroupedPointwiseFunction

    groups = POINTWISE_CASES[case]
    x = _inputs(_in_channels(groups), hw)
    w, b = _pw_weights(groups)
    dy = torch.randn(2, groups.total_out, *hw)
    want = _grads(lambda x_, w_, b_: grouped_pointwise_ref(x_, w_, groups, b_), [x, w, b], dy)
    got = _grads(
        lambda x_, w_, b_: GroupedPointwiseFunction.apply(x_, w_, b_, groups), [x, w, b], dy
    )
    assert got[0].is_contiguous(memory_format=CL)
    _close(("y", "dx", "dw", "db"), got, want)


@needs_interpreter
@pytest.mark.interpreter
def test_grouped_pointwise_each_groups_weight_reaches_only_its_outputs():
    """Perturbing one group's weight changes that group's output channels and no others (the
    offsets and strides of every group are right)."""
    from fastscarlet.kernels.grouped import pointwise_forward

    groups = POINTWISE_CASES["side_by_side"]
    x = _inputs(_in_channels(groups), (3, 3))
    w, b = _pw_weights(groups)
    base = pointwise_forward(x, w, groups, b)
    for g, (o0, o, k) in enumerate(zip(groups.out_start, groups.out_ch, groups.in_ch)):
        w2 = w.clone()
        w2[groups.w_off[g] : groups.w_off[g] + o * k] += 0.5
        diff = (pointwise_forward(x, w2, groups, b) - base).abs().amax(dim=(0, 2, 3))
        assert (diff[o0 : o0 + o] > 0).all(), g
        assert (diff[:o0] == 0).all() and (diff[o0 + o :] == 0).all(), g


@needs_interpreter
@pytest.mark.interpreter
@pytest.mark.parametrize(("channels", "kernels", "stride", "hw"), DEPTHWISE_CASES)
def test_grouped_depthwise_kernel_matches_reference(channels, kernels, stride, hw):
    from fastscarlet.kernels.grouped import GroupedDepthwiseFunction

    groups = DepthwiseGroups.packed(channels, kernels)
    x = _inputs(groups.total, hw)
    w = torch.randn(sum(c * k * k for c, k in zip(channels, kernels)))
    ho, wo = (hw[0] - 1) // stride + 1, (hw[1] - 1) // stride + 1
    dy = torch.randn(2, groups.total, ho, wo)
    want = _grads(lambda t, u: grouped_depthwise_ref(t, u, groups, stride), [x, w], dy)
    got = _grads(lambda t, u: GroupedDepthwiseFunction.apply(t, u, groups, stride), [x, w], dy)
    _close(("y", "dx", "dw"), got, want)
    # each group's kernel size matters: the taps outside a 3x3 window change its outputs
    w2 = w.clone()
    w2[groups.w_off[-1]] += 1.0  # corner tap of the last group
    y2 = GroupedDepthwiseFunction.apply(x, w2, groups, stride)
    diff = (y2 - got[0]).abs().amax(dim=(0, 2, 3))
    last = groups.start[-1]
    assert diff[last] > 0 and (diff[:last] == 0).all() and (diff[last + 1 :] == 0).all()


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_grouped_kernels_within_the_gpu_budget(dtype):
    """Real SCARLET-like shapes on a GPU: 12 MBConv hidden widths of a 40-channel layer, k 3/5/7."""
    from fastscarlet.kernels.grouped import GroupedDepthwiseFunction, GroupedPointwiseFunction

    hidden = [120, 120, 120, 240, 240, 240] * 2
    pg = PointwiseGroups.packed([40] * 12, hidden, [40 * j for j in range(12)])
    dg = DepthwiseGroups.packed(hidden, [3, 5, 7] * 4)
    x = torch.randn(32, 480, 28, 28, device="cuda").contiguous(memory_format=CL)
    wp = torch.randn(sum(h * 40 for h in hidden), device="cuda") * 0.1
    wd = torch.randn(sum(h * k * k for h, k in zip(hidden, [3, 5, 7] * 4)), device="cuda") * 0.1
    dyp = torch.randn(32, sum(hidden), 28, 28, device="cuda")
    dyd = torch.randn(32, sum(hidden), 14, 14, device="cuda")
    h = torch.randn(32, sum(hidden), 28, 28, device="cuda").contiguous(memory_format=CL)
    for fn, ref, args, dy in (
        (lambda a, b: GroupedPointwiseFunction.apply(a, b, None, pg),
         lambda a, b: grouped_pointwise_ref(a, b, pg), (x, wp), dyp),
        (lambda a, b: GroupedDepthwiseFunction.apply(a, b, dg, 2),
         lambda a, b: grouped_depthwise_ref(a, b, dg, 2), (h, wd), dyd),
    ):  # fmt: skip
        with kernel_mode("reference"):
            hi = _grads(ref, [t.double() for t in args], dy.double())
            lo = _grads(ref, [t.to(dtype) for t in args], dy.to(dtype))
        out = _grads(fn, [t.to(dtype) for t in args], dy.to(dtype))
        for name, a, b, c in zip(("y", "dx", "dw"), out, lo, hi):
            assert_within_budget(name, a, b, c, dtype)


@pytest.mark.slow
def test_grouped_kernels_compile_for_sm90_without_spills():
    """Every grouped kernel a SCARLET-like layer launches (bf16, 12 groups, k 3/5/7, stride 2,
    forward and backward, and the SE convs with bias) compiles for sm_90 with Triton's ptxas and
    keeps its tile in registers: 4 warps on the 128x64 GEMM tile and the 64x32 depthwise tiles
    spilled, 8 do not."""
    pytest.importorskip("triton")
    from aot import compile_launch, unique

    from fastscarlet.kernels.grouped import (
        depthwise_backward,
        depthwise_forward,
        pointwise_backward,
        pointwise_forward,
    )
    from fastscarlet.kernels.launch import record_launches

    meta, dt = torch.device("meta"), torch.bfloat16
    hidden = [96, 96, 96, 192, 192, 192] * 2
    pg = PointwiseGroups.packed([32] * 12, hidden, [32 * j for j in range(12)])
    dg = DepthwiseGroups.packed(hidden, [3, 5, 7] * 4)
    se = PointwiseGroups.packed([8, 8], [4, 4], bias=True)

    def empty(*shape):
        t = torch.empty(*shape, device=meta, dtype=dt)
        return t.contiguous(memory_format=CL) if len(shape) == 4 else t

    with record_launches() as launches:
        x, w = empty(8, 32 * 12, 28, 28), empty(sum(h * 32 for h in hidden))
        y = pointwise_forward(x, w, pg, None)
        pointwise_backward(torch.empty_like(y), x, w, pg, True, True)
        h = empty(8, sum(hidden), 28, 28)
        wd = empty(sum(c * k * k for c, k in zip(hidden, [3, 5, 7] * 4)))
        depthwise_backward(
            torch.empty_like(depthwise_forward(h, wd, dg, 2)), h, wd, dg, 2, True, True
        )
        pointwise_forward(empty(8, 16, 1, 1), empty(64), se, torch.empty(8, device=meta))
    compiled = [compile_launch(launch) for launch in unique(launches)]
    assert {c.name for c in compiled} == {
        "_grouped_gemm_kernel", "_grouped_dw_fwd_kernel", "_grouped_dw_dx_kernel",
        "_grouped_dw_dw_kernel",
    }  # fmt: skip
    spills = {f"{c.name} [{c.constexprs}]": c.spill_bytes for c in compiled if c.spill_bytes}
    assert not spills, spills
