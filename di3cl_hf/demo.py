"""The main job, end to end, on real Sentinel-1 first: ``make demo`` (or ``python -m di3cl_hf.demo``).

It builds on the model shipped inside the package (:data:`di3cl_hf.weights.DEFAULT_WATER_MODEL`: ResNet-18 +
UperNet, VV + VH, fine-tuned on real Sentinel-1 flood tiles; its card says on which and how well):

1. cut the embedded real Sentinel-1 VH scenes (``samples/sentinel1/scenes``, 9 x 1024² px) into 256² tiles
   (georeferenced, :func:`tile_scenes`), and generate the synthetic land-cover and road sets;
2. *continue* DI3CL pre-training (one channel: VH) from the shipped model's encoder on the real tiles with
   Accelerate (its encoder is read with ``AutoModel`` from the shipped folder; the first convolution's two input
   channels are summed into one); the processor's ``image_mean`` / ``image_std`` are measured on the tiles first;
3. fine-tune the water head on four of the five real labelled chips (``samples/sentinel1/water``, VV + VH in dB)
   and score it on the fifth, never trained on, from the shipped encoder and from random initialisation; the
   shipped model itself, not fine-tuned, is scored on the same chip;
4. fine-tune land cover and roads on SYNTHETIC data (no real labels here), from the continued pre-training vs
   random, 10 % of labels;
5. predict the held-out real VV + VH chip (its two polarisation files) with the shipped model into a
   georeferenced GeoTIFF;
6. print one table with a ``data`` column (real / synthetic) per row, and where everything is.

Channels: the pre-training scenes are single-band VH, the water chips dual-pol VV + VH in dB; the water models
take both (VV, VH), the pre-training and synthetic models one. Radiometry differs between the real sources: the
shipped model was trained on 8-bit tiles (``dn8``, 0..255 mapped linearly onto its processor's dB range), the
chips are calibrated float32 dB, clipped to the same range and scaled the same way; an 8-bit product's own
scaling need not be that linear map, so the shipped model's score on the chip is a transfer across radiometry.
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
from safetensors.torch import save_file
from tqdm.auto import tqdm
from transformers import AutoModel

from .atomic import write_json
from .data.samples import sentinel1_sample
from .data.synthetic import generate_segmentation_sets
from .inference.scene import predict_scene
from .loading import find_encoder, load_model_and_processor
from .runtime import cpu_model, default_device, resolve_precision
from .training.evaluation import EvaluationGridArguments, run_evaluation_grid
from .training.finetuning import FinetuneArguments, finetune
from .training.pretraining import PretrainingArguments
from .training.pretraining import main as pretrain
from .weights import shipped_model_path

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


def water_fold(water_dir: Path, held_out: str, root: Path, band: str | tuple[str, ...] = "vh") -> Path:
    """``root/{train,test}/{images,masks}``: each real chip (symlinks), ``held_out`` in test. One ``band``
    (default VH): ``images/{chip}.tif``; several (``("vv", "vh")``): one file per polarisation,
    ``images/{chip}_vv.tif`` + ``_vh.tif``, read as one dual-pol sample."""
    chips = sorted(path.stem for path in (water_dir / "masks").glob("*.tif"))
    if held_out not in chips:
        raise ValueError(f"{water_dir}: no chip {held_out!r} (chips: {chips})")
    bands = (band,) if isinstance(band, str) else tuple(band)
    for chip in chips:
        split = "test" if chip == held_out else "train"
        links = {
            (f"images/{chip}.tif" if len(bands) == 1 else f"images/{chip}_{b}.tif"): f"images/{chip}_{b}.tif"
            for b in bands
        }
        links[f"masks/{chip}.tif"] = f"masks/{chip}.tif"
        for name, relative in links.items():
            source, target = water_dir / relative, root / split / name
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


def shipped_encoder_file(shipped: Path, path: Path) -> Path:
    """The shipped model's encoder, read with ``AutoModel`` from its folder (a :class:`DI3CLModel`, fp32), as a
    timm-named safetensors file: the initialisation of the continued pre-training (``imagenet_weights``, which
    adapts the first convolution to one channel). A derived file in the demo's output, not a second copy shipped."""
    encoder = AutoModel.from_pretrained(shipped)
    state = {
        key: value.detach().float().contiguous() for key, value in find_encoder(encoder).state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"format": "pt", "source": f"encoder of {shipped.name}"})
    return path


def _pretrain(
    data_dir: Path, output_dir: Path, budget: DemoBudget, seed: int, num_workers: int, init: Path
) -> Path:
    """Continued pre-training from the encoder file ``init`` (:func:`shipped_encoder_file`)."""
    code = pretrain(
        PretrainingArguments(
            data_dir=str(data_dir),
            imagenet_weights=str(init),  # any local timm-named ResNet file: here the shipped encoder
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


def _finetune_water(fold: Path, shipped: Path, output_dir: Path, budget: DemoBudget, seed: int) -> dict:
    """The shipped encoder and random initialisation on the real VV + VH water chips; returns
    ``{"shipped" | "random": water scores}``."""

    scores: dict[str, dict[str, float]] = {}
    for init in tqdm(("shipped", "random"), desc="fine-tune water (real chips, VV + VH)"):
        results = finetune(
            FinetuneArguments(
                data_dir=str(fold),
                task="water",
                init="di3cl" if init == "shipped" else "random",
                model_name_or_path=str(shipped) if init == "shipped" else None,
                backbone="resnet18",
                num_channels=2,
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


REAL = "real (Sentinel-1 VV + VH)"
"""The ``data`` cell of the real rows."""


def results_table(water: dict, synthetic: dict, shipped: dict | None = None) -> str:
    """The closing table: one row per (task, metric), a ``data`` column saying real or synthetic and an
    ``initialised from`` column naming the pre-trained encoder of the row; ``shipped``: the shipped model's own
    scores on the held-out chip (no fine-tuning)."""

    def cell(value: float | None) -> str:
        return "–" if value is None or not np.isfinite(value) else f"{100 * value:.1f}"

    lines = [
        "| task | data | test set | metric | initialised from | pre-trained | random init |",
        "|---|---|---|---|---|---:|---:|",
    ]
    test_set = f"held-out chip {WATER_HELD_OUT}"
    for metric in ("water IoU", "water F1"):
        lines.append(
            f"| water | {REAL} | {test_set} | {metric} | shipped encoder (4 chips fine-tuned) | "
            f"{cell(water['shipped'][metric])} | {cell(water['random'][metric])} |"
        )
    for metric in ("water IoU", "water F1") if shipped else ():
        lines.append(
            f"| water | {REAL} | {test_set} | {metric} | shipped model as is (no fine-tuning) | "
            f"{cell(shipped[metric])} | – |"
        )
    for task, by_init in synthetic["results"].items():
        for metric, key in (("mIoU", "miou"), ("mean F1", "mean_f1")):
            values = [float(by_init[init]["0.1"][key]) for init in ("di3cl", "random")]
            lines.append(
                f"| {task} | synthetic | synthetic test split | {metric} | continued pre-training (VH) | "
                f"{cell(values[0])} | {cell(values[1])} |"
            )
    return "\n".join(lines)


def _collect_models(output_dir: Path, evaluation_dir: Path, seed: int) -> Path:
    """``output_dir/models/{water,landcover,roads}``: the pre-trained-initialised task models (water: from the
    shipped encoder, on the 4 chips), without checkpoints."""
    models_dir = output_dir / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(
        output_dir / "water" / "shipped",
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
    results: dict[str, Any],
    timings: dict[str, float],
    seconds: float,
    precision: str,
    budget: DemoBudget,
) -> None:
    """The closing summary a person reads, and ``summary.json`` (atomic)."""
    water, synthetic, shipped = results["water"], results["synthetic"], results["shipped"]
    print("\n=== Results (one seed; test pixels never trained on)\n")
    print(results_table(water, synthetic, shipped))
    print(
        f"\nReal rows (data = real): Sentinel-1 VV + VH chips in dB; water fine-tuned on 4 real chips "
        f"({budget.water_steps} steps) from the shipped model's encoder ({layout['shipped'].name}) or from random "
        f"weights, and scored on {WATER_HELD_OUT}; the shipped model as is was trained on other real data (its card) "
        "in another radiometry (8-bit tiles), so its row is a transfer. Synthetic rows: generated SAR, from the "
        f"continued pre-training on {results['real_tiles']} real VH tiles; a pipeline check, not a measure of DI3CL "
        "on real data."
    )
    print(
        f"\nTime: {seconds / 60:.1f} min on {os.cpu_count()} CPU core(s) ({cpu_model()}, "
        f"{precision}, budget {budget.name}): "
        + ", ".join(f"{name} {value:.0f} s" for name, value in timings.items())
    )
    data_dir, models_dir = layout["data"], layout["models"]
    print("\nWhere everything is:")
    print(f"  shipped model            {layout['shipped']}  (card: README.md there)")
    print(f"  real tiles, chips        {data_dir}/s1-vh-tiles, {data_dir}/s1-water-vv-vh")
    print(
        f"  continued pre-training   {layout['encoder']}  (DI3CLModel + processor with measured mean/std + card)"
    )
    print(
        f"  task models              {models_dir}/water (real data, VV + VH), {models_dir}/{{landcover,roads}} "
        "(synthetic)"
    )
    print(f"  synthetic evaluation     {layout['evaluation']}/evaluation.md")
    print("\nOpen the Space (water: the shipped model; land cover / roads: these):")
    print(
        f"  DI3CL_MODEL_DIR={models_dir} DI3CL_MODEL_WATER={layout['shipped']} .venv/bin/python space/app.py"
        "   # then browse http://127.0.0.1:7860"
    )
    summary = {
        "water": {"data": "real", "held_out_chip": WATER_HELD_OUT, "scores": water},
        "shipped": {
            "data": "real",
            "held_out_chip": WATER_HELD_OUT,
            "model": str(layout["shipped"]),
            **shipped,
        },
        "synthetic": {"data": "synthetic", "results": synthetic["results"]},
        "seconds": seconds,
        "timings": timings,
        "precision": precision,
        "budget": budget.name,
        "cpu": cpu_model(),
        "real_tiles": results["real_tiles"],
    }
    write_json(output_dir / "summary.json", summary, indent=1, default=float)


def predict_chip(shipped: Path, chip_files: list[Path], mask_path: Path, output: Path) -> dict[str, Any]:
    """Predict the real VV + VH chip (its two polarisation files) with the shipped model into a georeferenced
    GeoTIFF and score it against the chip's labels (values other than 0 / 1 ignored)."""
    model, processor = load_model_and_processor(shipped, task="segmentation")
    predict_scene(
        model.to(torch.float32), chip_files, output, processor, tile_size=256, overlap=32, progress=False
    )
    with rasterio.open(output) as predicted, rasterio.open(mask_path) as labels:
        classes, truth = predicted.read(1), labels.read(1).astype(np.int64)
    scored = np.isin(truth, (0, 1)) & (classes != 255)
    confusion = np.zeros((2, 2), dtype=np.int64)
    np.add.at(confusion, (truth[scored], classes[scored].astype(np.int64)), 1)
    low, high = processor.db_range
    return {
        **_water_scores({"confusion_matrix": confusion}),
        "water_fraction": float((classes[classes != 255] == 1).mean()),
        "prediction": str(output),
        "radiometry": f"float32 dB clipped to [{low:g}, {high:g}] dB (the shipped model was trained on 8-bit tiles)",
    }


# Written first into every demo output folder: only folders holding it are ever replaced.
DEMO_MARKER = ".di3cl-demo"


def check_output_dir(output_dir: Path) -> None:
    """Refuse a file or a non-empty folder the demo did not write (see :func:`prepare_output_dir`); changes nothing."""
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"--output-dir {output_dir} is a file; choose a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not (output_dir / DEMO_MARKER).is_file():
        raise FileExistsError(
            f"--output-dir {output_dir} is not empty and was not written by the demo (no {DEMO_MARKER} file); "
            "nothing was changed. Choose a new or empty folder (or delete it yourself, e.g. a demo output of a "
            "version before this check)."
        )


def prepare_output_dir(output_dir: Path) -> None:
    """Make ``output_dir`` the demo's own, empty folder, marked with :data:`DEMO_MARKER`.

    A missing or empty folder is used as it is. A folder an earlier demo run wrote (it holds the marker) is
    replaced, and this is printed: re-running ``make demo`` gives fresh results. Any other non-empty folder, or a
    file, is refused before any work, so that ``--output-dir ~`` or a folder of the user's data is never deleted.
    """
    check_output_dir(output_dir)
    if output_dir.is_dir() and any(output_dir.iterdir()):
        print(f"Replacing the previous demo run in {output_dir}")
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / DEMO_MARKER).write_text("Written by python -m di3cl_hf.demo; replaced by its next run.\n")


def _prepare_data(data_dir: Path, water_dir: Path, budget: DemoBudget, seed: int) -> tuple[list[Path], Path]:
    """The real VH tiles, the VV + VH water fold and the synthetic sets; returns ``(tiles, fold)``."""
    scenes = sentinel1_sample("scenes")
    tiles = tile_scenes(scenes, data_dir / "s1-vh-tiles", 256, limit=budget.scenes)
    fold = water_fold(water_dir, WATER_HELD_OUT, data_dir / "s1-water-vv-vh", band=("vv", "vh"))
    generate_segmentation_sets(
        data_dir / "synthetic-segmentation",
        budget.segmentation_patches,
        size=budget.patch_size,
        seed=seed + 1,
    )
    print(
        f"{len(tiles)} real tiles from {scenes}; water: 4 real VV + VH chips to train, {WATER_HELD_OUT} to test"
    )
    return tiles, fold


def _predict_held_out_chip(shipped: Path, water_dir: Path, output_dir: Path) -> tuple[dict, Path, list[Path]]:
    """The shipped model as it is on the held-out real VV + VH chip: scores, the map's path, the chip's files."""
    chip_files = [water_dir / "images" / f"{WATER_HELD_OUT}_{band}.tif" for band in ("vv", "vh")]
    prediction_path = output_dir / f"s1-{WATER_HELD_OUT}-water-shipped.tif"
    scores = predict_chip(shipped, chip_files, water_dir / "masks" / f"{WATER_HELD_OUT}.tif", prediction_path)
    print(
        f"Chip {WATER_HELD_OUT}: {100 * scores['water_fraction']:.1f} % predicted water by the shipped model; "
        f"input {scores['radiometry']}: a transfer across radiometry. Map in {prediction_path} "
        f"(georeferenced like {chip_files[0].name})"
    )
    return scores, prediction_path, chip_files


def run(
    output_dir: Path, budget: DemoBudget, seed: int = 0, num_workers: int = 1, shipped: Path | None = None
) -> dict:
    """Run the demo into ``output_dir`` (see :func:`prepare_output_dir`: only an empty folder or an earlier demo
    run's is used); returns ``{"water", "shipped", "synthetic", "seconds", ...}``. ``shipped``: the model folder to
    build on (default: the one shipped in the package, :func:`~di3cl_hf.weights.shipped_model_path`)."""

    check_output_dir(output_dir)  # refusals first, then the shipped model (missing: one clear error) ...
    shipped = Path(shipped) if shipped is not None else shipped_model_path()
    if not (shipped / "config.json").is_file():
        raise FileNotFoundError(
            f"--shipped-model {shipped}: no config.json (a shipped model folder is expected)"
        )
    prepare_output_dir(output_dir)  # ... and only then an earlier demo run is replaced
    _quiet_libraries()
    data_dir = output_dir / "data"
    started = time.perf_counter()
    timings: dict[str, float] = {}

    t0 = _step("1/5 data: real Sentinel-1 VH scenes cut into 256² tiles; synthetic land cover + roads")
    water_dir = sentinel1_sample("water")
    tiles, fold = _prepare_data(data_dir, water_dir, budget, seed)
    timings["data"] = time.perf_counter() - t0

    precision = resolve_precision("auto", default_device(), log=False)
    print(
        f"shipped model: {shipped}\nbudget: {budget.name} ({budget.pretrain_steps} pre-training steps of "
        f"{budget.pretrain_batch}, water {budget.water_steps} steps at {budget.water_crop} px, synthetic "
        f"{budget.finetune_steps} steps)"
    )
    t0 = _step(
        f"2/5 continued DI3CL pre-training from the shipped encoder on the real VH tiles (1 channel, {precision})"
    )
    init = shipped_encoder_file(shipped, data_dir / f"{shipped.name}-encoder.safetensors")
    encoder_dir = _pretrain(
        data_dir / "s1-vh-tiles", output_dir / "pretrain", budget, seed, num_workers, init
    )
    timings["pre-training"] = time.perf_counter() - t0

    t0 = _step(
        f"3/5 fine-tuning water on 4 real chips (VV + VH), testing on {WATER_HELD_OUT}: shipped encoder vs random"
    )
    water = _finetune_water(fold, shipped, output_dir / "water", budget, seed)
    timings["water"] = time.perf_counter() - t0

    t0 = _step("4/5 fine-tuning land cover / roads on SYNTHETIC data (no real labels), 10 % of labels")
    evaluation_dir = output_dir / "evaluation-synthetic"
    synthetic = _finetune_synthetic(
        data_dir / "synthetic-segmentation", encoder_dir, evaluation_dir, budget, seed
    )
    models_dir = _collect_models(output_dir, evaluation_dir, seed)
    timings["synthetic fine-tuning"] = time.perf_counter() - t0

    t0 = _step(
        f"5/5 predicting the real VV + VH chip {WATER_HELD_OUT} with the shipped model (not fine-tuned)"
    )
    shipped_scores, prediction_path, chip_files = _predict_held_out_chip(shipped, water_dir, output_dir)
    timings["chip prediction"] = time.perf_counter() - t0
    seconds = time.perf_counter() - started

    layout = {
        "data": data_dir,
        "encoder": encoder_dir,
        "models": models_dir,
        "evaluation": evaluation_dir,
        "shipped": shipped,
    }
    results = {"water": water, "synthetic": synthetic, "shipped": shipped_scores, "real_tiles": len(tiles)}
    _report(output_dir, layout, results, timings, seconds, precision, budget)
    return {
        **results,
        "seconds": seconds,
        "timings": timings,
        "prediction": str(prediction_path),
        "chip": [str(path) for path in chip_files],
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
    parser.add_argument(
        "--shipped-model",
        default=None,
        help="Model folder to build on instead of the one shipped in the package (di3cl_hf/weights/...).",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    budget = choose_budget("quick" if args.quick else args.budget)
    shipped = Path(args.shipped_model) if args.shipped_model else None
    run(Path(args.output_dir), budget, seed=args.seed, num_workers=args.num_workers, shipped=shipped)
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
    "check_output_dir",
    "choose_budget",
    "main",
    "prepare_output_dir",
    "predict_chip",
    "results_table",
    "run",
    "shipped_encoder_file",
    "tile_scenes",
    "water_fold",
]
