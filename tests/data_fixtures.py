"""Small generated image trees for the data tests (written under pytest's tmp_path, never the repo).

The images are smooth (a gradient plus a few blobs) rather than noise: JPEG compresses them like
photos, and resampling differences between PIL and DALI stay representative of real images.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def smooth_image(height: int, width: int, seed: int) -> np.ndarray:
    """uint8 ``(height, width, 3)``: a random colour gradient with a few soft blobs."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        a, b, d = rng.uniform(-1, 1, 3)
        img[..., c] = 128 + 60 * (a * x / width + b * y / height) + 20 * d
        for _ in range(3):
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            r = rng.uniform(0.05, 0.3) * max(height, width)
            img[..., c] += rng.uniform(-70, 70) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / r**2)
    return np.clip(img, 0, 255).astype(np.uint8)


def save(array: np.ndarray, path: Path, *, mode: str = "RGB", fmt: str = "JPEG", **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if mode != "RGB":
        image = image.convert(mode)
    if fmt == "JPEG":
        kw.setdefault("quality", 90)
    image.save(path, format=fmt, **kw)
    return path


def jpeg_bytes(array: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def make_clean_tree(root: Path, *, per_class: int = 5, classes=("ant", "bee", "cat")) -> Path:
    """``root/{train,val}/<class>/*.JPEG`` RGB JPEGs of several sizes (landscape, portrait, square)."""
    sizes = [(375, 500), (500, 333), (256, 256), (100, 140), (64, 48), (333, 500), (481, 640)]
    k = 0
    for split in ("train", "val"):
        for name in classes:
            for i in range(per_class):
                h, w = sizes[k % len(sizes)]
                save(smooth_image(h, w, k), root / split / name / f"{name}_{i:03d}.JPEG")
                k += 1
    return root


def make_messy_tree(root: Path) -> dict[str, list[Path]]:
    """A split folder with everything ImageNet-like trees throw at a loader.

    Returns the paths by kind: ``good`` (decodable by PIL and DALI, including grayscale, CMYK, a PNG
    named .JPEG, an RGBA and a palette PNG, upper-case extensions, a nested sub-folder), ``bad``
    (truncated JPEG, HTML saved as .JPEG, empty file, GIF named .jpg, truncated PNG) and ``stray``
    (files without an image extension, which torchvision ignores too).
    """
    kinds: dict[str, list[Path]] = {"good": [], "bad": [], "stray": []}
    good, bad, stray = kinds["good"], kinds["bad"], kinds["stray"]
    a, b, d = root / "n01_alpha", root / "n02_beta", root / "n04_delta"
    good.append(save(smooth_image(120, 160, 1), a / "rgb.JPEG"))
    good.append(save(smooth_image(150, 100, 2), a / "gray.JPEG", mode="L"))
    good.append(save(smooth_image(90, 130, 3), a / "cmyk.JPEG", mode="CMYK"))
    good.append(save(smooth_image(110, 110, 4), a / "png_inside.JPEG", fmt="PNG"))
    good.append(save(smooth_image(80, 120, 5), b / "rgba.png", mode="RGBA", fmt="PNG"))
    good.append(save(smooth_image(100, 90, 6), b / "palette.png", mode="P", fmt="PNG"))
    good.append(save(smooth_image(64, 64, 7), b / "UPPER.JPG"))
    good.append(save(smooth_image(70, 200, 8), b / "nested" / "deep.jpeg"))
    good.append(save(smooth_image(200, 70, 9), d / "tall.jpg"))
    good.append(save(smooth_image(33, 47, 10), d / "tiny.jpg"))

    full = jpeg_bytes(smooth_image(200, 300, 11))
    (a / "truncated.JPEG").write_bytes(full[: len(full) // 2])
    (b / "html.JPEG").write_bytes(b"<html><body>404 Not Found</body></html>\n")
    (b / "empty.jpg").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(smooth_image(40, 40, 12)).save(buf, format="GIF")
    (d / "gif_inside.jpg").write_bytes(buf.getvalue())
    buf = io.BytesIO()
    Image.fromarray(smooth_image(60, 60, 13)).save(buf, format="PNG")
    (d / "cut.png").write_bytes(buf.getvalue()[:-40])
    bad += [
        a / "truncated.JPEG",
        b / "html.JPEG",
        b / "empty.jpg",
        d / "gif_inside.jpg",
        d / "cut.png",
    ]

    (root / "n03_empty").mkdir(parents=True)
    (a / "labels.txt").write_text("stray text file\n")
    (a / "Thumbs.db").write_bytes(b"\x00" * 64)
    (root / "README").write_text("a stray file beside the class folders\n")
    stray += [a / "labels.txt", a / "Thumbs.db", root / "README"]
    return kinds
