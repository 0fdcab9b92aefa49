"""The loader interface every backend implements: :class:`ImageLoader`.

Iterating a loader yields ``(images, labels)`` on its device (see :mod:`fastscarlet.data.loader`
for the full contract); the base class owns the epoch's order, the batch count and the report of
skipped files, and the backends (:mod:`~fastscarlet.data.torch_backend`,
:mod:`~fastscarlet.data.dali_backend`, :mod:`~fastscarlet.data.synthetic`) implement
:meth:`ImageLoader._iter_epoch`. :func:`fastscarlet.data.loader.build_loader` picks one; the
backends import this module, never the loader, so there is no import circle.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from fastscarlet.data.folder import FileList, SkippedFile
from fastscarlet.data.sharding import batches_per_epoch, epoch_order
from fastscarlet.data.transforms import Recipe


class ImageLoader:
    """Base of the backends: the epoch's order, the batch count and the skipped-file report.

    Subclasses implement :meth:`_iter_epoch`, yielding ``(images, labels, indices)`` for the given
    batches of sample indices, and record files that fail with :meth:`_record_failure`.
    """

    backend = "base"

    def __init__(
        self,
        files: FileList | None,
        recipe: Recipe,
        *,
        num_samples: int,
        num_classes: int,
        batch_size: int,
        device: torch.device,
        rank: int,
        world_size: int,
        seed: int,
        shuffle: bool,
        drop_last: bool,
        pad: bool,
        dtype: torch.dtype,
        channels_last: bool,
        return_index: bool,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}"
            )
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
        self.files = files
        self.recipe = recipe
        self.dataset_size = num_samples  # before sharding
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.device = device
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        # Training pads the shards to equal length so that every DDP rank takes the same number of
        # steps (DistributedSampler's rule); evaluation reads every image exactly once.
        self.pad = pad and world_size > 1
        self.dtype = dtype
        self.channels_last = channels_last
        self.return_index = return_index
        self.epoch = 0
        self._start_batch = 0  # set_start_batch: where the next iteration begins (then reset)
        self._runtime_skipped: list[SkippedFile] = []

    # -- the interface the trainer uses -------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the order and augmentation seed of ``epoch`` for the next iteration."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def set_start_batch(self, batch: int) -> None:
        """Begin the next iteration at batch ``batch`` of the current epoch (resuming a run).

        The batches from there on hold the same samples as an uninterrupted epoch; only the next
        iteration is affected. The torch backend also repeats their augmentations (they depend
        on ``(seed, epoch, index)``); DALI draws new ones.
        """
        if not 0 <= batch <= len(self):
            raise ValueError(f"start batch must be in [0, {len(self)}], got {batch}")
        self._start_batch = int(batch)

    @property
    def num_samples(self) -> int:
        """Samples this rank reads per epoch (before ``drop_last``)."""
        n, w = self.dataset_size, self.world_size
        return -(-n // w) if self.pad else len(range(self.rank, n, w))

    def __len__(self) -> int:
        return batches_per_epoch(self.num_samples, self.batch_size, self.drop_last)

    @property
    def classes(self) -> list[str]:
        if self.files is not None:
            return list(self.files.classes)
        return [str(i) for i in range(self.num_classes)]

    @property
    def skipped(self) -> list[SkippedFile]:
        """Files left out so far: by the scan, then those that failed to decode during an epoch."""
        scanned = self.files.skipped if self.files is not None else []
        return [*scanned, *self._runtime_skipped]

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def epoch_indices(self) -> np.ndarray:
        """Indices into ``files`` that this rank reads in the current epoch, in order (int64)."""
        return epoch_order(
            self.dataset_size,
            epoch=self.epoch,
            seed=self.seed,
            shuffle=self.shuffle,
            rank=self.rank,
            world_size=self.world_size,
            pad=self.pad,
        )

    def epoch_batches(self) -> list[np.ndarray]:
        """The epoch's indices cut into batches (the last one partial or dropped), from the start
        batch set by :meth:`set_start_batch` (usually 0)."""
        order = self.epoch_indices()
        n = len(self) * self.batch_size if self.drop_last else len(order)
        start = self._start_batch * self.batch_size
        return [order[i : i + self.batch_size] for i in range(start, n, self.batch_size)]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        batches = self.epoch_batches()
        self._start_batch = 0
        for images, labels, indices in self._iter_epoch(batches):
            if self.return_index:
                yield images, labels, indices
            else:
                yield images, labels

    def _iter_epoch(
        self, batches: list[np.ndarray]
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def _record_failure(self, index: int, reason: str) -> None:
        import warnings

        path = self.files.paths[index] if self.files is not None else str(index)
        self._runtime_skipped.append(SkippedFile(path, reason))
        warnings.warn(f"skipped {path} (failed to decode: {reason})", stacklevel=3)

    def __repr__(self) -> str:
        where = self.files.root if self.files is not None else "random tensors"
        return (
            f"{type(self).__name__}({where!r}, recipe={self.recipe.name}, "
            f"train={self.recipe.train}, image_size={self.recipe.image_size}, "
            f"batch_size={self.batch_size}, batches={len(self)}, rank={self.rank}/{self.world_size}, "
            f"device={self.device})"
        )
