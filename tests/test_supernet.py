"""Supernet paths against their extracted subnets, identity export modes and LET folding."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from fastscarlet.nn import LinearStabilizer, MBConv, build_network, fold_into_1x1, fold_stabilizers
from fastscarlet.nn.supernet import SuperNet
from fastscarlet.space import get_space
from fastscarlet.space.genome import random_genome
from fastscarlet.train.samplers import StrictFairSampler

SPACES = ["scarlet", "fairnas", "fairnas_se", "moga"]


def randomize_(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so a wrong copy would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return net


def calibrate_(net: nn.Module, x: torch.Tensor, *genome) -> nn.Module:
    """Set the BN running statistics of the path to the batch statistics of ``x`` (one
    train-mode pass with a cumulative average), so that eval-mode activations stay normalised
    through all layers and the output depends on the input (without it, random running stats let
    the signal saturate and every input gives the same logits, hiding any mismatch)."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        net(x, *genome)
    return net.eval()


def assert_input_sensitive(y: torch.Tensor) -> None:
    assert (y[0] - y[1]).abs().max() > 1e-2, "output does not depend on the input"


def genomes_with_identity(space, n, rng):
    out = []
    while len(out) < n:
        g = random_genome(space, rng)
        if space.identity_index is None or space.identity_index in g:
            out.append(g)
    return out


# share_se ties SE choices to their plain twins: only spaces with SE choices
SHARE_SE_CASES = [(s, False) for s in SPACES] + [
    (s, True) for s in SPACES if any(c.se for c in get_space(s).choices)
]


@pytest.mark.parametrize("space_name, share_se", SHARE_SE_CASES)
def test_supernet_path_equals_extracted_subnet(space_name, share_se):
    """The subnet copies the path's modules: this checks the copy (weights, BN statistics,
    identity as LET), not the block math, which test_block_math.py checks against an independent
    transcription of the authors' code."""
    space = get_space(space_name)
    torch.manual_seed(0)
    sup = randomize_(SuperNet(space, share_se=share_se))
    # two strict-fairness steps: every choice of every layer twice, in random combinations
    sampler = StrictFairSampler(space, seed=0)
    genomes = sampler.sample() + sampler.sample()
    x = torch.randn(4, 3, 33, 33)
    worst = 0.0
    with torch.no_grad():
        for g in genomes:
            calibrate_(sup, x, g)
            sub = sup.subnet(g, identity="let")
            assert sub.genome == g and not sub.training
            y = sup(x, g)
            assert_input_sensitive(y)
            worst = max(worst, (y - sub(x)).abs().max().item())
    assert worst < 1e-5


def test_subnet_is_standalone_copy():
    sup = SuperNet("scarlet")
    g = random_genome(sup.space, np.random.default_rng(3))
    sub = sup.subnet(g)
    sup_ptrs = {p.data_ptr() for p in sup.parameters()}
    assert not any(p.data_ptr() in sup_ptrs for p in sub.parameters())
    # it has exactly the parameters of the path
    assert sum(p.numel() for p in sub.parameters()) == sum(
        p.numel() for p in sup.path_parameters(g)
    )


def test_path_parameters_are_what_backward_touches():
    space = get_space("scarlet")
    sup = SuperNet(space)
    g = random_genome(space, np.random.default_rng(5))
    sup(torch.randn(2, 3, 32, 32), g).sum().backward()
    touched = {id(p) for p in sup.parameters() if p.grad is not None}
    assert touched == {id(p) for p in sup.path_parameters(g)}


def test_share_se_ties_weights():
    sup = SuperNet("scarlet", share_se=True)
    layer = sup.layers[3]
    assert "E3K7SE" not in layer.candidates and "E3K7SE" in layer.se_modules
    sp = sup.space
    g_se = list(random_genome(sp, np.random.default_rng(0)))
    g_plain = list(g_se)
    g_se[3], g_plain[3] = sp.choice_names.index("E3K7SE"), sp.choice_names.index("E3K7")
    shared = {id(p) for p in sup.path_parameters(g_se)} & {
        id(p) for p in sup.path_parameters(g_plain)
    }
    assert {id(p) for p in layer.candidates["E3K7"].parameters()} <= shared
    # separate (default): no parameter of layer 4 is shared between the two choices
    sep = SuperNet("scarlet")
    a = {id(p) for p in sep.layers[3].parameters_of(g_se[3])}
    b = {id(p) for p in sep.layers[3].parameters_of(g_plain[3])}
    assert not a & b


def test_plain_identity_export_equals_path_when_let_is_identity():
    space = get_space("scarlet")
    sup = randomize_(SuperNet(space, let_init="identity"))
    g = genomes_with_identity(space, 1, np.random.default_rng(2))[0]
    x = torch.randn(4, 3, 32, 32)
    calibrate_(sup, x, g)
    sub = sup.subnet(g, identity="identity")
    assert not any(isinstance(m, LinearStabilizer) for m in sub.modules())
    with torch.no_grad():
        assert_input_sensitive(sub(x))
        torch.testing.assert_close(sub(x), sup(x, g), rtol=0, atol=1e-5)
        # with a trained (non-identity) LET the plain identity is a different function
        for m in sup.modules():
            if isinstance(m, LinearStabilizer):
                m.conv.weight.add_(0.1)
        assert (sub(x) - sup(x, g)).abs().max() > 1e-3


@pytest.mark.parametrize("identity", ["equal_shape", "all"])
def test_fold_export_is_exact(identity):
    space = get_space("scarlet", identity=identity)
    sup = randomize_(SuperNet(space)).double()
    rng = np.random.default_rng(7)
    x = torch.randn(4, 3, 35, 35, dtype=torch.float64)
    n_folded = n_kept = 0
    with torch.no_grad():
        for g in genomes_with_identity(space, 10, rng):
            calibrate_(sup, x, g)
            folded = sup.subnet(g, identity="fold")
            kept = sup.subnet(g, identity="let")
            torch.testing.assert_close(folded(x), kept(x), rtol=0, atol=1e-10)
            lets = sum(isinstance(m, LinearStabilizer) for m in folded.blocks)
            n_kept += lets
            n_folded += g.count(12) - lets
    assert n_folded > 0 and n_kept > 0  # both cases occurred


def test_fold_is_not_exact_before_a_residual_block():
    """LET followed by a residual MBConv: folding W_L into the expand conv changes the function,
    because the skip path then carries x instead of W_L x. ``fold_stabilizers`` keeps the LET."""
    space = get_space("scarlet")
    names = space.choice_names
    g = list(space.layers[i].allowed[0] for i in range(19))
    g[3] = names.index("ID")  # position 4: identity (LET)
    g[4] = names.index("E3K3")  # position 5: stride 1, 40 -> 40: residual
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    sup = calibrate_(randomize_(SuperNet(space)).double(), x, g)
    net = sup.subnet(g, identity="let")
    let, nxt = net.blocks[3], net.blocks[4]
    assert isinstance(let, LinearStabilizer) and isinstance(nxt, MBConv) and nxt.residual
    with torch.no_grad():
        ref = net(x)
        assert_input_sensitive(ref)
        naive = copy.deepcopy(net)
        w, _ = fold_into_1x1(naive.blocks[4].expand.weight, 1, let.weight, 1)
        naive.blocks[4].expand.weight.copy_(w)
        naive.blocks[3] = nn.Identity()
        assert (naive(x) - ref).abs().max() > 1e-3  # not the same function
        folded = fold_stabilizers(net)
        assert isinstance(folded.blocks[3], LinearStabilizer)  # kept, not folded
        torch.testing.assert_close(folded(x), ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "lets, target",
    [
        # positions 15-18 (96 -> 192 stride 2, then three 192 -> 192) fold into position 19's expand
        ((14, 15, 16, 17), "expand"),
        # positions 18-19 (192 -> 192, 192 -> 320) fold into the head's 1x1 conv
        ((17, 18), "head"),
    ],
)
def test_consecutive_lets_compose_and_fold(lets, target):
    space = get_space("scarlet", identity="all")
    names = space.choice_names
    g = [names.index("E3K3")] * 19
    for i in lets:
        g[i] = 12
    x = torch.randn(4, 3, 37, 37, dtype=torch.float64)
    sup = calibrate_(randomize_(SuperNet(space)).double(), x, g)
    net = sup.subnet(g, identity="fold")
    assert not any(isinstance(m, LinearStabilizer) for m in net.modules())
    if target == "expand":
        assert net.blocks[18].expand.in_channels == 96 and net.blocks[18].expand.stride == (2, 2)
    else:
        assert net.head.conv.in_channels == 192
    with torch.no_grad():
        y = net(x)
        assert_input_sensitive(y)
        torch.testing.assert_close(y, sup(x, g), rtol=0, atol=1e-10)


def test_plain_identity_impossible_at_strided_layer():
    space = get_space("scarlet", identity="all")
    g = [0] * 19
    g[0] = 12
    with pytest.raises(ValueError, match="layer 1 .*identity='let' or 'fold'"):
        SuperNet(space).subnet(g, identity="identity")
    with pytest.raises(ValueError, match="layer 1"):
        build_network(space, g, identity="identity")
    net = build_network(space, g, identity="let").eval()
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


def test_active_path_api():
    sup = SuperNet("moga").eval()
    with pytest.raises(ValueError, match="no active path"):
        sup(torch.randn(1, 3, 32, 32))
    g = sup.sample(np.random.default_rng(0))
    assert sup.active == g
    assert sup(torch.randn(1, 3, 32, 32)).shape == (1, 1000)
    with pytest.raises(ValueError, match="14 entries"):
        sup.set_active([0] * 19)
    with pytest.raises(ValueError, match="identity must be"):
        sup.subnet(g, identity="drop")


def test_zero_init_residual_and_identity_let_start_every_equal_shape_choice_as_the_identity():
    """With both options each residual choice (x + BN3(...) with gamma3 = 0, beta3 = 0) and the
    LET (W = I) compute exactly x, in training mode too; other blocks keep gamma3 = 1."""
    torch.manual_seed(0)
    net = SuperNet("scarlet", let_init="identity", zero_init_residual=True).train()
    plain = SuperNet("scarlet")
    checked = 0
    for layer, ref_layer in zip(net.layers, plain.layers, strict=True):
        spec = layer.spec
        x = torch.randn(2, spec.in_channels, 8, 8)
        for c in spec.allowed:
            block, _ = layer.block_of(c)
            ref_block, _ = ref_layer.block_of(c)
            if isinstance(block, MBConv) and block.residual:
                torch.testing.assert_close(layer(x, c), x, rtol=0, atol=0)
                assert torch.all(ref_block.bn3.weight == 1)  # the option is what zeroes it
                checked += 1
            elif isinstance(block, MBConv):
                assert torch.all(block.bn3.weight == 1)
            else:
                torch.testing.assert_close(layer(x, c), x, rtol=0, atol=0)  # the LET
    assert checked > 100  # 12 MBConv choices in each of the equal-shape layers


def test_stem_stride_one_keeps_twice_the_resolution():
    from fastscarlet.config import config_from_dict
    from fastscarlet.space import build_space

    def final_map(stride):
        space = {"name": "scarlet", "num_classes": 10}
        if stride is not None:
            space["stem_stride"] = stride
        net = SuperNet(build_space(config_from_dict({"space": space}).space)).eval()
        feats = []
        net.head.register_forward_hook(lambda m, i, o: feats.append(i[0].shape[-1]))
        net(torch.randn(1, 3, 32, 32), [0] * 19)
        return feats[0]

    assert final_map(None) == final_map(2) == 1  # 32 / 32
    assert final_map(1) == 2  # 32 / 16
    with pytest.raises(ValueError, match="stem_stride must be 1 or 2"):
        final_map(3)
