"""The torch backend: PIL decoding in ``DataLoader`` worker processes, normalisation on the device.

Each worker turns a sample index into a uint8 ``(3, S, S)`` tensor (:class:`PilTransform`), so a
batch crosses the process boundary as uint8 (a quarter of float32); the main process moves it to
the device and normalises it there (:func:`normalize_batch`). A file that PIL cannot decode comes
back as a failure instead of an exception, so one bad file costs one sample, not the epoch.

The batch sampler hands the workers ``(index, epoch)`` pairs: the augmentation of a sample depends on
``(seed, epoch, index)`` only, and it does not matter which worker decodes it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

# Imported here, before the workers fork, so that each worker does not spend ~2 s importing it.
from torchvision.transforms import functional as _tv_functional  # noqa: F401

from fastscarlet.data.base import ImageLoader
from fastscarlet.data.buffers import BufferPool
from fastscarlet.data.folder import FileList
from fastscarlet.data.transforms import PilTransform, Recipe, normalize_batch, sample_rng


class FileListDataset(Dataset):
    """``dataset[(index, epoch)] -> (uint8 (3, S, S) tensor or None, label, index, error or None)``.

    Paths are stored in one numpy bytes array rather than a list of ``str``: a million Python
    strings touched by forked workers get copied page by page (reference counts), one array does not.
    """

    def __init__(self, files: FileList, recipe: Recipe, seed: int):
        self.paths = np.array([p.encode() for p in files.paths])
        self.labels = np.asarray(files.labels, dtype=np.int64)
        self.transform = PilTransform(recipe)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int]):
        from PIL import Image

        index, epoch = key
        path = self.paths[index].decode()
        try:
            with Image.open(path) as image:
                rng = sample_rng(self.seed, epoch, index) if self.transform.recipe.train else None
                tensor = self.transform(image, rng)
        except Exception as exc:  # PIL: OSError, SyntaxError, ValueError, DecompressionBombError
            return None, int(self.labels[index]), index, f"{type(exc).__name__}: {exc}"
        return tensor, int(self.labels[index]), index, None


def collate_skipping_failures(items):
    """Stack the decoded samples; pass the failed ones on as ``[(index, reason)]``."""
    good = [it for it in items if it[0] is not None]
    failed = [(it[2], it[3]) for it in items if it[0] is None]
    if good:
        # default_collate stacks straight into shared memory inside a worker: one copy less.
        images = default_collate([it[0] for it in good])
    else:
        images = torch.empty(0, 3, 0, 0, dtype=torch.uint8)
    labels = torch.tensor([it[1] for it in good], dtype=torch.int64)
    indices = torch.tensor([it[2] for it in good], dtype=torch.int64)
    return images, labels, indices, failed


class _EpochBatchSampler(Sampler):
    """Batches of ``(index, epoch)`` keys; the loader sets ``batches`` and ``epoch`` per iteration."""

    def __init__(self):
        self.batches: list[np.ndarray] = []
        self.epoch = 0

    def __iter__(self):
        for batch in self.batches:
            yield [(int(i), self.epoch) for i in batch]

    def __len__(self) -> int:
        return len(self.batches)


class TorchImageLoader(ImageLoader):
    """torchvision-style loading (PIL + ``torch.utils.data.DataLoader``); always available."""

    backend = "torch"

    def __init__(self, files: FileList, recipe: Recipe, *, num_workers: int, **kwargs):
        super().__init__(files, recipe, **kwargs)
        self.num_workers = num_workers
        self.dataset = FileListDataset(files, recipe, self.seed)
        self._sampler = _EpochBatchSampler()
        self._dataloader: DataLoader | None = None
        self._pool = BufferPool()  # CPU float32 outputs, reused once the consumer drops them

    def _make_dataloader(self) -> DataLoader:
        return DataLoader(
            self.dataset,
            batch_sampler=self._sampler,
            num_workers=self.num_workers,
            collate_fn=collate_skipping_failures,
            pin_memory=self.device.type == "cuda",
            # No persistent workers: a forked child would inherit a live persistent iterator of
            # another loader and fail in its __del__ ("can only test a child process"); starting
            # the workers costs well under a second per epoch.
        )

    def _iter_epoch(
        self, batches: list[np.ndarray]
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        self._sampler.batches, self._sampler.epoch = batches, self.epoch
        if self._dataloader is None:
            self._dataloader = self._make_dataloader()
        recipe = self.recipe
        non_blocking = self.device.type == "cuda"
        for images, labels, indices, failed in self._dataloader:
            for index, reason in failed:
                self._record_failure(index, reason)
            if len(labels) == 0:
                continue  # every file of the batch failed; nothing to train on
            images = images.to(self.device, non_blocking=non_blocking)
            images = normalize_batch(
                images, recipe.mean, recipe.std, dtype=self.dtype,
                channels_last=self.channels_last, pool=self._pool,
            )  # fmt: skip
            yield (
                images,
                labels.to(self.device, non_blocking=non_blocking),
                indices.to(self.device, non_blocking=non_blocking),
            )
