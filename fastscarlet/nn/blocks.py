"""Building blocks in plain PyTorch, as in the authors' released code (papers.md section 1.1).

* :class:`MBConv`: 1x1 expand + BN + act, kxk depthwise + BN + act, optional SE, 1x1 project + BN,
  residual add iff stride 1 and c_in == c_out. ``hidden = round(c_in * expansion)``.
* :class:`SqueezeExcite`: global pool, 1x1 conv (bias) + act, 1x1 conv (bias) + gate, multiply.
* :class:`StemConv`, :class:`SeparableConv` (the fixed first block) and :class:`ClassifierHead`.

The SCARLET LET stabilizer is in :mod:`fastscarlet.nn.stabilizer`. The Triton kernels
(``fastscarlet.kernels``) implement the same functions; these modules are the reference and the
CPU path.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fastscarlet.kernels.block_choice import implementation
from fastscarlet.space import SEConfig


def make_activation(name: str) -> nn.Module:
    """``relu``, ``relu6``, ``hswish`` (x * relu6(x + 3) / 6) or ``swish`` (x * sigmoid(x))."""
    if name == "relu":
        return nn.ReLU()
    if name == "relu6":
        return nn.ReLU6()
    if name == "hswish":
        return nn.Hardswish()
    if name == "swish":
        return nn.SiLU()
    raise ValueError(f"unknown activation {name!r}; expected relu, relu6, hswish or swish")


def make_gate(name: str) -> nn.Module:
    """SE gate: ``hsigmoid`` (relu6(x + 3) / 6) or ``sigmoid``."""
    if name == "hsigmoid":
        return nn.Hardsigmoid()
    if name == "sigmoid":
        return nn.Sigmoid()
    raise ValueError(f"unknown SE gate {name!r}; expected hsigmoid or sigmoid")


class SqueezeExcite(nn.Module):
    """``x * gate(W2 act(W1 mean_hw(x) + b1) + b2)`` with W1: C -> R, W2: R -> C."""

    def __init__(self, channels: int, reduced: int, act: str, gate: str) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1, bias=True)
        self.act = make_activation(act)
        self.expand = nn.Conv2d(reduced, channels, 1, bias=True)
        self.gate = make_gate(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(s))))


def make_se(se: SEConfig, in_channels: int, hidden: int, block_act: str) -> SqueezeExcite:
    return SqueezeExcite(
        hidden, se.reduced_channels(in_channels, hidden), se.act or block_act, se.gate
    )


class MBConv(nn.Module):
    """Inverted residual block. ``x: [N, c_in, H, W] -> [N, c_out, ceil(H/s), ceil(W/s)]``.

    ``expand_stride`` > 1 only for exported subnets in which a strided LET stabilizer has been
    folded into the expand conv (then the block never has a residual).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expansion: int,
        kernel: int,
        stride: int,
        act: str,
        se: SEConfig | None = None,
        *,
        hidden: int | None = None,
        expand_stride: int = 1,
    ) -> None:
        super().__init__()
        hidden = hidden if hidden is not None else round(in_channels * expansion)
        self.in_channels, self.out_channels, self.hidden = in_channels, out_channels, hidden
        self.kernel, self.stride, self.act_name = kernel, stride, act
        self.expand = nn.Conv2d(in_channels, hidden, 1, expand_stride, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.dw = nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.act = make_activation(act)
        self.se = make_se(se, in_channels, hidden, act) if se is not None else None
        self.project = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.residual = stride == 1 and expand_stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_se(x, self.se)

    def forward_with_se(self, x: torch.Tensor, se: nn.Module | None) -> torch.Tensor:
        """Forward with an SE module that may live outside the block (shared-weight supernets).

        On CUDA this may run a kernel implementation of the block (the whole-block Triton
        kernels, or the partial fusion around PyTorch's depthwise conv) where the kernels'
        dispatch chooses one (:func:`fastscarlet.kernels.block_choice.implementation`: by
        default only candidates verified on a GPU, checked against this reference and measured
        faster); otherwise (always on CPU, unless forced under the Triton interpreter)
        :meth:`reference_forward`.
        """
        impl = implementation(self, se, x)
        if impl is not None:
            return impl(self, x, se)
        return self.reference_forward(x, se)

    def reference_forward(self, x: torch.Tensor, se: nn.Module | None) -> torch.Tensor:
        """The block in plain PyTorch: the reference every kernel implementation is held to."""
        y = self.act(self.bn1(self.expand(x)))
        y = self.act(self.bn2(self.dw(y)))
        if se is not None:
            y = se(y)
        y = self.bn3(self.project(y))
        return x + y if self.residual else y


class StemConv(nn.Sequential):
    def __init__(
        self, in_channels: int, out_channels: int, act: str, kernel: int = 3, stride: int = 2
    ):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            make_activation(act),
        )


class SeparableConv(nn.Sequential):
    """dw kxk + BN + act, 1x1 + BN; no residual (as in all three released code bases)."""

    def __init__(self, in_channels: int, out_channels: int, act: str, kernel: int = 3):
        super().__init__(
            nn.Conv2d(
                in_channels, in_channels, kernel, 1, kernel // 2, groups=in_channels, bias=False
            ),
            nn.BatchNorm2d(in_channels),
            make_activation(act),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )


class ClassifierHead(nn.Module):
    """1x1 conv + BN + act, global average pool, [1x1 conv (no bias, no BN) + act], dropout, Linear."""

    def __init__(
        self,
        in_channels: int,
        features: int,
        act: str,
        num_classes: int,
        hidden: int | None = None,
        dropout: float = 0.0,
        conv_stride: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, features, 1, conv_stride, 0, bias=False)
        self.bn = nn.BatchNorm2d(features)
        self.act = make_activation(act)
        self.hidden = nn.Conv2d(features, hidden, 1, bias=False) if hidden else None
        self.hidden_act = make_activation(act) if hidden else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(hidden or features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.conv(x)))
        x = x.mean((2, 3), keepdim=True)
        if self.hidden is not None:
            x = self.hidden_act(self.hidden(x))
        return self.classifier(self.dropout(torch.flatten(x, 1)))


def init_weights(module: nn.Module) -> None:
    """The Xiaomi initialisation: conv N(0, sqrt(2 / (k*k*c_out))), conv bias 0, BN gamma 1 beta 0;
    Linear U(+-1/sqrt(max(c_in, c_out))) with bias 0.

    The released code bounds the classifier by ``1/sqrt(c_out)``: 0.032 for 1000 classes, where
    ``max(c_in, c_out)`` gives 0.028 (c_in = 1280). For 10 classes the released rule gives 0.32,
    logits with a standard deviation near 4 and a first loss near 6 (measured on CIFAR-10), which
    stalled the first epoch; FairNAS's own transfer script gives its 10-class classifier PyTorch's
    default ``1/sqrt(c_in)`` bound instead."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(max(m.weight.shape))
            nn.init.uniform_(m.weight, -bound, bound)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def zero_init_residual_(module: nn.Module) -> None:
    """Every residual MBConv's last BN starts with gamma = 0, so the block starts as the identity
    (Goyal et al. 2017; timm's ``zero_init_last``)."""
    for m in module.modules():
        if isinstance(m, MBConv) and m.residual:
            nn.init.zeros_(m.bn3.weight)


__all__ = [
    "ClassifierHead",
    "MBConv",
    "SeparableConv",
    "SqueezeExcite",
    "StemConv",
    "init_weights",
    "make_activation",
    "make_gate",
    "make_se",
    "zero_init_residual_",
]
