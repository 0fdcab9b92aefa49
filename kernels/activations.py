"""Activations and SE gates inside Triton kernels: codes, forward, derivative, PyTorch twins.

A kernel takes its activation as a ``tl.constexpr`` code, so every activation is a separate
specialisation with no runtime branch. The derivatives follow PyTorch's backward formulas exactly,
including the value at the kinks (which matters: BN outputs hit 0 exactly when beta = 0 and a
channel is constant):

============  ===========================  ==================================================
code / name   f(u)                          f'(u) as in ATen's backward
============  ===========================  ==================================================
0 ``none``    u                             1
1 ``relu``    max(u, 0)                     [u > 0]                  (threshold_backward)
2 ``relu6``   min(max(u, 0), 6)             [0 < u < 6]              (hardtanh_backward)
3 ``hswish``  u * relu6(u + 3) / 6          0 if u <= -3, u/3 + 1/2 if u < 3, else 1
4 ``swish``   u * sigmoid(u)                s * (1 + u * (1 - s)),  s = sigmoid(u)
5 ``hsigmoid``relu6(u + 3) / 6              1/6 if -3 < u < 3 else 0
6 ``sigmoid`` sigmoid(u)                    s * (1 - s)
============  ===========================  ==================================================
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.nn import functional as F

ACT_CODES: dict[str, int] = {
    "none": 0,
    "relu": 1,
    "relu6": 2,
    "hswish": 3,
    "swish": 4,
    "hsigmoid": 5,
    "sigmoid": 6,
}


def act_code(name: str) -> int:
    """The constexpr code of an activation or gate name (``ValueError`` names the choices)."""
    try:
        return ACT_CODES[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; kernels support {sorted(ACT_CODES)}"
        ) from None


@triton.jit
def act_fwd(u, ACT: tl.constexpr):
    """``f(u)`` for the activation code ``ACT`` (fp32 in, fp32 out)."""
    if ACT == 1:
        u = tl.maximum(u, 0.0)
    elif ACT == 2:
        u = tl.minimum(tl.maximum(u, 0.0), 6.0)
    elif ACT == 3:
        u = u * tl.minimum(tl.maximum(u + 3.0, 0.0), 6.0) * (1.0 / 6.0)
    elif ACT == 4:
        u = u * tl.sigmoid(u)
    elif ACT == 5:
        u = tl.minimum(tl.maximum(u + 3.0, 0.0), 6.0) * (1.0 / 6.0)
    elif ACT == 6:
        u = tl.sigmoid(u)
    return u


@triton.jit
def act_grad(u, ACT: tl.constexpr):
    """``f'(u)`` for the activation code ``ACT``, with ATen's values at the kinks."""
    if ACT == 0:
        d = tl.full(u.shape, 1.0, tl.float32)
    elif ACT == 1:
        d = tl.where(u > 0.0, 1.0, 0.0)
    elif ACT == 2:
        d = tl.where((u > 0.0) & (u < 6.0), 1.0, 0.0)
    elif ACT == 3:
        d = tl.where(u <= -3.0, 0.0, tl.where(u < 3.0, u * (1.0 / 3.0) + 0.5, 1.0))
    elif ACT == 4:
        s = tl.sigmoid(u)
        d = s * (1.0 + u * (1.0 - s))
    elif ACT == 5:
        d = tl.where((u > -3.0) & (u < 3.0), 1.0 / 6.0, 0.0)
    else:
        s = tl.sigmoid(u)
        d = s * (1.0 - s)
    return d


def act_ref(u: torch.Tensor, name: str) -> torch.Tensor:
    """PyTorch twin of :func:`act_fwd` (the modules of ``fastscarlet.nn.blocks`` use the same ops)."""
    if name == "none":
        return u
    fn = {
        "relu": F.relu,
        "relu6": F.relu6,
        "hswish": F.hardswish,
        "swish": F.silu,
        "hsigmoid": F.hardsigmoid,
        "sigmoid": torch.sigmoid,
    }[name]
    return fn(u)


def act_grad_ref(u: torch.Tensor, name: str) -> torch.Tensor:
    """PyTorch twin of :func:`act_grad`: ``f'(u)`` elementwise, written out (no autograd, so it
    also runs inside a custom op's implementation, below the autograd dispatch key)."""
    one, zero = torch.ones_like(u), torch.zeros_like(u)
    if name == "none":
        return one
    if name == "relu":
        return torch.where(u > 0, one, zero)
    if name == "relu6":
        return torch.where((u > 0) & (u < 6), one, zero)
    if name == "hswish":
        return torch.where(u <= -3, zero, torch.where(u < 3, u / 3 + 0.5, one))
    if name == "swish":
        s = torch.sigmoid(u)
        return s * (1 + u * (1 - s))
    if name == "hsigmoid":
        return torch.where((u > -3) & (u < 3), one / 6, zero)
    if name == "sigmoid":
        s = torch.sigmoid(u)
        return s * (1 - s)
    raise ValueError(f"unknown activation {name!r}; kernels support {sorted(ACT_CODES)}")


def module_act_name(module: torch.nn.Module) -> str | None:
    """The kernel name of an activation module of ``fastscarlet.nn.blocks`` (None if unsupported)."""
    table = {
        torch.nn.ReLU: "relu",
        torch.nn.ReLU6: "relu6",
        torch.nn.Hardswish: "hswish",
        torch.nn.SiLU: "swish",
        torch.nn.Hardsigmoid: "hsigmoid",
        torch.nn.Sigmoid: "sigmoid",
        torch.nn.Identity: "none",
    }
    return table.get(type(module))


__all__ = [
    "ACT_CODES",
    "act_code",
    "act_fwd",
    "act_grad",
    "act_grad_ref",
    "act_ref",
    "module_act_name",
]
