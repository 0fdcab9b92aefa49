"""Search spaces against the skeletons of papers.md section 1 (typed in here independently)."""

import numpy as np
import pytest
import torch

from fastscarlet.nn.supernet import SuperNet
from fastscarlet.space import (
    Choice,
    FirstBlock,
    Head,
    SEConfig,
    Stage,
    Stem,
    get_space,
    list_spaces,
    make_space,
    mbconv_choices,
)
from fastscarlet.space.genome import random_genome

# papers.md 1.2: (out channels, stride) of the 19 positions
SCARLET_SHAPES = [(32, 2), (32, 1)] + [(40, 2)] + [(40, 1)] * 3 + [(80, 2)] + [(80, 1)] * 3
SCARLET_SHAPES += [(96, 1)] * 4 + [(192, 2)] + [(192, 1)] * 3 + [(320, 1)]
SCARLET_IDENTITY_POSITIONS = {2, 4, 5, 6, 8, 9, 10, 12, 13, 14, 16, 17, 18}  # 1-based


def test_registry_lists_builtin_spaces():
    assert {"scarlet", "fairnas", "fairnas_se", "moga"} <= set(list_spaces())
    with pytest.raises(ValueError, match="unknown search space"):
        get_space("nope")


def test_scarlet_skeleton_and_choices():
    sp = get_space("scarlet")
    assert sp.num_layers == 19 and sp.num_choices == 13
    assert [(ly.out_channels, ly.stride) for ly in sp.layers] == SCARLET_SHAPES
    assert all(ly.activation == "hswish" for ly in sp.layers)
    assert sp.stem.out_channels == 32 and sp.first_block.out_channels == 16
    names = sp.choice_names
    # papers.md index: 3*[t == 6] + {3: 0, 5: 1, 7: 2}[k] + 6*SE, 12 = identity
    for t in (3, 6):
        for k, kk in ((3, 0), (5, 1), (7, 2)):
            for se in (0, 1):
                name = f"E{t}K{k}" + ("SE" if se else "")
                assert names.index(name) == 3 * (t == 6) + kk + 6 * se
    assert names[12] == "ID" and sp.identity_index == 12
    with_id = {ly.index + 1 for ly in sp.layers if 12 in ly.allowed}
    assert with_id == SCARLET_IDENTITY_POSITIONS
    assert all(len(ly.allowed) == (13 if ly.index + 1 in with_id else 12) for ly in sp.layers)
    assert sp.size() == 13**13 * 12**6


def test_scarlet_identity_everywhere_flag():
    sp = get_space("scarlet", identity="all")
    assert all(12 in ly.allowed for ly in sp.layers)
    # UniNAS-style: stride-1 layers only (channel change allowed at positions 11 and 19)
    sp1 = get_space("scarlet", identity="stride1")
    assert {ly.index + 1 for ly in sp1.layers if 12 in ly.allowed} == SCARLET_IDENTITY_POSITIONS | {
        11,
        19,
    }


def test_fairnas_space():
    sp = get_space("fairnas")
    assert sp.num_layers == 19 and sp.num_choices == 6
    assert [(ly.out_channels, ly.stride) for ly in sp.layers] == SCARLET_SHAPES
    assert not any(c.se or c.identity for c in sp.choices)
    assert all(ly.activation == "relu6" for ly in sp.layers)
    assert sp.layers[18].allowed == (sp.choice_names.index("E6K5"),)
    assert sp.searchable_layers == tuple(range(18))
    assert sp.size() == 6**18  # "(6!)^18 choices per step" counts 18 searchable layers
    assert sp.head.dropout == 0.2


def test_moga_space():
    sp = get_space("moga")
    assert sp.num_layers == 14 and sp.num_choices == 12
    assert [ly.out_channels for ly in sp.layers] == [
        24,
        24,
        40,
        40,
        40,
        80,
        80,
        80,
        80,
        112,
        112,
        160,
        160,
        160,
    ]
    assert [ly.index + 1 for ly in sp.layers if ly.stride == 2] == [1, 3, 6, 12]
    assert [ly.activation for ly in sp.layers] == ["relu"] * 5 + ["hswish"] * 9
    assert sp.stem.out_channels == 16 and sp.stem.activation == "hswish"
    assert sp.head.features == 960 and sp.head.hidden == 1280
    assert sp.identity_index is None


def test_user_defined_space_end_to_end():
    sp = make_space(
        "tiny",
        choices=mbconv_choices(expansions=(2, 4), kernels=(3, 5), identity=True),
        stem=Stem(8, "relu"),
        first_block=FirstBlock(8, "relu"),
        stages=[Stage(12, 2, 2, "relu6"), Stage(16, 2, 2, ("relu", "hswish"))],
        head=Head(32, "relu6", dropout=0.1),
        se=SEConfig(ratio=0.5, act=None, gate="sigmoid"),
        num_classes=5,
    )
    assert sp.num_choices == 9 and sp.num_layers == 4
    assert [12 in ly.allowed for ly in sp.layers] == [False] * 4  # 12 is no index here
    assert [sp.identity_index in ly.allowed for ly in sp.layers] == [False, True, False, True]
    net = SuperNet(sp).eval()
    g = random_genome(sp, np.random.default_rng(0))
    assert net(torch.randn(2, 3, 17, 17), g).shape == (2, 5)
    # the definition reaches the modules: per-layer activation, SE width/act/gate, head dropout
    block, se = net.layers[3].block_of(sp.choice_names.index("E4K5SE"))
    assert isinstance(block.act, torch.nn.Hardswish) and block.hidden == 64
    assert se.reduce.out_channels == 32  # ratio 0.5 of the hidden 64
    assert isinstance(se.act, torch.nn.Hardswish) and isinstance(se.gate, torch.nn.Sigmoid)
    assert isinstance(net.layers[2].block_of(0)[0].act, torch.nn.ReLU)
    assert net.head.dropout.p == 0.1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(identity="sometimes"), "identity must be"),
        (dict(fixed={40: "E3K3"}), "fixed layer index"),
        (dict(fixed={0: "E9K9"}), "fixed choice"),
        (dict(stages=[Stage(8, 0, 1, "relu")]), "depth must be"),
        (dict(stages=[Stage(8, 2, 1, ("relu",))]), "activations for 2 layers"),
        (dict(stages=[Stage(8, 1, 3, "relu")]), "stride must be 1 or 2"),
        (dict(stages=[Stage(8, 1, 1, "gelu")]), "activation must be one of"),
    ],
)
def test_make_space_rejects_bad_definitions(kwargs, match):
    base = dict(
        choices=mbconv_choices(),
        stem=Stem(8, "relu"),
        first_block=FirstBlock(8, "relu"),
        stages=[Stage(8, 1, 1, "relu")],
        head=Head(16, "relu"),
    )
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        make_space("bad", **base)


def test_choice_parse_round_trip_and_errors():
    for c in mbconv_choices(identity=True):
        assert Choice.parse(c.name) == c
    assert Choice.parse("skip").identity
    for bad in ("E6", "K3", "E6K4", "hello", ""):
        with pytest.raises(ValueError):
            Choice.parse(bad)
