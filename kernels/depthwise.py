"""Depthwise kxk convolution (padding k//2, stride 1 or 2) on channels_last tensors.

``out[n, ho, wo, c] = sum_{i,j < k} in[n, ho*s + i - k//2, wo*s + j - k//2, c] * w[c, i, j]``,
zero outside the image. ``Ho = (H - 1) // s + 1`` (odd k).

* :func:`_dw_conv_fwd_kernel`: output-stationary. Optional prologue ``act(v * a[c] + b[c])`` on
  every tap (the producer's training-mode BN + activation, *then* the zero padding, as in PyTorch
  where the conv pads the activated tensor); it costs ~7 ALU ops per tap, so the training block
  applies BN1 in a pass of its own instead (see :mod:`fastscarlet.kernels.mbconv`). Epilogue: BN-eval affine folded in-kernel, activation, and any
  of: store, BN statistics (sum, sum of squares per channel), SE pooling (per image and channel).
* :func:`_dw_sweep_fwd_kernel`: the same contract computed by a column sweep (``COLS`` output
  columns in registers, each input column loaded once per kernel row and added into every output
  column it feeds): about half the instructions per output, twice the registers; chosen by
  :func:`fwd_mode` (``FASTSCARLET_DW_FWD``), untimed until a GPU compares the two.
* :func:`_dw_conv_bwd_kernel`: input-stationary, so the input gradient needs no atomics:
  ``dx[n, hi, wi, c] = sum_{i,j} dz[n, (hi + p - i)/s, (wi + p - j)/s, c] * w[c, i, j]`` over the
  taps where the division is exact. With s = 2 a program owns one parity class
  ``(hi % 2, wi % 2)``, for which the exactness of each tap is a scalar test: it runs only the
  ~k^2/4 taps that contribute instead of masking 3/4 of every load.
* :func:`_dw_wgrad_kernel`: the weight gradient ``dw[c, i, j] = sum dz * a_in``, each kernel
  row's taps summed elementwise over the program's images and reduced once per row
  (``FASTSCARLET_DW_WGRAD=fused`` computes it inside :func:`_dw_conv_bwd_kernel` instead, one
  reduction per tap and image; :func:`wgrad_mode`).

Tiles are ``TILE_H x TILE_W`` pixels of one image (8x8 on a GPU: the 56x56 and 112x112 stages
split exactly, the halo of a 7x7 kernel is 14x14 = 3x the tile and stays in L1/L2) by
``BLOCK_C`` channels (32 or 16, :func:`channel_block`). A program may loop over several images
(``IMGS``) so that statistics reach memory with few atomics.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch.nn import functional as F

from .activations import act_code, act_fwd, act_grad
from .alignment import assume_multiple, channel_align
from .batchnorm import bn_eval_affine
from .launch import cdiv, interpreting, launch, next_pow2, num_sms, split_for
from .pointwise import expand_tile

EPI_NONE, EPI_BN_EVAL = 0, 2


@triton.jit
def _dw_conv_fwd_kernel(
    x_ptr, w_ptr, out_ptr, pa_ptr, pb_ptr,
    ea_ptr, eb_ptr, ec_ptr, ed_ptr, stats_ptr, pool_ptr,
    N, C, H, W, Ho, Wo, IMG_IN, IMG_OUT, TILES_W, IMGS, eps, pool_scale,
    KSIZE: tl.constexpr, STRIDE: tl.constexpr, PRO: tl.constexpr, PRO_ACT: tl.constexpr,
    EPI: tl.constexpr, EPI_ACT: tl.constexpr,
    STORE: tl.constexpr, STATS: tl.constexpr, POOL: tl.constexpr,
    TILE_H: tl.constexpr, TILE_W: tl.constexpr, BLOCK_C: tl.constexpr, ALIGN: tl.constexpr,
):  # fmt: skip
    """Output tile ``TILE_H x TILE_W`` x ``BLOCK_C`` channels of images ``pid_g*IMGS ...``.

    Addressing: one 64-bit scalar base per image (``IMG_IN = H*W*C`` elements) plus int32 offsets
    inside it; tap ``(i, j)`` is the tile's centre offsets plus the scalar
    ``((i - p)*W + (j - p))*C``. The kernel rows are a runtime loop and the columns unrolled, so
    the compiler keeps only k column masks live instead of hoisting k^2 masks and offsets out of
    the image loop (which spilled at k = 7). ``ALIGN`` divides ``C`` (:mod:`.alignment`)."""
    C = assume_multiple(C, ALIGN)
    IMG_IN = assume_multiple(IMG_IN, ALIGN)
    IMG_OUT = assume_multiple(IMG_OUT, ALIGN)
    pid_t = tl.program_id(0)
    pid_g = tl.program_id(1)
    pid_c = tl.program_id(2)
    PAD: tl.constexpr = KSIZE // 2
    th = pid_t // TILES_W
    tw = pid_t % TILES_W
    r = tl.arange(0, TILE_H * TILE_W)
    ho = th * TILE_H + r // TILE_W
    wo = tw * TILE_W + r % TILE_W
    row_ok = (ho < Ho) & (wo < Wo)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    centre = ((ho * STRIDE) * W + wo * STRIDE) * C
    in_offs = centre[:, None] + c[None, :]
    out_offs = ((ho * Wo + wo) * C)[:, None] + c[None, :]
    if PRO == 1:
        sa = tl.load(pa_ptr + c, mask=c_ok, other=0.0)
        sb = tl.load(pb_ptr + c, mask=c_ok, other=0.0)
    if EPI == 2:
        e_scale, e_shift = bn_eval_affine(ea_ptr, eb_ptr, ec_ptr, ed_ptr, c, c_ok, eps)
    if STATS:  # summed elementwise over the images, reduced over the pixels once at the end
        s_acc = tl.zeros([TILE_H * TILE_W, BLOCK_C], dtype=tl.float32)
        q_acc = tl.zeros([TILE_H * TILE_W, BLOCK_C], dtype=tl.float32)
    om = row_ok[:, None] & c_ok[None, :]
    n0 = pid_g * IMGS
    for n in range(n0, tl.minimum(n0 + IMGS, N)):
        xb = x_ptr + tl.cast(n, tl.int64) * IMG_IN
        acc = tl.zeros([TILE_H * TILE_W, BLOCK_C], dtype=tl.float32)
        for i in range(KSIZE):
            hi = ho * STRIDE + (i - PAD)
            h_ok = row_ok & (hi >= 0) & (hi < H)
            for j in tl.static_range(KSIZE):
                wi = wo * STRIDE + (j - PAD)
                m = (h_ok & (wi >= 0) & (wi < W))[:, None] & c_ok[None, :]
                v = tl.load(xb + ((i - PAD) * W + (j - PAD)) * C + in_offs, mask=m, other=0.0)
                v = v.to(tl.float32)
                if PRO == 1:
                    v = tl.where(m, act_fwd(v * sa[None, :] + sb[None, :], PRO_ACT), 0.0)
                wv = tl.load(w_ptr + (i * KSIZE + j) * C + c, mask=c_ok, other=0.0)
                acc += v * wv.to(tl.float32)[None, :]
        if EPI == 2:
            acc = acc * e_scale[None, :] + e_shift[None, :]
        acc = act_fwd(acc, EPI_ACT)
        if STORE:
            tl.store(out_ptr + tl.cast(n, tl.int64) * IMG_OUT + out_offs, acc, mask=om)
        if STATS or POOL:
            accm = tl.where(om, acc, 0.0)
            if STATS:
                s_acc += accm
                q_acc += accm * accm
            if POOL:
                col = tl.sum(accm, axis=0)
                tl.atomic_add(pool_ptr + (n * C + c), col * pool_scale, mask=c_ok)
    if STATS:
        tl.atomic_add(stats_ptr + c, tl.sum(s_acc, axis=0), mask=c_ok)
        tl.atomic_add(stats_ptr + C + c, tl.sum(q_acc, axis=0), mask=c_ok)


@triton.jit
def _bump(accs, q: tl.constexpr, x):
    """``accs[q] += x`` for a tuple of register tiles (``q`` known at compile time)."""
    return accs[:q] + (accs[q] + x,) + accs[q + 1 :]


@triton.jit
def _dw_sweep_fwd_kernel(
    x_ptr, w_ptr, out_ptr, pa_ptr, pb_ptr,
    ea_ptr, eb_ptr, ec_ptr, ed_ptr, stats_ptr, pool_ptr,
    N, C, H, W, Ho, Wo, IMG_IN, IMG_OUT, TILES_W, IMGS, eps, pool_scale,
    KSIZE: tl.constexpr, STRIDE: tl.constexpr, PRO: tl.constexpr, PRO_ACT: tl.constexpr,
    EPI: tl.constexpr, EPI_ACT: tl.constexpr,
    STORE: tl.constexpr, STATS: tl.constexpr, POOL: tl.constexpr,
    ROWS: tl.constexpr, COLS: tl.constexpr, BLOCK_C: tl.constexpr, ALIGN: tl.constexpr,
):  # fmt: skip
    """:func:`_dw_conv_fwd_kernel`'s contract (same arguments and flags), computed by a column
    sweep: the tile is ``ROWS`` output rows (one tensor dimension, spread over the threads) by
    ``COLS`` output columns held as ``COLS`` separate register tiles, by ``BLOCK_C`` channels.

    For each kernel row ``i`` the program loads that row's ``k`` tap weights once, then walks the
    ``(COLS - 1) * s + k`` input columns the tile's outputs read: each input column is loaded and
    converted to fp32 once and added, with each tap weight, into every output column it feeds
    (the pairs are resolved at compile time). The tile kernel instead loads and converts its input
    once per tap, ``k`` times per kernel row; for Scarlet-A's layer 4 (k = 7, bf16) the sm_90
    SASS of one kernel row has 795 instructions for 448 FMAs here against 467 for 112 there.
    The price is registers: ``COLS`` accumulators and ``k`` weight vectors per thread."""
    C = assume_multiple(C, ALIGN)
    IMG_IN = assume_multiple(IMG_IN, ALIGN)
    IMG_OUT = assume_multiple(IMG_OUT, ALIGN)
    pid_t = tl.program_id(0)
    pid_g = tl.program_id(1)
    pid_c = tl.program_id(2)
    PAD: tl.constexpr = KSIZE // 2
    SPAN: tl.constexpr = (COLS - 1) * STRIDE + KSIZE  # input columns one tile row reads
    ho = (pid_t // TILES_W) * ROWS + tl.arange(0, ROWS)
    wo0 = (pid_t % TILES_W) * COLS
    row_ok = ho < Ho
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    c2 = c[None, :]
    c2_ok = c2 < C
    if PRO == 1:
        sa = tl.load(pa_ptr + c2, mask=c2_ok, other=0.0)
        sb = tl.load(pb_ptr + c2, mask=c2_ok, other=0.0)
    if EPI == 2:
        e_scale, e_shift = bn_eval_affine(ea_ptr, eb_ptr, ec_ptr, ed_ptr, c2, c2_ok, eps)
    if STATS:  # summed elementwise over columns and images, reduced over the rows once
        s_acc = tl.zeros([ROWS, BLOCK_C], dtype=tl.float32)
        q_acc = tl.zeros([ROWS, BLOCK_C], dtype=tl.float32)
    out_rows = (ho * Wo * C)[:, None] + c[None, :]
    n0 = pid_g * IMGS
    for n in range(n0, tl.minimum(n0 + IMGS, N)):
        xb = x_ptr + tl.cast(n, tl.int64) * IMG_IN
        accs = (tl.zeros([ROWS, BLOCK_C], dtype=tl.float32),) * COLS
        for i in range(KSIZE):
            hi = ho * STRIDE + (i - PAD)
            hm = (row_ok & (hi >= 0) & (hi < H))[:, None] & c_ok[None, :]
            in_rows = (hi * W * C)[:, None] + c[None, :]
            taps = ()
            for j in tl.static_range(KSIZE):  # loaded as [1, BLOCK_C]: no layout conversion
                wv = tl.load(w_ptr + (i * KSIZE + j) * C + c2, mask=c2_ok, other=0.0)
                taps = taps + (wv.to(tl.float32),)
            for t in tl.static_range(SPAN):
                wi = wo0 * STRIDE + (t - PAD)
                m = hm & (wi >= 0) & (wi < W)
                v = tl.load(xb + in_rows + wi * C, mask=m, other=0.0).to(tl.float32)
                if PRO == 1:
                    v = tl.where(m, act_fwd(v * sa + sb, PRO_ACT), 0.0)
                for q in tl.static_range(COLS):  # output column q reads it through tap t - q s
                    if (t - q * STRIDE >= 0) & (t - q * STRIDE < KSIZE):
                        accs = _bump(accs, q, v * taps[t - q * STRIDE])
        if POOL:
            pooled = tl.zeros([ROWS, BLOCK_C], dtype=tl.float32)
        ob = out_ptr + tl.cast(n, tl.int64) * IMG_OUT
        for q in tl.static_range(COLS):
            acc = accs[q]
            if EPI == 2:
                acc = acc * e_scale + e_shift
            acc = act_fwd(acc, EPI_ACT)
            om = (row_ok & (wo0 + q < Wo))[:, None] & c2_ok
            if STORE:
                tl.store(ob + out_rows + (wo0 + q) * C, acc, mask=om)
            if STATS or POOL:
                accm = tl.where(om, acc, 0.0)
                if STATS:
                    s_acc += accm
                    q_acc += accm * accm
                if POOL:
                    pooled += accm
        if POOL:
            tl.atomic_add(pool_ptr + (n * C + c), tl.sum(pooled, axis=0) * pool_scale, mask=c_ok)
    if STATS:
        tl.atomic_add(stats_ptr + c, tl.sum(s_acc, axis=0), mask=c_ok)
        tl.atomic_add(stats_ptr + C + c, tl.sum(q_acc, axis=0), mask=c_ok)


@triton.jit
def _bwd_tile(pid_t, pid_c, TILES_PER_CLASS, TILES_W, C, H, W, Wo, Wx, STRIDE: tl.constexpr,
              XS: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
              BLOCK_C: tl.constexpr):  # fmt: skip
    """The input pixels of backward tile ``pid_t`` and channels of ``pid_c``: the parity class
    ``(ph, pw)``, positions ``(ta, tb)`` inside it (image pixel ``(ta, tb) * s + (ph, pw)``),
    the channels, the masks, and the offsets inside one image of the input (``in_offs``), of the
    output pixel ``(ta, tb)`` (``out_offs``) and of the expand input's row (``x_rows``)."""
    cls = pid_t // TILES_PER_CLASS
    t = pid_t % TILES_PER_CLASS
    ph = cls // STRIDE
    pw = cls % STRIDE
    th = t // TILES_W
    tw = t % TILES_W
    r = tl.arange(0, TILE_H * TILE_W)
    ta = th * TILE_H + r // TILE_W
    tb = tw * TILE_W + r % TILE_W
    hi = ta * STRIDE + ph
    wi = tb * STRIDE + pw
    in_ok = (hi < H) & (wi < W)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    im = in_ok[:, None] & c_ok[None, :]
    in_offs = ((hi * W + wi) * C)[:, None] + c[None, :]
    out_offs = ((ta * Wo + tb) * C)[:, None] + c[None, :]
    x_rows = hi * XS * Wx + wi * XS
    return ph, pw, ta, tb, in_ok, c, c_ok, im, in_offs, out_offs, x_rows


@triton.jit
def _conv_input(z_img, x_img, w1_ptr, in_offs, im, x_rows, in_ok, c, c_ok, CIN,
                PRO: tl.constexpr, BLOCK_CIN: tl.constexpr, DOT_F32: tl.constexpr):  # fmt: skip
    """The conv input ``z`` of one image tile, before any prologue (fp32): read from ``z_img``,
    or (``PRO == 2``) rebuilt as ``x W1^T`` from the image's expand input ``x_img``."""
    if PRO == 2:
        zv = expand_tile(x_img, w1_ptr, x_rows, in_ok, c, c_ok, CIN, BLOCK_CIN, DOT_F32)
    else:
        zv = tl.load(z_img + in_offs, mask=im, other=0.0).to(tl.float32)
    return zv


@triton.jit
def _dw_conv_bwd_kernel(
    dz_ptr, z_ptr, w_ptr, dx_ptr, dw_ptr, sums_ptr,
    sa_ptr, sb_ptr, mean_ptr, rstd_ptr, x_ptr, w1_ptr,
    N, C, H, W, Ho, Wo, IMG_IN, IMG_OUT, TILES_W, TILES_PER_CLASS, IMGS, CIN, Hx, Wx, IMG_X,
    KSIZE: tl.constexpr, STRIDE: tl.constexpr, PRO: tl.constexpr, PRO_ACT: tl.constexpr,
    BN_SUMS: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr, BLOCK_C: tl.constexpr,
    KK_PAD: tl.constexpr, XS: tl.constexpr, BLOCK_CIN: tl.constexpr, DOT_F32: tl.constexpr,
    ALIGN: tl.constexpr, ALIGN_X: tl.constexpr, WGRAD: tl.constexpr,
):  # fmt: skip
    """Input gradient and (``WGRAD``) weight gradient of the depthwise conv, for the input pixels
    ``(a*s + ph, b*s + pw)`` of one tile of the parity class ``(ph, pw)``.

    With ``PRO`` the conv input was ``act(u)``, ``u = z * sa + sb`` (training BN + activation):
    the kernel writes ``du = dx * act'(u)`` and, with ``BN_SUMS``, adds ``sum du`` and
    ``sum du * (z - mean) * rstd`` per channel for the BN backward. ``PRO == 1`` reads ``z``;
    ``PRO == 2`` rebuilds it as the expand conv's output ``x W1^T`` (``x`` sampled with stride
    ``XS``) on the tensor cores, so the training block never stores ``z1``. Tap ``(i, j)`` reads output
    pixel ``(a + (ph + p - i)/s, b + (pw + p - j)/s)``: the tile's ``(a, b)`` offsets plus a
    scalar, as in the forward kernel. ``ALIGN`` divides ``C``, ``ALIGN_X`` divides ``CIN``.
    Without ``WGRAD`` the weight gradient is left to :func:`_dw_wgrad_kernel`: here it costs a
    cross-warp reduction per tap and image.
    """
    C = assume_multiple(C, ALIGN)
    IMG_IN = assume_multiple(IMG_IN, ALIGN)
    IMG_OUT = assume_multiple(IMG_OUT, ALIGN)
    CIN = assume_multiple(CIN, ALIGN_X)
    IMG_X = assume_multiple(IMG_X, ALIGN_X)
    pid_t = tl.program_id(0)
    pid_g = tl.program_id(1)
    pid_c = tl.program_id(2)
    PAD: tl.constexpr = KSIZE // 2
    KK: tl.constexpr = KSIZE * KSIZE
    ph, pw, ta, tb, in_ok, c, c_ok, im, in_offs, out_offs, x_rows = _bwd_tile(
        pid_t, pid_c, TILES_PER_CLASS, TILES_W, C, H, W, Wo, Wx, STRIDE, XS, TILE_H, TILE_W, BLOCK_C
    )
    if WGRAD:
        kk = tl.arange(0, KK_PAD)
        dwacc = tl.zeros([KK_PAD, BLOCK_C], dtype=tl.float32)
    if PRO != 0:
        sa = tl.load(sa_ptr + c, mask=c_ok, other=0.0)
        sb = tl.load(sb_ptr + c, mask=c_ok, other=0.0)
    if BN_SUMS:
        mean = tl.load(mean_ptr + c, mask=c_ok, other=0.0)
        rstd = tl.load(rstd_ptr + c, mask=c_ok, other=0.0)
        # summed elementwise over the images, reduced over the pixels once at the end
        s1 = tl.zeros([TILE_H * TILE_W, BLOCK_C], dtype=tl.float32)
        s2 = tl.zeros([TILE_H * TILE_W, BLOCK_C], dtype=tl.float32)
    n0 = pid_g * IMGS
    for n in range(n0, tl.minimum(n0 + IMGS, N)):
        n64 = tl.cast(n, tl.int64)
        zv = _conv_input(z_ptr + n64 * IMG_IN, x_ptr + n64 * IMG_X, w1_ptr, in_offs, im, x_rows,
                         in_ok, c, c_ok, CIN, PRO, BLOCK_CIN, DOT_F32)  # fmt: skip
        if PRO != 0:
            u = zv * sa[None, :] + sb[None, :]
            a_in = tl.where(im, act_fwd(u, PRO_ACT), 0.0)
        else:
            a_in = zv
        gb = dz_ptr + n64 * IMG_OUT
        da = tl.zeros([TILE_H * TILE_W, BLOCK_C], dtype=tl.float32)
        for i in range(KSIZE):
            dh = ph + (PAD - i)  # ho * s = hi + PAD - i  =>  ho = ta + dh / s when s | dh
            if dh % STRIDE == 0:
                dho = dh // STRIDE
                ho = ta + dho
                h_ok = in_ok & (ho >= 0) & (ho < Ho)
                for j in tl.static_range(KSIZE):
                    dwd = pw + (PAD - j)
                    if dwd % STRIDE == 0:
                        dwo = dwd // STRIDE
                        wo = tb + dwo
                        m = (h_ok & (wo >= 0) & (wo < Wo))[:, None] & c_ok[None, :]
                        g = tl.load(gb + (dho * Wo + dwo) * C + out_offs, mask=m, other=0.0)
                        g = g.to(tl.float32)
                        wv = tl.load(w_ptr + (i * KSIZE + j) * C + c, mask=c_ok, other=0.0)
                        da += g * wv.to(tl.float32)[None, :]
                        if WGRAD:
                            tap = tl.sum(g * a_in, axis=0)
                            hit = kk[:, None] == i * KSIZE + j
                            dwacc = tl.where(hit, dwacc + tap[None, :], dwacc)
        if PRO != 0:
            da = tl.where(im, da * act_grad(u, PRO_ACT), 0.0)
        tl.store(dx_ptr + n64 * IMG_IN + in_offs, da, mask=im)
        if BN_SUMS:
            s1 += tl.where(im, da, 0.0)
            s2 += tl.where(im, da * (zv - mean[None, :]) * rstd[None, :], 0.0)
    if WGRAD:
        dw_offs = c[None, :] * KK + kk[:, None]
        tl.atomic_add(dw_ptr + dw_offs, dwacc, mask=(kk[:, None] < KK) & c_ok[None, :])
    if BN_SUMS:
        tl.atomic_add(sums_ptr + c, tl.sum(s1, axis=0), mask=c_ok)
        tl.atomic_add(sums_ptr + C + c, tl.sum(s2, axis=0), mask=c_ok)


@triton.jit
def _dw_wgrad_kernel(
    dz_ptr, z_ptr, dw_ptr, sa_ptr, sb_ptr, x_ptr, w1_ptr,
    N, C, H, W, Ho, Wo, IMG_IN, IMG_OUT, TILES_W, TILES_PER_CLASS, IMGS, CIN, Hx, Wx, IMG_X,
    KSIZE: tl.constexpr, STRIDE: tl.constexpr, PRO: tl.constexpr, PRO_ACT: tl.constexpr,
    TILE_H: tl.constexpr, TILE_W: tl.constexpr, BLOCK_C: tl.constexpr, XS: tl.constexpr,
    BLOCK_CIN: tl.constexpr, DOT_F32: tl.constexpr, ALIGN: tl.constexpr, ALIGN_X: tl.constexpr,
):  # fmt: skip
    """Weight gradient of the depthwise conv, ``dw[c, i, j] += sum a_in * dz(shifted by the tap)``
    over one input tile of the parity class ``(ph, pw)`` in images ``pid_g*IMGS ...``.

    Tiles, parity classes and the input ``a_in`` (``PRO`` as in :func:`_dw_conv_bwd_kernel`) are
    those of the input-gradient kernel; the loop order is not. For each kernel row ``i`` the
    products of its ``k`` taps are summed over all the program's images elementwise, in ``k``
    register tiles, and reduced over the pixels once at the end: ``k^2`` cross-warp reductions
    per program instead of ``k^2`` per image (at batch 256 a program holds ~37 images). The price
    is ``a_in`` rebuilt once per row instead of once per image. Accumulators ``acc0..acc8``:
    kernels up to 9x9; the unused ones stay zero and are never stored.
    """
    C = assume_multiple(C, ALIGN)
    IMG_IN = assume_multiple(IMG_IN, ALIGN)
    IMG_OUT = assume_multiple(IMG_OUT, ALIGN)
    CIN = assume_multiple(CIN, ALIGN_X)
    IMG_X = assume_multiple(IMG_X, ALIGN_X)
    pid_t = tl.program_id(0)
    pid_g = tl.program_id(1)
    pid_c = tl.program_id(2)
    PAD: tl.constexpr = KSIZE // 2
    KK: tl.constexpr = KSIZE * KSIZE
    ph, pw, ta, tb, in_ok, c, c_ok, im, in_offs, out_offs, x_rows = _bwd_tile(
        pid_t, pid_c, TILES_PER_CLASS, TILES_W, C, H, W, Wo, Wx, STRIDE, XS, TILE_H, TILE_W, BLOCK_C
    )
    if PRO != 0:
        sa = tl.load(sa_ptr + c, mask=c_ok, other=0.0)
        sb = tl.load(sb_ptr + c, mask=c_ok, other=0.0)
    n0 = pid_g * IMGS
    n1 = tl.minimum(n0 + IMGS, N)
    for i in range(KSIZE):
        dh = ph + (PAD - i)
        if dh % STRIDE == 0:
            dho = dh // STRIDE
            ho = ta + dho
            h_ok = in_ok & (ho >= 0) & (ho < Ho)
            acc0 = tl.zeros([TILE_H * TILE_W, BLOCK_C], dtype=tl.float32)
            acc1 = tl.zeros([TILE_H * TILE_W, BLOCK_C], dtype=tl.float32)
            acc2 = tl.zeros([TILE_H * TILE_W, BLOCK_C], dtype=tl.float32)
            acc3 = tl.zeros([TILE_H * TILE_W, BLOCK_C], dtype=tl.float32)
            acc4 = tl.zeros([TILE_H * TILE_W, BLOCK_C], dtype=tl.float32)
            acc5 = tl.zeros([TILE_H * TILE_W, BLOCK_C], dtype=tl.float32)
            acc6 = tl.zeros([TILE_H * TILE_W, BLOCK_C], dtype=tl.float32)
            acc7 = tl.zeros([TILE_H * TILE_W, BLOCK_C], dtype=tl.float32)
            acc8 = tl.zeros([TILE_H * TILE_W, BLOCK_C], dtype=tl.float32)
            for n in range(n0, n1):
                n64 = tl.cast(n, tl.int64)
                zv = _conv_input(z_ptr + n64 * IMG_IN, x_ptr + n64 * IMG_X, w1_ptr, in_offs, im,
                                 x_rows, in_ok, c, c_ok, CIN, PRO, BLOCK_CIN, DOT_F32)  # fmt: skip
                if PRO != 0:
                    a_in = tl.where(im, act_fwd(zv * sa[None, :] + sb[None, :], PRO_ACT), 0.0)
                else:
                    a_in = zv
                gb = dz_ptr + n64 * IMG_OUT + dho * Wo * C
                for j in tl.static_range(KSIZE):
                    dwd = pw + (PAD - j)
                    if dwd % STRIDE == 0:
                        dwo = dwd // STRIDE
                        wo = tb + dwo
                        m = (h_ok & (wo >= 0) & (wo < Wo))[:, None] & c_ok[None, :]
                        g = tl.load(gb + dwo * C + out_offs, mask=m, other=0.0)
                        prod = g.to(tl.float32) * a_in
                        if j == 0:
                            acc0 += prod
                        elif j == 1:
                            acc1 += prod
                        elif j == 2:
                            acc2 += prod
                        elif j == 3:
                            acc3 += prod
                        elif j == 4:
                            acc4 += prod
                        elif j == 5:
                            acc5 += prod
                        elif j == 6:
                            acc6 += prod
                        elif j == 7:
                            acc7 += prod
                        else:
                            acc8 += prod
            row = dw_ptr + c * KK + i * KSIZE
            for j in tl.static_range(KSIZE):
                if j == 0:
                    acc = acc0
                elif j == 1:
                    acc = acc1
                elif j == 2:
                    acc = acc2
                elif j == 3:
                    acc = acc3
                elif j == 4:
                    acc = acc4
                elif j == 5:
                    acc = acc5
                elif j == 6:
                    acc = acc6
                elif j == 7:
                    acc = acc7
                else:
                    acc = acc8
                if (pw + (PAD - j)) % STRIDE == 0:
                    tl.atomic_add(row + j, tl.sum(acc, axis=0), mask=c_ok)


# ---------------------------------------------------------------------------------------------


def channel_block(C: int, choices: tuple[int, ...] = (64, 32, 16)) -> int:
    """The widest channel tile that wastes at most 1/8 of the lanes, else the least wasteful
    (C = 72: 64 would waste 56 of 128 lanes, 32 wastes 24 of 96 -> 32)."""
    waste = {b: cdiv(C, b) * b - C for b in choices}
    for b in choices:
        if waste[b] * 8 <= cdiv(C, b) * b:
            return b
    return min(choices, key=lambda b: (waste[b], -b))


def _tiles(device: torch.device) -> tuple[int, int]:
    return (4, 8) if interpreting(device) else (8, 8)


def taps_major(weight: torch.Tensor) -> torch.Tensor:
    """``[C, 1, k, k]`` -> ``[k*k, C]`` contiguous: the kernels read one tap's weights for a
    channel tile as one vector load. In the PyTorch layout the channels of a tap lie ``k*k``
    elements apart, which took one scalar load per channel and tap (sm_90 PTX of layer 4's
    forward: 56 such loads against 14 vector loads of the input)."""
    return weight.reshape(weight.shape[0], -1).t().contiguous()


def dw_out_size(h: int, stride: int) -> int:
    return (h - 1) // stride + 1


def dw_conv_fwd(
    x: torch.Tensor,
    weight: torch.Tensor,
    geom: tuple[int, int, int],
    stride: int,
    *,
    out: torch.Tensor | None = None,
    pro_vecs: tuple[torch.Tensor, torch.Tensor] | None = None,
    pro_act: str = "none",
    bn_eval: tuple[torch.Tensor, ...] | None = None,
    eps: float = 0.0,
    epi_act: str = "none",
    stats: torch.Tensor | None = None,
    pool: torch.Tensor | None = None,
    mode: str | None = None,
) -> torch.Tensor | None:
    """Launch :func:`_dw_conv_fwd_kernel` (or :func:`_dw_sweep_fwd_kernel`, see :func:`fwd_mode`).

    Args:
        x: ``[N*H*W, C]`` rows; ``geom = (N, H, W)``.
        weight: ``[C, 1, k, k]`` (any float dtype).
        out: ``[N*Ho*Wo, C]`` or None (statistics/pooling only).
        pro_vecs: ``(scale, shift)`` fp32 for the prologue ``act(x*scale + shift)``.
        bn_eval: ``(gamma, beta, running_mean, running_var)`` for the epilogue.
        stats: fp32 ``[2, C]`` zeroed; pool: fp32 ``[N, C]`` zeroed, receives the per-image mean
            of the (activated) output.
        mode: ``"tile"`` or ``"sweep"``; None reads :func:`fwd_mode`.
    """
    N, H, W = geom
    C = x.shape[1]
    k = weight.shape[-1]
    Ho, Wo = dw_out_size(H, stride), dw_out_size(W, stride)
    dev = x.device
    sweep = fwd_mode(mode) == "sweep"
    if sweep:  # ROWS x COLS output pixels; one 16-byte vector of channels per thread and column
        if interpreting(dev):
            th_, tw_, bc, warps = 4, 4, 32, 1  # several column tiles on tiny test images
        else:
            bc = channel_block(C, (32, 16))
            # 8 columns; 4 at stride 2 and for k = 9, where the input span (7 s + k columns) took
            # every register or spilled (sm_90: k = 7 stride 2 spilled, k = 3 stride 2 at 7x7 too)
            th_, tw_ = (16 if Ho > 8 else 8), (8 if 7 * stride + k <= 14 else 4)
            warps = max(1, th_ * bc // 256)
    else:
        th_, tw_ = _tiles(dev)
        bc = 32 if interpreting(dev) else channel_block(C, (32, 16))
        warps = 4
    tiles_w = cdiv(Wo, tw_)
    tiles = cdiv(Ho, th_) * tiles_w
    imgs = 2 if interpreting(dev) else 1
    if stats is not None and not interpreting(dev):
        # programs sum statistics over images: ~16 per SM, few atomics
        imgs = cdiv(N, split_for(N, tiles * cdiv(C, bc), 16 * num_sms(dev)))
    pv = pro_vecs if pro_vecs is not None else (x, x)
    ev = bn_eval if bn_eval is not None else (x, x, x, x)
    tile = dict(ROWS=th_, COLS=tw_) if sweep else dict(TILE_H=th_, TILE_W=tw_)
    launch(
        _dw_sweep_fwd_kernel if sweep else _dw_conv_fwd_kernel,
        (tiles, cdiv(N, imgs), cdiv(C, bc)),
        x, taps_major(weight), out if out is not None else x, pv[0], pv[1],
        ev[0], ev[1], ev[2], ev[3], stats if stats is not None else x,
        pool if pool is not None else x,
        N, C, H, W, Ho, Wo, H * W * C, Ho * Wo * C, tiles_w, imgs, float(eps), 1.0 / (Ho * Wo),
        KSIZE=k, STRIDE=stride, PRO=1 if pro_vecs is not None else 0, PRO_ACT=act_code(pro_act),
        EPI=EPI_BN_EVAL if bn_eval is not None else EPI_NONE, EPI_ACT=act_code(epi_act),
        STORE=out is not None, STATS=stats is not None, POOL=pool is not None, **tile,
        BLOCK_C=bc, ALIGN=channel_align(C), num_warps=warps, num_stages=1,
    )  # fmt: skip
    return out


FWD_MODES = ("tile", "sweep")


def fwd_mode(mode: str | None = None) -> str:
    """Which kernel :func:`dw_conv_fwd` launches: ``mode``, else the environment variable
    ``FASTSCARLET_DW_FWD``, else ``"tile"``.

    ``"tile"``: :func:`_dw_conv_fwd_kernel`, the kernel whose lineage was measured on an H100;
    ``"sweep"``: :func:`_dw_sweep_fwd_kernel` (about half the sm_90 instructions per output,
    twice the registers; untimed). Both are kept so that one GPU run compares them.
    """
    chosen = mode if mode is not None else os.environ.get("FASTSCARLET_DW_FWD", "tile")
    if chosen not in FWD_MODES:
        raise ValueError(
            f"depthwise forward mode {chosen!r} (FASTSCARLET_DW_FWD): "
            f"expected one of {', '.join(FWD_MODES)}"
        )
    return chosen


WGRAD_MODES = ("split", "fused")


def wgrad_mode(mode: str | None = None) -> str:
    """How :func:`dw_conv_bwd` computes the weight gradient: ``mode``, else the environment
    variable ``FASTSCARLET_DW_WGRAD``, else ``"split"``.

    ``"split"``: :func:`_dw_wgrad_kernel` after the input-gradient kernel (k^2 reductions per
    program); ``"fused"``: inside :func:`_dw_conv_bwd_kernel` (k^2 per program and image), the
    kernel measured in ``benchmarks/RESULTS.md``. Both are kept so that one GPU run compares them.
    """
    chosen = mode if mode is not None else os.environ.get("FASTSCARLET_DW_WGRAD", "split")
    if chosen not in WGRAD_MODES:
        raise ValueError(
            f"depthwise weight-gradient mode {chosen!r} (FASTSCARLET_DW_WGRAD): "
            f"expected one of {', '.join(WGRAD_MODES)}"
        )
    return chosen


def dw_conv_bwd(
    dz: torch.Tensor,
    z: torch.Tensor | None,
    weight: torch.Tensor,
    geom: tuple[int, int, int],
    stride: int,
    dx: torch.Tensor,
    dw: torch.Tensor,
    *,
    pro_vecs: tuple[torch.Tensor, torch.Tensor] | None = None,
    pro_act: str = "none",
    bn_sums: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    rebuild: tuple[torch.Tensor, torch.Tensor, int, int, int] | None = None,
    wgrad: str | None = None,
) -> None:
    """Launch :func:`_dw_conv_bwd_kernel` (and :func:`_dw_wgrad_kernel`, see :func:`wgrad_mode`).

    Args:
        dz: ``[N*Ho*Wo, C]`` gradient of the conv output; z: ``[N*H*W, C]`` the conv input (before
            the prologue ``act(z*scale + shift)`` when ``pro_vecs`` is given), or None with
            ``rebuild = (x [N*Hx*Wx, Cin], W1 [C, Cin], Hx, Wx, xs)``: ``z = x_s W1^T`` rebuilt.
        dx: ``[N*H*W, C]`` receives the input gradient (``du`` w.r.t. the prologue's ``u`` when
            ``pro_vecs`` is given). dw: fp32 ``[C, k*k]`` zeroed, receives the weight gradient.
        bn_sums: ``(sums [2, C] zeroed fp32, mean, rstd)``: adds ``sum du`` and
            ``sum du * (z - mean) * rstd``.
        wgrad: ``"split"`` or ``"fused"``; None reads :func:`wgrad_mode`.
    """
    split = wgrad_mode(wgrad) == "split"
    N, H, W = geom
    C = dx.shape[1]
    k = weight.shape[-1]
    Ho, Wo = dw_out_size(H, stride), dw_out_size(W, stride)
    dev = dx.device
    th_, tw_ = _tiles(dev)
    tiles_w = cdiv(cdiv(W, stride), tw_)
    per_class = cdiv(cdiv(H, stride), th_) * tiles_w
    tiles = per_class * stride * stride
    if interpreting(dev):
        bc, imgs = 32, 2
    else:
        # k = 7 with the z1 rebuild: at 32 channels the fused (WGRAD) kernel spilled 132 B; 16 do not
        bc = channel_block(C, (16,) if k >= 7 and rebuild is not None else (32, 16))
        groups = split_for(N, tiles * cdiv(C, bc), 16 * num_sms(dev))
        imgs = cdiv(N, groups)
    pv = pro_vecs if pro_vecs is not None else (dx, dx)
    bs = bn_sums if bn_sums is not None else (dx, dx, dx)
    if rebuild is not None:
        x, w1, hx, wx, xs = rebuild
        cin, pro = x.shape[1], 2
    else:
        x, w1, hx, wx, xs, cin = dx, dx, 1, 1, 1, 1
        pro = 1 if pro_vecs is not None else 0
    zt = z if z is not None else dx
    shape = (N, C, H, W, Ho, Wo, H * W * C, Ho * Wo * C, tiles_w, per_class, imgs, cin, hx, wx,
             hx * wx * cin)  # fmt: skip
    common = dict(
        KSIZE=k, STRIDE=stride, PRO=pro, PRO_ACT=act_code(pro_act), TILE_H=th_, TILE_W=tw_,
        BLOCK_C=bc, XS=xs, BLOCK_CIN=16, DOT_F32=x.dtype == torch.float32,
        ALIGN=channel_align(C), ALIGN_X=channel_align(cin),
    )  # fmt: skip
    grid = (tiles, cdiv(N, imgs), cdiv(C, bc))
    launch(
        _dw_conv_bwd_kernel, grid,
        dz, zt, taps_major(weight), dx, dw, bs[0], pv[0], pv[1], bs[1], bs[2], x, w1, *shape,
        **common, BN_SUMS=bn_sums is not None, KK_PAD=max(16, next_pow2(k * k)), WGRAD=not split,
        # the z1 rebuild adds a [64, BLOCK_CIN] x tile: at 32 the k = 7 kernel spilled 92 B
        num_warps=8 if pro == 2 else 4, num_stages=1,
    )  # fmt: skip
    if split:
        launch(
            _dw_wgrad_kernel, grid, dz, zt, dw, pv[0], pv[1], x, w1, *shape, **common,
            num_warps=8 if pro == 2 else 4, num_stages=1,
        )  # fmt: skip


def depthwise_ref(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    """The reference: ``F.conv2d(x, w, stride=s, padding=k//2, groups=C)``."""
    return F.conv2d(x, weight, None, stride, weight.shape[-1] // 2, 1, x.shape[1])


__all__ = [
    "channel_block",
    "depthwise_ref",
    "dw_conv_bwd",
    "dw_conv_fwd",
    "dw_out_size",
    "fwd_mode",
    "taps_major",
    "wgrad_mode",
]
