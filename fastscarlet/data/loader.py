"""``build_loader``: one interface over the torch, DALI and synthetic backends.

Every loader is an :class:`ImageLoader`:

- iterating it yields ``(images, labels)``: ``images`` of shape ``(B, 3, S, S)`` and ``dtype`` on
  ``device`` (``torch.channels_last`` memory format when asked), normalised with the recipe's mean
  and std; ``labels`` int64 of shape ``(B,)`` on ``device``. With ``return_index=True`` a third
  item, the int64 indices ``(B,)`` of the samples in ``loader.files``, follows;
- ``len(loader)`` is the number of batches per epoch on this rank;
- ``loader.set_epoch(epoch)`` picks the epoch's order (the same permutation on every rank, as
  ``DistributedSampler.set_epoch`` does) and the seed of its augmentations; without it every
  iteration repeats epoch 0's order;
- ``loader.set_start_batch(k)`` makes the next iteration begin at batch ``k`` (resuming a run);
- ``loader.skipped`` lists the files left out (by the scan or at decode time), ``loader.num_skipped``
  counts them; ``loader.classes`` and ``loader.num_classes`` name the labels.

Sharding (:mod:`fastscarlet.data.sharding`): the train split pads the shards to equal length, so
DDP ranks take the same number of steps; the eval splits read every image exactly once over all
ranks (shards may then differ by one image, and the batch counts by one).

A sample that cannot be decoded at run time is dropped from its batch (the batch is one smaller) and
recorded; the number of batches does not change, so DDP ranks keep taking the same number of steps.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from fastscarlet.data.base import ImageLoader
from fastscarlet.data.folder import Verify, resolve_split, scan_image_folder, verify_file_list
from fastscarlet.data.transforms import make_recipe

BACKENDS = ("torch", "dali", "synthetic")
SPLITS = ("train", "val", "test")

# ImageNet-1k sizes, for a synthetic loader that has no folder to count.
IMAGENET_TRAIN_IMAGES = 1_281_167
IMAGENET_VAL_IMAGES = 50_000


def build_loader(
    root: str | os.PathLike | None,
    split: str = "train",
    backend: str = "torch",
    *,
    batch_size: int = 256,
    image_size: int = 224,
    device: str | torch.device = "cpu",
    num_workers: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    recipe: str = "imagenet",
    augment: bool | None = None,
    shuffle: bool | None = None,
    drop_last: bool | None = None,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    crop_scale: tuple[float, float] = (0.08, 1.0),
    crop_pct: float = 0.875,
    verify: Verify = "header",
    subset: int | None = None,
    return_index: bool = False,
    decode_device: str | None = None,
    dali_ops: str = "auto",
    num_classes: int | None = None,
    num_images: int | None = None,
) -> ImageLoader:
    """A loader of ``(images, labels)`` batches of one split, on ``device``.

    Args:
        root: dataset folder with ``<split>/<class>/<image>`` inside (ImageNet: ``train/``, ``val/``;
            CIFAR-10: ``train/``, ``test/``; ``val`` and ``test`` find each other). May be ``None``
            for the synthetic backend.
        split: ``"train"``, ``"val"`` or ``"test"``.
        backend: ``"torch"`` (PIL + DataLoader), ``"dali"`` (NVIDIA DALI; GPU decoding when
            ``device`` is CUDA, CPU otherwise) or ``"synthetic"`` (random tensors).
        batch_size: samples per batch on this rank.
        image_size: output side ``S``; images are ``(B, 3, S, S)``.
        device: where the batches are delivered (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        num_workers: decoding processes (torch) or threads (DALI); default ``min(8, cpu_count)``.
        rank, world_size: this process's shard for DDP (see :mod:`fastscarlet.data.sharding`).
        seed: seeds the per-epoch order and the augmentations.
        recipe: ``"imagenet"`` or ``"cifar"`` (see :mod:`fastscarlet.data.transforms`).
        augment: random (train) transform or the eval transform; default ``split == "train"``.
        shuffle: reshuffle every epoch; default ``split == "train"``.
        drop_last: drop the last partial batch; default ``split == "train"`` (as timm does).
        dtype: ``torch.float32``, ``float16`` or ``bfloat16``.
        channels_last: deliver images in ``torch.channels_last`` memory format.
        crop_scale: area fraction range of the imagenet train crop.
        crop_pct: ``image_size / shorter side`` of the imagenet eval resize (0.875: 256 -> 224).
        verify: file check before the first epoch: ``"none"``, ``"header"`` or ``"decode"``
            (:func:`fastscarlet.data.folder.check_image`).
        subset: read only this many images, a fixed random subset drawn with ``seed`` (e.g. a
            held-out part of the train set for architecture search).
        return_index: also yield the indices of the samples in ``loader.files``.
        decode_device: DALI only: ``"mixed"`` (GPU) or ``"cpu"``; default mixed on CUDA.
        dali_ops: DALI only: ``"auto"`` uses fastscarlet's fused resize-mirror-normalize operator
            (:mod:`fastscarlet.data.dali_ops`) for the imagenet recipe on a CPU pipeline when the
            plugin is built, ``"fastscarlet"`` requires it, ``"dali"`` keeps DALI's operators.
        num_classes, num_images: synthetic only, when there is no folder to count (default
            1000 classes and the ImageNet split size).

    Raises:
        ValueError: an argument is out of range (named in the message).
        FileNotFoundError: the folder, the split or the images are missing.
        RuntimeError: the DALI backend is asked for without DALI installed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    is_train = split == "train"
    augment = is_train if augment is None else augment
    shuffle = is_train if shuffle is None else shuffle
    drop_last = is_train if drop_last is None else drop_last
    device = torch.device(device)
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1)
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    spec = make_recipe(
        recipe, train=augment, image_size=image_size, crop_scale=crop_scale, crop_pct=crop_pct
    )
    common = dict(
        batch_size=batch_size,
        device=device,
        rank=rank,
        world_size=world_size,
        seed=seed,
        shuffle=shuffle,
        drop_last=drop_last,
        pad=is_train,
        dtype=dtype,
        channels_last=channels_last,
        return_index=return_index,
    )

    if backend == "synthetic":
        from fastscarlet.data.synthetic import SyntheticLoader

        files = None
        if root is not None:
            files = scan_image_folder(resolve_split(root, split), verify="none")
        if files is not None:
            num_classes = num_classes or len(files.classes)
            num_images = num_images or len(files)
        num_classes = num_classes or 1000
        num_images = num_images or (IMAGENET_TRAIN_IMAGES if is_train else IMAGENET_VAL_IMAGES)
        if subset is not None:
            num_images = min(num_images, subset)
        return SyntheticLoader(
            files, spec, num_samples=num_images, num_classes=num_classes, **common
        )

    if root is None:
        raise ValueError(f"the {backend} backend needs a data root (got root=None)")
    if backend == "dali":
        from fastscarlet.env import require

        require("dali")  # before the scan: a missing package should not cost a folder walk
    files = scan_image_folder(resolve_split(root, split), verify="none")
    if subset is not None:
        if subset < 1:
            raise ValueError(f"subset must be positive, got {subset}")
        if subset < len(files):
            picked = np.sort(np.random.default_rng([seed, 7919]).permutation(len(files))[:subset])
            files = files.subset(picked.tolist())
    files = verify_file_list(files, verify)  # after the subset: check only what will be read
    shape = dict(num_samples=len(files), num_classes=len(files.classes))
    if backend == "torch":
        from fastscarlet.data.torch_backend import TorchImageLoader

        return TorchImageLoader(files, spec, num_workers=num_workers, **shape, **common)
    from fastscarlet.data.dali_backend import DaliImageLoader

    return DaliImageLoader(
        files,
        spec,
        num_threads=max(1, num_workers),
        decode_device=decode_device,
        dali_ops=dali_ops,
        **shape,
        **common,
    )
