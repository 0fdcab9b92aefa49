"""The shared file list against torchvision's ImageFolder, the file check, the epoch order, the crops."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import CIFAR10_ROOT, make_clean_tree, make_messy_tree, save, smooth_image
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS as TV_IMG_EXTENSIONS

from fastscarlet.data import IMG_EXTENSIONS, check_image, epoch_order, resolve_split
from fastscarlet.data.folder import scan_image_folder, sniff_format
from fastscarlet.data.transforms import random_resized_crop_box


def test_extensions_match_torchvision():
    assert tuple(sorted(IMG_EXTENSIONS)) == tuple(sorted(TV_IMG_EXTENSIONS))


def test_file_list_matches_imagefolder_on_messy_tree(tmp_path):
    make_messy_tree(tmp_path)
    with pytest.warns(UserWarning, match="n03_empty"):
        files = scan_image_folder(tmp_path, verify="none")
    ref = ImageFolder(str(tmp_path), allow_empty=True)
    assert files.classes == ref.classes
    assert list(zip(files.paths, files.labels)) == ref.samples
    assert files.empty_classes == ["n03_empty"]
    assert not any(p.endswith((".txt", ".db", "README")) for p in files.paths)


def test_checked_file_list_is_imagefolder_minus_the_bad_files(tmp_path):
    kinds = make_messy_tree(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        files = scan_image_folder(tmp_path)
    messages = [str(w.message) for w in caught]
    assert any("skipping 5 unreadable" in m for m in messages)
    assert any("n03_empty" in m for m in messages)
    ref = ImageFolder(str(tmp_path), allow_empty=True)
    bad = {str(p) for p in kinds["bad"]}
    assert files.classes == ref.classes  # labels stay aligned: classes are never dropped
    assert list(zip(files.paths, files.labels)) == [s for s in ref.samples if s[0] not in bad]
    assert {s.path for s in files.skipped} == bad
    assert {str(p) for p in kinds["good"]} == set(files.paths)


def test_file_list_matches_imagefolder_on_cifar10():
    if not CIFAR10_ROOT.is_dir():
        pytest.skip(f"{CIFAR10_ROOT} not present")
    files = scan_image_folder(CIFAR10_ROOT / "test", verify="none")
    ref = ImageFolder(str(CIFAR10_ROOT / "test"))
    assert files.classes == ref.classes and len(files) == 10_000
    assert list(zip(files.paths, files.labels)) == ref.samples


@pytest.mark.parametrize(
    "name, expect",
    [
        ("rgb.JPEG", None),
        ("gray.JPEG", None),
        ("cmyk.JPEG", None),
        ("png_inside.JPEG", None),
        ("truncated.JPEG", "truncated"),
        ("html.JPEG", "not an image"),
        ("empty.jpg", "empty file"),
        ("gif_inside.jpg", "not an image"),
        ("cut.png", "truncated"),
    ],
)
def test_check_image_reasons(tmp_path, name, expect):
    make_messy_tree(tmp_path)
    path = next(tmp_path.rglob(name))
    reason = check_image(str(path), "header")
    if expect is None:
        assert reason is None
        assert check_image(str(path), "decode") is None
    else:
        assert reason is not None and expect in reason


def test_jpeg_with_bytes_after_the_end_marker_is_accepted(tmp_path):
    path = save(smooth_image(64, 64, 0), tmp_path / "a.jpg")
    path.write_bytes(path.read_bytes() + b"\x00" * 1000)  # padding after EOI, seen in the wild
    assert check_image(str(path)) is None


def test_sniff_format():
    assert sniff_format(b"\xff\xd8\xff\xe0rest") == "jpeg"
    assert sniff_format(b"\x89PNG\r\n\x1a\nxxxx") == "png"
    assert sniff_format(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "webp"
    assert sniff_format(b"GIF89a") is None


def test_missing_and_empty_folders_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scan_image_folder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no class folders"):
        scan_image_folder(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match="no images in"):
        scan_image_folder(tmp_path)
    (tmp_path / "a" / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(FileNotFoundError, match="no readable images"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scan_image_folder(tmp_path)
    with pytest.raises(ValueError, match="verify"):
        scan_image_folder(tmp_path, verify="full")


def test_resolve_split_aliases_val_and_test(tmp_path):
    make_clean_tree(tmp_path, per_class=1)
    assert resolve_split(tmp_path, "test") == tmp_path / "val"
    assert resolve_split(tmp_path, "val") == tmp_path / "val"
    (tmp_path / "val").rename(tmp_path / "test")
    assert resolve_split(tmp_path, "val") == tmp_path / "test"
    with pytest.raises(FileNotFoundError, match=r"split 'holdout'.*found \['test', 'train'\]"):
        resolve_split(tmp_path, "holdout")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        resolve_split(tmp_path / "missing", "train")


# -- the epoch order -------------------------------------------------------------------------------
@pytest.mark.parametrize("n, world", [(10, 1), (10, 3), (7, 4), (3, 5)])
def test_padded_order_equals_distributed_sampler(n, world):
    from torch.utils.data import DistributedSampler

    for rank in range(world):
        ref = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False)
        ours = epoch_order(n, epoch=0, seed=0, shuffle=False, rank=rank, world_size=world, pad=True)
        assert ours.tolist() == list(ref)


@given(
    n=st.integers(1, 200),
    world=st.integers(1, 8),
    epoch=st.integers(0, 50),
    seed=st.integers(0, 2**31),
)
@settings(max_examples=60, deadline=None)
def test_unpadded_shards_partition_every_epoch(n, world, epoch, seed):
    shards = [
        epoch_order(n, epoch=epoch, seed=seed, shuffle=True, rank=r, world_size=world)
        for r in range(world)
    ]
    assert sorted(np.concatenate(shards).tolist()) == list(range(n))
    padded = [
        epoch_order(n, epoch=epoch, seed=seed, shuffle=True, rank=r, world_size=world, pad=True)
        for r in range(world)
    ]
    assert len({len(s) for s in padded}) == 1 and set(np.concatenate(padded)) == set(range(n))


def test_order_is_seeded_and_changes_with_the_epoch():
    a = epoch_order(1000, epoch=3, seed=5, shuffle=True)
    assert np.array_equal(a, epoch_order(1000, epoch=3, seed=5, shuffle=True))
    assert not np.array_equal(a, epoch_order(1000, epoch=4, seed=5, shuffle=True))
    assert not np.array_equal(a, epoch_order(1000, epoch=3, seed=6, shuffle=True))
    with pytest.raises(ValueError, match="rank"):
        epoch_order(10, epoch=0, seed=0, shuffle=False, rank=2, world_size=2)


# -- the random resized crop -----------------------------------------------------------------------
@given(
    h=st.integers(1, 600),
    w=st.integers(1, 600),
    lo=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=200, deadline=None)
def test_random_resized_crop_box_fits_and_respects_bounds(h, w, lo, seed):
    scale, ratio = (lo, 1.0), (3 / 4, 4 / 3)
    top, left, ch, cw = random_resized_crop_box(h, w, scale, ratio, np.random.default_rng(seed))
    assert min(top, left) >= 0 and min(ch, cw) > 0
    assert top + ch <= h and left + cw <= w


def test_random_resized_crop_box_distribution_matches_torchvision():
    """Area fractions and aspect ratios have the same distribution as torchvision's get_params."""
    from torchvision.transforms import RandomResizedCrop

    h, w, scale, ratio = 375, 500, (0.08, 1.0), (3 / 4, 4 / 3)
    rng = np.random.default_rng(0)
    ours = np.array([random_resized_crop_box(h, w, scale, ratio, rng) for _ in range(4000)])
    torch.manual_seed(0)
    image = torch.empty(3, h, w)
    ref = np.array([RandomResizedCrop.get_params(image, scale, ratio) for _ in range(4000)])
    for boxes in (ours, ref):
        assert (boxes[:, 0] + boxes[:, 2] <= h).all() and (boxes[:, 1] + boxes[:, 3] <= w).all()
    area_o, area_r = ours[:, 2] * ours[:, 3] / (h * w), ref[:, 2] * ref[:, 3] / (h * w)
    logr_o, logr_r = np.log(ours[:, 3] / ours[:, 2]), np.log(ref[:, 3] / ref[:, 2])
    # Two-sample Kolmogorov-Smirnov distance; at n=4000 the 99.9% critical value is about 0.044.
    for a, b in ((area_o, area_r), (logr_o, logr_r)):
        grid = np.sort(np.concatenate([a, b]))
        ks = np.abs(
            np.searchsorted(np.sort(a), grid, "right") / len(a)
            - np.searchsorted(np.sort(b), grid, "right") / len(b)
        ).max()
        assert ks < 0.044
    assert abs(area_o.mean() - area_r.mean()) < 0.02


def test_random_resized_crop_box_falls_back_to_a_center_crop():
    # A 10:1 strip admits no box with ratio in [3/4, 4/3] and area >= 90%: center crop at ratio 4/3.
    top, left, h, w = random_resized_crop_box(
        10, 100, (0.9, 1.0), (3 / 4, 4 / 3), np.random.default_rng(0)
    )
    assert (h, w) == (10, round(10 * 4 / 3)) and top == 0 and left == (100 - w) // 2
    assert math.isclose(w / h, 1.3, rel_tol=0.05)


def test_skipped_files_keep_paths_of_the_split(tmp_path):
    kinds = make_messy_tree(tmp_path / "train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        files = scan_image_folder(tmp_path / "train")
    assert all(Path(s.path).is_file() for s in files.skipped)
    assert len(files.skipped) == len(kinds["bad"])
