"""Run by ``torch.distributed.run`` in tests/test_trainer.py: train, then dump this rank's weights
(the test, not the trainer, writes the per-rank files)."""

import json
import sys
from pathlib import Path

import tiny  # noqa: F401  (registers the tiny space)
import torch

from fastscarlet.config import config_from_dict
from fastscarlet.train.trainer import SupernetTrainer


def main() -> None:
    cfg = config_from_dict(json.loads(Path(sys.argv[1]).read_text()))
    trainer = SupernetTrainer(cfg)
    calls = {"all_reduce": 0}
    real = torch.distributed.all_reduce

    def counting_all_reduce(*args, **kwargs):
        calls["all_reduce"] += 1
        return real(*args, **kwargs)

    torch.distributed.all_reduce = counting_all_reduce
    trainer.fit()
    torch.distributed.all_reduce = real
    rank = trainer.dist.rank
    out = Path(sys.argv[2])
    torch.save(trainer.model.state_dict(), out / f"rank{rank}.pt")
    (out / f"rank{rank}.json").write_text(json.dumps(calls))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
