"""Probe the optional pieces once: CUDA, Triton, the C++ extension, DALI.

Import never fails because of a missing optional piece. Each probe returns a :class:`Probe` that says
whether the piece is usable and, if not, why; code that needs the piece calls :func:`require`, which
raises an actionable error at the point of use.
"""

from __future__ import annotations

import functools
import importlib
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Probe:
    """Result of probing one optional component."""

    name: str
    available: bool
    version: str = ""
    reason: str = ""  # why it is not usable (empty when available)


@functools.cache
def probe_torch() -> Probe:
    import torch

    return Probe("torch", True, torch.__version__)


@functools.cache
def probe_cuda() -> Probe:
    import torch

    if not torch.cuda.is_available():
        why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA device"
        return Probe("cuda", False, str(torch.version.cuda or ""), why)
    name = torch.cuda.get_device_name(0)
    return Probe("cuda", True, f"{torch.version.cuda} ({name})")


def triton_interpret() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def probe_triton() -> Probe:
    try:
        triton = importlib.import_module("triton")
    except Exception as exc:  # ImportError, or a broken install
        return Probe("triton", False, "", f"cannot import triton: {exc}")
    version = getattr(triton, "__version__", "?")
    if triton_interpret():
        return Probe("triton", True, f"{version} (interpreter, TRITON_INTERPRET=1)")
    if not probe_cuda().available:
        return Probe("triton", False, version, "no CUDA device (set TRITON_INTERPRET=1 for CPU)")
    return Probe("triton", True, version)


@functools.cache
def probe_cpp() -> Probe:
    try:
        ext = importlib.import_module("fastscarlet._C")
    except Exception as exc:
        return Probe(
            "fastscarlet._C",
            False,
            "",
            f"C++ extension not built ({exc}); reinstall with `pip install -e .`",
        )
    return Probe("fastscarlet._C", True, getattr(ext, "__version__", "?"))


@functools.cache
def probe_dali() -> Probe:
    try:
        dali = importlib.import_module("nvidia.dali")
    except Exception as exc:
        return Probe(
            "nvidia.dali",
            False,
            "",
            f"cannot import nvidia.dali ({exc}); install it with "
            "`pip install nvidia-dali-cuda130` (CPU pipelines work without a GPU)",
        )
    return Probe("nvidia.dali", True, getattr(dali, "__version__", "?"))


def dali_plugin_path() -> Path | None:
    """The built DALI plugin (``fastscarlet/data/_dali_ops*.so``, from ``csrc/dali_ops/``), or None.

    Looked up on disk, so that this module imports nothing of the package above it."""
    found = sorted((Path(__file__).parent / "data").glob("_dali_ops*.so"))
    return found[0] if found else None


@functools.cache
def probe_dali_ops() -> Probe:
    """fastscarlet's DALI plugin (``csrc/dali_ops/``; used by CPU pipelines of the DALI backend)."""
    name = "dali plugin"
    if not probe_dali().available:
        return Probe(name, False, "", "needs nvidia.dali")
    path = dali_plugin_path()
    if path is None:
        return Probe(
            name,
            False,
            "",
            "not built (DALI installed after fastscarlet, or no CUDA headers at build time: set "
            "CUDA_HOME and reinstall with `pip install --no-build-isolation -e .`); the DALI "
            "backend uses DALI's own operators",
        )
    return Probe(name, True, path.name)


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA if present, else CPU), ``cpu``, ``cuda`` or ``cuda:N`` as a device."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {name!r} asked for, but no CUDA device is available (use --device cpu)"
        )
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; expected auto, cpu or cuda") from None


def all_probes() -> list[Probe]:
    return [
        probe_torch(),
        probe_cuda(),
        probe_triton(),
        probe_cpp(),
        probe_dali(),
        probe_dali_ops(),
    ]


_PROBES = {
    "cuda": probe_cuda,
    "triton": probe_triton,
    "cpp": probe_cpp,
    "dali": probe_dali,
    "dali_ops": probe_dali_ops,
}


def require(component: str) -> Probe:
    """Return the probe of ``component`` or raise ``RuntimeError`` saying why it is unusable."""
    try:
        probe = _PROBES[component]()
    except KeyError:
        raise ValueError(f"unknown component {component!r}; known: {sorted(_PROBES)}") from None
    if not probe.available:
        raise RuntimeError(f"{probe.name} is not usable: {probe.reason}")
    return probe


def report() -> str:
    """A human-readable table of versions and availability, for ``fastscarlet info``."""
    lines = [
        f"python      {platform.python_version()} ({sys.executable})",
        f"platform    {platform.platform()}",
    ]
    for p in all_probes():
        status = "yes" if p.available else "no"
        detail = p.version if p.available else (p.reason or "")
        if not p.available and p.version:
            detail = f"{p.version}; {detail}"
        lines.append(f"{p.name:<15} {status:<4} {detail}")
    return "\n".join(lines)
