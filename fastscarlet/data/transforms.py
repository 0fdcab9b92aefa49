"""The preprocessing recipes, written once as numbers and as PIL code; DALI mirrors them.

Two recipes:

``imagenet`` (the released ScarletNAS/FairNAS/MoGA ``dataloader.py``, papers.md section 4):
  train: random resized crop to ``image_size`` (area fraction ``crop_scale``, default (0.08, 1) as in
  torchvision and timm; the authors' unused train transform had (0.2, 1)), aspect ratio in
  [3/4, 4/3], bilinear, horizontal flip with p=0.5.
  eval: resize the shorter side to ``round(image_size / crop_pct)`` (256 for 224 at the released
  ``crop_pct=0.875``), center crop ``image_size``.
  Normalisation with the ImageNet mean and std.

``cifar`` (the usual CIFAR-10 recipe):
  train: zero-pad 4 pixels on each side, random ``image_size`` crop (one of 9x9 offsets, uniform),
  horizontal flip. eval: resize the shorter side to ``image_size`` and center crop, which leaves a
  32x32 image unchanged at ``image_size=32``. Normalisation with the CIFAR-10 mean and std.

The torch backend makes uint8 CHW tensors in its workers and normalises whole batches on the target
device (:func:`normalize_batch`): four times less data between processes than float32, and the
arithmetic runs on the GPU when there is one. The random choices of a sample come from a generator
seeded with ``(seed, epoch, sample index)``, so they do not depend on the number of workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fastscarlet.data.buffers import BufferPool

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Per-channel mean and std of the 50,000 CIFAR-10 training images (the often quoted
# (0.2023, 0.1994, 0.2010) is the mean of per-image stds, not the dataset's std).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

RECIPES = ("imagenet", "cifar")


@dataclass(frozen=True)
class Recipe:
    """Everything both backends need to preprocess one split the same way."""

    name: str  # "imagenet" or "cifar"
    train: bool  # random augmentation (True) or the deterministic eval transform
    image_size: int  # output is image_size x image_size
    crop_scale: tuple[float, float] = (0.08, 1.0)  # imagenet train: area fraction of the crop
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # imagenet train: aspect ratio w/h
    crop_pct: float = 0.875  # imagenet eval: image_size / resized shorter side
    padding: int = 4  # cifar train: zero padding before the random crop

    @property
    def mean(self) -> tuple[float, float, float]:
        return IMAGENET_MEAN if self.name == "imagenet" else CIFAR10_MEAN

    @property
    def std(self) -> tuple[float, float, float]:
        return IMAGENET_STD if self.name == "imagenet" else CIFAR10_STD

    @property
    def resize_size(self) -> int:
        """Shorter side before the eval center crop: 256 for imagenet at 224, image_size for cifar."""
        if self.name == "cifar":
            return self.image_size
        return round(self.image_size / self.crop_pct)


def make_recipe(
    name: str,
    *,
    train: bool,
    image_size: int,
    crop_scale: tuple[float, float] = (0.08, 1.0),
    crop_pct: float = 0.875,
) -> Recipe:
    """A validated :class:`Recipe`; bad values raise ``ValueError`` naming the argument."""
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {name!r}")
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    lo, hi = crop_scale
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {crop_scale}")
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    return Recipe(name, train, image_size, (float(lo), float(hi)), crop_pct=crop_pct)


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample's random choices in one epoch."""
    return np.random.default_rng([seed, epoch, index])


def random_resized_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random crop, torchvision's ``RandomResizedCrop.get_params``.

    Up to 10 tries draw an area fraction uniformly in ``scale`` and an aspect ratio log-uniformly in
    ``ratio``; the first box that fits is placed uniformly. If none fits, the whole image is center
    cropped to the nearest allowed aspect ratio.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w = width
        h = round(w / min(ratio))
    elif in_ratio > max(ratio):
        h = height
        w = round(h * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class PilTransform:
    """PIL image (any mode) -> uint8 tensor ``(3, image_size, image_size)`` for one :class:`Recipe`.

    Called as ``transform(image, rng)``; ``rng`` is only used by the train recipes.
    """

    def __init__(self, recipe: Recipe):
        self.recipe = recipe

    def __call__(self, image, rng: np.random.Generator | None = None) -> torch.Tensor:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as F

        r = self.recipe
        size = [r.image_size, r.image_size]
        if image.mode != "RGB":
            image = image.convert("RGB")  # what torchvision's pil_loader does: L, P, CMYK, RGBA
        if not r.train:
            image = F.resize(image, r.resize_size, InterpolationMode.BILINEAR, antialias=True)
            return F.pil_to_tensor(F.center_crop(image, size))
        if rng is None:
            raise ValueError("a train transform needs a random generator")
        if r.name == "imagenet":
            width, height = image.size
            top, left, h, w = random_resized_crop_box(
                height, width, r.crop_scale, r.crop_ratio, rng
            )
            image = F.resized_crop(
                image, top, left, h, w, size, InterpolationMode.BILINEAR, antialias=True
            )
            out = F.pil_to_tensor(image)
        else:
            out = F.pil_to_tensor(image)
            if out.shape[1:] != (r.image_size, r.image_size):
                # Not a native-size CIFAR image: bring it to image_size first, like the eval path.
                out = F.center_crop(F.resize(out, r.image_size, antialias=True), size)
            p = r.padding
            out = torch.nn.functional.pad(out, (p, p, p, p))
            top, left = (int(v) for v in rng.integers(0, 2 * p + 1, size=2))
            out = out[:, top : top + r.image_size, left : left + r.image_size]
        if rng.random() < 0.5:
            out = out.flip(-1)
        return out.contiguous()


def normalize_batch(
    images: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    pool: BufferPool | None = None,
) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` in [0, 255] -> ``dtype`` ``(N, 3, H, W)``, ``(x / 255 - mean) / std``.

    The arithmetic runs in float32 on the tensor's device, then casts to ``dtype``; the result is in
    ``torch.channels_last`` memory format when asked. A float32 result on the CPU is written into a
    buffer of ``pool`` when one is given.
    """
    scale = torch.tensor([1 / (255 * s) for s in std], device=images.device).view(1, -1, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], device=images.device).view(1, -1, 1, 1)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if pool is not None and images.device.type == "cpu" and dtype == torch.float32:
        out = pool.get(tuple(images.shape), torch.float32, memory_format)
        return out.copy_(images).mul_(scale).sub_(shift)
    out = images.to(memory_format=memory_format).float().mul_(scale).sub_(shift)
    return out.to(dtype=dtype, memory_format=memory_format)
