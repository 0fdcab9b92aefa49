"""Published models: depths, released structure details, FairNAS-SE's mixed Table 2 (papers.md
section 3). Their exact MAdds and parameters: test_published_costs.py."""

import pytest
import torch

from fastscarlet.cost import CostModel
from fastscarlet.nn import create_model
from fastscarlet.space import fairnas_se_space
from fastscarlet.space.published import PUBLISHED, get_published, model_space


def test_depths():
    assert [create_model(f"scarlet_{v}").depth for v in "abc"] == [19, 17, 16]
    assert create_model("moga_a").depth == 14


@pytest.mark.parametrize("v", "abc")
def test_fairnas_se_table_madds(v):
    """Table 2's dagger MAdds match SE ratio 1.0 with the SE multiply counted (FairNAS-SE's
    convention); its params (5.9/5.7/5.6M) match SE ratio 0.5 instead (a mixed table)."""
    pub = PUBLISHED[f"fairnas_{v}_se"]
    g = pub.genome
    madds = CostModel(fairnas_se_space(1.0), 224, se_multiply=True).madds(g)
    assert round(madds / 1e6) == pub.madds_m
    # ... and only with the multiply, only with ratio 0.5 params
    assert round(CostModel(fairnas_se_space(1.0), 224).madds(g) / 1e6) != pub.madds_m
    params = CostModel(fairnas_se_space(0.5), 224).params(g)
    assert round(params / 1e6, 1) == pub.params_m
    assert CostModel(fairnas_se_space(1.0), 224).params(g) / 1e6 > pub.params_m + 1


def test_released_structure_details():
    a = create_model("scarlet_a")
    # SE squeeze to hidden // 4 with bias, ReLU, h-sigmoid gate (SCARLET basic_ops.py)
    se = a.blocks[3].se  # position 4: E3K7SE, 40 -> 120 hidden
    assert se.reduce.weight.shape == (30, 120, 1, 1) and se.reduce.bias is not None
    assert isinstance(se.act, torch.nn.ReLU) and isinstance(se.gate, torch.nn.Hardsigmoid)
    assert isinstance(a.blocks[0].act, torch.nn.Hardswish)
    m = create_model("moga_a")
    assert isinstance(m.blocks[5].se.act, torch.nn.Hardswish)  # SE act = block act (h-swish)
    assert m.blocks[2].se is None and m.blocks[5].se is not None  # code, not figure
    assert m.head.hidden.weight.shape == (1280, 960, 1, 1) and m.head.hidden.bias is None
    f = create_model("fairnas_a")
    assert f.head.dropout.p == 0.2 and isinstance(f.blocks[0].act, torch.nn.ReLU6)


def test_model_lookup_errors_and_classes():
    with pytest.raises(ValueError, match="unknown model"):
        get_published("scarlet_z")
    assert get_published("SCARLET-A").name == "scarlet_a"
    net = create_model("moga_c", num_classes=10).eval()
    assert net(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    assert model_space("moga_c", 10).num_classes == 10


def test_build_network_zero_init_residual_starts_residual_blocks_and_lets_as_identity():
    """Each residual MBConv returns its input and each LET is the identity map (zero-padded where
    the channels widen); without the option neither holds."""
    from fastscarlet.nn import LinearStabilizer, build_network
    from fastscarlet.nn.blocks import MBConv
    from fastscarlet.space import get_space

    space = get_space("scarlet", num_classes=10)
    ident = next(i for i, c in enumerate(space.choices) if c.identity)
    genome = [
        ident if ident in spec.allowed and i % 2 else spec.allowed[i % len(spec.allowed)]
        for i, spec in enumerate(space.layers)
    ]
    torch.manual_seed(0)
    for zero in (True, False):
        net = build_network(space, genome, identity="let", zero_init_residual=zero).eval()
        res = [b for b in net.blocks if isinstance(b, MBConv) and b.residual]
        lets = [b for b in net.blocks if isinstance(b, LinearStabilizer)]
        assert res and lets
        for b in res:
            x = torch.randn(2, b.in_channels, 8, 8)
            assert torch.equal(b(x), x) is zero
        for b in lets:
            w = b.conv.weight[:, :, 0, 0]
            eye = torch.eye(w.shape[0], w.shape[1])
            assert torch.equal(w, eye) is zero
