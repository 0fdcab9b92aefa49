"""The two Triton kernels that exist only for the MBConv block, and their host launchers.

Everything else the block launches is a building block (:mod:`.pointwise`, :mod:`.depthwise`,
:mod:`.batchnorm`); the order of the launches is :mod:`.mbconv_host`'s.

* :func:`_dw_project_fwd_kernel` (inference, no SE): ``y = BN3(act(BN2(dw(h1))) W3^T) (+ x)``,
  the depthwise tile kept in registers and fed straight to the project GEMM, so ``h2`` never
  exists. Launched by :func:`dw_project_fwd`.
* :func:`_project_bwd_kernel` (training backward): from ``dy`` back through BN3, the project conv,
  the SE gate and the activation into BN2's output, with the SE and BN2 sums in its epilogue and
  ``dW3`` from the same tiles. Launched by :func:`project_bwd`.

Why ``h1`` goes through HBM: the depthwise conv needs a ``(t*s + k - 1)^2`` halo of ``h1`` per
``t x t`` output tile, and a Triton program cannot shift a register tile; recomputing the expand
GEMM per tap costs ``k^2 * Cin`` tensor-core MACs per hidden value (Cin = 24, k = 7: 1176, i.e.
~1.5x the depthwise conv's own FP32 time on H100), and staging the halo through global scratch
needs a CTA barrier that Triton's pipeliner does not order. Recorded as the next step in
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .activations import act_code, act_fwd, act_grad
from .alignment import assume_multiple, channel_align
from .batchnorm import bn_eval_affine
from .depthwise import dw_out_size, taps_major
from .launch import cdiv, clamp_pow2, interpreting, launch, next_pow2, num_sms, split_for

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
# Host launchers.
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


__all__ = ["MAX_FUSED_COUT", "MAX_FUSED_WGRAD_COUT", "dw_project_fwd", "project_bwd"]
