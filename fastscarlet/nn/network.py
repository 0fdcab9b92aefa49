"""A standalone network of a search space: one fixed architecture, an ordinary ``nn.Module``.

``build_network(space, genome)`` builds a freshly initialised model (the published models are built
this way); :meth:`fastscarlet.nn.supernet.SuperNet.subnet` builds one that keeps the supernet's weights.

Identity layers can be exported three ways (``identity=``):

* ``"identity"``: a plain identity, what the papers retrain. Only possible where stride is 1 and
  c_in == c_out.
* ``"let"``: the LET stabilizer kept as a 1x1 conv: exactly the function of the supernet path.
* ``"fold"``: the LET folded into the next 1x1 conv where that is exact (see :func:`fold_stabilizers`),
  kept elsewhere; the function is still exactly the supernet path's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fastscarlet.nn.blocks import (
    ClassifierHead,
    MBConv,
    SeparableConv,
    StemConv,
    init_weights,
    zero_init_residual_,
)
from fastscarlet.nn.stabilizer import LinearStabilizer, fold_stabilizers
from fastscarlet.space import (
    Genome,
    SearchSpace,
    get_published,
    model_space,
    to_readable,
    validate_genome,
)

IDENTITY_MODES = ("identity", "let", "fold")


class Network(nn.Module):
    """stem -> first block -> ``blocks`` (one entry per layer of the space) -> head."""

    def __init__(
        self,
        space: SearchSpace,
        genome: Sequence[int],
        stem: nn.Module,
        first_block: nn.Module,
        blocks: Sequence[nn.Module],
        head: nn.Module,
    ) -> None:
        super().__init__()
        self.space = space
        self.genome: Genome = validate_genome(space, genome)
        if len(blocks) != space.num_layers:
            raise ValueError(f"{space.name}: {len(blocks)} blocks for {space.num_layers} layers")
        self.stem = stem
        self.first_block = first_block
        self.blocks = nn.Sequential(*blocks)
        self.head = head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.first_block(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    @property
    def depth(self) -> int:
        """Number of MBConv layers (identity layers do not count)."""
        return sum(isinstance(b, MBConv) for b in self.blocks)

    def extra_repr(self) -> str:
        return f"space={self.space.name}, arch={to_readable(self.space, self.genome)}"


def build_stem(space: SearchSpace) -> StemConv:
    return StemConv(
        space.in_channels, space.stem.out_channels, space.stem.activation, space.stem.kernel,
        space.stem.stride,
    )  # fmt: skip


def build_first_block(space: SearchSpace) -> SeparableConv:
    fb = space.first_block
    return SeparableConv(space.stem.out_channels, fb.out_channels, fb.activation, fb.kernel)


def build_head(space: SearchSpace) -> ClassifierHead:
    h = space.head
    return ClassifierHead(
        space.layers[-1].out_channels, h.features, h.activation, space.num_classes, h.hidden,
        h.dropout,
    )  # fmt: skip


def build_block(space: SearchSpace, layer: int, choice: int) -> MBConv | LinearStabilizer:
    """The supernet-form block of ``choice`` at ``layer``: an MBConv, or the LET for identity."""
    spec, c = space.layers[layer], space.choices[choice]
    if c.identity:
        return LinearStabilizer(spec.in_channels, spec.out_channels, spec.stride)
    return MBConv(
        spec.in_channels, spec.out_channels, c.expansion, c.kernel, spec.stride, spec.activation,
        space.se if c.se else None,
    )  # fmt: skip


def plain_identity(
    space: SearchSpace, layer: int, hint: str = "export with identity='let' or 'fold'"
) -> nn.Identity:
    """A plain identity at ``layer``; a ``ValueError`` ending with ``hint`` where the layer changes
    the shape (stride 2 or a channel change)."""
    spec = space.layers[layer]
    if spec.stride != 1 or spec.in_channels != spec.out_channels:
        raise ValueError(
            f"{space.name}: layer {layer + 1} is an identity choice at a layer with stride "
            f"{spec.stride} and channels {spec.in_channels}->{spec.out_channels}; a plain identity "
            f"cannot change the shape there: {hint}"
        )
    return nn.Identity()


def build_network(
    space: SearchSpace,
    genome: Sequence[int],
    identity: str = "identity",
    zero_init_residual: bool = False,
) -> Network:
    """A freshly initialised standalone network (Xiaomi init) of ``genome``.

    ``zero_init_residual``: every residual MBConv's last BN starts with gamma = 0 (the block starts
    as the identity, as :class:`~fastscarlet.nn.SuperNet`'s option does), and LETs start as the
    identity map; short trainings learn faster so (the demo's export stage)."""
    if identity not in IDENTITY_MODES:
        raise ValueError(f"identity must be one of {IDENTITY_MODES}, got {identity!r}")
    g = validate_genome(space, genome)
    blocks: list[nn.Module] = []
    for i, c in enumerate(g):
        if space.choices[c].identity and identity == "identity":
            blocks.append(plain_identity(space, i))
        else:
            blocks.append(build_block(space, i, c))
    net = Network(space, g, build_stem(space), build_first_block(space), blocks, build_head(space))
    init_weights(net)
    if zero_init_residual:
        for m in net.modules():
            if isinstance(m, LinearStabilizer):
                m.reset_to_identity()
        zero_init_residual_(net)
    return fold_stabilizers(net) if identity == "fold" else net


def create_model(name: str, num_classes: int = 1000) -> Network:
    """A freshly initialised published model (plain identity layers, as the papers retrain).

    ``name`` is one of :func:`fastscarlet.space.published.list_models` (``scarlet_a``, ...).
    """
    m = get_published(name)
    space = model_space(name, num_classes)
    return build_network(space, validate_genome(space, m.genome), identity="identity")
