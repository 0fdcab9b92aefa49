"""Cost model: multiply-adds and parameters of a genome, analytically, without building the model.

Counting convention (papers.md section 3.4): every convolution and fully connected layer counts,
including the classifier, the SE layers' two 1x1 convs and MoGA's post-pool 1x1 conv; BatchNorm,
activations, pooling and residual adds do not. The SE channel multiply (``hidden * H * W`` per
image) is optional and off by default (SCARLET does not count it; FairNAS-SE does). Params are all
``nn.Parameter`` elements (BN gamma/beta and SE biases included; BN running stats are buffers).

A conv ``[c_in -> c_out, k x k, groups g]`` producing ``H_o x W_o`` costs ``c_out H_o W_o (c_in/g) k^2``
multiply-adds per image.

Two implementations of the same count: :class:`CostModel` (per-layer tables, vectorised over
genomes; identity and LET exports) and :func:`count_by_hooks` (forward hooks on a built model),
which the tests compare.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fastscarlet.space import SearchSpace, validate_genome


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Output size of a conv with padding ``kernel // 2``."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


@dataclass(frozen=True)
class Cost:
    madds: int
    params: int


def _mbconv_cost(
    space: SearchSpace, c_in: int, c_out: int, e: int, k: int, s: int, se: bool, h: int, w: int,
    se_multiply: bool,
) -> tuple[int, int]:  # fmt: skip
    hidden = round(c_in * e)
    ho, wo = conv_out(h, k, s), conv_out(w, k, s)
    madds = hidden * c_in * h * w + hidden * k * k * ho * wo + c_out * hidden * ho * wo
    params = hidden * c_in + 2 * hidden + hidden * k * k + 2 * hidden + c_out * hidden + 2 * c_out
    if se:
        r = space.se.reduced_channels(c_in, hidden)
        madds += 2 * hidden * r + (hidden * ho * wo if se_multiply else 0)
        params += 2 * hidden * r + r + hidden
    return madds, params


class CostModel:
    """MAdds and params of genomes of ``space`` at ``resolution`` (int or (H, W)).

    ``identity``: ``"identity"`` (plain identity: free) or ``"let"`` (the LET's 1x1 conv counts).
    The per-(layer, choice) costs are tabulated once, so a genome costs one table lookup per layer.
    """

    def __init__(
        self,
        space: SearchSpace,
        resolution: int | tuple[int, int] = 224,
        identity: str = "identity",
        se_multiply: bool = False,
    ) -> None:
        if identity not in ("identity", "let"):
            raise ValueError(f"identity must be 'identity' or 'let', got {identity!r}")
        h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
        if h < 1 or w < 1:
            raise ValueError(f"resolution must be positive, got {resolution!r}")
        self.space, self.resolution, self.identity, self.se_multiply = (
            space, (h, w), identity, se_multiply
        )  # fmt: skip
        L, C = space.num_layers, space.num_choices
        self.madds_table = np.zeros((L, C), dtype=np.int64)
        self.params_table = np.zeros((L, C), dtype=np.int64)
        fixed_m = fixed_p = 0

        st = space.stem
        h, w = conv_out(h, st.kernel, st.stride), conv_out(w, st.kernel, st.stride)
        c = st.out_channels
        fixed_m += c * space.in_channels * st.kernel**2 * h * w
        fixed_p += c * space.in_channels * st.kernel**2 + 2 * c
        fb = space.first_block
        fixed_m += c * fb.kernel**2 * h * w + fb.out_channels * c * h * w
        fixed_p += c * fb.kernel**2 + 2 * c + fb.out_channels * c + 2 * fb.out_channels

        for layer in space.layers:
            ci, co, s = layer.in_channels, layer.out_channels, layer.stride
            for j in layer.allowed:
                ch = space.choices[j]
                if ch.identity:
                    if identity == "let":
                        ho, wo = conv_out(h, 1, s), conv_out(w, 1, s)
                        self.madds_table[layer.index, j] = co * ci * ho * wo
                        self.params_table[layer.index, j] = co * ci
                    continue
                m, p = _mbconv_cost(
                    space, ci, co, ch.expansion, ch.kernel, s, ch.se, h, w, se_multiply
                )
                self.madds_table[layer.index, j], self.params_table[layer.index, j] = m, p
            # every choice at a layer gives the same output size (conv_out is kernel-independent
            # for odd kernels with padding k // 2)
            h, w = conv_out(h, 3, s), conv_out(w, 3, s)

        hd = space.head
        cl = space.layers[-1].out_channels
        fixed_m += hd.features * cl * h * w
        fixed_p += hd.features * cl + 2 * hd.features
        width = hd.features
        if hd.hidden:
            fixed_m += hd.hidden * hd.features
            fixed_p += hd.hidden * hd.features
            width = hd.hidden
        fixed_m += space.num_classes * width
        fixed_p += space.num_classes * width + space.num_classes
        self.fixed_madds, self.fixed_params = fixed_m, fixed_p
        self._rows = np.arange(L)

    def __call__(self, genome: Sequence[int]) -> Cost:
        g = validate_genome(self.space, genome)
        m = self.fixed_madds + int(self.madds_table[self._rows, g].sum())
        p = self.fixed_params + int(self.params_table[self._rows, g].sum())
        return Cost(m, p)

    def madds(self, genome: Sequence[int]) -> int:
        return self(genome).madds

    def params(self, genome: Sequence[int]) -> int:
        return self(genome).params

    def batch(self, genomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised costs of ``genomes`` ``[n, L]`` (assumed valid) -> (madds[n], params[n])."""
        g = np.asarray(genomes, dtype=np.int64)
        if g.ndim != 2 or g.shape[1] != self.space.num_layers:
            raise ValueError(
                f"genomes must have shape [n, {self.space.num_layers}], got {list(g.shape)}"
            )
        if g.size and (g.min() < 0 or g.max() >= self.space.num_choices):
            raise ValueError(f"genome entries must be in 0..{self.space.num_choices - 1}")
        m = self.madds_table[self._rows, g].sum(1) + self.fixed_madds
        p = self.params_table[self._rows, g].sum(1) + self.fixed_params
        return m, p


def count_cost(
    space: SearchSpace,
    genome: Sequence[int],
    resolution: int | tuple[int, int] = 224,
    identity: str = "identity",
    se_multiply: bool = False,
) -> Cost:
    """One-off count (builds the tables; use :class:`CostModel` for many genomes)."""
    return CostModel(space, resolution, identity, se_multiply)(genome)


def count_by_hooks(
    model: nn.Module, resolution: int | tuple[int, int] = 224, se_multiply: bool = False
) -> Cost:
    """Count MAdds with forward hooks on a built model (batch of one, eval mode).

    An independent implementation of the convention: hooks on every ``nn.Conv2d`` and ``nn.Linear``
    (and on :class:`~fastscarlet.nn.blocks.SqueezeExcite` for the optional channel multiply).
    """
    from fastscarlet.nn.blocks import SqueezeExcite

    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    total = 0

    def conv_hook(m: nn.Conv2d, inp, out) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += out[0].numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, inp, out) -> None:
        nonlocal total
        total += m.in_features * m.out_features

    def se_hook(m: nn.Module, inp, out) -> None:
        nonlocal total
        total += out[0].numel()

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
        elif se_multiply and isinstance(m, SqueezeExcite):
            handles.append(m.register_forward_hook(se_hook))
    was_training = model.training
    model.eval()
    try:
        p = next(model.parameters())
        with torch.no_grad():
            in_ch = getattr(getattr(model, "space", None), "in_channels", 3)
            model(torch.zeros(1, in_ch, h, w, device=p.device, dtype=p.dtype))
    finally:
        for hd in handles:
            hd.remove()
        model.train(was_training)
    params = sum(p.numel() for p in model.parameters())
    return Cost(total, params)
