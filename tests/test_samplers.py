"""Path samplers: strict fairness, uniform, NAO-V2 size-proportional; state round trips."""

import itertools

import numpy as np
import pytest
import tiny  # noqa: F401  (registers the tiny space)

from fastscarlet.cost import CostModel
from fastscarlet.nn.network import build_network
from fastscarlet.space import get_space
from fastscarlet.space.genome import validate_genome
from fastscarlet.train.samplers import (
    PathSampler,
    SizeProportionalSampler,
    StrictFairSampler,
    UniformSampler,
    list_samplers,
    make_sampler,
    register_sampler,
)


def test_strict_fairness_scarlet():
    space = get_space("scarlet")
    s = StrictFairSampler(space, seed=0)
    assert s.paths_per_step == 13
    for _ in range(20):
        paths = s.sample()
        assert len(paths) == 13
        for g in paths:
            validate_genome(space, g)
        for i, layer in enumerate(space.layers):
            col = [g[i] for g in paths]
            # every allowed choice is trained in this step; 13-choice layers exactly once each
            assert set(col) == set(layer.allowed)
            if len(layer.allowed) == 13:
                assert sorted(col) == sorted(layer.allowed)
            else:  # 12 choices: one of them twice
                assert len(col) - len(set(col)) == 1


def test_strict_fairness_fairnas_fixed_last_layer():
    space = get_space("fairnas")
    paths = StrictFairSampler(space, seed=1).sample()
    assert len(paths) == 6
    assert {g[18] for g in paths} == {4}
    for i in range(18):
        assert sorted(g[i] for g in paths) == list(range(6))


def test_strict_fairness_is_random_and_seeded():
    space = get_space("scarlet")
    a, b = StrictFairSampler(space, seed=3), StrictFairSampler(space, seed=3)
    assert a.sample() == b.sample()
    assert a.sample() != StrictFairSampler(space, seed=4).sample()
    # the order of choices within a layer varies between steps (permutations, not a fixed order)
    firsts = {a.sample()[0][3] for _ in range(30)}
    assert len(firsts) > 5


@pytest.mark.parametrize("name", ["uniform", "strict_fair", "size_proportional"])
def test_state_dict_resumes_sequence(name):
    space = get_space("scarlet")
    s = make_sampler(name, space, seed=7)
    s.sample()
    state = s.state_dict()
    expected = [s.sample() for _ in range(5)]
    t = make_sampler(name, space, seed=999)
    t.load_state_dict(state)
    assert [t.sample() for _ in range(5)] == expected


def test_uniform_marginals():
    space = get_space("scarlet")
    s = UniformSampler(space, seed=0)
    counts = np.zeros(13)
    n = 6500
    for _ in range(n):
        counts[s.sample()[0][3]] += 1
    assert np.abs(counts / n - 1 / 13).max() < 0.02


def _params_by_building(space, g):
    return sum(p.numel() for p in build_network(space, g).parameters())


def test_size_proportional_matches_brute_force():
    """On the tiny space (a small enough product to enumerate), the exact probability equals
    params(g) / sum over all genomes, with params counted on built models, and the empirical
    frequencies follow it."""
    space = get_space("tiny")
    genomes = [g for g in itertools.product(*(ly.allowed for ly in space.layers))]
    sizes = np.array([_params_by_building(space, g) for g in genomes], dtype=float)
    p_true = sizes / sizes.sum()
    s = SizeProportionalSampler(space, seed=0)
    p_model = np.array([s.probability(g) for g in genomes])
    np.testing.assert_allclose(p_model, p_true, rtol=1e-12)
    n = 60000
    index = {g: i for i, g in enumerate(genomes)}
    freq = np.zeros(len(genomes))
    for _ in range(n):
        freq[index[s.sample()[0]]] += 1
    # chi-square goodness of fit: df = 99, the 99.9% quantile is about 149
    chi2 = ((freq - n * p_true) ** 2 / (n * p_true)).sum()
    assert chi2 < 149
    # and size-proportional differs from uniform in the direction NAO-V2 wants
    big, small = np.argmax(sizes), np.argmin(sizes)
    assert freq[big] > 1.5 * freq[small]


def test_size_proportional_pool():
    """NAO-V2's pool draw: p_j = params_j / sum params. The pool spans the space's smallest and
    largest genomes (2.2M and 9.0M params: p = 0.10 and 0.43, where uniform gives 0.25), so the
    goodness-of-fit test, which the true probabilities pass, rejects uniform draws by far."""
    space = get_space("scarlet")
    cost = CostModel(space, 32).params_table
    smallest = tuple(min(ly.allowed, key=lambda c: cost[ly.index, c]) for ly in space.layers)
    largest = tuple(max(ly.allowed, key=lambda c: cost[ly.index, c]) for ly in space.layers)
    pool = [smallest, largest] + [UniformSampler(space, seed=i).sample()[0] for i in range(2)]
    s = SizeProportionalSampler(space, seed=0, pool=pool)
    sizes = np.array([_params_by_building(space, g) for g in pool], dtype=float)
    p_true = sizes / sizes.sum()
    assert p_true[0] < 0.12 and p_true[1] > 0.4
    n = 4000
    freq = np.zeros(4)
    for _ in range(n):
        freq[pool.index(s.sample()[0])] += 1

    def chi2(p):
        return ((freq - n * p) ** 2 / (n * p)).sum()

    assert chi2(p_true) < 16.27  # df = 3, the 99.9% quantile
    assert chi2(np.full(4, 0.25)) > 20 * 16.27
    with pytest.raises(ValueError, match="pool is empty"):
        SizeProportionalSampler(space, pool=[])


def test_registry_and_user_sampler():
    class FirstChoice(PathSampler):
        def sample(self):
            return [tuple(ly.allowed[0] for ly in self.space.layers)]

    if "first_choice" not in list_samplers():
        register_sampler("first_choice", FirstChoice)
    s = make_sampler("first_choice", get_space("tiny"), seed=0)
    assert s.sample() == [(0, 0, 0)]
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("nope", get_space("tiny"))
    with pytest.raises(ValueError, match="already registered"):
        register_sampler("uniform", FirstChoice)
