"""Which samples a rank reads in an epoch, and in what order: one function for every backend.

The rule is :class:`torch.utils.data.DistributedSampler`'s, made explicit so that the torch and the
DALI backends read the same files in the same order for a given ``(seed, epoch, rank)``:

1. the order is ``range(n)``, or a permutation drawn from ``numpy.random.default_rng([seed, epoch])``
   (the same on every rank, so the ranks' shards partition it);
2. with ``pad=True`` the order is extended with its own beginning until it divides evenly by
   ``world_size`` (every rank then takes the same number of steps, which DDP needs);
3. rank ``r`` takes every ``world_size``-th entry starting at ``r``.

Without padding, the shards partition ``range(n)`` exactly: every image is read once per epoch.
"""

from __future__ import annotations

import numpy as np


def epoch_order(
    num_samples: int,
    *,
    epoch: int,
    seed: int,
    shuffle: bool,
    rank: int = 0,
    world_size: int = 1,
    pad: bool = False,
) -> np.ndarray:
    """Sample indices (int64, shape ``(m,)``) that ``rank`` reads in ``epoch``, in order.

    ``m = ceil(n / world_size)`` with ``pad``, else ``len(range(rank, n, world_size))``.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(num_samples)
    else:
        order = np.arange(num_samples, dtype=np.int64)
    if pad and num_samples % world_size:
        total = -(-num_samples // world_size) * world_size
        order = np.resize(order, total)  # np.resize repeats the array from its start
    return order[rank::world_size].astype(np.int64, copy=False)


def batches_per_epoch(num_samples: int, batch_size: int, drop_last: bool) -> int:
    """Number of batches of ``batch_size`` from ``num_samples`` samples (last one partial or dropped)."""
    if drop_last:
        return num_samples // batch_size
    return -(-num_samples // batch_size)
