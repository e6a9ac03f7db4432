"""The main job, end to end, on real Sentinel-1 first: ``make demo`` (or ``python -m di3cl_hf.demo``).

1. cut the embedded real Sentinel-1 VH scenes (``samples/sentinel1/scenes``, 9 x 1024² px) into 256² tiles
   (georeferenced, :func:`tile_scenes`), and generate the synthetic land-cover and road sets;
2. pre-train DI3CL (ResNet-18, one channel: VH) on the real tiles with Accelerate; the processor's
   ``image_mean`` / ``image_std`` are measured on them first (:mod:`di3cl_hf.training.statistics`);
3. fine-tune the water head on four of the five real labelled chips (``samples/sentinel1/water``) and score it on
   the fifth, never trained on, from the DI3CL encoder and from random initialisation;
4. fine-tune land cover and roads on SYNTHETIC data (no real labels here), DI3CL vs random, 10 % of labels;
5. predict a whole real Sentinel-1 scene with the real-data water model into a georeferenced GeoTIFF;
6. print one table with a ``data`` column (real / synthetic) per row, and where everything is.

Channels: the pre-training scenes are single-band VH, the water chips dual-pol VV + VH in dB. Every model here
takes one channel, VH: the water chips are read as their VH band only, so DI3CL and random initialisation see the
same input. Radiometry differs between the two real sources: the scenes are 8-bit quick-looks (``dn8``, mapped
linearly onto the processor's dB range), the chips calibrated dB; the scene prediction is therefore illustrative.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import rasterio
import torch
import transformers
from affine import Affine
from rasterio.windows import Window
from tqdm.auto import tqdm

from .atomic import write_json
from .data.samples import sentinel1_sample
from .data.synthetic import generate_segmentation_sets
from .inference.scene import predict_scene
from .loading import load_model_and_processor
from .runtime import cpu_model, default_device, resolve_precision
from .training.evaluation import EvaluationGridArguments, run_evaluation_grid
from .training.finetuning import FinetuneArguments, finetune
from .training.pretraining import PretrainingArguments
from .training.pretraining import main as pretrain

SYNTHETIC_TASKS = ("landcover", "roads")
WATER_HELD_OUT = "Spain_7370579"
"""The real chip the demo's water models never train on (the Sen1Floods11 chip: another source than the four
training chips)."""


@dataclass(frozen=True)
class DemoBudget:
    """Sizes of one demo run: ``full`` and ``full-fp32`` each fit 15 minutes on 2 CPU cores of their kind,
    ``quick`` 3 minutes."""

    name: str
    scenes: int | None
    pretrain_steps: int
    pretrain_batch: int
    view_size: int
    queue_size: int
    water_steps: int
    water_crop: int
    water_batch: int
    segmentation_patches: int
    patch_size: int
    finetune_steps: int
    crop_size: int


FULL = DemoBudget(
    name="full",
    scenes=None,
    pretrain_steps=300,
    pretrain_batch=32,
    view_size=128,
    queue_size=1024,
    water_steps=150,
    water_crop=256,
    water_batch=4,
    segmentation_patches=200,
    patch_size=128,
    finetune_steps=150,
    crop_size=128,
)
# A CPU without native bf16 runs the demo's fp32 steps ~3.6x (pre-training) to ~6x (fine-tuning) slower than the
# AVX512_BF16 development CPU (2-core AMD EPYC with AVX2 only, `python -m di3cl_hf.demo --budget full`: pre-training
# 2.5 s/step, water 313 s per model): about a third of FULL's compute keeps the demo within its 15 minutes there
# (`make demo` picks it: 11.8 min on that CPU).
FULL_FP32 = replace(
    FULL,
    name="full-fp32",
    pretrain_steps=200,
    pretrain_batch=16,
    water_steps=100,
    water_crop=192,
    finetune_steps=50,
)
QUICK = DemoBudget(
    name="quick",
    scenes=2,
    pretrain_steps=8,
    pretrain_batch=8,
    view_size=96,
    queue_size=64,
    water_steps=6,
    water_crop=128,
    water_batch=2,
    segmentation_patches=60,
    patch_size=96,
    finetune_steps=6,
    crop_size=96,
)


BUDGETS = {budget.name: budget for budget in (FULL, FULL_FP32, QUICK)}


def choose_budget(name: str = "auto", device: torch.device | None = None) -> DemoBudget:
    """``auto``: :data:`FULL` where the resolved precision is bf16 (native) or the device is a GPU, else
    :data:`FULL_FP32`; any other name picks that budget."""
    if name != "auto":
        return BUDGETS[name]
    device = device or default_device()
    fast = device.type != "cpu" or resolve_precision("auto", device, log=False) != "fp32"
    return FULL if fast else FULL_FP32


def tile_scenes(
    scene_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    tile_size: int = 256,
    limit: int | None = None,
) -> list[Path]:
    """Cut every GeoTIFF of ``scene_dir`` into non-overlapping ``tile_size``² tiles ``{stem}_{row}{column}.tif``
    (``003_12.tif``: tile row 1, column 2; zero-padded to the same width when a scene has 10 or more tile rows;
    incomplete edge tiles dropped), each georeferenced by its window, with the source's dtype, bands and band
    descriptions, DEFLATE-compressed. ``limit``: only the first scenes (sorted by name)."""
    import rasterio

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for scene in sorted(Path(scene_dir).glob("*.tif"))[:limit]:
        with rasterio.open(scene) as source:
            profile = source.profile.copy()
            profile.update(width=tile_size, height=tile_size, compress="deflate", tiled=False)
            profile.pop("blockxsize", None), profile.pop("blockysize", None)
            rows, columns = source.height // tile_size, source.width // tile_size
            digits = len(str(max(rows, columns) - 1))
            for row in range(rows):
                for column in range(columns):
                    top, left = row * tile_size, column * tile_size
                    path = output_dir / f"{scene.stem}_{row:0{digits}d}{column:0{digits}d}.tif"
                    profile["transform"] = source.transform @ Affine.translation(left, top)
                    with rasterio.open(path, "w", **profile) as tile:
                        tile.write(source.read(window=Window(left, top, tile_size, tile_size)))
                        tile.descriptions = source.descriptions
                    written.append(path)
    return written


def water_fold(water_dir: Path, held_out: str, root: Path, band: str = "vh") -> Path:
    """``root/{train,test}/{images,masks}``: the VH band of each real chip (symlinks), ``held_out`` in test."""
    chips = sorted(path.stem for path in (water_dir / "masks").glob("*.tif"))
    if held_out not in chips:
        raise ValueError(f"{water_dir}: no chip {held_out!r} (chips: {chips})")
    for chip in chips:
        split = "test" if chip == held_out else "train"
        for kind, source in (
            ("images", water_dir / "images" / f"{chip}_{band}.tif"),
            ("masks", water_dir / "masks" / f"{chip}.tif"),
        ):
            target = root / split / kind / f"{chip}.tif"
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink() or target.exists():
                target.unlink()
            target.symlink_to(source.resolve())
    return root


def _step(title: str) -> float:
    print(f"\n=== {title}", flush=True)
    return time.perf_counter()


def _quiet_libraries() -> None:
    """One progress bar per phase: no dataset-generation, weight-loading or shard-writing bars from the libraries."""

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    logging.getLogger("di3cl_hf.training.pretraining").addFilter(
        lambda record: not record.getMessage().startswith("step ")  # the progress bar shows the losses
    )


def _water_scores(scores: dict[str, Any]) -> dict[str, float]:
    confusion = np.asarray(scores["confusion_matrix"], dtype=np.float64)
    tp, fp, fn = confusion[1, 1], confusion[0, 1], confusion[1, 0]
    return {
        "water IoU": float(tp / (tp + fp + fn)) if tp + fp + fn else float("nan"),
        "water F1": float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else float("nan"),
    }


def _pretrain(data_dir: Path, output_dir: Path, budget: DemoBudget, seed: int, num_workers: int) -> Path:

    code = pretrain(
        PretrainingArguments(
            data_dir=str(data_dir),
            backbone="resnet18",
            num_channels=1,
            image_size=budget.view_size,
            projection_hidden_dim=512,
            queue_size=budget.queue_size,
            boxes_per_image=4,
            min_box_size=16,
            per_device_batch_size=budget.pretrain_batch,
            max_steps=budget.pretrain_steps,
            warmup_steps=max(1, budget.pretrain_steps // 20),
            base_learning_rate=0.3,
            momentum=0.99,  # a short run: a faster key encoder than the release's 0.999 (docs/training.md#small-runs)
            num_workers=num_workers,
            output_dir=str(output_dir),
            logging_steps=max(1, budget.pretrain_steps // 10),
            save_steps=max(1, budget.pretrain_steps // 2),
            seed=seed,
            run_name="di3cl-demo",
        )
    )
    if code != 0:
        raise SystemExit(f"pre-training failed with exit code {code}")
    return output_dir / "encoder"


def _finetune_water(fold: Path, encoder_dir: Path, output_dir: Path, budget: DemoBudget, seed: int) -> dict:
    """DI3CL and random initialisation on the real water chips; returns ``{init: water scores}``."""

    scores: dict[str, dict[str, float]] = {}
    for init in tqdm(("di3cl", "random"), desc="fine-tune water (real chips)"):
        results = finetune(
            FinetuneArguments(
                data_dir=str(fold),
                task="water",
                init=init,
                model_name_or_path=str(encoder_dir) if init == "di3cl" else None,
                backbone="resnet18",
                num_channels=1,
                crop_size=budget.water_crop,
                batch_size=budget.water_batch,
                eval_batch_size=1,
                max_steps=budget.water_steps,
                learning_rate=3e-4,
                warmup_steps=max(1, budget.water_steps // 10),
                decoder_hidden_size=128,
                seed=seed,
                output_dir=str(output_dir / init),
                report_to="none",
                disable_tqdm=True,
            )
        )
        scores[init] = _water_scores(results["test"])
    return scores


def _finetune_synthetic(
    data_dir: Path, encoder_dir: Path, output_dir: Path, budget: DemoBudget, seed: int
) -> dict:

    return run_evaluation_grid(
        EvaluationGridArguments(
            data_dir=str(data_dir),
            output_dir=str(output_dir),
            pretrained_model=str(encoder_dir),
            tasks=list(SYNTHETIC_TASKS),
            initialisations=["di3cl", "random"],
            label_fractions=[0.1],
            backbone="resnet18",
            num_channels=1,
            crop_size=budget.crop_size,
            batch_size=8,
            max_steps=budget.finetune_steps,
            decoder_hidden_size=64,
            seeds=[seed],
            kmeans=False,
            save_models=True,
            disable_tqdm=True,
        )
    )


def results_table(water: dict, synthetic: dict) -> str:
    """The closing table: one row per (task, metric), a ``data`` column saying real or synthetic."""

    def cell(value: float) -> str:
        return "–" if not np.isfinite(value) else f"{100 * value:.1f}"

    lines = [
        "| task | data | test set | metric | DI3CL | random init |",
        "|---|---|---|---|---:|---:|",
    ]
    for metric in ("water IoU", "water F1"):
        lines.append(
            f"| water | real (Sentinel-1) | held-out chip {WATER_HELD_OUT} | {metric} | "
            f"{cell(water['di3cl'][metric])} | {cell(water['random'][metric])} |"
        )
    for task, by_init in synthetic["results"].items():
        for metric, key in (("mIoU", "miou"), ("mean F1", "mean_f1")):
            values = [float(by_init[init]["0.1"][key]) for init in ("di3cl", "random")]
            lines.append(
                f"| {task} | synthetic | synthetic test split | {metric} | {cell(values[0])} | {cell(values[1])} |"
            )
    return "\n".join(lines)


def _collect_models(output_dir: Path, evaluation_dir: Path, seed: int) -> Path:
    """``output_dir/models/{water,landcover,roads}``: the DI3CL-initialised task models, without checkpoints."""
    models_dir = output_dir / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(
        output_dir / "water" / "di3cl",
        models_dir / "water",
        ignore=shutil.ignore_patterns("checkpoints", "logs"),
    )
    for task in SYNTHETIC_TASKS:
        source = evaluation_dir / "runs" / task / "di3cl" / "labels-0.1" / f"seed-{seed}"
        shutil.copytree(
            source, models_dir / task, ignore=shutil.ignore_patterns("checkpoints", "runs", "logs")
        )
    return models_dir


def _report(
    output_dir: Path,
    layout: dict[str, Path],
    water: dict,
    synthetic: dict,
    timings: dict[str, float],
    seconds: float,
    precision: str,
    num_tiles: int,
    budget: DemoBudget,
) -> None:
    """The closing summary a person reads, and ``summary.json`` (atomic)."""
    print("\n=== Results (one seed; test pixels never trained on)\n")
    print(results_table(water, synthetic))
    print(
        f"\nReal rows: Sentinel-1 VH, pre-trained on {num_tiles} real tiles, water trained on 4 real chips "
        f"({budget.water_steps} steps) and scored on {WATER_HELD_OUT}. Synthetic rows: generated SAR, a pipeline "
        "check, not a measure of DI3CL on real data."
    )
    print(
        f"\nTime: {seconds / 60:.1f} min on {os.cpu_count()} CPU core(s) ({cpu_model()}, "
        f"{precision}, budget {budget.name}): "
        + ", ".join(f"{name} {value:.0f} s" for name, value in timings.items())
    )
    data_dir, models_dir = layout["data"], layout["models"]
    print("\nWhere everything is:")
    print(f"  real tiles, chips        {data_dir}/s1-vh-tiles, {data_dir}/s1-water-vh")
    print(
        f"  pre-trained encoder      {layout['encoder']}  (DI3CLModel + processor with measured mean/std + card)"
    )
    print(
        f"  task models              {models_dir}/water (real data), {models_dir}/{{landcover,roads}} (synthetic)"
    )
    print(f"  synthetic evaluation     {layout['evaluation']}/evaluation.md")
    print("\nOpen the Space on these models:")
    print(
        f"  DI3CL_MODEL_DIR={models_dir} .venv/bin/python space/app.py   # then browse http://127.0.0.1:7860"
    )
    summary = {
        "water": {"data": "real", "held_out_chip": WATER_HELD_OUT, "scores": water},
        "synthetic": {"data": "synthetic", "results": synthetic["results"]},
        "seconds": seconds,
        "timings": timings,
        "precision": precision,
        "budget": budget.name,
        "cpu": cpu_model(),
        "real_tiles": num_tiles,
    }
    write_json(output_dir / "summary.json", summary, indent=1, default=float)


# Written first into every demo output folder: only folders holding it are ever replaced.
DEMO_MARKER = ".di3cl-demo"


def prepare_output_dir(output_dir: Path) -> None:
    """Make ``output_dir`` the demo's own, empty folder, marked with :data:`DEMO_MARKER`.

    A missing or empty folder is used as it is. A folder an earlier demo run wrote (it holds the marker) is
    replaced, and this is printed: re-running ``make demo`` gives fresh results. Any other non-empty folder, or a
    file, is refused before any work, so that ``--output-dir ~`` or a folder of the user's data is never deleted.
    """
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"--output-dir {output_dir} is a file; choose a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        if not (output_dir / DEMO_MARKER).is_file():
            raise FileExistsError(
                f"--output-dir {output_dir} is not empty and was not written by the demo (no {DEMO_MARKER} file); "
                "nothing was changed. Choose a new or empty folder (or delete it yourself, e.g. a demo output of a "
                "version before this check)."
            )
        print(f"Replacing the previous demo run in {output_dir}")
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / DEMO_MARKER).write_text("Written by python -m di3cl_hf.demo; replaced by its next run.\n")


def run(output_dir: Path, budget: DemoBudget, seed: int = 0, num_workers: int = 1) -> dict:
    """Run the demo into ``output_dir`` (see :func:`prepare_output_dir`: only an empty folder or an earlier demo
    run's is used); returns ``{"water", "synthetic", "seconds", ...}``."""

    prepare_output_dir(output_dir)
    _quiet_libraries()
    data_dir = output_dir / "data"
    started = time.perf_counter()
    timings: dict[str, float] = {}

    t0 = _step("1/5 data: real Sentinel-1 VH scenes cut into 256² tiles; synthetic land cover + roads")
    scenes = sentinel1_sample("scenes")
    tiles = tile_scenes(scenes, data_dir / "s1-vh-tiles", 256, limit=budget.scenes)
    fold = water_fold(sentinel1_sample("water"), WATER_HELD_OUT, data_dir / "s1-water-vh")
    generate_segmentation_sets(
        data_dir / "synthetic-segmentation",
        budget.segmentation_patches,
        size=budget.patch_size,
        seed=seed + 1,
    )
    print(f"{len(tiles)} real tiles from {scenes}; water: 4 real chips to train, {WATER_HELD_OUT} to test")
    timings["data"] = time.perf_counter() - t0

    precision = resolve_precision("auto", default_device(), log=False)
    print(
        f"budget: {budget.name} ({budget.pretrain_steps} pre-training steps of {budget.pretrain_batch}, "
        f"water {budget.water_steps} steps at {budget.water_crop} px, synthetic {budget.finetune_steps} steps)"
    )
    t0 = _step(f"2/5 pre-training DI3CL ResNet-18 on the real VH tiles (1 channel, {precision})")
    pretrain_dir = output_dir / "pretrain"
    encoder_dir = _pretrain(data_dir / "s1-vh-tiles", pretrain_dir, budget, seed, num_workers)
    timings["pre-training"] = time.perf_counter() - t0

    t0 = _step(
        f"3/5 fine-tuning water on 4 real chips (VH), testing on {WATER_HELD_OUT}: DI3CL vs random init"
    )
    water = _finetune_water(fold, encoder_dir, output_dir / "water", budget, seed)
    timings["water"] = time.perf_counter() - t0

    t0 = _step("4/5 fine-tuning land cover / roads on SYNTHETIC data (no real labels), 10 % of labels")
    evaluation_dir = output_dir / "evaluation-synthetic"
    synthetic = _finetune_synthetic(
        data_dir / "synthetic-segmentation", encoder_dir, evaluation_dir, budget, seed
    )
    models_dir = _collect_models(output_dir, evaluation_dir, seed)
    timings["synthetic fine-tuning"] = time.perf_counter() - t0

    scene = sorted(scenes.glob("*.tif"))[0]
    t0 = _step(f"5/5 predicting the whole real scene {scene.name} with the real-data water model")
    model, processor = load_model_and_processor(models_dir / "water", task="segmentation")
    prediction_path = output_dir / f"s1-{scene.stem}-water.tif"
    predict_scene(
        model.to(torch.float32), scene, prediction_path, processor, tile_size=256, overlap=32, progress=True
    )
    timings["scene prediction"] = time.perf_counter() - t0
    seconds = time.perf_counter() - started

    with rasterio.open(prediction_path) as predicted:
        water_fraction = float((predicted.read(1) == 1).mean())
    layout = {"data": data_dir, "encoder": encoder_dir, "models": models_dir, "evaluation": evaluation_dir}
    _report(output_dir, layout, water, synthetic, timings, seconds, precision, len(tiles), budget)
    print(
        f"Scene {scene.name}: {100 * water_fraction:.1f} % predicted water (8-bit quick-look radiometry, "
        "unlike the dB chips the model was trained on: illustrative); map in "
        f"{prediction_path} (georeferenced like {scene})"
    )
    return {
        "water": water,
        "synthetic": synthetic,
        "seconds": seconds,
        "timings": timings,
        "prediction": str(prediction_path),
        "scene": str(scene),
        "water_fraction": water_fraction,
    }


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the demo."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output-dir",
        default="outputs/demo",
        help="Where data, models and results go: a new or empty folder, or an earlier demo run's (replaced).",
    )
    parser.add_argument("--quick", action="store_true", help="Tiny budget (CI smoke run, under 3 minutes).")
    parser.add_argument(
        "--budget",
        choices=("auto", *BUDGETS),
        default="auto",
        help="auto: full where the device runs bf16 natively (or is a GPU), full-fp32 (a third of the compute) on "
        "other CPUs, so that the demo fits 15 minutes on both; --quick is --budget quick.",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=1, help="DataLoader workers during pre-training.")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    budget = choose_budget("quick" if args.quick else args.budget)
    run(Path(args.output_dir), budget, seed=args.seed, num_workers=args.num_workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = [
    "BUDGETS",
    "DEMO_MARKER",
    "FULL",
    "FULL_FP32",
    "QUICK",
    "DemoBudget",
    "choose_budget",
    "main",
    "prepare_output_dir",
    "results_table",
    "run",
    "tile_scenes",
    "water_fold",
]
