"""Recycled CPU output buffers: reused only once nothing refers to them (fastscarlet.data.buffers),
and batches a consumer holds are never overwritten by either loader backend."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from data_fixtures import make_clean_tree

from fastscarlet.data import build_loader
from fastscarlet.data.buffers import BufferPool
from fastscarlet.env import probe_dali


def test_pool_reuses_only_unreferenced_buffers():
    pool = BufferPool(max_buffers=2)
    a = pool.get((2, 3), torch.float32)
    ptr = a.data_ptr()
    assert pool.get((2, 3), torch.float32).data_ptr() != ptr  # `a` is still held
    del a
    b = pool.get((2, 3), torch.float32)
    assert b.data_ptr() == ptr  # released: recycled
    view = b[:1]
    del b
    assert pool.get((2, 3), torch.float32).data_ptr() != ptr  # a view keeps its storage in use
    del view
    c = pool.get((2, 3), torch.float32)
    assert c.data_ptr() == ptr
    alias = c.detach()  # shares the storage without referring to `c`
    del c
    assert pool.get((2, 3), torch.float32).data_ptr() != ptr
    del alias
    assert pool.get((2, 3), torch.float32).data_ptr() == ptr
    # Another shape, dtype or memory format is another buffer; the pool stops growing at its cap.
    assert pool.get((2, 4), torch.float32).data_ptr() != ptr
    cl = pool.get((1, 3, 2, 2), torch.float32, torch.channels_last)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    assert len(pool) == 2


def test_a_batch_that_autograd_saved_is_not_reused():
    """The consumer drops its name for the batch, but the graph still needs it for backward."""
    conv = torch.nn.Conv2d(3, 4, 3)
    pool = BufferPool()
    x = pool.get((2, 3, 8, 8), torch.float32).normal_()
    saved = x.clone()
    y = conv(x)  # saves x for the weight gradient
    del x
    pool.get((2, 3, 8, 8), torch.float32).fill_(7.0)  # must be another buffer
    y.sum().backward()
    ref = torch.nn.grad.conv2d_weight(saved, conv.weight.shape, torch.ones_like(y))
    torch.testing.assert_close(conv.weight.grad, ref)


def test_pool_byte_cap():
    pool = BufferPool(max_buffers=8, max_bytes=100)
    pool.get((20,), torch.float32)  # 80 bytes: kept
    pool.get((20,), torch.float32)  # would make 160: not kept
    assert len(pool) == 1


BACKENDS = ["torch"] + (["dali"] if probe_dali().available else [])


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_clean_tree(tmp_path_factory.mktemp("buffers"), per_class=5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_held_batches_are_never_overwritten(tree, backend):
    """Both backends: the torch one writes into pooled buffers, the DALI one hands over the
    memory of DALI's outputs without a copy (its dynamic executor keeps them while referenced)."""
    kw = dict(batch_size=2, num_workers=2, image_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loader = build_loader(tree, "val", backend, **kw)
    copies = [x.clone() for x, _ in loader]
    held = [x for x, _ in loader]  # every batch kept alive while the next ones are made
    assert len(held) == len(copies) >= 4
    assert len({x.data_ptr() for x in held}) == len(held)
    for epoch in (1, 2):  # more batches (and, for DALI, new pipelines) allocated meanwhile
        loader.set_epoch(epoch)
        for _ in loader:
            pass
    for x, ref in zip(held, copies, strict=True):
        assert torch.equal(x, ref)


def test_dropped_batches_are_reused(tree):
    """The torch backend's pool: a batch the consumer dropped is written again."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loader = build_loader(tree, "val", "torch", batch_size=2, num_workers=2, image_size=32)
    ptrs = [x.data_ptr() for x, _ in loader]  # each batch dropped before the one after next
    assert len(set(ptrs)) <= 3 < len(ptrs), ptrs
