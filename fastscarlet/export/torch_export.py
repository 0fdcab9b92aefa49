"""A subnet as a self-contained PyTorch file: weights, genome, space and input resolution.

The file is a dict of tensors and plain data (``torch.load(path, weights_only=True)`` reads it,
without unpickling code)::

    {"format": "fastscarlet.subnet/1", "space": {...every field of the space...},
     "genome": [...], "readable": "E3K7-...", "identity": "identity" | "let" | "fold",
     "resolution": 224, "state_dict": {...}, "meta": {...}}

:func:`load` rebuilds the network from the space and genome alone (``build_network``: no supernet
is built) and loads the weights. ``identity`` is the export mode of identity layers
(:mod:`fastscarlet.nn.network`), which fixes the module structure the weights fit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastscarlet.nn.network import IDENTITY_MODES, Network, build_network
from fastscarlet.space import to_readable
from fastscarlet.space.serialize import space_from_dict, space_to_dict
from fastscarlet.train.checkpoint import save_atomic, state_differences

SUBNET_FORMAT = "fastscarlet.subnet/1"


def _structure(net: nn.Module) -> list[tuple]:
    """Module types, parameter shapes and conv strides: what must agree for weights to fit."""
    out = []
    for name, m in net.named_modules():
        shapes = tuple((n, tuple(p.shape)) for n, p in m.named_parameters(recurse=False))
        stride = m.stride if isinstance(m, nn.Conv2d) else None
        out.append((name, type(m).__name__, shapes, stride))
    return out


def identity_mode(network: Network) -> str:
    """The export mode (``identity``, ``fold`` or ``let``) whose structure ``network`` has.

    Where several fit (a genome without identity layers, or one whose every LET was folded), they
    build the same modules and any of them rebuilds the network."""
    want = _structure(network)
    for mode in ("identity", "fold", "let"):
        try:
            ref = build_network(network.space, network.genome, identity=mode)
        except ValueError:  # plain identity impossible at this genome's identity layers
            continue
        if _structure(ref) == want:
            return mode
    raise ValueError(
        "the network's modules match no identity export mode of its genome "
        f"({', '.join(IDENTITY_MODES)}): was it modified after extraction?"
    )


def save(
    network: Network,
    path: str | os.PathLike,
    *,
    resolution: int,
    identity: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``network`` (a :class:`~fastscarlet.nn.network.Network`) to ``path`` atomically.

    ``identity``: its identity export mode (None: found from its modules); ``meta``: plain data
    kept with it (where it came from, BN recalibration)."""
    if not isinstance(network, Network):
        raise ValueError(f"save() takes a fastscarlet Network, got {type(network).__name__}")
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    mode = identity or identity_mode(network)
    if mode not in IDENTITY_MODES:
        raise ValueError(f"identity must be one of {IDENTITY_MODES}, got {mode!r}")
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    return save_atomic(
        {
            "format": SUBNET_FORMAT,
            "space": space_to_dict(network.space),
            "genome": list(network.genome),
            "readable": to_readable(network.space, network.genome),
            "identity": mode,
            "resolution": int(resolution),
            "state_dict": state,
            "meta": dict(meta or {}),
        },
        path,
    )


def read(path: str | os.PathLike) -> dict[str, Any]:
    """The raw contents of an exported subnet file (named errors for anything else)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported subnet not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path} is not a fastscarlet export (cannot read it: {reason})") from None
    if not isinstance(data, dict) or data.get("format") != SUBNET_FORMAT:
        fmt = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"{path} is not a fastscarlet subnet export (format {fmt!r}, expected "
            f"{SUBNET_FORMAT!r}, as `fastscarlet export --format torch` writes)"
        )
    return data


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Network:
    """Rebuild the exported network (eval mode) without building a supernet.

    The network gets ``resolution`` (its input size) and ``meta`` attributes from the file."""
    data = read(path)
    space = space_from_dict(data["space"])
    net = build_network(space, data["genome"], identity=data["identity"])
    diff = state_differences(net, data["state_dict"])
    if diff is not None:
        raise ValueError(f"{path}: the weights do not fit the network its genome builds ({diff})")
    net.load_state_dict(data["state_dict"])
    net.resolution = int(data["resolution"])
    net.meta = data.get("meta", {})
    return net.to(map_location).eval()
