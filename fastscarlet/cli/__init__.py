"""The ``fastscarlet`` console script.

Each subcommand lives in its own module ``fastscarlet.cli.<name>`` exposing ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. The modules keep their heavy imports inside
``run`` so that ``fastscarlet --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> module; the order is the order of ``fastscarlet --help``.
COMMANDS: dict[str, str] = {
    "demo": "fastscarlet.cli.demo",
    "info": "fastscarlet.cli.info",
    "models": "fastscarlet.cli.models",
    "prepare": "fastscarlet.cli.prepare",
    "train": "fastscarlet.cli.train",
    "eval": "fastscarlet.cli.eval",
    "search": "fastscarlet.cli.search",
    "latency-table": "fastscarlet.cli.latency_table",
    "export": "fastscarlet.cli.export",
    "rank-study": "fastscarlet.cli.rank_study",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastscarlet",
        description="Fast one-shot NAS in the ScarletNAS family (SCARLET, FairNAS, MoGA).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


# Exit status when the reader of stdout went away (`fastscarlet models | head`): 128 + SIGPIPE, what
# a Unix tool killed by SIGPIPE reports.
EXIT_BROKEN_PIPE = 128 + 13


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:  # inside the handler below, also for --help's SystemExit
            sys.stdout.flush()
    except BrokenPipeError:
        # Quietly, as Unix tools do; stdout goes to /dev/null so that the interpreter's final
        # flush does not raise again ("Exception ignored ... BrokenPipeError").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        # Bad input: a clear one-line error, no traceback.
        print(f"fastscarlet {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
