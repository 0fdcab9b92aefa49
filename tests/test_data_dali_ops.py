"""fastscarlet's DALI operator ``fn.fastscarlet.resize_mirror_normalize`` (csrc/dali_ops/).

References: a numpy implementation of Pillow's documented two-pass resampling written here from the
algorithm (bilinear filter stretched by the scale, 22-bit fixed-point weights, horizontal pass then
vertical pass, each rounded to uint8), which the operator must equal bit for bit; the installed
Pillow and torchvision (Pillow 13 picks the order of the two passes itself, so it may differ by one
level in a pixel); and :func:`fastscarlet.data.transforms.normalize_batch` for the normalisation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

from fastscarlet.data import IMAGENET_MEAN, IMAGENET_STD
from fastscarlet.data.transforms import normalize_batch
from fastscarlet.env import probe_dali

pytestmark = pytest.mark.skipif(not probe_dali().available, reason=probe_dali().reason)

PRECISION = 22


@pytest.fixture(scope="module")
def plugin():
    from fastscarlet.data import dali_ops

    # Where DALI is installed the build makes the plugin (setup.py); its absence is a failure.
    assert dali_ops.load(), f"fastscarlet's DALI plugin is not built ({dali_ops.library_path()})"
    return dali_ops


def weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) int64 fixed-point weights of Pillow's antialiased bilinear filter."""
    scale = float(n_in) / n_out
    filterscale = max(scale, 1.0)
    support = filterscale  # the bilinear filter's support (1) stretched when downscaling
    ss = 1.0 / filterscale
    out = np.zeros((n_out, n_in), np.int64)
    for xx in range(n_out):
        center = (xx + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        w = [max(0.0, 1.0 - abs((x + lo - center + 0.5) * ss)) for x in range(hi - lo)]
        total = sum(w)
        for x, v in enumerate(w):
            v = v / total if total else v
            out[xx, lo + x] = (
                int(-0.5 + v * (1 << PRECISION)) if v < 0 else int(0.5 + v * (1 << PRECISION))
            )
    return out


def pillow_resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 HWC -> uint8 HWC, Pillow's two-pass algorithm (a pass is skipped if its size stays)."""
    x = img.astype(np.int64)
    round_half = 1 << (PRECISION - 1)
    if width != x.shape[1]:
        x = np.clip(
            (np.einsum("ox,yxc->yoc", weights(x.shape[1], width), x) + round_half) >> PRECISION,
            0,
            255,
        )
    if height != x.shape[0]:
        x = np.clip(
            (np.einsum("oy,yxc->oxc", weights(x.shape[0], height), x) + round_half) >> PRECISION,
            0,
            255,
        )
    return x.astype(np.uint8)


def run(plugin, images: list[np.ndarray], **kw) -> list[np.ndarray]:
    """The operator on a batch of uint8 HWC arrays (CPU pipeline); one output array per image."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import Pipeline

    kw = dict(mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3) | kw  # identity normalisation by default
    mirror = kw.pop("mirror", None)
    pipe = Pipeline(batch_size=len(images), num_threads=2, device_id=None, seed=0)
    with pipe:
        x = fn.external_source(source=[images], layout="HWC", dtype=types.UINT8, cycle=True)
        if mirror is not None:
            m = fn.external_source(source=[[np.int32(v) for v in mirror]], cycle=True)
            kw["mirror"] = m
        pipe.set_outputs(plugin.resize_mirror_normalize(x, **kw))
    pipe.build()
    (out,) = pipe.run()
    return [np.asarray(out[i]) for i in range(len(images))]


def random_images(seed: int, n: int, max_side: int = 120) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sides = rng.integers(1, max_side, (n, 2))
    return [rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8) for h, w in sides]


@pytest.mark.parametrize("size", [(224, 224), (7, 90), (61, 3), (1, 1), (33, 33)])
def test_resize_equals_pillows_two_pass_algorithm(plugin, size):
    rng = np.random.default_rng(size[0] * 1000 + size[1])
    images = random_images(seed=size[0] * 1000 + size[1], n=24)
    for shape in [(size[0], 5), (4, size[1]), size]:  # one side unchanged (one pass), or both
        images.append(rng.integers(0, 256, (*shape, 3), dtype=np.uint8))
    outs = run(plugin, images, size=size, channels_last=True)
    for img, out in zip(images, outs, strict=True):
        assert out.shape == (*size, 3)
        assert np.array_equal(out, pillow_resize(img, *size)), img.shape


def test_resize_within_one_level_of_installed_pillow(plugin):
    images = random_images(seed=1, n=30, max_side=300)
    for size in [(224, 224), (50, 160)]:
        for img, out in zip(
            images, run(plugin, images, size=size, channels_last=True), strict=True
        ):
            ref = np.asarray(Image.fromarray(img).resize(size[::-1], Image.BILINEAR))
            assert np.abs(out.astype(int) - ref).max() <= 1, img.shape


def test_resize_shorter_and_center_crop_are_torchvisions(plugin):
    rng = np.random.default_rng(2)
    # Odd and even margins (CenterCrop rounds half to even), portrait, landscape, square.
    shapes = [(375, 500), (500, 375), (300, 300), (257, 700), (181, 240), (240, 181)]
    # A side already at 131 (that pass is skipped, the crop offset is not), and a long thin image
    # (resized to 131 x 7860, of which the operator computes only the crop's window).
    shapes += [(131, 300), (300, 131), (131, 131), (5, 300)]
    images = [rng.integers(0, 256, (*s, 3), dtype=np.uint8) for s in shapes]
    outs = run(plugin, images, resize_shorter=131, crop=(117, 118), channels_last=True)
    for img, out in zip(images, outs, strict=True):
        h, w = img.shape[:2]
        # torchvision's Resize(int) and CenterCrop, written out.
        rh, rw = (int(131 * h / w), 131) if w <= h else (131, int(131 * w / h))
        top, left = round((rh - 117) / 2.0), round((rw - 118) / 2.0)
        full = pillow_resize(img, rh, rw)
        assert np.array_equal(out, full[top : top + 117, left : left + 118]), img.shape
        pil = F.center_crop(
            F.resize(Image.fromarray(img), 131, InterpolationMode.BILINEAR), [117, 118]
        )
        assert np.abs(out.astype(int) - np.asarray(pil)).max() <= 1, img.shape


def test_mirror_layout_and_normalisation(plugin):
    images = random_images(seed=3, n=6)
    size = (20, 30)
    norm = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    plain = run(plugin, images, size=size, channels_last=True)  # uint8 values as float
    chw = run(plugin, images, size=size, **norm)
    hwc = run(plugin, images, size=size, channels_last=True, **norm)
    flipped = run(plugin, images, size=size, mirror=[1, 0, 1, 0, 1, 1], **norm)
    for k, p in enumerate(plain):
        u8 = torch.from_numpy(p).round().to(torch.uint8).permute(2, 0, 1)[None]
        ref = normalize_batch(u8, IMAGENET_MEAN, IMAGENET_STD)[0]
        assert torch.equal(torch.from_numpy(chw[k]), ref)  # bit for bit the torch backend's
        assert np.array_equal(hwc[k], chw[k].transpose(1, 2, 0))
        want = ref.flip(-1) if k in (0, 2, 4, 5) else ref
        assert torch.equal(torch.from_numpy(flipped[k]), want)


def test_bad_input_is_named(plugin):
    img = np.zeros((10, 12, 3), np.uint8)
    with pytest.raises(RuntimeError, match="larger than the resized sample"):
        run(plugin, [img], resize_shorter=20, crop=(30, 30))
    with pytest.raises(RuntimeError, match="3 channels"):
        run(plugin, [np.zeros((10, 12, 4), np.uint8)], size=(5, 5))
    with pytest.raises(ValueError, match="allowed layouts for input 0"):  # DALI checks it
        import nvidia.dali.fn as fn
        import nvidia.dali.types as types
        from nvidia.dali import Pipeline

        pipe = Pipeline(batch_size=1, num_threads=1, device_id=None)
        with pipe:
            x = fn.external_source(source=[[img]], layout="CHW", dtype=types.UINT8, cycle=True)
            pipe.set_outputs(
                plugin.resize_mirror_normalize(x, mean=(0,) * 3, std=(1,) * 3, size=(5, 5))
            )
        pipe.build()
        pipe.run()
    with pytest.raises(ValueError, match="exactly one of size and resize_shorter"):
        run(plugin, [img], size=(5, 5), resize_shorter=8)
    assert math.isclose(plugin.normalize_constants([0.5] * 3, [0.25] * 3)[1][0], 2.0)


def test_a_plugin_that_does_not_load_is_a_warning_and_a_fallback(tmp_path, monkeypatch):
    from fastscarlet.data import dali_ops

    bogus = tmp_path / "_dali_ops.cpython-311-x86_64-linux-gnu.so"
    bogus.write_bytes(b"not a shared library")
    monkeypatch.setattr(dali_ops, "library_path", lambda: bogus)
    with pytest.warns(RuntimeWarning, match="does not load"):
        assert dali_ops.load.__wrapped__() is False  # the uncached body: the cache holds True
