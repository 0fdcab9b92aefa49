"""The demo's HTML report: one self-contained page people look at rather than read."""

from __future__ import annotations

import html
import platform
from typing import Any


def versions() -> dict[str, str]:
    import numpy
    import torch

    from fastscarlet import __version__

    return {
        "fastscarlet": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "cpu cores": str(__import__("os").cpu_count()),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(summary: dict[str, Any], result: Any) -> str:
    esc = html.escape
    chosen = _table(
        ["role", "architecture", "genome", "top-1 (test, from file)", "top-1 (search)",
         "MAdds", "params", "training steps (from)", "files"],
        [
            [
                esc(r["role"]), f"<code>{esc(r['readable'])}</code>",
                f"<code>{esc(','.join(map(str, r['genome'])))}</code>", f"{r['acc']:.2f}%",
                f"{r['search_acc']:.2f}%", f"{r['madds'] / 1e6:.2f}M", f"{r['params'] / 1e6:.3f}M",
                f"{r['finetune_steps']} ({esc(r.get('weights', 'supernet'))})",
                "<br>".join(f'<a href="{esc(_rel(f))}">{esc(_rel(f))}</a>' for f in r["files"]),
            ]
            for r in summary["exported"]
        ],
    )  # fmt: skip
    front = _table(
        ["#", "top-1 (search)", "MAdds", "params", "architecture"],
        [
            [i, f"{f['acc']:.2f}%", f"{f['madds'] / 1e6:.2f}M", f"{f['params'] / 1e6:.3f}M",
             f"<code>{esc(f['readable'])}</code>"]
            for i, f in enumerate(summary["front"])
        ],
    )  # fmt: skip
    total = sum(summary["seconds"].values())
    stages = _table(
        ["stage", "seconds", "share"],
        [[esc(k), f"{v:.1f}", f"{100 * v / total:.0f}%"] for k, v in summary["seconds"].items()]
        + [["<b>total</b>", f"<b>{total:.1f}</b>", ""]],
    )
    vers = _table(["", ""], [[esc(k), esc(v)] for k, v in summary["versions"].items()])
    evaluated = len(result.archive)
    best = summary["best"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>fastscarlet demo</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.3em 0.8em; text-align: left; }}
th {{ background: #f4f4f4; }} code {{ font-size: 0.9em; }}
.big {{ font-size: 1.4em; }}
</style></head><body>
<h1>fastscarlet demo</h1>
<p class="big">Best exported model: <b>{best["acc"]:.2f}%</b> top-1 on the test split at
{best["madds"] / 1e6:.2f}M MAdds and {best["params"] / 1e6:.3f}M parameters.</p>
<p>A strict-fairness SCARLET supernet was trained on <code>{esc(summary["data"])}</code> on
{esc(summary["device"])}, searched with NSGA-II over accuracy and MAdds ({evaluated} architectures
evaluated, BN recalibrated), and the chosen architectures were trained in the time left (from
fresh weights as the papers retrain the architectures they pick, or from the supernet's: the table
says which and how many steps), BN recalibrated and exported (PyTorch and ONNX). Search accuracies are the supernet's, on a fixed
subset of the held-out split; the exported models' accuracy is on the whole split, computed from
the exported files.</p>
<h2>Front</h2>
<img src="front.png" alt="front" style="max-width: 100%">
<h2>Exported models</h2>
{chosen}
<h2>All front members</h2>
{front}
<h2>Time per stage</h2>
{stages}
<h2>Command and versions</h2>
<p><code>{esc(summary["command"])}</code></p>
{vers}
</body></html>
"""


def _rel(path: str) -> str:
    """A file path relative to the report's folder (the demo's DIR)."""
    parts = path.split("/")
    for i, p in enumerate(parts):
        if p in ("models", "search", "supernet"):
            return "/".join(parts[i:])
    return path
