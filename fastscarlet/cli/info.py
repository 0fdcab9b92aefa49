"""``fastscarlet info``: versions, and whether CUDA, Triton, the C++ extension and DALI are usable."""

from __future__ import annotations

import argparse

HELP = (
    "print versions and which optional backends (CUDA, Triton, C++, DALI) are usable, and why not"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def run(args: argparse.Namespace) -> int:
    from fastscarlet.env import report

    print(report())
    return 0
