"""A subnet as an ONNX model (opset >= 17, dynamic batch), checked against PyTorch with
onnxruntime.

Two exporters ship with torch: the TorchScript-based one (``dynamo=False``; deprecated since
torch 2.9 but present in the pinned 2.11 and 2.14) and the ``torch.export``-based one
(``dynamo=True``, needs onnxscript). Both give the same graph for these networks; the TorchScript
one takes 2.5 s for SCARLET-A where the dynamo one takes 10 s (this CPU), so ``exporter="auto"``
uses it where it exists and falls back to dynamo where it is gone or fails.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastscarlet.export.optional import require

DEFAULT_OPSET = 18
EXPORTERS = ("auto", "torchscript", "dynamo")


def _export_torchscript(model: nn.Module, x: torch.Tensor, path: Path, opset: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice of the TorchScript exporter
        torch.onnx.export(
            model, (x,), str(path), dynamo=False, opset_version=opset,
            input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )  # fmt: skip


def _export_dynamo(model: nn.Module, x: torch.Tensor, path: Path, opset: int) -> None:
    require("onnxscript", "the dynamo ONNX exporter")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (x,), None, dynamo=True, opset_version=opset, verbose=False,
            input_names=["input"], output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )  # fmt: skip
    program.save(str(path), external_data=False)  # one self-contained file


def export_onnx(
    network: nn.Module,
    path: str | os.PathLike,
    resolution: int,
    *,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
    check: bool = True,
    atol: float = 1e-4,
) -> dict[str, Any]:
    """Export ``network`` (in eval mode, on the CPU, float32) to ``path``.

    The batch dimension is dynamic: the model is traced at batch 2 and, with ``check``, run by
    onnxruntime at batch 3 and compared with PyTorch (``max_abs_diff`` must stay below ``atol``,
    else ``RuntimeError``). Returns ``{"exporter", "opset", "max_abs_diff"}``.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown ONNX exporter {exporter!r}; expected one of {EXPORTERS}")
    if opset < 17:
        raise ValueError(f"opset must be 17 or newer, got {opset}")
    require("onnx", "ONNX export")
    if check:
        require("onnxruntime", "checking an ONNX export")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    in_ch = getattr(getattr(network, "space", None), "in_channels", 3)
    model = copy.deepcopy(network).float().cpu().eval()  # the caller's network is left as it is
    x = torch.randn(2, in_ch, resolution, resolution)
    used = exporter
    if exporter in ("auto", "torchscript"):
        try:
            _export_torchscript(model, x, path, opset)
            used = "torchscript"
        except Exception:
            if exporter == "torchscript":
                raise
            used = "dynamo"
    if used == "dynamo":
        _export_dynamo(model, x, path, opset)
    report: dict[str, Any] = {"exporter": used, "opset": opset, "max_abs_diff": None}
    if check:
        gen = torch.Generator().manual_seed(0)
        diff = check_onnx(path, model, torch.randn(3, in_ch, resolution, resolution, generator=gen))
        report["max_abs_diff"] = diff
        if not diff < atol:
            raise RuntimeError(
                f"{path}: onnxruntime differs from PyTorch by {diff:.3g} (max abs), above {atol:g}"
            )
    return report


def check_onnx(path: str | os.PathLike, network: nn.Module, x: torch.Tensor) -> float:
    """Max abs difference between onnxruntime (CPU) on ``path`` and ``network(x)`` (eval)."""
    onnx = require("onnx", "checking an ONNX export")
    ort = require("onnxruntime", "checking an ONNX export")
    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = network.eval()(x).numpy()
    if got.shape != want.shape:
        raise RuntimeError(f"{path}: onnxruntime output shape {got.shape}, PyTorch {want.shape}")
    return float(np.abs(got - want).max())


def opset_of(path: str | os.PathLike) -> int:
    """The default-domain opset an ONNX file imports."""
    onnx = require("onnx", "reading an ONNX file")
    model = onnx.load(str(path), load_external_data=False)
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
