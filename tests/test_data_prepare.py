"""Preparation commands: IDX and CIFAR batch readers, ImageNet val sorting, the CLI."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import jpeg_bytes, smooth_image
from PIL import Image
from torchvision.datasets import ImageFolder

from fastscarlet.cli import main as cli_main
from fastscarlet.data import build_loader
from fastscarlet.data.prepare import (
    CIFAR10_CLASSES,
    FASHION_MNIST_DIR,
    prepare_cifar10,
    prepare_fashion_mnist,
    read_cifar10,
    read_idx,
    read_imagenet_val_labels,
    sort_imagenet_val,
)


# -- IDX / Fashion-MNIST -----------------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray) -> Path:
    """IDX by hand (uint8): 0, 0, type 0x08, ndim, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def fake_fashion_mnist(src: Path, n_train: int = 30, n_test: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    src.mkdir(parents=True, exist_ok=True)
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        rng.shuffle(labels)
        write_idx(src / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(src / f"{prefix}-labels-idx1-ubyte.gz", labels)
        data[prefix] = (images, labels)
    return data


def test_read_idx_round_trip_and_errors(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "a.gz", a)), a)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "a", a)), a)
    (tmp_path / "bad").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x01\x02")
    with pytest.raises(ValueError, match="found 2"):
        read_idx(tmp_path / "short")


def test_prepare_fashion_mnist_labels_and_pixels(tmp_path):
    data = fake_fashion_mnist(tmp_path / "src")
    counts = prepare_fashion_mnist(tmp_path / "src", tmp_path / "out", fmt="png")
    assert sum(counts["train"].values()) == 30 and sum(counts["test"].values()) == 12
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ref = ImageFolder(str(tmp_path / "out" / split))
        assert ref.classes[0] == "0_t-shirt_top" and ref.classes[9] == "9_ankle_boot"
        images, labels = data[prefix]
        for path, label in ref.samples:
            i = int(Path(path).stem)
            assert label == labels[i]  # sorted folder order == Fashion-MNIST label order
            np.testing.assert_array_equal(np.asarray(Image.open(path)), images[i])
    with pytest.raises(FileExistsError, match="--force"):
        prepare_fashion_mnist(tmp_path / "src", tmp_path / "out")
    prepare_fashion_mnist(tmp_path / "src", tmp_path / "out", force=True)  # JPEG this time
    loader = build_loader(
        tmp_path / "out",
        "test",
        "torch",
        batch_size=4,
        image_size=28,
        recipe="cifar",
        num_workers=0,
    )
    x, _ = next(iter(loader))
    assert x.shape == (4, 3, 28, 28)  # grayscale JPEGs come out as RGB
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        prepare_fashion_mnist(tmp_path / "nowhere", tmp_path / "o2")


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_debian_fashion_mnist_files_read():
    labels = read_idx(FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    images = read_idx(FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    assert images.shape == (10_000, 28, 28) and labels.shape == (10_000,)
    assert np.bincount(labels).tolist() == [1000] * 10


# -- CIFAR-10 ----------------------------------------------------------------------------------
def fake_cifar(src: Path, kind: str, per_batch: int = 4, seed: int = 0):
    """Batches in the layout of cifar-10-batches-py or -bin; returns the images by split."""
    rng = np.random.default_rng(seed)
    src.mkdir(parents=True, exist_ok=True)
    out = {"train": [], "test": []}
    for stem in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch)
        planes = images.transpose(0, 3, 1, 2).reshape(per_batch, 3072)  # R plane, G plane, B plane
        if kind == "py":
            batch = {
                b"batch_label": stem.encode(),
                b"labels": labels.tolist(),
                b"data": planes,
                b"filenames": [f"{stem}_{i}.png".encode() for i in range(per_batch)],
            }
            (src / stem).write_bytes(pickle.dumps(batch, protocol=2))
        else:
            rec = np.concatenate([labels[:, None].astype(np.uint8), planes], axis=1)
            rec.tofile(src / f"{stem}.bin")
        out["test" if stem == "test_batch" else "train"].append((images, labels))
    return {
        k: (np.concatenate([a for a, _ in v]), np.concatenate([b for _, b in v]))
        for k, v in out.items()
    }


@pytest.mark.parametrize("kind", ["py", "bin"])
def test_prepare_cifar10_both_batch_formats(tmp_path, kind):
    expected = fake_cifar(tmp_path / "src", kind)
    data = read_cifar10(tmp_path / "src")
    for split in ("train", "test"):
        np.testing.assert_array_equal(data[split][0], expected[split][0])
        np.testing.assert_array_equal(data[split][1], expected[split][1])
    prepare_cifar10(tmp_path / "src", tmp_path / "out", fmt="png")
    ref = ImageFolder(str(tmp_path / "out" / "train"), allow_empty=True)
    assert tuple(ref.classes) == CIFAR10_CLASSES
    for path, label in ref.samples:
        i = int(Path(path).stem)
        assert label == expected["train"][1][i]
        np.testing.assert_array_equal(np.asarray(Image.open(path)), expected["train"][0][i])


def test_cifar_pickle_with_foreign_globals_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        read_cifar10(tmp_path)
    with pytest.raises(FileNotFoundError, match="cifar-10-batches"):
        read_cifar10(tmp_path / "empty_dir_that_is_missing")


# -- ImageNet validation -----------------------------------------------------------------------
WNIDS = ["n01440764", "n01443537", "n01484850"]  # sorted, as ImageFolder sorts them
TRUTH = [2, 0, 1, 1, 0, 2, 2]  # class of ILSVRC2012_val_{i+1:08d}.JPEG


def flat_val(d: Path) -> Path:
    d.mkdir(parents=True)
    for i in range(len(TRUTH)):
        (d / f"ILSVRC2012_val_{i + 1:08d}.JPEG").write_bytes(jpeg_bytes(smooth_image(40, 50, i)))
    return d


def name(i: int) -> str:
    return f"ILSVRC2012_val_{i + 1:08d}.JPEG"


def label_files(tmp: Path) -> dict[str, tuple[Path, dict]]:
    """The same labels in every accepted format -> (labels file, extra keyword arguments)."""
    tmp.mkdir(parents=True, exist_ok=True)
    files = {}
    csv = ["ImageId,PredictionString"] + [
        f"{name(i)[:-5]},{WNIDS[c]} 1 2 30 40 {WNIDS[c]} 5 6 7 8" for i, c in enumerate(TRUTH)
    ]
    (tmp / "LOC_val_solution.csv").write_text("\n".join(csv) + "\n")
    files["kaggle"] = (tmp / "LOC_val_solution.csv", {})
    script = ["#!/bin/sh"] + [f"mkdir -p {w}" for w in WNIDS]
    script += [f"mv {name(i)} {WNIDS[c]}/" for i, c in enumerate(TRUTH)]
    (tmp / "valprep.sh").write_text("\n".join(script) + "\n")
    files["script"] = (tmp / "valprep.sh", {})
    (tmp / "pairs.txt").write_text("".join(f"{name(i)}\t{WNIDS[c]}\n" for i, c in enumerate(TRUTH)))
    files["pairs"] = (tmp / "pairs.txt", {})
    (tmp / "synsets.txt").write_text("".join(f"{w} some words\n" for w in WNIDS))
    (tmp / "val.txt").write_text("".join(f"{name(i)} {c}\n" for i, c in enumerate(TRUTH)))
    files["caffe"] = (tmp / "val.txt", {"synsets": tmp / "synsets.txt"})
    # Devkit: ILSVRC2012_IDs are not the sorted order; here ID 1 -> WNIDS[2], 2 -> [0], 3 -> [1].
    id_of = {2: 1, 0: 2, 1: 3}
    (tmp / "gt.txt").write_text("".join(f"{id_of[c]}\n" for c in TRUTH))
    (tmp / "id_order.txt").write_text("".join(f"{WNIDS[k]}\n" for k in (2, 0, 1)))
    files["devkit+synsets"] = (tmp / "gt.txt", {"synsets": tmp / "id_order.txt"})
    try:
        from scipy.io import savemat
    except ImportError:
        return files
    fields = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    synsets = np.zeros((5, 1), dtype=fields)
    for row, (sid, wnid, kids) in enumerate(
        [
            (1, WNIDS[2], 0),
            (2, WNIDS[0], 0),
            (3, WNIDS[1], 0),
            (1001, "n00001740", 2),
            (1002, "n00002137", 3),
        ]
    ):
        synsets[row, 0] = (sid, wnid, "w", kids)
    savemat(str(tmp / "meta.mat"), {"synsets": synsets})
    files["devkit+meta"] = (tmp / "gt.txt", {"meta": tmp / "meta.mat"})
    return files


def test_every_labels_format_reads_the_same_mapping(tmp_path):
    truth = {name(i): WNIDS[c] for i, c in enumerate(TRUTH)}
    formats = label_files(tmp_path)
    assert {"kaggle", "script", "pairs", "caffe", "devkit+synsets"} <= set(formats)
    for kind, (path, kw) in formats.items():
        assert read_imagenet_val_labels(path, **kw) == truth, kind
    with pytest.raises(ValueError, match="--meta"):
        read_imagenet_val_labels(tmp_path / "gt.txt")
    with pytest.raises(ValueError, match="--synsets"):
        read_imagenet_val_labels(tmp_path / "val.txt")
    (tmp_path / "evil.txt").write_text("../../etc/passwd n01440764\n")
    with pytest.raises(ValueError, match="unsafe"):
        read_imagenet_val_labels(tmp_path / "evil.txt")


@pytest.mark.parametrize("mode", ["move", "copy", "symlink"])
def test_sort_imagenet_val_gives_imagefolder_labels(tmp_path, mode):
    val = flat_val(tmp_path / "val")
    labels = read_imagenet_val_labels(*label_files(tmp_path / "labels")["script"][:1])
    out = tmp_path / "sorted" if mode != "move" else None
    report = sort_imagenet_val(val, labels, out, mode=mode)
    assert report.placed == len(TRUTH) and not report.missing and not report.unlabeled
    ref = ImageFolder(str(out or val))
    assert ref.classes == WNIDS
    assert sorted((Path(p).name, t) for p, t in ref.samples) == [
        (name(i), c) for i, c in enumerate(TRUTH)
    ]
    assert (mode == "move") == (not any(val.glob("*.JPEG")))
    again = sort_imagenet_val(val, labels, out, mode=mode)  # a second run is a no-op
    assert again.placed == 0 and again.already == len(TRUTH) and not again.missing


def test_sort_imagenet_val_dry_run_and_report(tmp_path):
    val = flat_val(tmp_path / "val")
    labels = {name(i): WNIDS[c] for i, c in enumerate(TRUTH)}
    labels.pop(name(0))
    labels["ILSVRC2012_val_00000099.JPEG"] = WNIDS[0]
    report = sort_imagenet_val(val, labels, dry_run=True)
    assert report.placed == len(TRUTH) - 1
    assert report.unlabeled == [name(0)] and report.missing == ["ILSVRC2012_val_00000099.JPEG"]
    assert len(list(val.glob("*.JPEG"))) == len(TRUTH)  # nothing moved
    assert "1 images without a label" in report.summary()


def test_cli_prepare(tmp_path, capsys):
    val = flat_val(tmp_path / "val")
    labels_path, _ = label_files(tmp_path / "labels")["kaggle"]
    assert cli_main(["prepare", "imagenet-val", str(val), "--labels", str(labels_path)]) == 0
    assert f"{len(TRUTH)} images in 3 classes" in capsys.readouterr().out
    assert sorted(p.name for p in val.iterdir()) == WNIDS
    fake_cifar(tmp_path / "cifar-src", "bin", per_batch=2)
    assert (
        cli_main(
            [
                "prepare",
                "cifar10",
                "--src",
                str(tmp_path / "cifar-src"),
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 0
    )
    assert "train: 10 images" in capsys.readouterr().out
    assert (
        cli_main(
            [
                "prepare",
                "cifar10",
                "--src",
                str(tmp_path / "cifar-src"),
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 2
    )  # exists: one-line error, no traceback
    assert "--force" in capsys.readouterr().err
    fake_fashion_mnist(tmp_path / "fm")
    assert (
        cli_main(
            [
                "prepare",
                "fashion-mnist",
                "--src",
                str(tmp_path / "fm"),
                "--out",
                str(tmp_path / "f"),
                "--quality",
                "90",
            ]
        )
        == 0
    )
    assert (
        cli_main(
            [
                "prepare",
                "fashion-mnist",
                "--src",
                str(tmp_path / "none"),
                "--out",
                str(tmp_path / "g"),
            ]
        )
        == 2
    )
    assert "dataset-fashion-mnist" in capsys.readouterr().err
