"""Images per second of the torch and DALI backends on the same folder with the same CPU threads.

    python benchmarks/bench_loader.py                      # CPU: torch vs DALI CPU, train and val
    python benchmarks/bench_loader.py --device cuda        # GPU: torch vs DALI mixed (nvJPEG)

Equal threads: the torch backend runs ``num_workers=T`` decoding processes, the DALI backend
``num_threads=T`` threads (``--threads``, default: all cores). The data is an ImageNet-like folder
generated under ``/tmp`` on first use (``--images`` JPEGs of 500x375 at quality 90, with textures at
several scales so that the files weigh about what ImageNet's do), plus ``../shared/data/cifar10``
for reference when it is there. Nothing is written in the repository.

Measurement: for each (data, split) both loaders are built once, then ``--rounds`` epochs are run
alternately (torch, DALI, torch, DALI, ...) so that load from other processes on a shared machine
falls on both. In each epoch the clock starts when the first batch arrives (worker start-up and
pipeline construction are left out, for both backends) and stops at the last one; the rate is the
images after the first batch divided by that time; the table gives the median over the rounds.
Every batch is consumed on the device (a sum), so nothing is left undone.

Two DALI loaders are measured on the CPU: ``dali``, the library's default, where fastscarlet's
DALI operator (``fastscarlet.data.dali_ops``, built from ``csrc/dali_ops/``) does the imagenet
recipe's resize, flip and normalisation in one pass, and ``dali-stock``, DALI's own operators only
(``fn.resize`` + ``fn.crop_mirror_normalize``), for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_DATA = Path("/tmp/fastscarlet_bench/imagenet_like")
DEFAULT_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"


def textured_image(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (H, W, 3): noise octaves from 1/4 to 1/250 of the width plus pixel noise.

    Tuned so that a 500x375 JPEG at quality 90 weighs about 110 KB, ImageNet's average: the cost of
    decoding a JPEG grows with its entropy-coded size, and smooth synthetic images would be light.
    """
    from PIL import Image

    img = np.zeros((height, width, 3), np.float32)
    for cells, amp in ((4, 60), (16, 40), (64, 30), (250, 60)):
        small = rng.normal(0, 1, (max(2, cells * height // width), max(2, cells), 3))
        small = ((small - small.min()) / (np.ptp(small) + 1e-6) * 255).astype(np.uint8)
        up = Image.fromarray(small).resize((width, height), Image.BICUBIC)
        img += (np.asarray(up, np.float32) - 128) * amp / 128
    img += rng.normal(0, 18, img.shape)
    return np.clip(img + 128, 0, 255).astype(np.uint8)


def make_imagenet_like(root: Path, images: int, classes: int = 10, seed: int = 0) -> Path:
    """``root/{train,val}/cNN/*.JPEG``: ``images`` JPEGs per split, 500x375 or 375x500, q90."""
    from PIL import Image

    marker = root / f".complete_{images}"
    if marker.exists():
        return root
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for i in range(images):
            h, w = (375, 500) if i % 4 else (500, 375)
            path = root / split / f"c{i % classes:02d}" / f"img_{i:05d}.JPEG"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(textured_image(h, w, rng)).save(path, quality=90)
    marker.touch()
    return root


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the DataLoader workers of an epoch
    are joined when it ends), user + system."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def epoch_rate(loader, epoch: int, device: str) -> tuple[float, float]:
    """Images per second over one epoch, from the first batch's arrival to the last one's, and
    CPU milliseconds per image over the whole epoch (start-up included)."""
    import torch

    cpu0 = cpu_seconds()
    total = 0
    loader.set_epoch(epoch)
    first = None
    count = 0
    sink = torch.zeros((), device=device)
    for images, _ in loader:
        sink += images[:, 0, 0, 0].float().sum()  # consume the batch on the device
        total += len(images)
        if first is None:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            first = time.perf_counter()
            continue
        count += len(images)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    rate = count / (time.perf_counter() - first)
    return rate, (cpu_seconds() - cpu0) / total * 1000


def compare(root, split, backends, *, rounds, device, **kw) -> dict[str, list[tuple[float, float]]]:
    """Per backend, one epoch rate per round; the backends alternate so that a burst of load
    from other processes on a shared machine hits both rather than one."""
    from fastscarlet.data import build_loader

    def make(name: str):
        # "dali-stock": the DALI backend with DALI's own operators only (no fastscarlet plugin).
        if name == "dali-stock":
            return build_loader(
                root, split, "dali", dali_ops="dali", device=device, drop_last=True, **kw
            )
        return build_loader(root, split, name, device=device, drop_last=True, **kw)

    loaders = {b: make(b) for b in backends}
    rates: dict[str, list[tuple[float, float]]] = {b: [] for b in backends}
    for r in range(rounds):
        for b, loader in loaders.items():
            rates[b].append(epoch_rate(loader, r, device))
    return rates


def breakdown(root: Path, threads: int, images: int = 256) -> dict[str, float]:
    """CPU ms per image of the train transform's steps alone: PIL decode, PIL decode + resized
    crop (torchvision's functional), DALI crop-on-decode, DALI crop-on-decode + resize, and DALI
    crop-on-decode + fastscarlet's resize-mirror-normalize (which also does the normalisation)."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import Pipeline
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    from fastscarlet.data import IMAGENET_MEAN, IMAGENET_STD, dali_ops, scan_image_folder
    from fastscarlet.data.transforms import random_resized_crop_box

    paths = scan_image_folder(Path(root) / "train", verify="none").paths[:images]
    out = {}
    rng = np.random.default_rng(0)
    for step in ("decode", "decode+crop+resize"):
        cpu0 = cpu_seconds()
        for path in paths:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if step != "decode":
                    h, w = im.height, im.width
                    box = random_resized_crop_box(h, w, (0.08, 1.0), (3 / 4, 4 / 3), rng)
                    im = F.resized_crop(im, *box, [224, 224], InterpolationMode.BILINEAR)
        out[f"PIL {step}"] = (cpu_seconds() - cpu0) / len(paths) * 1000
    steps = ["crop-on-decode", "crop-on-decode+resize"]
    if dali_ops.load():
        steps.append("crop-on-decode+fastscarlet resize_mirror_normalize")
    for step in steps:
        batch = 64
        pipe = Pipeline(batch_size=batch, num_threads=threads, device_id=None, seed=0)
        with pipe:
            encoded, _ = fn.readers.file(files=paths, random_shuffle=False)
            im = fn.decoders.image_random_crop(encoded, device="cpu", output_type=types.RGB)
            if step == "crop-on-decode+resize":
                im = fn.resize(im, resize_x=224, resize_y=224, antialias=True)
            elif step != "crop-on-decode":
                im = dali_ops.resize_mirror_normalize(
                    im, mean=IMAGENET_MEAN, std=IMAGENET_STD, size=(224, 224)
                )
            pipe.set_outputs(im)
        pipe.build()
        pipe.run()  # warm-up
        cpu0 = cpu_seconds()
        n = len(paths) // batch
        for _ in range(n):
            pipe.run()
        out[f"DALI {step}"] = (cpu_seconds() - cpu0) / (n * batch) * 1000
        del pipe
    return out


def environment() -> dict:
    import torch

    from fastscarlet.env import probe_dali

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    dali = probe_dali()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": __import__("torchvision").__version__,
        "pillow": __import__("PIL").__version__,
        "dali": dali.version if dali.available else f"not available ({dali.reason})",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ImageNet-like folder (made)")
    p.add_argument("--images", type=int, default=1536, help="JPEGs per split to generate")
    p.add_argument("--cifar", type=Path, default=DEFAULT_CIFAR, help="CIFAR-10 folder (optional)")
    p.add_argument("--cifar-images", type=int, default=2048, help="CIFAR-10 subset per split")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="T: workers = threads")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5, help="epochs per backend, alternating")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--backends",
        nargs="+",
        default=["torch", "dali", "dali-stock"],
        help="dali: the library's default (fastscarlet's fused operator on a CPU pipeline); "
        "dali-stock: DALI's own operators only",
    )
    p.add_argument("--splits", nargs="+", default=["train", "val"])
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument(
        "--breakdown", action="store_true", help="also time the train steps alone (CPU ms/img)"
    )
    args = p.parse_args(argv)

    from fastscarlet.env import probe_dali

    env = environment()
    print(json.dumps(env))
    backends = list(args.backends)
    if not probe_dali().available:
        if {"dali", "dali-stock"} & set(backends):
            print(f"DALI figures not taken: {probe_dali().reason}")
        backends = [b for b in backends if not b.startswith("dali")]
    if not args.device.startswith("cpu") and "dali-stock" in backends:
        backends.remove("dali-stock")  # the plugin is CPU-only: on a GPU both are the same
    runs = [("imagenet-like", make_imagenet_like(args.data, args.images), "imagenet", 224, None)]
    if args.cifar.is_dir():
        n = args.cifar_images
        runs += [
            ("cifar10", args.cifar, "imagenet", 224, n),
            ("cifar10", args.cifar, "cifar", 32, n),
        ]
    rows = []
    table = [
        f"T = {args.threads} (torch num_workers = DALI num_threads), batch {args.batch_size}, "
        f"device {args.device}, {args.rounds} alternating rounds of one epoch each",
        "",
        "| data | split | transform | torch img/s | DALI img/s | DALI/torch "
        "| torch CPU ms/img | DALI CPU ms/img | CPU torch/DALI | DALI stock ops img/s "
        "| stock/torch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, root, recipe, size, subset in runs:
        for split in args.splits:
            if name == "cifar10":
                split = {"val": "test"}.get(split, split)
            # The plugin serves the imagenet recipe only: on the cifar recipe both DALIs are one.
            here = [b for b in backends if not (b == "dali-stock" and recipe != "imagenet")]
            rates = compare(
                root,
                split,
                here,
                rounds=args.rounds,
                device=args.device,
                num_workers=args.threads,
                batch_size=args.batch_size,
                image_size=size,
                recipe=recipe,
                subset=subset,
            )
            row = dict(data=name, split=split, recipe=recipe, size=size)
            row |= {f"{b} img/s": [round(r, 1) for r, _ in v] for b, v in rates.items()}
            row |= {f"{b} cpu ms/img": [round(c, 2) for _, c in v] for b, v in rates.items()}
            rows.append(row)
            print(json.dumps(row), flush=True)
            med = {b: statistics.median(r for r, _ in v) for b, v in rates.items()}
            cpu = {b: statistics.median(c for _, c in v) for b, v in rates.items()}
            cells = [f"{med[b]:.0f}" if b in med else "n/a" for b in ("torch", "dali")]
            cells += [f"{cpu[b]:.2f}" if b in cpu else "n/a" for b in ("torch", "dali")]
            both = "dali" in med and "torch" in med
            ratio = f"{med['dali'] / med['torch']:.2f}x" if both else "n/a"
            cpu_ratio = f"{cpu['torch'] / cpu['dali']:.2f}x" if both else "n/a"
            stock = med.get("dali-stock")
            if stock and "torch" in med:
                stock_cells = f"{stock:.0f} | {stock / med['torch']:.2f}x"
            elif recipe != "imagenet":
                stock_cells = "same as DALI | -"
            else:
                stock_cells = "n/a | n/a"
            kind = "train (RRC+flip)" if split == "train" else "eval (resize+center crop)"
            if recipe == "cifar":
                kind = "train (pad+crop+flip)" if split == "train" else "eval"
            table.append(
                f"| {name} | {split} | {kind} @{size} | {cells[0]} | {cells[1]} | {ratio} "
                f"| {cells[2]} | {cells[3]} | {cpu_ratio} | {stock_cells} |"
            )
    print("\n".join(table))
    if args.breakdown and "dali" in backends:
        steps = breakdown(args.data, args.threads)
        print(json.dumps({k: round(v, 2) for k, v in steps.items()}))
        rows.append({"breakdown_cpu_ms_per_img": steps})
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "env": env,
                    "args": vars(args)
                    | {"data": str(args.data), "cifar": str(args.cifar), "json": str(args.json)},
                    "rows": rows,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
