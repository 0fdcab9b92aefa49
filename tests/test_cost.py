"""The analytic cost model against the hook-based count on built models, and by hand."""

import zlib

import numpy as np
import pytest

from fastscarlet.cost import CostModel, count_by_hooks, count_cost
from fastscarlet.nn.network import build_network
from fastscarlet.space import FirstBlock, Head, Stage, Stem, get_space, make_space, mbconv_choices
from fastscarlet.space.genome import random_genome

CASES = [
    ("scarlet", {}, "identity"),
    ("scarlet", {"identity": "all"}, "let"),
    ("fairnas", {}, "identity"),
    ("fairnas_se", {}, "identity"),
    ("moga", {}, "identity"),
]


@pytest.mark.parametrize("space_name, kwargs, identity", CASES)
@pytest.mark.parametrize("resolution", [224, 192, 97, (64, 48)])
def test_cost_model_equals_hook_count(space_name, kwargs, identity, resolution):
    space = get_space(space_name, **kwargs)
    # a stable seed (hash() of a str changes with every interpreter: PYTHONHASHSEED)
    rng = np.random.default_rng(zlib.crc32(f"{space_name} {resolution}".encode()))
    for se_multiply in (False, True):
        model = CostModel(space, resolution, identity=identity, se_multiply=se_multiply)
        for _ in range(4):
            g = random_genome(space, rng)
            net = build_network(space, g, identity=identity)
            assert model(g) == count_by_hooks(net, resolution, se_multiply=se_multiply)


def test_batch_equals_scalar():
    space = get_space("scarlet")
    rng = np.random.default_rng(0)
    genomes = np.array([random_genome(space, rng) for _ in range(500)])
    model = CostModel(space, 224)
    m, p = model.batch(genomes)
    for i in range(0, 500, 37):
        c = model(genomes[i])
        assert (m[i], p[i]) == (c.madds, c.params)
    with pytest.raises(ValueError, match="shape"):
        model.batch(genomes[:, :5])
    with pytest.raises(ValueError, match="entries"):
        model.batch(genomes + 20)


def test_one_block_by_hand():
    """A 1-layer space at 8x8 input, counted by hand with the convention of papers.md 3.4."""
    space = make_space(
        "hand",
        choices=mbconv_choices(expansions=(6,), kernels=(5,), se=(True,)),
        stem=Stem(8, "relu"),
        first_block=FirstBlock(4, "relu"),
        stages=[Stage(4, 1, 1, "relu")],
        head=Head(16, "relu"),
        num_classes=10,
    )
    hw = 4 * 4  # stem stride 2: 8x8 -> 4x4
    stem = 8 * 3 * 9 * hw
    first = 8 * 9 * hw + 4 * 8 * hw
    hidden, red = 24, 6
    block = hidden * 4 * hw + hidden * 25 * hw + 2 * hidden * red + 4 * hidden * hw
    head = 16 * 4 * hw + 10 * 16
    params = (8 * 27 + 16) + (8 * 9 + 16 + 32 + 8)
    params += hidden * 4 + 2 * hidden + hidden * 25 + 2 * hidden + 2 * hidden * red + red + hidden
    params += 4 * hidden + 8 + 16 * 4 + 32 + 160 + 10
    c = count_cost(space, [0], 8)
    assert (c.madds, c.params) == (stem + first + block + head, params)
    assert count_cost(space, [0], 8, se_multiply=True).madds == c.madds + hidden * hw


def test_bad_arguments():
    space = get_space("scarlet")
    with pytest.raises(ValueError, match="identity must be"):
        CostModel(space, 224, identity="fold")
    with pytest.raises(ValueError, match="resolution"):
        CostModel(space, 0)
    with pytest.raises(ValueError, match="layer 1"):
        CostModel(space, 224)([12] * 19)
