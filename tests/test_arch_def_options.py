"""The arch-def decoder reads repeat counts and SE ratios, and refuses what the space cannot build."""

import pytest

from fastscarlet.space import PUBLISHED, get_space
from fastscarlet.space.genome import from_arch_def, to_arch_def

SPACE = get_space("scarlet")
E3K7 = SPACE.choice_names.index("E3K7")


def _stage2_all_e3k7():
    """SCARLET-A with the four layers of stage 2 (c40) all E3K7: ``ir_r4_k7_s2_e3_c40_nhs``."""
    genome = list(PUBLISHED["scarlet_a"].genome)
    for i in SPACE.stage_layers(1):
        genome[i] = E3K7
    return tuple(genome), to_arch_def(SPACE, genome)


def test_a_repeat_count_stands_for_that_many_layers():
    genome, arch = _stage2_all_e3k7()
    assert arch[2] == ["ir_r1_k7_s2_e3_c40_nhs"] + ["ir_r1_k7_s1_e3_c40_nhs"] * 3
    for compact in (
        ["ir_r4_k7_s2_e3_c40_nhs"],  # timm's form: the stride is the first layer's only
        ["ir_r1_k7_s2_e3_c40_nhs", "ir_r3_k7_s1_e3_c40_nhs"],
    ):
        assert from_arch_def(SPACE, [*arch[:2], compact, *arch[3:]]) == genome


def test_repeats_that_do_not_fit_the_stage_are_named():
    _, arch = _stage2_all_e3k7()
    with pytest.raises(ValueError, match=r"stage 2 has 5 blocks \(repeats counted\), expected 4"):
        from_arch_def(SPACE, [*arch[:2], ["ir_r5_k7_s2_e3_c40_nhs"], *arch[3:]])
    for bad in ("ir_r0_k7_s2_e3_c40_nhs", "ir_r1.5_k7_s2_e3_c40_nhs"):
        with pytest.raises(ValueError, match=r"repeat count r >= 1"):
            from_arch_def(SPACE, [*arch[:2], [bad], *arch[3:]])


def test_a_stride_on_a_later_block_is_not_dropped():
    _, arch = _stage2_all_e3k7()
    blocks = ["ir_r1_k7_s2_e3_c40_nhs", "ir_r1_k7_s2_e3_c40_nhs", "ir_r2_k7_s1_e3_c40_nhs"]
    with pytest.raises(ValueError, match=r"layer 4: .* must have s1 and c40"):
        from_arch_def(SPACE, [*arch[:2], blocks, *arch[3:]])


def test_se_ratio_must_be_the_spaces():
    genome = PUBLISHED["scarlet_a"].genome
    arch = to_arch_def(SPACE, genome)
    block = arch[2][1]
    assert "_se0.25_" in block  # layer 4: E3K7SE, 120 expanded channels -> 30
    for ratio, decodes in (("0.25", True), ("0.5", False), ("0.1", False)):
        edited = [*arch[:2], [arch[2][0], block.replace("se0.25", f"se{ratio}"), *arch[2][2:]]]
        edited += arch[3:]
        if decodes:
            assert from_arch_def(SPACE, edited) == genome
        else:
            with pytest.raises(
                ValueError, match=rf"layer 4: .*SE ratio {ratio} is not the space's"
            ):
                from_arch_def(SPACE, edited)


def test_se0_means_no_se_as_in_timm():
    genome = list(PUBLISHED["scarlet_a"].genome)
    arch = to_arch_def(SPACE, genome)
    arch[2][1] = arch[2][1].replace("se0.25", "se0")
    genome[3] = SPACE.choice_names.index("E3K7")
    assert from_arch_def(SPACE, arch) == tuple(genome)


def test_fairnas_se_ratio_is_read_against_its_input_base():
    space = get_space("fairnas_se")
    genome = PUBLISHED["fairnas_a_se"].genome
    arch = to_arch_def(space, genome)
    assert from_arch_def(space, arch) == genome  # se<reduced/expanded>, as the encoder writes it
    i, j = next((i, j) for i, st in enumerate(arch) for j, b in enumerate(st) if "_se" in b)
    tag = arch[i][j].split("_se")[1].split("_")[0]
    arch[i][j] = arch[i][j].replace(f"_se{tag}_", "_se1_")  # the space's own ratio (of the input)
    assert from_arch_def(space, arch) == genome


@pytest.mark.parametrize("option", ["d2", "a1", "p1", "fc4"])
def test_options_the_space_cannot_build_are_refused(option):
    arch = to_arch_def(SPACE, PUBLISHED["scarlet_a"].genome)
    arch[1][1] = arch[1][1].replace("_nhs", f"_{option}_nhs")
    with pytest.raises(ValueError, match=rf"option '{option[:-1]}', which the space cannot"):
        from_arch_def(SPACE, arch)
