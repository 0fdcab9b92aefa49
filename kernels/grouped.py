"""Grouped multi-path convolutions in one launch each: a grouped GEMM with per-group shapes for the
1x1 convs and a depthwise conv with per-group kernel size, forward and backward.

The layouts and the references (the loop over groups) are in :mod:`.grouped_ref`. On a
channels_last tensor ``[N, C, H, W]`` (a row-major ``[P, C]`` matrix, ``P = N H W``):

* :func:`_grouped_gemm_kernel`: ``C_g[M_g, N_g] (+)= A_g[M_g, K_g] @ B_g[K_g, N_g] (+ bias_g)``
  for every group ``g``, each operand at its own offset and strides in one flat tensor. One
  program per output tile of one group (a host-built table maps program -> (group, tile), so the
  groups' different sizes cost no idle programs) and per split of the reduction (``SPLIT_K``
  programs add into an fp32 output with atomics). The three products of a 1x1 conv are all this
  kernel with different strides: forward ``Y_g = X_g W_g^T`` (``M = P``), input gradient
  ``dX_g = dY_g W_g``, weight gradient ``dW_g = dY_g^T X_g`` (``K = P``, split).
* :func:`_grouped_dw_fwd_kernel`: ``y[p, c] = sum_{i,j < k_g} x[n, ho s - k_g//2 + i, wo s -
  k_g//2 + j, c] w_g[c, i, j]`` for the group ``g`` owning channel ``c`` (the tap loops run to the
  group's own ``k_g``, read from a table). Programs: pixel tiles x channel tiles, a channel tile
  never straddles two groups.
* :func:`_grouped_dw_dx_kernel`: input-stationary (no atomics): ``dx[n, h, w, c] = sum dy[n, (h +
  p - i)/s, (w + p - j)/s, c] w[c, i, j]`` over the taps where the division is exact.
* :func:`_grouped_dw_dw_kernel`: ``dw[c, i, j] = sum_p dy[p, c] x[shift_ij(p), c]``, pixels split
  over programs, one atomic add per (channel, tap, program).

Accumulation in fp32; fp32 inputs use IEEE products under the interpreter and TF32 on a GPU (as
cuDNN's default for the reference convs). :class:`GroupedPointwiseFunction` and
:class:`GroupedDepthwiseFunction` are the autograd functions; :func:`grouped_pointwise` and
:func:`grouped_depthwise` decide kernel vs reference (:func:`unsupported_reason`).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import triton
import triton.language as tl

from .dispatch import use_kernels
from .grouped_ref import (
    DepthwiseGroups,
    PointwiseGroups,
    grouped_depthwise_ref,
    grouped_pointwise_ref,
)
from .launch import cdiv, interpreting, launch, next_pow2, num_sms

_META = 13  # int64 fields per GEMM group (see _gemm_meta)
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# 64x32 depthwise tiles: 4 warps needed 254 registers and spilled (tools/aot.py, sm_90); 8 do not.
DW_WARPS = 8


# -- kernels ------------------------------------------------------------------------------------


@triton.jit
def _grouped_gemm_kernel(
    a_ptr, b_ptr, c_ptr, bias_ptr, tiles_ptr, meta_ptr, SPLIT_K,
    HAS_BIAS: tl.constexpr, ATOMIC: tl.constexpr, DOT_F32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Tile ``tiles[pid0] = (group, tile_m, tile_n)``, reduction split ``pid1`` of ``SPLIT_K``.
    ``meta[g] = (M, N, K, a_off, a_sm, a_sk, b_off, b_sk, b_sn, c_off, c_sm, c_sn, bias_off)``."""
    t = tl.program_id(0)
    split = tl.program_id(1)
    g = tl.load(tiles_ptr + 3 * t)
    tm = tl.load(tiles_ptr + 3 * t + 1)
    tn = tl.load(tiles_ptr + 3 * t + 2)
    meta = meta_ptr + g * 13
    M = tl.load(meta)
    N = tl.load(meta + 1)
    K = tl.load(meta + 2)
    a_off, a_sm, a_sk = tl.load(meta + 3), tl.load(meta + 4), tl.load(meta + 5)
    b_off, b_sk, b_sn = tl.load(meta + 6), tl.load(meta + 7), tl.load(meta + 8)
    c_off, c_sm, c_sn = tl.load(meta + 9), tl.load(meta + 10), tl.load(meta + 11)
    rm = tm.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tn.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = rm < M
    n_ok = rn < N
    k_per = tl.cdiv(tl.cdiv(K, SPLIT_K), BLOCK_K) * BLOCK_K
    k_lo = split * k_per
    k_hi = tl.minimum(K, k_lo + k_per)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        k_ok = rk < k_hi
        a = tl.load(
            a_ptr + a_off + rm[:, None] * a_sm + rk[None, :] * a_sk,
            mask=m_ok[:, None] & k_ok[None, :],
            other=0.0,
        )
        b = tl.load(
            b_ptr + b_off + rk[:, None] * b_sk + rn[None, :] * b_sn,
            mask=k_ok[:, None] & n_ok[None, :],
            other=0.0,
        )
        if DOT_F32:
            acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b.to(a.dtype), acc)
    if HAS_BIAS:
        bias_off = tl.load(meta + 12)
        bias = tl.load(bias_ptr + bias_off + rn, mask=n_ok & (split == 0), other=0.0)
        acc += bias.to(tl.float32)[None, :]
    ptrs = c_ptr + c_off + rm[:, None] * c_sm + rn[None, :] * c_sn
    mask = m_ok[:, None] & n_ok[None, :]
    if ATOMIC:
        tl.atomic_add(ptrs, acc, mask=mask)
    else:
        tl.store(ptrs, acc.to(c_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _dw_tile(ctiles_ptr, cmeta_ptr, BLOCK_C: tl.constexpr):
    """Channel tile ``pid1``: its channels, their mask, the group's kernel size and padding, and
    where each channel's ``k x k`` weights start (``cmeta[g] = (start, channels, k, w_off)``)."""
    pid_c = tl.program_id(1)
    g = tl.load(ctiles_ptr + 2 * pid_c)
    c0 = tl.load(ctiles_ptr + 2 * pid_c + 1)
    cg = tl.load(cmeta_ptr + 4 * g)
    n_c = tl.load(cmeta_ptr + 4 * g + 1)
    kg = tl.load(cmeta_ptr + 4 * g + 2)
    w_off = tl.load(cmeta_ptr + 4 * g + 3)
    c = c0 + tl.arange(0, BLOCK_C)
    c_ok = c < cg + n_c
    return c, c_ok, kg, kg // 2, w_off + (c - cg) * (kg * kg)


@triton.jit
def _nhw(p, H, W):
    """Image, row and column of the flat pixel indices ``p`` of an ``[N, H, W]`` grid."""
    n = p // (H * W)
    rem = p - n * (H * W)
    h = rem // W
    return n, h, rem - h * W


@triton.jit
def _grouped_dw_fwd_kernel(
    x_ptr, w_ptr, y_ptr, ctiles_ptr, cmeta_ptr, NPIX, H, W, Ho, Wo, CT,
    STRIDE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Output pixels ``[pid0 * BLOCK_P, +BLOCK_P)`` (of ``N*Ho*Wo``) x the channel tile ``pid1``."""
    c, c_ok, kg, pad, wrow = _dw_tile(ctiles_ptr, cmeta_ptr, BLOCK_C)
    p = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = p < NPIX
    n, ho, wo = _nhw(p, Ho, Wo)
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for i in range(0, kg):
        hi = ho * STRIDE - pad + i
        h_ok = p_ok & (hi >= 0) & (hi < H)
        for j in range(0, kg):
            wi = wo * STRIDE - pad + j
            ok = h_ok & (wi >= 0) & (wi < W)
            xv = tl.load(
                x_ptr + ((n * H + hi) * W + wi)[:, None] * CT + c[None, :],
                mask=ok[:, None] & c_ok[None, :],
                other=0.0,
            )
            wv = tl.load(w_ptr + wrow + i * kg + j, mask=c_ok, other=0.0)
            acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
    tl.store(
        y_ptr + p[:, None] * CT + c[None, :],
        acc.to(y_ptr.dtype.element_ty),
        mask=p_ok[:, None] & c_ok[None, :],
    )


@triton.jit
def _grouped_dw_dx_kernel(
    dy_ptr, w_ptr, dx_ptr, ctiles_ptr, cmeta_ptr, NPIX, H, W, Ho, Wo, CT,
    STRIDE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Input pixels ``[pid0 * BLOCK_P, +BLOCK_P)`` (of ``N*H*W``) x the channel tile ``pid1``."""
    c, c_ok, kg, pad, wrow = _dw_tile(ctiles_ptr, cmeta_ptr, BLOCK_C)
    p = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = p < NPIX
    n, h, w = _nhw(p, H, W)
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for i in range(0, kg):
        th = h + pad - i
        ho = th // STRIDE
        h_ok = p_ok & (th >= 0) & (ho * STRIDE == th) & (ho < Ho)
        for j in range(0, kg):
            tw = w + pad - j
            wo = tw // STRIDE
            ok = h_ok & (tw >= 0) & (wo * STRIDE == tw) & (wo < Wo)
            dv = tl.load(
                dy_ptr + ((n * Ho + ho) * Wo + wo)[:, None] * CT + c[None, :],
                mask=ok[:, None] & c_ok[None, :],
                other=0.0,
            )
            wv = tl.load(w_ptr + wrow + i * kg + j, mask=c_ok, other=0.0)
            acc += dv.to(tl.float32) * wv.to(tl.float32)[None, :]
    tl.store(
        dx_ptr + p[:, None] * CT + c[None, :],
        acc.to(dx_ptr.dtype.element_ty),
        mask=p_ok[:, None] & c_ok[None, :],
    )


@triton.jit
def _grouped_dw_dw_kernel(
    dy_ptr, x_ptr, dw_ptr, ctiles_ptr, cmeta_ptr, NPIX, H, W, Ho, Wo, CT, PIX_PER_PROG,
    STRIDE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Output pixels ``[pid0 * PIX_PER_PROG, +PIX_PER_PROG)`` x the channel tile ``pid1``: every
    tap's partial weight gradient of those pixels, added to ``dw`` (fp32) with one atomic."""
    c, c_ok, kg, pad, wrow = _dw_tile(ctiles_ptr, cmeta_ptr, BLOCK_C)
    p_lo = tl.program_id(0).to(tl.int64) * PIX_PER_PROG
    p_hi = tl.minimum(NPIX, p_lo + PIX_PER_PROG)
    for i in range(0, kg):
        for j in range(0, kg):
            acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
            for p0 in range(p_lo, p_hi, BLOCK_P):
                p = p0 + tl.arange(0, BLOCK_P)
                p_ok = p < p_hi
                n, ho, wo = _nhw(p, Ho, Wo)
                hi = ho * STRIDE - pad + i
                wi = wo * STRIDE - pad + j
                ok = p_ok & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W)
                m2 = ok[:, None] & c_ok[None, :]
                dv = tl.load(dy_ptr + p[:, None] * CT + c[None, :], mask=m2, other=0.0)
                xv = tl.load(
                    x_ptr + ((n * H + hi) * W + wi)[:, None] * CT + c[None, :], mask=m2, other=0.0
                )
                acc += dv.to(tl.float32) * xv.to(tl.float32)
            tl.atomic_add(dw_ptr + wrow + i * kg + j, tl.sum(acc, axis=0), mask=c_ok)


# -- host side ----------------------------------------------------------------------------------


def unsupported_reason(x: torch.Tensor, *weights: torch.Tensor | None) -> str | None:
    """Why the grouped kernels cannot run on these tensors (None: they can)."""
    if x.dim() != 4:
        return f"input must be [N, C, H, W], got {tuple(x.shape)}"
    if x.dtype not in KERNEL_DTYPES:
        return f"dtype {x.dtype} (the kernels take float32, float16, bfloat16)"
    for w in weights:
        if w is not None and w.device != x.device:
            return f"weights on {w.device}, input on {x.device}"
    return None


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` channels_last -> the ``[N*H*W, C]`` row matrix (no copy if already so)."""
    return (
        t.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(-1, t.shape[1])
    )


def _from_rows(rows: torch.Tensor, n: int, h: int, w: int) -> torch.Tensor:
    """The row matrix back as a channels_last ``[N, C, H, W]`` view."""
    return rows.view(n, h, w, rows.shape[1]).permute(0, 3, 1, 2)


def _gemm_blocks(device: torch.device, dtype: torch.dtype) -> tuple[int, int, int]:
    if interpreting(device):
        return 16, 16, 16
    return (64, 64, 32) if dtype == torch.float32 else (128, 64, 32)


@functools.lru_cache(maxsize=1024)
def _gemm_tables(
    problems: tuple[tuple[int, ...], ...], block_m: int, block_n: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tiles [T, 3] int32, meta [G, 13] int64)`` on ``device`` for ``problems`` (one
    ``_META``-tuple per group); cached: a layer's groups repeat every step."""
    meta = np.asarray(problems, dtype=np.int64).reshape(len(problems), _META)
    tiles = [
        (g, i, j)
        for g, (m, n, *_rest) in enumerate(problems)
        for i in range(cdiv(m, block_m))
        for j in range(cdiv(n, block_n))
    ]
    t = np.asarray(tiles, dtype=np.int32).reshape(-1, 3)
    return torch.from_numpy(t).to(device), torch.from_numpy(meta).to(device)


def _gemm(
    a: torch.Tensor,
    b: torch.Tensor,
    c: torch.Tensor,
    problems: list[tuple[int, ...]],
    bias: torch.Tensor | None = None,
    split_k: int = 1,
    accumulate: bool = False,
) -> None:
    """Run the grouped GEMM: ``c`` is overwritten, or with ``accumulate`` (``c`` fp32, needed
    for ``split_k > 1`` and for groups that write the same elements) added to atomically."""
    if (accumulate or split_k > 1) and c.dtype != torch.float32:
        raise ValueError("an accumulating grouped GEMM needs an fp32 output")
    bm, bn, bk = _gemm_blocks(a.device, a.dtype)
    probs = tuple(tuple(int(v) for v in p) for p in problems if p[0] > 0 and p[1] > 0)
    if not probs:
        return
    tiles, meta = _gemm_tables(probs, bm, bn, a.device)
    launch(
        _grouped_gemm_kernel, (tiles.shape[0], split_k),
        a, b, c, bias if bias is not None else c, tiles, meta, split_k,
        HAS_BIAS=bias is not None, ATOMIC=accumulate or split_k > 1,
        DOT_F32=a.dtype == torch.float32 and interpreting(a.device),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=8 if bm * bn >= 8192 else 4, num_stages=2,
    )  # fmt: skip


def _split_for_reduction(tiles: int, k: int, device: torch.device) -> int:
    """Reduction splits so that a weight gradient (few tiles, ``K = P`` pixels) fills the GPU."""
    if interpreting(device):
        return max(1, min(2, cdiv(k, 16)))
    want = max(1, (4 * num_sms(device)) // max(1, tiles))
    return max(1, min(want, cdiv(k, 256)))


def pointwise_forward(
    x: torch.Tensor, weight: torch.Tensor, groups: PointwiseGroups, bias: torch.Tensor | None
) -> torch.Tensor:
    n, cx, h, w = x.shape
    xr = _rows(x)
    p = xr.shape[0]
    total = groups.total_out
    y = torch.empty(p, total, device=x.device, dtype=x.dtype)
    wt = weight.to(x.dtype).contiguous()
    problems = [
        # Y_g[P, O] = X[:, i0:i0+K] @ W_g^T: B[k, o] = W_g[o, k] (b_sk = 1, b_sn = K)
        (p, o, k, i0, cx, 1, w_off, 1, k, o0, total, 1, b_off)
        for i0, k, o, w_off, o0, b_off in zip(
            groups.in_start, groups.in_ch, groups.out_ch, groups.w_off, groups.out_start,
            groups.b_off or (0,) * len(groups.in_ch),
        )
    ]  # fmt: skip
    bias_t = bias.to(torch.float32).contiguous() if bias is not None else None
    _gemm(xr, wt, y, problems, bias_t)
    return _from_rows(y, n, h, w)


def pointwise_backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    groups: PointwiseGroups,
    need_x: bool,
    need_w: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    n, cx, h, w = x.shape
    dyr = _rows(dy.to(x.dtype))
    p, total = dyr.shape
    dx = dw = None
    wt = weight.to(x.dtype).contiguous()
    if need_x:
        # dX[:, i0:i0+K] (+)= dY_g @ W_g: B[o, k] = W_g[o, k] (b_sk = K, b_sn = 1)
        problems = [
            (p, k, o, o0, total, 1, w_off, k, 1, i0, cx, 1, 0)
            for i0, k, o, w_off, o0 in zip(
                groups.in_start, groups.in_ch, groups.out_ch, groups.w_off, groups.out_start
            )
        ]
        if groups.disjoint_inputs:  # each input column written by at most one group
            covered = sum(groups.in_ch) == cx
            dxr = (torch.empty if covered else torch.zeros)(p, cx, device=x.device, dtype=x.dtype)
            _gemm(dyr, wt, dxr, problems)
        else:  # groups sharing input channels add into one fp32 gradient
            dxr = torch.zeros(p, cx, device=x.device, dtype=torch.float32)
            _gemm(dyr, wt, dxr, problems, accumulate=True)
        dx = _from_rows(dxr.to(x.dtype), n, h, w)
    if need_w:
        xr = _rows(x)
        # dW_g[O, K] += dY_g^T @ X_g, reduced over the P pixels in splits
        problems = [
            (o, k, p, o0, 1, total, i0, cx, 1, w_off, k, 1, 0)
            for i0, k, o, w_off, o0 in zip(
                groups.in_start, groups.in_ch, groups.out_ch, groups.w_off, groups.out_start
            )
        ]
        bm, bn, _ = _gemm_blocks(x.device, x.dtype)
        tiles = sum(cdiv(o, bm) * cdiv(k, bn) for _, k, o, *_r in problems)
        dw32 = torch.zeros(weight.numel(), device=x.device, dtype=torch.float32)
        splits = _split_for_reduction(tiles, p, x.device)
        _gemm(dyr, xr, dw32, problems, split_k=splits, accumulate=True)  # groups may share W
        dw = dw32.to(weight.dtype)
    return dx, dw


def _bias_grad(dy: torch.Tensor, groups: PointwiseGroups, bias: torch.Tensor) -> torch.Tensor:
    sums = dy.float().sum(dim=(0, 2, 3))
    index = torch.cat(
        [torch.arange(b, b + o) for b, o in zip(groups.b_off or (), groups.out_ch)]
    ).to(dy.device)
    return torch.zeros(bias.numel(), device=dy.device).index_add_(0, index, sums).to(bias.dtype)


@functools.lru_cache(maxsize=1024)
def _dw_tables(
    groups: DepthwiseGroups, block_c: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(channel tiles [T, 2] = (group, first channel), cmeta [G, 4] = (start, channels, k,
    w_off))`` on ``device`` (int64)."""
    cmeta = np.asarray(
        list(zip(groups.start, groups.channels, groups.kernel, groups.w_off)), dtype=np.int64
    )
    tiles = [
        (g, c0 + i)
        for g, (c0, c) in enumerate(zip(groups.start, groups.channels))
        for i in range(0, c, block_c)
    ]
    t = np.asarray(tiles, dtype=np.int64).reshape(-1, 2)
    return torch.from_numpy(t).to(device), torch.from_numpy(cmeta).to(device)


def _dw_blocks(device: torch.device) -> tuple[int, int]:
    return (64, 16) if interpreting(device) else (64, 32)


def _dw_out_size(h: int, w: int, stride: int) -> tuple[int, int]:
    return (h - 1) // stride + 1, (w - 1) // stride + 1


def depthwise_forward(
    x: torch.Tensor, weight: torch.Tensor, groups: DepthwiseGroups, stride: int
) -> torch.Tensor:
    n, c, h, w = x.shape
    ho, wo = _dw_out_size(h, w, stride)
    xr = _rows(x)
    y = torch.empty(n * ho * wo, c, device=x.device, dtype=x.dtype)
    bp, bc = _dw_blocks(x.device)
    ctiles, cmeta = _dw_tables(groups, bc, x.device)
    launch(
        _grouped_dw_fwd_kernel, (cdiv(n * ho * wo, bp), ctiles.shape[0]),
        xr, weight.to(x.dtype).contiguous(), y, ctiles, cmeta, n * ho * wo, h, w, ho, wo, c,
        STRIDE=stride, BLOCK_P=bp, BLOCK_C=bc, num_warps=DW_WARPS, num_stages=2,
    )  # fmt: skip
    return _from_rows(y, n, ho, wo)


def depthwise_backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    groups: DepthwiseGroups,
    stride: int,
    need_x: bool,
    need_w: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    n, c, h, w = x.shape
    ho, wo = _dw_out_size(h, w, stride)
    dyr = _rows(dy.to(x.dtype))
    bp, bc = _dw_blocks(x.device)
    ctiles, cmeta = _dw_tables(groups, bc, x.device)
    dx = dw = None
    if need_x:
        dxr = torch.empty(n * h * w, c, device=x.device, dtype=x.dtype)
        launch(
            _grouped_dw_dx_kernel, (cdiv(n * h * w, bp), ctiles.shape[0]),
            dyr, weight.to(x.dtype).contiguous(), dxr, ctiles, cmeta, n * h * w, h, w, ho, wo, c,
            STRIDE=stride, BLOCK_P=bp, BLOCK_C=bc, num_warps=DW_WARPS, num_stages=2,
        )  # fmt: skip
        dx = _from_rows(dxr, n, h, w)
    if need_w:
        npix = n * ho * wo
        if interpreting(x.device):  # one pixel block per program: the tap loops dominate there
            bp = min(128, next_pow2(npix))
            splits = cdiv(npix, bp)
        else:
            splits = _split_for_reduction(ctiles.shape[0], npix, x.device)
        per = cdiv(cdiv(npix, splits), bp) * bp
        dw32 = torch.zeros(weight.numel(), device=x.device, dtype=torch.float32)
        launch(
            _grouped_dw_dw_kernel, (cdiv(npix, per), ctiles.shape[0]),
            dyr, _rows(x), dw32, ctiles, cmeta, npix, h, w, ho, wo, c, per,
            STRIDE=stride, BLOCK_P=bp, BLOCK_C=bc, num_warps=DW_WARPS, num_stages=1,
        )  # fmt: skip
        dw = dw32.to(weight.dtype)
    return dx, dw


class GroupedPointwiseFunction(torch.autograd.Function):
    """Autograd of :func:`pointwise_forward` (the grouped 1x1 convs)."""

    @staticmethod
    def forward(ctx, x, weight, bias, groups):  # type: ignore[override]
        ctx.save_for_backward(x, weight, bias)
        ctx.groups = groups
        return pointwise_forward(x, weight, groups, bias)

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        x, weight, bias = ctx.saved_tensors
        need_x, need_w, need_b, _ = ctx.needs_input_grad
        dx, dw = pointwise_backward(dy, x, weight, ctx.groups, need_x, need_w)
        db = _bias_grad(dy, ctx.groups, bias) if need_b and bias is not None else None
        return dx, dw, db, None


class GroupedDepthwiseFunction(torch.autograd.Function):
    """Autograd of :func:`depthwise_forward` (the grouped depthwise convs)."""

    @staticmethod
    def forward(ctx, x, weight, groups, stride):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.groups, ctx.stride = groups, stride
        return depthwise_forward(x, weight, groups, stride)

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        need_x, need_w, _, _ = ctx.needs_input_grad
        dx, dw = depthwise_backward(dy, x, weight, ctx.groups, ctx.stride, need_x, need_w)
        return dx, dw, None, None


def grouped_pointwise(
    x: torch.Tensor,
    weight: torch.Tensor,
    groups: PointwiseGroups,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """The grouped 1x1 convs (:func:`.grouped_ref.grouped_pointwise_ref`): the Triton kernel where
    :func:`~.dispatch.use_kernels` says so and the tensors are supported, else the reference."""
    if use_kernels(x) and unsupported_reason(x, weight, bias) is None:
        return GroupedPointwiseFunction.apply(x, weight, bias, groups)
    return grouped_pointwise_ref(x, weight, groups, bias)


def grouped_depthwise(
    x: torch.Tensor, weight: torch.Tensor, groups: DepthwiseGroups, stride: int = 1
) -> torch.Tensor:
    """The grouped depthwise convs (:func:`.grouped_ref.grouped_depthwise_ref`), kernel or
    reference as :func:`grouped_pointwise`."""
    if use_kernels(x) and unsupported_reason(x, weight) is None:
        return GroupedDepthwiseFunction.apply(x, weight, groups, stride)
    return grouped_depthwise_ref(x, weight, groups, stride)


__all__ = [
    "DepthwiseGroups",
    "GroupedDepthwiseFunction",
    "GroupedPointwiseFunction",
    "PointwiseGroups",
    "depthwise_backward",
    "depthwise_forward",
    "grouped_depthwise",
    "grouped_depthwise_ref",
    "grouped_pointwise",
    "grouped_pointwise_ref",
    "pointwise_backward",
    "pointwise_forward",
    "unsupported_reason",
]
