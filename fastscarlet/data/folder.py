"""The one file list that every backend reads: an ImageFolder tree scanned like torchvision does.

Layout: ``root/<split>/<class>/**/<image>``. The class list, the order of the files and the labels are
those of ``torchvision.datasets.ImageFolder(root/split, allow_empty=True)``, so a model trained with
either backend sees the same label for the same file, by construction:

- classes are the sorted names of the sub-folders of the split folder (empty ones included, so the
  label of every later class stays what torchvision gives it);
- files are found with a sorted ``os.walk`` of each class folder (symlinks followed) and kept when
  their lower-cased name ends in one of :data:`IMG_EXTENSIONS`; anything else is a stray file and
  is ignored, as torchvision ignores it.

On top of torchvision, :func:`scan_image_folder` checks each file's first and last bytes
(``verify="header"``) so that files no decoder can read (a truncated JPEG, an HTML error page saved
as ``.JPEG``, a GIF in disguise) are skipped and reported *before* an epoch starts, instead of
crashing a DALI pipeline in the middle of one. The content decides the format, not the name: the
PNG that ImageNet stores as ``n02105855_2933.JPEG`` is accepted.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# torchvision.datasets.folder.IMG_EXTENSIONS, typed in here so that the filter does not move with
# torchvision; tests/test_data_folder.py checks that the two agree.
IMG_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".ppm",
    ".bmp",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)

Verify = Literal["none", "header", "decode"]

# Formats that both PIL and DALI's decoders read, by their magic bytes. GIF is not among them (DALI
# cannot decode it), so a GIF behind an image name is skipped rather than crashing DALI.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"P5", "pnm"),
    (b"P6", "pnm"),
)
# A JPEG ends with the EOI marker FF D9 (a PNG with an IEND chunk). Encoders may append padding or metadata after it, so look
# for it in the last 2 KiB rather than in the last two bytes; 2 KiB covers the zero padding seen in
# ImageNet files. A file without it is *suspect*, then decoded in full to decide.
_JPEG_TAIL_BYTES = 2048


@dataclass(frozen=True)
class SkippedFile:
    """A file that a loader left out, and why (one line, for a report)."""

    path: str
    reason: str


@dataclass
class FileList:
    """The images of one split: ``paths[i]`` has class ``labels[i]``, the name ``classes[labels[i]]``.

    ``skipped`` lists the files that were left out by the scan (unreadable by the decoders);
    ``empty_classes`` the class folders without any image (they keep their label).
    """

    root: str
    classes: list[str]
    paths: list[str]
    labels: list[int]
    skipped: list[SkippedFile] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    def subset(self, indices: Sequence[int]) -> FileList:
        """A file list with only the samples at ``indices`` (same classes, same labels)."""
        return FileList(
            root=self.root,
            classes=list(self.classes),
            paths=[self.paths[i] for i in indices],
            labels=[self.labels[i] for i in indices],
            skipped=list(self.skipped),
            empty_classes=list(self.empty_classes),
        )


def resolve_split(root: str | os.PathLike, split: str) -> Path:
    """The folder of ``split`` under ``root``; ``val`` and ``test`` stand in for each other.

    CIFAR-10 trees have ``train/`` and ``test/``, ImageNet trees ``train/`` and ``val/``; asking for
    ``val`` on a CIFAR tree (or ``test`` on an ImageNet tree) finds the other one.
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"data root {_described(base)} is not a folder")
    candidates = {"val": ("val", "test"), "test": ("test", "val")}.get(split, (split,))
    for name in candidates:
        if (base / name).is_dir():
            return base / name
    have = sorted(p.name for p in base.iterdir() if p.is_dir())
    raise FileNotFoundError(
        f"no folder for split {split!r} under {str(base)!r} (looked for "
        f"{', '.join(repr(c + '/') for c in candidates)}; found {have or 'no sub-folders'})"
    )


def _described(path: str | os.PathLike) -> str:
    """``'path'``, and for a relative path the absolute one it was taken as."""
    text = os.fspath(path)
    if os.path.isabs(text):
        return repr(text)
    return f"{text!r} (a relative path, taken from the current folder: {os.path.abspath(text)})"


def find_classes(directory: str | os.PathLike) -> list[str]:
    """Sorted names of the sub-folders of ``directory``, as ``torchvision`` finds them."""
    classes = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())
    if not classes:
        raise FileNotFoundError(
            f"no class folders in {str(directory)!r}: expected <split>/<class>/<image> files"
        )
    return classes


def has_image_extension(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def sniff_format(head: bytes) -> str | None:
    """The image format named by a file's first bytes (``'jpeg'``, ``'png'``, ...) or ``None``."""
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


def check_image(path: str, verify: Verify = "header") -> str | None:
    """Why ``path`` cannot be decoded (one line), or ``None`` when it looks fine.

    ``header``: the first bytes name a format both PIL and DALI read, and a JPEG (PNG) still has its
    end marker (IEND chunk); a file without one is then decoded in full with PIL to decide (a truncated JPEG makes
    PIL raise, and DALI's decoder stops the pipeline). ``decode``: every file is decoded with PIL.
    """
    if verify == "none":
        return None
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - _JPEG_TAIL_BYTES))
            tail = f.read()
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    if size == 0:
        return "empty file"
    fmt = sniff_format(head)
    if fmt is None:
        return f"not an image that PIL and DALI both decode (starts with {head[:8]!r})"
    # A PNG ends with its IEND chunk; without it (or a JPEG's end marker) the file is suspect.
    suspect = (fmt == "jpeg" and b"\xff\xd9" not in tail) or (fmt == "png" and b"IEND" not in tail)
    if verify == "decode" or suspect:
        reason = _pil_decode_error(path)
        if reason is not None:
            return reason
    return None


def _pil_decode_error(path: str) -> str | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        return f"cannot decode: {exc}"
    return None


def scan_image_folder(
    directory: str | os.PathLike,
    *,
    verify: Verify = "header",
    num_threads: int = 8,
    warn: bool = True,
) -> FileList:
    """Scan ``directory`` (a split folder: ``<class>/**/<image>``) into a :class:`FileList`.

    Args:
        directory: the split folder, e.g. ``imagenet/train``.
        verify: ``"none"`` trusts every file with an image extension (what torchvision does);
            ``"header"`` (default) reads 16 bytes at the start and 2 KiB at the end of each file and
            decodes in full only the JPEGs that lack their end marker; ``"decode"`` decodes every
            file with PIL (slow: about 3 ms per ImageNet image and core).
        num_threads: threads for the checks (they mostly wait on the disk).
        warn: emit a ``UserWarning`` naming skipped files and empty classes.

    Raises:
        FileNotFoundError: the folder is missing, has no class folders, or holds no image at all.
    """
    if verify not in ("none", "header", "decode"):
        raise ValueError(f"verify must be 'none', 'header' or 'decode', got {verify!r}")
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"image folder {_described(directory)} does not exist")
    classes = find_classes(directory)
    paths: list[str] = []
    labels: list[int] = []
    empty: list[str] = []
    for label, name in enumerate(classes):
        before = len(paths)
        for dirpath, _, fnames in sorted(os.walk(os.path.join(directory, name), followlinks=True)):
            for fname in sorted(fnames):
                if has_image_extension(fname):
                    paths.append(os.path.join(dirpath, fname))
                    labels.append(label)
        if len(paths) == before:
            empty.append(name)
    if not paths:
        raise FileNotFoundError(
            f"no images in {directory!r}: its {len(classes)} class folders hold no file ending in "
            f"{', '.join(IMG_EXTENSIONS)}"
        )

    if warn and empty:
        warnings.warn(
            f"{len(empty)} class folder(s) in {directory} hold no image (their labels are kept, as "
            f"torchvision's ImageFolder(allow_empty=True) keeps them): {', '.join(empty[:10])}",
            stacklevel=2,
        )
    files = FileList(directory, classes, paths, labels, [], empty)
    return verify_file_list(files, verify, num_threads=num_threads, warn=warn)


def verify_file_list(
    files: FileList, verify: Verify = "header", *, num_threads: int = 8, warn: bool = True
) -> FileList:
    """``files`` without the files that fail :func:`check_image`; those go to ``skipped``.

    Raises ``FileNotFoundError`` when no file passes.
    """
    if verify not in ("none", "header", "decode"):
        raise ValueError(f"verify must be 'none', 'header' or 'decode', got {verify!r}")
    if verify == "none":
        return files
    paths = files.paths
    with ThreadPoolExecutor(max(1, num_threads)) as pool:
        reasons = list(pool.map(check_image, paths, [verify] * len(paths), chunksize=256))
    skipped = [SkippedFile(paths[i], r) for i, r in enumerate(reasons) if r is not None]
    if len(skipped) == len(paths):
        raise FileNotFoundError(
            f"no readable images in {files.root!r}: all {len(skipped)} files failed the check, "
            f"e.g. {skipped[0].path}: {skipped[0].reason}"
        )
    if warn and skipped:
        shown = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:5])
        more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
        warnings.warn(
            f"skipping {len(skipped)} unreadable file(s) in {files.root}: {shown}{more}",
            stacklevel=3,
        )
    keep = [i for i, r in enumerate(reasons) if r is None]
    return FileList(
        files.root,
        files.classes,
        [paths[i] for i in keep],
        [files.labels[i] for i in keep],
        [*files.skipped, *skipped],
        files.empty_classes,
    )
