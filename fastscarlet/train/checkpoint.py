"""Checkpoints: atomic writes, loading without unpickling code, RNG state capture, and
:func:`load_supernet`, which opens a training checkpoint as a ready :class:`SuperNet`.

A checkpoint is a dict of tensors and plain containers (dict, list, tuple, str, int, float, bool,
None) only, so ``torch.load(path, weights_only=True)`` reads it and loading never runs code. It is
written to a temporary file in the same folder, flushed to disk, then renamed over the target: a
crash leaves either the old or the new file, never a torn one.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from fastscarlet.nn.supernet import SuperNet

CHECKPOINT_FORMAT = "fastscarlet.supernet/1"  # the "format" key of a training checkpoint


def save_atomic(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def clean_stale_temporaries(folder: str | os.PathLike, older_than_s: float = 0.0) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files :func:`save_atomic` leaves when a process is killed
    mid-write (a SIGKILL cannot run the cleanup); returns what was removed.

    Call it at the start of a run that owns ``folder`` (before anything writes there).
    ``older_than_s`` spares temporaries younger than that, for folders another live process writes.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for tmp in folder.glob(".*.tmp"):
        try:
            if now - tmp.stat().st_mtime >= older_than_s:
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load with ``weights_only=True``: a file that would need to unpickle code is refused.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the problem for an
    empty file, a file that is not a torch checkpoint, or one that needs code to unpickle.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(
            f"checkpoint {path} is empty (0 bytes): it was not written by fastscarlet's atomic "
            "save (which never leaves a partial file); use another checkpoint"
        )
    with open(path, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive (PK\x03\x04); the legacy format is a pickle (0x80 ...).
    if head[:2] != b"PK" and head[:1] != b"\x80":
        raise ValueError(
            f"{path} is not a torch checkpoint (it starts with {head!r}, not a zip archive or a "
            "pickle): pass the last.pt (or step_N.pt) that `fastscarlet train` wrote"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"cannot read checkpoint {path}: {reason}") from exc


def check_format(ckpt: Any, path: str | os.PathLike) -> dict:
    """``ckpt`` if it is a training checkpoint of ``fastscarlet train``, else a named error."""
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path} is not a fastscarlet supernet checkpoint (not a dict)")
    fmt = ckpt.get("format")
    if fmt != CHECKPOINT_FORMAT or "model" not in ckpt or "config" not in ckpt:
        what = f"format {fmt!r}" if fmt is not None else f"keys {sorted(map(str, ckpt))[:6]}"
        raise ValueError(
            f"{path} is not a fastscarlet supernet checkpoint ({what}; expected format "
            f"{CHECKPOINT_FORMAT!r} with 'model' and 'config', as `fastscarlet train` writes)"
        )
    return ckpt


def state_differences(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """One line saying how ``state`` differs from ``model.state_dict()`` (None: it fits)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state
        and hasattr(state[k], "shape")
        and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    parts = []
    for label, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("shape mismatch (checkpoint vs model)", shapes),
    ):
        if items:
            more = f" and {len(items) - 2} more" if len(items) > 2 else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:2])}{more}")
    return "; ".join(parts) or None


def load_state_checked(model: nn.Module, state: dict, path: str | os.PathLike) -> None:
    """``model.load_state_dict(state)``, with a one-line error naming what differs (instead of
    PyTorch's message listing every key, 322 KB for a checkpoint of another space)."""
    diff = state_differences(model, state)
    if diff is not None:
        raise ValueError(
            f"{path} does not fit this model ({diff}); was it trained with another space or config?"
        )
    model.load_state_dict(state)


def load_supernet(
    checkpoint: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> SuperNet:
    """Open a training checkpoint of ``fastscarlet train`` as a :class:`SuperNet`.

    The network is built from the run's resolved config (space, SE sharing, stabilizer), the
    weights are loaded, and ``net.space`` and ``net.config`` (a :class:`fastscarlet.config.Config`)
    are attached. Evaluation, search and export open supernets this way.
    """
    from fastscarlet.config import config_from_dict
    from fastscarlet.nn.supernet import SuperNet
    from fastscarlet.space import build_space

    ckpt = check_format(load_checkpoint(checkpoint, map_location=map_location), checkpoint)
    cfg = config_from_dict(ckpt["config"])
    net = SuperNet(
        build_space(cfg.space), share_se=cfg.space.share_se, stabilizer=cfg.space.stabilizer
    )
    net.to(map_location)
    load_state_checked(net, ckpt["model"], checkpoint)
    net.config = cfg
    net.eval()
    return net


def capture_rng() -> dict[str, Any]:
    """The global RNG states (torch CPU and CUDA, numpy's legacy global, Python's) as plain data."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            *[int(v) if isinstance(v, (int, np.integer)) else float(v) for v in np_state[2:]],
        ],
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x
