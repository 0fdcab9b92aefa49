"""Timing on a shared machine: interleaved sweeps, medians, the minimum over passes, and a clock
that other processes cannot inflate.

:func:`measure_ms` times a list of callables the way latency tables need (see
:mod:`fastscarlet.cost.latency`): each callable is warmed up, then timed in ``rounds`` sweeps over
all of them in a fresh random order (interleaved, so a burst of load from another process spreads
over many entries instead of biasing one), each sample preceded by one untimed call and averaging
enough calls to last ``min_sample_ms``; an entry's time is the median over its sweeps, and the
minimum of those medians over ``passes`` repeats (noise only ever adds time).

The untimed call makes every sample a steady-state one, as when a network runs again and again:
without it, a callable met its weights evicted by the hundreds of others of the sweep, and MoGA
subnets at 32x32 timed among a table's 170 blocks took 11-13 ms where the same kind of subnets
timed among 3 others took 8-10 ms.
"""

from __future__ import annotations

import contextlib
import math
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

# ``cpu``: the CPU time of the calling thread. With one thread every op runs in the calling thread,
# so this is the latency minus the time other processes had the core. On this shared 2-core
# machine under a load of 3 to 5, a SCARLET table at 224 timed by the wall clock predicted 50
# random subnets with a mean relative error of 25% (max 68%), one timed by CPU time with 11% (max
# 32%). ``wall``: elapsed time (several threads, CUDA).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.thread_time}


def default_clock(device: torch.device, threads: int | None) -> str:
    """``cpu`` for one CPU thread (robust to other processes), else ``wall``."""
    return "cpu" if torch.device(device).type == "cpu" and threads == 1 else "wall"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def timing_settings(threads: int | None) -> Iterator[None]:
    """``threads`` torch threads (None: as they are) and flushed denormals, restored after."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    flushed = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flushed:
            torch.set_flush_denormal(False)
        torch.set_num_threads(before)


def measure_ms(
    fns: Sequence[Callable[[], object]],
    device: torch.device | str = "cpu",
    *,
    rounds: int = 10,
    passes: int = 3,
    warmup: int = 3,
    min_sample_ms: float = 2.0,
    seed: int = 0,
    clock: str = "wall",
    progress: bool = False,
    desc: str = "timing",
) -> np.ndarray:
    """Milliseconds per call of each of ``fns``: min over ``passes`` of the median over ``rounds``
    interleaved sweeps (see the module doc), in inference mode, by ``clock`` (:data:`CLOCKS`).
    Set the threads around it."""
    if rounds < 1 or passes < 1 or warmup < 1:
        raise ValueError(
            f"rounds, passes and warmup must be >= 1, got {rounds}, {passes}, {warmup}"
        )
    if clock not in CLOCKS:
        raise ValueError(f"unknown clock {clock!r}; expected one of {list(CLOCKS)}")
    now = CLOCKS[clock]
    device = torch.device(device)
    rng = np.random.default_rng(seed)
    samples = np.empty((passes, rounds, len(fns)))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=passes * rounds, desc=desc, unit="sweep", leave=False, file=sys.stderr)
    try:
        with torch.inference_mode():
            inner = [_calls_per_sample(fn, device, now, warmup, min_sample_ms) for fn in fns]
            for p in range(passes):
                for r in range(rounds):
                    for i in rng.permutation(len(fns)):
                        fns[i]()  # untimed: this callable's weights and input back in cache
                        samples[p, r, i] = _time_calls(fns[i], device, now, inner[i])
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return np.median(samples, axis=1).min(axis=0)


def _time_calls(
    fn: Callable[[], object], device: torch.device, now: Callable[[], float], k: int
) -> float:
    """Milliseconds per call, averaged over ``k`` back-to-back calls."""
    sync(device)
    t0 = now()
    for _ in range(k):
        fn()
    sync(device)
    return (now() - t0) * 1e3 / k


def _calls_per_sample(
    fn: Callable[[], object],
    device: torch.device,
    now: Callable[[], float],
    warmup: int,
    min_sample_ms: float,
) -> int:
    """Warm ``fn`` up; the number of calls that makes one sample last ``min_sample_ms`` (a single
    call of a tiny block, a few microseconds, is below the timer's resolution)."""
    for _ in range(warmup - 1):
        fn()
    once_ms = _time_calls(fn, device, now, 1)
    return max(1, math.ceil(min_sample_ms / max(once_ms, 1e-4)))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
