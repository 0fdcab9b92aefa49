"""Depthwise conv kernels (fastscarlet.kernels.depthwise) against ``depthwise_ref`` (``F.conv2d``
with ``groups=C``) and its autograd."""

from __future__ import annotations

import pytest
import torch

from fastscarlet.env import triton_interpret
from fastscarlet.kernels.depthwise import depthwise_ref
from fastscarlet.kernels.testing import assert_close_scaled as _close
from fastscarlet.kernels.testing import rows as _rows

pytestmark = [
    pytest.mark.interpreter,
    pytest.mark.skipif(not triton_interpret(), reason="needs TRITON_INTERPRET=1"),
]
CL = torch.channels_last


@pytest.mark.parametrize(
    ("k", "s", "H"), [(3, 1, 9), (5, 2, 9), (7, 1, 7), (7, 2, 13), (3, 2, 5), (9, 1, 10)]
)
@pytest.mark.parametrize("mode", ["inference", "training"])
@pytest.mark.parametrize("kernel", ["tile", "sweep"])
def test_dw_conv_fwd(k: int, s: int, H: int, mode: str, kernel: str) -> None:
    """inference: BN-eval + act epilogue, store, SE pooling; training: BN + act prologue (zero
    padding applied after it), statistics, no pooling. Both forward kernels (``fwd_mode``); the
    interpreter's sweep tile is 4 x 4, so the images span several row and column tiles."""
    from fastscarlet.kernels.activations import act_ref
    from fastscarlet.kernels.depthwise import dw_conv_fwd

    g = torch.Generator().manual_seed(k * 10 + s)
    N, C = 3, 40
    x = torch.randn(N, C, H, H, generator=g).contiguous(memory_format=CL)
    w = torch.randn(C, 1, k, k, generator=g)
    Ho = (H - 1) // s + 1
    out = torch.empty(N, C, Ho, Ho).contiguous(memory_format=CL)
    if mode == "inference":
        bn = (torch.rand(C, generator=g) + 0.5, torch.randn(C, generator=g),
              torch.randn(C, generator=g), torch.rand(C, generator=g) + 0.5)  # fmt: skip
        pool = torch.zeros(N, C)
        dw_conv_fwd(_rows(x), w, (N, H, H), s, out=_rows(out), bn_eval=bn, eps=1e-5,
                    epi_act="hswish", pool=pool, mode=kernel)  # fmt: skip
        ref = depthwise_ref(x.double(), w.double(), s)
        sc = bn[0].double() / torch.sqrt(bn[3].double() + 1e-5)
        ref = ref * sc[:, None, None] + (bn[1].double() - bn[2].double() * sc)[:, None, None]
        ref = act_ref(ref, "hswish")
        _close(out, ref)
        _close(pool, ref.mean((2, 3)))
    else:
        sa, sb = torch.rand(C, generator=g) + 0.5, torch.randn(C, generator=g)
        stats = torch.zeros(2, C)
        dw_conv_fwd(_rows(x), w, (N, H, H), s, out=_rows(out), pro_vecs=(sa, sb),
                    pro_act="relu6", stats=stats, mode=kernel)  # fmt: skip
        a = act_ref(x.double() * sa.double()[:, None, None] + sb.double()[:, None, None], "relu6")
        ref = depthwise_ref(a, w.double(), s)
        _close(out, ref)
        _close(stats[0], ref.sum((0, 2, 3)))
        _close(stats[1], ref.square().sum((0, 2, 3)))


@pytest.mark.parametrize(
    ("k", "s", "H"), [(3, 1, 9), (5, 2, 9), (7, 1, 7), (7, 2, 13), (3, 2, 6), (9, 1, 11)]
)
@pytest.mark.parametrize("prologue", ["plain", "bn-act", "rebuild"])
@pytest.mark.parametrize("wgrad", ["split", "fused"])
def test_dw_conv_bwd(k: int, s: int, H: int, prologue: str, wgrad: str) -> None:
    """Input and weight gradients (per parity class for stride 2); with the prologue, the gradient
    w.r.t. u (through the activation) and the two BN backward sums; ``rebuild``: the conv input
    ``z = x_s W1^T`` rebuilt from ``x`` (sampled with stride 2) instead of read. ``wgrad``: the
    weight gradient in its own kernel (row accumulators over images; 9x9 uses all nine) or fused
    into the input-gradient kernel."""
    from fastscarlet.kernels.activations import act_ref
    from fastscarlet.kernels.depthwise import dw_conv_bwd

    g = torch.Generator().manual_seed(k * 10 + s + 1)
    N, C, CIN = 3, 40, 12
    z = torch.randn(N, C, H, H, generator=g, dtype=torch.float64)
    rebuild = None
    if prologue == "rebuild":
        xin = torch.randn(N, CIN, 2 * H - 1, 2 * H - 1, generator=g)
        w1 = torch.randn(C, CIN, generator=g)
        z = torch.einsum("nchw,ec->nehw", xin.double()[:, :, ::2, ::2], w1.double())
        xin = xin.contiguous(memory_format=CL)
        rebuild = (_rows(xin), w1, 2 * H - 1, 2 * H - 1, 2)
    prologue = prologue != "plain"
    w = torch.randn(C, 1, k, k, generator=g, dtype=torch.float64, requires_grad=True)
    sa = torch.rand(C, generator=g, dtype=torch.float64) + 0.5
    sb = torch.randn(C, generator=g, dtype=torch.float64)
    mean, rstd = torch.randn(C, dtype=torch.float64), torch.rand(C, dtype=torch.float64) + 0.5
    u = (z * sa[:, None, None] + sb[:, None, None]) if prologue else z
    u = u.detach().requires_grad_()
    y = depthwise_ref(act_ref(u, "hswish") if prologue else u, w, s)
    dz = torch.randn(y.shape, generator=g, dtype=torch.float64)
    y.backward(dz)
    zf = z.float().contiguous(memory_format=CL)
    dzf = dz.float().contiguous(memory_format=CL)
    dx = torch.empty_like(zf)
    dw = torch.zeros(C, k * k)
    sums = torch.zeros(2, C)
    dw_conv_bwd(
        _rows(dzf), None if rebuild else _rows(zf), w.detach().float(), (N, H, H), s, _rows(dx), dw,
        pro_vecs=(sa.float(), sb.float()) if prologue else None, pro_act="hswish",
        bn_sums=(sums, mean.float(), rstd.float()) if prologue else None, rebuild=rebuild,
        wgrad=wgrad,
    )  # fmt: skip
    _close(dx, u.grad)
    _close(dw, w.grad.view(C, k * k))
    if prologue:
        xhat = (z - mean[:, None, None]) * rstd[:, None, None]
        _close(sums[0], u.grad.sum((0, 2, 3)))
        _close(sums[1], (u.grad * xhat).sum((0, 2, 3)))


def test_wgrad_mode_names_a_bad_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastscarlet.kernels.depthwise import wgrad_mode

    monkeypatch.delenv("FASTSCARLET_DW_WGRAD", raising=False)
    assert wgrad_mode() == "split"
    monkeypatch.setenv("FASTSCARLET_DW_WGRAD", "fused")
    assert wgrad_mode() == "fused"
    assert wgrad_mode("split") == "split"
    monkeypatch.setenv("FASTSCARLET_DW_WGRAD", "atomic")
    with pytest.raises(ValueError, match="FASTSCARLET_DW_WGRAD.*split, fused"):
        wgrad_mode()


def test_fwd_mode_names_a_bad_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastscarlet.kernels.depthwise import fwd_mode

    monkeypatch.delenv("FASTSCARLET_DW_FWD", raising=False)
    assert fwd_mode() == "tile"
    monkeypatch.setenv("FASTSCARLET_DW_FWD", "sweep")
    assert fwd_mode() == "sweep"
    assert fwd_mode("tile") == "tile"
    monkeypatch.setenv("FASTSCARLET_DW_FWD", "winograd")
    with pytest.raises(ValueError, match="FASTSCARLET_DW_FWD.*tile, sweep"):
        fwd_mode()


def test_channel_block_prefers_little_waste() -> None:
    from fastscarlet.kernels.depthwise import channel_block

    assert channel_block(64) == 64
    assert channel_block(72) == 16  # 64 wastes 56 of 128 lanes, 32 wastes 24 of 96, 16: 8 of 80
    assert channel_block(72, (64, 32)) == 32
    assert channel_block(1152) == 64
    assert channel_block(8) == 16
