"""The one decision between the Triton kernels and their PyTorch reference, and the switch over it.

Two rules, both pure functions tested on a CPU:

**MBConv blocks** (:func:`block_candidates`; :mod:`.block_choice` applies it per call): the
candidates are the whole-block Triton kernels (``triton``), the partial fusion around PyTorch's
depthwise conv (``partial``) and the reference.

* ``auto`` (default): on CUDA, the candidates **verified** on a GPU at this commit
  (:data:`VERIFIED_CANDIDATES`) are checked against the reference and timed once per block
  signature, and one runs only where it beats the reference by the margin
  (:mod:`.autotune`, cached on disk). Until a candidate has passed the ``gpu`` tests at this
  commit (recorded in benchmarks/RESULTS.md), it is not measured, so today ``auto`` runs the
  reference everywhere: the last GPU measurement (H100, 2026-11-23) had the whole-block kernels
  slower than eager, and they have changed since without running on a GPU;
* ``measure``: as ``auto``, but every candidate is checked and timed (what a GPU session runs to
  take the dispatch table, and what a user runs to let the measurement decide);
* ``reference``: never a kernel (bit-identical to the modules without kernels);
* ``triton`` / ``partial``: that candidate wherever it covers the call and Triton can run: on
  CUDA, and on CPU under ``TRITON_INTERPRET=1`` (slow; for tests). Raises if Triton cannot run.

**The other kernel ops** (LET stabilizer GEMM, grouped multi-path convs; :func:`decide`, applied
by :func:`use_kernels`): ``triton`` runs them as above, ``reference`` never; every other mode runs
them only on CUDA once they are verified (:data:`KERNELS_VERIFIED`).

The mode comes from the innermost :func:`kernel_mode` context, else the environment variable
``FASTSCARLET_KERNELS``, read at each call. Under ``torch.compile`` the mode is read once while
tracing and treated as a constant of the compiled graph (change it, then recompile); measuring
does not run while tracing (see :mod:`.block_choice`). A module whose configuration a kernel does
not cover (``unsupported_reason`` of the op) runs the reference whatever the mode.

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
MODES = ("auto", "reference", "triton", "partial", "measure")
BLOCK_CANDIDATES = ("triton", "partial")  # the MBConv kernel candidates, in forcing order

# Whether ``auto`` may run the non-block kernel ops (LET, grouped convs) on CUDA. Set to True only
# by a change that records, in benchmarks/RESULTS.md, the kernels at that commit passing
# ``pytest -m gpu`` and beating the reference.
KERNELS_VERIFIED = False

# The MBConv candidates ``auto`` may measure on CUDA: a name is added only by a change that
# records, in benchmarks/RESULTS.md, that candidate at that commit passing ``pytest -m gpu`` (and
# the dispatch table ``benchmarks/bench_mbconv.py`` took with it). Empty: no GPU has run them at
# this commit.
VERIFIED_CANDIDATES: frozenset[str] = frozenset()

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
    if mode != "triton":  # auto, and the block-only modes partial/measure
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
    return True, _runnable(mode, on_cuda, usable, interpret, reason)


def _runnable(mode: str, on_cuda: bool, usable: bool, interpret: bool, reason: str) -> str:
    """Why a forced mode's kernels can run here; raises where they cannot."""
    if not usable:
        raise RuntimeError(f"{ENV_VAR}={mode}, but Triton cannot run: {reason}")
    if on_cuda:
        return f"{ENV_VAR}={mode} on CUDA"
    if interpret:
        return f"{ENV_VAR}={mode} under the Triton interpreter"
    raise RuntimeError(
        f"{ENV_VAR}={mode} with CPU tensors needs the Triton interpreter (TRITON_INTERPRET=1)"
    )


def block_candidates(
    mode: str,
    on_cuda: bool,
    usable: bool,
    interpret: bool,
    reason: str = "",
    verified: frozenset[str] | None = None,
) -> tuple[tuple[str, ...], bool, str]:
    """The MBConv rule of the module doc as a pure function: ``(candidates, measure?, why)``.

    ``candidates``: the kernel candidates this call may run (before each one's support check);
    ``measure``: whether they are checked and timed against the reference (else the first one
    that covers the call runs, forced). ``verified``: default :data:`VERIFIED_CANDIDATES`, plus
    ``triton`` where :data:`KERNELS_VERIFIED`. Raises ``RuntimeError`` where a forced mode
    cannot run."""
    if verified is None:
        verified = VERIFIED_CANDIDATES | ({"triton"} if KERNELS_VERIFIED else set())
    if mode == "reference":
        return (), False, f"{ENV_VAR}=reference"
    if mode in BLOCK_CANDIDATES:
        return (mode,), False, _runnable(mode, on_cuda, usable, interpret, reason)
    if mode == "measure":
        if not on_cuda and not interpret:
            return (), False, "measure: not on a CUDA device"
        if not usable:
            return (), False, f"measure: Triton is not usable ({reason})"
        where = "CUDA" if on_cuda else "the Triton interpreter (timings mean nothing)"
        return BLOCK_CANDIDATES, True, f"measure: every candidate checked and timed on {where}"
    if not on_cuda:
        return (), False, "auto: not on a CUDA device"
    if not usable:
        return (), False, f"auto: Triton is not usable ({reason})"
    names = tuple(n for n in BLOCK_CANDIDATES if n in verified)
    if not names:
        why = (
            "auto: no MBConv kernel candidate is verified on a GPU at this commit (last measured "
            f"slower than eager); {ENV_VAR}=measure times them per block, =triton or =partial "
            "forces one"
        )
        return (), False, why
    return names, True, f"auto: verified candidates {', '.join(names)} checked and timed"


def use_kernels(*tensors: torch.Tensor) -> bool:
    """True iff the Triton kernels should run on ``tensors`` (see the module doc for the rule)."""
    mode = current_mode()
    if mode == "reference":
        return False
    usable, interpret, reason = _triton_state()
    return decide(mode, all(t.is_cuda for t in tensors), usable, interpret, reason)[0]


def explain(device: str = "cuda") -> str:
    """What the mode in force runs on ``device`` tensors, and why (for ``fastscarlet info``):
    the MBConv blocks, then the other kernel ops."""
    usable, interpret, reason = _triton_state()
    on_cuda = device.startswith("cuda")
    try:
        names, measure, why = block_candidates(current_mode(), on_cuda, usable, interpret, reason)
        run, why_ops = decide(current_mode(), on_cuda, usable, interpret, reason)
    except RuntimeError as exc:
        return f"error: {exc}"
    if not names:
        blocks = "PyTorch reference"
    elif measure:
        blocks = f"the measured fastest of reference, {', '.join(names)}"
    else:
        blocks = f"{names[0]} kernels"
    ops = "Triton kernels" if run else "PyTorch reference"
    return f"MBConv blocks: {blocks} ({why}); LET and grouped convs: {ops} ({why_ops})"


def run_blocks(
    x: torch.Tensor, steps: Sequence[tuple[nn.Module, nn.Module | None]]
) -> torch.Tensor:
    """Run a supernet path's blocks: ``steps`` = one ``(block, se)`` per layer (as
    ``ChoiceLayer.block_of`` gives them), each block with ``forward_with_se(x, se)``.

    The blocks run one by one, each MBConv choosing its implementation (:mod:`.block_choice`),
    except where the whole kernel family runs (:func:`use_kernels`: ``triton``, or ``auto`` once
    :data:`KERNELS_VERIFIED`): there a run of LET stabilizers (blocks with ``is_stabilizer``) is
    handed to the next MBConv, which folds it into its expand conv where that is exact (no
    residual) or runs it as one composed launch.
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
    "BLOCK_CANDIDATES",
    "ENV_VAR",
    "KERNELS_VERIFIED",
    "MODES",
    "VERIFIED_CANDIDATES",
    "block_candidates",
    "current_mode",
    "decide",
    "explain",
    "kernel_mode",
    "run_blocks",
    "use_kernels",
]
