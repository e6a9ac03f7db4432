"""``di3cl ship-model``: write a fine-tuned segmentation model as the package's shipped folder.

The work is :func:`di3cl_hf.hub.ship.ship_model` (fp16 weights loaded as fp32, card with the measured tables,
files listed with their sizes, checked, written atomically); this module is its ``argparse`` front end. A text
argument starting with ``@`` is read from that file (``--tables @results/real/flood.md``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..hub.cards import DEFAULT_LICENSE, read_json
from ..hub.ship import MAX_SHIPPED_BYTES, describe, ship_model
from ..radiometry import RADIOMETRY_KINDS
from ..weights import DEFAULT_WATER_MODEL


def _text(value: str | None) -> str:
    """``@path`` -> the file's text; anything else as it is."""
    if value is None:
        return ""
    if value.startswith("@"):
        path = Path(value[1:])
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (from {value})")
        return path.read_text(encoding="utf-8")
    return value


def _run(args: argparse.Namespace) -> int:
    extra = {}
    for item in args.fact or []:
        key, separator, value = item.partition("=")
        if not separator or not key.strip():
            raise ValueError(f"--fact {item!r}: expected KEY=TEXT")
        extra[key.strip()] = _text(value)
    report = ship_model(
        args.source,
        args.target,
        tables=_text(args.tables),
        training_data=_text(args.training_data),
        data_terms=_text(args.data_terms),
        wall_time=_text(args.wall_time),
        machine=_text(args.machine),
        initialisation=_text(args.initialisation),
        expected_input=_text(args.expected_input),
        limitations=_text(args.limitations),
        title=_text(args.title),
        extra=extra,
        repo_id=args.repo_id,
        evaluation=args.evaluation,
        datasets=args.dataset or None,
        base_model=args.base_model,
        run_info=read_json(args.run_info) if args.run_info else None,
        license=args.license,
        input_kind=args.input_kind,
        overwrite=args.overwrite,
        max_bytes=int(args.max_mb * 1e6),
    )
    print(describe(report))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``di3cl ship-model`` to the ``di3cl`` command line."""
    parser = subparsers.add_parser(
        "ship-model",
        help="write a fine-tuned segmentation model as the package's shipped folder (fp16, card, checked)",
        description=(
            "Write SOURCE (a save_pretrained DI3CLForSemanticSegmentation folder with its processor) as a shipped\n"
            "folder: config.json (dtype float32), model.safetensors with every floating tensor in fp16 (finite,\n"
            "fp16->fp32->fp16 bit-exact, checked), preprocessor_config.json, the remote-code files and a README.md\n"
            "card with the measured tables, training data and terms, wall time, machine and the files with their\n"
            "sizes. Written to a temporary folder, loaded back and checked, then renamed into place.\n"
            "Text options take TEXT or @FILE."
        ),
        epilog=(
            "example:\n  di3cl ship-model runs/etci-water --tables @results/real/flood.md \\\n"
            "    --training-data @notes/data.md --data-terms @notes/terms.md --wall-time '38 min' \\\n"
            "    --machine 'AMD EPYC, 2 cores' --initialisation random --evaluation results/real/flood-model.json\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help="fine-tuned model folder (save_pretrained output, fp32)")
    parser.add_argument(
        "target", nargs="?", default=str(DEFAULT_WATER_MODEL),
        help=f"shipped folder to write (default: {DEFAULT_WATER_MODEL})",
    )  # fmt: skip
    card = parser.add_argument_group("model card (TEXT or @FILE, markdown)")
    card.add_argument("--tables", required=True, help="the measured tables (e.g. @results/real/flood.md)")
    card.add_argument("--training-data", required=True, help="what it was trained on (sets, splits, labels)")
    card.add_argument(
        "--data-terms", required=True, help="the training data's terms (redistribution, license)"
    )
    card.add_argument("--wall-time", required=True, help="training wall time")
    card.add_argument("--machine", required=True, help="the machine it was trained on")
    card.add_argument(
        "--initialisation", required=True, help="the encoder it was fine-tuned from (e.g. random)"
    )
    card.add_argument("--expected-input", default=None, help="polarisations, radiometry, single date or pair")
    card.add_argument("--limitations", default=None, help="where it fails (per-event / per-region scores)")
    card.add_argument("--title", default=None, help="one line under the card's title")
    card.add_argument("--fact", action="append", metavar="KEY=TEXT", help="another line of 'This model'")
    card.add_argument("--evaluation", default=None, help="the model's test scores JSON (model-index)")
    card.add_argument("--repo-id", default=None, help="Hub id for the card's snippets")
    card.add_argument("--dataset", action="append", default=[], help="Hub id of training data (repeatable)")
    card.add_argument("--base-model", default=None, help="Hub id of the encoder it was fine-tuned from")
    card.add_argument("--run-info", default=None, help="JSON of run facts (default: the source card's)")
    card.add_argument(
        "--license", default=DEFAULT_LICENSE, help=f"license of the weights (default {DEFAULT_LICENSE})"
    )
    parser.add_argument(
        "--input-kind",
        choices=RADIOMETRY_KINDS,
        default=None,
        help="the processor's input_kind to ship (default: the source's); auto reads 8-bit tiles as dn8 and "
        "float dB / linear GeoTIFFs by their values, a declared dn8 refuses dB input",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing shipped folder")
    parser.add_argument(
        "--max-mb",
        type=float,
        default=MAX_SHIPPED_BYTES / 1e6,
        help="size limit of the folder in MB (default 30)",
    )
    parser.set_defaults(func=_run)


__all__ = ["register"]
