"""1x1 convolutions on channels_last tensors as GEMMs, with fused prologues and epilogues.

A channels_last tensor ``[N, C, H, W]`` is a row-major matrix ``[N*H*W, C]``: one row per pixel.
A 1x1 convolution with weight ``W [O, C]`` is then ``out = in @ W^T``. Two kernels:

* :func:`_pw_conv_fwd_kernel`: ``out[p, o] = epi( sum_c pro(in)[row_in(p), c] * W[o, c] )``.
  Used for the expand and project convs (forward), for the input gradient of a 1x1 conv
  (``dx = dz @ W``: the same kernel with ``W`` read transposed), for the LET stabilizer and for the
  two tiny SE convolutions.
* :func:`_pw_conv_wgrad_kernel`: ``dW[o, c] = sum_p pro_a(A)[p, o] * pro_b(B)[row_b(p), c]``.

Prologues (applied to every loaded element of the reduction operand, in fp32, before the cast to
the dot dtype) carry the *previous* layer's training-mode BN, activation and SE gate, so that tensor
is never written normalised:

* ``PRO_AFFINE``: ``act(v * a[c] + b[c])`` (BN-train apply + activation; or a plain scale)
* ``PRO_BN_BWD``: ``a[c] * v + b[c] * z + c[c]`` (the BN backward ``dz = A du + B z + C``; ``z`` is a
  second tensor read with the same rows)
* ``GATE``: ``v * gate[n(p), c]`` (the SE gate, one value per image and channel)

Epilogues (on the fp32 accumulator): ``EPI_BIAS`` (+ bias[o]), ``EPI_BN_EVAL`` (BN with running
statistics, folded in-kernel from gamma/beta/mean/var: no host-side folding launches), an
activation, a residual add, and ``STATS``: per-channel sum and sum of squares of the result for a
training-mode BN that the *next* kernel applies. ``EPI_ACT_BWD`` turns the GEMM into a backward
step: with the accumulator ``z`` (an expand conv's raw output rebuilt from its input),
``du = g * act'(z * scale + shift)`` for a gradient ``g`` read at the output rows, and ``STATS``
then sums ``du`` and ``du * (z - mean) * rstd`` (the BN backward's two sums).

Strides: a 1x1 conv with stride ``s`` reads pixel ``(n, h*s, w*s)`` for output ``(n, h, w)``
(``IN_STRIDE``); its input gradient writes there (``OUT_STRIDE``, into a zeroed tensor).

Sizes (H100, bf16): an expand conv of the 56x56 stage moves ``P*(C+E)*2`` bytes for ``2*P*C*E``
FLOPs, about 24 FLOP/B for C=24, E=144: far below the 295 FLOP/B ridge, so these GEMMs are
bandwidth-bound and the tile only has to keep loads wide (128x128 outputs, K in chunks of 64).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.nn import functional as F

from .activations import act_code, act_fwd, act_grad
from .alignment import assume_multiple, channel_align
from .batchnorm import bn_eval_affine
from .launch import cdiv, clamp_pow2, interpreting, launch, num_sms, split_for

PRO_NONE, PRO_AFFINE, PRO_BN_BWD, PRO_BN_BWD_X, PRO_APPEND_ONE = 0, 1, 2, 3, 4
EPI_NONE, EPI_BIAS, EPI_BN_EVAL, EPI_AFFINE, EPI_ACT_BWD = 0, 1, 2, 3, 4


@triton.jit
def expand_tile(x_ptr, w_ptr, xrows, row_ok, k, k_ok, CIN, BLOCK_CIN: tl.constexpr,
                DOT_F32: tl.constexpr):  # fmt: skip
    """``z[i, j] = sum_c x[xrows[i], c] * W[k[j], c]`` (fp32): a tile of an expand conv's raw
    output rebuilt from its input ``x [rows, CIN]`` and weight ``W [E, CIN]`` (contiguous).

    The training backward rebuilds ``z1`` this way wherever it needs it instead of keeping the
    ``P x E`` tensor: ``CIN`` MACs per value on the tensor cores against ``2 E`` bytes of HBM."""
    z = tl.zeros((xrows.shape[0], k.shape[0]), dtype=tl.float32)
    for c0 in range(0, CIN, BLOCK_CIN):
        c = c0 + tl.arange(0, BLOCK_CIN)
        c_ok = c < CIN
        xv = tl.load(
            x_ptr + xrows[:, None] * CIN + c[None, :],
            mask=row_ok[:, None] & c_ok[None, :],
            other=0.0,
        )
        wv = tl.load(
            w_ptr + k[None, :] * CIN + c[:, None], mask=c_ok[:, None] & k_ok[None, :], other=0.0
        )
        if DOT_F32:
            z = tl.dot(xv.to(tl.float32), wv.to(tl.float32), z, input_precision="ieee")
        else:
            z = tl.dot(xv, wv.to(x_ptr.dtype.element_ty), z)
    return z


@triton.jit
def _rows(p, HWc, Wc, Hx, Wx, STRIDE: tl.constexpr, WIDE: tl.constexpr):
    """Row of pixel ``p`` of the compute grid ``[N, HWc // Wc, Wc]`` in a tensor ``[N, Hx, Wx]``
    sampled with ``STRIDE``. int32 unless ``WIDE`` (a tensor of >= 2**31 elements): 64-bit
    offsets double the registers of every address tile, which spilled the 64x128 epilogue."""
    if WIDE:
        p = p.to(tl.int64)
    if STRIDE == 1:
        r = p
    else:
        n = p // HWc
        rem = p - n * HWc
        h = rem // Wc
        w = rem - h * Wc
        r = (n * Hx + h * STRIDE) * Wx + w * STRIDE
    return r


@triton.jit
def _pw_conv_fwd_kernel(
    a_ptr, z_ptr, zw_ptr, w_ptr, out_ptr, res_ptr,
    pa_ptr, pb_ptr, pc_ptr, gate_ptr,
    ea_ptr, eb_ptr, ec_ptr, ed_ptr, stats_ptr,
    P, K, NOUT, HWc, Wc, Hin, Win, Hout, Wout, stride_wn, stride_wk, eps, CIN_Z,
    PRO: tl.constexpr, PRO_ACT: tl.constexpr, GATE: tl.constexpr, BLOCK_CZ: tl.constexpr,
    EPI: tl.constexpr, EPI_ACT: tl.constexpr, RESIDUAL: tl.constexpr, STATS: tl.constexpr,
    IN_STRIDE: tl.constexpr, OUT_STRIDE: tl.constexpr, DOT_F32: tl.constexpr, WIDE: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    ALIGN_K: tl.constexpr, ALIGN_N: tl.constexpr, ALIGN_Z: tl.constexpr,
    ALIGN_WN: tl.constexpr, ALIGN_WK: tl.constexpr,
):  # fmt: skip
    """One program: output columns ``[pid_n*BLOCK_N, +BLOCK_N)`` of the pixel tiles
    ``pid_p, pid_p + num_programs(0), ...`` (a grid-stride loop, so BN statistics are summed in
    registers and reach memory with one atomic per program and channel). Each ``ALIGN_*``
    divides its count (:mod:`.alignment`)."""
    K = assume_multiple(K, ALIGN_K)
    NOUT = assume_multiple(NOUT, ALIGN_N)
    CIN_Z = assume_multiple(CIN_Z, ALIGN_Z)
    stride_wn = assume_multiple(stride_wn, ALIGN_WN)
    stride_wk = assume_multiple(stride_wk, ALIGN_WK)
    pid_p = tl.program_id(0)
    pid_n = tl.program_id(1)
    nprog_p = tl.num_programs(0)
    o = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    o_ok = o < NOUT
    kr = tl.arange(0, BLOCK_K)
    if EPI == 1:
        e_shift = tl.load(ea_ptr + o, mask=o_ok, other=0.0).to(tl.float32)
    if EPI == 3 or EPI == 4:
        e_scale = tl.load(ea_ptr + o, mask=o_ok, other=0.0)
        e_shift = tl.load(eb_ptr + o, mask=o_ok, other=0.0)
    if EPI == 4:
        e_mean = tl.load(ec_ptr + o, mask=o_ok, other=0.0)
        e_rstd = tl.load(ed_ptr + o, mask=o_ok, other=0.0)
    if EPI == 2:
        e_scale, e_shift = bn_eval_affine(ea_ptr, eb_ptr, ec_ptr, ed_ptr, o, o_ok, eps)
    if STATS:
        s_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
        q_acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    num_tiles = tl.cdiv(P, BLOCK_P)
    for tile in range(pid_p, num_tiles, nprog_p):
        p = tile * BLOCK_P + tl.arange(0, BLOCK_P)
        p_ok = p < P
        rin = _rows(p, HWc, Wc, Hin, Win, IN_STRIDE, WIDE)
        rout = _rows(p, HWc, Wc, Hout, Wout, OUT_STRIDE, WIDE)
        if GATE:
            img = p // HWc
        acc = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + kr
            k_ok = k < K
            m = p_ok[:, None] & k_ok[None, :]
            v = tl.load(a_ptr + rin[:, None] * K + k[None, :], mask=m, other=0.0)
            if PRO == 1:
                sa = tl.load(pa_ptr + k, mask=k_ok, other=0.0)
                sb = tl.load(pb_ptr + k, mask=k_ok, other=0.0)
                v = act_fwd(v.to(tl.float32) * sa[None, :] + sb[None, :], PRO_ACT)
            if PRO == 2:
                zz = tl.load(z_ptr + rin[:, None] * K + k[None, :], mask=m, other=0.0)
                ca = tl.load(pa_ptr + k, mask=k_ok, other=0.0)
                cb = tl.load(pb_ptr + k, mask=k_ok, other=0.0)
                cc = tl.load(pc_ptr + k, mask=k_ok, other=0.0)
                v = v.to(tl.float32) * ca[None, :] + zz.to(tl.float32) * cb[None, :] + cc[None, :]
            if PRO == 3:  # as 2, with z = x[rout] @ W_z^T rebuilt (x: z_ptr, W_z: zw_ptr)
                zz = expand_tile(z_ptr, zw_ptr, rout, p_ok, k, k_ok, CIN_Z, BLOCK_CZ, DOT_F32)
                ca = tl.load(pa_ptr + k, mask=k_ok, other=0.0)
                cb = tl.load(pb_ptr + k, mask=k_ok, other=0.0)
                cc = tl.load(pc_ptr + k, mask=k_ok, other=0.0)
                v = v.to(tl.float32) * ca[None, :] + zz * cb[None, :] + cc[None, :]
            if PRO != 0:
                v = tl.where(m, v, 0.0)  # padding columns/rows must stay exactly zero
            if GATE:  # masked entries are 0 * 0 already
                g = tl.load(gate_ptr + img[:, None] * K + k[None, :], mask=m, other=0.0)
                v = v.to(tl.float32) * g
            wt = tl.load(
                w_ptr + o[None, :] * stride_wn + k[:, None] * stride_wk,
                mask=k_ok[:, None] & o_ok[None, :],
                other=0.0,
            )
            if DOT_F32:
                acc = tl.dot(v.to(tl.float32), wt.to(tl.float32), acc, input_precision="ieee")
            else:
                acc = tl.dot(v.to(a_ptr.dtype.element_ty), wt.to(a_ptr.dtype.element_ty), acc)
        if EPI == 1:
            acc = acc + e_shift[None, :]
        om = p_ok[:, None] & o_ok[None, :]
        if EPI == 4:  # du = g * act'(BN(z)); g read at the output rows (res_ptr; may be out_ptr)
            g = tl.load(res_ptr + rout[:, None] * NOUT + o[None, :], mask=om, other=0.0)
            xhat = (acc - e_mean[None, :]) * e_rstd[None, :]
            acc = g.to(tl.float32) * act_grad(acc * e_scale[None, :] + e_shift[None, :], EPI_ACT)
        else:
            if EPI == 2 or EPI == 3:
                acc = acc * e_scale[None, :] + e_shift[None, :]
            acc = act_fwd(acc, EPI_ACT)
        if RESIDUAL:
            acc += tl.load(res_ptr + rout[:, None] * NOUT + o[None, :], mask=om, other=0.0).to(
                tl.float32
            )
        tl.store(out_ptr + rout[:, None] * NOUT + o[None, :], acc, mask=om)
        if STATS:
            accm = tl.where(om, acc, 0.0)
            s_acc += tl.sum(accm, axis=0)
            if EPI == 4:
                q_acc += tl.sum(accm * xhat, axis=0)
            else:
                q_acc += tl.sum(accm * accm, axis=0)
    if STATS:
        tl.atomic_add(stats_ptr + o, s_acc, mask=o_ok)
        tl.atomic_add(stats_ptr + NOUT + o, q_acc, mask=o_ok)


@triton.jit
def _pw_conv_wgrad_kernel(
    a_ptr, z_ptr, zw_ptr, pa_ptr, pb_ptr, pc_ptr,
    b_ptr, qa_ptr, qb_ptr, gate_ptr, dw_ptr,
    P, NO, C, HWc, Wc, Ha, Wa, Hb, Wb, stride_a,
    PRO_A: tl.constexpr, PRO_B: tl.constexpr, PRO_B_ACT: tl.constexpr, GATE_B: tl.constexpr,
    A_STRIDE: tl.constexpr, B_STRIDE: tl.constexpr, DOT_F32: tl.constexpr, WIDE: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_CZ: tl.constexpr,
    ALIGN_O: tl.constexpr, ALIGN_C: tl.constexpr, ALIGN_A: tl.constexpr,
):  # fmt: skip
    """``dW[o, c] += sum_p A'[p, o] * B'[p, c]`` over the pixel tiles ``pid_s, pid_s + split, ...``;
    the fp32 ``dW`` is zeroed by the host and summed into with one atomic per program.

    ``A'``: ``A`` (rows of ``stride_a`` elements, sampled with ``A_STRIDE``); ``PRO_A == 2``:
    ``ca A + cb z + cc``; ``PRO_A == 3``: the same with ``z = B @ W_z^T`` rebuilt from the B
    operand (the expand input) and ``W_z``; ``PRO_A == 4``: ``[A, 1]`` (column ``NO - 1`` is
    all ones, so ``dW`` gets ``A^T B`` and the column sums of ``B``: a Gram matrix and a mean).
    Each ``ALIGN_*`` divides its count (:mod:`.alignment`)."""
    NO = assume_multiple(NO, ALIGN_O)
    C = assume_multiple(C, ALIGN_C)
    stride_a = assume_multiple(stride_a, ALIGN_A)
    pid_o = tl.program_id(0)
    pid_c = tl.program_id(1)
    pid_s = tl.program_id(2)
    nsplit = tl.num_programs(2)
    o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    o_ok = o < NO
    c_ok = c < C
    if PRO_A == 2 or PRO_A == 3:
        ca = tl.load(pa_ptr + o, mask=o_ok, other=0.0)
        cb = tl.load(pb_ptr + o, mask=o_ok, other=0.0)
        cc = tl.load(pc_ptr + o, mask=o_ok, other=0.0)
    a_cols = o_ok
    if PRO_A == 4:  # NO - 1 == stride_a: the aligned count keeps the mask vectorisable
        a_cols = o < stride_a
    if PRO_B == 1:
        sa = tl.load(qa_ptr + c, mask=c_ok, other=0.0)
        sb = tl.load(qb_ptr + c, mask=c_ok, other=0.0)
    acc = tl.zeros([BLOCK_O, BLOCK_C], dtype=tl.float32)
    for tile in range(pid_s, tl.cdiv(P, BLOCK_P), nsplit):
        p = tile * BLOCK_P + tl.arange(0, BLOCK_P)
        p_ok = p < P
        ra = _rows(p, HWc, Wc, Ha, Wa, A_STRIDE, WIDE)
        rb = _rows(p, HWc, Wc, Hb, Wb, B_STRIDE, WIDE)
        ma = p_ok[:, None] & a_cols[None, :]
        av = tl.load(a_ptr + ra[:, None] * stride_a + o[None, :], mask=ma, other=0.0)
        av = av.to(tl.float32)
        if PRO_A == 2:
            zz = tl.load(z_ptr + ra[:, None] * NO + o[None, :], mask=ma, other=0.0).to(tl.float32)
            av = tl.where(ma, av * ca[None, :] + zz * cb[None, :] + cc[None, :], 0.0)
        if PRO_A == 3:
            zz = expand_tile(b_ptr, zw_ptr, rb, p_ok, o, o_ok, C, BLOCK_CZ, DOT_F32)
            av = tl.where(ma, av * ca[None, :] + zz * cb[None, :] + cc[None, :], 0.0)
        if PRO_A == 4:
            av = tl.where(p_ok[:, None] & (o == NO - 1)[None, :], 1.0, av)
        mb = p_ok[:, None] & c_ok[None, :]
        bv = tl.load(b_ptr + rb[:, None] * C + c[None, :], mask=mb, other=0.0).to(tl.float32)
        if PRO_B == 1:
            bv = act_fwd(bv * sa[None, :] + sb[None, :], PRO_B_ACT)
        if GATE_B:
            img = p // HWc
            bv = bv * tl.load(gate_ptr + img[:, None] * C + c[None, :], mask=mb, other=0.0)
        if PRO_B != 0 or GATE_B:
            bv = tl.where(mb, bv, 0.0)
        if DOT_F32:
            acc = tl.dot(tl.trans(av), bv, acc, input_precision="ieee")
        else:
            acc = tl.dot(
                tl.trans(av.to(a_ptr.dtype.element_ty)), bv.to(a_ptr.dtype.element_ty), acc
            )
    tl.atomic_add(dw_ptr + o[:, None] * C + c[None, :], acc, mask=o_ok[:, None] & c_ok[None, :])


# ---------------------------------------------------------------------------------------------
# Host launchers. Tensors are 2-D row views ``[rows, channels]`` of channels_last activations.
# ---------------------------------------------------------------------------------------------


def _wide(*tensors: torch.Tensor | None) -> bool:
    """Whether any tensor needs 64-bit element offsets."""
    return any(t is not None and t.numel() >= 2**31 for t in tensors)


def pw_conv_fwd(
    a: torch.Tensor,
    weight: torch.Tensor,
    out: torch.Tensor,
    *,
    geom: tuple[int, int, int, int, int] | None = None,
    in_stride: int = 1,
    out_stride: int = 1,
    out_hw: tuple[int, int] | None = None,
    weight_transposed: bool = False,
    pro: int = PRO_NONE,
    pro_act: str = "none",
    pro_vecs: tuple[torch.Tensor, ...] = (),
    z: torch.Tensor | None = None,
    z_weight: torch.Tensor | None = None,
    gate: torch.Tensor | None = None,
    epi: int = EPI_NONE,
    epi_vecs: tuple[torch.Tensor, ...] = (),
    eps: float = 0.0,
    epi_act: str = "none",
    residual: torch.Tensor | None = None,
    stats: torch.Tensor | None = None,
    epi_grad: torch.Tensor | None = None,
) -> torch.Tensor:
    """Launch :func:`_pw_conv_fwd_kernel`.

    Args:
        a: ``[rows_in, K]`` input rows (any float dtype; it is also the dot dtype).
        weight: ``[NOUT, K]`` (or ``[K, NOUT]`` storage with ``weight_transposed``) in any float
            dtype, cast to the dot dtype in-kernel (no host-side copies).
        out: ``[rows_out, NOUT]`` output rows.
        geom: ``(N, Hc, Wc, Hin, Win)``: the compute grid ``[N, Hc, Wc]`` (one row per output
            pixel) and the input's spatial size; needed with a stride or a gate. ``None``: one
            image row per pixel, no stride.
        out_hw: the output tensor's spatial size when ``out_stride > 1``.
        pro_vecs: ``(scale, shift)`` for ``PRO_AFFINE``; ``(A, B, C)`` for ``PRO_BN_BWD`` (``z``
            the second tensor, same rows as ``a``) and ``PRO_BN_BWD_X`` (``z = x @ z_weight^T``
            rebuilt from ``x`` = the ``z`` argument ``[rows_out, Cin]``, read at the output rows).
        epi_vecs: ``(bias,)`` for ``EPI_BIAS``; ``(gamma, beta, running_mean, running_var)`` for
            ``EPI_BN_EVAL``; ``(scale, shift)`` for ``EPI_AFFINE``; ``(scale, shift, mean, rstd)``
            for ``EPI_ACT_BWD``, which with ``epi_grad = g [rows_out, NOUT]`` (may be ``out``: in
            place) writes ``du = g * epi_act'(acc * scale + shift)`` instead of an activation.
        stats: fp32 ``[2, NOUT]``, zeroed: receives sum and sum of squares of the output (with
            ``EPI_ACT_BWD``: ``sum du`` and ``sum du * (acc - mean) * rstd``).
    """
    if (epi == EPI_ACT_BWD) != (epi_grad is not None):
        raise ValueError("epi_grad is the gradient input of EPI_ACT_BWD, and only of it")
    if epi_grad is not None and residual is not None:
        raise ValueError("EPI_ACT_BWD has no residual add")
    rows_c = a.shape[0] if geom is None else geom[0] * geom[1] * geom[2]
    K = a.shape[1]
    NOUT = out.shape[1]
    if geom is None:
        hc, wc, hin, win = 1, 1, 1, 1
    else:
        _, hc, wc, hin, win = geom
    hout, wout = out_hw if out_hw is not None else (hc, wc)
    if weight_transposed:  # storage [K, NOUT]
        stride_wn, stride_wk = weight.stride(1), weight.stride(0)
    else:
        stride_wn, stride_wk = weight.stride(0), weight.stride(1)
    cin_z = z.shape[1] if pro == PRO_BN_BWD_X and z is not None else 1
    dev = a.device
    if interpreting(dev):
        bp, bn, bk, warps, stages = 16, 16, 16, 4, 1
    else:
        bp, bn, bk = 64, clamp_pow2(NOUT, 16, 128), clamp_pow2(K, 16, 32)
        warps = 8 if bn >= 128 or pro != PRO_NONE or gate is not None else 4
        stages = 3 if bk < K else 2
    tiles = cdiv(rows_c, bp)
    n_tiles = cdiv(NOUT, bn)
    progs = split_for(tiles, n_tiles, 8 * num_sms(dev) if not interpreting(dev) else 2)
    if stats is None:
        progs = tiles
    vec = (*pro_vecs, a, a, a)[:3]
    evec = (*epi_vecs, a, a, a, a)[:4]
    launch(
        _pw_conv_fwd_kernel,
        (progs, n_tiles),
        a, z if z is not None else a, z_weight if z_weight is not None else a, weight, out,
        residual if residual is not None else epi_grad if epi_grad is not None else a,
        vec[0], vec[1], vec[2], gate if gate is not None else a,
        evec[0], evec[1], evec[2], evec[3], stats if stats is not None else a,
        rows_c, K, NOUT, hc * wc, wc, hin, win, hout, wout, stride_wn, stride_wk, float(eps),
        cin_z,
        PRO=pro, PRO_ACT=act_code(pro_act), GATE=gate is not None,
        BLOCK_CZ=clamp_pow2(cin_z, 16, 32),
        EPI=epi, EPI_ACT=act_code(epi_act), RESIDUAL=residual is not None,
        STATS=stats is not None, IN_STRIDE=in_stride, OUT_STRIDE=out_stride,
        DOT_F32=a.dtype == torch.float32, WIDE=_wide(a, out, z, residual, epi_grad),
        BLOCK_P=bp, BLOCK_N=bn, BLOCK_K=bk, ALIGN_K=channel_align(K), ALIGN_N=channel_align(NOUT),
        ALIGN_Z=channel_align(cin_z), ALIGN_WN=channel_align(stride_wn),
        ALIGN_WK=channel_align(stride_wk), num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return out


def pw_conv_wgrad(
    a: torch.Tensor,
    b: torch.Tensor,
    dw: torch.Tensor,
    *,
    geom: tuple[int, int, int, int, int] | None = None,
    b_stride: int = 1,
    a_stride: int = 1,
    a_hw: tuple[int, int] | None = None,
    pro_a_vecs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    z: torch.Tensor | None = None,
    z_weight: torch.Tensor | None = None,
    append_one: bool = False,
    pro_b_vecs: tuple[torch.Tensor, torch.Tensor] | None = None,
    pro_b_act: str = "none",
    gate: torch.Tensor | None = None,
) -> torch.Tensor:
    """Launch :func:`_pw_conv_wgrad_kernel`: ``dw[NO, C] += A'^T B'`` (``dw`` fp32, zeroed).

    Args:
        a: ``[rows_a, O]`` rows of the output gradient, on the compute grid ``geom`` (or sampled
            with ``a_stride`` from a tensor of spatial size ``a_hw``). With
            ``pro_a_vecs = (A, B, C)``: ``A a + B z + C``, where ``z`` is the given tensor (same
            rows as ``a``) or, with ``z_weight``, ``b @ z_weight^T`` rebuilt per tile.
            ``append_one``: ``A' = [a, 1]``, so ``dw`` is ``[O + 1, C]`` with the column sums of
            ``B'`` in its last row.
        b: ``[rows_b, C]`` input rows, sampled with ``b_stride`` on the grid ``geom`` (as in
            :func:`pw_conv_fwd`); ``pro_b_vecs = (scale, shift)`` applies ``act(b*scale+shift)``;
            ``gate`` ``[N, C]`` multiplies per image.
    """
    O = a.shape[1]  # noqa: E741
    NO = O + 1 if append_one else O
    C = b.shape[1]
    if geom is None:
        P, hc, wc, hb, wb = a.shape[0], 1, 1, 1, 1
    else:
        n_img, hc, wc, hb, wb = geom
        P = n_img * hc * wc
    ha, wa = a_hw if a_hw is not None else (hc, wc)
    dev = a.device
    if interpreting(dev):
        bp, bo, bc, warps = 16, 16, 16, 4
    else:
        bp, bo, bc = 64, clamp_pow2(NO, 16, 64), clamp_pow2(C, 16, 64)
        warps = 8 if z_weight is not None else 4
    grid_oc = cdiv(NO, bo) * cdiv(C, bc)
    split = split_for(cdiv(P, bp), grid_oc, 4 * num_sms(dev) if not interpreting(dev) else 2)
    pa = pro_a_vecs if pro_a_vecs is not None else (a, a, a)
    pb = pro_b_vecs if pro_b_vecs is not None else (a, a)
    if append_one:
        pro_a = PRO_APPEND_ONE
    elif pro_a_vecs is None:
        pro_a = PRO_NONE
    else:
        pro_a = PRO_BN_BWD_X if z_weight is not None else PRO_BN_BWD
    launch(
        _pw_conv_wgrad_kernel,
        (cdiv(NO, bo), cdiv(C, bc), split),
        a, z if z is not None else a, z_weight if z_weight is not None else a,
        pa[0], pa[1], pa[2], b, pb[0], pb[1], gate if gate is not None else a, dw,
        P, NO, C, hc * wc, wc, ha, wa, hb, wb, O,
        PRO_A=pro_a, PRO_B=PRO_AFFINE if pro_b_vecs is not None else PRO_NONE,
        PRO_B_ACT=act_code(pro_b_act), GATE_B=gate is not None, A_STRIDE=a_stride,
        B_STRIDE=b_stride, DOT_F32=a.dtype == torch.float32, WIDE=_wide(a, b, z),
        BLOCK_P=bp, BLOCK_O=bo, BLOCK_C=bc, BLOCK_CZ=clamp_pow2(C, 16, 32),
        ALIGN_O=channel_align(NO), ALIGN_C=channel_align(C), ALIGN_A=channel_align(O),
        num_warps=warps, num_stages=2,
    )  # fmt: skip
    return dw


def conv1x1_ref(x: torch.Tensor, weight: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """The reference: ``F.conv2d`` with a ``[O, C, 1, 1]`` weight (``x``: ``[N, C, H, W]``)."""
    return F.conv2d(x, weight, None, stride)


__all__ = [
    "EPI_ACT_BWD",
    "EPI_AFFINE",
    "EPI_BIAS",
    "EPI_BN_EVAL",
    "EPI_NONE",
    "PRO_AFFINE",
    "PRO_APPEND_ONE",
    "PRO_BN_BWD",
    "PRO_BN_BWD_X",
    "PRO_NONE",
    "conv1x1_ref",
    "expand_tile",
    "pw_conv_fwd",
    "pw_conv_wgrad",
]
