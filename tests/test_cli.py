"""The console script: ``fastscarlet info`` and ``fastscarlet models``."""

import json
import subprocess
import sys

import pytest
import torch

from fastscarlet import env
from fastscarlet.cli import main
from fastscarlet.cost import CostModel
from fastscarlet.space import get_space
from fastscarlet.space.published import PUBLISHED


def test_models_json(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list(PUBLISHED)
    for r in rows:
        assert {"name", "space", "genome", "madds", "params"} <= set(r)
        assert all(isinstance(r[k], int) for k in ("madds", "params"))
        cost = CostModel(get_space(r["space"]), 224)(r["genome"])
        assert (r["madds"], r["params"]) == (cost.madds, cost.params)


def test_models_table(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "scarlet_a" in out and "365.31" in out and "moga_c" in out


def test_info_reports_every_component(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in ("torch", "cuda", "triton", "fastscarlet._C", "nvidia.dali", "dali plugin"):
        assert name in out
    # the CUDA row says what this machine has
    row = next(ln for ln in out.splitlines() if ln.startswith("cuda")).split()
    assert row[1] == ("yes" if torch.cuda.is_available() else "no")


@pytest.mark.parametrize(
    "available, version, expected",
    [
        (True, "12.8", "cuda            yes  12.8 (Fake GPU 9000)"),
        (False, "12.8", "cuda            no   12.8; no CUDA device"),
        (False, None, "cuda            no   torch was built without CUDA"),
    ],
)
def test_cuda_row_says_yes_with_the_device_or_no_with_why(
    monkeypatch, available, version, expected
):
    """Every outcome of the CUDA probe, on any machine (the probe is cached: cleared around)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Fake GPU 9000")
    monkeypatch.setattr(torch.version, "cuda", version)
    env.probe_cuda.cache_clear()
    try:
        probe = env.probe_cuda()
    finally:
        env.probe_cuda.cache_clear()
    monkeypatch.setattr(env, "all_probes", lambda: [probe])
    assert env.report().splitlines()[-1] == expected


def test_bad_input_is_one_line_error(capsys):
    assert main(["models", "--resolution", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err


def test_console_script_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "fastscarlet", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "models" in out and "info" in out
