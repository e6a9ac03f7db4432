"""``di3cl predict`` (SAR scenes -> georeferenced class maps) and ``di3cl embed`` (patches -> features).

``di3cl predict IN OUT`` predicts one scene with the shipped Sentinel-1 water model
(:data:`di3cl_hf.weights.DEFAULT_WATER_MODEL`); ``--model MODEL`` or a leading MODEL positional
(``di3cl predict MODEL IN OUT``, the original form) chooses another. ``di3cl predict [MODEL] INPUT... --output-dir DIR``
predicts many (files, folders, globs, ``@list.txt``; ``{id}_vv`` + ``{id}_vh`` files as one dual-pol
scene), skips complete outputs, keeps going after a bad scene, and splits the scenes between the
processes of ``accelerate launch`` (see :mod:`di3cl_hf.inference.batch`). ``--backend onnxruntime``
runs a model exported by ``di3cl export-onnx``.

Both commands check their output path before loading the model (never an input, also through a
link; an existing file only with ``--overwrite``; a writable folder), load the model with
:func:`di3cl_hf.loading.load_model_and_processor`, and leave nothing behind when stopped by Ctrl-C or
SIGTERM (:class:`di3cl_hf.runtime.StopSignal`).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..data.sario import SUPPORTED_SUFFIXES, list_sar_files
from ..inference.batch import (
    check_output_folder,
    collect_inputs,
    format_summary,
    inputs_inside,
    plan_scenes,
    process_share,
    readable_jobs,
    run_scene,
)
from ..inference.embeddings import POOLINGS, check_embeddings_output, embed_files, save_embeddings
from ..inference.outputs import check_output_path, remove_stale_temporaries
from ..inference.provenance import PROVENANCE_TAG, prediction_provenance
from ..inference.scene import MIN_TILE_SIZE, OUTPUT_TYPES, SceneOptions, predict_scene
from ..inference.sources import open_source
from ..loading import load_model_and_processor
from ..radiometry import RADIOMETRY_KINDS
from ..runtime import PRECISIONS, StopSignal
from ..weights import DEFAULT_WATER_MODEL, shipped_model_path

_SAR_HELP = """\
SAR input:
  files     GeoTIFF/TIFF (float32 dB, linear intensity or amplitude; int16/uint16 digital numbers;
            complex SLC), PNG/JPG (8-bit quick-looks) or .npy ([C, H, W] or [H, W]).
  bands     1 band (VV, or any single polarisation) or 2 bands (VV, VH in that order); pick them in
            files with more bands with --bands, by 1-based index or by name (the GeoTIFF band
            descriptions), e.g. --bands 1 2 or --bands VV VH on a quad-pol HH, HV, VH, VV file;
            --bands 1 2 3 for an 8-bit Pauli RGB composite and a 3-channel model. A single band fed
            to a dual-pol model is replicated; a 2-band input to a single-pol model uses the first band.
  radiometry  --input-kind auto|db|intensity|amplitude|dn8|dn16|complex. "auto" (default, unless the
            model's processor declares one) decides once per file: complex -> complex, uint8 -> dn8,
            other integers -> dn16, floats with a negative median -> dB, other floats -> linear
            intensity. Amplitude cannot be told from intensity and must be declared. A declared
            kind is applied to every dtype it fits (uint8 or 16-bit DN as amplitude, intensity, dB);
            complex SLC takes only complex; a kind that does not fit the dtype is refused.
  dB range  values are converted to dB, clipped to --db-range LOW HIGH (default: the model
            processor's, normally -30 5) and normalised with the processor's statistics.
  nodata    the file's nodata value, NaN/inf and the --nodata value are invalid; they are zero
            (the normalised mean) in the model input and 255 in predicted maps.
  outputs   never an input file; an existing output is replaced only with --overwrite.
"""

_MANY_HELP = """
many scenes (--output-dir DIR):
  inputs    files, folders (their SAR files), glob patterns, @list.txt (one input per line, # comments,
            paths relative to the list). {id}_vv.tif + {id}_vh.tif (also _hh/_hv) are one dual-pol scene.
  outputs   DIR/{id}_classes.tif (or _probabilities.tif), each written atomically. A complete output
            (a readable uint8 GeoTIFF of the scene's size and band count, made by the same model with the
            same options: its DI3CL_PROVENANCE tag) is skipped, so a stopped run resumes where it stopped;
            an earlier map made by another model or with other options is recomputed; --overwrite
            recomputes all. Inputs inside DIR are refused. A bad scene is reported and the rest run;
            the exit status is 1 when any scene failed.
  processes under `accelerate launch` (or torchrun) the scenes are split between the processes without
            overlap (process r of n takes scenes r, r+n, ...; GPU = LOCAL_RANK); rank 0 prints the summary.
"""

_MODEL_HELP = f"""
model:
  default   without --model and without a leading MODEL, the shipped Sentinel-1 water / flood model
            ({DEFAULT_WATER_MODEL.name}: VV + VH, see its README.md) in {DEFAULT_WATER_MODEL.parent}.
  --model   a folder written by save_pretrained, a Hub id, or a .onnx file with --backend onnxruntime.
  MODEL     the original form still works: the first path is MODEL when there are exactly three
            (MODEL INPUT OUTPUT), or when it is a model folder (holding config.json), a .onnx file or
            a Hub id (org/name, not a local path) before INPUT... --output-dir DIR.

"""

# A Hub id (org/name) as opposed to a local input path.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")

# The Python spelling of a band choice in library messages, e.g. "pass bands=(1, 2)".
_PYTHON_BANDS = re.compile(r"\bbands=\(([\w,\s'\"]*)\)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _band(text: str) -> int | str:
    """A ``--bands`` item: a 1-based index (digits) or a band name (e.g. VV)."""
    if text.strip().isdigit():
        return _positive_int(text)
    if not text.strip() or text.strip().startswith("-"):
        raise argparse.ArgumentTypeError(f"expected a 1-based band index or a band name, got {text!r}")
    return text.strip()


def _tile_size(text: str) -> int:
    value = int(text)
    if value < MIN_TILE_SIZE:
        raise argparse.ArgumentTypeError(
            f"must be at least {MIN_TILE_SIZE} (the network's stride; a multiple of 32 such as 256 or 512), got {text}"
        )
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def command_line_message(message: str) -> str:
    """``message`` with the Python spelling of a band choice (``bands=(1, 2)``) in the CLI's (``--bands 1 2``)."""
    return _PYTHON_BANDS.sub(
        lambda m: " ".join(
            ["--bands", *m.group(1).replace(",", " ").replace("'", "").replace('"', "").split()]
        ),
        message,
    )


@contextlib.contextmanager
def _command_line_errors() -> Iterator[None]:
    """Re-raise library ``ValueError``s whose advice is spelled for Python with the CLI's spelling."""
    try:
        yield
    except ValueError as error:
        message = command_line_message(str(error))
        if message == str(error):
            raise
        raise ValueError(message) from error


def _interrupted(command: str, interrupt: KeyboardInterrupt, output: str) -> int:
    """Report a run stopped by Ctrl-C / SIGTERM (nothing was written) and return the shell's exit code."""
    reason = str(interrupt) or "interrupted"
    print(f"di3cl {command}: {reason}; nothing written to {output}", file=sys.stderr)
    return 143 if "SIGTERM" in reason else 130


def _add_sar_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("SAR input options (see below)")
    group.add_argument(
        "--bands",
        type=_band,
        nargs="+",
        metavar="BAND",
        help="bands to use: 1-based indexes or band names (GeoTIFF band descriptions), e.g. 1 2 or VV VH",
    )
    group.add_argument(
        "--input-kind",
        choices=RADIOMETRY_KINDS,
        default=None,
        help="radiometric kind of the pixel values (default: the processor's, normally auto)",
    )
    group.add_argument(
        "--db-range", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None, help="dB clipping range"
    )
    group.add_argument("--nodata", type=float, default=None, help="extra value marking missing pixels")


def _add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime")
    group.add_argument(
        "--batch-size", type=_positive_int, default=4, help="tiles/patches per forward pass (default 4)"
    )
    group.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto: bf16 autocast where the device runs it natively, else fp32; or force bf16, fp16, fp32",
    )
    group.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    group.add_argument("--local-files-only", action="store_true", help="never contact the Hub for MODEL")
    group.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    group.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run Python code shipped with MODEL (auto_map) for a model type this package does not know",
    )
    group.add_argument("--quiet", action="store_true", help="no progress bar")


def _processor_overrides(args: argparse.Namespace) -> dict[str, Any]:
    if args.db_range is not None and not args.db_range[0] < args.db_range[1]:
        raise ValueError(f"--db-range: LOW must be below HIGH, got {args.db_range}")
    return {"input_kind": args.input_kind, "db_range": args.db_range, "nodata_value": args.nodata}


def _looks_like_model(path: str) -> bool:
    """A model reference rather than a scene: a folder with config.json, a .onnx file, or a Hub id that is no
    local path (and no SAR file name or glob pattern)."""
    candidate = Path(path)
    if candidate.is_dir():
        return (candidate / "config.json").is_file()
    if candidate.suffix.lower() == ".onnx":
        return True
    return (
        not candidate.exists()
        and _HUB_ID.fullmatch(path) is not None
        and candidate.suffix.lower() not in SUPPORTED_SUFFIXES
    )


def resolve_model_argument(args: argparse.Namespace) -> None:
    """Set ``args.model`` and ``args.inputs`` from ``--model`` and the positionals (see ``--help``, "model").

    ``--model`` given: every positional is an input. Otherwise the first positional is MODEL when there are
    exactly three of them without ``--output-dir`` (``MODEL INPUT OUTPUT``) or when it looks like a model
    (:func:`_looks_like_model`); else the shipped model is used (``args.default_model`` True).
    """
    paths = list(args.paths)
    args.default_model = False
    if args.model is not None:
        args.inputs = paths
        return
    if len(paths) >= 2 and ((args.output_dir is None and len(paths) == 3) or _looks_like_model(paths[0])):
        args.model, args.inputs = paths[0], paths[1:]
        return
    if args.backend == "onnxruntime":
        raise ValueError(
            "--backend onnxruntime needs the .onnx file: --model FILE.onnx (no shipped ONNX model)"
        )
    args.model, args.inputs, args.default_model = str(shipped_model_path()), paths, True


def _check_predict_arguments(args: argparse.Namespace) -> None:
    """Everything that can be checked before the model is loaded and the scene computed."""
    if args.overlap >= args.tile_size:
        raise ValueError(f"--overlap ({args.overlap}) must be smaller than --tile-size ({args.tile_size})")
    if args.backend == "onnxruntime" and not Path(args.model).is_file():
        raise FileNotFoundError(
            f"{args.model}: no such file; --backend onnxruntime takes a .onnx file as MODEL"
        )
    if args.output_dir is not None:
        check_output_folder(args.output_dir)
        inside = inputs_inside(args.inputs, args.output_dir)
        if inside:
            raise ValueError(
                f"--output-dir {args.output_dir}: {len(inside)} input(s) lie inside it ({', '.join(inside[:3])}"
                f"{', ...' if len(inside) > 3 else ''}); files there are never read as scenes (earlier maps would "
                "be taken for scenes): move them or choose another --output-dir"
            )
        return
    if len(args.inputs) != 2:
        raise ValueError(
            f"give INPUT OUTPUT for one scene, or INPUT... --output-dir DIR for several ({len(args.inputs)} paths given)"
        )
    args.input, args.output = args.inputs
    if not Path(args.input).exists():
        raise FileNotFoundError(f"{args.input}: no such file")
    check_output_path(args.output, [args.input], overwrite=args.overwrite, flag="--overwrite")
    with open_source(args.input):  # an unreadable input is refused before the model loads
        pass


def _load_segmentation_model(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """``(model, processor, precision)`` for the chosen backend (onnxruntime runs fp32 on the CPU)."""
    overrides = _processor_overrides(args)
    if args.backend == "onnxruntime":
        from ..inference.onnx import load_onnx_model  # optional dependency (the [onnx] extra)

        model, processor = load_onnx_model(args.model, overrides)
        return model, processor, "fp32"
    model, processor = load_model_and_processor(
        args.model,
        "segmentation",
        overrides,
        local_files_only=args.local_files_only,
        trust_remote_code=args.trust_remote_code,
    )
    return model, processor, args.precision


def _scene_options(
    args: argparse.Namespace, processor: Any, precision: str, device: str | None
) -> SceneOptions:
    """predict_scene's options from the command line (flag -> field of the same name)."""
    return SceneOptions(
        tile_size=args.tile_size,
        overlap=args.overlap,
        batch_size=args.batch_size,
        bands=args.bands or getattr(processor, "bands", None),
        output_type=args.output_type,
        precision=precision,
        device="cpu" if args.backend == "onnxruntime" else device,
        cog=not args.no_cog,
        progress=not args.quiet,
    )


def _provenance(args: argparse.Namespace, model: Any, processor: Any, precision: str) -> str:
    """What makes the map (model fingerprint, processor, options that change it): the outputs' tag."""
    options = {
        "tile_size": args.tile_size,
        "overlap": args.overlap,
        "bands": args.bands or getattr(processor, "bands", None),
        "output_type": args.output_type,
        "backend": args.backend,
        "precision": precision,
    }
    return prediction_provenance(model, processor, options)


def _run_predict(args: argparse.Namespace) -> int:
    resolve_model_argument(args)
    _check_predict_arguments(args)
    if args.default_model and not args.quiet:
        print(f"model: {args.model} (the shipped default; --model chooses another)", flush=True)
    if args.output_dir is not None:
        return _run_predict_many(args)
    model, processor, precision = _load_segmentation_model(args)
    tags = {PROVENANCE_TAG: _provenance(args, model, processor, precision)}
    remove_stale_temporaries(args.output)
    try:
        with _command_line_errors():
            result = predict_scene(
                model,
                args.input,
                args.output,
                processor,
                options=_scene_options(args, processor, precision, args.device),
                overwrite=args.overwrite,
                tags=tags,
            )
    except KeyboardInterrupt as interrupt:
        return _interrupted("predict", interrupt, args.output)
    print(
        f"{result.path}: {result.height}x{result.width} px, {result.num_tiles} tiles "
        f"({result.tiles_skipped} all-nodata skipped), {result.seconds:.1f} s, "
        f"{result.megapixels_per_second:.2f} Mpx/s, {result.autocast_dtype}, input {result.input_kind}"
    )
    return 0


def _run_predict_many(args: argparse.Namespace) -> int:
    """Many scenes into ``--output-dir``; this process's share of them under a multi-process launcher."""
    share = process_share()
    start = time.perf_counter()
    files, failures = collect_inputs(args.inputs)
    jobs, unplanned = plan_scenes(files, args.output_dir, args.output_type)
    mine, unreadable = readable_jobs(jobs[share.rank :: share.world_size])  # before the model loads
    outcomes = (failures + unplanned) if share.is_main else []  # reported once, not by every process
    outcomes += unreadable
    for outcome in unreadable:
        print(f"[{share.rank}/{share.world_size}] failed {outcome.output} ({outcome.reason})", flush=True)
    try:
        if mine:
            model, processor, precision = _load_segmentation_model(args)
            options = _scene_options(args, processor, precision, share.device(args.device))
            bands = 1 if args.output_type == "classes" else int(model.config.num_labels)
            provenance = _provenance(args, model, processor, precision)
            tags = {PROVENANCE_TAG: provenance}

            def predict(source: Any, output: Path, overwrite: bool) -> Any:
                with _command_line_errors():
                    return predict_scene(
                        model, source, output, processor, options=options, overwrite=overwrite, tags=tags
                    )

            for job in mine:
                outcome = run_scene(
                    job, predict, bands, overwrite=args.overwrite, rank=share.rank, provenance=provenance
                )
                note = f" ({outcome.reason})" if outcome.reason else ""
                print(f"[{share.rank}/{share.world_size}] {outcome.status} {job.output}{note}", flush=True)
                outcomes.append(outcome)
    except KeyboardInterrupt as interrupt:
        return _interrupted("predict", interrupt, args.output_dir)
    outcomes = share.gather(outcomes)
    share.close()
    if share.is_main:
        print(format_summary(outcomes, time.perf_counter() - start), flush=True)
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files given on the command line, folders replaced by the SAR files under them (sorted)."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(list_sar_files(path))
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    if not files:
        raise ValueError(f"no SAR files found in {', '.join(inputs)}")
    return files


def _run_embed(args: argparse.Namespace) -> int:
    files = expand_inputs(args.inputs)
    check_embeddings_output(args.output, files, overwrite=args.overwrite, flag="--overwrite")
    model, processor = load_model_and_processor(
        args.model,
        "features",
        _processor_overrides(args),
        local_files_only=args.local_files_only,
        trust_remote_code=args.trust_remote_code,
    )
    try:
        # SIGTERM as Ctrl-C: the atomic writer's clean-up runs, no temporary file stays behind
        with StopSignal(raise_on_signal=True, message="stopping"), _command_line_errors():
            embeddings = embed_files(
                model,
                processor,
                files,
                pooling=args.pooling,
                batch_size=args.batch_size,
                bands=args.bands or getattr(processor, "bands", None),
                precision=args.precision,
                device=args.device,
                progress=not args.quiet,
            )
            save_embeddings(args.output, embeddings, files, overwrite=args.overwrite)
    except KeyboardInterrupt as interrupt:
        return _interrupted("embed", interrupt, args.output)
    print(f"{args.output}: {len(embeddings)} {args.pooling} embeddings of shape {tuple(embeddings[0].shape)}")
    return 0


def _add_predict_parser(subparsers: argparse._SubParsersAction) -> None:
    predict = subparsers.add_parser(
        "predict",
        help="segment a whole SAR scene (any size) into a georeferenced GeoTIFF",
        description=(
            "Segment a SAR scene of any size tile by tile (overlapping tiles, smooth blending, bounded\n"
            "memory) and write a Cloud-Optimized GeoTIFF with the input's CRS and transform: a uint8 class\n"
            "map (default) or one uint8 band per class with round(p * 254); 255 is nodata.\n"
            "The model is the shipped Sentinel-1 water / flood model unless --model (or a leading MODEL) names\n"
            "another: a folder written by save_pretrained or a Hub id (from the local cache when offline)."
        ),
        epilog=_MODEL_HELP
        + _SAR_HELP
        + _MANY_HELP
        + "\nexamples:\n  di3cl predict scene_vv_vh.tif water.tif                      # the shipped model\n"
        "  di3cl predict chip_vv.tif chip_vh.tif --output-dir maps/     # one file per polarisation\n"
        "  di3cl predict --model outputs/water scene.tif water.tif --tile-size 512 --overlap 64\n"
        "  di3cl predict outputs/water scene.tif water.tif              # MODEL INPUT OUTPUT, as before\n"
        "  di3cl predict outputs/water 'archive/*.tif' @more.txt --output-dir maps/\n"
        "  accelerate launch --multi_gpu --num_processes 4 -m di3cl_hf.cli predict archive/ "
        "--output-dir maps/\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage=(
            "di3cl predict [--model MODEL] INPUT OUTPUT [options]\n"
            "       di3cl predict [--model MODEL] INPUT... --output-dir DIR [options]\n"
            "       di3cl predict MODEL INPUT OUTPUT [options]           (the original form)"
        ),
    )
    predict.add_argument(
        "paths",
        metavar="PATH",
        nargs="+",
        help="INPUT OUTPUT: one SAR scene file and the GeoTIFF to write (appears only when complete; never "
        "INPUT); with --output-dir: scene files, folders, glob patterns or @list.txt files. A leading MODEL "
        "(as in MODEL INPUT OUTPUT) is still accepted, see 'model' below",
    )
    predict.add_argument(
        "--model",
        default=None,
        help=f"model folder, Hub id or .onnx file (default: the shipped {DEFAULT_WATER_MODEL.name})",
    )
    predict.add_argument(
        "--output-dir",
        default=None,
        help="predict every INPUT scene into DIR/{id}_{classes|probabilities}.tif (complete ones are skipped)",
    )
    predict.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        default="torch",
        help="torch (default) or onnxruntime (MODEL is a .onnx file from `di3cl export-onnx`, fp32 on the CPU)",
    )
    predict.add_argument(
        "--tile-size",
        type=_tile_size,
        default=512,
        help="tile size in pixels, at least 32 (default 512; a smaller scene is predicted at its own size)",
    )
    predict.add_argument(
        "--overlap",
        type=_non_negative_int,
        default=64,
        help="minimum tile overlap / blending ramp, smaller than the tile size (default 64)",
    )
    predict.add_argument(
        "--output-type", choices=OUTPUT_TYPES, default="classes", help="class map (default) or probabilities"
    )
    predict.add_argument("--no-cog", action="store_true", help="plain tiled GeoTIFF instead of a COG")
    _add_sar_arguments(predict)
    _add_runtime_arguments(predict)
    predict.set_defaults(func=_run_predict)


def _add_embed_parser(subparsers: argparse._SubParsersAction) -> None:
    embed = subparsers.add_parser(
        "embed",
        help="encoder features of SAR patches to .npy or Parquet",
        description=(
            "Compute DI3CL encoder features of SAR patches: pooled ([D] per patch, the global average of\n"
            "the deepest map) or dense ([D, H/32, W/32]). Writes .npy (plus NAME.files.txt listing the rows)\n"
            "or .parquet (columns path, embedding, shape). MODEL is any DI3CL folder or Hub id."
        ),
        epilog=_SAR_HELP + "\nexample:\n  di3cl embed outputs/pretrain patches/ --output features.parquet\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    embed.add_argument("model", metavar="MODEL", help="model folder or Hub id (any DI3CL checkpoint)")
    embed.add_argument("inputs", metavar="INPUT", nargs="+", help="SAR patch files or folders of them")
    embed.add_argument("--output", "-o", required=True, help="output file ending in .npy or .parquet")
    embed.add_argument(
        "--pooling", choices=POOLINGS, default="pooled", help="pooled (default) or dense features"
    )
    _add_sar_arguments(embed)
    _add_runtime_arguments(embed)
    embed.set_defaults(func=_run_embed)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``di3cl predict`` and ``di3cl embed`` to the ``di3cl`` command line."""
    _add_predict_parser(subparsers)
    _add_embed_parser(subparsers)


__all__ = ["command_line_message", "expand_inputs", "register"]
