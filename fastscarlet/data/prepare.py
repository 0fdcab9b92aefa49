"""Dataset preparation: ImageFolder trees from the forms the datasets ship in.

- :func:`sort_imagenet_val`: the 50,000 flat ``ILSVRC2012_val_*.JPEG`` files into ``<wnid>/``
  folders, from a labels file. The authors shipped a 51k-line shell script of ``mkdir``/``mv`` for
  this (``preprocess_val_dataset.sh``); that script is itself one of the accepted labels files.
- :func:`prepare_fashion_mnist`: the IDX files of Debian's ``dataset-fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist/*-ubyte.gz``) into ``train/`` and ``test/`` JPEG trees.
- :func:`prepare_cifar10`: the CIFAR-10 python (``cifar-10-batches-py``) or binary
  (``cifar-10-batches-bin``) batches into ``train/`` and ``test/`` JPEG trees.

Class folders are named so that their sorted order is the dataset's label order (ImageFolder sorts
them): CIFAR-10's names already sort that way; Fashion-MNIST's get their label as a prefix
(``0_t-shirt_top`` ... ``9_ankle_boot``).
"""

from __future__ import annotations

import gzip
import os
import pickle
import re
import shutil
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "t-shirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
IMAGENET_VAL_IMAGES = 50_000
_WNID = re.compile(r"^n\d{8}$")
_SAFE_NAME = re.compile(r"^[\w][\w.+-]*$")  # a single path component, no separators, no '..'


# -- writing image trees -----------------------------------------------------------------------
def _check_out_dir(out: Path, splits: tuple[str, ...], force: bool) -> None:
    for split in splits:
        target = out / split
        if target.is_dir() and any(target.iterdir()):
            if not force:
                raise FileExistsError(
                    f"{target} already holds files; pass force=True (--force) to replace it"
                )
            shutil.rmtree(target)


def write_image_tree(
    out: Path,
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    classes: tuple[str, ...],
    *,
    fmt: str = "jpeg",
    quality: int = 95,
) -> Counter:
    """Write ``images`` (uint8 ``(N, H, W)`` or ``(N, H, W, 3)``) as ``out/split/<class>/<i>.jpg``.

    Returns the number of images written per class name.
    """
    from PIL import Image

    if fmt not in ("jpeg", "png"):
        raise ValueError(f"format must be 'jpeg' or 'png', got {fmt!r}")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
        raise ValueError(
            f"labels must lie in [0, {len(classes)}), got {labels.min()}..{labels.max()}"
        )
    ext = ".jpg" if fmt == "jpeg" else ".png"
    kwargs = {"quality": quality} if fmt == "jpeg" else {}
    for name in classes:
        (out / split / name).mkdir(parents=True, exist_ok=True)
    width = len(str(max(len(images) - 1, 0)))
    counts: Counter = Counter()
    for i, (image, label) in enumerate(zip(images, labels)):
        name = classes[int(label)]
        Image.fromarray(image).save(out / split / name / f"{i:0{width}d}{ext}", **kwargs)
        counts[name] += 1
    return counts


# -- Fashion-MNIST (IDX files) -----------------------------------------------------------------
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (the MNIST format; gzip-compressed when the name ends in ``.gz``) as an array.

    Layout: two zero bytes, a type byte (0x08 = uint8), a byte with the number of dimensions, the
    dimensions as big-endian uint32, then the data in C order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file (starts with {data[:4]!r})")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[data[2]])
    body = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(
            f"{path}: header says {dims} = {int(np.prod(dims))} values, found {body.size}"
        )
    return body.reshape(dims)


def _find_idx(src: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (src / name).is_file():
            return src / name
    raise FileNotFoundError(
        f"{src / (stem + '.gz')} not found; install Debian's dataset-fashion-mnist package "
        f"(apt-get install dataset-fashion-mnist) or pass the folder holding {stem}[.gz]"
    )


def prepare_fashion_mnist(
    src: str | os.PathLike = FASHION_MNIST_DIR,
    out: str | os.PathLike = "fashion-mnist",
    *,
    fmt: str = "jpeg",
    quality: int = 95,
    force: bool = False,
) -> dict[str, Counter]:
    """``out/{train,test}/<label>_<name>/<i>.jpg`` from the four Fashion-MNIST IDX files in ``src``.

    Images are 28x28 grayscale; the loaders turn them into RGB as PIL's ``convert`` does.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise FileNotFoundError(
            f"Fashion-MNIST folder {src} does not exist; install Debian's dataset-fashion-mnist "
            f"package (apt-get install dataset-fashion-mnist) or pass --src"
        )
    classes = tuple(f"{i}_{name}" for i, name in enumerate(FASHION_MNIST_CLASSES))
    plan = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_find_idx(src, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find_idx(src, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{split}: expected images (N, 28, 28) and labels (N,), got {images.shape} and "
                f"{labels.shape}"
            )
        plan[split] = (images, labels.astype(np.int64))
    _check_out_dir(out, tuple(plan), force)
    return {
        split: write_image_tree(out, split, x, y, classes, fmt=fmt, quality=quality)
        for split, (x, y) in plan.items()
    }


# -- CIFAR-10 (python or binary batches) -------------------------------------------------------
class _CifarUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR-10 python batches and nothing else.

    They hold dicts of bytes, lists and numpy arrays; a pickle can run arbitrary code, so only the
    globals that rebuild numpy arrays are allowed.
    """

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"CIFAR-10 batch refers to {module}.{name}; refusing to load")


def _load_cifar_pickle(path: Path) -> dict:
    with open(path, "rb") as f:
        batch = _CifarUnpickler(f, encoding="bytes").load()
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def read_cifar10(src: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images, labels), "test": ...}``, images uint8 ``(N, 32, 32, 3)``.

    ``src`` is a ``cifar-10-batches-py`` folder (``data_batch_1..5``, ``test_batch``) or a
    ``cifar-10-batches-bin`` folder (``data_batch_1..5.bin``, ``test_batch.bin``: records of one
    label byte and 3072 pixel bytes, the red plane, then green, then blue).
    """
    src = Path(src)
    names = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    out = {}
    if (src / "data_batch_1.bin").is_file():
        for split, stems in names.items():
            parts = []
            for stem in stems:
                raw = np.fromfile(src / f"{stem}.bin", dtype=np.uint8)
                if raw.size % 3073:
                    raise ValueError(f"{src / stem}.bin is not a whole number of 3073-byte records")
                parts.append(raw.reshape(-1, 3073))
            rec = np.concatenate(parts)
            images = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            out[split] = (np.ascontiguousarray(images), rec[:, 0].astype(np.int64))
        return out
    if (src / "data_batch_1").is_file():
        for split, stems in names.items():
            batches = [_load_cifar_pickle(src / stem) for stem in stems]
            data = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
            labels = np.concatenate([np.asarray(b["labels"], dtype=np.int64) for b in batches])
            images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            out[split] = (np.ascontiguousarray(images), labels)
        return out
    raise FileNotFoundError(
        f"{src} holds neither cifar-10-batches-py (data_batch_1, ...) nor cifar-10-batches-bin "
        f"(data_batch_1.bin, ...) files"
    )


def prepare_cifar10(
    src: str | os.PathLike,
    out: str | os.PathLike = "cifar10",
    *,
    fmt: str = "jpeg",
    quality: int = 95,
    force: bool = False,
) -> dict[str, Counter]:
    """``out/{train,test}/<class>/<i>.jpg`` from the CIFAR-10 batches in ``src``."""
    data = read_cifar10(src)
    out = Path(out)
    _check_out_dir(out, tuple(data), force)
    return {
        split: write_image_tree(out, split, x, y, CIFAR10_CLASSES, fmt=fmt, quality=quality)
        for split, (x, y) in data.items()
    }


# -- ImageNet validation -----------------------------------------------------------------------
def _meta_ids_to_wnids(meta: Path) -> dict[int, str]:
    """ILSVRC2012_ID (1..1000) -> wnid from the devkit's ``data/meta.mat`` (needs scipy)."""
    try:
        from scipy.io import loadmat
    except ImportError as exc:
        raise RuntimeError("reading meta.mat needs scipy: pip install scipy") from exc
    synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
    leaves = [s for s in synsets if int(s["num_children"]) == 0]
    return {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in leaves}


def _read_synsets(path: Path) -> list[str]:
    """wnids, one per line (``LOC_synset_mapping.txt`` and ``synsets.txt`` forms): line i = label i."""
    wnids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    bad = [w for w in wnids if not _WNID.match(w)]
    if bad:
        raise ValueError(f"{path}: not wnids (nXXXXXXXX): {bad[:3]}")
    return wnids


def read_imagenet_val_labels(
    labels: str | os.PathLike,
    *,
    synsets: str | os.PathLike | None = None,
    meta: str | os.PathLike | None = None,
) -> dict[str, str]:
    """``{file name: wnid}`` from any of the usual ImageNet validation label files.

    Recognised, by content:

    - Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``; the first word is the wnid);
    - the authors' ``preprocess_val_dataset.sh`` (``mv ILSVRC2012_val_00000001.JPEG n01751748/``);
    - lines ``<file> <wnid>`` (space, tab or comma);
    - lines ``<file> <label>`` with integer labels: ``synsets`` lists the wnid of label 0, 1, ...
      (e.g. ``LOC_synset_mapping.txt``, or caffe's ``synsets.txt`` for its ``val.txt``);
    - the devkit's ``ILSVRC2012_validation_ground_truth.txt`` (one ILSVRC2012_ID per line, line i
      for ``ILSVRC2012_val_{i:08d}.JPEG``) with the devkit's ``meta`` (``data/meta.mat``) or a
      ``synsets`` file in ILSVRC2012_ID order.
    """
    path = Path(labels)
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise ValueError(f"labels file {path} is empty")
    mapping: dict[str, str] = {}
    if lines[0].replace(" ", "").lower().startswith("imageid,predictionstring"):
        for ln in lines[1:]:
            image_id, prediction = ln.split(",", 1)
            mapping[image_id.strip() + ".JPEG"] = prediction.split()[0]
    elif any(ln.startswith("mv ") for ln in lines):
        for ln in lines:
            parts = ln.split()
            if parts[0] == "mv" and len(parts) == 3:
                mapping[parts[1]] = parts[2].rstrip("/")
    elif all(ln.isdigit() for ln in lines):
        if meta is not None:
            id_to_wnid = _meta_ids_to_wnids(Path(meta))
        elif synsets is not None:
            id_to_wnid = {i + 1: w for i, w in enumerate(_read_synsets(Path(synsets)))}
        else:
            raise ValueError(
                f"{path} holds bare ILSVRC2012_IDs (the devkit ground truth): pass meta= "
                f"(--meta, the devkit's data/meta.mat) or synsets= (--synsets) to name the classes"
            )
        for i, ln in enumerate(lines, start=1):
            if int(ln) not in id_to_wnid:
                raise ValueError(f"{path}, line {i}: ILSVRC2012_ID {ln} is not a leaf synset")
            mapping[f"ILSVRC2012_val_{i:08d}.JPEG"] = id_to_wnid[int(ln)]
    else:
        wnids = _read_synsets(Path(synsets)) if synsets is not None else None
        for i, ln in enumerate(lines, start=1):
            parts = re.split(r"[\s,]+", ln)
            if len(parts) < 2:
                raise ValueError(f"{path}, line {i}: expected '<file> <wnid or label>', got {ln!r}")
            name, cls = parts[0], parts[1]
            if cls.isdigit():
                if wnids is None:
                    raise ValueError(
                        f"{path} has integer labels: pass synsets= (--synsets) listing the wnid of "
                        f"each label, one per line"
                    )
                if int(cls) >= len(wnids):
                    raise ValueError(f"{path}, line {i}: label {cls} >= {len(wnids)} synsets")
                cls = wnids[int(cls)]
            mapping[name] = cls
    for name, cls in mapping.items():
        if not _SAFE_NAME.match(name) or not _SAFE_NAME.match(cls) or ".." in name + cls:
            raise ValueError(f"{path}: unsafe file or class name {name!r} -> {cls!r}")
    return mapping


@dataclass
class SortReport:
    """What :func:`sort_imagenet_val` did (or, for a dry run, would do)."""

    placed: int = 0  # files moved/copied/linked into their class folder
    already: int = 0  # files already in their class folder (a second run is a no-op)
    unlabeled: list[str] = field(default_factory=list)  # images in val_dir without a label
    missing: list[str] = field(default_factory=list)  # labels whose image is nowhere
    per_class: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        n = sum(self.per_class.values())
        sizes = sorted(set(self.per_class.values()))
        lines = [
            f"{n} images in {len(self.per_class)} classes ({self.placed} placed, "
            f"{self.already} already in place); images per class: "
            f"{sizes[0] if len(sizes) == 1 else f'{sizes[0]}..{sizes[-1]}'}"
        ]
        if self.unlabeled:
            lines.append(
                f"{len(self.unlabeled)} images without a label left in place, e.g. "
                f"{', '.join(self.unlabeled[:3])}"
            )
        if self.missing:
            lines.append(
                f"{len(self.missing)} labelled images not found, e.g. {', '.join(self.missing[:3])}"
            )
        return "\n".join(lines)


def sort_imagenet_val(
    val_dir: str | os.PathLike,
    labels: dict[str, str],
    out: str | os.PathLike | None = None,
    *,
    mode: str = "move",
    dry_run: bool = False,
    log: Callable[[str], None] | None = None,
) -> SortReport:
    """Put each labelled image of ``val_dir`` into ``out/<wnid>/`` (``out`` defaults to ``val_dir``).

    ``mode``: ``"move"`` (what the authors' script does), ``"copy"`` or ``"symlink"``. Running it
    again finds the images in place and does nothing. ``dry_run`` only reports.
    """
    if mode not in ("move", "copy", "symlink"):
        raise ValueError(f"mode must be 'move', 'copy' or 'symlink', got {mode!r}")
    val_dir = Path(val_dir)
    if not val_dir.is_dir():
        raise FileNotFoundError(f"ImageNet validation folder {val_dir} does not exist")
    out = Path(out) if out is not None else val_dir
    if not labels:
        raise ValueError("no labels given")
    report = SortReport()
    flat = {p.name for p in val_dir.iterdir() if p.is_file()}
    for name in sorted(labels):
        wnid = labels[name]
        target = out / wnid / name
        if target.exists() or target.is_symlink():
            report.already += 1
            report.per_class[wnid] += 1
        elif name in flat:
            if not dry_run:
                target.parent.mkdir(parents=True, exist_ok=True)
                source = val_dir / name
                if mode == "move":
                    os.replace(source, target)
                elif mode == "copy":
                    shutil.copy2(source, target)
                else:
                    target.symlink_to(source.resolve())
            report.placed += 1
            report.per_class[wnid] += 1
        else:
            report.missing.append(name)
    labelled = set(labels)
    report.unlabeled = sorted(
        n for n in flat if n not in labelled and n.lower().endswith((".jpeg", ".jpg", ".png"))
    )
    if log is not None:
        log(report.summary())
    return report
