"""Architecture encoding: round trips, published readable forms, invalid input."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastscarlet.space import get_space
from fastscarlet.space.genome import (
    from_arch_def,
    from_readable,
    random_genome,
    to_arch_def,
    to_arch_def_string,
    to_readable,
    to_timm_arch_def,
    validate_genome,
)
from fastscarlet.space.published import PUBLISHED

SPACES = ["scarlet", "fairnas", "fairnas_se", "moga"]

# papers.md section 3.1 / 3.3, typed from the layer tables (not from the genomes).
SCARLET_A = (
    "E3K7 E6K5 E3K5 E3K7SE E6K3SE E3K5SE E6K3SE E3K3 E3K7SE E3K7 E3K5 E3K7SE E3K3 E3K7SE "
    "E6K3SE E6K5SE E3K3SE E6K3SE E6K7SE"
)
SCARLET_B = (
    "E3K3SE E3K5SE E3K3SE E6K7SE E3K3 E3K5 E6K7SE E3K3SE ID E3K5 E3K3SE E3K3SE E6K7SE E3K3SE "
    "E6K5SE E6K5SE ID E6K7SE E6K5SE"
)
SCARLET_C = (
    "E3K5SE E3K3SE E3K5SE ID ID E3K3 E6K7SE E3K3SE E3K3SE E3K5 E3K7SE E3K7 E3K3SE E3K7SE "
    "E3K3SE ID E6K3SE E6K7SE E6K5SE"
)
MOGA_A = "E6K5 E6K7 E6K3 E6K3SE E3K3SE E6K3SE E6K3 E6K7 E3K7SE E6K7 E6K3 E6K3 E6K5SE E6K5SE"
FAIRNAS_C = (
    "E3K5 E3K3 E3K7 E3K3 E3K3 E3K3 E3K3 E3K3 E3K3 E6K3 E3K3 E3K3 E3K3 E3K3 E6K7 E6K7 E6K3 E6K3 E6K5"
)


@pytest.mark.parametrize(
    "name, text",
    [
        ("scarlet_a", SCARLET_A),
        ("scarlet_b", SCARLET_B),
        ("scarlet_c", SCARLET_C),
        ("moga_a", MOGA_A),
        ("fairnas_c", FAIRNAS_C),
    ],
)
def test_published_genomes_match_the_layer_tables(name, text):
    m = PUBLISHED[name]
    space = get_space(m.space)
    assert from_readable(space, text) == m.genome
    assert to_readable(space, m.genome) == text.replace(" ", "-")


@pytest.mark.parametrize("space_name", SPACES)
def test_round_trips_on_random_genomes(space_name):
    space = get_space(space_name)
    rng = np.random.default_rng(1)
    for _ in range(200):
        g = random_genome(space, rng)
        assert from_readable(space, to_readable(space, g)) == g
        assert from_arch_def(space, to_arch_def(space, g)) == g
        assert from_arch_def(space, to_arch_def_string(space, g)) == g
        assert validate_genome(space, np.array(g)) == g


def test_arch_def_is_timm_style():
    space = get_space("scarlet")
    g = PUBLISHED["scarlet_b"].genome
    ad = to_arch_def(space, g)
    assert ad[0] == ["ds_r1_k3_s1_c16_nr6"]
    assert ad[1] == ["ir_r1_k3_s2_e3_c32_se0.25_nhs", "ir_r1_k5_s1_e3_c32_se0.25_nhs"]
    assert ad[3][2] == "skip_r1_s1_c80"  # position 9 is identity
    timm = to_timm_arch_def(space, g)
    assert sum(len(s) for s in timm) == 1 + 17  # identity layers dropped
    assert json.loads(to_arch_def_string(space, g)) == ad
    moga = to_arch_def(get_space("moga"), PUBLISHED["moga_a"].genome)
    assert moga[1][0] == "ir_r1_k5_s2_e6_c24_nre"


def test_invalid_genomes_name_layer_and_choices():
    space = get_space("scarlet")
    good = list(PUBLISHED["scarlet_a"].genome)
    with pytest.raises(ValueError, match="19 entries"):
        validate_genome(space, good[:-1])
    with pytest.raises(ValueError, match=r"layer 3 .*allowed choices: 0=E3K3"):
        validate_genome(space, good[:2] + [13] + good[3:])
    with pytest.raises(ValueError, match="layer 5"):
        validate_genome(space, good[:4] + [2.5] + good[5:])
    with pytest.raises(ValueError, match="layer 1"):
        validate_genome(space, ["E3K3"] + good[1:])
    with pytest.raises(ValueError, match="layer 1"):
        validate_genome(space, [True] + good[1:])
    # identity is not allowed at position 1 (stride 2) nor 11 (channel change)
    for pos in (0, 10, 18):
        bad = list(good)
        bad[pos] = 12
        with pytest.raises(ValueError, match=f"layer {pos + 1} .*allowed choices"):
            validate_genome(space, bad)
    # FairNAS's last layer is fixed to E6K5 (index 4)
    fair = get_space("fairnas")
    with pytest.raises(ValueError, match="layer 19 .*4=E6K5"):
        validate_genome(fair, [0] * 19)
    assert validate_genome(space, [float(x) for x in good]) == tuple(good)


def test_invalid_readable_and_arch_def():
    space = get_space("scarlet")
    with pytest.raises(ValueError, match="layer 2"):
        from_readable(space, "E3K7-E9K5" + "-E3K3" * 17)
    with pytest.raises(ValueError, match="names 19 layers"):
        from_readable(space, "E3K7")
    ad = to_arch_def(space, PUBLISHED["scarlet_a"].genome)
    ad[2][0] = ad[2][0].replace("_s2_", "_s1_")
    with pytest.raises(ValueError, match="layer 3"):
        from_arch_def(space, ad)
    with pytest.raises(ValueError, match="not JSON"):
        from_arch_def(space, "[[")
    with pytest.raises(ValueError, match="stages"):
        from_arch_def(space, [["ds_r1_k3_s1_c16_nr6"]])


_ANY = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=5)
    | st.binary(max_size=4),
    lambda children: st.lists(children, max_size=21) | st.tuples(children, children),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(
    space_name=st.sampled_from(SPACES),
    genome=_ANY | st.lists(st.integers(-2, 14), min_size=13, max_size=20),
)
def test_decoder_gives_valid_genome_or_value_error(space_name, genome):
    space = get_space(space_name)
    try:
        g = validate_genome(space, genome)
    except ValueError:
        return
    assert len(g) == space.num_layers
    assert all(type(c) is int and c in ly.allowed for c, ly in zip(g, space.layers))


@settings(max_examples=200, deadline=None)
@given(space_name=st.sampled_from(SPACES), text=st.text(max_size=60) | _ANY)
def test_readable_and_arch_def_decoders_never_crash(space_name, text):
    space = get_space(space_name)
    for decode in (from_readable, from_arch_def):
        try:
            g = decode(space, text)
        except ValueError:
            continue
        assert validate_genome(space, g) == g
