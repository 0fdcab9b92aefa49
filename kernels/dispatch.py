"""The one decision between a Triton kernel and its PyTorch reference, and the switch over it.

Rule (:func:`decide`, which :func:`use_kernels` applies): a module runs its Triton kernel iff

* ``auto`` (default): the kernels are **verified** for this commit (:data:`KERNELS_VERIFIED`), every
  tensor is on a CUDA device and Triton is usable there. Until the kernels at the current commit
  have passed the ``gpu`` tests and won the benchmark on a GPU, ``auto`` runs the PyTorch reference
  everywhere: the last measurement (benchmarks/RESULTS.md, H100, 2026-11-23) had them slower than
  eager, and they have changed since without running on a GPU;
* ``reference``: never (the plain-PyTorch reference, bit-identical to the modules without
  kernels);
* ``triton``: always, wherever Triton can run: on CUDA (opt in), and on CPU under
  ``TRITON_INTERPRET=1`` (slow; for tests of the integration). Raises if Triton cannot run.

The mode comes from the innermost :func:`kernel_mode` context, else the environment variable
``FASTSCARLET_KERNELS`` (``auto``/``reference``/``triton``), read at each call. Under
``torch.compile`` the mode is read once while tracing and treated as a constant of the compiled
graph (change it, then recompile). A module whose configuration a kernel does not cover (see
``unsupported_reason`` of the op) runs the reference whatever the mode.

This module imports neither Triton nor the kernels, so ``fastscarlet.nn.blocks`` can import it
unconditionally.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from fastscarlet.env import probe_triton, triton_interpret

ENV_VAR = "FASTSCARLET_KERNELS"
MODES = ("auto", "reference", "triton")

# Whether ``auto`` may pick the kernels on CUDA. Set to True only by a change that records, in
# benchmarks/RESULTS.md, the kernels at that commit passing ``pytest -m gpu`` and beating the
# reference. Issue 19 replaces this switch with a dispatch measured per block signature: the
# chooser and its cache are in :mod:`.autotune`, opt-in (``FASTSCARLET_AUTOTUNE=1``) and not yet
# called by the blocks.
KERNELS_VERIFIED = False

# The one piece of state: the mode forced by the innermost `kernel_mode(...)` (None: not forced).
_FORCED: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fastscarlet_kernel_mode", default=None
)


def _check(mode: str, where: str) -> str:
    if mode not in MODES:
        raise ValueError(f"{where}: kernel mode must be one of {MODES}, got {mode!r}")
    return mode


@torch.compiler.assume_constant_result
def current_mode() -> str:
    """The mode in force: the innermost :func:`kernel_mode`, else ``$FASTSCARLET_KERNELS``."""
    forced = _FORCED.get()
    if forced is not None:
        return forced
    return _check(os.environ.get(ENV_VAR, "auto").strip().lower() or "auto", ENV_VAR)


@contextlib.contextmanager
def kernel_mode(mode: str) -> Iterator[None]:
    """Force a mode inside a ``with`` block, e.g. ``with kernel_mode("reference"): ...``."""
    token = _FORCED.set(_check(mode, "kernel_mode"))
    try:
        yield
    finally:
        _FORCED.reset(token)


@torch.compiler.assume_constant_result
def _triton_state() -> tuple[bool, bool, str]:
    probe = probe_triton()
    return probe.available, triton_interpret(), probe.reason


def decide(
    mode: str,
    on_cuda: bool,
    usable: bool,
    interpret: bool,
    reason: str = "",
    verified: bool = KERNELS_VERIFIED,
) -> tuple[bool, str]:
    """The rule of the module doc as a pure function: ``(run the kernels?, why)``.

    ``on_cuda``: every tensor is on a CUDA device; ``usable``/``interpret``/``reason``: Triton's
    probe; ``verified``: :data:`KERNELS_VERIFIED`. Raises ``RuntimeError`` where ``triton`` mode
    asks for kernels that cannot run.
    """
    if mode == "reference":
        return False, f"{ENV_VAR}=reference"
    if mode == "auto":
        if not on_cuda:
            return False, "auto: not on a CUDA device"
        if not usable:
            return False, f"auto: Triton is not usable ({reason})"
        if not verified:
            return False, (
                "auto: the kernels at this commit are not yet verified on a GPU (last measured "
                f"slower than eager); {ENV_VAR}=triton opts in"
            )
        return True, "auto: CUDA, Triton usable, kernels verified"
    if not usable:
        raise RuntimeError(f"{ENV_VAR}=triton, but Triton cannot run: {reason}")
    if on_cuda:
        return True, f"{ENV_VAR}=triton on CUDA"
    if interpret:
        return True, f"{ENV_VAR}=triton under the Triton interpreter"
    raise RuntimeError(
        f"{ENV_VAR}=triton with CPU tensors needs the Triton interpreter (TRITON_INTERPRET=1)"
    )


def use_kernels(*tensors: torch.Tensor) -> bool:
    """True iff the Triton kernels should run on ``tensors`` (see the module doc for the rule)."""
    mode = current_mode()
    if mode == "reference":
        return False
    usable, interpret, reason = _triton_state()
    return decide(mode, all(t.is_cuda for t in tensors), usable, interpret, reason)[0]


def explain(device: str = "cuda") -> str:
    """What the mode in force runs on ``device`` tensors, and why (for ``fastscarlet info``)."""
    usable, interpret, reason = _triton_state()
    try:
        run, why = decide(current_mode(), device.startswith("cuda"), usable, interpret, reason)
    except RuntimeError as exc:
        return f"error: {exc}"
    return f"{'Triton kernels' if run else 'PyTorch reference'} ({why})"


def run_blocks(
    x: torch.Tensor, steps: Sequence[tuple[nn.Module, nn.Module | None]]
) -> torch.Tensor:
    """Run a supernet path's blocks: ``steps`` = one ``(block, se)`` per layer (as
    ``ChoiceLayer.block_of`` gives them), each block with ``forward_with_se(x, se)``.

    Without kernels the blocks run one by one (the reference). On the Triton path a run of LET
    stabilizers (blocks with ``is_stabilizer``) is handed to the next MBConv, which folds it into its
    expand conv where that is exact (no residual) or runs it as one composed launch.
    """
    if not use_kernels(x):
        for block, se in steps:
            x = block.forward_with_se(x, se)
        return x
    from fastscarlet.kernels.let import let_mbconv_forward
    from fastscarlet.kernels.mbconv import mbconv_supported

    lets: list[nn.Module] = []
    for block, se in steps:
        if getattr(block, "is_stabilizer", False):
            lets.append(block)
            continue
        if lets and mbconv_supported(block, se, x, lets=lets):
            x = let_mbconv_forward(lets, block, x, se)
        else:
            for let in lets:
                x = let(x)
            x = block.forward_with_se(x, se)
        lets = []
    for let in lets:
        x = let(x)
    return x


__all__ = [
    "ENV_VAR",
    "KERNELS_VERIFIED",
    "MODES",
    "current_mode",
    "decide",
    "explain",
    "kernel_mode",
    "run_blocks",
    "use_kernels",
]
