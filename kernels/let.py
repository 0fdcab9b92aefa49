"""The SCARLET LET stabilizer ``y = W_L x`` (a 1x1 conv, stride ``s``) and its fusion.

Standalone (an identity choice followed by a block with a residual add, or by nothing that can
take it): three GEMM launches of :mod:`fastscarlet.kernels.pointwise`

    forward   y = x_s W_L^T                 (x_s: x sampled with stride s; one pass)
    backward  dx = scatter_s(dy W_L)        (zeros where the stride skips pixels)
              dW_L = dy^T x_s

Fused (issue 6 (c)): a LET in front of a 1x1 conv *without anything in between* composes with it:
``W (W_L x) = (W W_L) x`` and subsampling commutes with 1x1 convs, so the pair is one 1x1 conv
with weight ``W W_L`` and stride ``s * s_L`` (a ``[O, C] x [C, C']`` product, differentiable in
both weights by autograd). Exact where the LET output has no other consumer:

* into the next MBConv's expand conv iff that block has **no residual add** (with one, the skip
  path would need ``W_L x`` itself);
* into the head's 1x1 conv;
* a run of LETs composes first (``W_k ... W_1``, strides multiplied).

Not exact: into the previous block's project conv in training (BN3 with batch statistics sits in
between), or in front of a residual block. :func:`let_mbconv_forward` applies the rule for an
MBConv; ``fastscarlet.nn.network.fold_stabilizers`` applies the same rule to exported subnets, whose
folded expand convs (``expand_stride > 1``) the MBConv kernels run directly.

The reference (the tests' oracle and the fallback) is ``fastscarlet.nn.LinearStabilizer`` itself:
a strided 1x1 ``F.conv2d``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .depthwise import dw_out_size
from .launch import call_op
from .pointwise import pw_conv_fwd, pw_conv_wgrad


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def _w2d(w: torch.Tensor) -> torch.Tensor:
    return w.reshape(w.shape[0], w.shape[1])


def _out_shape(x: torch.Tensor, w: torch.Tensor, stride: int) -> tuple[int, int, int, int]:
    N, _, H, W = x.shape
    return N, w.shape[0], dw_out_size(H, stride), dw_out_size(W, stride)


def _let_fwd_impl(x: torch.Tensor, w: torch.Tensor, stride: int) -> torch.Tensor:
    N, Co, Ho, Wo = _out_shape(x, w, stride)
    y = torch.empty(
        (N, Co, Ho, Wo), dtype=x.dtype, device=x.device, memory_format=torch.channels_last
    )
    pw_conv_fwd(
        _rows(x), _w2d(w), _rows(y), geom=(N, Ho, Wo, x.shape[2], x.shape[3]), in_stride=stride
    )
    return y


@torch.library.custom_op("fastscarlet::let_fwd", mutates_args=())
def let_fwd(x: torch.Tensor, w: torch.Tensor, stride: int) -> torch.Tensor:
    """``x [N, C, H, W]`` channels_last, ``w [O, C, 1, 1]`` -> ``[N, O, ceil(H/s), ceil(W/s)]``."""
    return _let_fwd_impl(x, w, stride)


@let_fwd.register_fake
def _let_fwd_fake(x, w, stride):
    N, Co, Ho, Wo = _out_shape(x, w, stride)
    return torch.empty(
        (N, Co, Ho, Wo), dtype=x.dtype, device=x.device, memory_format=torch.channels_last
    )


def _let_bwd_impl(
    dy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, stride: int, need_dx: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    N, Co, Ho, Wo = _out_shape(x, w, stride)
    H, W = x.shape[2], x.shape[3]
    dyr = _rows(dy)
    if need_dx:
        alloc = torch.zeros_like if stride > 1 else torch.empty_like
        dx = alloc(x, memory_format=torch.channels_last)
        pw_conv_fwd(
            dyr, _w2d(w), _rows(dx), geom=(N, Ho, Wo, Ho, Wo), out_stride=stride, out_hw=(H, W),
            weight_transposed=True,
        )  # fmt: skip
    else:
        dx = x.new_empty(0)
    dw = torch.zeros((Co, x.shape[1]), dtype=torch.float32, device=x.device)
    pw_conv_wgrad(dyr, _rows(x), dw, geom=(N, Ho, Wo, H, W), b_stride=stride)
    return dx, dw


@torch.library.custom_op("fastscarlet::let_bwd", mutates_args=())
def let_bwd(
    dy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, stride: int, need_dx: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dx, dW)``: ``dx`` like ``x`` (empty unless ``need_dx``), ``dW`` fp32 ``[O, C]``."""
    return _let_bwd_impl(dy, x, w, stride, need_dx)


@let_bwd.register_fake
def _let_bwd_fake(dy, x, w, stride, need_dx):
    dx = torch.empty_like(x, memory_format=torch.channels_last) if need_dx else x.new_empty(0)
    return dx, x.new_empty((w.shape[0], w.shape[1]), dtype=torch.float32)


class LETFunction(torch.autograd.Function):
    """Autograd over ``fastscarlet::let_fwd`` / ``fastscarlet::let_bwd``."""

    @staticmethod
    def forward(x, w, stride):
        return call_op(torch.ops.fastscarlet.let_fwd, _let_fwd_impl, x, w, stride)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, stride = inputs
        ctx.stride = stride
        ctx.save_for_backward(x, w)

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        dy = dy.contiguous(memory_format=torch.channels_last)
        dx, dw = call_op(
            torch.ops.fastscarlet.let_bwd, _let_bwd_impl, dy, x, w, ctx.stride,
            ctx.needs_input_grad[0],
        )  # fmt: skip
        return (dx if ctx.needs_input_grad[0] else None), dw.view(w.shape).to(w.dtype), None


def let_unsupported_reason(module: nn.Module, x: torch.Tensor) -> str | None:
    """Why the LET kernels cannot run (None: they can)."""
    conv = module.conv
    if x.dim() != 4 or x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return "input must be a 4-D fp32/bf16/fp16 tensor"
    if conv.kernel_size != (1, 1) or conv.bias is not None or conv.stride[0] != conv.stride[1]:
        return "not a bias-free square-strided 1x1 conv"
    if conv.padding != (0, 0) or conv.groups != 1:
        return "padding or groups"
    return None


def let_supported(module: nn.Module, x: torch.Tensor) -> bool:
    return let_unsupported_reason(module, x) is None


def _kernel_input(x: torch.Tensor) -> torch.Tensor:
    dt = x.dtype
    if x.is_cuda and torch.is_autocast_enabled("cuda"):
        dt = torch.get_autocast_dtype("cuda")
    return x.to(dt).contiguous(memory_format=torch.channels_last)


def let_forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``LinearStabilizer.forward`` through the kernels (check :func:`let_supported`)."""
    w = module.conv.weight.contiguous()  # the kernels index it densely
    return LETFunction.apply(_kernel_input(x), w, module.conv.stride[0])


def compose_lets(lets: Sequence[nn.Module]) -> tuple[torch.Tensor, int]:
    """A run of LETs (applied first to last) as one: ``(W_k ... W_1 [O, C, 1, 1], prod s_i)``,
    differentiable in every ``W_i``."""
    if not lets:
        raise ValueError("compose_lets needs at least one LET")
    w = _w2d(lets[0].conv.weight)
    stride = lets[0].conv.stride[0]
    for let in lets[1:]:
        w = _w2d(let.conv.weight) @ w
        stride *= let.conv.stride[0]
    return w.contiguous()[:, :, None, None], stride


def let_mbconv_forward(
    lets: Sequence[nn.Module], block: nn.Module, x: torch.Tensor, se: nn.Module | None = None
) -> torch.Tensor:
    """``block.forward_with_se(LET_k(...LET_1(x)), se)`` with the LETs fused into the block's
    expand conv where that is exact (no residual add), else run as one composed LET launch.

    ``block`` must be supported by the MBConv kernels (``mbconv_supported``)."""
    from .mbconv import mbconv_block_forward

    w, stride = compose_lets(lets)
    x = _kernel_input(x)
    if block.residual:
        return mbconv_block_forward(block, LETFunction.apply(x, w, stride), se)
    return mbconv_block_forward(block, x, se, let_weight=w, let_stride=stride)


__all__ = [
    "LETFunction",
    "compose_lets",
    "let_bwd",
    "let_forward",
    "let_fwd",
    "let_mbconv_forward",
    "let_supported",
    "let_unsupported_reason",
]
