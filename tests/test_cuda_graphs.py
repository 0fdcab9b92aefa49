"""CUDA graphs of the late stages (fastscarlet.nn.cuda_graphs): which blocks are late, the
segments, the auto decision, the routing and its fallbacks with stand-in graphs on the CPU, the CPU
path, the benchmark's smoke run; on a GPU, graphed inference and training against eager."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from fastscarlet.nn import create_model
from fastscarlet.nn.cuda_graphs import (
    GraphedBlocks,
    GraphedHead,
    SegmentGraph,
    block_input_sizes,
    decide,
    default_timer,
    graph_late_stages,
    install,
    plan_segments,
    restore,
)

ROOT = Path(__file__).resolve().parents[1]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def scarlet() -> nn.Module:
    torch.manual_seed(0)
    return create_model("scarlet_a", num_classes=10).eval()


def _recorded_input_sizes(net: nn.Module, x: torch.Tensor) -> tuple[list[int], int]:
    sizes: list[int] = []
    hooks = [b.register_forward_pre_hook(lambda m, a: sizes.append(max(a[0].shape[2:])))
             for b in [*net.blocks, net.head]]  # fmt: skip
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return sizes[:-1], sizes[-1]


# -- which blocks are late -----------------------------------------------------------------------


def test_scarlet_a_at_224_has_a_14x14_and_a_7x7_run_and_the_head(scarlet) -> None:
    plans = plan_segments(scarlet, 224)
    assert [p.name for p in plans] == ["blocks 14x14", "blocks 7x7", "head"]
    assert plans[0].indices == tuple(range(7, 15))  # the strided 14 -> 7 block is in the 14 run
    assert plans[1].indices == tuple(range(15, 19))
    assert [(p.size, p.channels) for p in plans] == [(14, 80), (7, 192), (7, 320)]
    assert plans[2].head and plans[2].indices == ()


@pytest.mark.parametrize(
    ("size", "max_size", "head", "expected"),
    [
        (224, 7, True, [tuple(range(15, 19)), ()]),
        (224, 14, False, [tuple(range(7, 15)), tuple(range(15, 19))]),
        (320, 14, True, [tuple(range(15, 19)), ()]),  # 20x20 is not late, 10x10 is
        (225, 14, True, [tuple(range(15, 19)), ()]),  # odd: 15x15 then 8x8
        (224, 3, True, []),
    ],
)
def test_late_blocks_follow_resolution_and_threshold(scarlet, size, max_size, head, expected):
    assert [p.indices for p in plan_segments(scarlet, size, max_size, head)] == expected


@pytest.mark.parametrize("hw", [(64, 64), (97, 97), (64, 81)])
def test_block_input_sizes_are_the_forward_shapes(scarlet, hw) -> None:
    """The analytic sizes (space strides, ceil) equal what a forward pass feeds each block."""
    x = torch.randn(1, 3, *hw)
    assert block_input_sizes(scarlet, hw) == _recorded_input_sizes(scarlet, x)


def test_small_inputs_split_into_one_segment_per_size(scarlet) -> None:
    plans = plan_segments(scarlet, 32, max_size=4)
    assert [(p.name, p.indices) for p in plans] == [
        ("blocks 4x4", (3, 4, 5, 6)),
        ("blocks 2x2", tuple(range(7, 15))),
        ("blocks 1x1", tuple(range(15, 19))),
        ("head", ()),
    ]
    with pytest.raises(ValueError, match="max_size"):
        plan_segments(scarlet, 32, max_size=0)


# -- the decision --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("graph_s", "keep"), [(0.5, True), (0.96, True), (0.98, False), (1.0, False), (1.5, False)]
)
def test_auto_keeps_a_graph_only_when_it_wins_by_the_margin(graph_s: float, keep: bool) -> None:
    """Eager 1.0 s: a graph at 0.96 s (1.042x) is kept, at 0.98 s (1.020x, under 3%) it is not."""
    chosen, why = decide("auto", 1.0, graph_s)
    assert chosen is keep, why
    assert "eager" in why and "reference" not in why


def test_on_and_off_need_no_times_and_bad_policies_are_named() -> None:
    assert decide("on", None, None) == (True, "policy on")
    assert decide("off", 1.0, 0.1) == (False, "policy off")
    with pytest.raises(ValueError, match="both"):
        decide("auto", 1.0, None)
    with pytest.raises(ValueError, match="policy"):
        decide("always", 1.0, 0.5)


def test_default_timer_is_seconds_per_call() -> None:
    assert 0.9e-3 <= default_timer(lambda: time.sleep(1e-3)) < 10e-3


# -- the CPU path --------------------------------------------------------------------------------


def test_cpu_returns_the_network_unchanged_and_says_why(scarlet) -> None:
    net = copy.deepcopy(scarlet)
    blocks, head, keys = net.blocks, net.head, list(net.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = net(x)
    report = graph_late_stages(net, x, training=False)
    assert report.reason == "not on CUDA" and not report.graphed
    assert net.blocks is blocks and net.head is head and list(net.state_dict()) == keys
    assert [s.reason for s in report.segments] == ["not on CUDA"] * 4
    assert report.segments[0].input_shape == [2, 40, 8, 8]
    with torch.no_grad():
        torch.testing.assert_close(net(x), before, rtol=0, atol=0)
    assert graph_late_stages(net, x, training=True, policy="off").reason == "policy off"
    json.dumps(report.to_dict())  # plain data
    with pytest.raises(ValueError, match="policy"):
        graph_late_stages(net, x, training=False, policy="always")
    with pytest.raises(ValueError, match="Network"):
        graph_late_stages(nn.Linear(2, 2), x, training=False)


# -- routing, with stand-in graphs ---------------------------------------------------------------


SIZE = 64  # late segments at 8x8, 4x4, 2x2 and the head; a quick forward on a CPU


class StandIn(SegmentGraph):
    """A "graph" that runs the modules into a static output buffer, as a replay does, and counts
    its replays: the routing and the fallbacks are tested without CUDA."""

    def __init__(self, modules, sample, training: bool = False) -> None:
        self.training = training
        super().__init__(modules, sample, None)
        self.static_output: torch.Tensor | None = None

    def replay(self, x):
        y = self.eager(x)
        if self.static_output is None:
            self.static_output = torch.empty_like(y)
        return self.static_output.copy_(y) if not self.training else y


def _stand_ins(net: nn.Module, x: torch.Tensor, training: bool = False):
    plans = plan_segments(net, x.shape[-1])
    acts = {}
    with torch.no_grad():
        h = net.first_block(net.stem(x))
        for i, b in enumerate(net.blocks):
            acts[i] = h
            h = b(h)
    runners = {p.indices[0]: StandIn([net.blocks[i] for i in p.indices], acts[p.indices[0]],
                                     training) for p in plans if not p.head}  # fmt: skip
    head = StandIn([net.head], h, training)
    return runners, head


def test_installed_segments_replay_keep_state_dict_keys_and_restore(scarlet) -> None:
    net = copy.deepcopy(scarlet)
    x, x2 = torch.randn(2, 3, SIZE, SIZE), torch.randn(2, 3, SIZE, SIZE)
    keys, blocks, head = list(net.state_dict()), net.blocks, net.head
    with torch.no_grad():
        ref, ref2 = net(x), net(x2)
    runners, head_runner = _stand_ins(net, x)
    install(net, runners, head_runner)
    assert isinstance(net.blocks, GraphedBlocks) and isinstance(net.head, GraphedHead)
    assert list(net.state_dict()) == keys
    assert [n for n, _ in net.named_parameters()] == [n for n, _ in scarlet.named_parameters()]
    assert net.blocks[3] is blocks[3] and len(net.blocks) == len(blocks)
    assert net.head.hidden is None and net.head.classifier is head.classifier
    with torch.no_grad():
        out = net(x)
        out2 = net(x2)  # the static buffers now hold x2's activations
    torch.testing.assert_close(out, ref, rtol=0, atol=0)  # the first output was not overwritten
    torch.testing.assert_close(out2, ref2, rtol=0, atol=0)
    with torch.no_grad():  # nor are the features that leave net.blocks
        feats, feats_ref = net.forward_features(x), scarlet.forward_features(x)
        net.forward_features(x2)
    torch.testing.assert_close(feats, feats_ref, rtol=0, atol=0)
    assert len(runners) == 3  # 8x8, 4x4, 2x2
    assert all(r.replays == 4 for r in runners.values()) and head_runner.replays == 2
    assert restore(net) and net.blocks is blocks and net.head is head
    assert not restore(net)


def test_an_unseen_shape_or_state_runs_eagerly(scarlet) -> None:
    net = copy.deepcopy(scarlet)
    x = torch.randn(2, 3, SIZE, SIZE)
    runners, head_runner = _stand_ins(net, x)
    install(net, runners, head_runner)
    every = [*runners.values(), head_runner]

    def check(inp, fallbacks: int) -> None:
        with torch.no_grad():
            torch.testing.assert_close(net(inp), restore_and_run(inp), rtol=0, atol=0)
        assert [r.fallbacks for r in every] == [fallbacks] * len(every)
        assert all(r.replays == 0 for r in every)

    def restore_and_run(inp):
        plain = copy.deepcopy(scarlet)
        plain.load_state_dict(net.state_dict())
        return plain.train(net.training)(inp)

    check(torch.randn(3, 3, SIZE, SIZE), 1)  # batch
    net.train()  # a mode other than the captured one
    check(x, 2)
    net.eval()
    with torch.enable_grad():  # inference graphs replay only without grad
        net(x)
    assert [r.fallbacks for r in every] == [3] * len(every)
    net.double().float()  # parameters converted after capture: same dtype, new memory
    with pytest.warns(UserWarning, match="moved"), torch.no_grad():
        torch.testing.assert_close(net(x), restore_and_run(x), rtol=0, atol=0)
    assert [r.fallbacks for r in every] == [4] * len(every)
    assert all(r.replays == 0 for r in every)


def test_training_graphs_need_grad_mode_and_an_input_that_requires_grad(scarlet) -> None:
    net = copy.deepcopy(scarlet).train()
    x = torch.randn(2, 3, SIZE, SIZE)
    seg = _stand_ins(net, x, training=True)[0][7]
    sample = torch.randn(seg.shape, requires_grad=True)
    assert seg.mismatch(sample) is None
    assert "does not require grad" in seg.mismatch(sample.detach())
    with torch.no_grad():
        assert "grad mode" in seg.mismatch(sample)
    next(seg.modules[0].parameters()).requires_grad_(False)  # frozen after capture
    assert "requires_grad changed" in seg.mismatch(sample)
    next(seg.modules[0].parameters()).requires_grad_(True)
    assert seg.mismatch(sample) is None
    net.eval()
    assert "train mode" in seg.mismatch(sample)


def test_the_report_restores_as_a_context_manager(scarlet) -> None:
    net = copy.deepcopy(scarlet)
    x = torch.randn(2, 3, SIZE, SIZE)
    blocks = net.blocks
    with graph_late_stages(net, x, training=False) as report:
        runners, head_runner = _stand_ins(net, x)
        install(net, runners, head_runner)  # as graph_late_stages does on CUDA
        with pytest.raises(ValueError, match="already graphed"):
            graph_late_stages(net, x, training=False)
    assert report.net is net and net.blocks is blocks


# -- the benchmark -------------------------------------------------------------------------------


def test_bench_smoke_runs_on_cpu(tmp_path) -> None:
    out = tmp_path / "r.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_cuda_graphs.py"), "--smoke", "--json",
         str(out)], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "numbers mean nothing" in proc.stdout
    data = json.loads(out.read_text())
    assert data["smoke"] is True
    (row,) = data["inference"]
    assert set(row["ms"]) == {"eager", "late", "late-auto"}
    assert row["max_diff"]["late"] == 0.0
    assert row["reports"]["late"]["reason"] == "not on CUDA"
    losses = data["train"]["loss"]
    assert losses["late"] == losses["eager"] == losses["late-auto"]


# -- on a GPU ------------------------------------------------------------------------------------


def _cuda_scarlet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = create_model("scarlet_a").cuda().to(memory_format=torch.channels_last)
    with torch.no_grad():  # BN statistics that are not the identity, so eval mode is tested
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.8, 1.2)
    return net


def _images(batch: int, seed: int, size: int = 224) -> torch.Tensor:
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(batch, 3, size, size, device="cuda", generator=g)
    return x.contiguous(memory_format=torch.channels_last)


@pytest.mark.gpu
@needs_cuda
def test_graphed_inference_equals_eager_and_replays_new_inputs() -> None:
    net = _cuda_scarlet().eval()
    eager = copy.deepcopy(net)
    x, x2 = _images(8, 1), _images(8, 2)
    report = graph_late_stages(net, x, training=False, policy="on")
    assert report.graphed and all(s.chosen for s in report.segments), report.summary()
    assert isinstance(net.blocks, GraphedBlocks) and isinstance(net.head, GraphedHead)
    assert list(net.state_dict()) == list(eager.state_dict())
    with torch.no_grad():
        out, out2 = net(x), net(x2)
        ref, ref2 = eager(x), eager(x2)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out2, ref2, rtol=1e-4, atol=1e-4)
    assert (out - out2).abs().max() > 1e-3  # new data, new outputs
    runners = [*net.blocks.runners.values(), net.head.runner]
    assert all(r.replays == 2 and r.fallbacks == 0 for r in runners)
    with torch.no_grad():  # weights loaded in place: the graphs read them
        eager2 = _cuda_scarlet(seed=5).eval()
        net.load_state_dict(eager2.state_dict())
        torch.testing.assert_close(net(x), eager2(x), rtol=1e-4, atol=1e-4)
    report.restore()
    assert not isinstance(net.blocks, GraphedBlocks)


@pytest.mark.gpu
@needs_cuda
def test_an_unseen_shape_falls_back_to_eager_on_cuda() -> None:
    net = _cuda_scarlet().eval()
    eager = copy.deepcopy(net)
    graph_late_stages(net, _images(8, 1), training=False, policy="on")
    runners = [*net.blocks.runners.values(), net.head.runner]
    for x in (_images(3, 3), _images(8, 4, size=192), _images(8, 5).half()):
        with torch.no_grad():
            ref = eager.to(x.dtype)(x)
            torch.testing.assert_close(net.to(x.dtype)(x), ref, rtol=1e-3, atol=1e-3)
    assert all(r.replays == 0 for r in runners)


def _train_steps(net, xs, target, autocast, set_to_none=True, accumulate=1):
    """Losses, gradients after the first step's backward, BN statistics and weights after all."""
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    losses, first_grads = [], None
    for step, x in enumerate(xs):
        for _ in range(accumulate):
            amp = torch.autocast("cuda", autocast) if autocast else contextlib.nullcontext()
            with amp:
                loss = nn.functional.cross_entropy(net(x), target)
            loss.backward()
            losses.append(loss.detach())
        if step == 0:
            first_grads = {n: p.grad.clone() for n, p in net.named_parameters()}
        opt.step()
        opt.zero_grad(set_to_none=set_to_none)
    stats = {n: b.clone() for n, b in net.named_buffers()}
    weights = {n: p.detach().clone() for n, p in net.named_parameters()}
    return torch.stack(losses), first_grads, stats, weights


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(
    ("autocast", "set_to_none", "accumulate", "tol"),
    [
        (None, True, 1, 2e-4),
        (torch.bfloat16, True, 1, 3e-2),
        (None, False, 1, 2e-4),  # .grad zeroed in place: must not alias a static buffer
        (None, True, 2, 2e-4),  # two backwards per step: accumulation through the graphs
    ],
)
def test_graphed_training_steps_equal_eager(autocast, set_to_none, accumulate, tol) -> None:
    base = _cuda_scarlet().train()
    eager, graphed = copy.deepcopy(base), copy.deepcopy(base)
    xs = [_images(16, s) for s in (1, 2, 3)]
    target = torch.randint(0, 1000, (16,), device="cuda", generator=torch.Generator("cuda"))
    report = graph_late_stages(graphed, xs[0], training=True, policy="on", autocast=autocast)
    assert all(s.chosen for s in report.segments), report.summary()
    assert list(graphed.state_dict()) == list(eager.state_dict())
    # capture left the state as it found it
    for (n, a), b in zip(base.named_buffers(), graphed.buffers()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=n)
    got = _train_steps(graphed, xs, target, autocast, set_to_none, accumulate)
    ref = _train_steps(eager, xs, target, autocast, set_to_none, accumulate)
    torch.testing.assert_close(got[0], ref[0], rtol=tol, atol=tol)
    for name in ("gradients", "BN statistics", "weights"):
        i = ("gradients", "BN statistics", "weights").index(name) + 1
        for key in ref[i]:
            if ref[i][key].is_floating_point():
                torch.testing.assert_close(got[i][key], ref[i][key], rtol=tol, atol=tol,
                                           msg=f"{name}: {key}")  # fmt: skip
            else:
                assert torch.equal(got[i][key], ref[i][key]), f"{name}: {key}"
    runners = [*graphed.blocks.runners.values(), graphed.head.runner]
    assert all(r.replays == 3 * accumulate and r.fallbacks == 0 for r in runners)


@pytest.mark.gpu
@needs_cuda
def test_auto_times_every_segment_and_keeps_only_winners() -> None:
    net = _cuda_scarlet().eval()
    report = graph_late_stages(net, _images(1, 1), training=False, policy="auto")
    for s in report.segments:
        assert s.eager_s is not None and s.graph_s is not None
        assert s.chosen == (s.eager_s >= 1.03 * s.graph_s), report.summary()
    kept = {tuple(s.layers) for s in report.segments if s.chosen and s.layers}
    installed = (
        {tuple(i + 1 for i in range(k, net.blocks._stops[k])) for k in net.blocks.runners}
        if isinstance(net.blocks, GraphedBlocks) else set()
    )  # fmt: skip
    assert installed == kept
