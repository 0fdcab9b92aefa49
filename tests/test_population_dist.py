"""The population evaluator over torch.distributed ranks (torchrun, 2 CPU processes, gloo):
equal to one process, each rank evaluating one prefix shard, and the search's sharded
evaluation running on it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}
    worker = str(HERE / "population_worker.py")
    one = tmp_path / "one"
    subprocess.run([sys.executable, worker, str(one)], env=env, check=True, timeout=300)
    two = tmp_path / "two"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={_free_port()}", worker, str(two),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    single = json.loads((one / "rank0.json").read_text())
    ranks = [json.loads((two / f"rank{r}.json").read_text()) for r in (0, 1)]
    # every rank returns the whole population's results, equal to one process
    assert ranks[0]["results"] == ranks[1]["results"] == single["results"]
    # each rank evaluated one call with one prefix shard: disjoint, together everything, and
    # a shard is a run of the sorted population (shared prefixes stay on one rank)
    shards = [{tuple(g) for g in r["evaluated"][0]} for r in ranks]
    assert all(len(r["evaluated"]) == 1 for r in ranks)
    assert shards[0] and shards[1] and not shards[0] & shards[1]
    assert shards[0] | shards[1] == {tuple(g) for g in single["evaluated"][0]}
    assert max(shards[0]) < min(shards[1]) or max(shards[1]) < min(shards[0])
    # the search: the same archive as one process, its evaluations split between the ranks
    assert ranks[0]["archive"] == single["archive"]
    mine = [{tuple(g) for g in r["searched"]} for r in ranks]
    assert mine[0] and mine[1] and not mine[0] & mine[1]
    assert mine[0] | mine[1] == {tuple(g) for g in single["searched"]}
