"""Frozen-encoder evaluation on labelled image chips: pooled features, linear probe, k-NN and few-shot probes.

``di3cl evaluate probe`` (:func:`run_probes`, arguments :class:`~di3cl_hf.training.evaluation_args.ProbeArguments`)
and ``examples/evaluate_mstar.py`` (MSTAR-10, 17° train / 15° test) run it on any folder laid out as
``root/<split>/<class name>/<image>``; the encoders are DI3CL folders or random ones (:func:`build_encoder`). The
protocol:

- **features**: every chip is read as 8-bit grey, centre-cropped to ``crop`` pixels (padded when smaller), turned
  into ``pixel_values`` by the encoder's :class:`DI3CLImageProcessor` (resized to ``size``) and encoded once, without
  gradients; the feature is the global average of the last stage (``pooler_output``);
- **standardisation**: mean and standard deviation of the *train* features (labels unused) are applied to both
  splits;
- **linear probe**: multinomial logistic regression in torch, full batch, Adam for ``epochs`` steps; the weight decay
  is chosen on a stratified held-out part of train (never on test), then the probe is refitted on all of train;
- **k-NN**: cosine similarity of the standardised features, majority vote of the ``k`` nearest train chips (ties go
  to the class with the larger summed similarity);
- **few-shot**: ``k`` train chips per class drawn with each seed; the weight decay for each ``k`` is chosen the same
  way on the held-out part of train, then the probe is fitted on the ``k``-shot draw from all of train.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..atomic import write_json, write_text
from ..configuration_di3cl import DI3CLConfig
from ..image_processing_di3cl import DI3CLImageProcessor
from ..loading import load_model_and_processor
from ..modeling_di3cl import DI3CLModel

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".tif", ".tiff", ".bmp")
WEIGHT_DECAYS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@dataclass
class ChipSplit:
    """The image paths of one split, their class indices and the class names (sorted folder names)."""

    paths: list[Path]
    labels: torch.Tensor
    class_names: list[str]


def list_chips(root: str | Path, split: str, class_names: Sequence[str] | None = None) -> ChipSplit:
    """List ``root/split/<class>/<image>`` files; ``class_names`` fixes the label order (default: sorted folders)."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"{split_dir}: no such split folder (expected <root>/{split}/<class>/<image>)"
        )
    names = (
        list(class_names)
        if class_names is not None
        else sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    )
    paths, labels = [], []
    for index, name in enumerate(names):
        files = sorted(p for p in (split_dir / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{split_dir / name}: no images")
        paths += files
        labels += [index] * len(files)
    return ChipSplit(paths=paths, labels=torch.tensor(labels), class_names=names)


def read_chip(path: str | Path, crop: int) -> np.ndarray:
    """Read one chip as uint8 [H, W] grey and centre-crop it to ``crop`` x ``crop`` (zero-padded if smaller)."""
    with Image.open(path) as image:
        grey = np.asarray(image.convert("L"))
    height, width = grey.shape
    if height < crop or width < crop:
        padded = np.zeros((max(height, crop), max(width, crop)), dtype=grey.dtype)
        top, left = (padded.shape[0] - height) // 2, (padded.shape[1] - width) // 2
        padded[top : top + height, left : left + width] = grey
        grey, (height, width) = padded, padded.shape
    top, left = (height - crop) // 2, (width - crop) // 2
    return grey[top : top + crop, left : left + crop]


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    to_pixel_values: Callable[[list[np.ndarray]], torch.Tensor],
    paths: Sequence[Path],
    crop: int,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Pooled last-stage features [N, C] of ``paths`` (read with :func:`read_chip`), encoder in eval mode."""
    encoder.eval()
    features = []
    for start in range(0, len(paths), batch_size):
        chips = [read_chip(path, crop) for path in paths[start : start + batch_size]]
        features.append(encoder(pixel_values=to_pixel_values(chips)).pooler_output.float())
        if progress is not None:
            progress(min(start + batch_size, len(paths)), len(paths))
    return torch.cat(features)


def build_encoder(name: str, source: str, args: Any) -> tuple[nn.Module, DI3CLImageProcessor]:
    """The frozen encoder that ``NAME=source`` names: a DI3CL folder (through
    :func:`di3cl_hf.loading.load_model_and_processor`, local files only) or ``random`` (``args.backbone``,
    ``args.num_channels``, seeded by ``args.random_seed``)."""
    if source == "random":
        torch.manual_seed(args.random_seed)
        model = DI3CLModel(DI3CLConfig(backbone=args.backbone, num_channels=args.num_channels)).eval()
        return model, DI3CLImageProcessor(num_channels=args.num_channels)
    model, processor = load_model_and_processor(source, task="features", local_files_only=True)
    return model, processor


def configure_processor(
    processor: DI3CLImageProcessor, args: Any, train_paths: list[Path]
) -> Callable[[list[np.ndarray]], torch.Tensor]:
    """Set radiometry / resize / normalisation; returns a chips -> pixel_values function."""
    processor.do_resize, processor.size = True, {"height": args.size, "width": args.size}
    if args.radiometry == "amplitude":
        processor.input_kind, processor.clip_percentiles = "amplitude", [1.0, 99.9]

    def to_arrays(chips: list[np.ndarray]) -> list[np.ndarray]:
        if args.radiometry == "dn8":
            return chips
        return [
            chip.astype(np.float32) / 255.0 for chip in chips
        ]  # amplitude; DN 0 is floored by the processor

    if args.normalisation == "fit":
        rng = np.random.default_rng(0)
        sample = [
            train_paths[i]
            for i in rng.choice(len(train_paths), size=min(500, len(train_paths)), replace=False)
        ]
        processor.do_normalize = False
        unit = processor(to_arrays([read_chip(p, args.crop) for p in sample]), return_tensors="pt")
        processor.do_normalize = True
        values = unit["pixel_values"].transpose(0, 1).flatten(1)
        processor.image_mean = [float(v) for v in values.mean(1)]
        processor.image_std = [float(v) for v in values.std(1)]

    def to_pixel_values(chips: list[np.ndarray]) -> torch.Tensor:
        return processor(to_arrays(chips), return_tensors="pt")["pixel_values"]

    return to_pixel_values


def features_for(
    name: str, source: str, args: Any, train: ChipSplit, test: ChipSplit
) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Pooled features of both splits for the encoder ``NAME=source`` and what describes it (source, weights digest,
    processor statistics, seconds); cached under ``args.cache_dir`` when it is set (keyed by the weights' digest
    and the input settings)."""
    model, processor = build_encoder(name, source, args)
    to_pixel_values = configure_processor(processor, args, train.paths)
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().float().contiguous().numpy().tobytes())
    settings = f"{args.crop}-{args.size}-{args.radiometry}-{args.normalisation}"
    cache = (
        Path(args.cache_dir) / f"{name}-{digest.hexdigest()[:12]}-{settings}.pt" if args.cache_dir else None
    )
    info = {
        "source": source if source == "random" else str(Path(source).resolve()),
        "weights_sha256_12": digest.hexdigest()[:12],
        "image_mean": processor.image_mean,
        "image_std": processor.image_std,
        "input_kind": processor.input_kind,
    }
    if source == "random":
        info["random_seed"] = args.random_seed
    if cache is not None and cache.is_file():
        stored = torch.load(cache, weights_only=True)
        info["feature_seconds"] = stored["seconds"]
        return info, stored["train"], stored["test"]
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done == total or done % (args.batch_size * 10) == 0:
            print(f"  {name}: {done}/{total} chips, {time.perf_counter() - start:.0f} s", flush=True)

    train_features = extract_features(
        model, to_pixel_values, train.paths, args.crop, args.batch_size, progress
    )
    test_features = extract_features(model, to_pixel_values, test.paths, args.crop, args.batch_size, progress)
    seconds = round(time.perf_counter() - start, 1)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"train": train_features, "test": test_features, "seconds": seconds}, cache)
    info["feature_seconds"] = seconds
    return info, train_features, test_features


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Standardise with the mean / std of ``train`` (std floored at 1e-6); returns train and the others."""
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return [(x - mean) / std for x in (train, *others)]


def fit_linear_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    weight_decay: float,
    epochs: int = 300,
    learning_rate: float = 0.01,
    seed: int = 0,
) -> nn.Linear:
    """Multinomial logistic regression: full-batch Adam for ``epochs`` steps, L2 penalty ``weight_decay``."""
    generator = torch.Generator().manual_seed(seed)
    probe = nn.Linear(features.shape[1], num_classes)
    with torch.no_grad():
        probe.weight.normal_(0.0, 0.01, generator=generator)
        probe.bias.zero_()
    optimizer = torch.optim.Adam(probe.parameters(), lr=learning_rate)
    for _ in range(epochs):
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(probe(features), labels) + weight_decay * probe.weight.pow(2).sum()
        loss.backward()
        optimizer.step()
    return probe


@torch.no_grad()
def accuracy(probe: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> float:
    return float((probe(features).argmax(1) == labels).float().mean())


def stratified_holdout(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (fit, held_out): ``fraction`` of every class held out, drawn with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    fit, held = [], []
    for label in labels.unique():
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        count = max(1, round(fraction * len(members)))
        held.append(members[:count])
        fit.append(members[count:])
    return torch.cat(fit).sort().values, torch.cat(held).sort().values


def sample_shots(labels: torch.Tensor, shots: int, seed: int) -> torch.Tensor:
    """``shots`` indices per class (all of a class when it has fewer), drawn with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in labels.unique():
        members = (labels == label).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:shots]])
    return torch.cat(chosen)


@torch.no_grad()
def knn_accuracy(
    train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor, k: int
) -> float:
    """Cosine k-NN: majority vote of the ``k`` most similar train features (ties: larger summed similarity)."""
    similarity = F.normalize(test, dim=1) @ F.normalize(train, dim=1).T
    values, indices = similarity.topk(k, dim=1)
    num_classes = int(train_labels.max()) + 1
    neighbours = train_labels[indices]
    votes = torch.zeros(len(test), num_classes).scatter_add_(1, neighbours, torch.ones_like(values))
    summed = torch.zeros(len(test), num_classes).scatter_add_(1, neighbours, values)
    score = votes + 1e-3 * summed / (summed.abs().max() + 1e-12)  # similarity only breaks ties in the count
    return float((score.argmax(1) == test_labels).float().mean())


def choose_weight_decay(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    shots: int | None,
    seeds: Sequence[int],
    epochs: int,
    holdout_fraction: float = 0.2,
) -> tuple[float, dict[str, float]]:
    """Weight decay with the best mean held-out accuracy on a stratified split of the (standardised) train set.

    ``shots=None``: the probe is fitted on the whole fit part; else on ``shots`` per class drawn from it with each
    seed (the few-shot protocol). Returns the chosen value and the held-out accuracy of every candidate.
    """
    fit, held = stratified_holdout(labels, holdout_fraction, seed=0)
    scores = {}
    for weight_decay in WEIGHT_DECAYS:
        accuracies = []
        for seed in seeds if shots is not None else seeds[:1]:
            index = fit if shots is None else fit[sample_shots(labels[fit], shots, seed)]
            probe = fit_linear_probe(
                features[index], labels[index], num_classes, weight_decay, epochs, seed=seed
            )
            accuracies.append(accuracy(probe, features[held], labels[held]))
        scores[f"{weight_decay:g}"] = float(np.mean(accuracies))
    best = max(WEIGHT_DECAYS, key=lambda value: scores[f"{value:g}"])
    return best, scores


def evaluate_features(
    train: torch.Tensor,
    train_labels: torch.Tensor,
    test: torch.Tensor,
    test_labels: torch.Tensor,
    shots: Sequence[int] = (1, 5, 10),
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int = 300,
    knn_k: Sequence[int] = (1, 20),
) -> dict:
    """Linear probe, k-NN and few-shot probes of raw features; returns a JSON-ready dict (accuracies in [0, 1])."""
    start = time.perf_counter()
    num_classes = int(train_labels.max()) + 1
    train, test = standardise(train, test)
    results: dict = {"knn": {}, "few_shot": {}}
    weight_decay, scores = choose_weight_decay(train, train_labels, num_classes, None, seeds, epochs)
    probe_accuracies = [
        accuracy(
            fit_linear_probe(train, train_labels, num_classes, weight_decay, epochs, seed=seed),
            test,
            test_labels,
        )
        for seed in seeds
    ]
    results["linear_probe"] = {
        "accuracy": float(np.mean(probe_accuracies)),
        "std": float(np.std(probe_accuracies)),
        "per_seed": probe_accuracies,
        "weight_decay": weight_decay,
        "holdout_accuracy_by_weight_decay": scores,
    }
    for k in knn_k:
        results["knn"][str(k)] = knn_accuracy(train, train_labels, test, test_labels, k)
    for shot in shots:
        weight_decay, scores = choose_weight_decay(train, train_labels, num_classes, shot, seeds, epochs)
        per_seed = []
        for seed in seeds:
            index = sample_shots(train_labels, shot, seed)
            probe = fit_linear_probe(
                train[index], train_labels[index], num_classes, weight_decay, epochs, seed=seed
            )
            per_seed.append(accuracy(probe, test, test_labels))
        results["few_shot"][str(shot)] = {
            "accuracy": float(np.mean(per_seed)),
            "std": float(np.std(per_seed)),
            "per_seed": per_seed,
            "weight_decay": weight_decay,
            "holdout_accuracy_by_weight_decay": scores,
        }
    results["probe_seconds"] = round(time.perf_counter() - start, 1)
    return results


def run_probes(args: Any) -> dict:
    """``di3cl evaluate probe``: every encoder of ``args.encoders`` (``NAME=FOLDER`` or ``NAME=random``) scored with
    :func:`evaluate_features` on the chips of ``args.data_dir`` (a :class:`~di3cl_hf.training.evaluation_args.
    ProbeArguments`); writes ``probes.json`` and ``probes.md`` under ``args.output_dir`` and returns the summary
    (``protocol``, ``encoders``: name -> source facts and scores)."""
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    train = list_chips(args.data_dir, args.train_split)
    test = list_chips(args.data_dir, args.test_split, class_names=train.class_names)
    keys = ("crop", "size", "radiometry", "normalisation", "epochs", "seeds", "shots", "knn_k")
    protocol = {"num_train": len(train.paths), "num_test": len(test.paths), "class_names": train.class_names}
    summary: dict = {"protocol": {**protocol, **{key: getattr(args, key) for key in keys}}, "encoders": {}}
    for spec in args.encoders:
        name, _, source = spec.partition("=")
        start = time.perf_counter()
        info, train_features, test_features = features_for(name, source, args, train, test)
        results = evaluate_features(
            train_features,
            train.labels,
            test_features,
            test.labels,
            args.shots,
            args.seeds,
            args.epochs,
            args.knn_k,
        )
        summary["encoders"][name] = {**info, **results, "wall_seconds": round(time.perf_counter() - start, 1)}
    summary["arguments"] = asdict(args)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / "probes.json", summary, indent=2)
    write_text(output_dir / "probes.md", probes_table(summary))
    return summary


def probes_table(summary: dict) -> str:
    """Markdown table of :func:`run_probes`: accuracy (%) of the linear probe, k-NN and k-shot probes per encoder
    (mean ± std over the probe seeds)."""
    shots = summary["protocol"]["shots"]
    knn = sorted({k for entry in summary["encoders"].values() for k in entry["knn"]}, key=int)

    def cell(entry: dict) -> str:
        return f"{100 * entry['accuracy']:.1f} ± {100 * entry['std']:.1f}"

    header = ["encoder", "linear probe", *(f"k-NN k={k}" for k in knn), *(f"{s}-shot" for s in shots)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, entry in summary["encoders"].items():
        row = [name, cell(entry["linear_probe"]), *(f"{100 * entry['knn'][k]:.1f}" for k in knn)]
        row += [cell(entry["few_shot"][str(s)]) for s in shots]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"
