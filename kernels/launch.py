"""Launching Triton kernels: one entry point, launch-size helpers, and a recorder for AOT checks.

Every host launcher in ``fastscarlet.kernels`` goes through :func:`launch`. Normally it is
``kernel[grid](*args, **constexprs, num_warps=..., num_stages=...)``; inside
:func:`record_launches` it records the launch instead, so ``tools/aot.py`` can
compile exactly the specialisations a block would run for an sm_90 target on a machine without a
GPU (``ptxas`` ships with Triton).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch._subclasses.fake_tensor import is_fake

from fastscarlet.env import triton_interpret


@dataclass
class Launch:
    """One recorded launch: the ``@triton.jit`` function, its grid, arguments and options."""

    kernel: Any
    grid: tuple[int, ...]
    args: tuple[Any, ...]
    constexprs: dict[str, Any]
    num_warps: int
    num_stages: int
    tag: str = field(default="")


# The one piece of state: the recorder of the innermost `record_launches()` (None outside).
_RECORDER: contextvars.ContextVar[list[Launch] | None] = contextvars.ContextVar(
    "fastscarlet_kernel_recorder", default=None
)


@contextlib.contextmanager
def record_launches() -> Iterator[list[Launch]]:
    """Record launches instead of running them (the tensors may then live on the meta device)."""
    launches: list[Launch] = []
    token = _RECORDER.set(launches)
    try:
        yield launches
    finally:
        _RECORDER.reset(token)


def launch(
    kernel: Any,
    grid: tuple[int, ...],
    *args: Any,
    num_warps: int = 4,
    num_stages: int = 2,
    **constexprs: Any,
) -> None:
    """Run ``kernel`` over ``grid`` (or record it, see :func:`record_launches`)."""
    grid = tuple(int(g) for g in grid)
    if any(g == 0 for g in grid):
        return  # empty problem (e.g. a batch of zero images): nothing to launch
    recorder = _RECORDER.get()
    if recorder is not None:
        recorder.append(Launch(kernel, grid, args, constexprs, num_warps, num_stages))
        return
    dev = next((a.device for a in args if isinstance(a, torch.Tensor)), None)
    if dev is not None and dev.type == "cuda" and dev.index != torch.cuda.current_device():
        with torch.cuda.device(dev):  # Triton launches on the current device, not the tensors'
            kernel[grid](*args, **constexprs, num_warps=num_warps, num_stages=num_stages)
        return
    kernel[grid](*args, **constexprs, num_warps=num_warps, num_stages=num_stages)


def call_op(op: Any, impl: Any, *args: Any) -> Any:
    """Run the custom op ``op`` whose implementation is ``impl``.

    While torch.compile/export traces (dynamo, or AOTAutograd with fake tensors), through the
    dispatcher, which it needs for the fake implementation. In eager mode, ``impl`` directly: the
    dispatcher's Python path (schema and aliasing checks) costs ~30 us a call here, the order of a
    whole 7x7 block's GPU time at batch 256.
    """
    first = args[0]
    if torch.compiler.is_compiling() or is_fake(first) or torch._is_functional_tensor(first):
        return op(*args)
    return impl(*args)


@functools.cache
def _device_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of ``device``; 132 (H100 SXM) off-GPU.

    Off-GPU the number only sizes the programs of recorded (AOT) launches; the interpreter's own
    launch sizes come from :func:`interpreting`.
    """
    if device.type == "cuda":
        return _device_sms(
            device.index if device.index is not None else torch.cuda.current_device()
        )
    return 132


def interpreting(device: torch.device) -> bool:
    """True when this launch runs in the Triton CPU interpreter (small tiles, to cover the loops)."""
    return device.type == "cpu" and triton_interpret()


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def clamp_pow2(n: int, lo: int, hi: int) -> int:
    """``next_pow2(n)`` clamped to ``[lo, hi]`` (``tl.dot`` needs every dimension >= 16)."""
    return max(lo, min(hi, next_pow2(n)))


def cdiv(a: int, b: int) -> int:
    return -(-int(a) // int(b))


def split_for(work_items: int, other_programs: int, target_programs: int) -> int:
    """Programs to split ``work_items`` over so that the grid has about ``target_programs``.

    Used where programs accumulate in registers and finish with atomics (BN statistics, weight
    gradients): fewer programs means fewer same-address atomics, more means more parallelism.
    """
    want = max(1, target_programs // max(1, other_programs))
    return max(1, min(int(work_items), want))


__all__ = [
    "Launch",
    "call_op",
    "cdiv",
    "clamp_pow2",
    "interpreting",
    "launch",
    "next_pow2",
    "num_sms",
    "record_launches",
    "split_for",
]
