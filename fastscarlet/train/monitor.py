"""Observability of a training run: progress bar, TensorBoard scalars, a JSON-lines log.

Only the main process (rank 0) writes; other ranks get a monitor that does nothing.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


class Monitor:
    """``log(step, **scalars)`` to the JSON-lines file ``OUT/log.jsonl``, TensorBoard ``OUT/tb`` and
    the progress bar (step, loss, lr, img/s, ETA)."""

    def __init__(
        self,
        out: str | Path,
        total_steps: int,
        start_step: int = 0,
        enabled: bool = True,
        tensorboard: bool = True,
        progress: bool = True,
    ) -> None:
        self.enabled = enabled
        self.total = total_steps
        self._bar = None
        self._tb = None
        self._log = None
        if not enabled:
            return
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        # line-buffered: one line per record; closed in close()
        self._log = open(out / "log.jsonl", "a", buffering=1)  # noqa: SIM115
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(out / "tb"))
            except ImportError as exc:  # tensorboard not installed: keep going without it
                print(f"[monitor] TensorBoard disabled: {exc}", file=sys.stderr)
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def set_total(self, total_steps: int) -> None:
        """A shorter (or longer) run than announced: the progress bar follows."""
        self.total = total_steps
        if self._bar is not None:
            self._bar.total = total_steps
            self._bar.refresh()

    def log(self, step: int, **scalars: Any) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": time.time(), **scalars}
        self._log.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in scalars.items():
                if isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, step)
        if self._bar is not None:
            shown = {k: scalars[k] for k in ("loss", "lr", "img_per_s") if k in scalars}
            self._bar.set_postfix(
                {k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in shown.items()}
            )

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, file=sys.stderr)
        self._log.write(json.dumps({"message": text, "time": time.time()}) + "\n")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._log is not None:
            self._log.close()
