"""``di3cl pretrain``, ``di3cl finetune`` and ``di3cl evaluate``: the training loops from the command line.

Each command's flags are the fields of the argument dataclass the example scripts parse, with
``transformers.HfArgumentParser``'s rules (``--name value``, ``--flag`` / ``--no_flag`` for booleans, several values
for lists); ``--help`` prints each with its default. One ``ARGS.json`` file holding those fields may replace the
flags. Several processes: ``accelerate launch -m di3cl_hf.cli pretrain ...`` (or ``examples/pretrain.py``).

- ``pretrain``: :class:`~di3cl_hf.training.pretraining_args.PretrainingArguments` ->
  :func:`di3cl_hf.training.pretraining.main`
- ``finetune``: :class:`~di3cl_hf.training.finetuning_args.FinetuneArguments` ->
  :func:`di3cl_hf.training.finetuning.finetune`
- ``evaluate``: score a model on a labelled set, in one of three modes (:mod:`di3cl_hf.training.evaluation_args`):
  ``model`` (a saved segmentation model on one split), ``grid`` (the label-fraction grid of fine-tunings) and
  ``probe`` (frozen encoders on labelled chips: linear probe, k-NN, few-shot)
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser

from ..training.evaluation_args import EvaluationGridArguments, ModelEvaluationArguments, ProbeArguments
from ..training.finetuning_args import FinetuneArguments
from ..training.pretraining_args import PretrainingArguments


def _pretrain(args: PretrainingArguments) -> int:
    from ..training.pretraining import main

    return main(args)


def _finetune(args: FinetuneArguments) -> int:
    from ..training.finetuning import finetune, metrics_summary

    print(metrics_summary(finetune(args)))
    return 0


def _evaluate_model(args: ModelEvaluationArguments) -> int:
    from ..training.evaluation import evaluate_model
    from ..training.metrics import format_table

    scores = evaluate_model(args)
    print(format_table({Path(args.model_name_or_path).name: scores}), end="")
    print(f"{args.output_dir}: metrics.json, metrics.md")
    return 0


def _evaluate_grid(args: EvaluationGridArguments) -> int:
    from ..training.evaluation import comparison_table, run_evaluation_grid

    summary = run_evaluation_grid(args)
    print(comparison_table(summary), end="")
    print(f"{args.output_dir}: evaluation.json, evaluation.md, label_efficiency.png")
    return 0


def _evaluate_probe(args: ProbeArguments) -> int:
    from ..training.probing import probes_table, run_probes

    print(probes_table(run_probes(args)), end="")
    print(f"{args.output_dir}: probes.json, probes.md")
    return 0


@dataclass(frozen=True)
class Command:
    """A command built from an argument dataclass: its name, the dataclass, what runs it, its help texts."""

    name: str
    arguments: type
    run: Callable[[Any], int]
    help: str
    description: str


COMMANDS = (
    Command(
        "pretrain", PretrainingArguments, _pretrain, "pre-train DI3CL on SAR patches (Accelerate)",
        "Pre-train DI3CL (MoCo v2 + contour consistency + dynamic instances) on a folder of SAR patches, Parquet "
        "shards or a datasets dataset; writes checkpoints, logs and <output_dir>/encoder. The flags are the fields "
        "of PretrainingArguments (examples/pretrain.py takes the same).",
    ),
    Command(
        "finetune", FinetuneArguments, _finetune, "fine-tune a segmentation head (land cover, water, roads)",
        "Fine-tune UperNet on a DI3CL encoder (or ImageNet / random initialisation) on a labelled segmentation "
        "folder and score the test split; writes the model, its card and metrics.json. The flags are the fields of "
        "FinetuneArguments (examples/finetune.py takes the same).",
    ),
)  # fmt: skip

EVALUATION_MODES = (
    Command(
        "model", ModelEvaluationArguments, _evaluate_model, "score a saved segmentation model on a labelled split",
        "Score a saved segmentation model on one split of a labelled segmentation folder: OA, kappa, mIoU, "
        "per-class IoU / F1 (relaxed F1 for roads); writes metrics.json and metrics.md.",
    ),
    Command(
        "grid", EvaluationGridArguments, _evaluate_grid, "the label-fraction grid: initialisation x fraction x task",
        "Fine-tune every (task, initialisation, label fraction, seed) with one budget, score the test splits and "
        "k-means clusters of the frozen encoders; writes evaluation.json, evaluation.md and label_efficiency.png. "
        "The flags are the fields of EvaluationGridArguments (examples/evaluate.py takes the same).",
    ),
    Command(
        "probe", ProbeArguments, _evaluate_probe, "frozen encoders on labelled chips: linear probe, k-NN, few-shot",
        "Score frozen encoders on labelled image chips (<data_dir>/<split>/<class>/<image>): linear probe, k-NN "
        "and k-shot linear probes on pooled features; writes probes.json and probes.md.",
    ),
)  # fmt: skip


def add_dataclass_arguments(parser: argparse.ArgumentParser, dataclass_type: type) -> list[argparse.Action]:
    """Add every field of ``dataclass_type`` as a flag, by ``transformers.HfArgumentParser``'s rules, and an optional
    ``ARGS.json`` positional; returns the actions of the fields without a default (required unless a JSON file is
    given, checked by :func:`arguments_from`)."""
    hints = typing.get_type_hints(dataclass_type)
    before = set(parser._actions)
    for item in dataclasses.fields(dataclass_type):
        if item.init:
            item.type = hints[item.name]  # as HfArgumentParser does
            HfArgumentParser._parse_dataclass_field(parser, item)
    required = [action for action in parser._actions if action not in before and action.required]
    for action in required:
        action.required, action.default = False, argparse.SUPPRESS  # absent from the namespace until given
        action.help = f"{action.help} Required (unless ARGS.json is given)."
    parser.add_argument(
        "args_file",
        nargs="?",
        default=argparse.SUPPRESS,
        metavar="ARGS.json",
        help="a .json file holding these fields, instead of the flags",
    )
    return required


def arguments_from(
    namespace: argparse.Namespace,
    dataclass_type: type,
    parser: argparse.ArgumentParser,
    required: list[argparse.Action],
) -> Any:
    """The ``dataclass_type`` instance of a parsed command line (or of its ``ARGS.json`` file)."""
    args_file = getattr(namespace, "args_file", None)
    if args_file:
        if not args_file.endswith(".json"):
            parser.error(f"{args_file}: expected a .json file of arguments")
        (arguments,) = HfArgumentParser(dataclass_type).parse_json_file(json_file=args_file)
        return arguments
    missing = [action.option_strings[0] for action in required if not hasattr(namespace, action.dest)]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    values = {
        item.name: getattr(namespace, item.name) for item in dataclasses.fields(dataclass_type) if item.init
    }
    return dataclass_type(**values)


def _add_command(subparsers: argparse._SubParsersAction, command: Command) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        command.name,
        help=command.help,
        description=command.description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    required = add_dataclass_arguments(parser, command.arguments)

    def run(namespace: argparse.Namespace) -> int:
        return command.run(arguments_from(namespace, command.arguments, parser, required))

    parser.set_defaults(func=run)
    return parser


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``pretrain``, ``finetune`` and ``evaluate`` (modes ``model``, ``grid``, ``probe``) to ``di3cl``."""
    for command in COMMANDS:
        _add_command(subparsers, command)
    evaluate = subparsers.add_parser(
        "evaluate",
        help="score a model on a labelled set (modes: model, grid, probe)",
        description="Score a model on a labelled set. One word, three modes: `model` scores a saved segmentation "
        "model, `grid` fine-tunes and scores the label-fraction grid, `probe` scores frozen encoders on labelled "
        "chips. `di3cl evaluate MODE --help` lists each mode's flags.",
    )
    modes = evaluate.add_subparsers(dest="mode", metavar="MODE", required=True)
    for mode in EVALUATION_MODES:
        _add_command(modes, mode)


__all__ = ["COMMANDS", "EVALUATION_MODES", "Command", "add_dataclass_arguments", "arguments_from", "register"]
