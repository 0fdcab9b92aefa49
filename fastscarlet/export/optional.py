"""The optional packages export uses (onnx, onnxruntime, onnxscript, timm), imported at the point
of use: a missing one raises an error that names the package to install, never an import error of
``fastscarlet.export`` itself."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, purpose: str, package: str | None = None) -> ModuleType:
    """``import module``, or ``RuntimeError`` saying which package ``purpose`` needs."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = package or module.split(".")[0]
        raise RuntimeError(
            f"{purpose} needs the optional package {package!r}, which cannot be imported "
            f"({exc}); install it with `pip install {package}` (or all of them: "
            "`pip install fastscarlet[export]`)"
        ) from None
