"""Dispatch by measurement: per block signature, time each candidate once and keep the fastest
only when it beats the PyTorch reference by a margin; decisions cached on disk.

Issue 19 item 1. :func:`fastscarlet.kernels.dispatch.decide` stays the rule of today (``auto``
runs the reference until :data:`~fastscarlet.kernels.dispatch.KERNELS_VERIFIED`); this module is
the measured replacement, used only where a caller asks for it (:func:`tuner_from_env`:
``FASTSCARLET_AUTOTUNE=1``), so importing it changes nothing.

* A :class:`BlockSignature` names what the decision depends on: input shapes, dtype, stride,
  kernel size, SE, residual, training or inference, and the device's name.
* :meth:`Autotuner.decide` runs every candidate through a timer (default :func:`time_once`: a few
  warm-up calls, then one timed call, as ``cudnn.benchmark`` does) and takes a kernel only when
  ``t_reference >= (1 + margin) * t_kernel`` (:func:`choose`; margin 3%: repeated timings of the
  same launch on a GPU typically differ by a percent or two, so a smaller "win" is noise). The
  timer is injectable, which is how the decision logic is tested on a CPU.
* Decisions are stored in ``$FASTSCARLET_CACHE_DIR`` (default ``~/.cache/fastscarlet``), one JSON
  file per device name and library version, so a new GPU or a new release measures again. Files
  are written atomically (temporary file + ``os.replace``); an unreadable file gives a warning
  and is rebuilt from new measurements.

Imports neither Triton nor the kernels (the candidates arrive as callables).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

REFERENCE = "reference"
MARGIN = 0.03
CACHE_ENV = "FASTSCARLET_CACHE_DIR"
ENABLE_ENV = "FASTSCARLET_AUTOTUNE"
_FORMAT = 1  # bumped when the file layout changes; other formats are rebuilt

Timer = Callable[[Callable[[], object]], float]


def library_version() -> str:
    """The installed fastscarlet's version (package metadata: importing the ``fastscarlet``
    package itself would import the stages above ``kernels``)."""
    try:
        return importlib.metadata.version("fastscarlet")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class BlockSignature:
    """What a dispatch decision depends on. ``shapes``: the input shapes (e.g. ``((256, 40, 28,
    28),)``); ``dtype``: ``"bfloat16"``; ``device``: the device's name (``"NVIDIA H200"``)."""

    shapes: tuple[tuple[int, ...], ...]
    dtype: str
    stride: int
    kernel: int
    se: bool
    residual: bool
    training: bool
    device: str

    def key(self) -> str:
        """A stable string (the JSON key): ``"256x40x28x28|bfloat16|s1|k7|se|res|train|..."``."""
        shapes = ",".join("x".join(map(str, s)) for s in self.shapes)
        return "|".join([
            shapes, self.dtype, f"s{self.stride}", f"k{self.kernel}",
            "se" if self.se else "nose", "res" if self.residual else "nores",
            "train" if self.training else "infer", self.device,
        ])  # fmt: skip


@dataclass(frozen=True)
class Decision:
    """The chosen candidate, every candidate's time in seconds (empty for a forced mode), why, and
    whether it came from the cache."""

    choice: str
    times: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    cached: bool = False


def choose(times: Mapping[str, float], margin: float = MARGIN) -> tuple[str, str]:
    """``(choice, why)``: the fastest non-reference candidate if ``t_ref >= (1 + margin) t``,
    else the reference. ``times`` must hold :data:`REFERENCE`."""
    if REFERENCE not in times:
        raise ValueError(f"times: the {REFERENCE!r} candidate is missing ({sorted(times)})")
    t_ref = times[REFERENCE]
    kernels = {n: t for n, t in times.items() if n != REFERENCE}
    if not kernels:
        return REFERENCE, "no kernel candidate"
    best = min(kernels, key=kernels.__getitem__)
    speedup = t_ref / kernels[best] if kernels[best] > 0 else float("inf")
    if speedup >= 1.0 + margin:
        return best, f"{best} {speedup:.3f}x the reference (margin {margin:.0%})"
    return (
        REFERENCE,
        f"best kernel {best} {speedup:.3f}x the reference, under the {margin:.0%} margin",
    )


def time_once(fn: Callable[[], object], warmup: int = 3) -> float:
    """Seconds of one call of ``fn`` after ``warmup`` calls (compilation, caches, clocks); the
    CUDA queue is drained before and after the timed call."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def device_name(device: torch.device | str) -> str:
    """``torch.cuda.get_device_name`` for CUDA devices, else the device type (``"cpu"``)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def cache_dir() -> Path:
    """``$FASTSCARLET_CACHE_DIR``, else ``~/.cache/fastscarlet``."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env) if env else Path.home() / ".cache" / "fastscarlet"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "unknown"


class Autotuner:
    """Measured choices for one device and library version, cached in
    ``<directory>/dispatch-<device>-<version>.json``."""

    def __init__(
        self,
        device: str,
        *,
        directory: Path | str | None = None,
        version: str | None = None,
        timer: Timer = time_once,
        margin: float = MARGIN,
    ) -> None:
        self.device = device
        self.version = version or library_version()
        folder = Path(directory) if directory is not None else cache_dir()
        self.path = folder / f"dispatch-{_slug(device)}-{_slug(self.version)}.json"
        self.timer = timer
        self.margin = margin
        self._entries: dict[str, dict] | None = None

    def _load(self) -> dict[str, dict]:
        """The cached entries; a missing file is empty, an unreadable one warns and is empty."""
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
                raise ValueError("not a dispatch cache (no 'entries' object)")
            if data.get("format") != _FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {_FORMAT}")
            return data["entries"]
        except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            warnings.warn(
                f"{self.path}: unreadable dispatch cache ({exc}); it will be rebuilt from new "
                "measurements",
                stacklevel=3,
            )
            return {}

    def _save(self) -> None:
        """Write the entries atomically: a temporary file in the same folder, then ``os.replace``
        (a reader sees the old file or the new one, never half of one)."""
        assert self._entries is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "format": _FORMAT,
            "device": self.device,
            "version": self.version,
            "entries": self._entries,
        }
        fd, tmp = tempfile.mkstemp(prefix=self.path.name, suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def decide(
        self, signature: BlockSignature, candidates: Mapping[str, Callable[[], object]]
    ) -> Decision:
        """The cached decision for ``signature`` if there is one naming a candidate, else time
        every candidate once (after the timer's warm-up), choose (:func:`choose`) and cache."""
        if REFERENCE not in candidates:
            raise ValueError(f"candidates: the {REFERENCE!r} candidate is missing")
        if signature.device != self.device:
            raise ValueError(
                f"signature: device {signature.device!r}, this tuner measures {self.device!r}"
            )
        if self._entries is None:
            self._entries = self._load()
        key = signature.key()
        hit = self._entries.get(key)
        if isinstance(hit, dict) and hit.get("choice") in candidates:
            return Decision(hit["choice"], dict(hit.get("times", {})), hit.get("reason", ""), True)
        times = {name: float(self.timer(fn)) for name, fn in candidates.items()}
        choice, reason = choose(times, self.margin)
        self._entries[key] = {"choice": choice, "times": times, "reason": reason}
        self._save()
        return Decision(choice, times, reason, False)


def tuner_from_env(device: torch.device | str) -> Autotuner | None:
    """An :class:`Autotuner` for ``device`` when ``FASTSCARLET_AUTOTUNE=1``, else None (today's
    rule, :func:`fastscarlet.kernels.dispatch.decide`, applies)."""
    if os.environ.get(ENABLE_ENV, "0").strip() in ("", "0"):
        return None
    return Autotuner(device_name(device))


def select(
    mode: str,
    signature: BlockSignature,
    candidates: Mapping[str, Callable[[], object]],
    tuner: Autotuner | None,
) -> Decision:
    """The candidate to run under ``mode``: ``reference`` and ``triton`` force one path (for
    ``triton`` the first non-reference candidate); ``auto`` measures with ``tuner`` and without
    one (not enabled) runs the reference."""
    if mode == "reference":
        return Decision(REFERENCE, reason="FASTSCARLET_KERNELS=reference")
    if mode == "triton":
        kernels = [n for n in candidates if n != REFERENCE]
        if not kernels:
            raise ValueError("FASTSCARLET_KERNELS=triton, but no kernel candidate was given")
        return Decision(kernels[0], reason="FASTSCARLET_KERNELS=triton")
    if mode != "auto":
        raise ValueError(f"mode: one of ('auto', 'reference', 'triton'), got {mode!r}")
    if tuner is None:
        return Decision(REFERENCE, reason=f"auto: measured dispatch not enabled ({ENABLE_ENV}=1)")
    return tuner.decide(signature, candidates)


__all__ = [
    "CACHE_ENV",
    "ENABLE_ENV",
    "MARGIN",
    "REFERENCE",
    "Autotuner",
    "BlockSignature",
    "Decision",
    "cache_dir",
    "choose",
    "device_name",
    "library_version",
    "select",
    "time_once",
    "tuner_from_env",
]
