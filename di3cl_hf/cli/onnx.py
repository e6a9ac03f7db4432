"""``di3cl export-onnx``: a DI3CL encoder or segmentation model as one ONNX file (:mod:`di3cl_hf.inference.onnx`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from transformers import AutoConfig

from ..inference.onnx import ONNX_OPSET, export_onnx
from ..inference.outputs import check_output_path
from ..loading import load_model_and_processor, remote_code_error

TASKS = ("auto", "segmentation", "features")


def _task(model_ref: str, task: str, local_files_only: bool, trust_remote_code: bool = False) -> str:
    """``segmentation`` for a DI3CLForSemanticSegmentation folder, else ``features`` (the encoder)."""
    if task != "auto":
        return task
    try:
        config = AutoConfig.from_pretrained(
            model_ref, local_files_only=local_files_only, trust_remote_code=trust_remote_code
        )
    except ValueError as error:
        raise remote_code_error(model_ref, error) from None
    return "segmentation" if "DI3CLForSemanticSegmentation" in (config.architectures or []) else "features"


def _run_export(args: argparse.Namespace) -> int:
    if Path(args.output).suffix.lower() != ".onnx":
        raise ValueError(f"{args.output}: the output must end in .onnx")
    check_output_path(args.output, overwrite=args.overwrite, flag="--overwrite")  # before loading the model
    task = _task(args.model, args.task, args.local_files_only, args.trust_remote_code)
    model, processor = load_model_and_processor(
        args.model, task, local_files_only=args.local_files_only, trust_remote_code=args.trust_remote_code
    )
    result = export_onnx(
        model,
        processor,
        args.output,
        opset=args.opset,
        example_size=args.example_size,
        overwrite=args.overwrite,
        verify=not args.no_verify,
    )
    check = (
        ""
        if result.max_abs_diff is None
        else f"; onnxruntime vs torch fp32 max abs diff {result.max_abs_diff:.2e}"
    )
    print(
        f"{args.model} -> {result.path}: {type(model).__name__}, output {result.output} "
        f"(dynamic batch/height/width), opset {result.opset}{check}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export-onnx`` to the ``di3cl`` command line."""
    parser = subparsers.add_parser(
        "export-onnx",
        help="export a DI3CL encoder or segmentation model to ONNX (needs the [onnx] extra)",
        description=(
            "Export DI3CLForSemanticSegmentation (output `logits` [B, K, H, W]) or DI3CLModel (output\n"
            "`last_hidden_state` [B, C, H/32, W/32]) to one ONNX file: input `pixel_values` float32\n"
            "[B, C, H, W] with dynamic batch, height and width (multiples of 32), TorchScript exporter,\n"
            f"opset {ONNX_OPSET} by default. The preprocessing (dB conversion, clipping range, mean/std,\n"
            "input kind, channels) is stored in the file's metadata_props (di3cl.*). The file is written\n"
            "atomically and checked against PyTorch with onnxruntime."
        ),
        epilog="example:\n  di3cl export-onnx outputs/water water.onnx\n  di3cl predict water.onnx scene.tif "
        "water.tif --backend onnxruntime\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="model folder or Hub id")
    parser.add_argument("output", metavar="OUT.onnx", help="the ONNX file to write")
    parser.add_argument(
        "--task", choices=TASKS, default="auto", help="what to export (default: from the config)"
    )
    parser.add_argument("--opset", type=int, default=ONNX_OPSET, help=f"ONNX opset (default {ONNX_OPSET})")
    parser.add_argument("--example-size", type=int, default=128, help="example input size for tracing (px)")
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")
    parser.add_argument("--local-files-only", action="store_true", help="never contact the Hub for MODEL")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT.onnx")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run Python code shipped with MODEL (auto_map) for a model type this package does not know",
    )
    parser.set_defaults(func=_run_export)


__all__ = ["register"]
