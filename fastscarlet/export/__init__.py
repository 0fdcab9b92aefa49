"""Stage 6, deployment: a searched subnet with its inherited weights as a PyTorch file, an ONNX
model or a timm model.

- :mod:`~fastscarlet.export.torch_export`: :func:`save` / :func:`load` (the network rebuilt from
  its space and genome, without a supernet);
- :mod:`~fastscarlet.export.onnx_export`: :func:`export_onnx` (opset >= 17, dynamic batch, checked
  with onnxruntime);
- :mod:`~fastscarlet.export.timm_export`: :func:`timm_arch_def`, :func:`to_timm` (weights copied),
  :func:`save_timm` / :func:`load_timm`.

onnx, onnxruntime, onnxscript and timm are optional: a missing one raises an error naming the
package when it is needed (:mod:`~fastscarlet.export.optional`). Only :mod:`fastscarlet.cli`
imports this stage.
"""

from fastscarlet.export.onnx_export import DEFAULT_OPSET, check_onnx, export_onnx, opset_of
from fastscarlet.export.timm_export import (
    build_timm,
    load_timm,
    save_timm,
    timm_arch_def,
    timm_spec,
    to_timm,
)
from fastscarlet.export.torch_export import identity_mode, load, read, save

__all__ = [
    "DEFAULT_OPSET",
    "build_timm",
    "check_onnx",
    "export_onnx",
    "identity_mode",
    "load",
    "load_timm",
    "opset_of",
    "read",
    "save",
    "save_timm",
    "timm_arch_def",
    "timm_spec",
    "to_timm",
]
