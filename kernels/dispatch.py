"""The one decision between a Triton kernel and its PyTorch reference, and the switch over it.

Rule (:func:`use_kernels`): a module runs its Triton kernel iff the mode allows it and

* ``auto`` (default): every tensor is on a CUDA device and Triton is usable there;
* ``reference``: never (the plain-PyTorch reference, bit-identical to the modules without
  kernels);
* ``triton``: always, wherever Triton can run: on CUDA, and on CPU under ``TRITON_INTERPRET=1``
  (slow; for tests of the integration). Raises if Triton cannot run.

The mode comes from the innermost :func:`kernel_mode` context, else the environment variable
``FASTSCARLET_KERNELS`` (``auto``/``reference``/``triton``), read at each call. Under
``torch.compile`` the mode is read once while tracing and treated as a constant of the compiled
graph (change it, then recompile). A module whose configuration a kernel does not cover (see
``unsupported_reason`` of the op) runs the reference whatever the mode.

This module imports neither Triton nor the kernels, so ``fastscarlet.blocks`` can import it
unconditionally.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

import torch

from fastscarlet.env import probe_triton, triton_interpret

ENV_VAR = "FASTSCARLET_KERNELS"
MODES = ("auto", "reference", "triton")

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


def use_kernels(*tensors: torch.Tensor) -> bool:
    """True iff the Triton kernels should run on ``tensors`` (see the module doc for the rule)."""
    mode = current_mode()
    if mode == "reference":
        return False
    on_cuda = all(t.is_cuda for t in tensors)
    usable, interpret, reason = _triton_state()
    if mode == "auto":
        return on_cuda and usable
    if not usable:
        raise RuntimeError(f"{ENV_VAR}=triton, but Triton cannot run: {reason}")
    if on_cuda or interpret:
        return True
    raise RuntimeError(
        f"{ENV_VAR}=triton with CPU tensors needs the Triton interpreter (TRITON_INTERPRET=1)"
    )


__all__ = ["ENV_VAR", "MODES", "current_mode", "kernel_mode", "use_kernels"]
