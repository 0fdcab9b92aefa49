"""Latency lookup tables: every block of a space timed on this device, and the model they give.

A table times each part a deployed subnet runs, alone, at the input shape it sees in the network:
the stem, the first block, the head, and every allowed (layer, choice) block. The prediction for a
genome ``g`` is a sum of parts plus a fixed overhead::

    latency(g) = stem + first_block + head + sum_l block[l, g_l] + overhead

``overhead`` is measured, not assumed: the median of ``end_to_end - sum_of_parts`` over a few
random subnets timed whole (what composing the blocks costs beyond the blocks: the Sequential
dispatch, cache effects between blocks), timed in the same sweeps as the parts.

An identity choice is timed as what a deployed network runs there: a plain identity where the
shape allows it (stride 1, c_in == c_out), the LET stabilizer's 1x1 conv elsewhere; the table
records which, per layer (``identity``).

**Method** (:mod:`fastscarlet.cost.timing`). Eval mode, ``torch.inference_mode()``, a fixed thread
count, denormals flushed (random weights would otherwise put some activations in the slow denormal
range, which trained weights do not); interleaved sweeps over every part, medians, the minimum over
passes. With one CPU thread the clock is the thread's CPU time, which other processes on a shared
machine cannot inflate by taking the core away.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastscarlet.cost.timing import (
    default_clock,
    device_name,
    measure_ms,
    timing_settings,
)
from fastscarlet.nn.network import (
    Network,
    build_block,
    build_first_block,
    build_head,
    build_network,
    build_stem,
)
from fastscarlet.space import SearchSpace, random_genome, to_readable, validate_genome
from fastscarlet.space.serialize import load_json, space_from_dict, space_to_dict

TABLE_FORMAT = "fastscarlet.latency/1"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# --- the deployed form -------------------------------------------------------------------------


def identity_form(space: SearchSpace, layer: int) -> str:
    """What a deployed network runs for an identity choice at ``layer``: ``"plain"`` or ``"let"``."""
    spec = space.layers[layer]
    return "plain" if spec.stride == 1 and spec.in_channels == spec.out_channels else "let"


def deploy_block(space: SearchSpace, layer: int, choice: int) -> nn.Module:
    """The block a deployed network runs for ``choice`` at ``layer`` (see :func:`identity_form`)."""
    if space.choices[choice].identity and identity_form(space, layer) == "plain":
        return nn.Identity()
    return build_block(space, layer, choice)


def deploy_network(space: SearchSpace, genome: Sequence[int]) -> Network:
    """A freshly initialised network of ``genome`` in its deployed form: plain identity where the
    shape allows it, the LET elsewhere (eval mode)."""
    g = validate_genome(space, genome)
    net = build_network(space, g, identity="let")
    for i, c in enumerate(g):
        if space.choices[c].identity and identity_form(space, i) == "plain":
            net.blocks[i] = nn.Identity()
    return net.eval()


# --- timing ------------------------------------------------------------------------------------


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {list(DTYPES)}") from None


def _dtype_name(dtype: torch.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)


def _versions() -> dict[str, str]:
    # The root package is loaded whenever a submodule is; importing it by name would be an upward
    # import (it re-exports the later stages) in the eyes of the layers contract.
    out = {
        "fastscarlet": sys.modules["fastscarlet"].__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if torch.version.cuda:
        out["cuda"] = str(torch.version.cuda)
    return out


def _resolve_device(device: torch.device | str) -> torch.device:
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"latency tables time on cpu or cuda, not {device}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("a CUDA latency table needs a CUDA device; none is available")
    return device


# --- building a table --------------------------------------------------------------------------


def _calls(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    return lambda: module(x)


Part = tuple[Any, nn.Module, torch.Tensor]  # (key, module, input)


def deployed_parts(
    space: SearchSpace, resolution: int, batch: int, device: torch.device, dtype: torch.dtype
) -> list[Part]:
    """``(key, module, input)`` for the stem, the first block, every allowed (layer, choice) block
    and the head; ``key`` is ``"stem"``, ``"first_block"``, ``(layer, choice)`` or ``"head"``.

    Each input is a unit-scale random tensor of the shape the part sees in the network (every
    choice of a layer gives the same output shape)."""

    def ready(m: nn.Module) -> nn.Module:
        return m.to(device=device, dtype=dtype).eval()

    def unit(shape: Sequence[int]) -> torch.Tensor:
        return torch.randn(tuple(shape), device=device, dtype=dtype)

    x = unit((batch, space.in_channels, resolution, resolution))
    parts: list[Part] = []
    with torch.no_grad():
        for key, m in (("stem", build_stem(space)), ("first_block", build_first_block(space))):
            m = ready(m)
            parts.append((key, m, x))
            x = unit(m(x).shape)
        for spec in space.layers:
            out_shape = None
            for c in spec.allowed:
                m = ready(deploy_block(space, spec.index, c))
                parts.append(((spec.index, c), m, x))
                out_shape = out_shape or m(x).shape
            x = unit(out_shape)
        parts.append(("head", ready(build_head(space)), x))
    return parts


def build_latency_table(
    space: SearchSpace,
    resolution: int = 224,
    batch: int = 1,
    device: torch.device | str = "cpu",
    dtype: str | torch.dtype = "float32",
    threads: int | None = 1,
    *,
    rounds: int = 10,
    passes: int = 3,
    warmup: int = 3,
    calib_subnets: int = 8,
    seed: int = 0,
    clock: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Time every part of ``space``'s deployed networks on ``device``; returns the table (a dict,
    JSON-serialisable: :func:`save_table`).

    ``threads`` sets ``torch.set_num_threads`` while timing (None: leave it). ``calib_subnets``
    random subnets (seeded by ``seed``) are timed whole to measure the fixed overhead. ``clock``:
    ``"cpu"`` or ``"wall"`` (None: :func:`default_clock`).
    """
    if resolution < 1 or batch < 1:
        raise ValueError(f"resolution and batch must be >= 1, got {resolution} and {batch}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if calib_subnets < 1:
        raise ValueError(f"calib_subnets must be >= 1, got {calib_subnets}")
    device, dt = _resolve_device(device), _resolve_dtype(dtype)
    clock = clock or default_clock(device, threads)
    method = {"rounds": rounds, "passes": passes, "warmup": warmup, "seed": seed, "clock": clock}
    threads = threads or torch.get_num_threads()
    t_start = time.perf_counter()
    rng = np.random.default_rng(seed)
    genomes = [random_genome(space, rng) for _ in range(calib_subnets)]
    with timing_settings(threads):
        parts = deployed_parts(space, resolution, batch, device, dt)
        x = torch.randn(batch, space.in_channels, resolution, resolution, device=device, dtype=dt)
        nets = [deploy_network(space, g).to(device=device, dtype=dt) for g in genomes]
        # The calibration subnets are timed in the same interleaved sweeps as the parts, so that
        # a change of load during the build shifts both alike and cancels from the overhead.
        fns = [_calls(m, inp) for _, m, inp in parts] + [_calls(n, x) for n in nets]
        ms = measure_ms(fns, device, progress=progress, desc=f"latency {space.name}", **method)
        del fns, nets
    table = _table(space, parts, ms[: len(parts)], (resolution, batch), dt, device, method)
    table["threads"] = threads
    measured = ms[len(parts) :]
    parts_ms = LatencyModel(table).batch(np.asarray(genomes))
    table["overhead_ms"] = float(np.median(measured - parts_ms))
    table["calibration"] = [
        {"genome": list(g), "measured_ms": float(m), "sum_of_parts_ms": float(s)}
        for g, m, s in zip(genomes, measured, parts_ms)
    ]
    table["build_seconds"] = round(time.perf_counter() - t_start, 2)
    return table


def _table(
    space: SearchSpace,
    parts: list[Part],
    ms: np.ndarray,
    resolution_batch: tuple[int, int],
    dtype: torch.dtype,
    device: torch.device,
    method: dict[str, Any],
) -> dict[str, Any]:
    """The table dict of the parts' times (``overhead_ms`` still 0)."""
    times = {key: float(t) for (key, _, _), t in zip(parts, ms)}
    shapes = {key: list(x.shape) for key, _, x in parts}
    block_ms: list[list[float | None]] = [[None] * space.num_choices for _ in space.layers]
    for key, t in times.items():
        if isinstance(key, tuple):
            block_ms[key[0]][key[1]] = t
    return {
        "format": TABLE_FORMAT,
        "space": space_to_dict(space),
        "choices": list(space.choice_names),
        "resolution": resolution_batch[0],
        "batch": resolution_batch[1],
        "dtype": _dtype_name(dtype),
        "device": {"type": device.type, "name": device_name(device)},
        "threads": torch.get_num_threads(),  # the caller's count, if it set one
        "flush_denormal": True,
        "versions": _versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "method": {**method, "statistic": "min over passes of the median over interleaved rounds"},
        "stem_ms": times["stem"],
        "first_block_ms": times["first_block"],
        "head_ms": times["head"],
        "overhead_ms": 0.0,
        "layers": [
            {
                "index": spec.index,
                "input_shape": shapes[(spec.index, spec.allowed[0])],
                "identity": identity_form(space, spec.index)
                if space.identity_index in spec.allowed
                else None,
                "ms": block_ms[spec.index],
            }
            for spec in space.layers
        ],
    }


def time_subnets(
    space: SearchSpace,
    genomes: Sequence[Sequence[int]],
    resolution: int,
    batch: int,
    device: torch.device | str,
    dtype: str | torch.dtype,
    *,
    chunk: int = 64,
    desc: str = "subnets",
    **kwargs: Any,
) -> np.ndarray:
    """End-to-end milliseconds of each genome's deployed network (:func:`measure_ms`, interleaved
    within chunks of ``chunk`` networks so that memory stays bounded). Set the threads around it
    (:func:`validate_latency_table` does)."""
    device, dt = torch.device(device), _resolve_dtype(dtype)
    out = np.empty(len(genomes))
    x = torch.randn(batch, space.in_channels, resolution, resolution, device=device, dtype=dt)
    for start in range(0, len(genomes), chunk):
        nets = [
            deploy_network(space, g).to(device=device, dtype=dt)
            for g in genomes[start : start + chunk]
        ]
        part = f"{desc} {start + 1}-{start + len(nets)}/{len(genomes)}"
        out[start : start + len(nets)] = measure_ms(
            [_calls(n, x) for n in nets], device, desc=part, **kwargs
        )
        del nets
    return out


# --- files -------------------------------------------------------------------------------------


def save_table(table: dict[str, Any], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(table, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def load_table(path: str | os.PathLike) -> dict[str, Any]:
    """Read a table written by :func:`save_table` (named errors for a missing or foreign file)."""
    table = load_json(path, "latency table")
    _check_table(table, str(path))
    return table


def _check_table(table: Any, where: str) -> None:
    if not isinstance(table, dict) or table.get("format") != TABLE_FORMAT:
        fmt = table.get("format") if isinstance(table, dict) else type(table).__name__
        raise ValueError(
            f"{where} is not a latency table (format {fmt!r}, expected {TABLE_FORMAT!r}, as "
            "`fastscarlet latency-table` writes)"
        )
    for key in ("space", "layers", "stem_ms", "first_block_ms", "head_ms", "overhead_ms"):
        if key not in table:
            raise ValueError(f"{where}: latency table without {key!r}")


# --- the model ---------------------------------------------------------------------------------


class LatencyModel:
    """Predicted latency (ms) of genomes of the table's space, on the table's device and settings.

    ``LatencyModel(table)`` takes a table dict or the path of a table file. ``model(genome)`` is
    one validated prediction; ``model.batch(genomes [n, L])`` the vectorised form (entries assumed
    valid, as :meth:`fastscarlet.cost.CostModel.batch`).
    """

    def __init__(self, table: dict[str, Any] | str | os.PathLike) -> None:
        if not isinstance(table, dict):
            table = load_table(table)
        else:
            _check_table(table, "latency table")
        self.table = table
        self.space = space_from_dict(table["space"])
        self.space_name = self.space.name
        L, C = self.space.num_layers, self.space.num_choices
        if len(table["layers"]) != L:
            raise ValueError(f"latency table: {len(table['layers'])} layers for {L} in the space")
        self.ms_table = np.full((L, C), np.nan)
        for i, row in enumerate(table["layers"]):
            for c in self.space.layers[i].allowed:
                value = row["ms"][c] if c < len(row["ms"]) else None
                if value is None:
                    raise ValueError(
                        f"latency table: layer {i + 1} has no time for its allowed choice "
                        f"{self.space.choices[c].name}"
                    )
                self.ms_table[i, c] = float(value)
        self.fixed_ms = float(
            table["stem_ms"] + table["first_block_ms"] + table["head_ms"] + table["overhead_ms"]
        )
        self._rows = np.arange(L)

    def __call__(self, genome: Sequence[int]) -> float:
        g = validate_genome(self.space, genome)
        return float(self.fixed_ms + self.ms_table[self._rows, g].sum())

    def batch(self, genomes: np.ndarray) -> np.ndarray:
        """Milliseconds of each row of ``genomes`` ``[n, L]``."""
        g = np.asarray(genomes, dtype=np.int64)
        L = self.space.num_layers
        if g.ndim != 2 or g.shape[1] != L:
            raise ValueError(f"genomes must have shape [n, {L}], got {list(g.shape)}")
        if g.size and (g.min() < 0 or g.max() >= self.space.num_choices):
            raise ValueError(f"genome entries must be in 0..{self.space.num_choices - 1}")
        return self.ms_table[self._rows, g].sum(1) + self.fixed_ms

    def limits(self) -> tuple[float, float]:
        """(fastest, slowest) prediction over the whole space (layers are independent)."""
        return (
            float(self.fixed_ms + np.nanmin(self.ms_table, axis=1).sum()),
            float(self.fixed_ms + np.nanmax(self.ms_table, axis=1).sum()),
        )

    def check_space(self, space: SearchSpace) -> None:
        """Raise ``ValueError`` unless ``space`` is exactly the table's space (a width-scaled or
        re-classed space has the same name but other latencies)."""
        if space_to_dict(space) != space_to_dict(self.space):
            ours, theirs = space_to_dict(self.space), space_to_dict(space)
            diff = sorted(k for k in ours if ours.get(k) != theirs.get(k))
            raise ValueError(
                f"the latency table was built for another {self.space.name!r} space "
                f"(fields {diff} differ)"
            )

    def describe(self) -> str:
        t = self.table
        return (
            f"{self.space_name} at {t['resolution']}, batch {t['batch']}, {t['dtype']}, "
            f"{t['threads']} thread(s) on {t['device']['name']}"
        )


# --- validation --------------------------------------------------------------------------------


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1, ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson correlation of the average ranks)."""
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def validate_latency_table(
    table: dict[str, Any] | str | os.PathLike,
    n: int = 50,
    *,
    seed: int = 1,
    out_dir: str | os.PathLike | None = None,
    rounds: int | None = None,
    passes: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Time ``n`` random subnets end to end with the table's settings and compare with the model.

    Returns (and, with ``out_dir``, writes as ``validate.json``, with a scatter plot
    ``validate.png``) ``mean_rel_error``, ``max_rel_error`` (fractions of the measured time),
    ``spearman`` and the per-subnet ``pairs``. ``seed`` should differ from the table's, so that
    the subnets are not those its overhead was measured on.
    """
    if n < 2:
        raise ValueError(f"validation needs at least 2 subnets, got {n}")
    model = LatencyModel(table)
    t = model.table
    device = _resolve_device(t["device"]["type"])
    if device_name(device) != t["device"]["name"]:
        print(
            f"warning: the table was measured on {t['device']['name']}, this is "
            f"{device_name(device)}",
            file=sys.stderr,
        )
    method = t.get("method", {})
    rng = np.random.default_rng(seed)
    genomes = [random_genome(model.space, rng) for _ in range(n)]
    with timing_settings(t["threads"]):
        measured = time_subnets(
            model.space, genomes, t["resolution"], t["batch"], device, t["dtype"],
            rounds=rounds or method.get("rounds", 10), passes=passes or method.get("passes", 3),
            warmup=method.get("warmup", 3), seed=seed, clock=method.get("clock", "wall"),
            progress=progress, desc="validate",
        )  # fmt: skip
    predicted = model.batch(np.asarray(genomes))
    rel = np.abs(predicted - measured) / measured
    result = {
        "table": model.describe(),
        "n": n,
        "seed": seed,
        "mean_rel_error": float(rel.mean()),
        "max_rel_error": float(rel.max()),
        "spearman": spearman(predicted, measured),
        "device": device_name(device),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "pairs": [
            {
                "genome": list(g),
                "readable": to_readable(model.space, g),
                "predicted_ms": float(p),
                "measured_ms": float(m),
                "rel_error": float(r),
            }
            for g, p, m, r in zip(genomes, predicted, measured, rel)
        ],
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "validate.json").write_text(json.dumps(result, indent=1) + "\n")
        plot_validation(result, out / "validate.png")
    return result


def plot_validation(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Predicted against measured latency, one point per subnet, with the y = x line."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("the validation plot needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = [p["measured_ms"] for p in result["pairs"]]
    p = [p["predicted_ms"] for p in result["pairs"]]
    lo, hi = min(m + p) * 0.95, max(m + p) * 1.05
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([lo, hi], [lo, hi], color="0.6", lw=1, label="predicted = measured")
    ax.scatter(m, p, s=14)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(
        f"{result['table']}\nmean rel. error {100 * result['mean_rel_error']:.1f}%, "
        f"Spearman {result['spearman']:.3f}",
        fontsize=8,
    )
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
