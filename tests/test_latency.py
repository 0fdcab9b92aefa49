"""Latency tables: what they time and record, the model's arithmetic, validation, the CLI."""

import json
import time

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from tiny import tiny_space
from torch import nn

from fastscarlet.cli import main
from fastscarlet.cost import LatencyModel
from fastscarlet.cost.latency import (
    build_latency_table,
    deploy_network,
    identity_form,
    load_table,
    save_table,
    spearman,
    validate_latency_table,
)
from fastscarlet.cost.timing import measure_ms
from fastscarlet.nn import LinearStabilizer
from fastscarlet.space import get_space, random_genome

FAST = dict(rounds=2, passes=1, warmup=1, calib_subnets=3, progress=False)


@pytest.fixture(scope="module")
def table():
    """A table of the tiny space with identity allowed everywhere (a strided LET at layer 1)."""
    return build_latency_table(tiny_space(identity="all"), resolution=16, **FAST)


def test_table_records_its_settings_and_every_allowed_block(table):
    space = tiny_space(identity="all")
    assert table["device"] == {"type": "cpu", "name": table["device"]["name"]}
    assert table["device"]["name"]
    assert table["threads"] == 1 and table["batch"] == 1 and table["dtype"] == "float32"
    assert table["resolution"] == 16 and table["date"][:2] == "20"
    assert table["versions"]["torch"] == torch.__version__
    assert table["method"]["clock"] == "cpu" and table["build_seconds"] > 0
    for key in ("stem_ms", "first_block_ms", "head_ms"):
        assert table[key] > 0
    # Input shapes as the network sees them: 16 -> stem s2 -> 8 -> layer 1 s2 -> 4.
    assert [row["input_shape"] for row in table["layers"]] == [
        [1, 8, 8, 8],
        [1, 12, 4, 4],
        [1, 12, 4, 4],
    ]
    for spec, row in zip(space.layers, table["layers"]):
        timed = [c for c, t in enumerate(row["ms"]) if t is not None]
        assert timed == list(spec.allowed)
        assert all(row["ms"][c] > 0 for c in timed)
    # Identity is what a deployed network runs: the LET at the strided layer, plain elsewhere.
    assert [row["identity"] for row in table["layers"]] == ["let", "plain", "plain"]
    ident = space.identity_index
    assert table["layers"][0]["ms"][ident] > table["layers"][1]["ms"][ident]


def test_deployed_network_keeps_the_let_only_where_identity_changes_the_shape():
    space = tiny_space(identity="all")
    net = deploy_network(space, [4, 4, 4])
    assert isinstance(net.blocks[0], LinearStabilizer)
    assert isinstance(net.blocks[1], nn.Identity) and isinstance(net.blocks[2], nn.Identity)
    assert not net.training
    # SCARLET with identity everywhere: strided layers and the stride-1 widenings 80->96, 192->320.
    scarlet = get_space("scarlet", identity="all")
    lets = [i for i in range(scarlet.num_layers) if identity_form(scarlet, i) == "let"]
    assert lets == [0, 2, 6, 10, 14, 18]


def test_model_is_the_sum_of_parts_plus_the_measured_overhead(table, tmp_path):
    space = tiny_space(identity="all")
    fixed = table["stem_ms"] + table["first_block_ms"] + table["head_ms"] + table["overhead_ms"]
    genomes = [random_genome(space, np.random.default_rng(s)) for s in range(6)]
    want = [fixed + sum(table["layers"][i]["ms"][c] for i, c in enumerate(g)) for g in genomes]
    model = LatencyModel(table)
    np.testing.assert_allclose([model(g) for g in genomes], want, rtol=1e-12)
    np.testing.assert_allclose(model.batch(np.array(genomes)), want, rtol=1e-12)
    fast, slow = model.limits()
    assert fast == pytest.approx(fixed + sum(min(filter(None, r["ms"])) for r in table["layers"]))
    assert fast <= min(want) <= max(want) <= slow
    # The overhead is the median gap between whole subnets and their parts.
    gaps = [c["measured_ms"] - c["sum_of_parts_ms"] for c in table["calibration"]]
    assert table["overhead_ms"] == pytest.approx(float(np.median(gaps)))
    path = save_table(table, tmp_path / "t.json")
    assert load_table(path) == json.loads(json.dumps(table))
    assert LatencyModel(path)(genomes[0]) == pytest.approx(want[0])
    assert LatencyModel(str(path)).space_name == "tiny"


def test_model_names_bad_input(table, tmp_path):
    model = LatencyModel(table)
    with pytest.raises(ValueError, match="layer 2"):
        model([0, 7, 0])
    with pytest.raises(ValueError, match=r"shape \[n, 3\]"):
        model.batch(np.zeros((2, 4), dtype=int))
    with pytest.raises(FileNotFoundError, match="latency table not found"):
        LatencyModel(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text('{"format": "something/1"}')
    with pytest.raises(ValueError, match="not a latency table"):
        LatencyModel(tmp_path / "other.json")
    model.check_space(tiny_space(identity="all"))
    with pytest.raises(ValueError, match="another 'tiny' space"):
        model.check_space(tiny_space())  # same name, identity allowed elsewhere


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on a busy 2-core machine wait for each other
    yield
    torch.set_num_threads(threads)


def test_measure_ms_follows_work_and_the_cpu_clock_ignores_waiting(one_thread):
    a, b = torch.randn(32, 32), torch.randn(512, 512)
    small, big = measure_ms([lambda: a @ a, lambda: b @ b], rounds=3, passes=2, clock="cpu")
    assert big > 50 * small  # 4096x the multiply-adds

    def wait():
        time.sleep(0.003)

    wall = measure_ms([wait], rounds=3, passes=1, clock="wall")[0]
    cpu = measure_ms([wait], rounds=3, passes=1, clock="cpu")[0]
    assert wall >= 3.0 and cpu < 1.0


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 30).astype(float), rng.normal(size=30)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_validation_writes_errors_pairs_and_plot(table, tmp_path):
    result = validate_latency_table(table, 4, out_dir=tmp_path, rounds=1, passes=1, progress=False)
    saved = json.loads((tmp_path / "validate.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert (tmp_path / "validate.png").stat().st_size > 1000
    pairs = saved["pairs"]
    assert len(pairs) == 4
    model = LatencyModel(table)
    rel = [abs(p["predicted_ms"] - p["measured_ms"]) / p["measured_ms"] for p in pairs]
    for p in pairs:
        assert p["predicted_ms"] == pytest.approx(model(p["genome"]))
        assert p["measured_ms"] > 0
    assert saved["mean_rel_error"] == pytest.approx(np.mean(rel))
    assert saved["max_rel_error"] == pytest.approx(max(rel))
    assert -1 <= saved["spearman"] <= 1


def test_the_search_engine_reads_latency_through_batch(table):
    from fastscarlet.search.evaluators import LatencyEvaluator

    model = LatencyModel(table)
    genomes = [(0, 1, 2), (4, 4, 4)]
    rows = LatencyEvaluator(model)(genomes)
    assert [r["latency"] for r in rows] == pytest.approx([model(g) for g in genomes])
    assert LatencyEvaluator(model).limits() == {"latency": model.limits()}


def test_cli_builds_and_validates(tmp_path, capsys):
    out = tmp_path / "tiny.json"
    args = ["latency-table", "--space", "tiny", "--resolution", "16", "--rounds", "1"]
    args += ["--passes", "1", "--calib-subnets", "2", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    table = load_table(out)
    assert table["space"]["name"] == "tiny" and table["threads"] == 1
    capsys.readouterr()
    args = ["latency-table", "--table", str(out), "--validate", "3", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "v")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads((tmp_path / "v" / "validate.json").read_text())
    assert last == f"mean relative error {100 * result['mean_rel_error']:.1f}%"
    assert (tmp_path / "v" / "validate.png").is_file()


def test_cli_names_bad_input(tmp_path, capsys):
    assert main(["latency-table", "--space", "nope", "--out", str(tmp_path / "t.json")]) == 2
    assert "unknown search space 'nope'" in capsys.readouterr().err
    assert main(["latency-table", "--space", "tiny"]) == 2
    assert "--out TABLE.json" in capsys.readouterr().err
    assert main(["latency-table", "--table", str(tmp_path / "t.json"), "--validate", "3"]) == 2
    assert "latency table not found" in capsys.readouterr().err
