"""The m paths of a strict-fairness step in one grouped pass (fastscarlet.nn.multipath,
fastscarlet.train.grouped_step) against the loop over paths: logits, losses, every gradient and
the BN running statistics; the dispatch that decides; the trainer's hook."""

from __future__ import annotations

import copy
from contextlib import nullcontext

import pytest
import tiny
import torch

from fastscarlet.env import triton_interpret
from fastscarlet.kernels.dispatch import kernel_mode
from fastscarlet.kernels.testing import randomize_bn
from fastscarlet.nn import SuperNet
from fastscarlet.nn.multipath import multipath_forward
from fastscarlet.train.grouped_step import grouped_backward, grouped_step_applies
from fastscarlet.train.samplers import StrictFairSampler

needs_interpreter = pytest.mark.skipif(not triton_interpret(), reason="needs TRITON_INTERPRET=1")


def _net(share_se: bool = False, seed: int = 0) -> SuperNet:
    torch.manual_seed(seed)
    net = SuperNet("tiny", share_se=share_se)
    randomize_bn(net, torch.Generator().manual_seed(seed + 1))
    return net.train()


def _batches(m: int, n: int = 3, size: int = 16, seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(n, 3, size, size, generator=g), torch.randint(0, 3, (n,), generator=g))
        for _ in range(m)
    ]


def _paths(seed: int = 1):
    """A strict-fairness draw: layer 0 has 4 choices for 5 paths, so one choice runs twice."""
    paths = StrictFairSampler(tiny.tiny_space(), seed=seed).sample()
    assert len({p[0] for p in paths}) == 4
    return paths


def _loop(net, batches, paths):
    ce = torch.nn.CrossEntropyLoss()
    losses = []
    for (x, y), g in zip(batches, paths):
        loss = ce(net(x, g), y)
        loss.backward()
        losses.append(loss.detach())
    return torch.stack(losses)


def _assert_same_state(a: SuperNet, b: SuperNet, tol: float = 1e-5) -> None:
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            scale = max(1.0, float(p.grad.abs().max()))
            assert float((p.grad - q.grad).abs().max()) <= tol * scale, name
    for (name, u), (_, v) in zip(a.named_buffers(), b.named_buffers()):
        assert float((u.double() - v.double()).abs().max()) <= tol, name


@pytest.mark.parametrize("share_se", [False, True])
def test_grouped_step_equals_the_loop_over_paths(share_se):
    """Losses, gradients and BN running statistics (a module used by two paths updated twice,
    in path order) as the loop over paths gives them; reference ops on the CPU."""
    net = _net(share_se)
    ref = copy.deepcopy(net)
    batches, paths = _batches(5), _paths()
    want = _loop(ref, batches, paths)
    got = grouped_backward(
        net, batches, paths, torch.nn.CrossEntropyLoss(), nullcontext(), force=True
    )
    torch.testing.assert_close(torch.stack(got), want, rtol=1e-5, atol=1e-6)
    _assert_same_state(ref, net)


def test_multipath_logits_equal_each_paths_forward():
    net = _net()
    batches, paths = _batches(5), _paths(seed=4)
    with torch.no_grad():
        logits = multipath_forward(copy.deepcopy(net), [x for x, _ in batches], paths)
        for (x, _), g, lg in zip(batches, paths, logits):
            torch.testing.assert_close(lg, copy.deepcopy(net)(x, g), rtol=1e-5, atol=1e-5)
    net.eval()  # eval mode: the modules' running statistics, none updated
    before = copy.deepcopy(net.state_dict())
    with torch.no_grad():
        logits = multipath_forward(net, [x for x, _ in batches], paths)
        for (x, _), g, lg in zip(batches, paths, logits):
            torch.testing.assert_close(lg, net(x, g), rtol=1e-5, atol=1e-5)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_grouped_step_runs_only_behind_the_dispatch():
    """On the CPU without the interpreter (and in reference mode anywhere) the trainer keeps the
    loop: grouped_backward declines; so it does for one path or batches of different shapes."""
    net, paths = _net(), _paths()
    batches = _batches(5)
    with kernel_mode("reference"):
        assert not grouped_step_applies(batches)
        assert (
            grouped_backward(net, batches, paths, torch.nn.CrossEntropyLoss(), nullcontext())
            is None
        )
    assert all(p.grad is None for p in net.parameters())
    assert not grouped_step_applies(batches[:1])
    uneven = [*batches[:4], (batches[4][0][:2], batches[4][1][:2])]
    assert not grouped_step_applies(uneven)


def test_the_trainer_step_uses_the_grouped_pass_where_it_applies(tmp_path, monkeypatch):
    """The trainer's hook: with the grouped pass forced to apply (its convs on the reference
    ops), one strict-fairness train_step gives the loop's loss, update and BN statistics."""
    from fastscarlet.config import config_from_dict
    from fastscarlet.train import grouped_step
    from fastscarlet.train.trainer import SupernetTrainer

    root = tiny.make_image_folder(tmp_path / "data", per_class=8, size=16)
    cfg = config_from_dict(tiny.tiny_config_dict(root, tmp_path / "a"))
    loop = SupernetTrainer(cfg)
    grouped = SupernetTrainer(config_from_dict(tiny.tiny_config_dict(root, tmp_path / "b")))
    grouped.model.load_state_dict(loop.model.state_dict())
    batches, paths = _batches(loop.paths_per_step, n=4), _paths()
    calls = []
    real = grouped_step.multipath_forward
    monkeypatch.setattr(grouped_step, "use_kernels", lambda *t: True)
    monkeypatch.setattr(grouped_step, "multipath_forward", lambda *a: calls.append(1) or real(*a))
    got = grouped.train_step(batches, paths)
    monkeypatch.setattr(grouped_step, "use_kernels", lambda *t: False)
    want = loop.train_step(batches, paths)
    assert calls == [1]
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-4)
    for (name, p), q in zip(loop.model.named_parameters(), grouped.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
    for (name, u), v in zip(loop.model.named_buffers(), grouped.model.buffers()):
        torch.testing.assert_close(v, u, rtol=1e-5, atol=1e-6, msg=name)


@needs_interpreter
@pytest.mark.interpreter
def test_grouped_step_on_the_triton_kernels_equals_the_loop():
    """FASTSCARLET_KERNELS=triton under the interpreter: the grouped pass runs its convs on the
    grouped kernels (every 1x1 and depthwise conv of the paths' blocks); equal to the loop on
    the reference ops."""
    from fastscarlet.kernels import grouped

    net = _net()
    ref = copy.deepcopy(net)
    batches, paths = _batches(5, n=2, size=8), _paths()
    with kernel_mode("reference"):
        want = _loop(ref, batches, paths)
    launched = []
    real = grouped.launch
    grouped.launch = lambda k, *a, **kw: launched.append(k.__name__) or real(k, *a, **kw)
    try:
        with kernel_mode("triton"):
            got = grouped_backward(net, batches, paths, torch.nn.CrossEntropyLoss(), nullcontext())
    finally:
        grouped.launch = real
    assert {"_grouped_gemm_kernel", "_grouped_dw_fwd_kernel", "_grouped_dw_dx_kernel"} <= set(
        launched
    )
    torch.testing.assert_close(torch.stack(got), want, rtol=1e-5, atol=1e-6)
    _assert_same_state(ref, net)
