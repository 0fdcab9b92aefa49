"""The DALI backend on the CPU (``device_id=None``), against the torch backend and torchvision.

Measured differences to the torch backend (PIL), eval transform at 224, in 8-bit levels: on photo-
sized JPEGs (375x500 down to 256) at most 4 and 0.35 on average per image; on the grayscale, CMYK,
palette and PNG files of the messy tree at most 4 and 0.6 on average (the palette PNG: its dithering
is high-frequency, where the two antialiasing filters differ most). The bounds below leave ~1.5x.
Those are DALI's own operators (``dali_ops="dali"``). With fastscarlet's operator (the default on
the CPU, Pillow's filter) the eval tensors of both trees equal the torch backend's bit for bit; the
bound there is one level, what a Pillow release that orders its two passes differently may change.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from data_fixtures import CIFAR10_ROOT, make_clean_tree, make_messy_tree, save, smooth_image
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import pil_loader

from fastscarlet.data import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, build_loader
from fastscarlet.env import probe_dali

pytestmark = pytest.mark.skipif(not probe_dali().available, reason=probe_dali().reason)

STD_LEVELS = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255  # normalised unit -> 8-bit levels


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_clean_tree(tmp_path_factory.mktemp("clean"), per_class=5)


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("messy")
    return root, make_messy_tree(root / "val")


def collect(loader):
    xs, ys, idx = zip(*loader)
    return torch.cat(xs), torch.cat(ys), torch.cat(idx)


def both(root, split, dali_ops="auto", **kw):
    kw = dict(batch_size=4, num_workers=2, return_index=True) | kw
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return (
            build_loader(root, split, "torch", **kw),
            build_loader(root, split, "dali", dali_ops=dali_ops, **kw),
        )


def level_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.float() - b.float()).abs() * STD_LEVELS


@pytest.mark.parametrize("ops,max_levels,mean_levels", [("fastscarlet", 1, 0.05), ("dali", 6, 0.5)])
def test_eval_matches_torch_backend_and_imagefolder(tree, ops, max_levels, mean_levels):
    tl, dl = both(tree, "val", dali_ops=ops)
    t, d = collect(tl), collect(dl)
    ref = ImageFolder(str(tree / "val"))
    assert dl.classes == ref.classes
    assert torch.equal(t[2], d[2]) and d[2].tolist() == list(range(len(ref)))
    assert d[1].tolist() == ref.targets
    for k in range(len(ref)):
        diff = level_diff(t[0][k], d[0][k])
        assert diff.mean() <= mean_levels and diff.max() <= max_levels + 1e-3, (
            ref.samples[k],
            diff.mean(),
            diff.max(),
        )
    # And the torch backend is torchvision's eval transform (checked exactly in test_data_loader).


def test_messy_tree_modes_decode_like_pil_and_bad_files_are_skipped(messy):
    root, kinds = messy
    tl, dl = both(root, "val", image_size=224)
    t, d = collect(tl), collect(dl)
    assert {s.path for s in dl.skipped} == {str(p) for p in kinds["bad"]}
    assert torch.equal(t[2], d[2]) and torch.equal(t[1], d[1])
    assert {dl.files.paths[i] for i in d[2].tolist()} == {str(p) for p in kinds["good"]}
    ref = dict(ImageFolder(str(root / "val"), allow_empty=True).samples)
    assert d[1].tolist() == [ref[dl.files.paths[i]] for i in d[2].tolist()]
    for k in range(len(d[2])):  # grayscale, CMYK, PNG named .JPEG, RGBA, palette
        diff = level_diff(t[0][k], d[0][k])
        assert diff.mean() <= 1.0 and diff.max() <= 8, (dl.files.paths[d[2][k]], diff.mean())


def test_corrupt_files_at_run_time_are_skipped_without_losing_the_epoch(messy):
    """verify='none': DALI's decoder hits the bad files mid-epoch; the loader recovers."""
    root, kinds = messy
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loader = build_loader(
            root,
            "val",
            "dali",
            batch_size=4,
            num_workers=2,
            image_size=32,
            verify="none",
            return_index=True,
        )
        batches = list(loader)
    n = len(loader.files)
    assert n == len(kinds["good"]) + len(kinds["bad"])
    assert len(batches) == len(loader) == -(-n // 4)  # the batch count does not change
    idx = torch.cat([b[2] for b in batches]).tolist()
    good = {str(p) for p in kinds["good"]}
    assert sorted(idx) == sorted(i for i, p in enumerate(loader.files.paths) if p in good)
    assert {s.path for s in loader.skipped} == {str(p) for p in kinds["bad"]}
    assert any("failed to decode" in str(w.message) for w in caught)


def test_same_order_as_torch_backend_with_sharding_and_epochs(tree):
    for world in (1, 3):
        for rank in range(world):
            tl, dl = both(
                tree, "train", image_size=32, rank=rank, world_size=world, seed=3, drop_last=False
            )
            for epoch in (0, 1):
                tl.set_epoch(epoch)
                dl.set_epoch(epoch)
                t, d = collect(tl), collect(dl)
                assert torch.equal(t[2], d[2]) and torch.equal(t[1], d[1])
                assert len(dl) == len(tl)
    # Eval over 3 ranks: every image exactly once.
    seen = []
    for rank in range(3):
        _, dl = both(tree, "val", image_size=32, rank=rank, world_size=3)
        seen += collect(dl)[2].tolist()
    assert sorted(seen) == list(range(15))


def test_train_transform_is_seeded_and_keeps_the_whole_square_image_at_full_scale(tmp_path):
    save(smooth_image(96, 96, 3), tmp_path / "train" / "a" / "x.jpg", quality=95)
    save(smooth_image(96, 96, 4), tmp_path / "train" / "a" / "y.jpg", quality=95)
    ref_t = T.Compose([T.Resize((40, 40)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    refs = [ref_t(pil_loader(str(p))) for p in sorted((tmp_path / "train" / "a").iterdir())]
    loader = build_loader(
        tmp_path,
        "train",
        "dali",
        batch_size=2,
        num_workers=1,
        image_size=40,
        crop_scale=(1.0, 1.0),
        return_index=True,
    )
    flips = []
    for epoch in range(6):
        loader.set_epoch(epoch)
        ((x, _, idx),) = list(loader)
        for k in range(2):
            ref = refs[idx[k]]
            plain, mirrored = level_diff(x[k], ref).mean(), level_diff(x[k], ref.flip(-1)).mean()
            assert min(plain, mirrored) < 1.0, (plain, mirrored)
            flips.append(bool(mirrored < plain))
    assert any(flips) and not all(flips)
    # Same seed and epoch: the same pixels; the default crop scale: random crops that differ.
    a = build_loader(tmp_path, "train", "dali", batch_size=2, num_workers=2, image_size=40, seed=1)
    b = build_loader(tmp_path, "train", "dali", batch_size=2, num_workers=2, image_size=40, seed=1)
    xa, xb = next(iter(a))[0], next(iter(b))[0]
    assert torch.equal(xa, xb)
    a.set_epoch(1)
    assert not torch.equal(next(iter(a))[0], xa)


def test_dtypes_and_channels_last(tree):
    kw = dict(batch_size=4, num_workers=2, image_size=48)
    base = next(iter(build_loader(tree, "val", "dali", **kw)))[0]
    for dtype, tol in ((torch.float16, 2e-2), (torch.bfloat16, 5e-2), (torch.float32, 1e-6)):
        for cl in (False, True):
            x, y = next(
                iter(build_loader(tree, "val", "dali", dtype=dtype, channels_last=cl, **kw))
            )
            assert x.dtype == dtype and x.shape == (4, 3, 48, 48) and y.dtype == torch.int64
            fmt = torch.channels_last if cl else torch.contiguous_format
            assert x.is_contiguous(memory_format=fmt)
            torch.testing.assert_close(x.float(), base, atol=tol, rtol=0)


def test_shared_cifar10_labels_and_cifar_recipe():
    if not CIFAR10_ROOT.is_dir():
        pytest.skip(f"{CIFAR10_ROOT} not present")
    tl, dl = both(CIFAR10_ROOT, "test", image_size=32, recipe="cifar", batch_size=32, subset=96)
    t, d = collect(tl), collect(dl)
    ref = dict(ImageFolder(str(CIFAR10_ROOT / "test")).samples)
    assert d[1].tolist() == [ref[dl.files.paths[i]] for i in d[2].tolist()]
    torch.testing.assert_close(d[0], t[0], atol=1e-5, rtol=0)  # no resize: the same pixels

    dl = build_loader(
        CIFAR10_ROOT,
        "train",
        "dali",
        image_size=32,
        recipe="cifar",
        batch_size=16,
        subset=16,
        num_workers=2,
        return_index=True,
    )
    x, _, idx = next(iter(dl))
    mean = torch.tensor(CIFAR10_MEAN).view(3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(3, 1, 1)
    offsets = set()
    for k in range(16):
        raw = T.functional.pil_to_tensor(pil_loader(dl.files.paths[idx[k]]))
        padded = torch.nn.functional.pad(raw.float() / 255, (4, 4, 4, 4))
        out = x[k] * std + mean
        hits = [
            (i, j)
            for i in range(9)
            for j in range(9)
            for c in (padded[:, i : i + 32, j : j + 32], padded[:, i : i + 32, j : j + 32].flip(-1))
            if torch.allclose(out, c, atol=1e-5)
        ]
        assert hits, f"DALI cifar train image {k} is no padded crop of its file"
        offsets.add(hits[0])
    assert len(offsets) > 1


def test_dali_argument_errors(tree):
    with pytest.raises(ValueError, match="needs a CUDA device"):
        build_loader(tree, "val", "dali", decode_device="mixed")
    with pytest.raises(ValueError, match="dali_ops must be one of"):
        build_loader(tree, "val", "dali", dali_ops="pillow")
    with pytest.raises(ValueError, match="needs the imagenet recipe on a CPU pipeline"):
        build_loader(tree, "val", "dali", dali_ops="fastscarlet", recipe="cifar", image_size=32)


def test_set_start_batch_resumes_with_the_same_samples(tree):
    loader = build_loader(
        tree, "train", "dali", batch_size=2, num_workers=2, image_size=24, seed=4, return_index=True
    )
    loader.set_epoch(2)
    full = [b[2] for b in loader]
    loader.set_start_batch(5)
    resumed = [b[2] for b in loader]
    assert len(resumed) == len(full) - 5
    assert all(torch.equal(a, b) for a, b in zip(full[5:], resumed))


def _body_corrupt_tree(root: Path, good: int, corrupt: int) -> Path:
    """``good`` JPEGs, then (by name) ``corrupt`` files with a JPEG header and end marker around
    bytes no decoder parses: the header check passes them, DALI's decoder fails on them."""
    d = root / "val" / "a"
    d.mkdir(parents=True)
    for i in range(good):
        save(smooth_image(48, 64, i), d / f"g{i}.jpg")
    for i in range(corrupt):
        (d / f"x{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9")
    return root


@pytest.mark.parametrize(
    "batch_size, good, corrupt", [(2, 2, 2), (1, 2, 2), (1, 0, 2), (1, 0, 5), (2, 1, 3)]
)
def test_a_batch_of_only_undecodable_files_is_skipped_and_counted_as_torch(
    tmp_path, batch_size, good, corrupt
):
    root = _body_corrupt_tree(tmp_path, good, corrupt)
    torch_loader, dali_loader = both(root, "val", batch_size=batch_size, image_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        delivered = {
            name: [b[2].tolist() for b in loader]
            for name, loader in (("torch", torch_loader), ("dali", dali_loader))
        }
    assert delivered["dali"] == delivered["torch"]
    assert sum(map(len, delivered["dali"])) == good
    expected = {str(root / "val" / "a" / f"x{i}.jpg") for i in range(corrupt)}
    assert {s.path for s in dali_loader.skipped} == expected
    assert {s.path for s in torch_loader.skipped} == expected
