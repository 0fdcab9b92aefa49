"""The population evaluator against one-by-one evaluation (evaluate_paths): identical top-1/top-5
counts and losses, the same recalibrated BN statistics; its prefix trie, batch cache, memory
budget, several subnets per pass, the device shards, and the search evaluator built on it."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import tiny
import torch

from fastscarlet.evaluate import (
    CachedBatches,
    MultiDeviceEvaluator,
    PopulationEvaluator,
    build_trie,
    evaluate_paths,
    prefix_shards,
    recalibrate_bn,
    trie_size,
)
from fastscarlet.kernels.testing import randomize_bn
from fastscarlet.nn import SuperNet
from fastscarlet.space import get_space, random_genome

SPACE = get_space("tiny")


class Batches:
    """An in-memory loader that counts its passes (the same batches on every pass)."""

    def __init__(self, n: int, batch: int, seed: int, size: int = 16) -> None:
        g = torch.Generator().manual_seed(seed)
        self.data = [
            (
                torch.randn(batch, 3, size, size, generator=g),
                torch.randint(0, 3, (batch,), generator=g),
            )
            for _ in range(n)
        ]
        self.passes = 0

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self):
        self.passes += 1
        return iter(self.data)


@pytest.fixture(scope="module")
def net() -> SuperNet:
    torch.manual_seed(0)
    model = SuperNet("tiny")
    randomize_bn(model, torch.Generator().manual_seed(1))  # gamma/beta that matter
    return model


def population() -> list[tuple[int, ...]]:
    """Long shared prefixes (all of layer 2 under two prefixes), random genomes and a repeat."""
    rng = np.random.default_rng(3)
    shared = [(0, 1, c) for c in range(5)] + [(2, 4, c) for c in (0, 3)]
    return shared + [random_genome(SPACE, rng) for _ in range(5)] + [(0, 1, 2)]


def _reference_stats(net, genome, calib, batches):
    sub = net.subnet(genome)
    recalibrate_bn(sub, calib, batches)
    return {
        name: (m.running_mean, m.running_var)
        for name, m in sub.named_modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    }


def test_trie_shares_prefixes():
    genomes = [(0, 1, 2), (0, 1, 3), (0, 2, 2), (1, 1, 1), (0, 1, 2)]
    root = build_trie(genomes)
    assert sorted(root.children) == [0, 1]
    assert sorted(root.children[0].children[1].children) == [2, 3]
    assert root.children[0].children[1].children[2].genomes == [(0, 1, 2)]  # a repeat is one leaf
    # nodes below the root: (0) (0,1) (0,1,2) (0,1,3) (0,2) (0,2,2) (1) (1,1) (1,1,1)
    assert trie_size(genomes) == 9 == sum(1 for _ in root.walk()) - 1


def test_equals_one_by_one_evaluation(net):
    """Identical Accuracy records (top-1 and top-5 counts, loss, images) and the same BN
    statistics as extracting each subnet, recalibrating it and evaluating it."""
    genomes = population()
    calib, val = Batches(3, 6, seed=5), Batches(2, 7, seed=6)
    want = evaluate_paths(net, genomes, calib, val, calib_batches=2, val_batches=None)
    ev = PopulationEvaluator(net, calib, val, 2, None)
    got = ev.evaluate(genomes, keep_statistics=True)
    assert got == want
    assert len({a.top1 for a in got}) > 2  # the paths really differ
    for g in genomes:
        ref = _reference_stats(net, g, calib, 2)
        assert set(ev.statistics[g]) == set(ref)
        for name, (mean, var) in ref.items():
            torch.testing.assert_close(ev.statistics[g][name][0], mean, rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(ev.statistics[g][name][1], var, rtol=1e-6, atol=1e-7)
    assert ev.last_stats["block_forwards_per_batch"] == trie_size(genomes)
    assert trie_size(genomes) < len(set(genomes)) * SPACE.num_layers


def test_channels_last_batches_give_the_same_counts(net):
    """Batches held channels_last (faster convolutions): here the same top-1/top-5 counts, and
    statistics within float tolerance."""
    genomes = population()
    calib, val = Batches(3, 6, seed=5), Batches(2, 7, seed=6)
    want = evaluate_paths(net, genomes, calib, val, 2, None)
    ev = PopulationEvaluator(net, calib, val, 2, None, channels_last=True)
    got = ev.evaluate(genomes, keep_statistics=True)
    _same_counts(got, want)
    assert next(iter(ev.val))[0].is_contiguous(memory_format=torch.channels_last)
    for name, (mean, var) in _reference_stats(net, genomes[-1], calib, 2).items():
        torch.testing.assert_close(ev.statistics[genomes[-1]][name][0], mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ev.statistics[genomes[-1]][name][1], var, rtol=1e-5, atol=1e-6)


def _same_counts(got, want) -> None:
    for a, b in zip(got, want, strict=True):
        assert (a.top1, a.top5, a.images) == (b.top1, b.top5, b.images)
        assert a.loss == pytest.approx(b.loss, rel=1e-5)


def test_results_plug_into_the_search_metrics(net):
    ev = PopulationEvaluator(net, Batches(1, 4, 1), Batches(1, 4, 2), 1)
    rows = ev([(0, 1, 2), (1, 2, 3)])
    assert [set(r) for r in rows] == [{"acc", "acc5", "loss"}] * 2
    assert ev([]) == []


def test_the_supernet_is_left_as_it_was(net):
    before = copy.deepcopy(net.state_dict())
    buffers = [id(b) for b in net.buffers()]
    net.train()
    momenta = [m.momentum for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for grouped in (False, True):
        ev = PopulationEvaluator(net, Batches(2, 4, 1), Batches(1, 4, 2), 2, group_siblings=grouped)
        ev(population())
    assert net.training
    assert momenta == [m.momentum for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert buffers == [id(b) for b in net.buffers()]  # the modules' own buffers again
    after = net.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k


def test_batches_are_read_once_per_evaluator(net):
    """One pass over each loader for a whole population, none for the next population; without
    room to hold them, one pass per population (still not one per genome)."""
    calib, val = Batches(2, 4, 1), Batches(2, 4, 2)
    ev = PopulationEvaluator(net, calib, val, 2)
    ev(population())
    ev([(1, 1, 1), (2, 2, 2)])
    assert (calib.passes, val.passes) == (1, 1)
    assert ev.calib.where == ev.val.where == "device"
    tight = PopulationEvaluator(net, calib, val, 2, cache_bytes=0)
    tight.calib.max_host_bytes = tight.val.max_host_bytes = 0
    tight(population())
    tight([(1, 1, 1)])
    assert (calib.passes, val.passes) == (3, 3)
    assert tight.calib.where == "streamed"


def test_cached_batches_placement_and_replay():
    loader = Batches(3, 2, 9)
    host = CachedBatches(loader, 2, "cpu", max_bytes=0)
    first = list(host)
    again = list(host)
    assert host.where == "host" and loader.passes == 1 and len(host) == 2
    for (x, y), (x2, y2) in zip(first, again):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    assert host.nbytes == sum(x.numel() * 4 + y.numel() * 8 for x, y in first)
    with pytest.raises(ValueError, match="num_batches"):
        CachedBatches(loader, 0, "cpu")


def test_memory_budget_splits_the_population_with_the_same_results(net):
    genomes = population()
    calib, val = Batches(2, 5, 3), Batches(1, 6, 4)
    whole = PopulationEvaluator(net, calib, val, 2).evaluate(genomes)
    small = PopulationEvaluator(net, calib, val, 2, memory_budget=2_000)
    assert small.evaluate(genomes) == whole
    assert small.last_stats["chunks"] > 1
    chunks = small.chunks(sorted(set(genomes)))
    assert [g for c in chunks for g in c] == sorted(set(genomes))  # consecutive runs


def test_several_subnets_per_pass_match_one_by_one(net):
    """group_siblings (the CUDA default; here with the reference ops): the children of a prefix
    as one multi-path layer, the leaves through the head together. Same top-1/top-5 counts, loss
    and BN statistics within float tolerance."""
    genomes = population()
    calib, val = Batches(3, 6, seed=5), Batches(2, 7, seed=6)
    want = PopulationEvaluator(net, calib, val, 3).evaluate(genomes, keep_statistics=True)
    ev = PopulationEvaluator(net, calib, val, 3, group_siblings=True)
    got = ev.evaluate(genomes, keep_statistics=True)
    _same_counts(got, want)
    one = PopulationEvaluator(net, calib, val, 3)
    one.evaluate([genomes[0]], keep_statistics=True)
    for name, (mean, var) in one.statistics[genomes[0]].items():
        torch.testing.assert_close(ev.statistics[genomes[0]][name][0], mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ev.statistics[genomes[0]][name][1], var, rtol=1e-5, atol=1e-6)


def test_prefix_shards_keep_prefixes_together():
    genomes = [(2, 0, 0), (0, 1, 1), (0, 1, 0), (1, 0, 0), (0, 0, 4)]
    shards = prefix_shards(genomes, 2)
    assert sorted(i for s in shards for i in s) == list(range(5))
    flat = [genomes[i] for s in shards for i in s]
    assert flat == sorted(genomes)  # contiguous runs of the sorted order
    assert [len(s) for s in shards] in ([2, 3], [3, 2])
    many = prefix_shards(genomes, 7)
    assert len(many) == 7 and sorted(len(s) for s in many) == [0, 0, 1, 1, 1, 1, 1]


def test_two_devices_of_one_process_equal_one(net):
    """MultiDeviceEvaluator with two (CPU) devices: each a prefix shard on its own supernet copy,
    the same results as one evaluator, the loaders read once."""
    genomes = population()
    calib, val = Batches(2, 5, 3), Batches(2, 6, 4)
    want = PopulationEvaluator(net, calib, val, 2)(genomes)
    multi = MultiDeviceEvaluator(net, calib, val, 2, devices=["cpu", "cpu"])
    assert multi(genomes) == want
    assert multi(genomes[:3]) == want[:3]
    assert (calib.passes, val.passes) == (2, 2)  # once for `want`, once for the shared cache
    assert multi.evaluators[0].supernet is not multi.evaluators[1].supernet


def test_accuracy_evaluator_is_the_population_evaluator(net):
    """The search's accuracy evaluator gives evaluate_paths' numbers for a generation."""
    from fastscarlet.search import AccuracyEvaluator

    calib, val = Batches(2, 5, 3), Batches(1, 6, 4)
    genomes = [(0, 1, 2), (0, 1, 4), (3, 2, 1)]
    rows = AccuracyEvaluator(net, calib, val, 2, None)(genomes)
    want = evaluate_paths(net, genomes, calib, val, 2, None)
    assert rows == [{"acc": a.top1, "acc5": a.top5, "loss": a.loss} for a in want]


@pytest.mark.slow
def test_real_jpeg_loaders(tmp_path, net):
    """On the torch loader of a JPEG folder: the same records as evaluate_paths, every genome
    pair of a two-layer product (maximal sharing) evaluated with one read of each loader."""
    from fastscarlet.data import build_loader

    root = tiny.make_image_folder(tmp_path, per_class=6, size=20)
    tiny.make_image_folder(tmp_path, per_class=3, size=20, split="val")
    common = dict(image_size=16, num_workers=0, recipe="cifar", batch_size=4)
    calib = build_loader(root, "train", "torch", augment=False, shuffle=True, **common)
    val = build_loader(root, "val", "torch", **common)
    genomes = [(0, a, b) for a, b in itertools.product(range(5), range(5))][::3]
    ev = PopulationEvaluator(net, calib, val, 3)
    assert ev.evaluate(genomes) == evaluate_paths(net, genomes, calib, val, 3)
    assert ev.calib.reads == ev.val.reads == 1


@pytest.mark.parametrize("grouped", [False, True])
def test_shared_se_weights(grouped):
    """share_se: an SE choice runs the convs and BNs of its non-SE twin; siblings E2K3 and
    E2K3SE under one prefix use the same BN modules with statistics of their own."""
    torch.manual_seed(0)
    net = SuperNet("tiny", share_se=True)
    randomize_bn(net, torch.Generator().manual_seed(1))
    genomes = [(0, 0, 0), (0, 0, 2), (0, 2, 0), (0, 2, 2), (1, 3, 1)]
    calib, val = Batches(2, 6, seed=5), Batches(2, 7, seed=6)
    want = evaluate_paths(net, genomes, calib, val, 2, None)
    ev = PopulationEvaluator(net, calib, val, 2, None, group_siblings=grouped)
    got = ev.evaluate(genomes)
    if grouped:
        _same_counts(got, want)
    else:
        assert got == want
