"""Flood / water ablation on real Sentinel-1 sets: ETCI 2021 and OMBRIA (issue #24).

Tasks (``--tasks``; the data folders as they come, read by :mod:`di3cl_hf.data.flood`):

- ``etci``: water = flood ∪ permanent water, VV + VH (2 channels; 255 = no data, ignored), split by 5 x 5-tile
  blocks of the grid: train 464 / validation 156 / test 157 tiles (``--etci_dir``);
- ``ombria-after``: flooded area from the after image alone (1 channel), OMBRIA's train / test folders;
- ``ombria-pair``: the same from the (before, after) pair (2 channels) (``--ombria_dir``).

For every task, initialisation (``--init NAME=ENCODER_FOLDER``, repeatable, and/or ``random``), label fraction
(``--fractions``, drawn from the seed with at least one water tile: :func:`~di3cl_hf.data.label_fraction_subset`),
seed (``--seeds``) and mode (``--modes``: ``full`` fine-tuning or ``frozen`` encoder), one
:func:`~di3cl_hf.training.finetuning.finetune` run (ResNet-18 + UperNet, decoder 128, 300 steps, 256² crops, batch
8, AdamW 5e-4, cosine with 10 % warm-up, by default). An encoder with another channel count than the task's gets its
first convolution adapted (:mod:`~di3cl_hf.training.segmentation_models`). Every run is scored on the **test**
split after its last step; the ETCI validation split is **unused** (no model selection, no early stopping, not
scored). Classical baselines (:mod:`~di3cl_hf.training.baselines`: thresholds fitted on the same labelled subset,
Otsu per tile, the before/after log ratio) are scored on the same test split.

Protocol flags (recorded in the budget when not at their defaults, so records of two protocols never mix):
``--segmentation_loss ce+dice``, ``--foreground_crop_probability P`` (a training crop centred on a water pixel
with probability P) and ``--backbone_learning_rate_scale S`` (encoder lr = S x lr in ``full`` mode). With a few
labelled tiles water can reach the loss in too few random crops for a CE model to predict any; the second protocol
of ``results/real/flood-ablation.md`` uses ``ce+dice``, 0.5 and 0.1.

Outputs in ``--output_dir``: ``flood.json`` (every finished run: water IoU / F1, confusion matrix, wall and training
time, machine, command; written atomically after each run, and finished runs are skipped when the command is run
again), ``flood.md`` (mean ± sample standard deviation over seeds per task, initialisation × mode × fraction, the
classical rows in the same tables) and ``flood_label_efficiency.png`` (IoU against the label fraction).

One process per ``--output_dir`` (a lock refuses a second). To run subsets in parallel, give each process its own
``--output_dir`` and combine them::

    OMP_NUM_THREADS=1 python examples/evaluate_flood.py --etci_dir DATA/s1-flood-etci --ombria_dir DATA/s1-flood-ombria \\
        --tasks etci --init random --init di3cl-s1=runs/r18-s1/encoder --output_dir results/flood/etci &
    OMP_NUM_THREADS=1 python examples/evaluate_flood.py --etci_dir DATA/s1-flood-etci --ombria_dir DATA/s1-flood-ombria \\
        --tasks ombria-after ombria-pair --init random --init di3cl-s1=runs/r18-s1/encoder --output_dir results/flood/ombria &
    wait
    python examples/evaluate_flood.py --merge results/flood/etci results/flood/ombria --output_dir results/flood
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from di3cl_hf.atomic import atomic_path, write_json, write_text
from di3cl_hf.data.flood import flood_layout, load_flood
from di3cl_hf.data.segmentation import label_fraction_subset
from di3cl_hf.runtime import cpu_description, cpu_flags
from di3cl_hf.training.baselines import (
    LOG_RATIO_WEIGHTS,
    binary_scores,
    fisher_weights,
    fit_threshold,
    images_in_db,
    otsu_predict,
    score_predictor,
)
from di3cl_hf.training.common import run_precision
from di3cl_hf.training.finetuning import FinetuneArguments, finetune

TASKS = {
    "etci": {"layout": "etci", "data": "etci_dir"},
    "ombria-after": {"layout": "ombria-after", "data": "ombria_dir"},
    "ombria-pair": {"layout": "ombria-pair", "data": "ombria_dir"},
}
"""Task -> flood layout and the argument naming its folder."""

BUDGET_KEYS = ("backbone", "max_steps", "crop_size", "batch_size", "learning_rate", "decoder_hidden_size")
PROTOCOL_DEFAULTS = {
    name: FinetuneArguments.__dataclass_fields__[name].default
    for name in ("segmentation_loss", "backbone_learning_rate_scale", "foreground_crop_probability")
}
"""Budget keys added later (FinetuneArguments' defaults): recorded only when they differ from these (older records
keep their budget)."""
CLASSICAL = "classical"
"""The mode of the classical rows."""


def classical_methods(task: str, train: list) -> dict[str, Any]:
    """``{name: predict(image) -> foreground}`` of the classical baselines of ``task``, fitted on ``train``
    (``(dB image, label)`` pairs); Otsu needs no labels."""
    channels = flood_layout(TASKS[task]["layout"]).channels
    methods: dict[str, Any] = {}
    for index, channel in enumerate(channels):
        weights = tuple(1.0 if i == index else 0.0 for i in range(len(channels)))
        methods[f"threshold {channel}"] = fit_threshold(train, weights).predict
    if len(channels) == 2:
        methods["threshold linear (Fisher)"] = fit_threshold(train, fisher_weights(train)).predict
    if channels == ("before", "after"):
        methods["log ratio (after − before dB)"] = fit_threshold(train, LOG_RATIO_WEIGHTS).predict
    for index, channel in enumerate(channels):
        if channel != "before":
            methods[f"Otsu per tile {channel}"] = lambda image, band=index: otsu_predict(image, band)
    return methods


def run_key(task: str, init: str, mode: str, fraction: float, seed: int) -> str:
    """Key of one run in ``flood.json``."""
    return f"{task}|{init}|{mode}|{fraction:g}|{seed}"


def machine() -> dict[str, Any]:
    """CPU model and flags, torch threads, GPU (if any) and the precision ``auto`` resolves to here."""
    return {
        "cpu": cpu_description(),
        "flags": cpu_flags(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "precision": run_precision("auto")[0],
        "torch": torch.__version__,
    }


def _classical_runs(args: argparse.Namespace, task: str, record: dict, splits: Any) -> None:
    """Fit and score the classical baselines of ``task`` for every fraction and seed not yet in ``record``."""
    channels = len(flood_layout(TASKS[task]["layout"]).channels)
    test = None
    for seed in args.seeds:
        for fraction in args.fractions:
            known = record["classical"].get(task)
            if known and all(run_key(task, m, CLASSICAL, fraction, seed) in record["runs"] for m in known):
                continue
            started = time.perf_counter()
            subset = label_fraction_subset(splits["train"], fraction, seed, positive_classes=[1])
            train = images_in_db(subset, channels)
            test = test if test is not None else images_in_db(splits["test"], channels)
            methods = classical_methods(task, train)
            record["classical"][task] = list(methods)
            for name, predict in methods.items():
                scores = score_predictor(predict, test)
                record["runs"][run_key(task, name, CLASSICAL, fraction, seed)] = {
                    "task": task, "init": name, "mode": CLASSICAL, "fraction": fraction, "seed": seed,
                    **scores, "num_train_samples": len(subset), "wall_seconds": time.perf_counter() - started,
                    "machine": record["machine"]["cpu"], "command": record["command"],
                }  # fmt: skip
            print(f"{task} classical, {fraction:g} labels, seed {seed}: " + ", ".join(
                f"{n} {record['runs'][run_key(task, n, CLASSICAL, fraction, seed)]['iou']:.3f}" for n in methods
            ), flush=True)  # fmt: skip


def _finetune_run(
    args: argparse.Namespace, task: str, init: str, encoder: str | None, mode: str, fraction: float, seed: int
) -> dict:
    """One fine-tuning, scored on the test split (validation unused)."""
    layout = flood_layout(TASKS[task]["layout"])
    started, cpu_started = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="flood-run-") as output:
        results = finetune(
            FinetuneArguments(
                data_dir=str(getattr(args, TASKS[task]["data"])), layout=layout.name, task=layout.task,
                init="random" if encoder is None else "di3cl", model_name_or_path=encoder, backbone=args.backbone,
                num_channels=len(layout.channels), mode=mode, label_fraction=fraction, seed=seed,
                crop_size=args.crop_size, batch_size=args.batch_size, eval_batch_size=args.eval_batch_size,
                max_steps=args.max_steps, learning_rate=args.learning_rate, warmup_steps=max(1, args.max_steps // 10),
                decoder_hidden_size=args.decoder_hidden_size, mixed_precision=args.mixed_precision,
                **{name: getattr(args, name) for name in PROTOCOL_DEFAULTS},
                final_validation=False, output_dir=output, save_model=False, report_to="none", disable_tqdm=True,
            )
        )  # fmt: skip
    confusion = np.asarray(results["test"]["confusion_matrix"], dtype=np.int64)
    return {
        "task": task, "init": init, "mode": mode, "fraction": fraction, "seed": seed, "encoder": encoder,
        **binary_scores(confusion), "confusion_matrix": confusion.tolist(), "num_train_samples": results["num_train_samples"],
        "train_seconds": results["train_seconds"], "wall_seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu_started, "final_train_loss": results["final_train_loss"],
    }  # fmt: skip


# -- tables and curves -----------------------------------------------------------------------------------
def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return float("nan"), float("nan")
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    mean, std = _mean_std(values)
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.3f}" if len(values) == 1 else f"{mean:.3f} ± {std:.3f}"


def _rows(record: dict, task: str) -> Iterator[tuple[str, str, dict]]:
    """``(init, mode, {fraction: [runs]})`` of ``task``: fine-tuned rows in order, then the classical ones."""
    runs = [run for run in record["runs"].values() if run["task"] == task]
    order = [(init, mode) for init in record["order"] for mode in record["modes"]]
    order += [(name, CLASSICAL) for name in record["classical"].get(task, [])]
    for init, mode in order:
        chosen = [run for run in runs if run["init"] == init and run["mode"] == mode]
        if chosen:
            by_fraction: dict[float, list[dict]] = {}
            for run in chosen:
                by_fraction.setdefault(float(run["fraction"]), []).append(run)
            yield init, mode, by_fraction


def task_table(record: dict, task: str) -> str:
    """Markdown table of ``task``: water IoU and F1 (mean ± std over seeds) per fraction, runs, minutes per run."""
    fractions = sorted({float(run["fraction"]) for run in record["runs"].values() if run["task"] == task})
    head = "| initialisation / method | mode | " + " | ".join(
        f"{100 * f:g} % IoU | {100 * f:g} % F1" for f in fractions
    )
    lines = [
        head + " | runs | min / run | CPU min / run |",
        "|---|---|" + "---:|---:|" * len(fractions) + "---:|---:|---:|",
    ]
    for init, mode, by_fraction in _rows(record, task):
        cells = []
        for fraction in fractions:
            runs = by_fraction.get(fraction, [])
            cells += [_cell([r["iou"] for r in runs]), _cell([r["f1"] for r in runs])]
        every = [run for runs in by_fraction.values() for run in runs]
        minutes = np.mean([run["wall_seconds"] for run in every]) / 60
        cpu = [run["cpu_seconds"] for run in every if "cpu_seconds" in run]
        cpu_cell = f"{np.mean(cpu) / 60:.1f}" if cpu else "–"
        lines.append(
            f"| {init} | {mode} | " + " | ".join(cells) + f" | {len(every)} | {minutes:.1f} | {cpu_cell} |"
        )
    return "\n".join(lines)


def write_markdown(record: dict, path: Path) -> None:
    """``flood.md``: one table per task, then the protocol, budget, machine(s) and commands."""
    parts = ["# Flood / water ablation on real Sentinel-1 (generated by examples/evaluate_flood.py)\n"]
    for task, info in record["tasks"].items():
        sizes = ", ".join(f"{name} {count}" for name, count in info["splits"].items())
        parts.append(f"## {task} ({info['layout']}: {', '.join(info['channels'])}; {sizes})\n")
        parts.append(task_table(record, task) + "\n")
    budget = ", ".join(f"{key} {value}" for key, value in record["budget"].items())
    machines = sorted({json.dumps(m, sort_keys=True) for m in record["machines"]})
    parts.append(
        "Water (class 1) IoU / F1 on the **test** split, summed over its tiles; mean ± sample standard deviation "
        "(ddof 1) over seeds; min / run is wall time, CPU min / run the process's CPU time (load-independent with "
        "OMP_NUM_THREADS=1). The validation split is unused (no selection, no early stopping). Label fractions "
        "are drawn per seed with at least one water tile (the same draw for the classical rows). Fine-tuning: "
        f"{budget}, warm-up 10 %. Classical rows: thresholds fitted on the labelled subset (maximising its IoU), "
        "Otsu per tile (no labels), log ratio = after − before in dB.\n"
    )
    parts.append(
        f"Wall time of all runs: {sum(r['wall_seconds'] for r in record['runs'].values()) / 3600:.2f} h.\n"
    )
    parts.append("Machines:\n\n" + "\n".join(f"- {m}" for m in machines) + "\n")
    parts.append("Commands:\n\n" + "\n".join(f"    {c}" for c in record["commands"]) + "\n")
    write_text(path, "\n".join(parts))


def curve_rows(record: dict, task: str) -> list[tuple[str, str, dict]]:
    """The rows of ``task`` drawn as curves: those measured at two or more label fractions when the task has two
    or more (a row scored at one fraction only, such as an ablation encoder, is not a curve: it stays in the
    tables and out of the figure's legend); every row when the task has one fraction."""
    rows = list(_rows(record, task))
    curves = [row for row in rows if len(row[2]) > 1]
    return curves or rows


def plot_curves(record: dict, path: Path) -> Path | None:
    """``flood_label_efficiency.png``: IoU vs label fraction per task, one line per initialisation × mode (error
    bars: std over seeds; rows as :func:`curve_rows` chooses), classical rows dashed; ``None`` without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(record["tasks"])
    figure, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 3.8), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        for init, mode, by_fraction in curve_rows(record, task):
            points = sorted((f, *_mean_std([r["iou"] for r in runs])) for f, runs in by_fraction.items())
            style = {"linestyle": "--", "marker": "x", "alpha": 0.7} if mode == CLASSICAL else {"marker": "o"}
            axis.errorbar(
                [100 * f for f, _, _ in points], [m for _, m, _ in points], yerr=[s for _, _, s in points],
                label=init if mode == CLASSICAL else f"{init} ({mode})", capsize=3, **style,
            )  # fmt: skip
        fractions = sorted({float(r["fraction"]) for r in record["runs"].values() if r["task"] == task})
        axis.set_xscale("log")
        axis.set_xticks([100 * f for f in fractions], [f"{100 * f:g}" for f in fractions])
        axis.minorticks_off()
        axis.set(xlabel="labelled training tiles (%)", ylabel="water IoU (test)", title=task)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=6)
    figure.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as temporary:
            figure.savefig(temporary, dpi=120)
    finally:
        plt.close(figure)
    return path


def write_outputs(record: dict, output_dir: Path) -> None:
    """``flood.json`` (atomically), ``flood.md`` and the curves."""
    write_json(output_dir / "flood.json", record, indent=1)
    write_markdown(record, output_dir / "flood.md")
    plot_curves(record, output_dir / "flood_label_efficiency.png")


# -- driver ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def exclusive(output_dir: Path) -> Iterator[None]:
    """Hold ``output_dir``/flood.lock for the run; a second process on the same folder is refused."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / "flood.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(
                f"{output_dir}: another evaluate_flood.py process writes here (flood.lock); give each process its "
                "own --output_dir and combine them with --merge"
            ) from None
        yield


def merge(sources: list[str], output_dir: Path) -> int:
    """Combine the ``flood.json`` of several output folders (same budget) into ``output_dir``."""
    records = []
    for source in sources:
        path = Path(source) / "flood.json"
        if not path.is_file():
            raise SystemExit(
                f"--merge {source}: no flood.json there; pass the --output_dir of an earlier run"
            )
        records.append(json.loads(path.read_text()))
    merged = {**records[0], "runs": {}, "order": [], "modes": [], "commands": [], "machines": [], "tasks": {}}
    merged["classical"] = {}
    for source, record in zip(sources, records):
        if record["budget"] != merged["budget"]:
            raise SystemExit(f"--merge {source}: budget {record['budget']} differs from {merged['budget']}")
        for key, run in record["runs"].items():
            merged["runs"].setdefault(key, run)
        for name in ("order", "modes", "commands", "machines"):
            merged[name] += [item for item in record[name] if item not in merged[name]]
        merged["tasks"].update(record["tasks"])
        merged["classical"].update(record["classical"])
    with exclusive(output_dir):
        write_outputs(merged, output_dir)
    print(f"merged {len(merged['runs'])} runs from {len(sources)} folder(s) into {output_dir}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The runner's flags (``--help``)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--etci_dir", help="ETCI folder: images/{tile}_vv.png, _vh.png + labels/ (task etci)."
    )
    parser.add_argument(
        "--ombria_dir", help="OMBRIA folder: {train,test}/{BEFORE,AFTER,MASK} (ombria-* tasks)."
    )
    parser.add_argument("--output_dir", default="results/flood")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument(
        "--init", action="append", default=None,
        help="random, or NAME=ENCODER_FOLDER (a DI3CL encoder; repeatable). Default: random.",
    )  # fmt: skip
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.01, 0.1, 1.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--modes", nargs="+", default=["full", "frozen"], choices=["full", "frozen", "linear"]
    )
    parser.add_argument("--backbone", default="resnet18", help="Encoder of init random.")
    parser.add_argument("--max_steps", type=int, default=300)
    parser.add_argument("--crop_size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--eval_batch_size", type=int, default=8)
    parser.add_argument("--learning_rate", type=float, default=5e-4)
    parser.add_argument("--decoder_hidden_size", type=int, default=128)
    parser.add_argument(
        "--segmentation_loss", default=PROTOCOL_DEFAULTS["segmentation_loss"], choices=["ce", "ce+dice"],
        help="ce+dice counters the rarity of water in small label fractions (a CE-only model can predict none).",
    )  # fmt: skip
    parser.add_argument(
        "--backbone_learning_rate_scale", type=float, default=PROTOCOL_DEFAULTS["backbone_learning_rate_scale"],
        help="Encoder learning rate = --learning_rate x this in full fine-tuning (e.g. 0.1 keeps pre-trained "
        "features; random encoders get the same scale).",
    )  # fmt: skip
    parser.add_argument(
        "--foreground_crop_probability", type=float, default=PROTOCOL_DEFAULTS["foreground_crop_probability"],
        help="Chance that a training crop is centred on a water pixel (nnU-Net-style oversampling).",
    )  # fmt: skip
    parser.add_argument(
        "--mixed_precision", default="auto", help="auto (bf16 only where native), bf16, fp32."
    )
    parser.add_argument("--no_classical", action="store_true", help="Skip the classical baselines.")
    parser.add_argument(
        "--merge", nargs="+", default=None,
        help="Only combine the flood.json of earlier --output_dir folders into --output_dir (md + png rebuilt).",
    )  # fmt: skip
    args = parser.parse_args(argv)
    for task in args.tasks if not args.merge else []:
        folder = getattr(args, TASKS[task]["data"])
        if not folder or not Path(folder).is_dir():
            raise SystemExit(
                f"--tasks {task} needs --{TASKS[task]['data']} FOLDER (an existing folder), got {folder!r}"
            )
    return args


def budget_of(args: argparse.Namespace) -> dict[str, Any]:
    """The fine-tuning budget of a record: :data:`BUDGET_KEYS`, plus the protocol keys that differ from
    :data:`PROTOCOL_DEFAULTS` (so records written before those flags existed still match)."""
    budget = {key: getattr(args, key) for key in BUDGET_KEYS}
    budget.update(
        {
            key: getattr(args, key)
            for key, default in PROTOCOL_DEFAULTS.items()
            if getattr(args, key) != default
        }
    )
    return budget


def _start_record(args: argparse.Namespace, output_dir: Path, inits: dict[str, str | None]) -> dict:
    """The existing ``flood.json`` (same budget, else refused) or a new record, with this command added."""
    path = output_dir / "flood.json"
    budget = budget_of(args)
    record = json.loads(path.read_text()) if path.is_file() else {"runs": {}, "budget": budget}
    if record["budget"] != budget:
        raise SystemExit(
            f"{path}: holds runs of budget {record['budget']}, not {budget}; use another --output_dir"
        )
    command = "python " + shlex.join(["examples/evaluate_flood.py", *sys.argv[1:]])
    record.update(command=command, machine=machine())
    for name, value in (
        ("order", list(inits)),
        ("modes", args.modes),
        ("commands", [command]),
        ("machines", [record["machine"]]),
    ):
        record[name] = record.get(name, []) + [v for v in value if v not in record.get(name, [])]
    record.setdefault("tasks", {})
    record.setdefault("classical", {})
    return record


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    output_dir = Path(args.output_dir)
    if args.merge:
        return merge(args.merge, output_dir)
    inits: dict[str, str | None] = {}
    for item in args.init or ["random"]:
        name, _, folder = item.partition("=")
        inits[name] = folder or None
    with exclusive(output_dir):
        record = _start_record(args, output_dir, inits)
        for task in args.tasks:
            layout = flood_layout(TASKS[task]["layout"])
            splits = load_flood(getattr(args, TASKS[task]["data"]), layout.name, image_dtype=None)
            record["tasks"][task] = {
                "layout": layout.name, "channels": list(layout.channels), "splits": {k: len(v) for k, v in splits.items()},
                "scored": "test", "validation": "unused",
            }  # fmt: skip
            if not args.no_classical:
                _classical_runs(args, task, record, splits)
                write_outputs(record, output_dir)
            for seed in args.seeds:
                for fraction in args.fractions:
                    for init, encoder in inits.items():
                        for mode in args.modes:
                            key = run_key(task, init, mode, fraction, seed)
                            if key in record["runs"]:
                                continue
                            run = _finetune_run(args, task, init, encoder, mode, fraction, seed)
                            run.update(machine=record["machine"]["cpu"], command=record["command"])
                            record["runs"][key] = run
                            write_outputs(record, output_dir)
                            print(
                                f"{key}: water IoU {run['iou']:.3f} F1 {run['f1']:.3f} "
                                f"({run['wall_seconds'] / 60:.1f} min, training {run['train_seconds'] / 60:.1f} min)",
                                flush=True,
                            )
        write_outputs(record, output_dir)
    for task in record["tasks"]:
        print(f"\n{task}\n" + task_table(record, task))
    return 0


if __name__ == "__main__":
    sys.exit(main())
