"""Shared helpers of the export and latency tests: a training checkpoint without training, and
networks whose outputs depend on their input (so that a wrong weight shows)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from test_supernet import calibrate_, randomize_
from tiny import make_image_folder, tiny_config_dict

from fastscarlet.config import config_from_dict
from fastscarlet.nn import Network
from fastscarlet.nn.supernet import SuperNet
from fastscarlet.space import build_space, random_genome
from fastscarlet.train.checkpoint import CHECKPOINT_FORMAT, save_atomic

SPACES = ("scarlet", "fairnas", "fairnas_se", "moga")


def make_checkpoint(tmp_path: Path, space: str = "tiny", **space_cfg) -> tuple[Path, SuperNet]:
    """A ``fastscarlet train``-style checkpoint of a randomised supernet (BN statistics
    calibrated on one batch of images), with a tiny image folder as its data root."""
    root = make_image_folder(tmp_path / "data", per_class=4, size=16)
    make_image_folder(tmp_path / "data", per_class=2, size=16, split="val")
    num_classes = 3 if space == "tiny" else 10
    cfg = config_from_dict(
        tiny_config_dict(root, tmp_path / "run"),
        values={"space.name": space, "space.num_classes": num_classes}
        | {f"space.{k}": v for k, v in space_cfg.items()},
    )
    supernet = randomize_(SuperNet(build_space(cfg.space), share_se=cfg.space.share_se))
    genome = random_genome(supernet.space, np.random.default_rng(0))
    calibrate_(supernet, torch.randn(4, 3, 16, 16), genome)
    path = save_atomic(
        {"format": CHECKPOINT_FORMAT, "model": supernet.state_dict(), "config": cfg.to_dict()},
        tmp_path / "run" / "last.pt",
    )
    return path, supernet.eval()


def live_network(net: Network, resolution: int = 64, seed: int = 0) -> Network:
    """``net`` with random BN affine parameters and statistics calibrated on random images (eval
    mode): its outputs are O(1) and depend on the input. 32 images: with 4, the statistics of the
    2x2 maps of the last stage rest on 16 values per channel, and other inputs then grow to 1e3
    there (SCARLET-A at 64), where float rounding alone differs by 1e-3 between backends."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, net.space.in_channels, resolution, resolution, generator=g)
    return calibrate_(randomize_(net, seed), x)


def inputs(n: int = 2, resolution: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, resolution, resolution, generator=torch.Generator().manual_seed(seed))
