"""The `darklens` command line: each sub-command lives in `darklens.commands.<name>`.

A command module defines ``register(subparsers)`` which adds its parser and sets
``func`` (called with the parsed arguments, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from darklens import __version__
from darklens.errors import DarklensError

COMMAND_MODULES: tuple[str, ...] = (
    "simulate",
    "show",
    "convert_deeplense",
    "demo",
    "train",
    "evaluate",
    "score",
    "fit",
    "regress",
    "benchmark",
    "sweep",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="darklens",
        description="Find and measure dark-matter substructure in strong-lensing images.",
    )
    parser.add_argument("--version", action="version", version=f"darklens {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"darklens.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: user mistakes end in one clear line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DarklensError as err:
        print(f"darklens {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"darklens {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
