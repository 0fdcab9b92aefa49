"""Training-mode BatchNorm pieces that do not live inside a convolution kernel.

The convolution kernels sum ``z`` and ``z^2`` per channel in their epilogues and apply
``act(z * scale + shift)`` in the next kernel's prologue; in between, one tiny launch turns sums into
the affine. The same split in the backward pass:

    forward   mean = S1 / M,  var = S2 / M - mean^2 (biased, for normalising),
              rstd = (var + eps)^-1/2,  scale = gamma * rstd,  shift = beta - mean * scale,
              var * M / (M - 1) is the unbiased variance of the running-statistics update
    backward  with du = dL/d(BN output) and xhat = (z - mean) * rstd:
              dgamma = sum du * xhat,  dbeta = sum du,
              dz = gamma * rstd / M * (M du - sum du - xhat * sum du * xhat) = A du + B z + C,
              A = gamma * rstd,  B = -gamma * rstd^2 * dgamma / M,  C = -gamma * rstd * dbeta / M - B * mean

so every normalising or gradient pass is a per-channel affine of at most two tensors, which the
consumer kernels apply in their prologues. The var = E[z^2] - mean^2 form loses digits when
|mean| >> std; after a conv the channel means are within a few std of 0 (at |mean| = 10 std the
relative error of var is ~1e-5 in fp32), which is well inside the bf16 budget.

Kernels here: :func:`_bn_train_finalize_kernel`, :func:`_bn_gram_finalize_kernel` (the same from
the Gram matrix of the conv's input, for the BN after the expand conv), :func:`_bn_bwd_coef_kernel`
(tiny), :func:`_bn_bwd_reduce_kernel` (the two backward sums of a tensor that no
kernel produced in-epilogue: the block output's ``dy``; or, as :func:`channel_sums`, the forward
sums of such a tensor: cuDNN's depthwise output in :mod:`.mbconv_partial`),
:func:`_bn_eval_fold_kernel` (eval-mode BN as a ``(scale, shift)`` pair for a consumer's
``PRO_AFFINE`` prologue), :func:`_affine_act_kernel` (the block's
last BN + residual, or the SE pooling of ``act(BN(z))``) and :func:`_bn_bwd_apply_kernel` (``dz``
of the depthwise output, with the SE pooling term). On the host, :func:`update_running_stats`
moves the BN buffers with the finalized statistics. :func:`batch_norm_ref` is the reference the
tests hold this path to (statistics, normalised output and buffer updates, ``momentum=None``
included).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch.nn import functional as F

from .activations import act_code, act_fwd, act_grad
from .alignment import assume_multiple, channel_align
from .launch import cdiv, clamp_pow2, interpreting, launch, num_sms, split_for

# Rows of the packed per-BN forward statistics ``[5, C]`` written by the finalize kernel.
MEAN, RSTD, SCALE, SHIFT, VAR_UNBIASED = range(5)
STAT_ROWS = 5


@triton.jit
def bn_eval_affine(gamma_ptr, beta_ptr, mean_ptr, var_ptr, offs, mask, eps):
    """Eval-mode BN at ``offs`` folded to fp32 ``(scale, shift)``: ``y = x * scale + shift``
    with ``scale = gamma / sqrt(running_var + eps)``, ``shift = beta - running_mean * scale``
    (masked lanes: scale ``1 / sqrt(1 + eps)``, shift 0)."""
    gamma = tl.load(gamma_ptr + offs, mask=mask, other=1.0).to(tl.float32)
    beta = tl.load(beta_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    rmean = tl.load(mean_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    rvar = tl.load(var_ptr + offs, mask=mask, other=1.0).to(tl.float32)
    scale = gamma * tl.rsqrt(rvar + eps)
    return scale, beta - rmean * scale


@triton.jit
def _bn_train_finalize_kernel(
    sums_ptr, gamma_ptr, beta_ptr, out_ptr, C, count, eps, BLOCK: tl.constexpr
):
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = c < C
    s = tl.load(sums_ptr + c, mask=ok, other=0.0)
    q = tl.load(sums_ptr + C + c, mask=ok, other=0.0)
    gamma = tl.load(gamma_ptr + c, mask=ok, other=1.0).to(tl.float32)
    beta = tl.load(beta_ptr + c, mask=ok, other=0.0).to(tl.float32)
    mean = s / count
    var = tl.maximum(q / count - mean * mean, 0.0)
    rstd = tl.rsqrt(var + eps)
    scale = gamma * rstd
    tl.store(out_ptr + c, mean, mask=ok)
    tl.store(out_ptr + C + c, rstd, mask=ok)
    tl.store(out_ptr + 2 * C + c, scale, mask=ok)
    tl.store(out_ptr + 3 * C + c, beta - mean * scale, mask=ok)
    tl.store(out_ptr + 4 * C + c, var * (count / (count - 1.0)), mask=ok)


@triton.jit
def _bn_gram_finalize_kernel(
    g_ptr, w_ptr, gamma_ptr, beta_ptr, out_ptr, E, CIN, count, eps,
    BLOCK_E: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Training-BN statistics of ``z = x W^T`` *before* ``z`` exists, from the Gram matrix of the
    input ``G = [x, 1]^T x`` (``[CIN + 1, CIN]``, last row the column sums ``s``):
    ``mean_e = w_e . s / M``, ``E[z_e^2] = w_e^T G w_e / M`` (performance.md 2.5 (iii)). Writes
    the same ``[5, E]`` rows as :func:`_bn_train_finalize_kernel`."""
    e = tl.program_id(0) * BLOCK_E + tl.arange(0, BLOCK_E)
    e_ok = e < E
    sq = tl.zeros([BLOCK_E], dtype=tl.float32)
    mu = tl.zeros([BLOCK_E], dtype=tl.float32)
    for j0 in range(0, CIN, BLOCK_C):
        j = j0 + tl.arange(0, BLOCK_C)
        j_ok = j < CIN
        t = tl.zeros([BLOCK_E, BLOCK_C], dtype=tl.float32)
        for k0 in range(0, CIN, BLOCK_C):
            kk = k0 + tl.arange(0, BLOCK_C)
            k_ok = kk < CIN
            wk = tl.load(w_ptr + e[:, None] * CIN + kk[None, :], mask=e_ok[:, None] & k_ok[None, :],
                         other=0.0)  # fmt: skip
            gk = tl.load(g_ptr + kk[:, None] * CIN + j[None, :], mask=k_ok[:, None] & j_ok[None, :],
                         other=0.0)  # fmt: skip
            t = tl.dot(wk.to(tl.float32), gk, t, input_precision="ieee")
        wj = tl.load(w_ptr + e[:, None] * CIN + j[None, :], mask=e_ok[:, None] & j_ok[None, :],
                     other=0.0).to(tl.float32)  # fmt: skip
        sq += tl.sum(t * wj, axis=1)
        s = tl.load(g_ptr + CIN * CIN + j, mask=j_ok, other=0.0)
        mu += tl.sum(wj * s[None, :], axis=1)
    gamma = tl.load(gamma_ptr + e, mask=e_ok, other=1.0).to(tl.float32)
    beta = tl.load(beta_ptr + e, mask=e_ok, other=0.0).to(tl.float32)
    mean = mu / count
    var = tl.maximum(sq / count - mean * mean, 0.0)
    rstd = tl.rsqrt(var + eps)
    scale = gamma * rstd
    tl.store(out_ptr + e, mean, mask=e_ok)
    tl.store(out_ptr + E + e, rstd, mask=e_ok)
    tl.store(out_ptr + 2 * E + e, scale, mask=e_ok)
    tl.store(out_ptr + 3 * E + e, beta - mean * scale, mask=e_ok)
    tl.store(out_ptr + 4 * E + e, var * (count / (count - 1.0)), mask=e_ok)


@triton.jit
def _bn_bwd_coef_kernel(
    sums_ptr, stats_ptr, gamma_ptr, coef_ptr, dgamma_ptr, dbeta_ptr, C, count,
    BLOCK: tl.constexpr,
):  # fmt: skip
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = c < C
    sdu = tl.load(sums_ptr + c, mask=ok, other=0.0)
    sdux = tl.load(sums_ptr + C + c, mask=ok, other=0.0)
    mean = tl.load(stats_ptr + c, mask=ok, other=0.0)
    rstd = tl.load(stats_ptr + C + c, mask=ok, other=0.0)
    gamma = tl.load(gamma_ptr + c, mask=ok, other=0.0).to(tl.float32)
    a = gamma * rstd
    b = -a * rstd * sdux / count
    tl.store(coef_ptr + c, a, mask=ok)
    tl.store(coef_ptr + C + c, b, mask=ok)
    tl.store(coef_ptr + 2 * C + c, -a * sdu / count - b * mean, mask=ok)
    tl.store(dgamma_ptr + c, sdux, mask=ok)
    tl.store(dbeta_ptr + c, sdu, mask=ok)


@triton.jit
def _bn_eval_fold_kernel(
    gamma_ptr, beta_ptr, mean_ptr, var_ptr, out_ptr, C, eps, BLOCK: tl.constexpr
):
    """``out [2, C]`` = eval-mode BN's ``(scale, shift)`` (:func:`bn_eval_affine`)."""
    c = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = c < C
    scale, shift = bn_eval_affine(gamma_ptr, beta_ptr, mean_ptr, var_ptr, c, ok, eps)
    tl.store(out_ptr + c, scale, mask=ok)
    tl.store(out_ptr + C + c, shift, mask=ok)


@triton.jit
def _bn_bwd_reduce_kernel(
    g_ptr, z_ptr, mean_ptr, rstd_ptr, sums_ptr, P, C,
    SQUARES: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, ALIGN: tl.constexpr,
):  # fmt: skip
    """``sums[0, c] += sum_p g``, ``sums[1, c] += sum_p g * (z - mean) * rstd`` (grid-stride);
    with ``SQUARES``, ``sums[1, c] += sum_p g^2`` (``z``, ``mean``, ``rstd`` unread).
    ``ALIGN`` divides ``C`` (:mod:`.alignment`)."""
    C = assume_multiple(C, ALIGN)
    pid_p = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    mean = tl.load(mean_ptr + c, mask=c_ok, other=0.0)
    rstd = tl.load(rstd_ptr + c, mask=c_ok, other=0.0)
    s1 = tl.zeros([BLOCK_C], dtype=tl.float32)
    s2 = tl.zeros([BLOCK_C], dtype=tl.float32)
    local = (tl.arange(0, BLOCK_P) * C)[:, None] + c[None, :]
    for tile in range(pid_p, tl.cdiv(P, BLOCK_P), tl.num_programs(0)):
        p = tile * BLOCK_P + tl.arange(0, BLOCK_P)
        m = (p < P)[:, None] & c_ok[None, :]
        base = tl.cast(tile, tl.int64) * BLOCK_P * C  # 64-bit scalar, int32 offsets in the tile
        g = tl.load(g_ptr + base + local, mask=m, other=0.0).to(tl.float32)
        s1 += tl.sum(g, axis=0)
        if SQUARES:  # masked entries are 0
            s2 += tl.sum(g * g, axis=0)
        else:
            z = tl.load(z_ptr + base + local, mask=m, other=0.0).to(tl.float32)
            s2 += tl.sum(tl.where(m, g * (z - mean[None, :]) * rstd[None, :], 0.0), axis=0)
    tl.atomic_add(sums_ptr + c, s1, mask=c_ok)
    tl.atomic_add(sums_ptr + C + c, s2, mask=c_ok)


@triton.jit
def _affine_act_kernel(
    z_ptr, out_ptr, res_ptr, sa_ptr, sb_ptr, pool_ptr, N, HW, C, IMGS, pool_scale,
    ACT: tl.constexpr, RESIDUAL: tl.constexpr, STORE: tl.constexpr, POOL: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, ALIGN: tl.constexpr,
):  # fmt: skip
    """``y = act(z * a[c] + b[c]) (+ res)`` on pixels ``[pid_t*BLOCK_P, +BLOCK_P)`` of images
    ``pid_g*IMGS ...``: stored, and/or its per-image mean added to ``pool [N, C]``. ``ALIGN``
    divides ``C``."""
    C = assume_multiple(C, ALIGN)
    r = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    n0 = tl.program_id(1) * IMGS
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    m = (r < HW)[:, None] & c_ok[None, :]
    sa = tl.load(sa_ptr + c, mask=c_ok, other=0.0)
    sb = tl.load(sb_ptr + c, mask=c_ok, other=0.0)
    local = (r * C)[:, None] + c[None, :]
    for n in range(n0, tl.minimum(n0 + IMGS, N)):
        offs = tl.cast(n, tl.int64) * HW * C + local
        z = tl.load(z_ptr + offs, mask=m, other=0.0).to(tl.float32)
        y = act_fwd(z * sa[None, :] + sb[None, :], ACT)
        if RESIDUAL:
            y += tl.load(res_ptr + offs, mask=m, other=0.0).to(tl.float32)
        if STORE:
            tl.store(out_ptr + offs, y, mask=m)
        if POOL:
            col = tl.sum(tl.where(m, y, 0.0), axis=0)
            tl.atomic_add(pool_ptr + (n * C + c), col * pool_scale, mask=c_ok)


@triton.jit
def _bn_bwd_apply_kernel(
    g_ptr, z_ptr, out_ptr, ca_ptr, cb_ptr, cc_ptr, sa_ptr, sb_ptr, dmh_ptr, P, HW, C,
    ACT: tl.constexpr, SE_TERM: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
    ALIGN: tl.constexpr,
):  # fmt: skip
    """``dz = A (g + dmh[n, c] * act'(z * sa + sb)) + B z + C``; ``out`` may alias ``g``.

    ``g`` is the gradient that reached ``u = BN(z)`` through the activation, except the SE
    pooling path, whose per-pixel share ``dmh = dL/dmean / HW`` is added here (``SE_TERM``).
    ``ALIGN`` divides ``C``."""
    C = assume_multiple(C, ALIGN)
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    m = (p < P)[:, None] & c_ok[None, :]
    offs = tl.cast(tl.program_id(0), tl.int64) * BLOCK_P * C + (
        (tl.arange(0, BLOCK_P) * C)[:, None] + c[None, :]
    )
    g = tl.load(g_ptr + offs, mask=m, other=0.0).to(tl.float32)
    z = tl.load(z_ptr + offs, mask=m, other=0.0).to(tl.float32)
    ca = tl.load(ca_ptr + c, mask=c_ok, other=0.0)
    cb = tl.load(cb_ptr + c, mask=c_ok, other=0.0)
    cc = tl.load(cc_ptr + c, mask=c_ok, other=0.0)
    if SE_TERM:
        sa = tl.load(sa_ptr + c, mask=c_ok, other=0.0)
        sb = tl.load(sb_ptr + c, mask=c_ok, other=0.0)
        dmh = tl.load(dmh_ptr + ((p // HW) * C)[:, None] + c[None, :], mask=m, other=0.0)
        g += dmh * act_grad(z * sa[None, :] + sb[None, :], ACT)
    tl.store(out_ptr + offs, ca[None, :] * g + cb[None, :] * z + cc[None, :], mask=m)


# ---------------------------------------------------------------------------------------------


def bn_train_finalize(
    sums: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, out: torch.Tensor, count: int,
    eps: float,
) -> torch.Tensor:  # fmt: skip
    """``sums [2, C]`` -> ``out [5, C]`` rows MEAN, RSTD, SCALE, SHIFT, VAR_UNBIASED."""
    C = gamma.shape[0]
    block = 64 if interpreting(sums.device) else 1024
    launch(
        _bn_train_finalize_kernel, (cdiv(C, block),), sums, gamma, beta, out, C, float(count),
        float(eps), BLOCK=block, num_warps=4, num_stages=1,
    )  # fmt: skip
    return out


def bn_gram_finalize(
    gram: torch.Tensor, weight: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
    out: torch.Tensor, count: int, eps: float,
) -> torch.Tensor:  # fmt: skip
    """``gram [Cin + 1, Cin]`` of the input and ``weight [E, Cin]`` -> ``out [5, E]`` (as
    :func:`bn_train_finalize`) for the BN after the 1x1 conv ``x W^T``."""
    E, cin = weight.shape
    be = 16 if interpreting(gram.device) else 64
    launch(
        _bn_gram_finalize_kernel, (cdiv(E, be),), gram, weight, gamma, beta, out, E, cin,
        float(count), float(eps), BLOCK_E=be, BLOCK_C=clamp_pow2(cin, 16, 32), num_warps=4,
        num_stages=1,
    )  # fmt: skip
    return out


def bn_eval_fold(
    gamma: torch.Tensor, beta: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, eps: float,
    out: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """``out [2, C]`` fp32 = ``(scale, shift)`` of eval-mode BN (running statistics), for a
    consumer that applies an affine (``PRO_AFFINE``, :func:`affine_act`) rather than BN-eval."""
    C = gamma.shape[0]
    block = 64 if interpreting(gamma.device) else 1024
    launch(
        _bn_eval_fold_kernel, (cdiv(C, block),), gamma, beta, mean, var, out, C, float(eps),
        BLOCK=block, num_warps=4, num_stages=1,
    )  # fmt: skip
    return out


def bn_bwd_coef(
    sums: torch.Tensor, stats: torch.Tensor, gamma: torch.Tensor, coef: torch.Tensor,
    dgamma: torch.Tensor, dbeta: torch.Tensor, count: int,
) -> None:  # fmt: skip
    """``sums [2, C]`` (sum du, sum du*xhat) and ``stats`` (rows MEAN, RSTD) -> ``coef [3, C]``
    (A, B, C) and the fp32 ``dgamma``, ``dbeta``."""
    C = gamma.shape[0]
    block = 64 if interpreting(sums.device) else 1024
    launch(
        _bn_bwd_coef_kernel, (cdiv(C, block),), sums, stats, gamma, coef, dgamma, dbeta, C,
        float(count), BLOCK=block, num_warps=4, num_stages=1,
    )  # fmt: skip


def _block_pc(C: int, device: torch.device) -> tuple[int, int]:
    if interpreting(device):
        return 16, 16
    bc = clamp_pow2(C, 16, 64)
    return 2048 // bc, bc  # 2048 elements per program: 16 per thread at 4 warps


def bn_bwd_reduce(
    g: torch.Tensor, z: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, sums: torch.Tensor
) -> None:
    """``sums [2, C]`` (zeroed) += (sum g, sum g * (z - mean) * rstd) over the rows of g, z."""
    _reduce(g, z, mean, rstd, sums, squares=False)


def channel_sums(z: torch.Tensor, sums: torch.Tensor) -> None:
    """``sums [2, C]`` (zeroed) += (sum z, sum z^2) over the rows of ``z [P, C]``: the input of
    :func:`bn_train_finalize` for a tensor whose producer summed nothing (a cuDNN conv's output)."""
    _reduce(z, z, sums, sums, sums, squares=True)


def _reduce(
    g: torch.Tensor, z: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, sums: torch.Tensor,
    *, squares: bool,
) -> None:  # fmt: skip
    P, C = g.shape
    bp, bc = _block_pc(C, g.device)
    ct = cdiv(C, bc)
    progs = split_for(cdiv(P, bp), ct, 8 * num_sms(g.device) if not interpreting(g.device) else 2)
    launch(
        _bn_bwd_reduce_kernel, (progs, ct), g, z, mean, rstd, sums, P, C, SQUARES=squares,
        BLOCK_P=bp, BLOCK_C=bc, ALIGN=channel_align(C), num_warps=4, num_stages=2,
    )  # fmt: skip


def affine_act(
    z: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    geom: tuple[int, int],
    *,
    act: str = "none",
    out: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    pool: torch.Tensor | None = None,
) -> None:
    """``out = act(z * scale + shift) (+ residual)`` and/or ``pool [N, C] += per-image mean``.

    ``z``: ``[N*HW, C]`` rows; ``geom = (N, HW)``."""
    N, HW = geom
    C = z.shape[1]
    dev = z.device
    bp, bc = _block_pc(C, dev)
    bp = min(bp, max(16, 1 << (HW - 1).bit_length()))  # tiles never cross an image
    tiles = cdiv(HW, bp)
    if interpreting(dev):
        imgs = 2
    else:
        imgs = (
            cdiv(N, split_for(N, tiles * cdiv(C, bc), 16 * num_sms(dev))) if pool is not None else 1
        )
    launch(
        _affine_act_kernel, (tiles, cdiv(N, imgs), cdiv(C, bc)),
        z, out if out is not None else z, residual if residual is not None else z, scale, shift,
        pool if pool is not None else z, N, HW, C, imgs, 1.0 / HW,
        ACT=act_code(act), RESIDUAL=residual is not None, STORE=out is not None,
        POOL=pool is not None, BLOCK_P=bp, BLOCK_C=bc, ALIGN=channel_align(C), num_warps=4,
        num_stages=2,
    )  # fmt: skip


def bn_bwd_apply(
    g: torch.Tensor,
    z: torch.Tensor,
    coef: torch.Tensor,
    out: torch.Tensor,
    HW: int,
    *,
    se_term: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    act: str = "none",
) -> None:
    """``out = A (g + dmh * act'(z*sa + sb)) + B z + C`` with ``coef = [A; B; C]`` and
    ``se_term = (dmh [N, C], sa, sb)``; ``out`` may be ``g`` (in place)."""
    P, C = g.shape
    dev = g.device
    bp, bc = _block_pc(C, dev)
    se = se_term if se_term is not None else (g, g, g)
    launch(
        _bn_bwd_apply_kernel, (cdiv(P, bp), cdiv(C, bc)), g, z, out, coef[0], coef[1], coef[2],
        se[1], se[2], se[0], P, HW, C, ACT=act_code(act), SE_TERM=se_term is not None,
        BLOCK_P=bp, BLOCK_C=bc, ALIGN=channel_align(C), num_warps=4, num_stages=2,
    )  # fmt: skip


def update_running_stats(
    bns: Sequence[torch.nn.BatchNorm2d], stats: Sequence[torch.Tensor]
) -> None:
    """Update each BN's buffers from its packed statistics ``[STAT_ROWS, C]`` (the finalize
    kernels' output) as ``nn.BatchNorm2d`` does in training: ``num_batches_tracked += 1`` and
    ``running = (1 - m) running + m batch`` (the unbiased variance for ``running_var``) with
    ``m = momentum``, or ``m = 1 / num_batches_tracked`` after the increment when ``momentum`` is
    None: the cumulative average over batches that BN recalibration relies on."""
    with torch.no_grad():
        momenta = {bn.momentum for bn in bns}
        dtypes = {bn.running_mean.dtype for bn in bns}
        if len(momenta) == 1 and None not in momenta and dtypes == {torch.float32}:
            # the common case: two foreach launches
            running = [t for bn in bns for t in (bn.running_mean, bn.running_var)]
            batch = [b[r] for b in stats for r in (MEAN, VAR_UNBIASED)]
            torch._foreach_lerp_(running, batch, float(momenta.pop()))
            torch._foreach_add_([bn.num_batches_tracked for bn in bns], 1)
            return
        for bn, b in zip(bns, stats):
            bn.num_batches_tracked.add_(1)
            for buf, row in ((bn.running_mean, MEAN), (bn.running_var, VAR_UNBIASED)):
                if bn.momentum is None:  # a tensor weight: no host sync on the count
                    weight = bn.num_batches_tracked.to(buf.dtype).reciprocal()
                else:
                    weight = float(bn.momentum)
                buf.lerp_(b[row].to(buf.dtype), weight)


def batch_norm_ref(z: torch.Tensor, bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    """The reference of this module's training path: ``bn``'s forward on ``z`` (``[P, C]`` rows,
    which ``nn.BatchNorm2d`` itself does not take, or ``[N, C, H, W]``), written with
    ``F.batch_norm``, with the buffer updates of ``nn.BatchNorm2d.forward``: in training
    ``num_batches_tracked += 1`` and the running statistics move by ``momentum``, or by
    ``1 / num_batches_tracked`` when ``momentum`` is None (the cumulative average)."""
    momentum = 0.0
    if bn.training:
        bn.num_batches_tracked.add_(1)
        momentum = bn.momentum if bn.momentum is not None else 1.0 / int(bn.num_batches_tracked)
    return F.batch_norm(
        z, bn.running_mean, bn.running_var, bn.weight, bn.bias, bn.training, momentum, bn.eps
    )


__all__ = [
    "MEAN",
    "RSTD",
    "SCALE",
    "SHIFT",
    "STAT_ROWS",
    "VAR_UNBIASED",
    "affine_act",
    "batch_norm_ref",
    "bn_bwd_apply",
    "bn_bwd_coef",
    "bn_bwd_reduce",
    "bn_eval_affine",
    "bn_eval_fold",
    "bn_gram_finalize",
    "bn_train_finalize",
    "channel_sums",
    "update_running_stats",
]
