"""``fastscarlet info``: versions, and whether CUDA, Triton, the C++ extension and DALI are usable."""

from __future__ import annotations

import argparse

HELP = (
    "print versions and which optional backends (CUDA, Triton, C++, DALI) are usable, and why not"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def run(args: argparse.Namespace) -> int:
    from fastscarlet import __version__, nds
    from fastscarlet.env import report
    from fastscarlet.kernels.dispatch import current_mode, explain

    print(f"fastscarlet {__version__}")
    print(report())
    print(f"{'nds backend':<15} {nds.backend()} (FASTSCARLET_NDS_BACKEND)")
    print(f"{'kernel mode':<15} {current_mode()} (FASTSCARLET_KERNELS)")
    print(f"{'on CUDA runs':<15} {explain('cuda')}")
    return 0
