"""The MBConv block on the host: which kernels run, in which order, on which buffers.

Three implementations, one per custom op of :mod:`.mbconv_ops`: :func:`mbconv_infer_impl`,
:func:`mbconv_train_fwd_impl` and :func:`mbconv_train_bwd_impl`. They take tensors (no modules),
allocate the intermediates and call the launchers of :mod:`.pointwise`, :mod:`.depthwise`,
:mod:`.batchnorm` and :mod:`.mbconv_kernels`; ``tools/aot.py`` runs them on meta tensors to
record the launches.

Notation: x ``[N, Cin, H, W]`` (channels_last, so ``[P_in, Cin]`` rows), hidden ``E``, kernel
``k``, stride ``s``, output ``[N, Cout, Ho, Wo]``; ``P1 = N*H*W`` (expand grid), ``P2 = N*Ho*Wo``.

**Inference** (eval BN, folded in-kernel from gamma/beta/running stats; no host-side folding):

* no SE: 2 launches.  ``h1 = act(BN1(x W1^T))`` (:func:`pw_conv_fwd`), then
  :func:`~.mbconv_kernels.dw_project_fwd`: ``y = BN3(act(BN2(dw(h1))) W3^T) (+ x)`` with the
  depthwise tile kept in registers and fed straight to the project GEMM, so ``h2`` never exists.
  HBM: ``x + 2*h1 + y (+ x)``; why ``h1`` makes that round trip: :mod:`.mbconv_kernels`.
* SE: 5 launches. The SE gate needs the mean of the whole ``h2`` over the image before the
  project conv can start, so ``h2`` is written once: expand; dw + BN2 + act + SE pooling in the
  epilogue; the two SE convs (``N`` rows, tiny); project with the gate in its prologue + BN3 +
  residual.

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
  3. :func:`~.mbconv_kernels.project_bwd`: ``dA = dz3 W3`` (dz3 rebuilt in the prologue), the SE gate
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
(1.5 GB, 0.46 ms of HBM time at 56x56, E = 192, batch 256, bf16) for 2 more reads of ``x``.
The statistics match those of the stored ``z1`` up to fp32 rounding (the reference computes them
from the rounded bf16 ``z1``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from .activations import act_grad_ref, act_ref
from .batchnorm import (
    MEAN,
    RSTD,
    SCALE,
    SHIFT,
    STAT_ROWS,
    affine_act,
    bn_bwd_apply,
    bn_bwd_coef,
    bn_bwd_reduce,
    bn_gram_finalize,
    bn_train_finalize,
)
from .depthwise import dw_conv_bwd, dw_conv_fwd, dw_out_size
from .launch import next_pow2
from .mbconv_kernels import MAX_FUSED_COUT, dw_project_fwd, project_bwd
from .pointwise import (
    EPI_AFFINE,
    EPI_BIAS,
    EPI_BN_EVAL,
    PRO_AFFINE,
    PRO_BN_BWD_X,
    pw_conv_fwd,
    pw_conv_wgrad,
)


@dataclass(frozen=True)
class BlockGeometry:
    """The sizes of one block call: input ``[N, cin, H, W]``, hidden ``E``, output channels, the
    expand conv's output grid ``Hs x Ws`` and the block's output grid ``Ho x Wo``."""

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


def block_geometry(
    x: torch.Tensor, w1: torch.Tensor, w3: torch.Tensor, stride: int, es: int
) -> BlockGeometry:
    """The geometry of a call with input ``x``, expand weight ``w1``, project weight ``w3``,
    depthwise stride ``stride`` and expand stride ``es``."""
    N, cin, H, W = x.shape
    Hs, Ws = dw_out_size(H, es), dw_out_size(W, es)
    return BlockGeometry(
        N, cin, H, W, w1.shape[0], w3.shape[0], Hs, Ws, dw_out_size(Hs, stride),
        dw_out_size(Ws, stride),
    )  # fmt: skip


def rows(t: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` channels_last -> its ``[N*H*W, C]`` row view (no copy)."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def empty_channels_last(n: int, c: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """An uninitialised channels_last ``[n, c, h, w]`` tensor with ``like``'s dtype and device."""
    return torch.empty(
        (n, c, h, w), dtype=like.dtype, device=like.device, memory_format=torch.channels_last
    )


def w2d(w: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv weight ``[O, C, 1, 1]`` as ``[O, C]`` (a view)."""
    return w.reshape(w.shape[0], w.shape[1])


def se_gate_fwd(
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
    pw_conv_fwd(pool, w2d(sw1), s, epi=EPI_BIAS, epi_vecs=(sb1,), epi_act=se_act)
    pw_conv_fwd(s, w2d(sw2), out, epi=EPI_BIAS, epi_vecs=(sb2,), epi_act=se_gate)
    return out


def expand_infer(
    x: torch.Tensor, w1: torch.Tensor, w3: torch.Tensor, bn1: tuple[torch.Tensor, ...],
    stride: int, expand_stride: int, act: str, eps1: float,
) -> tuple[BlockGeometry, torch.Tensor]:  # fmt: skip
    """The first step of an inference call, whatever runs the depthwise conv: its geometry and
    ``h1 = act(BN1(x W1^T))`` as ``[P1, E]`` rows (one pw launch, BN1-eval + act epilogue;
    ``bn1 = (gamma, beta, running mean, running var)``)."""
    g = block_geometry(x, w1, w3, stride, expand_stride)
    h1 = torch.empty((g.P1, g.hidden), dtype=x.dtype, device=x.device)
    pw_conv_fwd(
        rows(x), w2d(w1), h1, geom=(g.N, g.Hs, g.Ws, g.H, g.W), in_stride=expand_stride,
        epi=EPI_BN_EVAL, epi_vecs=bn1, eps=eps1, epi_act=act,
    )  # fmt: skip
    return g, h1


def mbconv_infer_impl(
    x: torch.Tensor, w1: torch.Tensor, g1: torch.Tensor, b1: torch.Tensor, m1: torch.Tensor,
    v1: torch.Tensor, wdw: torch.Tensor, g2: torch.Tensor, b2: torch.Tensor, m2: torch.Tensor,
    v2: torch.Tensor, w3: torch.Tensor, g3: torch.Tensor, b3: torch.Tensor, m3: torch.Tensor,
    v3: torch.Tensor, sw1: torch.Tensor | None, sb1: torch.Tensor | None, sw2: torch.Tensor | None,
    sb2: torch.Tensor | None, stride: int, expand_stride: int, act: str, se_act: str,
    se_gate: str, residual: bool, eps1: float, eps2: float, eps3: float,
) -> torch.Tensor:  # fmt: skip
    g, h1 = expand_infer(x, w1, w3, (g1, b1, m1, v1), stride, expand_stride, act, eps1)
    y = empty_channels_last(g.N, g.cout, g.Ho, g.Wo, x)
    yr = rows(y)
    res = rows(x) if residual else None
    has_se = sw1 is not None
    if not has_se and next_pow2(g.cout) <= MAX_FUSED_COUT:
        dw_project_fwd(
            h1, wdw, w2d(w3), yr, (g.N, g.Hs, g.Ws), stride, (g2, b2, m2, v2), (g3, b3, m3, v3),
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
        gate = se_gate_fwd(pool, sw1, sb1, sw2, sb2, se_act, se_gate, torch.empty_like(pool))
    pw_conv_fwd(
        h2, w2d(w3), yr, geom=(g.N, g.Ho, g.Wo, g.Ho, g.Wo), gate=gate, epi=EPI_BN_EVAL,
        epi_vecs=(g3, b3, m3, v3), eps=eps3, residual=res,
    )  # fmt: skip
    return y


def stat_blocks(stats: torch.Tensor, hidden: int, cout: int) -> tuple[torch.Tensor, ...]:
    """The packed ``stats`` as three ``[STAT_ROWS, C]`` views (BN1, BN2, BN3)."""
    n1 = STAT_ROWS * hidden
    return (
        stats[:n1].view(STAT_ROWS, hidden),
        stats[n1 : 2 * n1].view(STAT_ROWS, hidden),
        stats[2 * n1 :].view(STAT_ROWS, cout),
    )


def _dw_fwd_with_sums(
    a1: torch.Tensor, wdw: torch.Tensor, g: BlockGeometry, stride: int, sums: torch.Tensor
) -> torch.Tensor:
    """``z2 = dw(a1)`` by the Triton depthwise kernel, the sums of ``z2`` in its epilogue."""
    z2 = torch.empty((g.P2, g.hidden), dtype=a1.dtype, device=a1.device)
    dw_conv_fwd(a1, wdw, (g.N, g.Hs, g.Ws), stride, out=z2, stats=sums)
    return z2


DepthwiseFwd = Callable[
    [torch.Tensor, torch.Tensor, BlockGeometry, int, torch.Tensor], torch.Tensor
]


def train_forward(
    x: torch.Tensor, w1: torch.Tensor, g1: torch.Tensor, b1: torch.Tensor, wdw: torch.Tensor,
    g2: torch.Tensor, b2: torch.Tensor, w3: torch.Tensor, g3: torch.Tensor, b3: torch.Tensor,
    sw1: torch.Tensor | None, sb1: torch.Tensor | None, sw2: torch.Tensor | None,
    sb2: torch.Tensor | None, stride: int, expand_stride: int, act: str, se_act: str,
    se_gate: str, residual: bool, eps1: float, eps2: float, eps3: float, *,
    depthwise: DepthwiseFwd, keep_a1: bool,
) -> tuple[
    torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
]:  # fmt: skip
    """The training forward whatever runs the depthwise conv: ``depthwise(a1, wdw, geometry,
    stride, sums)`` returns ``z2 = dw(a1)`` as ``[P2, E]`` rows and adds its sums and sums of
    squares into the zeroed fp32 ``sums [2*E]``. Returns ``(y, a1, z2, z3, stats, se_buf)``,
    ``a1`` None unless ``keep_a1`` (else it is freed right after the depthwise conv)."""
    g = block_geometry(x, w1, w3, stride, expand_stride)
    dev, dt, E, cin = x.device, x.dtype, g.hidden, g.cin
    f32 = dict(dtype=torch.float32, device=dev)
    xr = rows(x)
    grid1 = (g.N, g.Hs, g.Ws, g.H, g.W)  # the expand conv's output grid and its input's size
    # One memset for every atomic accumulator: the Gram matrix [x, 1]^T x of the expand input,
    # the sums of z2 and z3.
    acc = torch.zeros((cin + 1) * cin + 2 * E + 2 * g.cout, **f32)
    gram = acc[: (cin + 1) * cin].view(cin + 1, cin)
    s2, s3 = acc[(cin + 1) * cin :][: 2 * E], acc[(cin + 1) * cin + 2 * E :]
    stats = torch.empty(STAT_ROWS * (2 * E + g.cout), **f32)
    st1, st2, st3 = stat_blocks(stats, E, g.cout)
    # BN1 statistics before the expand conv runs (mean = W1 s / M, E[z^2] = w^T G w / M), so its
    # epilogue writes a1 = act(BN1(x W1^T)) directly: z1 never exists (see "BN1" above).
    pw_conv_wgrad(
        xr, xr, gram, geom=grid1, a_stride=expand_stride, a_hw=(g.H, g.W), b_stride=expand_stride,
        append_one=True,
    )  # fmt: skip
    bn_gram_finalize(gram, w2d(w1), g1, b1, st1, g.P1, eps1)
    a1 = torch.empty((g.P1, E), dtype=dt, device=dev)
    pw_conv_fwd(
        xr, w2d(w1), a1, geom=grid1, in_stride=expand_stride, epi=EPI_AFFINE,
        epi_vecs=(st1[SCALE], st1[SHIFT]), epi_act=act,
    )  # fmt: skip
    z2 = depthwise(a1, wdw, g, stride, s2)
    kept = a1 if keep_a1 else None
    del a1  # unless kept: transient (the whole-block backward rebuilds it from x)
    bn_train_finalize(s2, g2, b2, st2, g.P2, eps2)
    gate = None
    if sw1 is not None:
        assert sb1 is not None and sw2 is not None and sb2 is not None
        se_buf = torch.zeros((2, g.N, E), **f32)  # [pooled mean m, gate g]
        affine_act(z2, st2[SCALE], st2[SHIFT], (g.N, g.Ho * g.Wo), act=act, pool=se_buf[0])
        gate = se_gate_fwd(se_buf[0], sw1, sb1, sw2, sb2, se_act, se_gate, se_buf[1])
    else:
        se_buf = torch.empty(0, **f32)
    z3 = torch.empty((g.P2, g.cout), dtype=dt, device=dev)
    pw_conv_fwd(
        z2, w2d(w3), z3, geom=(g.N, g.Ho, g.Wo, g.Ho, g.Wo), pro=PRO_AFFINE,
        pro_vecs=(st2[SCALE], st2[SHIFT]), pro_act=act, gate=gate, stats=s3,
    )  # fmt: skip
    bn_train_finalize(s3, g3, b3, st3, g.P2, eps3)
    y = empty_channels_last(g.N, g.cout, g.Ho, g.Wo, x)
    affine_act(
        z3, st3[SCALE], st3[SHIFT], (g.N, g.Ho * g.Wo), out=rows(y),
        residual=xr if residual else None,
    )  # fmt: skip
    return y, kept, z2, z3, stats, se_buf


def mbconv_train_fwd_impl(
    x: torch.Tensor, w1: torch.Tensor, g1: torch.Tensor, b1: torch.Tensor, wdw: torch.Tensor,
    g2: torch.Tensor, b2: torch.Tensor, w3: torch.Tensor, g3: torch.Tensor, b3: torch.Tensor,
    sw1: torch.Tensor | None, sb1: torch.Tensor | None, sw2: torch.Tensor | None,
    sb2: torch.Tensor | None, stride: int, expand_stride: int, act: str, se_act: str,
    se_gate: str, residual: bool, eps1: float, eps2: float, eps3: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    y, _, z2, z3, stats, se_buf = train_forward(
        x, w1, g1, b1, wdw, g2, b2, w3, g3, b3, sw1, sb1, sw2, sb2, stride, expand_stride, act,
        se_act, se_gate, residual, eps1, eps2, eps3, depthwise=_dw_fwd_with_sums, keep_a1=False,
    )  # fmt: skip
    return y, z2, z3, stats, se_buf


def se_mlp_bwd(
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
    w1, b1 = w2d(sw1).float(), sb1.float()
    w2, b2 = w2d(sw2).float(), sb2.float()
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


@dataclass
class BackwardState:
    """What :func:`backward_to_dz2` leaves for the rest of a training backward: the geometry, BN1's
    statistics, its zeroed backward sums ``r1 [2*E]`` (to be accumulated by whichever kernel
    produces ``du1``), the BN1 coefficient buffer ``c1 [3, E]`` and the gradient outputs (each a
    separate tensor: a custom op's outputs may not share storage); ``dg2 .. db3`` and
    ``se_grads`` are final, ``dg1, db1, dw1`` are filled by :func:`backward_from_du1`."""

    g: BlockGeometry
    st1: torch.Tensor
    r1: torch.Tensor
    c1: torch.Tensor
    dg1: torch.Tensor
    db1: torch.Tensor
    dw1: torch.Tensor
    dg2: torch.Tensor
    db2: torch.Tensor
    dw3: torch.Tensor
    dg3: torch.Tensor
    db3: torch.Tensor
    se_grads: list[torch.Tensor]


def backward_to_dz2(
    dy: torch.Tensor, x: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor, stats: torch.Tensor,
    se_buf: torch.Tensor, w1: torch.Tensor, g2: torch.Tensor, w3: torch.Tensor, g3: torch.Tensor,
    sw1: torch.Tensor | None, sb1: torch.Tensor | None, sw2: torch.Tensor | None,
    sb2: torch.Tensor | None, stride: int, expand_stride: int, act: str, se_act: str,
    se_gate: str,
) -> tuple[torch.Tensor, BackwardState]:  # fmt: skip
    """The first steps of a training backward, the same whatever runs the depthwise conv (1-6
    of the module doc): BN3 sums and coefficients, :func:`~.mbconv_kernels.project_bwd` (``du2``,
    the SE and BN2 sums, ``dW3``), the SE MLP backward, BN2 coefficients and ``dz2`` (in place
    over ``du2``). Returns ``(dz2 [P2, E] in x's dtype, the state for the rest)``."""
    g = block_geometry(x, w1, w3, stride, expand_stride)
    dev, E = x.device, g.hidden
    f32 = dict(dtype=torch.float32, device=dev)
    has_se = sw1 is not None
    HW2 = g.Ho * g.Wo
    dyr = rows(dy)
    st1, st2, st3 = stat_blocks(stats, E, g.cout)
    # zeroed accumulators (one memset): BN3, BN2, BN1 backward sums, the SE per-image sums
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
    dw1 = torch.zeros((E, g.cin), **f32)

    # BN3 backward: dz3 = A3 dy + B3 z3 + C3
    bn_bwd_reduce(dyr, z3, st3[MEAN], st3[RSTD], s3)
    bn_bwd_coef(s3, st3, g3, c3, dg3, db3, g.P2)
    # project + SE gate + act, into BN2's output
    gate = se_buf[1] if has_se else None
    du2 = torch.empty((g.P2, E), dtype=x.dtype, device=dev)
    fused = project_bwd(dyr, z3, c3, w2d(w3), z2, st2, gate, du2, r2, se_sums, dw3, (g.N, HW2), act)
    if not fused:
        pw_conv_wgrad(
            dyr, z2, dw3, geom=(g.N, g.Ho, g.Wo, g.Ho, g.Wo), pro_a_vecs=(c3[0], c3[1], c3[2]),
            z=z3, pro_b_vecs=(st2[SCALE], st2[SHIFT]), pro_b_act=act, gate=gate,
        )  # fmt: skip
    se_grads = [torch.empty(0, **f32) for _ in range(4)]  # distinct: outputs may not alias
    se_term = None
    if has_se:
        assert se_sums is not None and sb1 is not None and sw2 is not None and sb2 is not None
        dm, *se_grads = se_mlp_bwd(se_buf[0], se_sums[0], sw1, sb1, sw2, sb2, se_act, se_gate)
        dmh = (dm / HW2).contiguous()
        # The pooling share of dL/du2 is dmh * act'(u2): add its BN2 sums (S2, S4 = per-image
        # sums of act' and act' * xhat2 from the project backward).
        r2.view(2, E).add_(torch.stack([(dmh * se_sums[1]).sum(0), (dmh * se_sums[2]).sum(0)]))
        se_term = (dmh, st2[SCALE], st2[SHIFT])
    bn_bwd_coef(r2, st2, g2, c2, dg2, db2, g.P2)
    dz2 = du2  # in place
    bn_bwd_apply(du2, z2, c2, dz2, HW2, se_term=se_term, act=act)
    state = BackwardState(g, st1, r1, c1, dg1, db1, dw1, dg2, db2, dw3, dg3, db3, se_grads)
    return dz2, state


def backward_from_du1(
    bw: BackwardState, du1: torch.Tensor, dwdw: torch.Tensor, dy: torch.Tensor, x: torch.Tensor,
    w1: torch.Tensor, g1: torch.Tensor, expand_stride: int, residual: bool, need_dx: bool,
) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """The last steps of a training backward, once ``du1`` (the gradient at BN1's output) and
    BN1's backward sums ``bw.r1`` exist: BN1 coefficients, ``dx = dz1 W1 (+ dy)`` (only if
    ``need_dx``) and ``dW1 = dz1^T x``, both rebuilding ``dz1 = A1 du1 + B1 z1 + C1`` with ``z1``
    from ``x``. Returns the training backward op's 14 outputs (``dwdw`` as given)."""
    g, st1, c1 = bw.g, bw.st1, bw.c1
    xr, w1r = rows(x), w2d(w1)
    bn_bwd_coef(bw.r1, st1, g1, c1, bw.dg1, bw.db1, g.P1)
    if need_dx:
        if expand_stride == 1:
            dx = empty_channels_last(g.N, g.cin, g.H, g.W, x)
        else:  # a strided 1x1 conv never reads the skipped pixels
            dx = torch.zeros_like(x, memory_format=torch.channels_last)
        pw_conv_fwd(
            du1, w1r, rows(dx), geom=(g.N, g.Hs, g.Ws, g.Hs, g.Ws), out_stride=expand_stride,
            out_hw=(g.H, g.W), weight_transposed=True, pro=PRO_BN_BWD_X,
            pro_vecs=(c1[0], c1[1], c1[2]), z=xr, z_weight=w1r,
            residual=rows(dy) if residual else None,
        )  # fmt: skip
    else:
        dx = torch.empty(0, dtype=x.dtype, device=x.device)
    pw_conv_wgrad(
        du1, xr, bw.dw1, geom=(g.N, g.Hs, g.Ws, g.H, g.W), b_stride=expand_stride,
        pro_a_vecs=(c1[0], c1[1], c1[2]), z_weight=w1r,
    )  # fmt: skip
    return (
        dx, bw.dw1, bw.dg1, bw.db1, dwdw, bw.dg2, bw.db2, bw.dw3, bw.dg3, bw.db3,
        *bw.se_grads,
    )  # fmt: skip


def mbconv_train_bwd_impl(
    dy: torch.Tensor, x: torch.Tensor, z2: torch.Tensor, z3: torch.Tensor,
    stats: torch.Tensor, se_buf: torch.Tensor, w1: torch.Tensor, g1: torch.Tensor,
    wdw: torch.Tensor, g2: torch.Tensor, w3: torch.Tensor, g3: torch.Tensor,
    sw1: torch.Tensor | None, sb1: torch.Tensor | None, sw2: torch.Tensor | None,
    sb2: torch.Tensor | None, stride: int, expand_stride: int, act: str, se_act: str,
    se_gate: str, residual: bool, need_dx: bool,
) -> tuple[torch.Tensor, ...]:  # fmt: skip
    E, k = w1.shape[0], wdw.shape[-1]
    dwdw = torch.zeros((E, k * k), dtype=torch.float32, device=x.device)
    dz2, bw = backward_to_dz2(
        dy, x, z2, z3, stats, se_buf, w1, g2, w3, g3, sw1, sb1, sw2, sb2, stride, expand_stride,
        act, se_act, se_gate,
    )  # fmt: skip
    g, st1 = bw.g, bw.st1
    # depthwise: input gradient (-> du1 through act and BN1's affine) and weight gradient, with
    # z1 = x W1^T rebuilt per tile from x (never stored)
    du1 = torch.empty((g.P1, E), dtype=x.dtype, device=x.device)
    dw_conv_bwd(
        dz2, None, wdw, (g.N, g.Hs, g.Ws), stride, du1, dwdw, pro_vecs=(st1[SCALE], st1[SHIFT]),
        pro_act=act, bn_sums=(bw.r1, st1[MEAN], st1[RSTD]),
        rebuild=(rows(x), w2d(w1), g.H, g.W, expand_stride),
    )  # fmt: skip
    # expand: dx = dz1 W1 (+ dy), dW1 = dz1^T x, dz1 = A1 du1 + B1 z1 + C1 with z1 rebuilt again
    return backward_from_du1(bw, du1, dwdw, dy, x, w1, g1, expand_stride, residual, need_dx)


__all__ = [
    "BackwardState",
    "BlockGeometry",
    "DepthwiseFwd",
    "backward_from_du1",
    "backward_to_dz2",
    "block_geometry",
    "empty_channels_last",
    "expand_infer",
    "mbconv_infer_impl",
    "mbconv_train_bwd_impl",
    "mbconv_train_fwd_impl",
    "rows",
    "se_gate_fwd",
    "se_mlp_bwd",
    "stat_blocks",
    "train_forward",
    "w2d",
]
