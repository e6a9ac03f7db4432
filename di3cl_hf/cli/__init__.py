"""The ``di3cl`` command line: one module per command group, each with ``register(subparsers)``.

- :mod:`.predict`: ``predict`` (scene -> class map GeoTIFF) and ``embed`` (patches -> embeddings)
- :mod:`.data`: ``make-synthetic`` and ``export-parquet``
- :mod:`.hub`: ``push`` (model / dataset / Space) and ``export-timm``
- :mod:`.convert`: ``convert-original`` (the original release's checkpoints)
- :mod:`.onnx`: ``export-onnx`` (encoder / segmentation model to ONNX)
- :mod:`.ship`: ``ship-model`` (a fine-tuned model as the package's shipped folder)
- :mod:`.train`: ``pretrain``, ``finetune`` and ``evaluate`` (modes ``model``, ``grid``, ``probe``)

Each ``register`` adds its ``argparse`` sub-parsers and binds them with ``set_defaults(func=...)``;
``func(args)`` returns the exit code.
"""

from __future__ import annotations

import argparse
import sys

from transformers.utils import logging as transformers_logging

from . import convert, data, hub, onnx, predict, ship, train

COMMAND_GROUPS = (train, convert, data, predict, hub, onnx, ship)


def build_parser() -> argparse.ArgumentParser:
    """Build the ``di3cl`` parser with the sub-commands of every command group."""
    parser = argparse.ArgumentParser(
        prog="di3cl",
        description="DI3CL, the SAR land-cover foundation model: training, conversion, data, scene inference and Hub tools.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``di3cl`` with ``argv`` (defaults to ``sys.argv[1:]``) and return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    verbosity, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    # transformers' loading bars and load reports would bury a one-line refusal; its errors still raise
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as error:
        print(f"di3cl {args.command}: error: {error}", file=sys.stderr)
        return 1
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()


__all__ = ["build_parser", "main"]
