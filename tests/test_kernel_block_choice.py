"""Which implementation runs an MBConv call (fastscarlet.kernels.block_choice, the MBConv rule of
fastscarlet.kernels.dispatch): the rule as a pure function, the CPU default, and the measured
dispatch run for real under the Triton interpreter with forced timings: candidates checked
against the module's PyTorch code, wrong ones rejected, the fastest taken only beyond the margin,
the BN state changed exactly as by one call, decisions cached on disk."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from fastscarlet.env import triton_interpret
from fastscarlet.kernels import block_choice, dispatch
from fastscarlet.kernels.autotune import REFERENCE, Autotuner
from fastscarlet.kernels.dispatch import ENV_VAR, block_candidates, kernel_mode
from fastscarlet.kernels.testing import randomize_bn, run_module
from fastscarlet.nn.blocks import MBConv, init_weights
from fastscarlet.space import SEConfig

needs_interpreter = pytest.mark.skipif(not triton_interpret(), reason="needs TRITON_INTERPRET=1")
CL = torch.channels_last


def test_rule_reference_until_verified_measure_all_force_one() -> None:
    """auto measures only verified candidates (none at this commit, so the reference runs without
    any timing); measure times all; triton/partial force one; the rule never picks a kernel for
    CPU tensors unless forced under the interpreter."""
    assert not dispatch.VERIFIED_CANDIDATES  # grows only with GPU figures in RESULTS
    names, timed, why = block_candidates("auto", True, True, False)
    assert names == () and not timed and "measure" in why
    assert block_candidates("auto", True, True, False, verified=frozenset({"partial"}))[:2] == (
        ("partial",), True,
    )  # fmt: skip
    both = frozenset({"triton", "partial"})
    assert block_candidates("auto", True, True, False, verified=both)[:2] == (
        ("triton", "partial"), True,
    )  # fmt: skip
    assert block_candidates("auto", False, True, True, verified=both)[0] == ()  # CPU tensors
    assert "no driver" in block_candidates("auto", True, False, False, "no driver", both)[2]
    assert block_candidates("measure", True, True, False)[:2] == (("triton", "partial"), True)
    assert block_candidates("measure", False, True, True)[:2] == (("triton", "partial"), True)
    assert block_candidates("measure", False, True, False)[0] == ()  # CPU without interpreter
    assert block_candidates("partial", True, True, False)[:2] == (("partial",), False)
    assert block_candidates("triton", False, True, True)[:2] == (("triton",), False)
    assert block_candidates("reference", True, True, False, verified=both)[0] == ()
    with pytest.raises(RuntimeError, match="partial with CPU tensors needs the Triton interpreter"):
        block_candidates("partial", False, True, False)
    with pytest.raises(RuntimeError, match="cannot run: gone"):
        block_candidates("triton", True, False, False, "gone")


def test_env_var_accepts_the_block_modes(monkeypatch) -> None:
    for mode in ("partial", "measure"):
        monkeypatch.setenv(ENV_VAR, mode)
        assert dispatch.current_mode() == mode
    monkeypatch.setenv(ENV_VAR, "fastest")
    with pytest.raises(ValueError, match="measure"):
        dispatch.current_mode()


def _block(se: bool = True, cin: int = 8, cout: int = 8, s: int = 1) -> MBConv:
    torch.manual_seed(0)
    blk = MBConv(cin, cout, 2 * cin, 3, s, "hswish", SEConfig() if se else None)
    init_weights(blk)
    randomize_bn(blk)
    return blk


def _x(cin: int = 8, H: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, cin, H, H, generator=g).contiguous(memory_format=CL)


def test_cpu_default_runs_the_reference_without_measuring(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("FASTSCARLET_CACHE_DIR", str(tmp_path))
    blk = _block()
    d = block_choice.choose(blk, blk.se, _x())
    assert d.choice == REFERENCE and "not on a CUDA device" in d.reason
    assert block_choice.implementation(blk, blk.se, _x()) is None
    assert list(tmp_path.iterdir()) == []  # nothing measured, nothing cached


def test_signature_names_what_the_choice_depends_on() -> None:
    blk = _block()
    x = _x()
    base = block_choice.signature(blk, blk.se, x)
    assert base.shapes[0] == (2, 8, 5, 5) and base.kernel == 3
    assert base.act == "hswish+se-relu-hsigmoid"
    assert base.shapes[-1] == tuple(blk.se.reduce.weight.shape[:2])  # the SE widths
    assert base.training and base.se and base.residual and base.device == "cpu"
    assert base.grad  # the block's parameters need gradients, and grad mode is on
    with torch.no_grad():
        assert not block_choice.signature(blk, blk.se, x).grad
    assert not block_choice.signature(blk, None, x).se
    other_gate = MBConv(8, 8, 16, 3, 1, "hswish", SEConfig(gate="sigmoid"))
    assert block_choice.signature(other_gate, other_gate.se, x).key() != base.key()
    blk.eval()
    assert not block_choice.signature(blk, blk.se, x).training
    assert block_choice.signature(blk, blk.se, _x(H=7)).key() != base.key()


class ForcedTimer:
    """Times given per candidate: the timed call still runs (so the harness is exercised), the
    number returned is the forced one. Counts calls per candidate."""

    def __init__(self, times: dict[str, float]) -> None:
        self.times = times
        self.calls: list[str] = []

    def __call__(self, fn) -> float:
        fn()
        name = fn.__defaults__[0]  # the candidate closures bind their name as a default
        self.calls.append(name)
        return self.times[name]


@pytest.fixture
def forced(monkeypatch, tmp_path):
    """``forced(times)``: measured dispatch on CPU tensors (interpreter) with forced timings and a
    cache in tmp_path; returns the tuner."""

    def make(times: dict[str, float]) -> Autotuner:
        tune = Autotuner("cpu", directory=tmp_path, version="test", timer=ForcedTimer(times))
        monkeypatch.setattr(block_choice, "tuner", lambda device: tune)
        return tune

    return make


def _rejecting(monkeypatch, name: str) -> None:
    """Make candidate ``name`` wrong: its output is the real one plus 1."""
    real = block_choice.runner

    def runner(n):
        fn = real(n)
        if n != name:
            return fn
        return lambda block, x, se: fn(block, x, se) + 1.0

    monkeypatch.setattr(block_choice, "runner", runner)


@pytest.mark.interpreter
@needs_interpreter
@pytest.mark.parametrize("training", [True, False])
def test_measured_dispatch_takes_the_fastest_correct_candidate(forced, training: bool) -> None:
    """Under ``measure`` the candidates really run and are checked against the reference; the
    forced timings make the whole-block kernels the fastest beyond the margin; the call's
    result, gradients and BN running statistics equal one reference call's; the decision is
    cached with every time, and the next call measures nothing."""
    tune = forced({REFERENCE: 1.0, "triton": 0.5, "partial": 0.8})
    blk = _block(se=True)
    blk.train(training)
    ref = copy.deepcopy(blk)
    x = _x()
    dy = torch.randn(2, 8, 5, 5).contiguous(memory_format=CL) if training else None

    with kernel_mode("measure"):
        got = run_module(blk, lambda m, t: m(t), x, dy)
    want = run_module(ref, lambda m, t: m.reference_forward(t, m.se), x, dy)
    torch.testing.assert_close(got.out, want.out, rtol=1e-4, atol=1e-4)
    for name, g in want.grads.items():
        torch.testing.assert_close(got.grads[name], g, rtol=1e-4, atol=1e-4, msg=name)
    for name, b in want.buffers.items():  # one call's update, not one per measurement run
        torch.testing.assert_close(got.buffers[name], b, rtol=1e-5, atol=1e-6, msg=name)

    decisions = [d for _, d in block_choice.recent()]
    assert decisions[-1].choice == "triton" and not decisions[-1].cached
    entry = json.loads(tune.path.read_text())["entries"]
    (key,) = entry
    assert entry[key]["choice"] == "triton"
    assert set(entry[key]["times"]) == {REFERENCE, "triton", "partial"}
    assert ("|train|grad|" in key) == training
    calls = list(tune.timer.calls)
    with kernel_mode("measure"):
        blk(x)  # cached: no timing
    assert tune.timer.calls == calls


@pytest.mark.interpreter
@needs_interpreter
def test_a_wrong_candidate_is_rejected_even_when_fastest(forced, monkeypatch) -> None:
    tune = forced({REFERENCE: 1.0, "triton": 0.1, "partial": 0.99})
    _rejecting(monkeypatch, "triton")
    blk = _block(se=False)
    x = _x()
    with kernel_mode("measure"):
        d = block_choice.choose(blk, None, x)
    assert "triton" in d.rejected and "output: max error" in d.rejected["triton"]
    assert "triton" not in tune.timer.calls
    # partial 0.99 of the reference is under the 3% margin: the reference runs
    assert d.choice == REFERENCE and "under the 3% margin" in d.reason


@pytest.mark.interpreter
@needs_interpreter
def test_forced_modes_run_their_candidate_without_measuring(forced, monkeypatch) -> None:
    tune = forced({})
    blk = _block()
    for mode in ("triton", "partial"):
        with kernel_mode(mode):
            d = block_choice.choose(blk, blk.se, _x())
        assert d.choice == mode and d.times == {}
    assert tune.timer.calls == [] and not tune.path.exists()


@pytest.mark.interpreter
@needs_interpreter
def test_nothing_is_measured_while_a_cuda_graph_captures(forced, monkeypatch) -> None:
    """Capture cannot time: a cached decision is used, else the reference."""
    tune = forced({REFERENCE: 1.0, "triton": 0.5, "partial": 0.8})
    blk = _block()
    x = _x()
    monkeypatch.setattr(block_choice, "_capturing", lambda: True)
    with kernel_mode("measure"):
        d = block_choice.choose(blk, blk.se, x)
    assert d.choice == REFERENCE and "captures" in d.reason and tune.timer.calls == []
    monkeypatch.setattr(block_choice, "_capturing", lambda: False)
    with kernel_mode("measure"):
        block_choice.choose(blk, blk.se, x)  # measured now
    monkeypatch.setattr(block_choice, "_capturing", lambda: True)
    with kernel_mode("measure"):
        d = block_choice.choose(blk, blk.se, x)
    assert d.choice == "triton" and d.cached


@pytest.mark.interpreter
@needs_interpreter
def test_later_calls_of_a_signature_do_not_measure(forced, monkeypatch) -> None:
    """Only the first call of a signature measures: later ones take the cached decision before
    anything is allocated (the measurement's setup, run on every call, would cost launches)."""
    forced({REFERENCE: 1.0, "triton": 0.5, "partial": 0.8})
    blk = _block(se=False)
    blk.eval()
    with torch.no_grad(), kernel_mode("measure"):
        assert block_choice.choose(blk, None, _x()).choice == "triton"

        def no_measure(*args, **kwargs):
            raise AssertionError("measured again")

        monkeypatch.setattr(block_choice, "measure", no_measure)
        d = block_choice.choose(blk, None, _x())
        assert d.choice == "triton" and d.cached


@pytest.mark.interpreter
@needs_interpreter
def test_compiled_blocks_run_the_reference_without_measuring(forced) -> None:
    """torch.compile traces a measured mode in one graph (no file IO, no graph break) and runs
    the module's PyTorch code."""
    tune = forced({REFERENCE: 1.0, "triton": 0.5, "partial": 0.8})
    blk = _block().eval()
    x = _x()
    torch._dynamo.reset()
    with torch.no_grad(), kernel_mode("measure"):
        got = torch.compile(blk, backend="eager", fullgraph=True)(x)
        want = blk.reference_forward(x, blk.se)
    torch.testing.assert_close(got, want)
    assert tune.timer.calls == [] and not tune.path.exists()
