"""Latency tables of the scarlet and moga spaces on this machine, validated on random subnets.

    python benchmarks/bench_latency.py [--spaces scarlet,moga] [--n 50] [--resolution 224]
        [--batch 1] [--threads 1] [--device cpu] [--out benchmarks/results]

For each space: builds the table (every allowed block, stem, first block and head; the time it
takes is the table build time), then times ``--n`` random subnets end to end and compares them
with the table's predictions (the issue-15 acceptance: mean relative error at most 10%). Writes,
per space, the table ``latency_table_<space>_<device>.json`` and ``latency_validate_<space>_<device>``
(``validate.json``, ``validate.png``), and a summary ``latency_<device>.json`` with the machine's
load average before and after each step (timing on a busy machine is noisy: see RESULTS.md) and a
same-run check (:func:`same_run_check`) that separates the model's error from the machine's drift.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np

from fastscarlet.cost.latency import (
    LatencyModel,
    build_latency_table,
    save_table,
    spearman,
    time_subnets,
    validate_latency_table,
)
from fastscarlet.cost.timing import timing_settings
from fastscarlet.space import get_space


def same_run_check(table: dict, result: dict, device: str) -> dict:
    """The model's error without the drift of the machine between the table and the validation.

    On a shared machine the same subnets can time 30-40% slower a few minutes later (load 4 -> 7
    on this one), which moves every measurement of the validation against the table. Here the
    table's calibration subnets and the validation subnets are timed again, interleaved in the
    same sweeps; the overhead is re-measured on the calibration subnets alone and the validation
    subnets, which fit nothing, are predicted with it.
    """
    model = LatencyModel(table)
    calib = [c["genome"] for c in table["calibration"]]
    held_out = [p["genome"] for p in result["pairs"]]
    method = table["method"]
    with timing_settings(table["threads"]):
        measured = time_subnets(
            model.space, calib + held_out, table["resolution"], table["batch"], device,
            table["dtype"], rounds=method["rounds"], passes=method["passes"],
            warmup=method["warmup"], seed=2, clock=method["clock"], desc="same run",
        )  # fmt: skip
    parts = model.batch(np.asarray(calib + held_out)) - table["overhead_ms"]  # sums of parts
    overhead = float(np.median(measured[: len(calib)] - parts[: len(calib)]))
    predicted, got = parts[len(calib) :] + overhead, measured[len(calib) :]
    rel = np.abs(predicted - got) / got
    return {
        "overhead_ms": overhead,
        "mean_rel_error": float(rel.mean()),
        "max_rel_error": float(rel.max()),
        "spearman": spearman(predicted, got),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--spaces", default="scarlet,moga")
    ap.add_argument("--n", type=int, default=50, help="validation subnets per space")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    out = Path(args.out)
    rows = []
    for name in args.spaces.split(","):
        load_start = os.getloadavg()
        table = build_latency_table(
            get_space(name), args.resolution, args.batch, args.device, args.dtype, args.threads
        )
        table_path = save_table(table, out / f"latency_table_{name}_{args.device}.json")
        load_built = os.getloadavg()
        result = validate_latency_table(
            table, args.n, seed=1, out_dir=out / f"latency_validate_{name}_{args.device}"
        )
        same_run = same_run_check(table, result, args.device)
        rows.append(
            {
                "space": name,
                "table": table_path.name,
                "build_seconds": table["build_seconds"],
                "blocks_timed": sum(t is not None for row in table["layers"] for t in row["ms"]),
                "overhead_ms": table["overhead_ms"],
                "subnets": args.n,
                "mean_rel_error": result["mean_rel_error"],
                "max_rel_error": result["max_rel_error"],
                "spearman": result["spearman"],
                "measured_ms_range": [
                    min(p["measured_ms"] for p in result["pairs"]),
                    max(p["measured_ms"] for p in result["pairs"]),
                ],
                "loadavg_1m": {
                    "start": load_start[0],
                    "table_built": load_built[0],
                    "validated": os.getloadavg()[0],
                },
                "clock": table["method"]["clock"],
                "same_run": same_run,
            }
        )
    summary = {
        "device": table["device"],
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "versions": table["versions"],
        "resolution": args.resolution,
        "batch": args.batch,
        "dtype": args.dtype,
        "threads": args.threads,
        "spaces": rows,
    }
    (out / f"latency_{args.device}.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(
        f"{table['device']['name']}, {args.threads} thread(s), {args.resolution}, batch {args.batch}"
    )
    print(
        "| space | table build | blocks | subnets | mean rel. error | max rel. error | Spearman "
        "| same run: mean / max rel. error, Spearman | load (1 min) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        load, same = r["loadavg_1m"], r["same_run"]
        print(
            f"| {r['space']} | {r['build_seconds']:.0f} s | {r['blocks_timed']} | {r['subnets']} | "
            f"{100 * r['mean_rel_error']:.1f}% | {100 * r['max_rel_error']:.1f}% | "
            f"{r['spearman']:.3f} | {100 * same['mean_rel_error']:.1f}% / "
            f"{100 * same['max_rel_error']:.1f}%, {same['spearman']:.3f} | "
            f"{load['start']:.1f} / {load['table_built']:.1f} / {load['validated']:.1f} |"
        )


if __name__ == "__main__":
    main()
