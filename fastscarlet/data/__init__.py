"""Data loading: one :func:`build_loader` over a torch, a DALI and a synthetic backend.

Modules, lowest first:

- :mod:`~fastscarlet.data.folder`: the ImageFolder file list shared by every backend (torchvision's
  classes, order and labels), with a check that skips and reports files no decoder can read;
- :mod:`~fastscarlet.data.sharding`: which samples a rank reads in an epoch, in which order;
- :mod:`~fastscarlet.data.transforms`: the ``imagenet`` and ``cifar`` recipes (numbers + PIL code);
- :mod:`~fastscarlet.data.base`: :class:`ImageLoader`, the interface the backends implement;
- :mod:`~fastscarlet.data.loader`: :func:`build_loader`, which picks a backend;
- :mod:`~fastscarlet.data.torch_backend`, :mod:`~fastscarlet.data.dali_backend`,
  :mod:`~fastscarlet.data.synthetic`: the backends;
- :mod:`~fastscarlet.data.prepare`: ImageFolder trees from ImageNet val, Fashion-MNIST, CIFAR-10.

Importing this package never imports DALI; asking for the DALI backend without it raises an error
naming the package to install.
"""

from fastscarlet.data.base import ImageLoader
from fastscarlet.data.folder import (
    IMG_EXTENSIONS,
    FileList,
    SkippedFile,
    check_image,
    resolve_split,
    scan_image_folder,
)
from fastscarlet.data.loader import BACKENDS, build_loader
from fastscarlet.data.sharding import epoch_order
from fastscarlet.data.transforms import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RECIPES,
    Recipe,
)

__all__ = [
    "BACKENDS",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMG_EXTENSIONS",
    "RECIPES",
    "FileList",
    "ImageLoader",
    "Recipe",
    "SkippedFile",
    "build_loader",
    "check_image",
    "epoch_order",
    "resolve_split",
    "scan_image_folder",
]
