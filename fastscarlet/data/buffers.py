"""Recycled CPU output buffers for the loaders.

A batch at 224 in float32 is 38 MB; glibc serves allocations that large with a fresh ``mmap`` each
time, and filling one costs ~15 ms of page faults on this CI machine's CPU (22 ms for an allocate-
and-copy, 7.6 ms for a copy into a reused buffer; benchmarks/RESULTS.md). DALI's own PyTorch
iterator avoids it by reusing its output tensors, which overwrites batches the consumer may still
hold. :class:`BufferPool` reuses a buffer only once nothing refers to it any more: neither the
tensor object nor any view of its storage. The torch backend uses it for its CPU outputs; the DALI
backend needs none, it hands over the memory of DALI's outputs without a copy (DALI's dynamic
executor keeps an output alive while a tensor refers to it, and recycles it through its own pool).
"""

from __future__ import annotations

import sys

import torch

# A strict-fairness step holds one batch per path (13 in the SCARLET space) while it runs.
MAX_BUFFERS = 16
MAX_BYTES = 1 << 30


def unreferenced(buf: torch.Tensor) -> bool:
    """True iff nothing but the pool's list holds ``buf``: no other reference to the Python object
    and no other tensor (view, slice, permutation) on its storage."""
    # getrefcount: the pool's list + the caller's loop variable + this parameter + getrefcount's
    # own argument = 4 (fewer where the interpreter borrows references).
    if sys.getrefcount(buf) > 4:
        return False
    use_count = getattr(torch._C, "_storage_Use_Count", None)
    if use_count is None:  # a torch without it: never reuse
        return False
    # The storage's users: ``buf`` itself + the temporary Python storage object = 2.
    return use_count(buf.untyped_storage()._cdata) <= 2


class BufferPool:
    """CPU tensors to write batches into: a pooled one no one references any more, else a new one
    (kept for reuse while the pool holds fewer than ``max_buffers`` and ``max_bytes``)."""

    def __init__(self, max_buffers: int = MAX_BUFFERS, max_bytes: int = MAX_BYTES) -> None:
        self.max_buffers = max_buffers
        self.max_bytes = max_bytes
        self._buffers: list[torch.Tensor] = []

    def get(
        self,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> torch.Tensor:
        for buf in self._buffers:
            if (
                buf.shape == shape
                and buf.dtype == dtype
                and buf.is_contiguous(memory_format=memory_format)
                and unreferenced(buf)
            ):
                return buf
        buf = torch.empty(shape, dtype=dtype, memory_format=memory_format)
        held = sum(b.nbytes for b in self._buffers)
        if len(self._buffers) < self.max_buffers and held + buf.nbytes <= self.max_bytes:
            self._buffers.append(buf)
        return buf

    def __len__(self) -> int:
        return len(self._buffers)
