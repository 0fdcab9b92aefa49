"""benchmarks/bench_depthwise.py --smoke end to end (the GPU run is the same code, bf16 and timed
by do_bench instead of once): a row per requested layer, every candidate of every pass run,
checked against cuDNN's output and timed, and the tables and summary built from them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fastscarlet.env import triton_interpret

needs_interpreter = pytest.mark.skipif(not triton_interpret(), reason="needs TRITON_INTERPRET=1")
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_depthwise.py"
CANDIDATES = {
    "fwd": {"cudnn", "tile", "sweep", "halo"},
    "bwd": {"cudnn", "tile-split", "tile-fused", "halo"},
    "block": {"cudnn", "tile", "sweep", "halo"},
}


@needs_interpreter
@pytest.mark.interpreter
def test_bench_depthwise_smoke(tmp_path) -> None:
    # layers 5 and 7: k3 at stride 1 and 2 (a k7 layer costs the interpreter ~5 s more and runs
    # no other line of the script; the kernels' own tests cover every kernel size)
    out = tmp_path / "r.json"
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--layers", "5,7", "--json", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "SMOKE RUN" in res.stdout and "FAILED" not in res.stderr
    data = json.loads(out.read_text())
    assert data["smoke"] and data["header"]["passes"] == ["fwd", "bwd", "block"]
    assert [(r["layer"]["index"], r["layer"]["stride"]) for r in data["rows"]] == [(5, 1), (7, 2)]
    for row in data["rows"]:
        for ps, names in CANDIDATES.items():
            results = row["results"][ps]
            assert set(results) == names, (row["layer"]["index"], ps)
            outputs = {"dx", "dw"} if ps == "bwd" else {"y"}
            for name, r in results.items():
                where = (row["layer"]["index"], ps, name)
                assert r["failed"] is None and r["ok"], where
                assert r["us"] > 0 and r["gbs"] > 0, where
                assert set(r["diff"]) == outputs, where
                # fp32 kernels against fp32 cuDNN: rounding only (outputs ~1, dW sums ~100 terms)
                assert max(r["diff"].values()) < 1e-4, (where, r["diff"])
                assert all(r["error"][o] <= r["allowed"][o] for o in outputs), where
    summary = data["summary"]
    for ps, names in CANDIDATES.items():
        assert set(summary[ps]) == names
        assert sum(s["fastest"] for s in summary[ps].values()) == 2  # one per layer
        assert all(s["wrong"] == 0 and s["shapes"] == 2 for s in summary[ps].values())
    for title in ("### Forward: plain", "### Backward: dx and dW", "### Forward block"):
        assert title in res.stdout


@needs_interpreter
@pytest.mark.interpreter
def test_bench_depthwise_marks_a_wrong_kernel(tmp_path, monkeypatch) -> None:
    """A kernel whose output is off is marked WRONG and never counted as fastest or as beating
    cuDNN, even when it is the quickest."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import bench_depthwise as bd

    import fastscarlet.kernels.depthwise_halo as halo

    real = halo.dw_halo_fwd

    def off_by_one(*a, **kw):
        out = real(*a, **kw)
        kw["out"].add_(1.0)
        return out

    monkeypatch.setattr(halo, "dw_halo_fwd", off_by_one)
    out = tmp_path / "r.json"
    assert bd.main(["--smoke", "--layers", "5", "--passes", "fwd", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    res = data["rows"][0]["results"]["fwd"]
    assert not res["halo"]["ok"] and res["halo"]["diff"]["y"] == pytest.approx(1.0)
    assert res["tile"]["ok"] and data["summary"]["fwd"]["halo"]["wrong"] == 1
    r = data["rows"][0]
    r["layer"] = bd.Layer(**r["layer"])
    row = bd.Row(**r)
    res["halo"]["us"] = res["cudnn"]["us"] / 100  # the wrong kernel is now the quickest
    assert bd.fastest(row, "fwd") != "halo" and bd.speedup(row, "fwd", "halo") is None
    s = bd.summarize([row], ["fwd"])["fwd"]["halo"]
    assert s["fastest"] == 0 and s["beats"] == 0 and s["median_x_cudnn"] is None
    assert "WRONG" in bd._cell(row, "fwd", "halo")
