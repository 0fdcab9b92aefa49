"""fastscarlet's DALI plugin: CPU operators built from ``csrc/dali_ops/`` when DALI is installed.

``fn.fastscarlet.resize_mirror_normalize`` resizes uint8 HWC RGB images with Pillow's antialiased
bilinear filter, optionally center crops, mirrors and normalises them into float32 CHW or HWC, in
one pass. On the CPU it replaces DALI's ``fn.resize`` (whose CPU resampling costs about twice
Pillow's) plus ``fn.crop_mirror_normalize``. Its uint8 result is Pillow's two-pass algorithm
(horizontal, then vertical; 22-bit fixed-point weights); Pillow releases that pick the order of the
two passes can differ from it by one level in some pixels (tests/test_data_dali_ops.py bounds it).

:func:`load` loads the plugin once and says whether it is there; the DALI backend falls back to
DALI's own operators when it is not (a DALI installed after fastscarlet was built, or no CUDA
headers at build time: ``setup.py`` skips the plugin then).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from pathlib import Path

from fastscarlet.env import dali_plugin_path


def library_path() -> Path | None:
    """The built plugin next to this file, or None."""
    return dali_plugin_path()


@functools.cache
def load() -> bool:
    """Load the plugin into DALI (once); True iff its operators are now available.

    A plugin that does not load (built against another DALI release, say) is reported in a
    warning and treated as absent, so that the DALI backend falls back to DALI's own operators.
    """
    path = library_path()
    if path is None:
        return False
    import nvidia.dali.plugin_manager as plugin_manager

    try:
        plugin_manager.load_library(str(path))
    except Exception as exc:  # DALI raises RuntimeError; a bad binary may raise OSError
        warnings.warn(
            f"fastscarlet's DALI plugin {path} does not load ({exc}); using DALI's own operators. "
            "Rebuild it with `pip install --no-build-isolation -e .`",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


def normalize_constants(
    mean: Sequence[float], std: Sequence[float]
) -> tuple[list[float], list[float]]:
    """``scale, shift`` with ``float(x) * scale - shift == (x / 255 - mean) / std``: the constants
    of :func:`fastscarlet.data.transforms.normalize_batch`, computed the same way."""
    return [1 / (255 * s) for s in std], [m / s for m, s in zip(mean, std, strict=True)]


def resize_mirror_normalize(
    images,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    size: tuple[int, int] | None = None,
    resize_shorter: int | None = None,
    crop: tuple[int, int] | None = None,
    mirror=0,
    channels_last: bool = False,
):
    """The operator on a DALI DataNode of uint8 HWC images: resize to ``size`` (height, width), or
    the shorter side to ``resize_shorter`` then center crop ``crop`` (torchvision's Resize(int) +
    CenterCrop); flip where ``mirror``; ``(x / 255 - mean) / std`` as float32, CHW or HWC."""
    import nvidia.dali.fn as fn

    if not load():
        raise RuntimeError(
            "fastscarlet's DALI plugin is not built: reinstall fastscarlet with "
            "`pip install --no-build-isolation -e .` after installing nvidia-dali-cuda130 (the "
            "build also needs the CUDA headers: set CUDA_HOME)"
        )
    if (size is None) == (resize_shorter is None):
        raise ValueError("give exactly one of size and resize_shorter")
    scale, shift = normalize_constants(mean, std)
    kw: dict = dict(
        scale=scale, shift=shift, mirror=mirror, output_layout="HWC" if channels_last else "CHW"
    )
    if size is not None:
        kw.update(resize_y=int(size[0]), resize_x=int(size[1]))
    else:
        kw.update(resize_shorter=int(resize_shorter))
    if crop is not None:
        kw.update(crop=[int(crop[0]), int(crop[1])])
    return fn.fastscarlet.resize_mirror_normalize(images, **kw)
