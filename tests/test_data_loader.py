"""build_loader with the torch and synthetic backends, against torchvision's ImageFolder + transforms."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import CIFAR10_ROOT, make_clean_tree, make_messy_tree
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import pil_loader

from fastscarlet.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_loader,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_clean_tree(tmp_path_factory.mktemp("clean"), per_class=5)


def collect(loader):
    """All batches of one epoch, concatenated: images, labels, indices."""
    xs, ys, idx = zip(*loader)
    return torch.cat(xs), torch.cat(ys), torch.cat(idx)


def test_eval_batches_equal_torchvision_imagefolder(tree):
    """Resize(256) -> CenterCrop(224) -> ToTensor -> Normalize (papers.md section 4), on ImageFolder."""
    loader = build_loader(tree, "val", "torch", batch_size=4, num_workers=0, return_index=True)
    ref = ImageFolder(
        str(tree / "val"),
        transform=T.Compose(
            [
                T.Resize(256),
                T.CenterCrop(224),
                T.ToTensor(),
                T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        ),
    )
    images, labels, indices = collect(loader)
    assert indices.tolist() == list(range(len(ref)))  # eval: every image once, in order
    assert loader.classes == ref.classes
    for i in range(len(ref)):
        x, y = ref[i]
        assert labels[i].item() == y
        torch.testing.assert_close(images[i], x, atol=1e-5, rtol=0)


def test_every_image_once_per_epoch_across_ranks(tree):
    seen = []
    for rank in range(3):
        loader = build_loader(
            tree,
            "val",
            "torch",
            batch_size=4,
            num_workers=0,
            rank=rank,
            world_size=3,
            image_size=32,
            return_index=True,
        )
        _, _, idx = collect(loader)
        assert len(loader) == -(-len(idx) // 4)
        seen += idx.tolist()
    assert sorted(seen) == list(range(15))


def test_train_epochs_reshuffle_deterministically_and_pad_for_ddp(tree):
    def run(epoch, rank=0, world=1, workers=0):
        loader = build_loader(
            tree,
            "train",
            "torch",
            batch_size=4,
            num_workers=workers,
            image_size=48,
            rank=rank,
            world_size=world,
            seed=7,
            return_index=True,
            drop_last=False,
        )
        loader.set_epoch(epoch)
        return collect(loader)

    a, b = run(1), run(1)
    assert torch.equal(a[2], b[2]) and torch.equal(a[0], b[0])  # same epoch: same order, pixels
    c = run(2)
    assert sorted(c[2].tolist()) == list(range(15)) and not torch.equal(a[2], c[2])
    # The augmentation depends on (seed, epoch, index), not on which worker decodes the sample.
    d = run(1, workers=2)
    assert torch.equal(a[2], d[2]) and torch.equal(a[0], d[0])
    # DDP training: 15 images over 2 ranks -> 8 each, one image read twice.
    r0, r1 = run(1, 0, 2), run(1, 1, 2)
    assert len(r0[2]) == len(r1[2]) == 8
    assert set(r0[2].tolist()) | set(r1[2].tolist()) == set(range(15))


def test_len_and_drop_last(tree):
    loader = build_loader(tree, "train", "torch", batch_size=4, num_workers=0, image_size=32)
    assert loader.drop_last and len(loader) == 15 // 4
    assert sum(1 for _ in loader) == len(loader)
    assert all(len(y) == 4 for _, y in loader)
    ev = build_loader(tree, "val", "torch", batch_size=4, num_workers=0, image_size=32)
    assert not ev.drop_last and len(ev) == 4 and [len(y) for _, y in ev] == [4, 4, 4, 3]


def test_train_crop_of_a_square_image_at_full_scale_is_the_resized_image(tmp_path):
    """With crop_scale=(1, 1) the random resized crop keeps the whole (square) image."""
    from data_fixtures import save, smooth_image

    save(smooth_image(96, 96, 3), tmp_path / "train" / "a" / "x.png", fmt="PNG")
    loader = build_loader(
        tmp_path,
        "train",
        "torch",
        batch_size=1,
        num_workers=0,
        image_size=40,
        crop_scale=(1.0, 1.0),
        drop_last=False,
    )
    ref = T.Compose([T.Resize((40, 40)), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    x = ref(ImageFolder(str(tmp_path / "train"))[0][0])
    flips = set()
    for epoch in range(8):
        loader.set_epoch(epoch)
        ((img, _),) = list(loader)
        same, mirrored = (
            torch.allclose(img[0], x, atol=1e-5),
            torch.allclose(img[0], x.flip(-1), atol=1e-5),
        )
        assert same or mirrored
        flips.add(mirrored)
    assert flips == {True, False}  # both orientations occur over 8 epochs (p = 1 - 2 / 2^8)


def test_cifar_recipe_on_shared_cifar10():
    """Eval: the image itself, normalised; train: a padded 32x32 crop, maybe mirrored."""
    if not CIFAR10_ROOT.is_dir():
        pytest.skip(f"{CIFAR10_ROOT} not present")
    kw = dict(batch_size=16, image_size=32, recipe="cifar", num_workers=0, return_index=True)
    ev = build_loader(CIFAR10_ROOT, "val", "torch", subset=48, **kw)  # val -> test/
    assert ev.files.root.endswith("test")
    ref = ImageFolder(str(CIFAR10_ROOT / "test"))
    norm = T.Compose([T.ToTensor(), T.Normalize(CIFAR10_MEAN, CIFAR10_STD)])
    images, labels, idx = collect(ev)
    by_path = {p: i for i, (p, _) in enumerate(ref.samples)}
    for k in range(len(idx)):
        j = by_path[ev.files.paths[idx[k]]]
        x, y = ref[j]
        assert labels[k].item() == y
        torch.testing.assert_close(images[k], norm(x), atol=1e-5, rtol=0)

    tr = build_loader(CIFAR10_ROOT, "train", "torch", subset=16, **kw)
    images, labels, idx = collect(tr)
    mean = torch.tensor(CIFAR10_MEAN).view(3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(3, 1, 1)
    for k in range(len(idx)):
        raw = T.functional.pil_to_tensor(pil_loader(tr.files.paths[idx[k]]))
        padded = torch.nn.functional.pad(raw.float() / 255, (4, 4, 4, 4))
        out = images[k] * std + mean
        found = any(
            torch.allclose(out, cand, atol=1e-5)
            for i in range(9)
            for j in range(9)
            for cand in (
                padded[:, i : i + 32, j : j + 32],
                padded[:, i : i + 32, j : j + 32].flip(-1),
            )
        )
        assert found, f"train image {k} is no padded crop of its file"


def test_corrupt_files_found_at_decode_time_are_skipped_and_reported(tmp_path):
    kinds = make_messy_tree(tmp_path / "val")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loader = build_loader(
            tmp_path,
            "val",
            "torch",
            batch_size=4,
            num_workers=2,
            image_size=32,
            verify="none",
            return_index=True,
        )
        images, labels, idx = collect(loader)
    # PIL reads the GIF named .jpg; the 4 others fail and are dropped from their batches.
    failing = {str(p) for p in kinds["bad"] if not p.name.startswith("gif")}
    assert {s.path for s in loader.skipped} == failing and loader.num_skipped == 4
    assert len(idx) == len(loader.files) - 4 and images.shape == (len(idx), 3, 32, 32)
    assert any("failed to decode" in str(w.message) for w in caught)
    ref = ImageFolder(str(tmp_path / "val"), allow_empty=True)
    assert labels.tolist() == [ref.samples[i][1] for i in idx.tolist()]


def test_dtype_channels_last_and_bad_arguments(tree):
    loader = build_loader(
        tree,
        "val",
        "torch",
        batch_size=2,
        num_workers=0,
        image_size=32,
        dtype=torch.bfloat16,
        channels_last=True,
    )
    x, y = next(iter(loader))
    assert x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)
    assert y.dtype == torch.int64 and x.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="backend"):
        build_loader(tree, "val", "jpeg")
    with pytest.raises(ValueError, match="split"):
        build_loader(tree, "valid")
    with pytest.raises(ValueError, match="recipe"):
        build_loader(tree, "val", recipe="coco")
    with pytest.raises(ValueError, match="batch_size"):
        build_loader(tree, "val", batch_size=0)
    with pytest.raises(ValueError, match="rank"):
        build_loader(tree, "val", rank=2, world_size=2)
    with pytest.raises(ValueError, match="dtype"):
        build_loader(tree, "val", dtype=torch.int8)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        build_loader(tree / "nope", "val")
    with pytest.raises(ValueError, match="needs a data root"):
        build_loader(None, "val", "torch")


def test_empty_class_keeps_labels_aligned(tmp_path):
    make_messy_tree(tmp_path / "train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loader = build_loader(
            tmp_path,
            "train",
            "torch",
            batch_size=3,
            num_workers=0,
            image_size=16,
            drop_last=False,
            return_index=True,
        )
    _, labels, idx = collect(loader)
    ref = ImageFolder(str(tmp_path / "train"), allow_empty=True)
    assert loader.classes == ref.classes and 2 not in labels.tolist()  # n03_empty has label 2
    ref_label = dict(ref.samples)
    assert labels.tolist() == [ref_label[loader.files.paths[i]] for i in idx.tolist()]


def test_synthetic_backend_has_the_real_loaders_shape(tree):
    s = build_loader(
        None,
        "train",
        "synthetic",
        batch_size=8,
        image_size=32,
        num_classes=10,
        num_images=100,
        channels_last=True,
        dtype=torch.float16,
    )
    assert len(s) == 100 // 8 and s.num_classes == 10 and s.num_skipped == 0
    batches = list(s)
    assert len(batches) == len(s)
    x, y = batches[0]
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float16
    assert x.is_contiguous(memory_format=torch.channels_last) and y.max() < 10
    s.set_epoch(1)
    assert not torch.equal(next(iter(s))[0], x)
    # With a folder, the synthetic loader counts it: same len and classes as the real one.
    real = build_loader(tree, "train", "torch", batch_size=4, num_workers=0)
    fake = build_loader(tree, "train", "synthetic", batch_size=4)
    assert len(fake) == len(real) and fake.classes == real.classes
    imagenet = build_loader(None, "val", "synthetic", batch_size=1000)
    assert len(imagenet) == 50 and imagenet.num_classes == 1000


def test_subset_is_seeded_and_sorted(tree):
    a = build_loader(tree, "train", "torch", subset=6, seed=1, num_workers=0)
    b = build_loader(tree, "train", "torch", subset=6, seed=1, num_workers=0)
    c = build_loader(tree, "train", "torch", subset=6, seed=2, num_workers=0)
    assert a.files.paths == b.files.paths and a.files.paths != c.files.paths
    assert len(a.files) == 6 and a.files.paths == sorted(a.files.paths)


def test_import_and_torch_backend_work_without_dali(tree):
    """With nvidia.dali unimportable, `dali` names the package to install and `torch` works."""
    code = f"""
import sys
sys.modules["nvidia.dali"] = None  # makes `import nvidia.dali` raise ImportError
import fastscarlet.data as data
loader = data.build_loader({str(tree)!r}, "val", "torch", batch_size=5, num_workers=0, image_size=16)
x, y = next(iter(loader))
assert x.shape == (5, 3, 16, 16), x.shape
try:
    data.build_loader({str(tree)!r}, "val", "dali")
except RuntimeError as exc:
    assert "pip install nvidia-dali-cuda130" in str(exc), exc
    print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_labels_match_imagefolder_after_shuffling(tree):
    loader = build_loader(
        tree,
        "train",
        "torch",
        batch_size=4,
        num_workers=0,
        image_size=16,
        return_index=True,
        drop_last=False,
    )
    _, labels, idx = collect(loader)
    ref = ImageFolder(str(tree / "train"))
    assert not np.array_equal(idx.numpy(), np.arange(len(idx)))  # shuffled
    assert labels.tolist() == [ref.targets[i] for i in idx.tolist()]


@pytest.mark.parametrize("backend", ["torch", "synthetic"])
def test_set_start_batch_resumes_the_epoch(tree, backend):
    loader = build_loader(
        tree,
        "train",
        backend,
        batch_size=2,
        num_workers=0,
        image_size=24,
        seed=4,
        return_index=True,
    )
    loader.set_epoch(3)
    full = list(loader)
    loader.set_start_batch(4)
    resumed = list(loader)
    assert len(full) == len(loader) == 7 and len(resumed) == 3
    for (xa, ya, ia), (xb, yb, ib) in zip(full[4:], resumed):
        assert torch.equal(ia, ib) and torch.equal(ya, yb)
        if backend == "torch":
            assert torch.equal(xa, xb)  # augmentations depend on (seed, epoch, index) only
    assert len(list(loader)) == 7  # only one iteration starts late
    with pytest.raises(ValueError, match="start batch"):
        loader.set_start_batch(8)
