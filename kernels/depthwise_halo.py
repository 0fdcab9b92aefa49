"""Depthwise kxk convolution that loads each input element once per program (channels_last).

Same contract as :mod:`.depthwise` (``out[n, ho, wo, c] = sum_{i,j} in[n, ho*s + i - p,
wo*s + j - p, c] * w[c, i, j]``, zero padding ``p = k // 2``, stride 1 or 2), computed so that a
program reads every input element of its tile plus halo exactly once, converts it to fp32 once and
applies the prologue (BN + activation) once, where the tile kernel of :mod:`.depthwise` loads and
converts it once per tap (up to ``k^2`` times) and the column sweep once per kernel row (``k``
times). Triton cannot shift a register tile or index shared memory, so the staging lives in
registers, with the tile laid out to make that possible:

* a program's tensor dimension is ``[NB images, BLOCK_C channels]`` at **one pixel**: every
  spatial index is a scalar, a load is one ``[NB, BLOCK_C]`` vector per pixel (channels
  contiguous), and the spatial taps are compile-time pairings of Triton tuples of such vectors,
  which need no shift;
* the program owns a strip of ``TW`` output columns and walks down its rows; the
  ``(TW - 1) s + k`` input columns of each new input row are loaded once (the "span") and added,
  with each tap weight, into every output accumulator they feed;
* the output accumulators of the ``D = ceil(k / s)`` rows still open form a ring (a tuple rotated
  once per output row), so each input row is read once, not once per kernel row.

Per input row at stride 1 a program issues ``TW + k - 1`` input loads and ``k^2`` weight loads for
``k^2 TW`` FMAs per element (Scarlet-A's layer 4, k = 7, TW = 4: 59 loads for 196 FMAs; the tile
kernel: one load per FMA). The price is registers: ``(D TW + span + k)`` vectors per thread, which
sets ``TW`` per kernel size (:func:`fwd_config`; registers and spills as compiled for sm_90 are in
the notes above ``_FWD_TW``).

Status: correct under the interpreter and compiled for sm_90 (Triton 3.8), never run or timed on a
GPU; nothing dispatches to it (:mod:`.dispatch` takes a kernel only once it has passed the ``gpu``
tests and been measured faster).

Kernels:

* :func:`_dw_halo_fwd_kernel`: forward; prologue ``act(v * a + b)`` (then the zero padding);
  epilogue BN-eval affine, activation, store, BN statistics and SE pooling. Statistics and pooling
  are partial sums per program written to a workspace (no atomics) and summed on the host, so the
  result is deterministic.
* :func:`_dw_halo_bwd_kernel`: input gradient (``DX``) and/or weight gradient (``DW``) from the
  same staged rows: the program walks the input rows of its strip once; the output-gradient rows
  they pair with sit in a ring (one new row per step); ``dx`` of each input row is complete within
  its step, and the ``k^2`` weight-gradient partials stay in registers across every tile of a
  persistent program and are reduced once per program into a workspace (deterministic). With
  ``k >= 7`` the two run as two launches of the same kernel (their registers together spill).

The reference is :func:`fastscarlet.kernels.depthwise.depthwise_ref` (``F.conv2d`` with
``groups=C``), re-exported here as :func:`depthwise_halo_ref`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .activations import act_code, act_fwd
from .alignment import assume_multiple, channel_align
from .batchnorm import bn_eval_affine
from .depthwise import _bump, channel_block, depthwise_ref, dw_out_size, taps_major
from .launch import cdiv, interpreting, launch, next_pow2, num_sms


@triton.jit
def _image_tile(tile, STRIPS, CHUNKS, N, c2_ok, NB: tl.constexpr):
    """Tile ``tile`` = (image group, column strip, row chunk): its strip, chunk, the
    ``[NB, BLOCK_C]`` mask of its images and channels, and the images' 64-bit indices
    ``[NB, 1]``."""
    per_group = STRIPS * CHUNKS
    group = tile // per_group
    rem = tile - group * per_group
    strip = rem // CHUNKS
    n = group * NB + tl.arange(0, NB)
    return strip, rem - strip * CHUNKS, (n < N)[:, None] & c2_ok, n.to(tl.int64)[:, None]


@triton.jit
def _load_span(base, row, col0, NROWS, NCOLS, C, m0, sa, sb, SPAN: tl.constexpr,
               PRO: tl.constexpr, PRO_ACT: tl.constexpr):  # fmt: skip
    """The ``SPAN`` pixels ``(row, col0 + t)`` of an image tile (``base``: ``[NB, BLOCK_C]``
    pointers to each image's channel block) in fp32, zero outside the ``NROWS x NCOLS`` image;
    with ``PRO``, ``act(v * sa + sb)`` inside it (once per element)."""
    row_ok = (row >= 0) & (row < NROWS)
    vals = ()
    for t in tl.static_range(SPAN):
        col = col0 + t
        m = m0 & row_ok & (col >= 0) & (col < NCOLS)
        v = tl.load(base + (row * NCOLS + col) * C, mask=m, other=0.0).to(tl.float32)
        if PRO == 1:
            v = tl.where(m, act_fwd(v * sa + sb, PRO_ACT), 0.0)
        vals = vals + (v,)
    return vals


# Kernel rows and columns are compile-time indices into tuples, so they reach the code below as
# ``tl.constexpr`` parameters of helpers: Triton turns a plain local into a tensor and refuses to
# re-declare a ``tl.constexpr`` local in an unrolled loop (the interpreter accepts both).


@triton.jit
def _tap_row(w_ptr, C, c2, c2_ok, i: tl.constexpr, KSIZE: tl.constexpr):
    """The ``KSIZE`` fp32 weights ``w[c, i, :]`` of kernel row ``i`` (tap-major ``[k*k, C]``)."""
    taps = ()
    for j in tl.static_range(KSIZE):
        taps = taps + (tl.load(w_ptr + (i * KSIZE + j) * C + c2, mask=c2_ok, other=0.0),)
    return taps


@triton.jit
def _bump_tap(accs, q: tl.constexpr, x, taps, j: tl.constexpr, KSIZE: tl.constexpr):
    """``accs[q] += x * taps[j]`` when ``0 <= j < KSIZE`` (decided at compile time)."""
    if (j >= 0) & (j < KSIZE):
        accs = _bump(accs, q, x * taps[j])
    return accs


@triton.jit
def _fwd_row(accs, v, w_ptr, C, c2, c2_ok, i: tl.constexpr, slot: tl.constexpr,
             KSIZE: tl.constexpr, STRIDE: tl.constexpr, TW: tl.constexpr):  # fmt: skip
    """Add the input row ``v`` (its span of pixels) through kernel row ``i`` into the ``TW``
    accumulators of ring slot ``slot``: output column ``q`` reads span pixels ``q*s + j``."""
    if (i >= 0) & (i < KSIZE):
        taps = _tap_row(w_ptr, C, c2, c2_ok, i, KSIZE)
        for q in tl.static_range(TW):
            for j in tl.static_range(KSIZE):
                accs = _bump(accs, slot * TW + q, v[q * STRIDE + j] * taps[j])
    return accs


@triton.jit
def _bwd_row(dxa, dwa, v, ring, w_ptr, C, c2, c2_ok, i: tl.constexpr, r: tl.constexpr,
             KSIZE: tl.constexpr, STRIDE: tl.constexpr, PAD: tl.constexpr, TW: tl.constexpr,
             SPAN_DZ: tl.constexpr, U0: tl.constexpr, DX: tl.constexpr, DW: tl.constexpr):  # fmt: skip
    """Ring row ``r`` (output-gradient row paired with the input row through kernel row ``i``):
    into ``dxa`` (the ``TW*s`` input columns) ``dz[u] * w[i, xc - (u + U0) s + p]``; into ``dwa``
    (``k^2`` taps) ``v[q*s + j] * dz[q]`` for the strip's own ``TW`` output columns."""
    if (i >= 0) & (i < KSIZE):
        if DX:
            taps = _tap_row(w_ptr, C, c2, c2_ok, i, KSIZE)
            for xc in tl.static_range(TW * STRIDE):
                for u in tl.static_range(SPAN_DZ):
                    dxa = _bump_tap(dxa, xc, ring[r * SPAN_DZ + u], taps,
                                    xc - (u + U0) * STRIDE + PAD, KSIZE)  # fmt: skip
        if DW:
            for q in tl.static_range(TW):
                for j in tl.static_range(KSIZE):
                    dwa = _bump(dwa, i * KSIZE + j, v[q * STRIDE + j] * ring[r * SPAN_DZ + q - U0])
    return dxa, dwa


@triton.jit
def _dw_halo_fwd_kernel(
    x_ptr, w_ptr, out_ptr, pa_ptr, pb_ptr, ea_ptr, eb_ptr, ec_ptr, ed_ptr, stats_ptr, pool_ptr,
    N, C, H, W, Ho, Wo, IMG_IN, IMG_OUT, STRIPS, CHUNKS, ROWS, TILES, eps, pool_scale,
    KSIZE: tl.constexpr, STRIDE: tl.constexpr, TW: tl.constexpr, NB: tl.constexpr,
    BLOCK_C: tl.constexpr, PRO: tl.constexpr, PRO_ACT: tl.constexpr, EPI: tl.constexpr,
    EPI_ACT: tl.constexpr, STORE: tl.constexpr, STATS: tl.constexpr, POOL: tl.constexpr,
    ALIGN: tl.constexpr,
):  # fmt: skip
    """Output rows ``[chunk*ROWS, +ROWS)`` x columns ``[strip*TW, +TW)`` of ``NB`` images and
    ``BLOCK_C`` channels per tile; tiles ``pid, pid + num_programs, ...`` (statistics summed in
    registers across them). ``w_ptr``: fp32 tap-major ``[k*k, C]``.

    Iteration ``r`` closes output row ``ho = chunk*ROWS - (D - 1) + r``: it reads the ``s`` input
    rows ``ho*s + p - s + 1 + e`` (``e < s``), which feed the open rows ``ho + d`` (ring slot
    ``d``) through kernel row ``i = k - s + e - d*s``; then slot 0 is complete and the ring
    rotates. The first ``D - 1`` iterations only fill the ring (their rows lie before the chunk)."""
    C = assume_multiple(C, ALIGN)
    IMG_IN = assume_multiple(IMG_IN, ALIGN)
    IMG_OUT = assume_multiple(IMG_OUT, ALIGN)
    PAD: tl.constexpr = KSIZE // 2
    D: tl.constexpr = (KSIZE + STRIDE - 1) // STRIDE
    SPAN: tl.constexpr = (TW - 1) * STRIDE + KSIZE
    pid = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c2 = c[None, :]
    c2_ok = c2 < C
    sa = 0.0
    sb = 0.0
    if PRO == 1:
        sa = tl.load(pa_ptr + c2, mask=c2_ok, other=0.0)
        sb = tl.load(pb_ptr + c2, mask=c2_ok, other=0.0)
    if EPI == 2:
        e_scale, e_shift = bn_eval_affine(ea_ptr, eb_ptr, ec_ptr, ed_ptr, c2, c2_ok, eps)
    zero = tl.zeros([NB, BLOCK_C], dtype=tl.float32)
    if STATS:
        s_acc = zero
        q_acc = zero
    for tile in range(pid, TILES, tl.num_programs(0)):
        strip, chunk, m0, n64 = _image_tile(tile, STRIPS, CHUNKS, N, c2_ok, NB)
        xb = x_ptr + n64 * IMG_IN + c2
        ob = out_ptr + n64 * IMG_OUT + c2
        wo0 = strip * TW
        ho0 = chunk * ROWS
        ho_end = tl.minimum(ho0 + ROWS, Ho)
        if POOL:
            pooled = zero
        accs = (zero,) * (D * TW)
        for r in range(0, ho_end - ho0 + D - 1):
            ho = ho0 - (D - 1) + r
            for e in tl.static_range(STRIDE):
                v = _load_span(xb, ho * STRIDE + PAD - STRIDE + 1 + e, wo0 * STRIDE - PAD, H, W,
                               C, m0, sa, sb, SPAN, PRO, PRO_ACT)  # fmt: skip
                for d in tl.static_range(D):
                    accs = _fwd_row(accs, v, w_ptr, C, c2, c2_ok, KSIZE - STRIDE + e - d * STRIDE,
                                    d, KSIZE, STRIDE, TW)  # fmt: skip
            row_ok = (ho >= ho0) & (ho < ho_end)
            for q in tl.static_range(TW):
                y = accs[q]
                if EPI == 2:
                    y = y * e_scale + e_shift
                y = act_fwd(y, EPI_ACT)
                om = m0 & row_ok & (wo0 + q < Wo)
                if STORE:
                    tl.store(ob + (ho * Wo + wo0 + q) * C, y, mask=om)
                if STATS or POOL:
                    ym = tl.where(om, y, 0.0)
                    if STATS:
                        s_acc += ym
                        q_acc += ym * ym
                    if POOL:
                        pooled += ym
            accs = accs[TW:] + (zero,) * TW
        if POOL:  # one row of partial sums per (strip, chunk): written, never added to
            pb = pool_ptr + (strip * CHUNKS + chunk).to(tl.int64) * N * C
            tl.store(pb + n64 * C + c2, pooled * pool_scale, mask=m0)
    if STATS:
        sb_ = stats_ptr + pid.to(tl.int64) * 2 * C
        tl.store(sb_ + c, tl.sum(s_acc, axis=0), mask=c < C)
        tl.store(sb_ + C + c, tl.sum(q_acc, axis=0), mask=c < C)


@triton.jit
def _dw_halo_bwd_kernel(
    dz_ptr, a_ptr, w_ptr, dx_ptr, ws_ptr,
    N, C, H, W, Ho, Wo, IMG_IN, IMG_OUT, STRIPS, CHUNKS, ROWS, TILES,
    KSIZE: tl.constexpr, STRIDE: tl.constexpr, TW: tl.constexpr, NB: tl.constexpr,
    BLOCK_C: tl.constexpr, DX: tl.constexpr, DW: tl.constexpr, ALIGN: tl.constexpr,
):  # fmt: skip
    """Input gradient ``dx`` (``DX``) and weight-gradient partials (``DW``) of the depthwise conv
    for the input rows ``[chunk*ROWS*s, +ROWS*s)`` x columns ``[strip*TW*s, +TW*s)`` of ``NB``
    images per tile; tiles ``pid, pid + num_programs, ...``.

    Step ``g`` reads the ``s`` input rows ``hi = g*s + e``. Row ``hi`` pairs with output-gradient
    row ``ho`` through kernel row ``i = hi + p - ho*s``; those rows are ``g + DLO .. g + DHI``,
    held in a ring of ``R`` rows (one loaded per step, each once). With ``DX`` a ring row spans the
    strip's ``TW`` output columns plus the halo the strip's input columns read; ``dx[hi]`` is
    complete within the step. With ``DW`` each input row's span is loaded once and multiplied with
    the ring's own ``TW`` columns into ``k^2`` register accumulators, summed over every tile of
    the program and written once, reduced over the images, to ``ws[pid, k*k, C]``."""
    C = assume_multiple(C, ALIGN)
    IMG_IN = assume_multiple(IMG_IN, ALIGN)
    IMG_OUT = assume_multiple(IMG_OUT, ALIGN)
    PAD: tl.constexpr = KSIZE // 2
    KK: tl.constexpr = KSIZE * KSIZE
    DLO: tl.constexpr = -((PAD + STRIDE - 1) // STRIDE)  # floor(-p / s)
    DHI: tl.constexpr = (STRIDE - 1 + PAD) // STRIDE
    R: tl.constexpr = DHI - DLO + 1
    U0: tl.constexpr = DLO * DX  # ring column u is output column strip*TW + u + U0
    SPAN_DZ: tl.constexpr = TW + (R - 1) * DX
    SPAN_IN: tl.constexpr = (TW - 1) * STRIDE + KSIZE
    TWX: tl.constexpr = TW * STRIDE
    pid = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c2 = c[None, :]
    c2_ok = c2 < C
    zero = tl.zeros([NB, BLOCK_C], dtype=tl.float32)
    dwa = ()
    if DW:
        dwa = (zero,) * KK
    for tile in range(pid, TILES, tl.num_programs(0)):
        strip, chunk, m0, n64 = _image_tile(tile, STRIPS, CHUNKS, N, c2_ok, NB)
        gb = dz_ptr + n64 * IMG_OUT + c2
        ab = a_ptr + n64 * IMG_IN + c2
        xb = dx_ptr + n64 * IMG_IN + c2
        wo0 = strip * TW
        g0 = chunk * ROWS
        g_end = tl.minimum(g0 + ROWS, (H + STRIDE - 1) // STRIDE)
        ring = ()
        for r0 in tl.static_range(R - 1):
            ring = ring + _load_span(gb, g0 + DLO + r0, wo0 + U0, Ho, Wo, C, m0, 0.0, 0.0,
                                     SPAN_DZ, 0, 0)  # fmt: skip
        for g in range(g0, g_end):
            ring = ring + _load_span(gb, g + DHI, wo0 + U0, Ho, Wo, C, m0, 0.0, 0.0,
                                     SPAN_DZ, 0, 0)  # fmt: skip
            for e in tl.static_range(STRIDE):
                hi = g * STRIDE + e
                v = ()
                if DW:
                    v = _load_span(ab, hi, wo0 * STRIDE - PAD, H, W, C, m0, 0.0, 0.0, SPAN_IN, 0, 0)
                dxa = ()
                if DX:
                    dxa = (zero,) * TWX
                for r in tl.static_range(R):
                    dxa, dwa = _bwd_row(dxa, dwa, v, ring, w_ptr, C, c2, c2_ok,
                                        e + PAD - (DLO + r) * STRIDE, r, KSIZE, STRIDE, PAD, TW,
                                        SPAN_DZ, U0, DX, DW)  # fmt: skip
                if DX:
                    for xc in tl.static_range(TWX):
                        wi = wo0 * STRIDE + xc
                        om = m0 & (hi < H) & (wi < W)
                        tl.store(xb + (hi * W + wi) * C, dxa[xc], mask=om)
            ring = ring[SPAN_DZ:]
    if DW:
        wsb = ws_ptr + pid.to(tl.int64) * KK * C
        for t in tl.static_range(KK):
            tl.store(wsb + t * C + c, tl.sum(dwa[t], axis=0), mask=c < C)


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HaloConfig:
    """Launch shape: ``tw`` output columns per strip, ``nb`` images x ``block_c`` channels per
    program, ``rows`` output rows (forward) or input row pairs (backward) per tile, warps."""

    tw: int
    nb: int
    block_c: int
    rows: int
    warps: int


# Output columns per strip, from the register estimate (D TW + span + k vectors per thread at 4
# elements each), not yet from timings. As compiled for sm_90 on the 19 Scarlet-A depthwise
# layers (`python tools/aot.py --halo`: Triton 3.8 + its ptxas, bf16, batch 256, the BN + h-swish
# prologue, 2 warps): forward k = 3 (TW 8) 223-255 registers, no spill; k = 5 (TW 4) 249 and no
# spill at stride 1, 60 B spilled at stride 2 (layer 3); k = 7 (TW 4) 255 with 96 B spilled at
# stride 1 and 264 B at stride 2 (layer 1) -- TW = 2 there is the first thing a GPU should time.
_FWD_TW = {3: 8, 5: 4, 7: 4, 9: 2}
# Backward: DX and DW in one launch for k <= 5, k >= 7 as two launches of the same kernel.
# sm_90 as above: k = 3 208-230 registers, no spill; k = 5 (one launch) 255 with 152 B spilled at
# stride 1, 252 and none at stride 2; k = 7 dW pass 220-237, no spill; k = 7 dx pass 432 B spilled
# at stride 1, none at stride 2.
_BWD_TW = {3: 4, 5: 4, 7: 4, 9: 2}


def _shape(N: int, C: int, per_thread: int, device: torch.device) -> tuple[int, int, int]:
    """``(nb, block_c, warps)``: ``per_thread`` channels per thread and image along a 16-byte
    vector where the channels allow, images filling the rest of 64 or 128 threads."""
    if interpreting(device):
        return 2, 16, 1
    bc = channel_block(C, (64, 32, 16))
    warps = 2
    nb = max(1, per_thread * 32 * warps // bc)
    while nb > 1 and nb // 2 >= next_pow2(N):  # small batches: fewer idle image lanes
        nb //= 2
    return nb, bc, warps


def fwd_config(N: int, C: int, k: int, stride: int, Ho: int, device: torch.device) -> HaloConfig:
    if interpreting(device):
        return HaloConfig(2 if k >= 5 else 4, 2, 16, 3, 1)
    nb, bc, warps = _shape(N, C, 4, device)
    return HaloConfig(_FWD_TW.get(k, 2), nb, bc, Ho, warps)


def bwd_config(N: int, C: int, k: int, stride: int, H: int, device: torch.device) -> HaloConfig:
    if interpreting(device):
        return HaloConfig(2, 2, 16, 2, 1)
    nb, bc, warps = _shape(N, C, 2, device)
    return HaloConfig(_BWD_TW.get(k, 2), nb, bc, cdiv(H, stride), warps)


def _grid(cfg: HaloConfig, N: int, Wo: int, rows_total: int, C: int, dev: torch.device,
          persistent: bool) -> tuple[int, int, int, int]:  # fmt: skip
    """``(programs, strips, chunks, tiles)``; persistent grids hold ~2 programs per SM."""
    strips, chunks = cdiv(Wo, cfg.tw), cdiv(rows_total, cfg.rows)
    tiles = cdiv(N, cfg.nb) * strips * chunks
    progs = tiles
    if persistent:
        target = 2 if interpreting(dev) else 2 * num_sms(dev)
        progs = max(1, min(tiles, target // max(1, cdiv(C, cfg.block_c))))
    return progs, strips, chunks, tiles


def dw_halo_fwd(
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
    config: HaloConfig | None = None,
) -> torch.Tensor | None:
    """Launch :func:`_dw_halo_fwd_kernel` (the arguments of
    :func:`fastscarlet.kernels.depthwise.dw_conv_fwd`).

    Args:
        x: ``[N*H*W, C]`` rows; ``geom = (N, H, W)``. weight: ``[C, 1, k, k]``.
        out: ``[N*Ho*Wo, C]`` or None (statistics/pooling only).
        pro_vecs: ``(scale, shift)`` fp32: the prologue ``act(x*scale + shift)``.
        bn_eval: ``(gamma, beta, running_mean, running_var)`` for the epilogue.
        stats: fp32 ``[2, C]``: sum and sum of squares of the output are added to it.
        pool: fp32 ``[N, C]``: the per-image mean of the output is added to it.
        config: the launch shape (default :func:`fwd_config`).
    """
    N, H, W = geom
    C = x.shape[1]
    k = weight.shape[-1]
    Ho, Wo = dw_out_size(H, stride), dw_out_size(W, stride)
    dev = x.device
    cfg = config or fwd_config(N, C, k, stride, Ho, dev)
    progs, strips, chunks, tiles = _grid(cfg, N, Wo, Ho, C, dev, stats is not None)
    f32 = dict(dtype=torch.float32, device=dev)
    stats_ws = torch.empty((progs, 2, C), **f32) if stats is not None else None
    pool_ws = torch.empty((strips * chunks, N, C), **f32) if pool is not None else None
    pv = pro_vecs if pro_vecs is not None else (x, x)
    ev = bn_eval if bn_eval is not None else (x, x, x, x)
    launch(
        _dw_halo_fwd_kernel, (progs, cdiv(C, cfg.block_c)),
        x, taps_major(weight.float()), out if out is not None else x, pv[0], pv[1],
        ev[0], ev[1], ev[2], ev[3], stats_ws if stats_ws is not None else x,
        pool_ws if pool_ws is not None else x,
        N, C, H, W, Ho, Wo, H * W * C, Ho * Wo * C, strips, chunks, cfg.rows, tiles, float(eps),
        1.0 / (Ho * Wo),
        KSIZE=k, STRIDE=stride, TW=cfg.tw, NB=cfg.nb, BLOCK_C=cfg.block_c,
        PRO=1 if pro_vecs is not None else 0, PRO_ACT=act_code(pro_act),
        EPI=2 if bn_eval is not None else 0, EPI_ACT=act_code(epi_act), STORE=out is not None,
        STATS=stats is not None, POOL=pool is not None, ALIGN=channel_align(C),
        num_warps=cfg.warps, num_stages=1,
    )  # fmt: skip
    if stats is not None and stats_ws is not None:
        stats += stats_ws.sum(0)
    if pool is not None and pool_ws is not None:
        pool += pool_ws.sum(0)
    return out


def dw_halo_bwd(
    dz: torch.Tensor,
    a: torch.Tensor,
    weight: torch.Tensor,
    geom: tuple[int, int, int],
    stride: int,
    dx: torch.Tensor | None,
    dw: torch.Tensor | None,
    *,
    config: HaloConfig | None = None,
) -> None:
    """Launch :func:`_dw_halo_bwd_kernel`: ``dx`` (``[N*H*W, C]``, written) and ``dw`` (fp32
    ``[C, k*k]``, added to) of the depthwise conv with input rows ``a`` (``[N*H*W, C]``) and
    output gradient ``dz`` (``[N*Ho*Wo, C]``); ``geom = (N, H, W)``. Either may be None."""
    N, H, W = geom
    C = a.shape[1]
    k = weight.shape[-1]
    Ho, Wo = dw_out_size(H, stride), dw_out_size(W, stride)
    dev = a.device
    cfg = config or bwd_config(N, C, k, stride, H, dev)
    passes = [(dx is not None, dw is not None)]
    if k >= 7 and dx is not None and dw is not None and not interpreting(dev):
        passes = [(True, False), (False, True)]  # together they spill (see _BWD_TW)
    wt = taps_major(weight.float())
    for want_dx, want_dw in passes:
        progs, strips, chunks, tiles = _grid(cfg, N, Wo, cdiv(H, stride), C, dev, want_dw)
        ws = torch.empty((progs, k * k, C), dtype=torch.float32, device=dev) if want_dw else a
        launch(
            _dw_halo_bwd_kernel, (progs, cdiv(C, cfg.block_c)),
            dz, a, wt, dx if want_dx else a, ws,
            N, C, H, W, Ho, Wo, H * W * C, Ho * Wo * C, strips, chunks, cfg.rows, tiles,
            KSIZE=k, STRIDE=stride, TW=cfg.tw, NB=cfg.nb, BLOCK_C=cfg.block_c, DX=int(want_dx),
            DW=int(want_dw), ALIGN=channel_align(C), num_warps=cfg.warps, num_stages=1,
        )  # fmt: skip
        if want_dw and dw is not None:
            dw += ws.sum(0).t()


def depthwise_halo_ref(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    """The reference: :func:`fastscarlet.kernels.depthwise.depthwise_ref` (``F.conv2d``)."""
    return depthwise_ref(x, weight, stride)


__all__ = [
    "HaloConfig",
    "bwd_config",
    "depthwise_halo_ref",
    "dw_halo_bwd",
    "dw_halo_fwd",
    "fwd_config",
]
