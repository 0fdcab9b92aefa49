"""``fastscarlet info``: versions, and whether CUDA, Triton, the C++ extension and DALI are usable."""

from __future__ import annotations

import argparse

HELP = (
    "print versions and which optional backends (CUDA, Triton, C++, DALI) are usable, and why not"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dispatch",
        action="store_true",
        help="also list every cached MBConv dispatch decision (signature, choice, times, why)",
    )


def run(args: argparse.Namespace) -> int:
    from fastscarlet import __version__, nds
    from fastscarlet.env import report
    from fastscarlet.kernels.dispatch import current_mode, explain

    print(f"fastscarlet {__version__}")
    print(report())
    print(f"{'nds backend':<15} {nds.backend()} (FASTSCARLET_NDS_BACKEND)")
    print(f"{'kernel mode':<15} {current_mode()} (FASTSCARLET_KERNELS)")
    print(f"{'on CUDA runs':<15} {explain('cuda')}")
    print(dispatch_report(full=getattr(args, "dispatch", False)))
    return 0


def dispatch_report(full: bool = False) -> str:
    """The verified candidates and the measured decisions cached on this machine (per device
    and library version); with ``full`` every decision, else a count per file."""
    from collections import Counter

    from fastscarlet.kernels.autotune import CACHE_ENV, cache_dir, read_cache
    from fastscarlet.kernels.dispatch import VERIFIED_CANDIDATES

    verified = ", ".join(sorted(VERIFIED_CANDIDATES)) or "none at this commit"
    folder = cache_dir()
    lines = [
        f"{'verified':<15} MBConv candidates auto may measure: {verified}",
        f"{'dispatch cache':<15} {folder} ({CACHE_ENV})",
    ]
    files = sorted(folder.glob("dispatch-*.json")) if folder.is_dir() else []
    if not files:
        lines.append(f"{'':<15} no measured decisions yet")
    for path in files:
        try:
            data = read_cache(path)
            entries = data["entries"]
        except (OSError, ValueError) as exc:
            lines.append(
                f"{'':<15} {path.name}: unreadable ({exc}); rebuilt at the next measurement"
            )
            continue
        chosen = Counter(entry.get("choice", "?") for entry in entries.values())
        counts = ", ".join(f"{n} {c}" for n, c in sorted(chosen.items())) or "empty"
        lines.append(
            f"{'':<15} {path.name}: {data.get('device')} v{data.get('version')}: "
            f"{len(entries)} signatures ({counts})"
        )
        if full:
            for key, entry in sorted(entries.items()):
                times = ", ".join(
                    f"{n} {t * 1e6:.1f} us" for n, t in sorted(entry.get("times", {}).items())
                )
                lines.append(
                    f"{'':<17}{key}: {entry.get('choice')} [{times}] {entry.get('reason')}"
                )
    return "\n".join(lines)
