"""1x1-conv GEMM kernels (fastscarlet.kernels.pointwise) against ``conv1x1_ref`` (and its weight
gradient by autograd) with each prologue and epilogue written out in PyTorch, flag by flag."""

from __future__ import annotations

import pytest
import torch

from fastscarlet.env import triton_interpret
from fastscarlet.kernels.pointwise import conv1x1_ref
from fastscarlet.kernels.testing import assert_close_scaled as _close
from fastscarlet.kernels.testing import rows as _rows

pytestmark = [
    pytest.mark.interpreter,
    pytest.mark.skipif(not triton_interpret(), reason="needs TRITON_INTERPRET=1"),
]
CL = torch.channels_last


@pytest.mark.parametrize("pro", ["none", "affine", "bn_bwd", "bn_bwd_x"])
@pytest.mark.parametrize("epi", ["none", "bias", "bn_eval", "affine"])
@pytest.mark.parametrize("extras", ["plain", "gate+residual+stats", "stride2"])
def test_pw_conv_fwd(pro: str, epi: str, extras: str) -> None:
    from fastscarlet.kernels import pointwise as pw
    from fastscarlet.kernels.activations import act_ref

    g = torch.Generator().manual_seed(0)
    N, K, NOUT, H, CZ = 2, 24, 40 if "residual" not in extras else 24, 9, 12
    s = 2 if extras == "stride2" else 1
    Ho = (H - 1) // s + 1
    x = torch.randn(N, K, H, H, generator=g).contiguous(memory_format=CL)
    z = torch.randn(N, K, H, H, generator=g).contiguous(memory_format=CL)
    xz = torch.randn(N, CZ, Ho, Ho, generator=g).contiguous(memory_format=CL)  # bn_bwd_x
    wz = torch.randn(K, CZ, generator=g)
    w = torch.randn(NOUT, K, generator=g)
    vecs = [torch.randn(K, generator=g) for _ in range(3)]
    # reference on the [N, K, Ho, Wo] pixels the 1x1 conv reads
    v = x.double()[:, :, ::s, ::s]
    if pro == "affine":
        v = act_ref(v * vecs[0].double()[:, None, None] + vecs[1].double()[:, None, None], "hswish")
    elif pro in ("bn_bwd", "bn_bwd_x"):
        a, b, c = (t.double()[:, None, None] for t in vecs)
        zz = z.double()[:, :, ::s, ::s]
        if pro == "bn_bwd_x":  # z rebuilt in-kernel as xz @ wz^T at the output pixels
            zz = conv1x1_ref(xz.double(), wz.double()[:, :, None, None])
        v = a * v + b * zz + c
    gate = torch.rand(N, K, generator=g) if "gate" in extras else None
    if gate is not None:
        v = v * gate.double()[:, :, None, None]
    ref = conv1x1_ref(v, w.double()[:, :, None, None])
    bias = torch.randn(NOUT, generator=g)
    bn = (torch.rand(NOUT, generator=g) + 0.5, torch.randn(NOUT, generator=g),
          torch.randn(NOUT, generator=g), torch.rand(NOUT, generator=g) + 0.5)  # fmt: skip
    if epi == "bias":
        ref = act_ref(ref + bias.double()[:, None, None], "relu6")
    elif epi == "bn_eval":
        sc = bn[0].double() / torch.sqrt(bn[3].double() + 1e-3)
        ref = ref * sc[:, None, None] + (bn[1].double() - bn[2].double() * sc)[:, None, None]
        ref = act_ref(ref, "relu")
    elif epi == "affine":
        ref = act_ref(ref * bn[0].double()[:, None, None] + bn[1].double()[:, None, None], "hswish")
    res = torch.randn(N, NOUT, H, H, generator=g).contiguous(memory_format=CL)
    if "residual" in extras:
        ref = ref + res.double()
    out = torch.empty(N, NOUT, Ho, Ho).contiguous(memory_format=CL)
    stats = torch.zeros(2, NOUT) if "stats" in extras else None
    codes = {"none": pw.PRO_NONE, "affine": pw.PRO_AFFINE, "bn_bwd": pw.PRO_BN_BWD,
             "bn_bwd_x": pw.PRO_BN_BWD_X}  # fmt: skip
    epis = {"none": pw.EPI_NONE, "bias": pw.EPI_BIAS, "bn_eval": pw.EPI_BN_EVAL,
            "affine": pw.EPI_AFFINE}  # fmt: skip
    pw.pw_conv_fwd(
        _rows(x), w, _rows(out), geom=(N, Ho, Ho, H, H), in_stride=s, pro=codes[pro],
        pro_act="hswish", pro_vecs=tuple(vecs[:2] if pro == "affine" else vecs),
        z={"bn_bwd": _rows(z), "bn_bwd_x": _rows(xz)}.get(pro),
        z_weight=wz if pro == "bn_bwd_x" else None, gate=gate, epi=epis[epi],
        epi_vecs={"bias": (bias,), "affine": bn[:2]}.get(epi, bn), eps=1e-3,
        epi_act={"none": "none", "bias": "relu6", "bn_eval": "relu", "affine": "hswish"}[epi],
        residual=_rows(res) if "residual" in extras else None, stats=stats,
    )  # fmt: skip
    _close(out, ref)
    if stats is not None:
        _close(stats[0], ref.sum((0, 2, 3)))
        _close(stats[1], ref.square().sum((0, 2, 3)))


@pytest.mark.parametrize(("act", "s", "in_place"), [("hswish", 1, True), ("relu6", 2, False)])
def test_pw_conv_fwd_act_bwd_epilogue(act: str, s: int, in_place: bool) -> None:
    """``EPI_ACT_BWD``: the GEMM rebuilds ``z = x W^T`` (stride ``s``) and writes
    ``du = g * act'(z * scale + shift)`` (over ``g`` when in place), with the BN backward sums
    ``sum du`` and ``sum du * (z - mean) * rstd`` in ``stats``. The stride-1 case's ``z`` crosses
    the activation's kinks (hswish at +-3) on many elements."""
    from fastscarlet.kernels import pointwise as pw
    from fastscarlet.kernels.activations import act_grad_ref

    gen = torch.Generator().manual_seed(4)
    N, CIN, E, H = 2, 12, 40, 9
    Ho = (H - 1) // s + 1
    x = torch.randn(N, CIN, H, H, generator=gen).contiguous(memory_format=CL)
    w = torch.randn(E, CIN, generator=gen) / 2
    grad = torch.randn(N, E, Ho, Ho, generator=gen).contiguous(memory_format=CL)
    scale, shift = torch.rand(E, generator=gen) + 0.5, torch.randn(E, generator=gen)
    mean, rstd = torch.randn(E, generator=gen), torch.rand(E, generator=gen) + 0.5
    z = conv1x1_ref(x.double(), w.double()[:, :, None, None], s)
    c = (slice(None), None, None)
    du = grad.double() * act_grad_ref(z * scale.double()[c] + shift.double()[c], act)
    xhat = (z - mean.double()[c]) * rstd.double()[c]
    out = grad if in_place else torch.empty_like(grad)
    stats = torch.zeros(2, E)
    pw.pw_conv_fwd(
        _rows(x), w, _rows(out), geom=(N, Ho, Ho, H, H), in_stride=s, epi=pw.EPI_ACT_BWD,
        epi_vecs=(scale, shift, mean, rstd), epi_act=act, epi_grad=_rows(grad), stats=stats,
    )  # fmt: skip
    _close(out, du)
    _close(stats[0], du.sum((0, 2, 3)))
    _close(stats[1], (du * xhat).sum((0, 2, 3)))
    with pytest.raises(ValueError, match="epi_grad"):
        pw.pw_conv_fwd(_rows(x), w, _rows(out), epi=pw.EPI_ACT_BWD)


def test_pw_conv_fwd_transposed_weight_scatters_into_strided_rows() -> None:
    """The input gradient of a stride-2 1x1 conv: dx = scatter(dy @ W), zero on skipped pixels."""
    from fastscarlet.kernels.pointwise import pw_conv_fwd

    g = torch.Generator().manual_seed(1)
    N, C, Co, H = 2, 12, 20, 9
    x = torch.randn(N, C, H, H, dtype=torch.float64, requires_grad=True)
    w = torch.randn(Co, C, 1, 1, dtype=torch.float64)
    y = conv1x1_ref(x, w, 2)
    dy = torch.randn(y.shape, generator=g, dtype=torch.float64)
    y.backward(dy)
    dyf = dy.float().contiguous(memory_format=CL)
    dx = torch.zeros(N, C, H, H).contiguous(memory_format=CL)
    pw_conv_fwd(
        _rows(dyf), w.float().view(Co, C), _rows(dx), geom=(N, 5, 5, 5, 5), out_stride=2,
        out_hw=(H, H), weight_transposed=True,
    )  # fmt: skip
    _close(dx, x.grad)


def _wgrad_ref(grad_out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``dL/dW [O, C]`` of ``conv1x1_ref(x, W)`` for the output gradient ``grad_out [N, O, H, W]``
    (autograd through the reference: ``sum over pixels grad_out[o] * x[c]``)."""
    w = torch.zeros(grad_out.shape[1], x.shape[1], 1, 1, dtype=x.dtype, requires_grad=True)
    conv1x1_ref(x, w).backward(grad_out)
    return w.grad[:, :, 0, 0]


@pytest.mark.parametrize("variant", ["plain", "bn_bwd+affine+gate", "stride2", "bn_bwd_x", "gram"])
def test_pw_conv_wgrad(variant: str) -> None:
    """dW = A'^T B'; ``bn_bwd_x``: A' = A du + B (x W^T) + C with x the B operand (the expand
    conv's weight gradient); ``gram``: A' = [x, 1] sampled like B, i.e. [x, 1]^T x."""
    from fastscarlet.kernels.activations import act_ref
    from fastscarlet.kernels.pointwise import pw_conv_wgrad

    g = torch.Generator().manual_seed(2)
    N, Co, C, H = 3, 40, 24, 7
    s = 2 if variant in ("stride2", "gram") else 1
    Ho = (H - 1) // s + 1
    a = torch.randn(N, Co, Ho, Ho, generator=g).contiguous(memory_format=CL)
    z = torch.randn(N, Co, Ho, Ho, generator=g).contiguous(memory_format=CL)
    b = torch.randn(N, C, H, H, generator=g).contiguous(memory_format=CL)
    va, vb = a.double(), b.double()[:, :, ::s, ::s]
    kwargs = {}
    if variant.startswith("bn_bwd"):
        pa = tuple(torch.randn(Co, generator=g) for _ in range(3))
        zz = z.double()
        if variant == "bn_bwd_x":
            wz = torch.randn(Co, C, generator=g)
            zz = conv1x1_ref(vb, wz.double()[:, :, None, None])
            kwargs = dict(pro_a_vecs=pa, z_weight=wz)
        va = pa[0].double()[:, None, None] * va + pa[1].double()[:, None, None] * zz
        va = va + pa[2].double()[:, None, None]
    if variant == "bn_bwd+affine+gate":
        qa = tuple(torch.randn(C, generator=g) for _ in range(2))
        gate = torch.rand(N, C, generator=g)
        vb = act_ref(vb * qa[0].double()[:, None, None] + qa[1].double()[:, None, None], "relu6")
        vb = vb * gate.double()[:, :, None, None]
        kwargs = dict(pro_a_vecs=pa, z=_rows(z), pro_b_vecs=qa, pro_b_act="relu6", gate=gate)
    if variant == "gram":
        ones = torch.ones_like(vb[:, :1])
        want = _wgrad_ref(torch.cat([vb, ones], 1), vb)
        dw = torch.zeros(C + 1, C)
        pw_conv_wgrad(_rows(b), _rows(b), dw, geom=(N, Ho, Ho, H, H), a_stride=s, a_hw=(H, H),
                      b_stride=s, append_one=True)  # fmt: skip
        _close(dw, want)
        return
    want = _wgrad_ref(va, vb)
    dw = torch.zeros(Co, C)
    pw_conv_wgrad(_rows(a), _rows(b), dw, geom=(N, Ho, Ho, H, H), b_stride=s, **kwargs)
    _close(dw, want)


@pytest.mark.parametrize("extras", ["plain", "gate+residual+stats", "stride2"])
def test_pw_conv_fwd_with_64bit_offsets(monkeypatch, extras: str) -> None:
    """The ``WIDE`` variant (64-bit row offsets, for tensors of >= 2**31 elements), forced on
    tiny tensors: the same numbers as the formula."""
    from fastscarlet.kernels import pointwise as pw

    monkeypatch.setattr(pw, "_wide", lambda *tensors: True)
    test_pw_conv_fwd("bn_bwd", "affine", extras)


@pytest.mark.parametrize("variant", ["stride2", "bn_bwd_x", "gram"])
def test_pw_conv_wgrad_with_64bit_offsets(monkeypatch, variant: str) -> None:
    from fastscarlet.kernels import pointwise as pw

    monkeypatch.setattr(pw, "_wide", lambda *tensors: True)
    test_pw_conv_wgrad(variant)
