"""The SCARLET stabilizer: the LET / ELS that stands in for an identity choice, and its folding.

ScarletNAS (papers.md section 2.1) trains an identity choice as a **linearly equivalent
transformation**: a 1x1 conv without bias, BN or activation. Because the next MBConv starts with a
linear 1x1 expand conv, the composition keeps the function class of the identity while giving the
supernet a learnable, well-conditioned path.

* :class:`LinearStabilizer`: ``y = W x`` (stride ``s``), C x C where stride is 1 and c_in = c_out,
  a strided or channel-changing 1x1 conv where identity is allowed everywhere;
* :class:`PlainIdentity`: the identity choice without a stabilizer (``SuperNet(stabilizer=False)``),
  the baseline that the LET is compared against;
* :func:`fold_into_1x1`: ``W' = W W_L`` (exact: both are linear 1x1 convs without padding);
* :func:`fold_stabilizers`: fold every run of LETs of a standalone network into the next 1x1 conv
  where that is exact.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from fastscarlet.kernels.dispatch import use_kernels
from fastscarlet.nn.blocks import MBConv


class LinearStabilizer(nn.Module):
    """SCARLET's LET / ELS: ``y = W x`` as a 1x1 conv (stride ``s``), no bias, BN or activation.

    Replaces the identity choice in the supernet. At layers where stride is 1 and c_in == c_out it
    is C x C; where identity is allowed everywhere it is a strided or channel-changing 1x1 conv.
    """

    is_stabilizer = True  # how the kernels' dispatch recognises a LET without importing nn

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.conv = nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False)

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_kernels(x):  # the Triton GEMM (fastscarlet.kernels.let); else the reference
            from fastscarlet.kernels.let import let_forward, let_supported

            if let_supported(self, x):
                return let_forward(self, x)
        return self.conv(x)

    def reset_to_identity(self) -> None:
        """W = I (zero-padded where channels change): the stabilizer starts as the identity."""
        with torch.no_grad():
            self.conv.weight.zero_()
            n = min(self.in_channels, self.out_channels)
            self.conv.weight[torch.arange(n), torch.arange(n), 0, 0] = 1.0

    def forward_with_se(self, x: torch.Tensor, se: nn.Module | None = None) -> torch.Tensor:
        """Same signature as :meth:`MBConv.forward_with_se` (a stabilizer has no SE)."""
        if se is not None:
            raise ValueError("a LET stabilizer has no SE")
        return self(x)


class PlainIdentity(nn.Identity):
    """The identity choice of a supernet without a stabilizer: ``y = x``, no weights.

    Only where the layer's shape allows it (stride 1, c_in == c_out); :class:`SuperNet` checks.
    """

    def forward_with_se(self, x: torch.Tensor, se: nn.Module | None = None) -> torch.Tensor:
        """Same signature as :meth:`MBConv.forward_with_se` (an identity has no SE)."""
        if se is not None:
            raise ValueError("an identity choice has no SE")
        return x


def fold_into_1x1(weight: torch.Tensor, stride: int, let_weight: torch.Tensor, let_stride: int):
    """Compose a 1x1 conv after a LET: ``W' = W @ W_L``, stride ``s * s_L``.

    Exact because both are linear 1x1 convs without padding (subsampling commutes with a 1x1 conv
    and ``ceil(ceil(H/a)/b) = ceil(H/(ab))``). Returns ``(weight', stride')``.
    """
    w = torch.einsum("oc,ci->oi", weight[:, :, 0, 0], let_weight[:, :, 0, 0])
    return w[:, :, None, None].contiguous(), stride * let_stride


def _folded_conv(conv: nn.Conv2d, let_w: torch.Tensor, let_s: int) -> nn.Conv2d:
    w, s = fold_into_1x1(conv.weight.detach(), conv.stride[0], let_w, let_s)
    new = nn.Conv2d(w.shape[1], w.shape[0], 1, s, 0, bias=False)
    new = new.to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
    return new


def fold_stabilizers(net: nn.Module) -> nn.Module:
    """Fold LET stabilizers into the next 1x1 conv where that is exact; return a new network.

    ``net`` is a :class:`fastscarlet.nn.network.Network` (its ``blocks`` and ``head`` are read).

    A run of consecutive LETs composes into one linear map ``W = W_k ... W_1`` (stride the product).
    It is folded into the next MBConv's expand conv when that block has **no residual add**, or into
    the head's 1x1 conv. If the next MBConv has a residual add (stride 1, c_in == c_out), folding is
    not exact: the skip path would carry ``x`` instead of ``W x``. There the composed LET is kept as
    one 1x1 conv. Folded positions become ``nn.Identity``.
    """
    net = copy.deepcopy(net)
    blocks = list(net.blocks)
    run: list[int] = []  # indices of the pending LETs
    w_acc: torch.Tensor | None = None
    s_acc = 1

    def flush_keep() -> None:
        # Keep the composed run as one LET at its first position.
        assert w_acc is not None
        let = LinearStabilizer(w_acc.shape[1], w_acc.shape[0], s_acc)
        let = let.to(device=w_acc.device, dtype=w_acc.dtype)
        with torch.no_grad():
            let.conv.weight.copy_(w_acc)
        blocks[run[0]] = let

    for i, blk in enumerate(blocks):
        if isinstance(blk, LinearStabilizer):
            w = blk.weight.detach()
            if w_acc is None:
                w_acc, s_acc = w.clone(), blk.stride
            else:
                w_acc, s_acc = fold_into_1x1(w, blk.stride, w_acc, s_acc)
            run.append(i)
            blocks[i] = nn.Identity()
        elif isinstance(blk, MBConv) and w_acc is not None:
            if blk.residual:
                flush_keep()
            else:
                blk.expand = _folded_conv(blk.expand, w_acc, s_acc)
                blk.in_channels = blk.expand.in_channels
            run, w_acc, s_acc = [], None, 1
    if w_acc is not None:  # LETs up to the last layer: fold into the head's 1x1 conv
        net.head.conv = _folded_conv(net.head.conv, w_acc, s_acc)
    net.blocks = nn.Sequential(*blocks)
    return net
