"""The README's statements about the published models, held to the built models."""

import re
from pathlib import Path

import pytest

from fastscarlet.nn.network import build_network
from fastscarlet.space import PUBLISHED, validate_genome
from fastscarlet.space.spaces import fairnas_se_space

README = Path(__file__).resolve().parents[1] / "README.md"
WORDS = {"nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13}

# FairNAS README (papers.md 3.2): thop params of the CIFAR-10 transfer models, SE ratio 1.0 and 0.5.
CIFAR10_THOP = {
    "fairnas_a_se": {1.0: 5_835_322, 0.5: 4_613_730},
    "fairnas_b_se": {1.0: 5_603_242, 0.5: 4_424_850},
    "fairnas_c_se": {1.0: 5_429_530, 0.5: 4_283_586},
}


def test_readme_counts_the_published_models_it_prints():
    text = README.read_text()
    said = re.search(r"`fastscarlet models` prints the (\w+) published models", text)
    assert said and WORDS[said.group(1)] == len(PUBLISHED) == 12
    assert "nine published models" not in text


def params(name: str, se_ratio: float, num_classes: int) -> int:
    space = fairnas_se_space(se_ratio=se_ratio, num_classes=num_classes)
    net = build_network(space, validate_genome(space, PUBLISHED[name].genome), identity="identity")
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("name", sorted(CIFAR10_THOP))
def test_fairnas_se_params_explained(name):
    """Our counts equal the released thop counts exactly (10 classes, both SE ratios), and the
    paper's ImageNet params column is the SE-0.5 models', not the SE-1.0 ones we build."""
    for ratio, thop in CIFAR10_THOP[name].items():
        assert params(name, ratio, 10) == thop
    published = PUBLISHED[name].params_m
    assert round(params(name, 0.5, 1000) / 1e6, 1) == published
    assert params(name, 1.0, 1000) / 1e6 > 1.15 * published  # what `fastscarlet models` shows
