"""The main job, end to end on the embedded synthetic data: ``make demo`` (or ``python -m di3cl_hf.demo``).

1. generate a synthetic SARSense-mini (unlabelled dual-pol patches) and the three synthetic downstream
   sets (land cover, water, roads) as georeferenced GeoTIFFs;
2. pre-train DI3CL briefly with Accelerate (:mod:`di3cl_hf.pretraining`);
3. fine-tune the three task heads with 10 % of the labels from the DI3CL encoder and from random
   initialisation, and score both on the test splits (:func:`di3cl_hf.training.evaluation.run_evaluation_grid`);
4. save every model with ``save_pretrained`` (+ processor + model card);
5. predict a whole synthetic scene, tile by tile, into a georeferenced GeoTIFF;
6. print the results table, where everything is, and how to open the Space on these models.

All data here is synthetic (:mod:`di3cl_hf.synthetic`); the numbers say how the pipeline behaves on
it, not how DI3CL performs on real SAR.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TASKS = ("landcover", "water", "roads")


@dataclass(frozen=True)
class DemoBudget:
    """Sizes of one demo run (``full`` fits 20 minutes on 2 CPU cores, ``quick`` 3 minutes)."""

    pretrain_patches: int
    segmentation_patches: int
    patch_size: int
    pretrain_steps: int
    pretrain_batch: int
    queue_size: int
    finetune_steps: int
    crop_size: int
    scene_size: int


FULL = DemoBudget(
    pretrain_patches=384,
    segmentation_patches=200,
    patch_size=128,
    pretrain_steps=300,
    pretrain_batch=32,
    queue_size=1024,
    finetune_steps=150,
    crop_size=128,
    scene_size=2048,
)
QUICK = DemoBudget(
    pretrain_patches=64,
    segmentation_patches=60,
    patch_size=96,
    pretrain_steps=8,
    pretrain_batch=8,
    queue_size=64,
    finetune_steps=6,
    crop_size=96,
    scene_size=512,
)


def _step(title: str) -> float:
    print(f"\n=== {title}", flush=True)
    return time.perf_counter()


def run(output_dir: Path, budget: DemoBudget, seed: int = 0, num_workers: int = 1) -> dict:
    """Run the demo into ``output_dir`` (wiped first) and return the evaluation summary."""
    import torch

    from .data.synthetic import generate_sarsense, generate_scene, generate_segmentation_sets
    from .image_processing_di3cl import DI3CLImageProcessor
    from .inference.scene import predict_scene
    from .modeling_di3cl import DI3CLForSemanticSegmentation
    from .training.evaluation import EvaluationGridArguments, comparison_table, run_evaluation_grid
    from .training.pretraining import PretrainingArguments
    from .training.pretraining import main as pretrain

    if output_dir.exists():
        shutil.rmtree(output_dir)
    data_dir = output_dir / "data"
    started = time.perf_counter()

    t0 = _step("1/5 generating synthetic SAR data (SARSense-mini + land cover / water / roads)")
    generate_sarsense(
        data_dir / "synthetic-sarsense-mini", budget.pretrain_patches, size=budget.patch_size, seed=seed
    )
    generate_segmentation_sets(
        data_dir / "synthetic-segmentation",
        budget.segmentation_patches,
        size=budget.patch_size,
        seed=seed + 1,
    )
    print(f"done in {time.perf_counter() - t0:.1f} s", flush=True)

    t0 = _step("2/5 pre-training DI3CL (resnet18, Accelerate, bf16 autocast where supported)")
    pretrain_dir = output_dir / "pretrain"
    code = pretrain(
        PretrainingArguments(
            data_dir=str(data_dir / "synthetic-sarsense-mini"),
            backbone="resnet18",
            num_channels=2,
            image_size=budget.patch_size,
            projection_hidden_dim=512,
            queue_size=budget.queue_size,
            boxes_per_image=4,
            min_box_size=16,
            per_device_batch_size=budget.pretrain_batch,
            max_steps=budget.pretrain_steps,
            warmup_steps=max(1, budget.pretrain_steps // 20),
            base_learning_rate=0.3,
            momentum=0.99,  # a short run: a faster key encoder than the release's 0.999 (METHOD.md §2)
            num_workers=num_workers,
            output_dir=str(pretrain_dir),
            logging_steps=max(1, budget.pretrain_steps // 10),
            save_steps=max(1, budget.pretrain_steps // 2),
            seed=seed,
            run_name="di3cl-demo",
        )
    )
    if code != 0:
        raise SystemExit(f"pre-training failed with exit code {code}")
    encoder_dir = pretrain_dir / "encoder"
    print(f"done in {time.perf_counter() - t0:.1f} s; encoder: {encoder_dir}", flush=True)

    t0 = _step("3/5 fine-tuning land cover / water / roads with 10 % of labels: DI3CL vs random init")
    evaluation_dir = output_dir / "evaluation"
    summary = run_evaluation_grid(
        EvaluationGridArguments(
            data_dir=str(data_dir / "synthetic-segmentation"),
            output_dir=str(evaluation_dir),
            pretrained_model=str(encoder_dir),
            tasks=list(TASKS),
            initialisations=["di3cl", "random"],
            label_fractions=[0.1],
            backbone="resnet18",
            num_channels=2,
            crop_size=budget.crop_size,
            batch_size=8,
            max_steps=budget.finetune_steps,
            decoder_hidden_size=64,
            seeds=[seed],
            kmeans=False,
            save_models=True,
        )
    )
    print(f"done in {time.perf_counter() - t0:.1f} s", flush=True)

    t0 = _step("4/5 collecting the fine-tuned models (save_pretrained + processor + model card)")
    models_dir = output_dir / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    for task in TASKS:
        source = evaluation_dir / "runs" / task / "di3cl" / "labels-0.1" / f"seed-{seed}"
        shutil.copytree(source, models_dir / task, ignore=shutil.ignore_patterns("checkpoints", "runs"))
    print(f"models: {models_dir}/{{{','.join(TASKS)}}}", flush=True)

    t0 = _step(
        f"5/5 predicting a whole synthetic {budget.scene_size}x{budget.scene_size} scene, tile by tile"
    )
    scene = data_dir / "synthetic-scene.tif"
    generate_scene(scene, budget.scene_size, budget.scene_size, seed=seed + 2)
    model = DI3CLForSemanticSegmentation.from_pretrained(str(models_dir / "landcover"), dtype=torch.float32)
    processor = DI3CLImageProcessor.from_pretrained(str(models_dir / "landcover"))
    prediction_path = output_dir / "synthetic-scene-landcover.tif"
    predict_scene(model, scene, prediction_path, processor, tile_size=256, overlap=32)
    print(f"done in {time.perf_counter() - t0:.1f} s", flush=True)

    print("\n=== Results on SYNTHETIC data (10 % of labels; test splits)\n")
    print(comparison_table(summary))
    print(f"total time: {time.perf_counter() - started:.0f} s")
    print("\nWhere everything is:")
    print(f"  synthetic data         {data_dir}")
    print(
        f"  pre-trained encoder    {encoder_dir}  (DI3CLModel + processor + card; TensorBoard: {pretrain_dir}/runs)"
    )
    print(f"  task models            {models_dir}/{{landcover,water,roads}}")
    print(f"  evaluation             {evaluation_dir}/evaluation.md, label_efficiency.png")
    print(f"  scene prediction       {prediction_path}")
    print("\nOpen the Space on these models:")
    print(
        f"  DI3CL_MODEL_DIR={models_dir} .venv/bin/python space/app.py   # then browse http://127.0.0.1:7860"
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the demo."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output-dir", default="outputs/demo", help="Where data, models and results go (wiped)."
    )
    parser.add_argument("--quick", action="store_true", help="Tiny budget (CI smoke run, about 3 minutes).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-workers", type=int, default=1, help="DataLoader workers during pre-training.")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run(Path(args.output_dir), QUICK if args.quick else FULL, seed=args.seed, num_workers=args.num_workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())

__all__ = ["FULL", "QUICK", "DemoBudget", "main", "run"]
