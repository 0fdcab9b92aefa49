"""The fused MBConv choice block: the entry point the modules call.

:func:`mbconv_block_forward` runs a :class:`fastscarlet.nn.blocks.MBConv` (with its SE, and
optionally a LET folded into its expand conv) through the kernels: in training mode through
:class:`MBConvTrainFunction`, the autograd function over the training custom ops, which also
updates the BN running statistics as ``nn.BatchNorm2d`` does; in eval mode through the inference
op. :func:`unsupported_reason` / :func:`mbconv_supported` say whether the kernels cover a call.

The block has no ``*_ref`` of its own: its reference, which the tests hold the kernels to, and its
fallback wherever :func:`unsupported_reason` says no, is the module's own PyTorch code
(``MBConv.forward_with_se``, ``nn.BatchNorm2d`` included). A functional copy of it here would be a
third implementation to keep in step (the one there was, unused, had BN's ``momentum=None`` wrong).

The block is spread over four modules, one concern each:

* :mod:`.mbconv_kernels`: the two block-specific ``@triton.jit`` kernels and their launchers;
* :mod:`.mbconv_host`: the host orchestration (which launches, in which order, on which buffers);
* :mod:`.mbconv_ops`: the ``torch.library`` custom ops and their fake implementations;
* this module: the support check, the autograd function and the module-facing entry point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .activations import module_act_name
from .batchnorm import update_running_stats
from .depthwise import dw_out_size
from .launch import call_op
from .mbconv_host import (
    mbconv_infer_impl,
    mbconv_train_bwd_impl,
    mbconv_train_fwd_impl,
    stat_blocks,
    w2d,
)
from .mbconv_ops import mbconv_infer, mbconv_train_bwd, mbconv_train_fwd

KERNEL_ACTS = ("relu", "relu6", "hswish", "swish")
SE_GATES = ("hsigmoid", "sigmoid")


def dense(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Each tensor contiguous (itself when it already is; else a copy that autograd tracks)."""
    return tuple(t.contiguous() for t in tensors)


def input_grads(
    grads: Sequence[torch.Tensor], ctx, w1: torch.Tensor, g1: torch.Tensor, wdw: torch.Tensor,
    g2: torch.Tensor, w3: torch.Tensor, g3: torch.Tensor, sw1: torch.Tensor | None,
    sb1: torch.Tensor | None, sw2: torch.Tensor | None, sb2: torch.Tensor | None,
) -> tuple[torch.Tensor | None, ...]:  # fmt: skip
    """The 14 outputs of a training backward op (``dx, dW1, dgamma1, dbeta1, dWdw, dgamma2,
    dbeta2, dW3, dgamma3, dbeta3`` and the 4 SE ones) as the return of an autograd function
    over the 23 inputs of the training forward op: each gradient in its parameter's shape and
    dtype, ``dx`` only where ``ctx`` needs it, None for the SE without SE and for the 9 config
    arguments."""
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
            mbconv_train_fwd, mbconv_train_fwd_impl,
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
            mbconv_train_bwd, mbconv_train_bwd_impl,
            dy, x, z2, z3, stats, se_buf, w1, g1, wdw, g2, w3, g3, sw1, sb1, sw2, sb2,
            *ctx.cfg, ctx.needs_input_grad[0],
        )  # fmt: skip
        return input_grads(grads, ctx, w1, g1, wdw, g2, w3, g3, sw1, sb1, sw2, sb2)


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
    # The kernels index every parameter densely (``co * E + e``): a strided view (a transposed or
    # sliced weight, a tied parameter) becomes a differentiable copy (see :func:`call_block`).
    w1 = block.expand.weight.contiguous()
    es = block.expand.stride[0]
    if let_weight is not None:
        if block.residual:
            raise ValueError("a LET folds into the expand conv only when the block has no residual")
        w1 = torch.einsum("oc,ci->oi", w2d(w1), w2d(let_weight)).contiguous()[:, :, None, None]
        es = es * let_stride
    return call_block(
        block, x, se, w1, es, train_fn=MBConvTrainFunction, infer_op=mbconv_infer,
        infer_impl=mbconv_infer_impl,
    )  # fmt: skip


def call_block(
    block: nn.Module, x: torch.Tensor, se: nn.Module | None, w1: torch.Tensor,
    expand_stride: int, *, train_fn: type[torch.autograd.Function], infer_op: Callable,
    infer_impl: Callable,
) -> torch.Tensor:  # fmt: skip
    """``block.forward_with_se(x, se)`` with the expand weight ``w1`` (dense) and stride
    ``expand_stride`` the caller chose, through ``train_fn`` (an autograd function over a
    training op pair, whose ``apply`` returns ``(y, stats, ...)``) in training mode, then the BN
    running statistics moved as ``nn.BatchNorm2d`` moves them, or through the inference op
    ``infer_op`` (``infer_impl`` eagerly, :func:`.launch.call_op`) in eval mode. The argument
    setup both MBConv paths share: under CUDA autocast the block runs in the autocast dtype, ``x``
    becomes channels_last and every parameter dense (:func:`dense`)."""
    dt = x.dtype
    if x.is_cuda and torch.is_autocast_enabled("cuda"):
        dt = torch.get_autocast_dtype("cuda")
    x = x.to(dt).contiguous(memory_format=torch.channels_last)
    if se is not None:
        sw = dense(se.reduce.weight, se.reduce.bias, se.expand.weight, se.expand.bias)
        se_names = (module_act_name(se.act), module_act_name(se.gate))
    else:
        sw = (None, None, None, None)
        se_names = ("none", "none")
    bn1, bn2, bn3 = block.bn1, block.bn2, block.bn3
    cfg = (block.dw.stride[0], expand_stride, block.act_name, *se_names, bool(block.residual))
    eps = (float(bn1.eps), float(bn2.eps), float(bn3.eps))
    if block.training:
        out = train_fn.apply(
            x, w1, *dense(bn1.weight, bn1.bias, block.dw.weight, bn2.weight, bn2.bias,
            block.project.weight, bn3.weight, bn3.bias), *sw, *cfg, *eps,
        )  # fmt: skip
        y, stats = out[0], out[1]
        update_running_stats((bn1, bn2, bn3), stat_blocks(stats, block.hidden, block.out_channels))
        return y
    return call_op(
        infer_op, infer_impl,
        x, w1, *dense(bn1.weight, bn1.bias, bn1.running_mean, bn1.running_var, block.dw.weight,
        bn2.weight, bn2.bias, bn2.running_mean, bn2.running_var, block.project.weight,
        bn3.weight, bn3.bias, bn3.running_mean, bn3.running_var), *sw, *cfg, *eps,
    )  # fmt: skip


__all__ = [
    "KERNEL_ACTS",
    "SE_GATES",
    "MBConvTrainFunction",
    "call_block",
    "dense",
    "input_grads",
    "mbconv_block_forward",
    "mbconv_supported",
    "unsupported_reason",
]
