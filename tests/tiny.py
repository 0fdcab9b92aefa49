"""Shared test helpers: a tiny registered search space and a tiny JPEG ImageFolder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fastscarlet.space import (
    FirstBlock,
    Head,
    SEConfig,
    Stage,
    Stem,
    get_space,
    list_spaces,
    make_space,
    mbconv_choices,
    register_space,
)


def tiny_space(num_classes: int = 3, identity: str = "equal_shape"):
    """3 layers x 5 choices (E2K3, E2K5, E2K3SE, E2K5SE, ID): a SCARLET-like space for fast tests."""
    return make_space(
        "tiny",
        choices=mbconv_choices(expansions=(2,), kernels=(3, 5), identity=True),
        stem=Stem(8, "relu6"),
        first_block=FirstBlock(8, "relu6"),
        stages=[Stage(12, 1, 2, "hswish"), Stage(12, 2, 1, "hswish")],
        head=Head(32, "relu6"),
        se=SEConfig(),
        identity=identity,
        num_classes=num_classes,
    )


if "tiny" not in list_spaces():
    register_space("tiny", tiny_space)
assert get_space("tiny").num_layers == 3


def make_image_folder(
    root: str | Path, classes: int = 3, per_class: int = 16, size: int = 20, split: str = "train"
) -> Path:
    """JPEGs whose mean colour depends on the class (learnable), with per-image noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = Path(root)
    for c in range(classes):
        d = root / split / f"class_{c}"
        d.mkdir(parents=True, exist_ok=True)
        base = np.zeros(3)
        base[c % 3] = 200
        for i in range(per_class):
            img = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"img_{i}.jpg", quality=90)
    return root


def tiny_config_dict(root: str | Path, out: str | Path, **sections) -> dict:
    cfg = {
        "space": {"name": "tiny", "num_classes": 3},
        "sampler": {"name": "strict_fair"},
        "data": {
            "root": str(root),
            "backend": "torch",
            "recipe": "cifar",
            "image_size": 16,
            "batch_size": 4,
            "num_workers": 0,
        },
        "optim": {"lr": 0.1, "warmup_epochs": 0.5},
        "train": {
            "epochs": 2,
            "device": "cpu",
            "out": str(out),
            "log_every": 1,
            "checkpoint_every": 0,
            "progress": False,
            "tensorboard": False,
            "deterministic": True,
        },
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg
