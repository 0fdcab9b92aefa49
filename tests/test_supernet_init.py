"""SuperNet(aligned_init=True): every path of a fresh supernet computes the same function."""

from __future__ import annotations

import pytest
import torch

from fastscarlet.nn import SuperNet
from fastscarlet.space import get_space, scale_width
from fastscarlet.train.samplers import make_sampler


@pytest.mark.parametrize("name", ["scarlet", "fairnas", "fairnas_se", "moga"])
def test_aligned_init_makes_every_path_the_same_function(name: str) -> None:
    space = scale_width(get_space(name, num_classes=10), 0.25)
    x = torch.randn(4, 3, 32, 32)

    def spread(aligned: bool) -> float:
        torch.manual_seed(0)
        net = SuperNet(space, zero_init_residual=True, let_init="identity", aligned_init=aligned)
        net.train()  # batch statistics, as in supernet training
        for m in net.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        with torch.no_grad():
            outs = [net(x, g) for g in make_sampler("strict_fair", space, seed=1).sample()]
        scale = outs[0].abs().max()
        return max(float((o - outs[0]).abs().max() / scale) for o in outs)

    assert spread(True) < 1e-4  # BN's eps separates scaled SE gates only by ~1e-6
    assert spread(False) > 1e-2  # without it the transition layers' choices differ


def test_aligned_init_keeps_the_extra_channels_trainable() -> None:
    """E6 choices start with zero project columns for their extra channels but random depthwise
    taps there (a zero kernel would give bn2 no variance)."""
    space = scale_width(get_space("scarlet", num_classes=10), 0.25)
    net = SuperNet(space, aligned_init=True)
    layer = net.layers[2]  # a transition layer: E3 and E6 choices
    e3, e6 = layer.candidates["E3K3"], layer.candidates["E6K7"]
    h = e3.hidden
    assert torch.equal(e6.expand.weight[:h], e3.expand.weight)
    assert torch.equal(e6.dw.weight[:h, :, 2:5, 2:5], e3.dw.weight)
    assert e6.dw.weight[:h, :, 0].abs().sum() == 0 and e6.dw.weight[h:].abs().sum() > 0
    assert e6.project.weight[:, h:].abs().sum() == 0
