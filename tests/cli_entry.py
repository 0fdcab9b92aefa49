"""`fastscarlet` with the test space registered: ``python cli_entry.py ARGS`` (torchrun in tests)."""

import sys

import tiny  # noqa: F401  (registers the tiny space)

from fastscarlet.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
