"""The console script: ``fastscarlet info`` and ``fastscarlet models``."""

import json
import subprocess
import sys

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
    # no GPU in CI: CUDA must be reported unusable with a reason
    line = next(ln for ln in out.splitlines() if ln.startswith("cuda"))
    assert " no " in line or " yes " in line


def test_bad_input_is_one_line_error(capsys):
    assert main(["models", "--resolution", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err


def test_console_script_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "fastscarlet", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "models" in out and "info" in out
