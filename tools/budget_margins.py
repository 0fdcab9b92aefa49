"""How close the MBConv kernels come to the error budget, tensor by tensor (the number behind it).

Runs every interpreter block case of ``tests/test_kernel_mbconv.py`` (training and inference) the
way the tests do: the kernels and the PyTorch reference in fp32, the reference in float64, and
prints for each output, gradient and BN buffer the kernel's error, the budget of
``fastscarlet.kernels.testing`` (``2 * max|ref_fp32 - ref_fp64| + atol``), their ratio and the
error relative to ``max|ref|``, worst first; then a summary line. ``kernels/testing.py`` quotes it.

    TRITON_INTERPRET=1 python tools/budget_margins.py            # ~3 min on 2 CPU cores
    TRITON_INTERPRET=1 python tools/budget_margins.py --top 40 --json margins.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

# The cases are the tests' own (tests/ is not a package; pytest puts it on the path the same way).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def margins() -> list[dict]:
    """One row per tensor of every interpreter block case."""
    import test_kernel_mbconv as cases

    from fastscarlet.kernels.testing import budget, clone_as, run_module

    rows = []
    for training, case_list in ((True, cases.TRAIN_CASES), (False, cases.INFER_CASES)):
        for case in case_list:
            blk = case.block().train(training)
            x = case.input()
            g = torch.Generator().manual_seed(2)
            grad = torch.randn(case.N, case.cout, *cases._out_hw(case), generator=g)
            grad = grad if training else None  # run_module: no autograd without a gradient
            hi = run_module(clone_as(blk, torch.float64), cases._reference, x.double(), grad)
            lo = run_module(clone_as(blk, torch.float32), cases._reference, x, grad)
            out = run_module(clone_as(blk, torch.float32), cases._kernel, x, grad)
            tensors = [("output", out.out, lo.out, hi.out)]
            tensors += [(f"grad {n}", out.grads[n], lo.grads[n], hi.grads[n]) for n in hi.grads]
            tensors += [
                (n, out.buffers[n], lo.buffers[n], hi.buffers[n])
                for n in hi.buffers
                if not n.endswith("num_batches_tracked")
            ]
            for name, o, low, high in tensors:
                b = budget(name, o, low, high, torch.float32)
                top = float(high.double().abs().max())
                rows.append(
                    {
                        "case": f"{case} {'train' if training else 'eval'}",
                        "tensor": name,
                        "error": b.error,
                        "budget": b.allowed,
                        "ratio": b.error / b.allowed,
                        "max_ref": top,
                        "error_per_max_ref": b.error / top if top else 0.0,
                    }
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top", type=int, default=15, help="rows to print, worst ratio first")
    ap.add_argument("--json", help="write every row here")
    args = ap.parse_args(argv)
    rows = sorted(margins(), key=lambda r: -r["ratio"])
    print("| case | tensor | error | budget | error / budget | max abs ref | error / max abs ref |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows[: args.top]:
        print(
            f"| {r['case']} | {r['tensor']} | {r['error']:.3g} | {r['budget']:.3g} "
            f"| {r['ratio']:.3f} | {r['max_ref']:.3g} | {r['error_per_max_ref']:.3g} |"
        )
    worst_rel = max(r["error_per_max_ref"] for r in rows)
    over = sum(r["ratio"] > 1 for r in rows)
    print(
        f"\n{len(rows)} tensors, {over} over budget; worst error / budget {rows[0]['ratio']:.3f}; "
        f"worst error / max abs ref {worst_rel:.3g}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
