"""fastscarlet's blocks and published networks against an independent transcription of the
authors' released models (tests/xiaomi_reference.py, papers.md section 1.1): weights copied by
parameter role, outputs and BN running statistics compared in eval and train mode."""

from __future__ import annotations

import inspect

import pytest
import torch
import xiaomi_reference as xr
from torch import nn

from fastscarlet.kernels.testing import randomize_bn
from fastscarlet.nn import MBConv, create_model
from fastscarlet.nn.network import Network, build_block
from fastscarlet.space import get_space
from fastscarlet.space.published import PUBLISHED

# case: (fastscarlet space, its kwargs, the reference family)
FAMILIES = {
    "scarlet": ("scarlet", {}, xr.scarlet_family),
    "fairnas": ("fairnas", {}, xr.fairnas_family),
    "fairnas_se": ("fairnas_se", {"se_ratio": 1.0}, lambda: xr.fairnas_se_family(1.0)),
    "fairnas_se_ratio_0.5": ("fairnas_se", {"se_ratio": 0.5}, lambda: xr.fairnas_se_family(0.5)),
    "moga": ("moga", {}, xr.moga_family),
}


def block_roles(b: MBConv) -> dict[str, nn.Module]:
    r = {"expand": b.expand, "bn1": b.bn1, "dw": b.dw, "bn2": b.bn2}
    if b.se is not None:
        r.update({"se.reduce": b.se.reduce, "se.expand": b.se.expand})
    r.update(project=b.project, bn3=b.bn3)
    return r


def network_roles(net: Network) -> dict[str, nn.Module]:
    fb, head = net.first_block, net.head
    r = {"stem.conv": net.stem[0], "stem.bn": net.stem[1]}
    r.update({"sep.dw": fb[0], "sep.bn1": fb[1], "sep.pw": fb[3], "sep.bn2": fb[4]})
    for i, block in enumerate(net.blocks):
        if isinstance(block, MBConv):
            r.update({f"blocks.{i}.{k}": m for k, m in block_roles(block).items()})
    r.update({"head.conv": head.conv, "head.bn": head.bn})
    if head.hidden is not None:
        r["head.hidden"] = head.hidden
    r["classifier"] = head.classifier
    return r


def _tensors(module: nn.Module) -> set[int]:
    return {id(t) for t in (*module.parameters(), *module.buffers())}


def copy_by_role(src: nn.Module, src_roles, dst: nn.Module, dst_roles) -> None:
    """Copy every parameter and BN buffer of ``src`` into ``dst`` role by role. Both must have
    the same roles, each with the same tensors by name and shape, and no tensor outside them."""
    assert list(src_roles) == list(dst_roles)
    for role, m in src_roles.items():
        assert type(m) is type(dst_roles[role]), role
        dst_roles[role].load_state_dict(m.state_dict())  # strict: same names and shapes
    for model, roles in ((src, src_roles), (dst, dst_roles)):
        covered = set().union(*(_tensors(m) for m in roles.values()))
        assert covered == _tensors(model), "a parameter or buffer belongs to no role"


def bn_stats(roles) -> dict[str, torch.Tensor]:
    return {
        f"{role}.{k}": getattr(m, k).clone()
        for role, m in roles.items()
        if isinstance(m, nn.BatchNorm2d)
        for k in ("running_mean", "running_var")
    }


def assert_same_function(ours, ours_roles, ref, ref_roles, x, seed=0) -> torch.Tensor:
    """Eval mode, then train mode (batch statistics, running statistics updated, dropout with the
    same seed): the same outputs and the same updated running statistics (fp32 rounding: 1e-5 of
    the output's scale; a wrong activation, gate, width or BN moves outputs by 1e-2 or more)."""

    def close(a, b):
        tol = 1e-5 * max(1.0, float(b.abs().max()))
        torch.testing.assert_close(a, b, rtol=1e-5, atol=tol)

    with torch.no_grad():
        y = ours.eval()(x)
        close(y, ref.eval()(x))
        torch.manual_seed(seed)
        y_train = ours.train()(x)
        torch.manual_seed(seed)
        close(y_train, ref.train()(x))
    torch.testing.assert_close(bn_stats(ours_roles), bn_stats(ref_roles), rtol=1e-5, atol=1e-5)
    return y


def test_the_transcription_imports_no_fastscarlet():
    source = inspect.getsource(xr)
    assert "import fastscarlet" not in source and "from fastscarlet" not in source


@pytest.mark.parametrize("case", list(FAMILIES))
def test_block_equals_the_released_block(case):
    """Every non-identity choice at a strided, a residual and a channel-changing position of every
    activation of the space: expand / depthwise / SE / project / residual compute what the
    authors' ``InvertedResidual`` computes."""
    space_name, kwargs, make_family = FAMILIES[case]
    space, family = get_space(space_name, **kwargs), make_family()
    g = torch.Generator().manual_seed(0)
    # the first strided, residual and stride-1 channel-changing position of each activation
    kinds: dict[tuple, int] = {}
    for ly in space.layers:
        kind = (ly.activation, ly.stride, ly.in_channels == ly.out_channels)
        kinds.setdefault(kind, ly.index)
    checked = set()
    for i in sorted(kinds.values()):
        spec = space.layers[i]
        x = torch.randn(3, spec.in_channels, 9, 9, generator=g)
        for c in spec.allowed:
            choice = space.choices[c]
            if choice.identity:
                continue
            ours = build_block(space, i, c)
            ref = family.block(i, choice.expansion, choice.kernel, choice.se)
            with torch.no_grad():
                for p in ours.parameters():  # conv weights too: nothing left at its default
                    p.normal_(0.0, 0.3, generator=g)
            randomize_bn(ours, g)
            copy_by_role(ours, block_roles(ours), ref, ref.roles())
            assert_same_function(ours, block_roles(ours), ref, ref.roles(), x)
            checked.add((spec.activation, choice.se, ours.residual))
    acts = {ly.activation for ly in space.layers}
    ses = {c.se for c in space.choices if not c.identity}
    assert {(a, s) for a, s, _ in checked} == {(a, s) for a in acts for s in ses}
    assert {r for *_, r in checked} == {True, False}


def calibrate_bn_(net: nn.Module, x: torch.Tensor) -> None:
    """Running statistics = the batch statistics of ``x``: per-channel values that are neither
    the defaults nor random, so eval-mode activations stay normalised through 20 layers (random
    ones compound layer by layer until fp32 rounding, amplified, exceeds any fair tolerance) and
    the output depends on the input."""
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one batch gives its statistics
    with torch.no_grad():
        net.train()(x)
    for m in bns:
        m.momentum = 0.1


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_network_equals_the_released_network(name):
    """The whole published model (stem, separable block, every layer, head) against the
    transcription built from papers.md's layer tables."""
    g = torch.Generator().manual_seed(1)
    ours, ref = create_model(name), xr.reference_model(name)
    x = torch.randn(4, 3, 64, 64, generator=g)
    randomize_bn(ours, g)
    calibrate_bn_(ours, x)
    copy_by_role(ours, network_roles(ours), ref, ref.roles())
    y = assert_same_function(ours, network_roles(ours), ref, ref.roles(), x)
    assert (y[0] - y[1]).abs().max() > 1e-2, "output does not depend on the input"
