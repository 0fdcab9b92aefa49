"""The fused MBConv choice block: inference and training kernels, custom ops, autograd.

Notation: x ``[N, Cin, H, W]`` (channels_last, so ``[P_in, Cin]`` rows), hidden ``E``, kernel
``k``, stride ``s``, output ``[N, Cout, Ho, Wo]``; ``P1 = N*H*W`` (expand grid), ``P2 = N*Ho*Wo``.

**Inference** (eval BN, folded in-kernel from gamma/beta/running stats; no host-side folding):

* no SE: 2 launches.  ``h1 = act(BN1(x W1^T))`` (:func:`pw_conv_fwd`), then
  :func:`_dw_project_fwd_kernel`: ``y = BN3(act(BN2(dw(h1))) W3^T) (+ x)`` with the depthwise
  tile kept in registers and fed straight to the project GEMM, so ``h2`` never exists.
  HBM: ``x + 2*h1 + y (+ x)``.
* SE: 5 launches. The SE gate needs the mean of the whole ``h2`` over the image before the
  project conv can start, so ``h2`` is written once: expand; dw + BN2 + act + SE pooling in the
  epilogue; the two SE convs (``N`` rows, tiny); project with the gate in its prologue + BN3 +
  residual.

Why ``h1`` goes through HBM: the depthwise conv needs a ``(t*s + k - 1)^2`` halo of ``h1`` per
``t x t`` output tile, and a Triton program cannot shift a register tile; recomputing the expand
GEMM per tap costs ``k^2 * Cin`` tensor-core MACs per hidden value (Cin = 24, k = 7: 1176, i.e.
~1.5x the depthwise conv's own FP32 time on H100), and staging the halo through global scratch
needs a CTA barrier that Triton's pipeliner does not order. Recorded as the next step in
``benchmarks/RESULTS.md``.

**Training** (BN with batch statistics; statistics summed in epilogues, normalisation applied in
the next kernel's prologue, see :mod:`fastscarlet.kernels.batchnorm`):

forward (9 launches + 3 with SE; ``z2``, ``z3`` are raw conv outputs kept for the backward)
  1. ``G = [x, 1]^T x``: Gram matrix and column sums of the expand input   (wgrad GEMM, tiny out)
  2. BN1 statistics of ``z1 = x W1^T`` from ``G``                           (tiny)
  3. ``a1 = act(BN1(x W1^T))``                          (pw GEMM, BN1 + act epilogue; transient)
  4. ``z2 = dw(a1)`` + sums of z2                       (dw, stats epilogue)
  5. BN2 finalize
  6. [SE] pool ``mean_hw act(BN2(z2))``; 2 SE convs -> gate ``g [N, E]``
  7. ``z3 = (act(BN2(z2)) * g) W3^T`` + sums of z3      (pw GEMM, prologue BN2+act+gate)
  8. BN3 finalize
  9. ``y = BN3(z3) (+ x)``                              (elementwise)
backward (10 launches + the SE MLP's few tiny ones)
  1. sums of ``dy`` and ``dy * xhat3``; 2. BN3 coefficients (``dz3 = A dy + B z3 + C``)
  3. :func:`_project_bwd_kernel`: ``dA = dz3 W3`` (dz3 rebuilt in the prologue), the SE gate
     gradient and the SE/BN2 sums in the epilogue, ``du2 = dA * g * act'(u2)`` stored, and
     ``dW3 = dz3^T (a2 * g)`` from the same tiles when ``Cout <= 128`` (else a wgrad launch)
  4. [SE MLP backward: ``[N, E]`` tensors, plain PyTorch]; 5. BN2 coefficients
  6. ``dz2`` (elementwise, in place), 7. :func:`dw_conv_bwd` (input and weight gradient, with
     ``z1 = x W1^T`` rebuilt on the tensor cores per input tile and ``a1 = act(BN1(z1))`` from it;
     ``du1`` and the BN1 sums in its epilogue), 8. BN1 coefficients,
  9. ``dx = dz1 W1 (+ dy)``, 10. ``dW1 = dz1^T x`` (both rebuild ``dz1 = A1 du1 + B1 z1 + C1``,
     with ``z1`` from ``x`` again, in the prologue)

Why BN1's statistics come from the Gram matrix (performance.md 2.5 (iii)): the alternative, sums of
``z1`` in the expand epilogue and ``act(BN1(.))`` in the next kernel's prologue, puts that prologue
in the depthwise conv, which would redo it for each of the k^2 taps that read an element: ~7 extra
ALU ops per tap (convert, FMA, h-swish, select) on top of the conv's FMA, ~3x its ALU time (at
56x56, E = 192, k = 5, batch 256: ~0.8 ms against 0.18 ms for a separate ``z1 -> a1`` pass at
3.35 TB/s). With ``mean = W1 s / M`` and ``E[z1^2] = diag(W1 G W1^T) / M`` known before the expand
GEMM runs (``G`` costs one read of ``x``, which is ``E / Cin`` = 3-6x smaller than ``z1``), the
expand epilogue writes ``a1`` directly, ``z1`` is never stored, and the backward reads ``x``
instead of ``z1`` three times: per training step the block moves 5 ``|z1|`` fewer bytes
(1.5 GB, 0.46 ms of HBM time at 56x56, E = 192, batch 256, bf16) for 2 more reads of ``x``. The statistics match those of the stored
``z1`` up to fp32 rounding (the reference computes them from the rounded bf16 ``z1``).

BN running statistics are updated as ``nn.BatchNorm2d`` does (biased variance normalises,
unbiased variance and ``momentum`` update the buffers, ``num_batches_tracked += 1``).

All wrapped as ``torch.library.custom_op`` (``fastscarlet::mbconv_infer``,
``fastscarlet::mbconv_train_fwd``, ``fastscarlet::mbconv_train_bwd``) with fake implementations,
under the autograd function :class:`MBConvTrainFunction`; :func:`mbconv_ref` is the plain-PyTorch
reference. :func:`mbconv_block_forward` runs a :class:`fastscarlet.nn.blocks.MBConv` module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import nn
from torch.nn import functional as F

from .activations import act_code, act_fwd, act_grad, act_grad_ref, act_ref, module_act_name
from .alignment import assume_multiple, channel_align
from .batchnorm import (
    MEAN,
    RSTD,
    SCALE,
    SHIFT,
    STAT_ROWS,
    VAR_UNBIASED,
    affine_act,
    bn_bwd_apply,
    bn_bwd_coef,
    bn_bwd_reduce,
    bn_eval_affine,
    bn_gram_finalize,
    bn_train_finalize,
)
from .depthwise import dw_conv_bwd, dw_conv_fwd, dw_out_size, taps_major
from .launch import (
    call_op,
    cdiv,
    clamp_pow2,
    interpreting,
    launch,
    next_pow2,
    num_sms,
    split_for,
)
from .pointwise import (
    EPI_AFFINE,
    EPI_BIAS,
    EPI_BN_EVAL,
    PRO_AFFINE,
    PRO_BN_BWD_X,
    pw_conv_fwd,
    pw_conv_wgrad,
)

KERNEL_ACTS = ("relu", "relu6", "hswish", "swish")
SE_GATES = ("hsigmoid", "sigmoid")
# The fused dw + project kernel keeps a [64, next_pow2(Cout)] fp32 accumulator in registers:
# 256 columns = 64 KB = 64 registers per thread at 8 warps. Wider outputs take the h2 path.
MAX_FUSED_COUT = 256
# The project backward kernel also accumulates dW3 [next_pow2(Cout), 64] when Cout <= 128.
MAX_FUSED_WGRAD_COUT = 128


@triton.jit
def _dw_project_fwd_kernel(
    h_ptr, wdw_ptr, w3_ptr, out_ptr, res_ptr,
    g2_ptr, b2_ptr, m2_ptr, v2_ptr, g3_ptr, b3_ptr, m3_ptr, v3_ptr,
    E, COUT, H, W, Ho, Wo, IMG_IN, IMG_RES, TILES_W, eps2, eps3,
    KSIZE: tl.constexpr, STRIDE: tl.constexpr, ACT: tl.constexpr, RESIDUAL: tl.constexpr,
    DOT_F32: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
    BLOCK_E: tl.constexpr, BLOCK_CO: tl.constexpr, ALIGN: tl.constexpr, ALIGN_O: tl.constexpr,
):  # fmt: skip
    """Inference: ``y = BN3(act(BN2(dw(h1))) @ W3^T) (+ x)`` for one ``TILE_H x TILE_W`` tile of
    image ``program_id(1)``; the depthwise output of each ``BLOCK_E`` channel chunk goes from
    registers into the tensor-core dot without touching memory. ``wdw`` is tap-major ``[k*k, E]``
    (:func:`taps_major`); ``ALIGN`` divides ``E``, ``ALIGN_O`` divides ``COUT``."""
    E = assume_multiple(E, ALIGN)
    IMG_IN = assume_multiple(IMG_IN, ALIGN)
    COUT = assume_multiple(COUT, ALIGN_O)
    IMG_RES = assume_multiple(IMG_RES, ALIGN_O)
    pid_t = tl.program_id(0)
    n = tl.program_id(1)
    PAD: tl.constexpr = KSIZE // 2
    th = pid_t // TILES_W
    tw = pid_t % TILES_W
    r = tl.arange(0, TILE_H * TILE_W)
    ho = th * TILE_H + r // TILE_W
    wo = tw * TILE_W + r % TILE_W
    row_ok = (ho < Ho) & (wo < Wo)
    co = tl.arange(0, BLOCK_CO)
    co_ok = co < COUT
    hb = h_ptr + tl.cast(n, tl.int64) * IMG_IN
    centre = (((ho * STRIDE) * W + wo * STRIDE) * E)[:, None] + tl.arange(0, BLOCK_E)[None, :]
    acc = tl.zeros([TILE_H * TILE_W, BLOCK_CO], dtype=tl.float32)
    for e0 in range(0, E, BLOCK_E):
        e = e0 + tl.arange(0, BLOCK_E)
        e_ok = e < E
        d = tl.zeros([TILE_H * TILE_W, BLOCK_E], dtype=tl.float32)
        for i in range(KSIZE):  # runtime loop: see _dw_conv_fwd_kernel
            hi = ho * STRIDE + (i - PAD)
            h_ok = row_ok & (hi >= 0) & (hi < H)
            for j in tl.static_range(KSIZE):
                wi = wo * STRIDE + (j - PAD)
                m = (h_ok & (wi >= 0) & (wi < W))[:, None] & e_ok[None, :]
                v = tl.load(hb + (e0 + ((i - PAD) * W + (j - PAD)) * E) + centre, mask=m, other=0.0)
                wv = tl.load(wdw_ptr + (i * KSIZE + j) * E + e, mask=e_ok, other=0.0)
                d += v.to(tl.float32) * wv.to(tl.float32)[None, :]
        sc, sh = bn_eval_affine(g2_ptr, b2_ptr, m2_ptr, v2_ptr, e, e_ok, eps2)
        a2 = act_fwd(d * sc[None, :] + sh[None, :], ACT)
        a2 = tl.where(e_ok[None, :], a2, 0.0)
        w3 = tl.load(
            w3_ptr + co[None, :] * E + e[:, None], mask=e_ok[:, None] & co_ok[None, :], other=0.0
        )
        if DOT_F32:
            acc = tl.dot(a2, w3.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(a2.to(h_ptr.dtype.element_ty), w3.to(h_ptr.dtype.element_ty), acc)
    sc3, sh3 = bn_eval_affine(g3_ptr, b3_ptr, m3_ptr, v3_ptr, co, co_ok, eps3)
    acc = acc * sc3[None, :] + sh3[None, :]
    o_offs = ((ho * Wo + wo) * COUT)[:, None] + co[None, :]
    om = row_ok[:, None] & co_ok[None, :]
    img_out = tl.cast(n, tl.int64) * IMG_RES
    if RESIDUAL:  # stride 1 and Cin == Cout: the input pixel and row layout of the output
        acc += tl.load(res_ptr + img_out + o_offs, mask=om, other=0.0).to(tl.float32)
    tl.store(out_ptr + img_out + o_offs, acc, mask=om)


@triton.jit
def _project_bwd_kernel(
    dy_ptr, z3_ptr, c3_ptr, w3_ptr, z2_ptr, st2_ptr, gate_ptr,
    du2_ptr, r2_ptr, se_ptr, dw3_ptr,
    N, E, COUT, HW, IMGS,
    ACT: tl.constexpr, GATE: tl.constexpr, FUSE_WGRAD: tl.constexpr, DOT_F32: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_CO: tl.constexpr, ALIGN: tl.constexpr,
):  # fmt: skip
    """Backward through the project conv, the SE gate, the activation and into BN2's output.

    Per tile of pixels ``[pid_t*BLOCK_P, +BLOCK_P)`` of images ``pid_g*IMGS...`` and hidden
    channels ``[pid_e*BLOCK_E, +BLOCK_E)``, with ``u2 = z2*scale2 + shift2``, ``a2 = act(u2)``:

        dz3 = A3 dy + B3 z3 + C3                  (BN3 backward, rebuilt from dy and z3)
        dA  = dz3 @ W3                            (gradient of the gated activation a2 * g)
        dg[n, e]  += sum_hw dA * a2               (SE gate gradient)
        S2[n, e]  += sum_hw act'(u2),  S4[n, e] += sum_hw act'(u2) * xhat2
        du2 = dA * g * act'(u2)    -> stored      (all but the SE-pooling share of dL/du2)
        r2 += (sum du2, sum du2 * xhat2)          (BN2 backward sums, same caveat)
        dW3 += dz3^T (a2 * g)                     (FUSE_WGRAD: Cout fits one BLOCK_CO)

    The SE pooling share ``dm[n, e] / HW * act'(u2)`` is only known after the SE MLP backward; it
    is added to the BN2 sums through S2, S4 on the host and to ``du2`` by ``bn_bwd_apply``.
    ``ALIGN`` divides ``E`` and ``COUT``.
    """
    E = assume_multiple(E, ALIGN)
    COUT = assume_multiple(COUT, ALIGN)
    pid_t = tl.program_id(0)
    pid_g = tl.program_id(1)
    pid_e = tl.program_id(2)
    r = pid_t * BLOCK_P + tl.arange(0, BLOCK_P)
    r_ok = r < HW
    e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
    e_ok = e < E
    me = r_ok[:, None] & e_ok[None, :]
    mean2 = tl.load(st2_ptr + e, mask=e_ok, other=0.0)
    rstd2 = tl.load(st2_ptr + E + e, mask=e_ok, other=0.0)
    scale2 = tl.load(st2_ptr + 2 * E + e, mask=e_ok, other=0.0)
    shift2 = tl.load(st2_ptr + 3 * E + e, mask=e_ok, other=0.0)
    r1 = tl.zeros([BLOCK_E], dtype=tl.float32)
    r3 = tl.zeros([BLOCK_E], dtype=tl.float32)
    if FUSE_WGRAD:
        dw3 = tl.zeros([BLOCK_CO, BLOCK_E], dtype=tl.float32)
    offs_e = (r * E)[:, None] + e[None, :]
    n0 = pid_g * IMGS
    for n in range(n0, tl.minimum(n0 + IMGS, N)):
        n64 = tl.cast(n, tl.int64)
        dyb = dy_ptr + n64 * HW * COUT
        z3b = z3_ptr + n64 * HW * COUT
        dA = tl.zeros([BLOCK_P, BLOCK_E], dtype=tl.float32)
        if FUSE_WGRAD:
            co = tl.arange(0, BLOCK_CO)
            co_ok = co < COUT
            mc = r_ok[:, None] & co_ok[None, :]
            dy = tl.load(dyb + (r * COUT)[:, None] + co[None, :], mask=mc, other=0.0)
            z3 = tl.load(z3b + (r * COUT)[:, None] + co[None, :], mask=mc, other=0.0)
            ca = tl.load(c3_ptr + co, mask=co_ok, other=0.0)
            cb = tl.load(c3_ptr + COUT + co, mask=co_ok, other=0.0)
            cc = tl.load(c3_ptr + 2 * COUT + co, mask=co_ok, other=0.0)
            dz3 = dy.to(tl.float32) * ca[None, :] + z3.to(tl.float32) * cb[None, :] + cc[None, :]
            dz3 = tl.where(mc, dz3, 0.0)
            w3 = tl.load(
                w3_ptr + co[:, None] * E + e[None, :],
                mask=co_ok[:, None] & e_ok[None, :],
                other=0.0,
            )
            if DOT_F32:
                dA = tl.dot(dz3, w3.to(tl.float32), dA, input_precision="ieee")
            else:
                dA = tl.dot(dz3.to(dy_ptr.dtype.element_ty), w3.to(dy_ptr.dtype.element_ty), dA)
        else:
            for co0 in range(0, COUT, BLOCK_CO):
                co = co0 + tl.arange(0, BLOCK_CO)
                co_ok = co < COUT
                mc = r_ok[:, None] & co_ok[None, :]
                dy = tl.load(dyb + (r * COUT)[:, None] + co[None, :], mask=mc, other=0.0)
                z3 = tl.load(z3b + (r * COUT)[:, None] + co[None, :], mask=mc, other=0.0)
                ca = tl.load(c3_ptr + co, mask=co_ok, other=0.0)
                cb = tl.load(c3_ptr + COUT + co, mask=co_ok, other=0.0)
                cc = tl.load(c3_ptr + 2 * COUT + co, mask=co_ok, other=0.0)
                dz3 = dy.to(tl.float32) * ca[None, :] + z3.to(tl.float32) * cb[None, :]
                dz3 = tl.where(mc, dz3 + cc[None, :], 0.0)
                w3 = tl.load(
                    w3_ptr + co[:, None] * E + e[None, :],
                    mask=co_ok[:, None] & e_ok[None, :],
                    other=0.0,
                )
                if DOT_F32:
                    dA = tl.dot(dz3, w3.to(tl.float32), dA, input_precision="ieee")
                else:
                    dA = tl.dot(dz3.to(dy_ptr.dtype.element_ty), w3.to(dy_ptr.dtype.element_ty), dA)
        z2 = tl.load(z2_ptr + n64 * HW * E + offs_e, mask=me, other=0.0).to(tl.float32)
        u2 = z2 * scale2[None, :] + shift2[None, :]
        a2 = tl.where(me, act_fwd(u2, ACT), 0.0)
        d2 = tl.where(me, act_grad(u2, ACT), 0.0)
        xh = (z2 - mean2[None, :]) * rstd2[None, :]
        if GATE:
            gv = tl.load(gate_ptr + n * E + e, mask=e_ok, other=0.0)
            sidx = n * E + e
            tl.atomic_add(se_ptr + sidx, tl.sum(dA * a2, axis=0), mask=e_ok)
            tl.atomic_add(se_ptr + N * E + sidx, tl.sum(d2, axis=0), mask=e_ok)
            tl.atomic_add(se_ptr + 2 * N * E + sidx, tl.sum(d2 * xh, axis=0), mask=e_ok)
            dA = dA * gv[None, :]
            a2 = a2 * gv[None, :]
        du = dA * d2
        tl.store(du2_ptr + n64 * HW * E + offs_e, du, mask=me)
        r1 += tl.sum(du, axis=0)
        r3 += tl.sum(du * xh, axis=0)
        if FUSE_WGRAD:
            if DOT_F32:
                dw3 = tl.dot(tl.trans(dz3), a2, dw3, input_precision="ieee")
            else:
                dw3 = tl.dot(
                    tl.trans(dz3.to(dy_ptr.dtype.element_ty)), a2.to(dy_ptr.dtype.element_ty), dw3
                )
    tl.atomic_add(r2_ptr + e, r1, mask=e_ok)
    tl.atomic_add(r2_ptr + E + e, r3, mask=e_ok)
    if FUSE_WGRAD:
        co = tl.arange(0, BLOCK_CO)
        tl.atomic_add(
            dw3_ptr + co[:, None] * E + e[None, :], dw3, mask=(co < COUT)[:, None] & e_ok[None, :]
        )


# ---------------------------------------------------------------------------------------------
# Host launchers of the two block-specific kernels.
# ---------------------------------------------------------------------------------------------


def dw_project_fwd(
    h1: torch.Tensor,
    wdw: torch.Tensor,
    w3: torch.Tensor,
    out: torch.Tensor,
    geom: tuple[int, int, int],
    stride: int,
    bn2: tuple[torch.Tensor, ...],
    bn3: tuple[torch.Tensor, ...],
    eps2: float,
    eps3: float,
    act: str,
    residual: torch.Tensor | None,
) -> None:
    """Launch :func:`_dw_project_fwd_kernel` (``h1 [N*H*W, E]``, ``out [N*Ho*Wo, Cout]``)."""
    N, H, W = geom
    E = h1.shape[1]
    cout = w3.shape[0]
    k = wdw.shape[-1]
    Ho, Wo = dw_out_size(H, stride), dw_out_size(W, stride)
    dev = h1.device
    if interpreting(dev):
        th_, tw_, be = 4, 4, 16
    else:
        th_, tw_, be = 8, 8, 32
    bco = clamp_pow2(cout, 16, MAX_FUSED_COUT)
    tiles_w = cdiv(Wo, tw_)
    launch(
        _dw_project_fwd_kernel,
        (cdiv(Ho, th_) * tiles_w, N),
        h1, taps_major(wdw), w3, out, residual if residual is not None else h1,
        *bn2, *bn3, E, cout, H, W, Ho, Wo, H * W * E, Ho * Wo * cout, tiles_w, float(eps2),
        float(eps3),
        KSIZE=k, STRIDE=stride, ACT=act_code(act), RESIDUAL=residual is not None,
        DOT_F32=h1.dtype == torch.float32, TILE_H=th_, TILE_W=tw_, BLOCK_E=be, BLOCK_CO=bco,
        ALIGN=channel_align(E), ALIGN_O=channel_align(cout), num_warps=8 if bco > 64 else 4,
        num_stages=1,
    )  # fmt: skip


def project_bwd(
    dy: torch.Tensor,
    z3: torch.Tensor,
    coef3: torch.Tensor,
    w3: torch.Tensor,
    z2: torch.Tensor,
    stats2: torch.Tensor,
    gate: torch.Tensor | None,
    du2: torch.Tensor,
    r2: torch.Tensor,
    se_sums: torch.Tensor | None,
    dw3: torch.Tensor,
    geom: tuple[int, int],
    act: str,
) -> bool:
    """Launch :func:`_project_bwd_kernel`; returns whether ``dw3`` was accumulated too."""
    N, HW = geom
    E = z2.shape[1]
    cout = w3.shape[0]
    dev = z2.device
    if interpreting(dev):
        bp, be, cap, imgs = 16, 16, 32, 2
    else:
        bp, be, cap = 64, 32, MAX_FUSED_WGRAD_COUT
    fuse = next_pow2(cout) <= cap
    bco = clamp_pow2(cout, 16, cap)
    if bco > 64 and not interpreting(dev):
        bp = 32  # dz3 [64, 128] + dW3 [128, 32] spilled 588 B at 8 warps; [32, 128] does not
    tiles = cdiv(HW, bp)
    if not interpreting(dev):
        imgs = cdiv(N, split_for(N, tiles * cdiv(E, be), 16 * num_sms(dev)))
    launch(
        _project_bwd_kernel,
        (tiles, cdiv(N, imgs), cdiv(E, be)),
        dy, z3, coef3, w3, z2, stats2, gate if gate is not None else z2,
        du2, r2, se_sums if se_sums is not None else r2, dw3,
        N, E, cout, HW, imgs,
        ACT=act_code(act), GATE=gate is not None, FUSE_WGRAD=fuse,
        DOT_F32=dy.dtype == torch.float32, BLOCK_P=bp, BLOCK_E=be, BLOCK_CO=bco,
        ALIGN=channel_align(E, cout), num_warps=8, num_stages=2,
    )  # fmt: skip
    return fuse


# ---------------------------------------------------------------------------------------------
# The block: geometry, the three implementations, custom ops.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Geom:
    N: int
    cin: int
    H: int
    W: int
    hidden: int
    cout: int
    Hs: int  # expand grid (after expand_stride)
    Ws: int
    Ho: int
    Wo: int

    @property
    def P1(self) -> int:
        return self.N * self.Hs * self.Ws

    @property
    def P2(self) -> int:
        return self.N * self.Ho * self.Wo


def _geom(x: torch.Tensor, w1: torch.Tensor, w3: torch.Tensor, stride: int, es: int) -> _Geom:
    N, cin, H, W = x.shape
    Hs, Ws = dw_out_size(H, es), dw_out_size(W, es)
    return _Geom(
        N, cin, H, W, w1.shape[0], w3.shape[0], Hs, Ws, dw_out_size(Hs, stride),
        dw_out_size(Ws, stride),
    )  # fmt: skip


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` channels_last -> its ``[N*H*W, C]`` row view (no copy)."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def _empty_cl(n: int, c: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    return torch.empty(
        (n, c, h, w), dtype=like.dtype, device=like.device, memory_format=torch.channels_last
    )


def _dense(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each tensor contiguous (itself when it already is; else a copy that autograd tracks)."""
    return tuple(t.contiguous() for t in tensors)


def _w2d(w: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv weight ``[O, C, 1, 1]`` as ``[O, C]`` (a view)."""
    return w.reshape(w.shape[0], w.shape[1])


def _se_gate_fwd(
    pool: torch.Tensor,
    sw1: torch.Tensor,
    sb1: torch.Tensor,
    sw2: torch.Tensor,
    sb2: torch.Tensor,
    se_act: str,
    se_gate: str,
    out: torch.Tensor,
) -> torch.Tensor:
    """``gate = gate(W2 act(W1 m + b1) + b2)`` on ``m = pool [N, E]`` (fp32, two pw launches)."""
    s = torch.empty((pool.shape[0], sw1.shape[0]), dtype=torch.float32, device=pool.device)
    pw_conv_fwd(pool, _w2d(sw1), s, epi=EPI_BIAS, epi_vecs=(sb1,), epi_act=se_act)
    pw_conv_fwd(s, _w2d(sw2), out, epi=EPI_BIAS, epi_vecs=(sb2,), epi_act=se_gate)
    return out


def _mbconv_infer_impl(
    x: torch.Tensor, w1: torch.Tensor, g1: torch.Tensor, b1: torch.Tensor, m1: torch.Tensor,
    v1: torch.Tensor, wdw: torch.Tensor, g2: torch.Tensor, b2: torch.Tensor, m2: torch.Tensor,
    v2: torch.Tensor, w3: torch.Tensor, g3: torch.Tensor, b3: torch.Tensor, m3: torch.Tensor,
    v3: torch.Tensor, sw1: torch.Tensor | None, sb1: torch.Tensor | None, sw2: torch.Tensor | None,
    sb2: torch.Tensor | None, stride: int, expand_stride: int, act: str, se_act: str,
    se_gate: str, residual: bool, eps1: float, eps2: float, eps3: float,
) -> torch.Tensor:  # fmt: skip
    g = _geom(x, w1, w3, stride, expand_stride)
    xr = _rows(x)
    h1 = torch.empty((g.P1, g.hidden), dtype=x.dtype, device=x.device)
    pw_conv_fwd(
        xr, _w2d(w1), h1, geom=(g.N, g.Hs, g.Ws, g.H, g.W), in_stride=expand_stride,
        epi=EPI_BN_EVAL, epi_vecs=(g1, b1, m1, v1), eps=eps1, epi_act=act,
    )  # fmt: skip
    y = _empty_cl(g.N, g.cout, g.Ho, g.Wo, x)
    yr = _rows(y)
    res = xr if residual else None
    has_se = sw1 is not None
    if not has_se and next_pow2(g.cout) <= MAX_FUSED_COUT:
        dw_project_fwd(
            h1, wdw, _w2d(w3), yr, (g.N, g.Hs, g.Ws), stride, (g2, b2, m2, v2), (g3, b3, m3, v3),
            eps2, eps3, act, res,
        )  # fmt: skip
        return y
    h2 = torch.empty((g.P2, g.hidden), dtype=x.dtype, device=x.device)
    gate = None
    pool = None
    if has_se:
        pool = torch.zeros((g.N, g.hidden), dtype=torch.float32, device=x.device)
    dw_conv_fwd(
        h1, wdw, (g.N, g.Hs, g.Ws), stride, out=h2, bn_eval=(g2, b2, m2, v2), eps=eps2,
        epi_act=act, pool=pool,
    )  # fmt: skip
    if has_se:
        assert pool is not None and sw1 is not None and sb1 is not None
        assert sw2 is not None and sb2 is not None
        gate = _se_gate_fwd(pool, sw1, sb1, sw2, sb2, se_act, se_gate, torch.empty_like(pool))
    pw_conv_fwd(
        h2, _w2d(w3), yr, geom=(g.N, g.Ho, g.Wo, g.Ho, g.Wo), gate=gate, epi=EPI_BN_EVAL,
        epi_vecs=(g3, b3, m3, v3), eps=eps3, residual=res,
    )  # fmt: skip
    return y


def _stat_blocks(stats: torch.Tensor, hidden: int, cout: int) -> tuple[torch.Tensor, ...]:
    """The packed ``stats`` as three ``[STAT_ROWS, C]`` views (BN1, BN2, BN3)."""
    n1 = STAT_ROWS * hidden
    return (
        stats[:n1].view(STAT_ROWS, hidden),
        stats[n1 : 2 * n1].view(STAT_ROWS, hidden),
        stats[2 * n1 :].view(STAT_ROWS, cout),
    )


def _mbconv_train_fwd_impl(
    x: torch.Tensor, w1: torch.Tensor, g1: torch.Tensor, b1: torch.Tensor, wdw: torch.Tensor,
    g2: torch.Tensor, b2: torch.Tensor, w3: torch.Tensor, g3: torch.Tensor, b3: torch.Tensor,
    sw1: torch.Tensor | None, sb1: torch.Tensor | None, sw2: torch.Tensor | None,
    sb2: torch.Tensor | None, stride: int, expand_stride: int, act: str, se_act: str,
    se_gate: str, residual: bool, eps1: float, eps2: float, eps3: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    g = _geom(x, w1, w3, stride, expand_stride)
    dev, dt, E, cin = x.device, x.dtype, g.hidden, g.cin
    f32 = dict(dtype=torch.float32, device=dev)
    xr = _rows(x)
    grid1 = (g.N, g.Hs, g.Ws, g.H, g.W)  # the expand conv's output grid and its input's size
    # One memset for every atomic accumulator: the Gram matrix [x, 1]^T x of the expand input,
    # the sums of z2 and z3.
    acc = torch.zeros((cin + 1) * cin + 2 * E + 2 * g.cout, **f32)
    gram = acc[: (cin + 1) * cin].view(cin + 1, cin)
    s2, s3 = acc[(cin + 1) * cin :][: 2 * E], acc[(cin + 1) * cin + 2 * E :]
    stats = torch.empty(STAT_ROWS * (2 * E + g.cout), **f32)
    st1, st2, st3 = _stat_blocks(stats, E, g.cout)
    # BN1 statistics before the expand conv runs (mean = W1 s / M, E[z^2] = w^T G w / M), so its
    # epilogue writes a1 = act(BN1(x W1^T)) directly: z1 never exists (see "BN1" above).
    pw_conv_wgrad(
        xr, xr, gram, geom=grid1, a_stride=expand_stride, a_hw=(g.H, g.W), b_stride=expand_stride,
        append_one=True,
    )  # fmt: skip
    bn_gram_finalize(gram, _w2d(w1), g1, b1, st1, g.P1, eps1)
    a1 = torch.empty((g.P1, E), dtype=dt, device=dev)
    pw_conv_fwd(
        xr, _w2d(w1), a1, geom=grid1, in_stride=expand_stride, epi=EPI_AFFINE,
        epi_vecs=(st1[SCALE], st1[SHIFT]), epi_act=act,
    )  # fmt: skip
    z2 = torch.empty((g.P2, E), dtype=dt, device=dev)
    dw_conv_fwd(a1, wdw, (g.N, g.Hs, g.Ws), stride, out=z2, stats=s2)
    del a1  # transient: the backward rebuilds it from x inside the depthwise backward
    bn_train_finalize(s2, g2, b2, st2, g.P2, eps2)
    gate = None
    if sw1 is not None:
        assert sb1 is not None and sw2 is not None and sb2 is not None
        se_buf = torch.zeros((2, g.N, E), **f32)  # [pooled mean m, gate g]
        affine_act(z2, st2[SCALE], st2[SHIFT], (g.N, g.Ho * g.Wo), act=act, pool=se_buf[0])
        gate = _se_gate_fwd(se_buf[0], sw1, sb1, sw2, sb2, se_act, se_gate, se_buf[1])
    else:
        se_buf = torch.empty(0, **f32)
    z3 = torch.empty((g.P2, g.cout), dtype=dt, device=dev)
    pw_conv_fwd(
        z2, _w2d(w3), z3, geom=(g.N, g.Ho, g.Wo, g.Ho, g.Wo), pro=PRO_AFFINE,
        pro_vecs=(st2[SCALE], st2[SHIFT]), pro_act=act, gate=gate, stats=s3,
    )  # fmt: skip
    bn_train_finalize(s3, g3, b3, st3, g.P2, eps3)
    y = _empty_cl(g.N, g.cout, g.Ho, g.Wo, x)
    affine_act(
        z3, st3[SCALE], st3[SHIFT], (g.N, g.Ho * g.Wo), out=_rows(y),
        residual=xr if residual else None,
    )  # fmt: skip
    return y, z2, z3, stats, se_buf


def _se_mlp_bwd(
    m: torch.Tensor,
    dgate: torch.Tensor,
    sw1: torch.Tensor,
    sb1: torch.Tensor,
    sw2: torch.Tensor,
    sb2: torch.Tensor,
    se_act: str,
    se_gate: str,
) -> tuple[torch.Tensor, ...]:
    """Backward of the SE MLP ``gate = gate(W2 act(W1 m + b1) + b2)`` on ``[N, E]`` fp32 tensors
    in plain PyTorch (a dozen tiny launches). Returns ``dm, dW1, db1, dW2, db2`` in fp32.

    Written out rather than by autograd: a custom op's implementation runs below the autograd
    dispatch key."""
    w1, b1 = _w2d(sw1).float(), sb1.float()
    w2, b2 = _w2d(sw2).float(), sb2.float()
    # fp32 even if the backward runs under AMP
    no_amp = torch.autocast("cuda", enabled=False) if m.is_cuda else contextlib.nullcontext()
    with no_amp:
        s_pre = F.linear(m, w1, b1)
        s = act_ref(s_pre, se_act)
        dg_pre = dgate * act_grad_ref(F.linear(s, w2, b2), se_gate)
        ds_pre = (dg_pre @ w2) * act_grad_ref(s_pre, se_act)
        return (
            ds_pre @ w1,
            (ds_pre.t() @ m).view(sw1.shape),
            ds_pre.sum(0),
            (dg_pre.t() @ s).view(sw2.shape),
            dg_pre.sum(0),
        )


def _mbconv_train_bwd_impl(
    dy: torch.Tensor, x: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor,
    stats: torch.Tensor, se_buf: torch.Tensor, w1: torch.Tensor, g1: torch.Tensor,
    wdw: torch.Tensor, g2: torch.Tensor, w3: torch.Tensor, g3: torch.Tensor,
    sw1: torch.Tensor | None, sb1: torch.Tensor | None, sw2: torch.Tensor | None,
    sb2: torch.Tensor | None, stride: int, expand_stride: int, act: str, se_act: str,
    se_gate: str, residual: bool, need_dx: bool,
) -> tuple[torch.Tensor, ...]:  # fmt: skip
    g = _geom(x, w1, w3, stride, expand_stride)
    dev, E, k = x.device, g.hidden, wdw.shape[-1]
    f32 = dict(dtype=torch.float32, device=dev)
    has_se = sw1 is not None
    HW2 = g.Ho * g.Wo
    dyr = _rows(dy)
    st1, st2, st3 = _stat_blocks(stats, E, g.cout)
    ws = torch.zeros(2 * g.cout + 4 * E + (3 * g.N * E if has_se else 0), **f32)
    s3, r2, r1 = (
        ws[: 2 * g.cout],
        ws[2 * g.cout : 2 * g.cout + 2 * E],
        ws[2 * g.cout + 2 * E :][: 2 * E],
    )
    se_sums = ws[2 * g.cout + 4 * E :].view(3, g.N, E) if has_se else None
    coef = torch.empty(3 * (g.cout + 2 * E), **f32)
    c3 = coef[: 3 * g.cout].view(3, g.cout)
    c2 = coef[3 * g.cout : 3 * g.cout + 3 * E].view(3, E)
    c1 = coef[3 * g.cout + 3 * E :].view(3, E)
    dg3, db3 = torch.empty(g.cout, **f32), torch.empty(g.cout, **f32)
    dg2, db2 = torch.empty(E, **f32), torch.empty(E, **f32)
    dg1, db1 = torch.empty(E, **f32), torch.empty(E, **f32)
    dw3 = torch.zeros((g.cout, E), **f32)
    dwdw = torch.zeros((E, k * k), **f32)
    dw1 = torch.zeros((E, g.cin), **f32)

    # BN3 backward: dz3 = A3 dy + B3 z3 + C3
    bn_bwd_reduce(dyr, z3, st3[MEAN], st3[RSTD], s3)
    bn_bwd_coef(s3, st3, g3, c3, dg3, db3, g.P2)
    # project + SE gate + act, into BN2's output
    gate = se_buf[1] if has_se else None
    du2 = torch.empty((g.P2, E), dtype=x.dtype, device=dev)
    fused = project_bwd(
        dyr, z3, c3, _w2d(w3), z2, st2, gate, du2, r2, se_sums, dw3, (g.N, HW2), act
    )
    if not fused:
        pw_conv_wgrad(
            dyr, z2, dw3, geom=(g.N, g.Ho, g.Wo, g.Ho, g.Wo), pro_a_vecs=(c3[0], c3[1], c3[2]),
            z=z3, pro_b_vecs=(st2[SCALE], st2[SHIFT]), pro_b_act=act, gate=gate,
        )  # fmt: skip
    se_grads = [torch.empty(0, **f32) for _ in range(4)]  # distinct: outputs may not alias
    se_term = None
    if has_se:
        assert se_sums is not None and sb1 is not None and sw2 is not None and sb2 is not None
        dm, *se_grads = _se_mlp_bwd(se_buf[0], se_sums[0], sw1, sb1, sw2, sb2, se_act, se_gate)
        dmh = (dm / HW2).contiguous()
        # The pooling share of dL/du2 is dmh * act'(u2): add its BN2 sums (S2, S4 = per-image
        # sums of act' and act' * xhat2 from the project backward).
        r2.view(2, E).add_(torch.stack([(dmh * se_sums[1]).sum(0), (dmh * se_sums[2]).sum(0)]))
        se_term = (dmh, st2[SCALE], st2[SHIFT])
    bn_bwd_coef(r2, st2, g2, c2, dg2, db2, g.P2)
    dz2 = du2  # in place
    bn_bwd_apply(du2, z2, c2, dz2, HW2, se_term=se_term, act=act)
    # depthwise: input gradient (-> du1 through act and BN1's affine) and weight gradient, with
    # z1 = x W1^T rebuilt per tile from x (never stored)
    xr, w1r = _rows(x), _w2d(w1)
    du1 = torch.empty((g.P1, E), dtype=x.dtype, device=dev)
    dw_conv_bwd(
        dz2, None, wdw, (g.N, g.Hs, g.Ws), stride, du1, dwdw, pro_vecs=(st1[SCALE], st1[SHIFT]),
        pro_act=act, bn_sums=(r1, st1[MEAN], st1[RSTD]),
        rebuild=(xr, w1r, g.H, g.W, expand_stride),
    )  # fmt: skip
    bn_bwd_coef(r1, st1, g1, c1, dg1, db1, g.P1)
    # expand: dx = dz1 W1 (+ dy), dW1 = dz1^T x, dz1 = A1 du1 + B1 z1 + C1 with z1 rebuilt again
    if need_dx:
        if expand_stride == 1:
            dx = _empty_cl(g.N, g.cin, g.H, g.W, x)
        else:  # a strided 1x1 conv never reads the skipped pixels
            dx = torch.zeros_like(x, memory_format=torch.channels_last)
        pw_conv_fwd(
            du1, w1r, _rows(dx), geom=(g.N, g.Hs, g.Ws, g.Hs, g.Ws), out_stride=expand_stride,
            out_hw=(g.H, g.W), weight_transposed=True, pro=PRO_BN_BWD_X,
            pro_vecs=(c1[0], c1[1], c1[2]), z=xr, z_weight=w1r,
            residual=dyr if residual else None,
        )  # fmt: skip
    else:
        dx = torch.empty(0, dtype=x.dtype, device=dev)
    pw_conv_wgrad(
        du1, xr, dw1, geom=(g.N, g.Hs, g.Ws, g.H, g.W), b_stride=expand_stride,
        pro_a_vecs=(c1[0], c1[1], c1[2]), z_weight=w1r,
    )  # fmt: skip
    return (
        dx, dw1, dg1, db1, dwdw, dg2, db2, dw3, dg3, db3,
        *se_grads,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# torch.library custom ops (torch.compile treats them as opaque nodes with these fake shapes).
# ---------------------------------------------------------------------------------------------

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
    return _mbconv_infer_impl(
        x, w1, g1, b1, m1, v1, wdw, g2, b2, m2, v2, w3, g3, b3, m3, v3, sw1, sb1, sw2, sb2,
        stride, expand_stride, act, se_act, se_gate, residual, eps1, eps2, eps3,
    )  # fmt: skip


@mbconv_infer.register_fake
def _mbconv_infer_fake(
    x, w1, g1, b1, m1, v1, wdw, g2, b2, m2, v2, w3, g3, b3, m3, v3, sw1, sb1, sw2, sb2, stride,
    expand_stride, act, se_act, se_gate, residual, eps1, eps2, eps3,
):  # fmt: skip
    g = _geom(x, w1, w3, stride, expand_stride)
    return _empty_cl(g.N, g.cout, g.Ho, g.Wo, x)


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
    return _mbconv_train_fwd_impl(
        x, w1, g1, b1, wdw, g2, b2, w3, g3, b3, sw1, sb1, sw2, sb2, stride, expand_stride, act,
        se_act, se_gate, residual, eps1, eps2, eps3,
    )  # fmt: skip


@mbconv_train_fwd.register_fake
def _mbconv_train_fwd_fake(
    x, w1, g1, b1, wdw, g2, b2, w3, g3, b3, sw1, sb1, sw2, sb2, stride, expand_stride, act,
    se_act, se_gate, residual, eps1, eps2, eps3,
):  # fmt: skip
    g = _geom(x, w1, w3, stride, expand_stride)
    E = g.hidden
    f32 = dict(dtype=torch.float32, device=x.device)
    se = x.new_empty((2, g.N, E), dtype=torch.float32) if sw1 is not None else x.new_empty(0, **f32)
    return (
        _empty_cl(g.N, g.cout, g.Ho, g.Wo, x),
        x.new_empty((g.P2, E)),
        x.new_empty((g.P2, g.cout)),
        x.new_empty(STAT_ROWS * (2 * E + g.cout), **f32),
        se,
    )


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
    return _mbconv_train_bwd_impl(
        dy, x, z2, z3, stats, se_buf, w1, g1, wdw, g2, w3, g3, sw1, sb1, sw2, sb2, stride,
        expand_stride, act, se_act, se_gate, residual, need_dx,
    )  # fmt: skip


@mbconv_train_bwd.register_fake
def _mbconv_train_bwd_fake(
    dy, x, z2, z3, stats, se_buf, w1, g1, wdw, g2, w3, g3, sw1, sb1, sw2, sb2, stride,
    expand_stride, act, se_act, se_gate, residual, need_dx,
):  # fmt: skip
    E, cin, cout, k = w1.shape[0], w1.shape[1], w3.shape[0], wdw.shape[-1]
    f32 = dict(dtype=torch.float32, device=x.device)
    dx = torch.empty_like(x, memory_format=torch.channels_last) if need_dx else x.new_empty(0)
    if sw1 is not None:
        se = (x.new_empty(tuple(sw1.shape), **f32), x.new_empty(tuple(sb1.shape), **f32),
              x.new_empty(tuple(sw2.shape), **f32), x.new_empty(tuple(sb2.shape), **f32))  # fmt: skip
    else:
        se = tuple(x.new_empty(0, **f32) for _ in range(4))
    return (
        dx, x.new_empty((E, cin), **f32), x.new_empty(E, **f32), x.new_empty(E, **f32),
        x.new_empty((E, k * k), **f32), x.new_empty(E, **f32), x.new_empty(E, **f32),
        x.new_empty((cout, E), **f32), x.new_empty(cout, **f32), x.new_empty(cout, **f32), *se,
    )  # fmt: skip


class MBConvTrainFunction(torch.autograd.Function):
    """Autograd over ``fastscarlet::mbconv_train_fwd`` / ``fastscarlet::mbconv_train_bwd``.

    ``forward`` returns ``(y, stats, z2, z3, se_buf)``; only ``y`` is differentiable, the rest
    is kept for the backward (and ``stats`` for the running-statistics update)."""

    @staticmethod
    def forward(
        x, w1, g1, b1, wdw, g2, b2, w3, g3, b3, sw1, sb1, sw2, sb2, stride, expand_stride, act,
        se_act, se_gate, residual, eps1, eps2, eps3,
    ):  # fmt: skip
        y, z2, z3, stats, se_buf = call_op(
            torch.ops.fastscarlet.mbconv_train_fwd, _mbconv_train_fwd_impl,
            x, w1, g1, b1, wdw, g2, b2, w3, g3, b3, sw1, sb1, sw2, sb2, stride, expand_stride,
            act, se_act, se_gate, residual, eps1, eps2, eps3,
        )  # fmt: skip
        return y, stats, z2, z3, se_buf

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w1, g1, _b1, wdw, g2, _b2, w3, g3, _b3, sw1, sb1, sw2, sb2 = inputs[:14]
        ctx.cfg = inputs[14:20]  # stride, expand_stride, act, se_act, se_gate, residual
        _y, stats, z2, z3, se_buf = output
        ctx.has_se = sw1 is not None
        ctx.save_for_backward(x, z2, z3, stats, se_buf, w1, g1, wdw, g2, w3, g3, sw1, sb1,
                              sw2, sb2)  # fmt: skip
        ctx.mark_non_differentiable(stats, z2, z3, se_buf)

    @staticmethod
    def backward(ctx, dy, *_unused):
        x, z2, z3, stats, se_buf, w1, g1, wdw, g2, w3, g3, sw1, sb1, sw2, sb2 = ctx.saved_tensors
        dy = dy.contiguous(memory_format=torch.channels_last)
        grads = call_op(
            torch.ops.fastscarlet.mbconv_train_bwd, _mbconv_train_bwd_impl,
            dy, x, z2, z3, stats, se_buf, w1, g1, wdw, g2, w3, g3, sw1, sb1, sw2, sb2,
            *ctx.cfg, ctx.needs_input_grad[0],
        )  # fmt: skip
        dx, dw1, dg1, db1, dwdw, dg2, db2, dw3, dg3, db3, dsw1, dsb1, dsw2, dsb2 = grads

        def fit(grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
            return grad.view(like.shape).to(like.dtype)

        se = (None,) * 4
        if ctx.has_se:
            se = (fit(dsw1, sw1), fit(dsb1, sb1), fit(dsw2, sw2), fit(dsb2, sb2))
        return (
            dx if ctx.needs_input_grad[0] else None,
            fit(dw1, w1), fit(dg1, g1), fit(db1, g1), fit(dwdw, wdw), fit(dg2, g2), fit(db2, g2),
            fit(dw3, w3), fit(dg3, g3), fit(db3, g3), *se, *([None] * 9),
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Modules in, tensors out.
# ---------------------------------------------------------------------------------------------


def _bn_ok(bn: nn.Module) -> str | None:
    if not isinstance(bn, nn.BatchNorm2d):
        return f"{type(bn).__name__} is not BatchNorm2d"
    if not bn.affine or not bn.track_running_stats:
        return "BatchNorm2d without affine parameters or running statistics"
    return None


def unsupported_reason(
    block: nn.Module,
    se: nn.Module | None,
    x: torch.Tensor,
    *,
    lets: Sequence[nn.Module] = (),
) -> str | None:
    """Why the kernels cannot run this MBConv call (None: they can). The reference runs instead.

    ``lets``: LET stabilizers that run on ``x`` first (``let_mbconv_forward``); ``x`` is then
    their input, and the block sees their output's channels and size.

    Covered: any channel counts and spatial sizes, odd kernels up to 9, stride 1/2 (and any
    expand stride), activations relu/relu6/hswish/swish, SE with those squeeze activations and an
    hsigmoid/sigmoid gate, fp32/bf16/fp16, BN in training (batch statistics) or eval mode.
    Not covered: eval-mode BN while gradients are needed (e.g. fine-tuning with frozen BN: the
    inference kernel has no backward), BN without running statistics or affine parameters, and
    anything that is not the ``fastscarlet.nn.blocks`` structure.
    """
    if x.dim() != 4 or x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return "input must be a 4-D fp32/bf16/fp16 tensor"
    if block.act_name not in KERNEL_ACTS:
        return f"activation {block.act_name!r}"
    dw, ex, pj = block.dw, block.expand, block.project
    channels, let_stride = x.shape[1], 1
    for let in lets:
        if let.conv.in_channels != channels:
            return f"LET expects {let.conv.in_channels} channels, gets {channels}"
        channels, let_stride = let.conv.out_channels, let_stride * let.conv.stride[0]
    if channels != ex.in_channels:  # the reference raises with PyTorch's message
        return f"expand conv expects {ex.in_channels} input channels, gets {channels}"
    k = dw.kernel_size[0]
    if (
        dw.kernel_size != (k, k) or k % 2 == 0 or k > 9 or dw.padding != (k // 2, k // 2)
        or dw.dilation != (1, 1) or dw.groups != dw.in_channels or dw.bias is not None
        or dw.stride[0] != dw.stride[1] or dw.stride[0] not in (1, 2)
        or dw.padding_mode != "zeros"
    ):  # fmt: skip
        return "depthwise conv is not an odd square kernel <= 9, zero padding k//2, stride 1/2"
    for name, conv in (("expand", ex), ("project", pj)):
        if (
            conv.kernel_size != (1, 1) or conv.bias is not None or conv.groups != 1
            or conv.padding != (0, 0) or conv.dilation != (1, 1)
            or conv.stride[0] != conv.stride[1] or (name == "project" and conv.stride != (1, 1))
        ):  # fmt: skip
            return f"{name} conv is not a bias-free, ungrouped, unpadded 1x1 conv"
    for bn in (block.bn1, block.bn2, block.bn3):
        if (why := _bn_ok(bn)) is not None:
            return why
    frozen_bn_grad = not block.training and torch.is_grad_enabled()
    if frozen_bn_grad and (x.requires_grad or any(p.requires_grad for p in block.parameters())):
        return "eval-mode BN with gradients enabled (run inference under torch.no_grad())"
    if block.training:
        es, s = ex.stride[0] * let_stride, dw.stride[0]
        ho, wo = (
            dw_out_size(dw_out_size(x.shape[2], es), s),
            dw_out_size(dw_out_size(x.shape[3], es), s),
        )
        if x.shape[0] * ho * wo <= 1:  # PyTorch raises for this; let the reference say so
            return "training BN needs more than one value per channel"
    if se is not None:
        if module_act_name(se.act) not in KERNEL_ACTS:
            return f"SE squeeze activation {type(se.act).__name__}"
        if module_act_name(se.gate) not in SE_GATES:
            return f"SE gate {type(se.gate).__name__}"
        if se.reduce.bias is None or se.expand.bias is None:
            return "SE convs without bias"
        if frozen_bn_grad and any(p.requires_grad for p in se.parameters()):
            return "eval-mode BN with gradients enabled (run inference under torch.no_grad())"
    return None


def mbconv_supported(
    block: nn.Module, se: nn.Module | None, x: torch.Tensor, *, lets: Sequence[nn.Module] = ()
) -> bool:
    return unsupported_reason(block, se, x, lets=lets) is None


def _update_running_stats(
    bns: tuple[nn.BatchNorm2d, ...], blocks: tuple[torch.Tensor, ...]
) -> None:
    """``running = (1 - momentum) running + momentum batch`` (unbiased variance), as BN does;
    ``momentum=None`` is BN's cumulative average, ``momentum = 1 / num_batches_tracked`` after
    the count's increment (what BN recalibration uses)."""
    with torch.no_grad():
        momenta = {bn.momentum for bn in bns}
        dtypes = {bn.running_mean.dtype for bn in bns}
        if len(momenta) == 1 and None not in momenta and dtypes == {torch.float32}:
            # the common case: two foreach launches
            running = [t for bn in bns for t in (bn.running_mean, bn.running_var)]
            batch = [b[r] for b in blocks for r in (MEAN, VAR_UNBIASED)]
            torch._foreach_lerp_(running, batch, float(momenta.pop()))
            torch._foreach_add_([bn.num_batches_tracked for bn in bns], 1)
            return
        for bn, b in zip(bns, blocks):
            bn.num_batches_tracked.add_(1)
            for buf, row in ((bn.running_mean, MEAN), (bn.running_var, VAR_UNBIASED)):
                if bn.momentum is None:  # a tensor weight: no host sync on the count
                    weight = bn.num_batches_tracked.to(buf.dtype).reciprocal()
                else:
                    weight = float(bn.momentum)
                buf.lerp_(b[row].to(buf.dtype), weight)


def mbconv_block_forward(
    block: nn.Module,
    x: torch.Tensor,
    se: nn.Module | None = None,
    *,
    let_weight: torch.Tensor | None = None,
    let_stride: int = 1,
) -> torch.Tensor:
    """``block.forward_with_se(x, se)`` through the kernels (check :func:`mbconv_supported`).

    ``let_weight``/``let_stride``: a LET stabilizer ``y = W_L x`` (stride ``s_L``) that runs right
    before the block, folded into the expand conv (``W1 W_L``, stride ``s_L * s1``; exact, and
    differentiable in both weights) when the block has no residual add; see
    :mod:`fastscarlet.kernels.let`. Under autocast the block runs in the autocast dtype.
    """
    dt = x.dtype
    if x.is_cuda and torch.is_autocast_enabled("cuda"):
        dt = torch.get_autocast_dtype("cuda")
    x = x.to(dt).contiguous(memory_format=torch.channels_last)
    # The kernels index every parameter densely (``co * E + e``): a strided view (a transposed or
    # sliced weight, a tied parameter) becomes a differentiable copy here.
    w1 = block.expand.weight.contiguous()
    es = block.expand.stride[0]
    if let_weight is not None:
        if block.residual:
            raise ValueError("a LET folds into the expand conv only when the block has no residual")
        w1 = torch.einsum("oc,ci->oi", _w2d(w1), _w2d(let_weight)).contiguous()[:, :, None, None]
        es = es * let_stride
    if se is not None:
        sw = (se.reduce.weight, se.reduce.bias, se.expand.weight, se.expand.bias)
        sw = tuple(t.contiguous() for t in sw)
        se_names = (module_act_name(se.act), module_act_name(se.gate))
    else:
        sw = (None, None, None, None)
        se_names = ("none", "none")
    bn1, bn2, bn3 = block.bn1, block.bn2, block.bn3
    cfg = (block.dw.stride[0], es, block.act_name, *se_names, bool(block.residual))
    eps = (float(bn1.eps), float(bn2.eps), float(bn3.eps))
    if block.training:
        out = MBConvTrainFunction.apply(
            x, w1, *_dense(bn1.weight, bn1.bias, block.dw.weight, bn2.weight, bn2.bias,
            block.project.weight, bn3.weight, bn3.bias), *sw, *cfg, *eps,
        )  # fmt: skip
        y, stats = out[0], out[1]
        _update_running_stats(
            (bn1, bn2, bn3), _stat_blocks(stats, block.hidden, block.out_channels)
        )
        return y
    return call_op(
        torch.ops.fastscarlet.mbconv_infer, _mbconv_infer_impl,
        x, w1, *_dense(bn1.weight, bn1.bias, bn1.running_mean, bn1.running_var, block.dw.weight,
        bn2.weight, bn2.bias, bn2.running_mean, bn2.running_var, block.project.weight,
        bn3.weight, bn3.bias, bn3.running_mean, bn3.running_var), *sw, *cfg, *eps,
    )  # fmt: skip


def mbconv_ref(
    block: nn.Module,
    x: torch.Tensor,
    se: nn.Module | None = None,
    *,
    let_weight: torch.Tensor | None = None,
    let_stride: int = 1,
) -> torch.Tensor:
    """The plain-PyTorch reference of :func:`mbconv_block_forward`, written out with
    ``torch.nn.functional`` (same math and buffer updates as ``MBConv.forward_with_se``)."""
    act = block.act_name
    w1, es = block.expand.weight, block.expand.stride[0]
    if let_weight is not None:
        x = F.conv2d(x, let_weight, None, let_stride)

    def bn(z: torch.Tensor, m: nn.BatchNorm2d) -> torch.Tensor:
        return F.batch_norm(
            z, m.running_mean, m.running_var, m.weight, m.bias, block.training,
            m.momentum if m.momentum is not None else 0.0, m.eps,
        )  # fmt: skip

    y = act_ref(bn(F.conv2d(x, w1, None, es), block.bn1), act)
    k = block.dw.kernel_size[0]
    y = act_ref(bn(F.conv2d(y, block.dw.weight, None, block.dw.stride, k // 2, 1, y.shape[1]),
                   block.bn2), act)  # fmt: skip
    if se is not None:
        s = y.mean((2, 3), keepdim=True)
        s = act_ref(F.conv2d(s, se.reduce.weight, se.reduce.bias), module_act_name(se.act))
        y = y * act_ref(F.conv2d(s, se.expand.weight, se.expand.bias), module_act_name(se.gate))
    y = bn(F.conv2d(y, block.project.weight), block.bn3)
    return x + y if block.residual else y


__all__ = [
    "KERNEL_ACTS",
    "MAX_FUSED_COUT",
    "MBConvTrainFunction",
    "dw_project_fwd",
    "mbconv_block_forward",
    "mbconv_infer",
    "mbconv_ref",
    "mbconv_supported",
    "mbconv_train_bwd",
    "mbconv_train_fwd",
    "project_bwd",
    "unsupported_reason",
]
