"""The ``di3cl`` command line: each library module contributes its own sub-commands.

Every module listed in :data:`COMMAND_MODULES` defines ``register_cli(subparsers)``, which adds its
``argparse`` sub-parsers and binds them with ``set_defaults(func=...)``; ``func(args)`` returns the
exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = ("convert", "data", "inference", "hub")


def build_parser() -> argparse.ArgumentParser:
    """Build the ``di3cl`` parser with the sub-commands of every command module."""
    parser = argparse.ArgumentParser(
        prog="di3cl",
        description="DI3CL, the SAR land-cover foundation model: conversion, data, scene inference and Hub tools.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"di3cl_hf.{name}")
        module.register_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``di3cl`` with ``argv`` (defaults to ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as error:
        print(f"di3cl {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["build_parser", "main"]
