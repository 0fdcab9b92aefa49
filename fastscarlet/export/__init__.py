"""Stage 6, deployment: a searched subnet with its inherited weights as a PyTorch file, an ONNX
model or a timm model (issue 15 builds it).

It reads supernets (:mod:`fastscarlet.nn`), costs and search results; only :mod:`fastscarlet.cli`
imports it.
"""
