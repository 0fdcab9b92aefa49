"""The MBConv block as a partial fusion: every step on the Triton kernels except the depthwise
conv, which is PyTorch's own (cuDNN on CUDA), forward and backward (issue 19 item 2).

The whole-block path (:mod:`.mbconv`, :mod:`.mbconv_host`) lost to eager on an H100 because of
its depthwise kernels, while its fused expand GEMM beat cuDNN. This candidate keeps the GEMMs with
their BN/activation/SE prologues and epilogues and hands the depthwise conv to
``F.conv2d(..., groups=E)`` / ``aten.convolution_backward`` on channels_last views of the
``[P, E]`` row buffers (no copies when PyTorch's conv keeps channels_last, as cuDNN does).

Notation as in :mod:`.mbconv_host`: x ``[N, Cin, H, W]`` channels_last (``[P1, Cin]`` rows after
the expand stride), hidden ``E``, output ``[N, Cout, Ho, Wo]`` (``[P2, Cout]`` rows).

**Inference** (eval BN; 3 launches + the depthwise conv, 6 + it with SE)
  1. ``h1 = act(BN1(x W1^T))``                          (pw GEMM, BN1-eval + act epilogue)
  2. ``z2 = dw(h1)``                                   (PyTorch)
  3. BN2-eval folded to ``(scale, shift)``             (tiny)
  4. [SE] pool ``mean_hw act(BN2(z2))`` (:func:`.batchnorm.affine_act`, nothing stored); 2 SE convs
  5. ``y = BN3((act(BN2(z2)) * g) W3^T) (+ x)``        (pw GEMM: BN2 + act + gate prologue,
     BN3-eval epilogue, residual), so ``act(BN2(z2))`` is never written.

**Training forward** (8 launches + the depthwise conv, 11 + it with SE)
  1. Gram matrix ``[x, 1]^T x``; 2. BN1 statistics from it (as :mod:`.mbconv_host`: the expand
  epilogue can then apply BN1 + act, and ``z1`` never exists); 3. ``a1 = act(BN1(x W1^T))``
  4. ``z2 = dw(a1)`` (PyTorch); 5. sums of ``z2`` and ``z2^2`` (:func:`.batchnorm.channel_sums`:
  cuDNN has no statistics epilogue); 6. BN2 finalize; 7. [SE] pool + 2 SE convs
  8. ``z3 = (act(BN2(z2)) * g) W3^T`` + sums of z3; 9. BN3 finalize; 10. ``y = BN3(z3) (+ x)``

**Training backward** (9 launches + the depthwise backward + the SE MLP's tiny ones)
  1-6 by :func:`.mbconv_host.backward_to_dz2`, shared with the whole-block path: BN3 sums and
  coefficients, :func:`.mbconv_kernels.project_bwd` (``du2``, the SE and BN2 sums, ``dW3``),
  the SE MLP backward, BN2 coefficients, ``dz2`` in place; 7. ``da1, dWdw`` from
  ``aten.convolution_backward`` (PyTorch); 8. ``du1 = da1 * act'(BN1(z1))`` in place over ``da1``,
  with ``z1 = x W1^T`` rebuilt by the expand GEMM and BN1's two backward sums in its epilogue
  (``EPI_ACT_BWD``); 9-11 by :func:`.mbconv_host.backward_from_du1`, as the whole-block path:
  BN1 coefficients, ``dx = dz1 W1 (+ dy)``, ``dW1 = dz1^T x`` (both rebuild
  ``dz1 = A1 du1 + B1 z1 + C1`` from ``x``).

**a1 is kept from the forward, not recomputed.** The depthwise backward needs its input ``a1``.
The whole-block path rebuilds it per tile inside its own depthwise kernel; a cuDNN call cannot,
so rebuilding would be a second expand GEMM in the backward: one more read of ``x`` and one more
write of ``a1`` (``|a1| (1 + Cin/E)`` bytes; for layer 1 of Scarlet-A, ``Cin`` 16, ``E`` 48 at
112x112, batch 256, bf16: ``|a1|`` = 256 * 112^2 * 48 * 2 B = 308 MB, times 4/3 = 411 MB, ~0.12 ms
at an H100's 3.35 TB/s), plus a launch. Keeping it costs ``|a1|`` of memory per block until the
backward, which eager PyTorch also holds (it saves the depthwise input, and BN1's and the
activation's inputs besides), so the partial path still keeps less than eager. ``z1``, which BN1's
backward needs and ``a1`` cannot give back (``act`` is not invertible), is rebuilt from ``x`` in
step 8's GEMM (``Cin`` MACs per value on the tensor cores, ``|x|`` = ``Cin/E`` of ``|a1|`` read).

The three steps run as ``fastscarlet::mbconv_partial_*`` custom ops (fake implementations for
torch.compile) under :class:`MBConvPartialTrainFunction`; :func:`mbconv_partial_forward` is the
entry point and :func:`partial_unsupported_reason` the support check.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn import functional as F

from .batchnorm import (
    MEAN,
    RSTD,
    SCALE,
    SHIFT,
    affine_act,
    bn_eval_fold,
    channel_sums,
)
from .depthwise import dw_out_size
from .launch import call_op
from .mbconv import call_block, input_grads, unsupported_reason
from .mbconv_host import (
    BlockGeometry,
    backward_from_du1,
    backward_to_dz2,
    empty_channels_last,
    expand_infer,
    rows,
    se_gate_fwd,
    train_forward,
    w2d,
)
from .mbconv_ops import mbconv_infer_fake, train_bwd_fake, train_fwd_fake
from .pointwise import (
    EPI_ACT_BWD,
    EPI_BN_EVAL,
    PRO_AFFINE,
    pw_conv_fwd,
)

CL = torch.channels_last
_T = torch.Tensor
_OT = torch.Tensor | None


# ---------------------------------------------------------------------------------------------
# The depthwise conv on PyTorch, on channels_last views of row buffers.
# ---------------------------------------------------------------------------------------------


def _image(r: torch.Tensor, n: int, h: int, w: int) -> torch.Tensor:
    """``[n*h*w, C]`` rows -> the ``[n, C, h, w]`` channels_last tensor they store (a view)."""
    return r.view(n, h, w, r.shape[1]).permute(0, 3, 1, 2)


def _rows_of(t: torch.Tensor) -> torch.Tensor:
    """A conv result as ``[P, C]`` rows: a view when PyTorch kept channels_last, else a copy."""
    return rows(t.contiguous(memory_format=CL))


def _no_autocast(t: torch.Tensor):
    """The depthwise conv runs in the block's dtype whatever autocast says (its weight is cast
    to that dtype here, as the Triton kernels cast theirs in-kernel)."""
    return torch.autocast("cuda", enabled=False) if t.is_cuda else contextlib.nullcontext()


def dw_forward(a: torch.Tensor, wdw: torch.Tensor, geom: tuple[int, int, int], stride: int):
    """``z = dw(a)``: the depthwise kxk conv (zero padding ``k // 2``) of the rows ``a [N*H*W, E]``
    on the grid ``geom = (N, H, W)``, by ``F.conv2d``; returns ``[N*Ho*Wo, E]`` rows."""
    N, H, W = geom
    E, k = a.shape[1], wdw.shape[-1]
    with _no_autocast(a):
        z = F.conv2d(_image(a, N, H, W), wdw.to(a.dtype), None, stride, k // 2, 1, E)
    return _rows_of(z)


def dw_backward(
    dz: torch.Tensor, a: torch.Tensor, wdw: torch.Tensor, geom: tuple[int, int, int], stride: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input and weight gradient of :func:`dw_forward` for ``dz [N*Ho*Wo, E]`` rows, by
    ``aten.convolution_backward``: ``(da [N*H*W, E] rows, dW [E, k*k])`` in ``a``'s dtype."""
    N, H, W = geom
    E, k = a.shape[1], wdw.shape[-1]
    Ho, Wo = dw_out_size(H, stride), dw_out_size(W, stride)
    with _no_autocast(a):
        da, dw, _ = torch.ops.aten.convolution_backward(
            _image(dz, N, Ho, Wo), _image(a, N, H, W), wdw.to(a.dtype), None, [stride, stride],
            [k // 2, k // 2], [1, 1], False, [0, 0], E, [True, True, False],
        )  # fmt: skip
    return _rows_of(da), dw.reshape(E, k * k)


# ---------------------------------------------------------------------------------------------
# Launch sequences (see the module doc).
# ---------------------------------------------------------------------------------------------


def partial_infer_impl(
    x: _T, w1: _T, g1: _T, b1: _T, m1: _T, v1: _T, wdw: _T, g2: _T, b2: _T, m2: _T, v2: _T,
    w3: _T, g3: _T, b3: _T, m3: _T, v3: _T, sw1: _OT, sb1: _OT, sw2: _OT, sb2: _OT,
    stride: int, expand_stride: int, act: str, se_act: str, se_gate: str, residual: bool,
    eps1: float, eps2: float, eps3: float,
) -> _T:  # fmt: skip
    g, h1 = expand_infer(x, w1, w3, (g1, b1, m1, v1), stride, expand_stride, act, eps1)
    z2 = dw_forward(h1, wdw, (g.N, g.Hs, g.Ws), stride)
    del h1
    bn2 = bn_eval_fold(g2, b2, m2, v2, eps2, torch.empty((2, g.hidden), dtype=torch.float32,
                                                          device=x.device))  # fmt: skip
    gate = None
    if sw1 is not None:
        assert sb1 is not None and sw2 is not None and sb2 is not None
        se_buf = torch.zeros((2, g.N, g.hidden), dtype=torch.float32, device=x.device)
        affine_act(z2, bn2[0], bn2[1], (g.N, g.Ho * g.Wo), act=act, pool=se_buf[0])
        gate = se_gate_fwd(se_buf[0], sw1, sb1, sw2, sb2, se_act, se_gate, se_buf[1])
    y = empty_channels_last(g.N, g.cout, g.Ho, g.Wo, x)
    pw_conv_fwd(
        z2, w2d(w3), rows(y), geom=(g.N, g.Ho, g.Wo, g.Ho, g.Wo), pro=PRO_AFFINE,
        pro_vecs=(bn2[0], bn2[1]), pro_act=act, gate=gate, epi=EPI_BN_EVAL,
        epi_vecs=(g3, b3, m3, v3), eps=eps3, residual=rows(x) if residual else None,
    )  # fmt: skip
    return y


def _dw_forward_with_sums(a1: _T, wdw: _T, g: BlockGeometry, stride: int, sums: _T) -> _T:
    """``z2 = dw(a1)`` on PyTorch, then its sums (cuDNN has no statistics epilogue)."""
    z2 = dw_forward(a1, wdw, (g.N, g.Hs, g.Ws), stride)
    channel_sums(z2, sums.view(2, g.hidden))
    return z2


def partial_train_fwd_impl(
    x: _T, w1: _T, g1: _T, b1: _T, wdw: _T, g2: _T, b2: _T, w3: _T, g3: _T, b3: _T,
    sw1: _OT, sb1: _OT, sw2: _OT, sb2: _OT, stride: int, expand_stride: int, act: str,
    se_act: str, se_gate: str, residual: bool, eps1: float, eps2: float, eps3: float,
) -> tuple[_T, _T, _T, _T, _T, _T]:  # fmt: skip
    y, a1, z2, z3, stats, se_buf = train_forward(
        x, w1, g1, b1, wdw, g2, b2, w3, g3, b3, sw1, sb1, sw2, sb2, stride, expand_stride, act,
        se_act, se_gate, residual, eps1, eps2, eps3, depthwise=_dw_forward_with_sums,
        keep_a1=True,  # for the depthwise backward (see the module doc)
    )  # fmt: skip
    assert a1 is not None
    return y, a1, z2, z3, stats, se_buf


def partial_train_bwd_impl(
    dy: _T, x: _T, a1: _T, z2: _T, z3: _T, stats: _T, se_buf: _T, w1: _T, g1: _T, wdw: _T,
    g2: _T, w3: _T, g3: _T, sw1: _OT, sb1: _OT, sw2: _OT, sb2: _OT, stride: int,
    expand_stride: int, act: str, se_act: str, se_gate: str, residual: bool, need_dx: bool,
) -> tuple[_T, ...]:  # fmt: skip
    dz2, bw = backward_to_dz2(
        dy, x, z2, z3, stats, se_buf, w1, g2, w3, g3, sw1, sb1, sw2, sb2, stride, expand_stride,
        act, se_act, se_gate,
    )  # fmt: skip
    g, st1 = bw.g, bw.st1
    # the depthwise conv on PyTorch; then du1 = da1 * act'(BN1(z1)) in place, z1 = x W1^T rebuilt
    # by the expand GEMM, BN1's sums in its epilogue
    da1, dwdw = dw_backward(dz2, a1, wdw, (g.N, g.Hs, g.Ws), stride)
    del dz2
    pw_conv_fwd(
        rows(x), w2d(w1), da1, geom=(g.N, g.Hs, g.Ws, g.H, g.W), in_stride=expand_stride,
        epi=EPI_ACT_BWD, epi_vecs=(st1[SCALE], st1[SHIFT], st1[MEAN], st1[RSTD]), epi_act=act,
        epi_grad=da1, stats=bw.r1,
    )  # fmt: skip
    return backward_from_du1(bw, da1, dwdw, dy, x, w1, g1, expand_stride, residual, need_dx)


# ---------------------------------------------------------------------------------------------
# Custom ops (opaque to torch.compile; eager calls skip the dispatcher, see launch.call_op).
# ---------------------------------------------------------------------------------------------


@torch.library.custom_op("fastscarlet::mbconv_partial_infer", mutates_args=())
def mbconv_partial_infer(
    x: _T, w1: _T, g1: _T, b1: _T, m1: _T, v1: _T, wdw: _T, g2: _T, b2: _T, m2: _T, v2: _T,
    w3: _T, g3: _T, b3: _T, m3: _T, v3: _T, sw1: _OT, sb1: _OT, sw2: _OT, sb2: _OT,
    stride: int, expand_stride: int, act: str, se_act: str, se_gate: str, residual: bool,
    eps1: float, eps2: float, eps3: float,
) -> _T:  # fmt: skip
    """Inference MBConv (eval BN), PyTorch's depthwise conv: ``x`` channels_last -> ``y``."""
    return partial_infer_impl(
        x, w1, g1, b1, m1, v1, wdw, g2, b2, m2, v2, w3, g3, b3, m3, v3, sw1, sb1, sw2, sb2,
        stride, expand_stride, act, se_act, se_gate, residual, eps1, eps2, eps3,
    )  # fmt: skip


mbconv_partial_infer.register_fake(mbconv_infer_fake)  # the same arguments


@torch.library.custom_op("fastscarlet::mbconv_partial_train_fwd", mutates_args=())
def mbconv_partial_train_fwd(
    x: _T, w1: _T, g1: _T, b1: _T, wdw: _T, g2: _T, b2: _T, w3: _T, g3: _T, b3: _T,
    sw1: _OT, sb1: _OT, sw2: _OT, sb2: _OT, stride: int, expand_stride: int, act: str,
    se_act: str, se_gate: str, residual: bool, eps1: float, eps2: float, eps3: float,
) -> tuple[_T, _T, _T, _T, _T, _T]:  # fmt: skip
    """Training forward: ``(y, a1, z2, z3, stats, se_buf)``: the output; the depthwise input
    ``a1 [P1, E]``, its raw output ``z2 [P2, E]`` and the project conv's ``z3 [P2, Cout]``
    (rows, kept for the backward); the packed BN statistics (``[3 BNs][STAT_ROWS, C]`` fp32);
    ``[2, N, E]`` = (SE pooled mean, SE gate) or empty."""
    return partial_train_fwd_impl(
        x, w1, g1, b1, wdw, g2, b2, w3, g3, b3, sw1, sb1, sw2, sb2, stride, expand_stride, act,
        se_act, se_gate, residual, eps1, eps2, eps3,
    )  # fmt: skip


mbconv_partial_train_fwd.register_fake(train_fwd_fake(keep_a1=True))


@torch.library.custom_op("fastscarlet::mbconv_partial_train_bwd", mutates_args=())
def mbconv_partial_train_bwd(
    dy: _T, x: _T, a1: _T, z2: _T, z3: _T, stats: _T, se_buf: _T, w1: _T, g1: _T, wdw: _T,
    g2: _T, w3: _T, g3: _T, sw1: _OT, sb1: _OT, sw2: _OT, sb2: _OT, stride: int,
    expand_stride: int, act: str, se_act: str, se_gate: str, residual: bool, need_dx: bool,
) -> tuple[_T, _T, _T, _T, _T, _T, _T, _T, _T, _T, _T, _T, _T, _T]:  # fmt: skip
    """Training backward: ``(dx, dW1, dgamma1, dbeta1, dWdw, dgamma2, dbeta2, dW3, dgamma3,
    dbeta3, dWse1, dbse1, dWse2, dbse2)``; the GEMM weights' and BN gradients fp32 ``[O, C]`` /
    ``[C]``, ``dWdw [E, k*k]`` in ``x``'s dtype (PyTorch's conv), SE ones fp32 or empty, ``dx``
    empty unless ``need_dx``."""
    return partial_train_bwd_impl(
        dy, x, a1, z2, z3, stats, se_buf, w1, g1, wdw, g2, w3, g3, sw1, sb1, sw2, sb2, stride,
        expand_stride, act, se_act, se_gate, residual, need_dx,
    )  # fmt: skip


# dWdw from PyTorch's conv, in x's dtype
mbconv_partial_train_bwd.register_fake(train_bwd_fake(takes_a1=True, dwdw_dtype=None))


# ---------------------------------------------------------------------------------------------
# Autograd, support check, entry point.
# ---------------------------------------------------------------------------------------------


class MBConvPartialTrainFunction(torch.autograd.Function):
    """Autograd over ``fastscarlet::mbconv_partial_train_fwd`` / ``..._train_bwd``.

    ``forward`` returns ``(y, stats, a1, z2, z3, se_buf)``; only ``y`` is differentiable, the
    rest is kept for the backward (and ``stats`` for the running-statistics update)."""

    @staticmethod
    def forward(
        x, w1, g1, b1, wdw, g2, b2, w3, g3, b3, sw1, sb1, sw2, sb2, stride, expand_stride, act,
        se_act, se_gate, residual, eps1, eps2, eps3,
    ):  # fmt: skip
        y, a1, z2, z3, stats, se_buf = call_op(
            mbconv_partial_train_fwd, partial_train_fwd_impl,
            x, w1, g1, b1, wdw, g2, b2, w3, g3, b3, sw1, sb1, sw2, sb2, stride, expand_stride,
            act, se_act, se_gate, residual, eps1, eps2, eps3,
        )  # fmt: skip
        return y, stats, a1, z2, z3, se_buf

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w1, g1, _b1, wdw, g2, _b2, w3, g3, _b3, sw1, sb1, sw2, sb2 = inputs[:14]
        ctx.cfg = inputs[14:20]  # stride, expand_stride, act, se_act, se_gate, residual
        _y, stats, a1, z2, z3, se_buf = output
        ctx.has_se = sw1 is not None
        ctx.save_for_backward(x, a1, z2, z3, stats, se_buf, w1, g1, wdw, g2, w3, g3, sw1, sb1,
                              sw2, sb2)  # fmt: skip
        ctx.mark_non_differentiable(stats, a1, z2, z3, se_buf)

    @staticmethod
    def backward(ctx, dy, *_unused):
        x, a1, z2, z3, stats, se_buf, w1, g1, wdw, g2, w3, g3, sw1, sb1, sw2, sb2 = (
            ctx.saved_tensors
        )
        dy = dy.contiguous(memory_format=CL)
        grads = call_op(
            mbconv_partial_train_bwd, partial_train_bwd_impl,
            dy, x, a1, z2, z3, stats, se_buf, w1, g1, wdw, g2, w3, g3, sw1, sb1, sw2, sb2,
            *ctx.cfg, ctx.needs_input_grad[0],
        )  # fmt: skip
        return input_grads(grads, ctx, w1, g1, wdw, g2, w3, g3, sw1, sb1, sw2, sb2)


def partial_unsupported_reason(
    block: nn.Module, se: nn.Module | None, x: torch.Tensor
) -> str | None:
    """Why the partial fusion cannot run this ``block.forward_with_se(x, se)`` call (None: it
    can). Covers what :func:`.mbconv.unsupported_reason` covers without LET folding: the
    depthwise conv is PyTorch's, which takes every configuration the Triton GEMMs around it do."""
    return unsupported_reason(block, se, x)


def mbconv_partial_forward(
    block: nn.Module, x: torch.Tensor, se: nn.Module | None = None
) -> torch.Tensor:
    """``block.forward_with_se(x, se)`` with the GEMMs and BN steps on the Triton kernels and the
    depthwise conv on PyTorch (check :func:`partial_unsupported_reason`). Same contract as
    :func:`.mbconv.mbconv_block_forward`: under CUDA autocast the block runs in the autocast
    dtype, the output is channels_last, and in training mode the BN running statistics move as
    ``nn.BatchNorm2d`` moves them."""
    return call_block(
        block, x, se, block.expand.weight.contiguous(), block.expand.stride[0],
        train_fn=MBConvPartialTrainFunction, infer_op=mbconv_partial_infer,
        infer_impl=partial_infer_impl,
    )  # fmt: skip


__all__ = [
    "MBConvPartialTrainFunction",
    "dw_backward",
    "dw_forward",
    "mbconv_partial_forward",
    "mbconv_partial_infer",
    "mbconv_partial_train_bwd",
    "mbconv_partial_train_fwd",
    "partial_infer_impl",
    "partial_train_bwd_impl",
    "partial_train_fwd_impl",
    "partial_unsupported_reason",
]
