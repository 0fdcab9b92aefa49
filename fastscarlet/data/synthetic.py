"""The synthetic backend: random batches on the device, for throughput tests without data.

It keeps the interface and the batch count of a real loader (``len``, ``set_epoch``, sharding,
``drop_last``) so that a run can switch ``data.backend`` to ``synthetic`` and measure the model
alone. One batch of images is drawn per epoch (seeded by ``(seed, epoch, rank)``) and delivered
``len(loader)`` times: drawing fresh noise for every step would measure the random number generator.
Labels and indices are those of the epoch's real order, so label-dependent code behaves as usual.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from fastscarlet.data.base import ImageLoader


class SyntheticLoader(ImageLoader):
    """Standard-normal images ``(B, 3, S, S)`` and uniform labels in ``[0, num_classes)``."""

    backend = "synthetic"

    def _iter_epoch(
        self, batches: list[np.ndarray]
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        size = self.recipe.image_size
        gen = torch.Generator().manual_seed(hash((self.seed, self.epoch, self.rank)) & (2**62 - 1))
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        images = torch.randn(self.batch_size, 3, size, size, generator=gen)
        images = images.to(self.device, dtype=self.dtype, memory_format=memory_format)
        labels_of = torch.randint(0, self.num_classes, (self.dataset_size,), generator=gen)
        if self.files is not None:
            labels_of = torch.as_tensor(self.files.labels, dtype=torch.int64)
        for batch in batches:
            indices = torch.from_numpy(batch)
            yield (
                images[: len(batch)],
                labels_of[indices].to(self.device),
                indices.to(self.device),
            )
