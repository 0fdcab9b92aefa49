"""timm export: the arch-def timm's builders decode, the same outputs with the weights copied
(< 1e-5, fp32, eval) for every genome timm can express, named errors where it cannot."""

import json
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from export_fixtures import SPACES, inputs, live_network, make_checkpoint
from test_supernet import calibrate_, randomize_
from tiny import tiny_space

from fastscarlet.cli import main
from fastscarlet.export import load_timm, save_timm, timm_arch_def, timm_spec, to_timm
from fastscarlet.nn import build_network, create_model
from fastscarlet.nn.supernet import SuperNet
from fastscarlet.space import PUBLISHED, Choice, get_space, random_genome

RES = 64


def assert_same_function(net, model):
    x = inputs(3, RES)
    with torch.no_grad():
        want, got = net.eval()(x), model.eval()(x)
    assert (want[0] - want[1]).abs().max() > 1e-2  # the output depends on the input
    assert (got - want).abs().max().item() < 1e-5


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_models_equal_their_timm_models(name):
    net = live_network(create_model(name), RES)
    model = to_timm(net)
    assert type(model).__name__ == ("MobileNetV3" if name.startswith("moga") else "EfficientNet")
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in net.parameters())
    assert_same_function(net, model)


@pytest.mark.parametrize("space_name", SPACES)
@pytest.mark.parametrize("seed", [0, 1])
def test_random_genomes_equal_their_timm_models(space_name, seed):
    space = get_space(space_name)
    net = live_network(build_network(space, random_genome(space, np.random.default_rng(seed))), RES)
    assert_same_function(net, to_timm(net))


def test_folded_lets_export_exactly():
    """LETs folded into a block without residual (layer 7, 17 -> 19) or before a strided block
    change weights, not structure."""
    space = get_space("scarlet")
    g = list(random_genome(space, np.random.default_rng(4)))
    g[5] = g[17] = 12
    sup = randomize_(SuperNet(space))
    calibrate_(sup, inputs(4, RES), g)
    net = sup.subnet(g, identity="fold").eval()
    assert_same_function(net, to_timm(net))
    with torch.no_grad():  # and still the supernet path (folding rounds differently)
        x = inputs(3, RES)
        assert (to_timm(net)(x) - sup(x, g)).abs().max().item() < 1e-4


def test_arch_def_strings():
    moga = timm_arch_def(get_space("moga"), PUBLISHED["moga_a"].genome)
    assert moga[0] == ["ds_r1_k3_s1_c16_nre_noskip"]  # the released block has no residual
    assert moga[-1] == ["cn_r1_k1_s1_c960_nhs"]
    assert moga[1] == ["ir_r1_k5_s2_e6_c24_nre", "ir_r1_k7_s1_e6_c24_nre"]
    assert moga[2][1] == "ir_r1_k3_s1_e6_c40_se0.25_nre"  # SE from the expanded width
    scarlet = timm_arch_def(get_space("scarlet"), PUBLISHED["scarlet_b"].genome)
    assert scarlet[0] == ["ds_r1_k3_s1_c16_nr6"]
    # EfficientNet's SE ratio is relative to the block input: hidden/4 = c_in * e / 4.
    assert scarlet[1][0] == "ir_r1_k3_s2_e3_c32_se0.75_nhs"
    assert scarlet[2][1] == "ir_r1_k7_s1_e6_c40_se1.5_nhs"
    assert sum(map(len, scarlet[1:])) == 17  # the two identity layers are absent
    fse = timm_arch_def(get_space("fairnas_se"), PUBLISHED["fairnas_a_se"].genome)
    assert fse[1][0] == "ir_r1_k7_s2_e3_c32_se1_nsw"
    from timm.models._efficientnet_builder import decode_arch_def

    assert sum(map(len, decode_arch_def(scarlet))) == 18


def test_save_and_load_timm(tmp_path):
    net = live_network(create_model("moga_c"), RES)
    spec_path, weights = save_timm(net, tmp_path / "moga_c.json")
    spec = json.loads(spec_path.read_text())
    assert spec["model_class"] == "MobileNetV3" and spec["weights"] == weights.name
    assert_same_function(net, load_timm(spec_path))


def test_named_errors_where_timm_cannot_express_the_network():
    space = get_space("scarlet")
    g = list(PUBLISHED["scarlet_c"].genome)  # identity at layers 4, 5 (before residual blocks)
    let = build_network(space, g, identity="let")
    with pytest.raises(ValueError, match=r"layer 4 \(ID\).*LET stabilizer is kept"):
        to_timm(let)
    fold = SuperNet(space).subnet(g, identity="fold")  # layer 4+5 kept before layer 6
    with pytest.raises(ValueError, match=r"layer 4 \(ID\)"):
        to_timm(fold)
    everywhere = get_space("scarlet", identity="all")
    g2 = list(g)
    g2[10] = 12  # 80 -> 96: a channel-changing LET
    with pytest.raises(ValueError, match=r"layer 11 \(ID\).*channels 80->96"):
        timm_spec(everywhere, g2)
    stem1 = replace(space, stem=replace(space.stem, stride=1))
    with pytest.raises(ValueError, match="the stem.*stride is 1"):
        timm_spec(stem1, g)
    # 12 channels x 3 = 36, which timm's make_divisible rounds to 40.
    odd = replace(tiny_space(), choices=(Choice(3, 3),) + tiny_space().choices[1:])
    with pytest.raises(ValueError, match=r"layer 2 \(E3K3\).*expanded width is 36"):
        timm_spec(odd, [0, 0, 0])


def test_missing_timm_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(RuntimeError, match=r"pip install timm"):
        to_timm(create_model("fairnas_a"))


def test_cli_timm_export(tmp_path, capsys):
    ckpt, sup = make_checkpoint(tmp_path, space="fairnas")
    g = random_genome(sup.space, np.random.default_rng(0))
    out = tmp_path / "sub.json"
    args = ["export", "--supernet", str(ckpt), "--genome", ",".join(map(str, g))]
    assert main([*args, "--format", "timm", "--out", str(out)]) == 0
    assert "arch_def = [[" in capsys.readouterr().out
    model = load_timm(out)
    x = inputs(2, 16)
    with torch.no_grad():
        assert (model(x) - sup(x, g)).abs().max().item() < 1e-5
