"""Guards shared by every test."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _threads_are_restored():
    """A test that leaves torch's thread count changed fails (and the count is restored): oneDNN
    sums in another order with another count, so a leak shifts later tests' numerics (an ONNX
    comparison at 1e-4 fails with one thread)."""
    before = torch.get_num_threads()
    yield
    after = torch.get_num_threads()
    if after != before:
        torch.set_num_threads(before)
        pytest.fail(f"the test left torch's thread count at {after} (was {before})")
