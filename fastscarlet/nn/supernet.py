"""The weight-sharing supernet: every path is exactly a network of the space.

``SuperNet(space)(x, genome)`` runs the single path ``genome``; :meth:`SuperNet.subnet` extracts it as
a standalone :class:`~fastscarlet.nn.network.Network` that keeps (copies of) the supernet's weights and
computes the same function. Identity choices carry the SCARLET LET stabilizer
(:class:`~fastscarlet.nn.stabilizer.LinearStabilizer`); with ``stabilizer=False`` they are a plain
identity (:class:`~fastscarlet.nn.stabilizer.PlainIdentity`), the baseline of the SCARLET paper.

**SE weight sharing** (``share_se=``). Whether an SE choice shares its convolutions with the matching
non-SE choice is not known from the papers (papers.md section 1.2). The default is separate
weights: with sharing, the project conv and its BN see SE-gated features on SE paths and ungated
ones on the others, so the shared BN running statistics are a mixture that is right for neither,
and the released models treat the 13 choices as distinct operations (each trained once per
strict-fairness step). ``share_se=True`` gives each (expansion, kernel) pair one set of convs and
BNs, and each SE choice only its own SE module.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from fastscarlet.kernels.dispatch import run_blocks
from fastscarlet.nn.blocks import MBConv, init_weights, make_se, zero_init_residual_
from fastscarlet.nn.network import (
    IDENTITY_MODES,
    Network,
    build_block,
    build_first_block,
    build_head,
    build_stem,
    plain_identity,
)
from fastscarlet.nn.stabilizer import LinearStabilizer, PlainIdentity, fold_stabilizers
from fastscarlet.space import Choice, Genome, SearchSpace, get_space, random_genome, validate_genome


class ChoiceLayer(nn.Module):
    """All candidate blocks of one searchable layer, keyed by choice name (``E6K5SE``, ``ID``)."""

    def __init__(
        self, space: SearchSpace, index: int, share_se: bool = False, stabilizer: bool = True
    ) -> None:
        super().__init__()
        self.space, self.index, self.share_se = space, index, share_se
        self.spec = space.layers[index]
        self.candidates = nn.ModuleDict()
        self.se_modules = nn.ModuleDict()  # only used with share_se
        for c in self.spec.allowed:
            choice = space.choices[c]
            if share_se and choice.se:
                base = _base_name(choice)
                if base not in self.candidates:
                    self.candidates[base] = MBConv(
                        self.spec.in_channels, self.spec.out_channels, choice.expansion,
                        choice.kernel, self.spec.stride, self.spec.activation,
                    )  # fmt: skip
                hidden = self.candidates[base].hidden
                self.se_modules[choice.name] = make_se(
                    space.se, self.spec.in_channels, hidden, self.spec.activation
                )
            elif choice.identity and not stabilizer:
                self.candidates[choice.name] = _plain_identity_choice(space, index)
            elif choice.name not in self.candidates:
                self.candidates[choice.name] = build_block(space, index, c)

    def forward(self, x: torch.Tensor, choice: int) -> torch.Tensor:
        block, se = self.block_of(choice)
        return block.forward_with_se(x, se)

    def block_of(self, choice: int) -> tuple[nn.Module, nn.Module | None]:
        """The module that runs ``choice`` and the SE module it applies (None: no SE)."""
        c = self.space.choices[choice]
        if self.share_se and c.se:
            return self.candidates[_base_name(c)], self.se_modules[c.name]
        block = self.candidates[c.name]
        return block, getattr(block, "se", None)

    def export(self, choice: int, identity: str) -> nn.Module:
        """A standalone copy of the block of ``choice``."""
        c = self.space.choices[choice]
        if c.identity and identity == "identity":
            return plain_identity(self.space, self.index)
        if self.share_se and c.se:
            block = copy.deepcopy(self.candidates[_base_name(c)])
            block.se = copy.deepcopy(self.se_modules[c.name])
            return block
        return copy.deepcopy(self.candidates[c.name])

    @torch.no_grad()
    def align(self) -> None:
        """Make every MBConv candidate compute the function of the smallest one (E{min}K{min}).

        With ``h`` the smallest hidden width and ``k`` the smallest kernel among the candidates:
        each candidate's first ``h`` expand rows, the central ``k x k`` taps of its first ``h``
        depthwise kernels (zero elsewhere) and its first ``h`` project columns (zero elsewhere)
        are the reference's; its extra hidden channels then add nothing. An SE module starts with a zero excitation
        conv, so its gate is one constant; the project conv is linear and bn3 normalises its
        output, so a constant scale does not change the block's function (up to BN's eps).
        BN parameters are already equal (gamma 1, beta 0, or gamma 0 for zero-init residuals).
        """
        blocks = [b for b in self.candidates.values() if isinstance(b, MBConv)]
        if len(blocks) < 2:
            return
        ref = min(blocks, key=lambda b: (b.hidden, b.kernel))
        h, k = ref.hidden, ref.kernel
        for b in blocks:
            if b is not ref:
                b.expand.weight[:h].copy_(ref.expand.weight)
                # the extra hidden channels keep their random depthwise init: all zeros would
                # give bn2 a zero variance and 1/sqrt(eps) gradients
                b.dw.weight[:h].zero_()
                lo = (b.kernel - k) // 2
                b.dw.weight[:h, :, lo : lo + k, lo : lo + k].copy_(ref.dw.weight)
                b.project.weight.zero_()
                b.project.weight[:, :h].copy_(ref.project.weight)
        for se in [*self.se_modules.values(), *(b.se for b in blocks if b.se is not None)]:
            se.expand.weight.zero_()
            if isinstance(se.gate, nn.Hardsigmoid):
                se.expand.bias.fill_(3.0)  # relu6(3 + 3) / 6 = 1: the SE starts as the identity

    def parameters_of(self, choice: int) -> list[nn.Parameter]:
        """The parameters a path through ``choice`` uses in this layer."""
        c = self.space.choices[choice]
        if self.share_se and c.se:
            return [
                *self.candidates[_base_name(c)].parameters(),
                *self.se_modules[c.name].parameters(),
            ]
        return list(self.candidates[c.name].parameters())


def _base_name(choice: Choice) -> str:
    return Choice(choice.expansion, choice.kernel, False).name


def _plain_identity_choice(space: SearchSpace, index: int) -> PlainIdentity:
    hint = "keep the LET stabilizer (stabilizer=True), or use space.identity=equal_shape"
    plain_identity(space, index, hint)  # the shape check
    return PlainIdentity()


class SuperNet(nn.Module):
    """One-shot supernet over ``space``.

    Args:
        space: a :class:`SearchSpace` or the name of a registered one.
        share_se: SE choices share convs/BNs with the matching non-SE choice (see module doc).
        let_init: ``"conv"`` (the Xiaomi conv init, as UniNAS) or ``"identity"`` (W = I) for the
            LET stabilizers; the paper's choice is not known.
        zero_init_residual: start every residual MBConv's last BN with gamma = 0, so that each
            residual choice begins as the identity (Goyal et al. 2017; timm's ``zero_init_last``).
            With ``let_init="identity"`` all choices of an equal-shape layer then start as the same
            function and paths differ only at the transition layers at first. The supernet init of
            the papers is not known; measured on CIFAR-10 (configs/cifar10.yaml) this is what lets
            one epoch of strict-fairness training move the loss at all.
        aligned_init: start every MBConv choice of a layer as the **same function** (see
            :meth:`ChoiceLayer.align`): the supernet begins as one network and its choices grow
            apart as strict fairness trains them. Without it the choices of a transition layer
            (stride 2 or a channel change, which cannot start as the identity) are unrelated
            random maps, and the shared stem and head see different features on every path:
            measured on Fashion-MNIST (width 0.25, benchmarks/RESULTS.md), uniform single-path
            training reached loss 0.75 in 300 steps with the transition layers fixed and stayed
            at 2.1-2.4 (chance: 2.3) with them sampled. Not in the papers (their supernet init is
            not published); off by default.
        stabilizer: identity choices carry the LET (default); False makes them a plain identity
            (no weights), the "without LET" baseline of the SCARLET paper. A plain identity
            cannot change the shape, so a space that allows identity at stride-2 or
            channel-changing layers (``identity="stride1"``/``"all"``) is refused with
            ``stabilizer=False``.
    """

    def __init__(
        self,
        space: SearchSpace | str,
        share_se: bool = False,
        let_init: str = "conv",
        zero_init_residual: bool = False,
        aligned_init: bool = False,
        stabilizer: bool = True,
    ) -> None:
        super().__init__()
        self.space = get_space(space)
        if let_init not in ("conv", "identity"):
            raise ValueError(f"let_init must be 'conv' or 'identity', got {let_init!r}")
        self.share_se, self.stabilizer = share_se, stabilizer
        self.stem = build_stem(self.space)
        self.first_block = build_first_block(self.space)
        self.layers = nn.ModuleList(
            ChoiceLayer(self.space, i, share_se, stabilizer) for i in range(self.space.num_layers)
        )
        self.head = build_head(self.space)
        self._active: Genome | None = None
        init_weights(self)
        for m in self.modules():
            if let_init == "identity" and isinstance(m, LinearStabilizer):
                m.reset_to_identity()
        if zero_init_residual:
            zero_init_residual_(self)
        if aligned_init:
            for layer in self.layers:
                layer.align()

    # -- paths ----------------------------------------------------------------------------------

    def set_active(self, genome: Sequence[int]) -> Genome:
        """Make ``genome`` the path used by ``forward(x)`` without a genome."""
        self._active = validate_genome(self.space, genome)
        return self._active

    @property
    def active(self) -> Genome | None:
        return self._active

    def sample(self, rng: np.random.Generator) -> Genome:
        """A uniformly random path (also made active)."""
        return self.set_active(random_genome(self.space, rng))

    def forward_features(
        self, x: torch.Tensor, genome: Sequence[int] | None = None
    ) -> torch.Tensor:
        g = self._resolve(genome)
        x = self.first_block(self.stem(x))
        # The kernels' dispatch decides how the path's blocks run: one by one (the reference), or
        # on the Triton path with runs of LET stabilizers fused into the next MBConv.
        return run_blocks(x, [layer.block_of(c) for layer, c in zip(self.layers, g)])

    def forward(self, x: torch.Tensor, genome: Sequence[int] | None = None) -> torch.Tensor:
        return self.head(self.forward_features(x, genome))

    def _resolve(self, genome: Sequence[int] | None) -> Genome:
        if genome is None:
            if self._active is None:
                raise ValueError("no genome given and no active path; call set_active(genome)")
            return self._active
        return validate_genome(self.space, genome)

    def path_parameters(self, genome: Sequence[int]) -> list[nn.Parameter]:
        """Parameters used by the path ``genome`` (shared stem/first block/head included)."""
        g = validate_genome(self.space, genome)
        params = [*self.stem.parameters(), *self.first_block.parameters()]
        for layer, c in zip(self.layers, g):
            params += layer.parameters_of(c)
        return params + list(self.head.parameters())

    # -- export ---------------------------------------------------------------------------------

    def subnet(self, genome: Sequence[int], identity: str = "let") -> Network:
        """Standalone network of ``genome`` with copies of this supernet's weights.

        ``identity``: ``"let"`` (default; exactly the supernet path), ``"fold"`` (LET folded into
        the next 1x1 conv where exact, still exactly the supernet path) or ``"identity"`` (plain
        identity, what the papers retrain; a different function unless the LET is the identity).
        """
        if identity not in IDENTITY_MODES:
            raise ValueError(f"identity must be one of {IDENTITY_MODES}, got {identity!r}")
        g = validate_genome(self.space, genome)
        mode = "let" if identity == "fold" else identity
        net = Network(
            self.space,
            g,
            copy.deepcopy(self.stem),
            copy.deepcopy(self.first_block),
            [layer.export(c, mode) for layer, c in zip(self.layers, g)],
            copy.deepcopy(self.head),
        )
        net.train(self.training)
        return fold_stabilizers(net) if identity == "fold" else net
