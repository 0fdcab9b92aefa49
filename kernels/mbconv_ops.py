"""The MBConv block as ``torch.library`` custom ops, with the fake implementations.

``fastscarlet::mbconv_infer``, ``fastscarlet::mbconv_train_fwd`` and
``fastscarlet::mbconv_train_bwd`` wrap the implementations of :mod:`.mbconv_host`. torch.compile
and export treat them as opaque graph nodes whose output shapes, dtypes and strides come from the
``register_fake`` functions here; eager calls skip the dispatcher (:func:`.launch.call_op`).
:class:`.mbconv.MBConvTrainFunction` puts autograd over the two training ops. The partial fusion's
ops (:mod:`.mbconv_partial`) register the same fakes: :func:`mbconv_infer_fake` as it is, the
training ones built by :func:`train_fwd_fake` / :func:`train_bwd_fake` with its ``a1``.
"""

from __future__ import annotations

import torch

from .batchnorm import STAT_ROWS
from .mbconv_host import (
    block_geometry,
    empty_channels_last,
    mbconv_infer_impl,
    mbconv_train_bwd_impl,
    mbconv_train_fwd_impl,
)

_T = torch.Tensor
_OT = torch.Tensor | None


@torch.library.custom_op("fastscarlet::mbconv_infer", mutates_args=())
def mbconv_infer(
    x: _T, w1: _T, g1: _T, b1: _T, m1: _T, v1: _T, wdw: _T, g2: _T, b2: _T, m2: _T, v2: _T,
    w3: _T, g3: _T, b3: _T, m3: _T, v3: _T, sw1: _OT, sb1: _OT, sw2: _OT, sb2: _OT,
    stride: int, expand_stride: int, act: str, se_act: str, se_gate: str, residual: bool,
    eps1: float, eps2: float, eps3: float,
) -> _T:  # fmt: skip
    """Inference MBConv (eval BN): ``x [N, Cin, H, W]`` channels_last -> ``[N, Cout, Ho, Wo]``."""
    return mbconv_infer_impl(
        x, w1, g1, b1, m1, v1, wdw, g2, b2, m2, v2, w3, g3, b3, m3, v3, sw1, sb1, sw2, sb2,
        stride, expand_stride, act, se_act, se_gate, residual, eps1, eps2, eps3,
    )  # fmt: skip


@mbconv_infer.register_fake
def mbconv_infer_fake(
    x, w1, g1, b1, m1, v1, wdw, g2, b2, m2, v2, w3, g3, b3, m3, v3, sw1, sb1, sw2, sb2, stride,
    expand_stride, act, se_act, se_gate, residual, eps1, eps2, eps3,
):  # fmt: skip
    """The fake implementation of an inference op (this module's and the partial fusion's, which
    take the same arguments): ``y`` channels_last."""
    g = block_geometry(x, w1, w3, stride, expand_stride)
    return empty_channels_last(g.N, g.cout, g.Ho, g.Wo, x)


@torch.library.custom_op("fastscarlet::mbconv_train_fwd", mutates_args=())
def mbconv_train_fwd(
    x: _T, w1: _T, g1: _T, b1: _T, wdw: _T, g2: _T, b2: _T, w3: _T, g3: _T, b3: _T,
    sw1: _OT, sb1: _OT, sw2: _OT, sb2: _OT, stride: int, expand_stride: int, act: str,
    se_act: str, se_gate: str, residual: bool, eps1: float, eps2: float, eps3: float,
) -> tuple[_T, _T, _T, _T, _T]:  # fmt: skip
    """Training MBConv forward. Returns ``(y, z2, z3, stats, se_buf)``: the output, the raw
    depthwise and project conv outputs ``[rows, C]`` kept for the backward (the expand conv's
    is rebuilt from ``x``), the packed BN statistics
    (``[3 BNs][STAT_ROWS, C]`` fp32) and ``[2, N, E]`` = (SE pooled mean, SE gate) or empty."""
    return mbconv_train_fwd_impl(
        x, w1, g1, b1, wdw, g2, b2, w3, g3, b3, sw1, sb1, sw2, sb2, stride, expand_stride, act,
        se_act, se_gate, residual, eps1, eps2, eps3,
    )  # fmt: skip


def train_fwd_fake(*, keep_a1: bool):
    """The fake implementation of a training forward op: ``(y, z2, z3, stats, se_buf)``, with
    ``keep_a1`` (the partial fusion's op) ``(y, a1, z2, z3, stats, se_buf)``."""

    def fake(
        x, w1, g1, b1, wdw, g2, b2, w3, g3, b3, sw1, sb1, sw2, sb2, stride, expand_stride, act,
        se_act, se_gate, residual, eps1, eps2, eps3,
    ):  # fmt: skip
        g = block_geometry(x, w1, w3, stride, expand_stride)
        E = g.hidden
        f32 = dict(dtype=torch.float32, device=x.device)
        se = x.new_empty((2, g.N, E), **f32) if sw1 is not None else x.new_empty(0, **f32)
        a1 = (x.new_empty((g.P1, E)),) if keep_a1 else ()
        return (
            empty_channels_last(g.N, g.cout, g.Ho, g.Wo, x),
            *a1,
            x.new_empty((g.P2, E)),
            x.new_empty((g.P2, g.cout)),
            x.new_empty(STAT_ROWS * (2 * E + g.cout), **f32),
            se,
        )

    return fake


mbconv_train_fwd.register_fake(train_fwd_fake(keep_a1=False))


@torch.library.custom_op("fastscarlet::mbconv_train_bwd", mutates_args=())
def mbconv_train_bwd(
    dy: _T, x: _T, z2: _T, z3: _T, stats: _T, se_buf: _T, w1: _T, g1: _T, wdw: _T,
    g2: _T, w3: _T, g3: _T, sw1: _OT, sb1: _OT, sw2: _OT, sb2: _OT, stride: int,
    expand_stride: int, act: str, se_act: str, se_gate: str, residual: bool, need_dx: bool,
) -> tuple[_T, _T, _T, _T, _T, _T, _T, _T, _T, _T, _T, _T, _T, _T]:  # fmt: skip
    """Training MBConv backward: ``(dx, dW1, dgamma1, dbeta1, dWdw, dgamma2, dbeta2, dW3,
    dgamma3, dbeta3, dWse1, dbse1, dWse2, dbse2)``; weight gradients fp32 as ``[O, C]`` /
    ``[E, k*k]`` (reshaped by the caller), SE ones empty without SE, ``dx`` empty unless
    ``need_dx``."""
    return mbconv_train_bwd_impl(
        dy, x, z2, z3, stats, se_buf, w1, g1, wdw, g2, w3, g3, sw1, sb1, sw2, sb2, stride,
        expand_stride, act, se_act, se_gate, residual, need_dx,
    )  # fmt: skip


def train_bwd_fake(*, takes_a1: bool, dwdw_dtype: torch.dtype | None):
    """The fake implementation of a training backward op: the 14 gradients, ``dWdw`` in
    ``dwdw_dtype`` (None: ``x``'s dtype), the rest fp32 but ``dx``. ``takes_a1``: the op takes
    the depthwise input ``a1`` after ``x`` (the partial fusion's); its other inputs line up."""

    def fake(dy, x, *inputs):
        (_z2, _z3, _stats, _se_buf, w1, _g1, wdw, _g2, w3, _g3, sw1, sb1, sw2, sb2, _stride,
         _expand_stride, _act, _se_act, _se_gate, _residual, need_dx) = (
            inputs[1:] if takes_a1 else inputs
        )  # fmt: skip
        E, cin, cout, k = w1.shape[0], w1.shape[1], w3.shape[0], wdw.shape[-1]
        f32 = dict(dtype=torch.float32, device=x.device)
        dx = torch.empty_like(x, memory_format=torch.channels_last) if need_dx else x.new_empty(0)
        if sw1 is not None:
            se = tuple(x.new_empty(tuple(t.shape), **f32) for t in (sw1, sb1, sw2, sb2))
        else:
            se = tuple(x.new_empty(0, **f32) for _ in range(4))
        return (
            dx, x.new_empty((E, cin), **f32), x.new_empty(E, **f32), x.new_empty(E, **f32),
            x.new_empty((E, k * k), dtype=dwdw_dtype), x.new_empty(E, **f32),
            x.new_empty(E, **f32), x.new_empty((cout, E), **f32), x.new_empty(cout, **f32),
            x.new_empty(cout, **f32), *se,
        )  # fmt: skip

    return fake


mbconv_train_bwd.register_fake(train_bwd_fake(takes_a1=False, dwdw_dtype=torch.float32))


__all__ = [
    "mbconv_infer",
    "mbconv_infer_fake",
    "mbconv_train_bwd",
    "mbconv_train_fwd",
    "train_bwd_fake",
    "train_fwd_fake",
]
