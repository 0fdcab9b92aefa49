"""Dispatch by measurement: per block signature, time each candidate once and keep the fastest
only when it beats the PyTorch reference by a margin; decisions cached on disk.

Issue 19 item 1. Which candidates a call may measure, and when, is the rule of
:mod:`.dispatch` (:func:`~fastscarlet.kernels.dispatch.block_candidates`); the MBConv blocks
reach this module through :mod:`.block_choice`. This module is the mechanism: signatures, the
decision with its margin, the timer, the cache.

* A :class:`BlockSignature` names what the decision depends on: input and weight shapes, dtype,
  stride, kernel size, SE, residual, training or inference (and whether a backward follows),
  activation, and the device's name.
* :meth:`Autotuner.decide` first lets a ``verify`` callback reject candidates whose results do not
  match the reference (a kernel that is wrong on this device is never timed, let alone chosen),
  then runs every remaining candidate through a timer (default :func:`time_median`: a few
  warm-up calls, then the median of five timed calls) and takes a kernel only when
  ``t_reference >= (1 + margin) * t_kernel`` (:func:`choose`; margin 3%: repeated timings of the
  same launch on a GPU typically differ by a percent or two, so a smaller "win" is noise). The
  timer is injectable, which is how the decision logic is tested on a CPU.
* Decisions are stored in ``$FASTSCARLET_CACHE_DIR`` (default ``~/.cache/fastscarlet``), one JSON
  file per device name and build (:func:`build_id`: the library version, torch's and Triton's, and
  a hash of the kernels' sources), so a new GPU, release, compiler or kernel edit measures (and
  checks) again. Files are written atomically (temporary file + ``os.replace``) under a file lock,
  merged with what other processes wrote meanwhile; an unreadable file gives a warning and is
  rebuilt from new measurements.

Imports neither Triton nor the kernels (the candidates arrive as callables).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import os
import re
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

REFERENCE = "reference"
MARGIN = 0.03
CACHE_ENV = "FASTSCARLET_CACHE_DIR"
_FORMAT = 2  # bumped when the file layout changes; other formats are rebuilt

Timer = Callable[[Callable[[], object]], float]


def library_version() -> str:
    """The installed fastscarlet's version (package metadata: importing the ``fastscarlet``
    package itself would import the stages above ``kernels``)."""
    try:
        return importlib.metadata.version("fastscarlet")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@functools.lru_cache(maxsize=1)
def build_id() -> str:
    """What a cached decision is valid for besides the device: the library version, torch's and
    Triton's versions, and a hash of the kernels' sources (an editable install keeps its version
    across commits; a kernel edit must be checked and measured again)."""
    try:
        triton_version = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        triton_version = "none"
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return (
        f"{library_version()}+torch{torch.__version__}+triton{triton_version}"
        f"+src{digest.hexdigest()[:10]}"
    )


@dataclass(frozen=True)
class BlockSignature:
    """What a dispatch decision depends on. ``shapes``: the input and weight shapes (e.g.
    ``((256, 40, 28, 28), (120, 40), (40, 120))``); ``dtype``: ``"bfloat16"``; ``device``: the
    device's name (``"NVIDIA H200"``); ``training``: batch-statistics BN; ``grad``: a backward
    follows (timed with the forward); ``act``: the block's activation."""

    shapes: tuple[tuple[int, ...], ...]
    dtype: str
    stride: int
    kernel: int
    se: bool
    residual: bool
    training: bool
    device: str
    grad: bool = False
    act: str = ""

    def key(self) -> str:
        """A stable string (the JSON key):
        ``"256x40x28x28,...|bfloat16|s1|k7|se|res|train|grad|hswish|NVIDIA H200"``."""
        shapes = ",".join("x".join(map(str, s)) for s in self.shapes)
        return "|".join([
            shapes, self.dtype, f"s{self.stride}", f"k{self.kernel}",
            "se" if self.se else "nose", "res" if self.residual else "nores",
            "train" if self.training else "infer", "grad" if self.grad else "nograd",
            self.act or "-", self.device,
        ])  # fmt: skip


@dataclass(frozen=True)
class Decision:
    """The chosen candidate, every timed candidate's time in seconds (empty where nothing was
    timed), why, whether it came from the cache, and the candidates rejected before timing (name
    -> why: their results did not match the reference, or they raised)."""

    choice: str
    times: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    cached: bool = False
    rejected: dict[str, str] = field(default_factory=dict)


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


def time_median(fn: Callable[[], object], warmup: int = 3, reps: int = 5) -> float:
    """Median seconds of ``reps`` calls of ``fn`` after ``warmup`` calls (compilation, caches,
    clocks); the current CUDA device's queue is drained around each timed call (run it under
    ``torch.cuda.device(d)`` to time device ``d``)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (processes on one machine; no-op where unsupported)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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


def read_cache(path: Path) -> dict:
    """A dispatch cache file's data (``format``, ``device``, ``version``, ``entries``); raises
    ``OSError``/``ValueError`` naming what is wrong with it."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
        raise ValueError("not a dispatch cache (no 'entries' object)")
    if data.get("format") != _FORMAT:
        raise ValueError(f"format {data.get('format')!r}, expected {_FORMAT}")
    return data


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
        timer: Timer = time_median,
        margin: float = MARGIN,
    ) -> None:
        self.device = device
        self.version = version or build_id()
        folder = Path(directory) if directory is not None else cache_dir()
        self.path = folder / f"dispatch-{_slug(device)}-{_slug(self.version)}.json"
        self.timer = timer
        self.margin = margin
        self._entries: dict[str, dict] | None = None
        self._lock = threading.Lock()  # threads sharing a tuner (nn.DataParallel)

    def _load(self) -> dict[str, dict]:
        """The cached entries; a missing file is empty, an unreadable one warns and is empty."""
        if not self.path.exists():
            return {}
        try:
            return read_cache(self.path)["entries"]
        except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            warnings.warn(
                f"{self.path}: unreadable dispatch cache ({exc}); it will be rebuilt from new "
                "measurements",
                stacklevel=3,
            )
            return {}

    def _save(self) -> None:
        """Write the entries: under a lock file, merge what other processes wrote meanwhile
        (ours win), and write atomically (a temporary file in the same folder, then
        ``os.replace``: a reader sees the old file or the new one, never half of one)."""
        assert self._entries is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.path.with_name(self.path.name + ".lock")):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # already warned when first read
                self._entries = {**self._load(), **self._entries}
            self._write()

    def _write(self) -> None:
        assert self._entries is not None
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

    def cached(self, signature: BlockSignature) -> Decision | None:
        """The cached decision for ``signature``, or None (nothing is measured)."""
        if self._entries is None:
            self._entries = self._load()
        hit = self._entries.get(signature.key())
        if not isinstance(hit, dict) or not isinstance(hit.get("choice"), str):
            return None
        return Decision(
            hit["choice"], dict(hit.get("times", {})), hit.get("reason", ""), True,
            dict(hit.get("rejected", {})),
        )  # fmt: skip

    def decide(
        self,
        signature: BlockSignature,
        candidates: Mapping[str, Callable[[], object]],
        verify: Callable[[list[str]], Mapping[str, str]] | None = None,
    ) -> Decision:
        """The cached decision for ``signature`` if there is one naming a candidate, else: let
        ``verify(names)`` reject kernel candidates (it returns ``{name: why}`` for those whose
        results do not match the reference), time every remaining candidate with the timer,
        choose (:func:`choose`) and cache."""
        if REFERENCE not in candidates:
            raise ValueError(f"candidates: the {REFERENCE!r} candidate is missing")
        if signature.device != self.device:
            raise ValueError(
                f"signature: device {signature.device!r}, this tuner measures {self.device!r}"
            )
        with self._lock:
            return self._decide(signature, candidates, verify)

    def _decide(self, signature, candidates, verify) -> Decision:
        key = signature.key()
        hit = self.cached(signature)
        if hit is not None and hit.choice in candidates:
            return hit
        rejected: dict[str, str] = {}
        if verify is not None:
            kernels = [n for n in candidates if n != REFERENCE]
            rejected = {n: str(why) for n, why in verify(kernels).items() if n in kernels}
        times = {
            name: float(self.timer(fn)) for name, fn in candidates.items() if name not in rejected
        }
        choice, reason = choose(times, self.margin)
        if rejected:
            reason += "; rejected: " + ", ".join(f"{n} ({why})" for n, why in rejected.items())
        entry = {"choice": choice, "times": times, "reason": reason, "rejected": rejected}
        self._entries[key] = entry
        self._save()
        return Decision(choice, times, reason, False, rejected)


__all__ = [
    "CACHE_ENV",
    "MARGIN",
    "REFERENCE",
    "Autotuner",
    "BlockSignature",
    "Decision",
    "build_id",
    "cache_dir",
    "choose",
    "device_name",
    "library_version",
    "read_cache",
    "time_median",
]
