"""fastscarlet: fast one-shot NAS in the ScarletNAS family (SCARLET, FairNAS, MoGA).

The package is laid out by pipeline stage, and data flows one way::

    space -> nn -> cost -> train / evaluate -> search / export -> cli

(:mod:`fastscarlet.data`, :mod:`fastscarlet.nds`, :mod:`fastscarlet.kernels`, ``config`` and
``env`` sit beside the stages). The public API is re-exported here, lazily: importing the package
is cheap and never fails because of an optional component (CUDA, Triton, DALI, the C++
extension); see :mod:`fastscarlet.env`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS = {
    "get_space": "fastscarlet.space",
    "validate_genome": "fastscarlet.space",
    "random_genome": "fastscarlet.space",
    "to_readable": "fastscarlet.space",
    "SuperNet": "fastscarlet.nn",
    "CostModel": "fastscarlet.cost",
    "build_loader": "fastscarlet.data",
    "load_supernet": "fastscarlet.train.checkpoint",
}

__all__ = [
    "CostModel",
    "SuperNet",
    "__version__",
    "build_loader",
    "get_space",
    "load_supernet",
    "random_genome",
    "to_readable",
    "validate_genome",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fastscarlet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # pragma: no cover
    from fastscarlet.cost import CostModel
    from fastscarlet.data import build_loader
    from fastscarlet.nn import SuperNet
    from fastscarlet.space import get_space, random_genome, to_readable, validate_genome
    from fastscarlet.train.checkpoint import load_supernet
