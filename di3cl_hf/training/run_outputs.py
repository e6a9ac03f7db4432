"""What a training run leaves behind besides checkpoints: the saved models, their model cards, the metrics
summary and the Hub upload (the loops call these from their ``finish`` step).

- Pre-training: :func:`save_encoder` (``encoder/``, ``best-encoder/``: ``DI3CLModel`` + processor + card, written
  atomically), :func:`run_info` (the card's "Training" facts), :func:`push_folder_to_hub`.
- Fine-tuning: :func:`save_finetuned` (model + processor, a linear probe's head as ``linear_probe.safetensors``),
  :func:`write_model_card` (``evaluation.json`` + ``README.md``), :func:`metrics_summary` (the printed end of a run).

The cards themselves are built by :mod:`di3cl_hf.hub.cards`; the run folder's layout is
:data:`di3cl_hf.training.common.RUN_LAYOUT`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import nn

from ..atomic import replace_directory, write_text
from ..di3cl_layers import LinearProbeModel
from ..hub.cards import build_model_card, format_table
from ..hub.push import push_model
from .finetuning_args import FinetuneArguments
from .metrics import save_json
from .pretraining_args import PretrainingArguments

ENCODER_DIRNAME = "encoder"
BEST_ENCODER_DIRNAME = "best-encoder"


# --------------------------------------------------------------------------------------------------------------
# Pre-training
# --------------------------------------------------------------------------------------------------------------


def run_info(args: PretrainingArguments, config, summary: dict) -> dict[str, Any]:
    """Facts of the run for the model card's "Training" section (:func:`di3cl_hf.hub.build_model_card`)."""
    data = args.data_dir or ", ".join(args.data_files or []) or args.dataset_name or "?"
    metrics = summary.get("last_metrics") or {}
    chance = 1.0 / (config.queue_size + 1)
    info: dict[str, Any] = {
        "data": f"{data} ({summary.get('num_images') or 'streamed'} images"
        + (", streamed)" if args.streaming else ")"),
        "objective": ("MoCo v2 (DI and CC off): " if args.objective == "mocov2" else "DI3CL: ")
        + "global InfoNCE (stage4) + contour InfoNCE (stage3) + dynamic-instance regression, "
        f"weights {config.global_loss_weight} / {config.contour_loss_weight} / {config.instance_loss_weight}",
        "backbone, channels, view size": f"{config.backbone}, {config.num_channels}, {config.image_size} px "
        f"(augmentation preset {args.augmentation_preset})",
        "queue size, temperature, key momentum": f"{config.queue_size}, {config.temperature}, {config.momentum}",
        "processes x per-device batch x accumulation": f"{summary.get('num_processes')} x "
        f"{args.per_device_batch_size} x {args.gradient_accumulation_steps} = {summary.get('global_batch_size')}",
        "optimiser": f"{args.optimizer}, lr {summary.get('learning_rate', 0.0):.5g}, momentum "
        f"{args.optimizer_momentum}, weight decay {args.weight_decay}, {args.lr_scheduler_type} schedule, "
        f"warm-up {args.warmup_steps or args.warmup_ratio}",
        "updates / images seen": f"{summary.get('global_step')} / {summary.get('images_seen')}",
        "precision / memory format": f"{summary.get('mixed_precision')} / "
        + ("channels_last" if args.channels_last else "contiguous"),
        "ImageNet initialisation": Path(args.imagenet_weights).name if args.imagenet_weights else "none",
        "skipped non-finite steps": summary.get("nonfinite_total", 0),
        "input statistics (image_mean / image_std, preprocessor_config.json)": (
            f"measured on up to {args.statistics_samples} sampled patches"
            if args.statistics_samples > 0
            else "nominal (not measured)"
        ),
        "seed": args.seed,
    }
    monitor = summary.get("monitor") or {}
    if monitor.get("best_step") is not None:
        info["online monitor (linear probe IoU of the validation folder)"] = (
            f"best {monitor['best_score']:.4f} at update {monitor['best_step']} (every {args.monitor_steps} "
            f"updates; this folder: update {summary.get('global_step')})"
        )
    if metrics:
        info["final training metrics"] = (
            f"loss {metrics.get('loss', float('nan')):.4f}, global top-1 {metrics.get('global_top1', float('nan')):.3f}, "
            f"contour top-1 {metrics.get('contour_top1', float('nan')):.3f} (chance 1/(K+1) = {chance:.2e}), "
            f"instance loss {metrics.get('instance_loss', float('nan')):.4f}"
        )
    return info


def push_folder_to_hub(folder: str | os.PathLike, repo_id: str, private: bool = False) -> Any:
    """Push the encoder folder with :func:`di3cl_hf.hub.push_model`, keeping its README.md (our run's card)."""
    card = (Path(folder) / "README.md").read_text()
    return push_model(folder, repo_id, private=private, card=card, commit_message="DI3CL pre-trained encoder")


def save_encoder(
    model,
    processor,
    args: PretrainingArguments,
    summary: dict,
    output_dir: str,
    dirname: str = ENCODER_DIRNAME,
) -> Path:
    """Write ``<output_dir>/<dirname>`` (DI3CLModel + image processor + README.md) atomically."""
    final = Path(output_dir) / dirname
    tmp = Path(output_dir) / f".tmp-{dirname}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    encoder = model.export_encoder()
    encoder.save_pretrained(str(tmp))
    processor.save_pretrained(str(tmp))
    card = build_model_card(  # named after the run folder, not the temporary one being written
        tmp,
        repo_id=args.hub_model_id or Path(output_dir).resolve().name,
        run_info=run_info(args, model.config, summary),
        tags=["pretraining"],
    )
    write_text(tmp / "README.md", str(card))
    return replace_directory(tmp, final)


# --------------------------------------------------------------------------------------------------------------
# Fine-tuning
# --------------------------------------------------------------------------------------------------------------


def save_finetuned(network: nn.Module, processor: Any, output_dir: str | os.PathLike) -> Path:
    """``save_pretrained`` of the model and its processor, written into a temporary folder whose files
    are then renamed into ``output_dir`` (a crash never leaves a half-written weight file there).

    A linear probe is saved as its (frozen) segmentation model plus ``linear_probe.safetensors``
    (the BatchNorm + 1x1 convolution head).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(dir=output_dir, prefix=".save-"))
    try:
        model = network.model if isinstance(network, LinearProbeModel) else network
        model.save_pretrained(str(temporary))
        processor.save_pretrained(str(temporary))
        if isinstance(network, LinearProbeModel):
            state = {
                key: tensor.detach().cpu().contiguous() for key, tensor in network.head.state_dict().items()
            }
            save_file(state, str(temporary / "linear_probe.safetensors"))
        for path in sorted(temporary.iterdir()):
            os.replace(path, output_dir / path.name)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return output_dir


def write_model_card(args: FinetuneArguments, results: Mapping[str, Any], output_dir: Path) -> Path:
    """Write ``evaluation.json`` (test scores, task, dataset) and the model card ``README.md`` of a
    saved run with :func:`di3cl_hf.hub.build_model_card`."""
    synthetic = "synthetic" in str(args.data_dir).lower()
    dataset = Path(args.data_dir).name + (
        " (synthetic)" if synthetic and "synthetic" not in Path(args.data_dir).name else ""
    )
    save_json(
        {"task": args.task, "dataset": dataset, "split": "test", "scores": results["test"]},
        output_dir / "evaluation.json",
    )
    card = build_model_card(
        output_dir,
        base_model=args.model_name_or_path if args.init == "di3cl" else None,
        run_info={
            "data": f"{dataset}{' — synthetic' if synthetic else ''}",
            "task": args.task,
            "initialisation": args.init,
            "mode": args.mode,
            "label_fraction": args.label_fraction,
            "steps": args.max_steps,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
        },
    )
    path = output_dir / "README.md"
    write_text(path, str(card))
    return path


def metrics_summary(results: Mapping[str, Any]) -> str:
    """Human-readable end of a run: the test scores in the paper's Table II layout and where things are."""
    arguments = results.get("arguments", {})
    name = f"{arguments.get('init', 'model')} ({arguments.get('task', '')}, {arguments.get('label_fraction', 1):g} labels)"
    return (
        format_table({name: results["test"]})
        + f"\ntest pixels: {results['test']['num_pixels']}, training samples: {results.get('num_train_samples')}, "
        f"training time: {results.get('train_seconds', 0):.1f} s\noutputs: {results['output_dir']}"
    )


__all__ = [
    "BEST_ENCODER_DIRNAME",
    "ENCODER_DIRNAME",
    "metrics_summary",
    "push_folder_to_hub",
    "run_info",
    "save_encoder",
    "save_finetuned",
    "write_model_card",
]
