"""The kernel-vs-reference decision (fastscarlet.kernels.dispatch) and the modules' CPU path."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

from fastscarlet.kernels import dispatch
from fastscarlet.kernels.dispatch import ENV_VAR, current_mode, kernel_mode, use_kernels
from fastscarlet.kernels.testing import randomize_bn
from fastscarlet.nn import LinearStabilizer, MBConv, init_weights
from fastscarlet.space import SEConfig


@pytest.fixture
def triton_state(monkeypatch):
    """Pretend Triton is usable (or not) and whether the interpreter is on."""

    def set_state(usable: bool, interpret: bool) -> None:
        monkeypatch.setattr(dispatch, "_triton_state", lambda: (usable, interpret, "probe says no"))

    return set_state


def test_default_mode_is_auto(monkeypatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert current_mode() == "auto"


@pytest.mark.parametrize("mode", ["auto", "reference", "triton"])
def test_env_var_sets_the_mode(monkeypatch, mode: str) -> None:
    monkeypatch.setenv(ENV_VAR, mode.upper())
    assert current_mode() == mode


def test_invalid_env_var_names_the_choices(monkeypatch) -> None:
    monkeypatch.setenv(ENV_VAR, "fast")
    with pytest.raises(ValueError, match="auto.*reference.*triton"):
        current_mode()


def test_context_manager_overrides_env_and_nests(monkeypatch) -> None:
    monkeypatch.setenv(ENV_VAR, "triton")
    with kernel_mode("reference"):
        assert current_mode() == "reference"
        with kernel_mode("auto"):
            assert current_mode() == "auto"
        assert current_mode() == "reference"
    assert current_mode() == "triton"
    with pytest.raises(ValueError), kernel_mode("sometimes"):
        pass


def test_auto_uses_kernels_only_for_cuda_tensors(monkeypatch, triton_state) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    cpu = torch.zeros(1)
    cuda_like = torch.empty(1, device="meta")  # not CUDA either
    triton_state(usable=True, interpret=True)
    assert not use_kernels(cpu)
    assert not use_kernels(cuda_like)
    with kernel_mode("reference"):
        assert not use_kernels(cpu)


def test_triton_mode_needs_interpreter_on_cpu(triton_state) -> None:
    cpu = torch.zeros(1)
    with kernel_mode("triton"):
        triton_state(usable=True, interpret=True)
        assert use_kernels(cpu)
        triton_state(usable=True, interpret=False)
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            use_kernels(cpu)
        triton_state(usable=False, interpret=False)
        with pytest.raises(RuntimeError, match="probe says no"):
            use_kernels(cpu)


def test_auto_runs_the_reference_on_cuda_until_the_kernels_are_verified() -> None:
    """The safe default: auto takes the kernels on CUDA only once they are verified at this
    commit; triton opts in. The rule is a pure function, checked here without a GPU."""
    decide = dispatch.decide
    assert dispatch.KERNELS_VERIFIED is False  # flipped only with GPU figures in RESULTS.md
    run, why = decide("auto", on_cuda=True, usable=True, interpret=False)
    assert not run and "not yet verified" in why and "triton opts in" in why
    assert decide("auto", True, True, False, verified=True)[0]
    assert not decide("auto", True, False, False, "no driver", verified=True)[0]
    assert "no driver" in decide("auto", True, False, False, "no driver", verified=True)[1]
    assert not decide("auto", False, True, True, verified=True)[0]  # CPU tensors
    assert decide("triton", True, True, False)[0]  # opt in on CUDA, verified or not
    assert not decide("reference", True, True, False, verified=True)[0]
    with pytest.raises(RuntimeError, match="cannot run: gone"):
        decide("triton", True, False, False, "gone")


def test_info_says_what_cuda_runs_and_why(monkeypatch, triton_state) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    triton_state(usable=True, interpret=False)
    said = dispatch.explain("cuda")
    assert said.startswith("MBConv blocks: PyTorch reference (auto: no MBConv kernel candidate")
    assert "LET and grouped convs: PyTorch reference (auto: the kernels" in said
    monkeypatch.setenv(ENV_VAR, "triton")
    assert dispatch.explain("cuda") == (
        f"MBConv blocks: triton kernels ({ENV_VAR}=triton on CUDA); "
        f"LET and grouped convs: Triton kernels ({ENV_VAR}=triton on CUDA)"
    )
    monkeypatch.setenv(ENV_VAR, "measure")
    assert dispatch.explain("cuda").startswith(
        "MBConv blocks: the measured fastest of reference, triton, partial (measure: every"
    )


def test_decision_is_traceable_by_torch_compile(monkeypatch) -> None:
    """The modules call use_kernels inside forward: dynamo must trace it without a graph break."""
    monkeypatch.delenv(ENV_VAR, raising=False)

    def f(x: torch.Tensor) -> torch.Tensor:
        return x * 2 if use_kernels(x) else x + 1

    torch._dynamo.reset()
    with kernel_mode("reference"):
        out = torch.compile(f, backend="eager", fullgraph=True)(torch.ones(3))
    assert torch.equal(out, torch.full((3,), 2.0))


def _manual_mbconv(m: MBConv, x: torch.Tensor) -> torch.Tensor:
    y = m.act(m.bn1(m.expand(x)))
    y = m.act(m.bn2(m.dw(y)))
    y = m.se(y) if m.se is not None else y
    y = m.bn3(m.project(y))
    return x + y if m.residual else y


@pytest.mark.parametrize("training", [True, False])
def test_cpu_modules_are_bit_identical_to_the_reference(monkeypatch, training: bool) -> None:
    """On CPU (default mode) the modules never reach the kernels and compute exactly what their
    plain-PyTorch layers compute."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    torch.manual_seed(0)
    m = MBConv(16, 16, 6, 5, 1, "hswish", SEConfig())
    init_weights(m)
    randomize_bn(m)
    m.train(training)
    x = torch.randn(2, 16, 9, 9)
    twin = copy.deepcopy(m)
    assert torch.equal(m(x), _manual_mbconv(twin, x))
    let = LinearStabilizer(16, 24, 2)
    assert torch.equal(let(x), let.conv(x))


def test_blocks_import_without_triton() -> None:
    """fastscarlet.nn.blocks (and the supernet) import and run on CPU when Triton is missing."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from fastscarlet.nn.supernet import SuperNet\n"
        "from fastscarlet.nn.blocks import MBConv\n"
        "m = MBConv(8, 8, 3, 3, 1, 'relu')\n"
        "print(tuple(m(torch.randn(1, 8, 5, 5)).shape))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(1, 8, 5, 5)"


def _mbconv(cin: int = 8, cout: int = 8, stride: int = 1) -> MBConv:
    torch.manual_seed(0)
    blk = MBConv(cin, cout, 3, 3, stride, "hswish", None)
    init_weights(blk)
    return blk


def test_unsupported_blocks_are_named() -> None:
    """Conv settings the kernels do not compute go to the reference, with the reason named."""
    from fastscarlet.kernels.mbconv import unsupported_reason

    x = torch.randn(2, 8, 5, 5)
    assert unsupported_reason(_mbconv(), None, x) is None
    blk = _mbconv()
    blk.dw.padding_mode = "reflect"
    assert "zero padding" in unsupported_reason(blk, None, x)
    blk = _mbconv()
    blk.project = torch.nn.Conv2d(24, 8, 1, groups=2, bias=False)
    assert "project conv" in unsupported_reason(blk, None, x)
    blk = _mbconv()
    blk.expand.padding = (1, 1)
    assert "expand conv" in unsupported_reason(blk, None, x)
    assert "expects 8 input channels, gets 6" in unsupported_reason(_mbconv(), None, x[:, :6])


def test_lets_in_front_count_in_the_support_check() -> None:
    """With LETs first (the supernet's fused path) the block sees their channels and stride."""
    from fastscarlet.kernels.mbconv import unsupported_reason

    let = LinearStabilizer(6, 8, 2)
    x = torch.randn(1, 6, 2, 2)
    assert "channels" in unsupported_reason(_mbconv(), None, x)  # 6 channels, block expects 8
    # one image at 2x2 -> 1x1 after the LET's stride: training BN has one value per channel
    assert "more than one value" in unsupported_reason(_mbconv(), None, x, lets=[let])
    assert unsupported_reason(_mbconv(), None, torch.randn(1, 6, 3, 3), lets=[let]) is None
    assert "LET expects 6" in unsupported_reason(
        _mbconv(), None, torch.randn(1, 4, 3, 3), lets=[let]
    )
