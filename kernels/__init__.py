"""Triton kernels of fastscarlet, installed as ``fastscarlet.kernels``.

Every kernel module carries its ``@triton.jit`` kernels, their host launchers and a plain-PyTorch
``*_ref`` reference that is also the fallback. Importing this package never fails: Triton is probed
lazily (see :mod:`fastscarlet.env`).
"""
