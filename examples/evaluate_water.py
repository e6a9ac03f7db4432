"""Water segmentation on the five real Sentinel-1 chips, leave one chip out (issue #15 item 4).

For each chip of ``samples/sentinel1/water`` (or ``--water_dir``), fine-tune on the four others and score water
IoU / F1 on the held-out chip, for every initialisation (``--init NAME=ENCODER_FOLDER`` or ``random``) and mode
(``full``: everything trains; ``frozen``: the encoder is frozen, UperNet trains). Pooled scores sum the five
held-out confusion matrices. Channels: the VH band only (the pre-training scenes are VH), so every
initialisation sees the same one-channel input.

Results go to ``--output_dir``/water.json (resumable: finished runs are skipped) and water.md. Example::

    OMP_NUM_THREADS=1 python examples/evaluate_water.py --output_dir results/real \\
        --init random --init di3cl-synthetic=runs/synth-r18/encoder --init di3cl-real-s1=runs/r18-s1/encoder \\
        --modes full frozen --seeds 0 --max_steps 100
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from di3cl_hf.data.samples import sentinel1_sample
from di3cl_hf.training.finetuning import FinetuneArguments, finetune

CHANNEL = "vh"


def make_fold(water_dir: Path, held_out: str, root: Path) -> Path:
    """``root/train`` (four chips) and ``root/test`` (the held-out one): VH images and masks, as symlinks."""
    chips = sorted(p.stem for p in (water_dir / "masks").glob("*.tif"))
    for chip in chips:
        split = "test" if chip == held_out else "train"
        for kind, source in (
            ("images", water_dir / "images" / f"{chip}_{CHANNEL}.tif"),
            ("masks", water_dir / "masks" / f"{chip}.tif"),
        ):
            target = root / split / kind / f"{chip}.tif"
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(source.resolve())
    return root


def water_scores(confusion: np.ndarray) -> dict[str, float]:
    """Water (class 1) IoU and F1 of a 2x2 confusion matrix (rows truth, columns prediction); NaN when undefined."""
    tp = float(confusion[1, 1])
    fp = float(confusion[0, 1])
    fn = float(confusion[1, 0])
    iou = tp / (tp + fp + fn) if tp + fp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return {"iou": iou, "f1": f1, "water_pixels": int(tp + fn), "predicted_water": int(tp + fp)}


def run_one(
    args: argparse.Namespace, fold: Path, init: str, encoder: str | None, mode: str, seed: int, stats: bool
):
    with tempfile.TemporaryDirectory() as output:
        results = finetune(
            FinetuneArguments(
                data_dir=str(fold),
                task="water",
                init="random" if encoder is None else "di3cl",
                model_name_or_path=encoder,
                backbone="resnet18",
                num_channels=1,
                mode=mode,
                crop_size=args.crop_size,
                batch_size=args.batch_size,
                eval_batch_size=1,
                max_steps=args.max_steps,
                learning_rate=args.learning_rate,
                warmup_steps=max(1, args.max_steps // 10),
                decoder_hidden_size=args.decoder_hidden_size,
                estimate_statistics=stats,
                seed=seed,
                output_dir=output,
                save_model=False,
                report_to="none",
                disable_tqdm=True,
            )
        )
    return {
        "confusion_matrix": results["test"]["confusion_matrix"],
        "train_seconds": results["train_seconds"],
        "input_statistics": results["input_statistics"],
    }


def table(record: dict) -> str:
    """Markdown: one row per (initialisation, mode), water IoU / F1 per held-out chip and pooled, mean +/- std over seeds."""
    chips = record["chips"]
    lines = [
        "| initialisation | mode | seeds | "
        + " | ".join(f"{c} IoU / F1" for c in chips)
        + " | pooled IoU | pooled F1 |",
        "|---|---|---|" + "---|" * len(chips) + "---|---|",
    ]
    for name in record["order"]:
        for mode in record["modes"]:
            runs = [record["runs"].get(f"{name}|{mode}|{seed}") or {} for seed in record["seeds"]]
            per_seed = [run for run in runs if all(chip in run for chip in chips)]
            if not per_seed:
                continue
            cells = []
            for chip in chips:
                scores = [water_scores(np.asarray(s[chip]["confusion_matrix"])) for s in per_seed]
                cells.append(" / ".join(_fmt([x[key] for x in scores]) for key in ("iou", "f1")))
            pooled = [
                water_scores(sum(np.asarray(s[chip]["confusion_matrix"]) for chip in chips)) for s in per_seed
            ]
            lines.append(
                f"| {name} | {mode} | {len(per_seed)} | "
                + " | ".join(cells)
                + f" | {_fmt([p['iou'] for p in pooled])} | {_fmt([p['f1'] for p in pooled])} |"
            )
    return "\n".join(lines)


def _machine() -> str:
    cpu = platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} logical CPU(s), torch threads {torch.get_num_threads()}"


def _fmt(values: list[float]) -> str:
    values = [v for v in values]
    if any(np.isnan(values)):
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def write_markdown(record: dict, path: Path) -> None:
    """``water.md``: the table, the budget, the seeds, the commands, the machine and the wall time."""
    budget = ", ".join(f"{key} {value}" for key, value in record["budget"].items())
    commands = record.get("commands") or [record.get("command", "")]
    path.write_text(
        "# Water, leave one real chip out (generated by examples/evaluate_water.py)\n\n"
        + table(record)
        + f"\n\nWater (class 1) IoU / F1 on each held-out chip; pooled = summed confusion matrices of the 5 folds."
        f"\nChannels: {record['channels']}. Budget: {budget}. Seeds: {record['seeds']}."
        f"\nMachine: {record['machine']}. Wall time: {record.get('wall_seconds', 0) / 60:.1f} min.\n\nCommands:\n\n"
        + "\n".join(f"    {command}" for command in commands)
        + "\n"
    )


def merge(sources: list[str], output_dir: Path) -> int:
    """Combine ``water.json`` files (same chips, budget and seeds) into ``output_dir``/water.json + water.md."""
    records = [json.loads((Path(source) / "water.json").read_text()) for source in sources]
    merged = dict(records[0])
    merged["runs"], merged["order"], merged["commands"] = {}, [], []
    merged["wall_seconds"] = sum(record.get("wall_seconds", 0.0) for record in records)
    for record in records:
        if record["budget"] != merged["budget"] or record["chips"] != merged["chips"]:
            raise ValueError("--merge: the runs have different budgets or chips")
        merged["runs"].update(record["runs"])
        merged["seeds"] = sorted(set(merged["seeds"]) | set(record["seeds"]))
        merged["order"] += [name for name in record["order"] if name not in merged["order"]]
        merged["commands"].append(record.get("command", ""))
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "water.json").write_text(json.dumps(merged, indent=1))
    write_markdown(merged, output_dir / "water.md")
    print(table(merged))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--water_dir", default=None, help="Default: the embedded samples/sentinel1/water.")
    parser.add_argument("--output_dir", default="results/real")
    parser.add_argument(
        "--init", action="append", default=None,
        help="random, or NAME=ENCODER_FOLDER (repeatable; NAME+stats=FOLDER also re-estimates the statistics).",
    )  # fmt: skip
    parser.add_argument("--modes", nargs="+", default=["full", "frozen"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--max_steps", type=int, default=100)
    parser.add_argument("--crop_size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--learning_rate", type=float, default=3e-4)
    parser.add_argument("--decoder_hidden_size", type=int, default=128)
    parser.add_argument(
        "--merge", nargs="+", default=None,
        help="Only combine the water.json files of earlier runs (e.g. one process per initialisation) into --output_dir.",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.merge:
        return merge(args.merge, Path(args.output_dir))
    water_dir = Path(args.water_dir) if args.water_dir else sentinel1_sample("water")
    chips = sorted(p.stem for p in (water_dir / "masks").glob("*.tif"))
    inits: dict[str, str | None] = {}
    for item in args.init or ["random"]:
        name, _, folder = item.partition("=")
        inits[name] = folder or None
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / "water.json"
    record = json.loads(json_path.read_text()) if json_path.is_file() else {"runs": {}}
    record.update(
        chips=chips, modes=args.modes, seeds=args.seeds, order=list(dict.fromkeys(record.get("order", []) + list(inits))),
        budget={k: getattr(args, k) for k in ("max_steps", "crop_size", "batch_size", "learning_rate", "decoder_hidden_size")},
        channels="VH only (1 channel)", machine=_machine(),
        command="python " + " ".join(sys.argv),
    )  # fmt: skip
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folds_root:
        for seed in args.seeds:
            for name, encoder in inits.items():
                for mode in args.modes:
                    key = f"{name}|{mode}|{seed}"
                    runs = record["runs"].setdefault(key, {})
                    for chip in chips:
                        if chip in runs:
                            continue
                        fold = make_fold(water_dir, chip, Path(folds_root) / chip)
                        t0 = time.perf_counter()
                        runs[chip] = run_one(args, fold, name, encoder, mode, seed, name.endswith("+stats"))
                        score = water_scores(np.asarray(runs[chip]["confusion_matrix"]))
                        print(
                            f"{key} held out {chip}: water IoU {score['iou']:.3f} F1 {score['f1']:.3f} "
                            f"({time.perf_counter() - t0:.0f} s)", flush=True,
                        )  # fmt: skip
                        json_path.write_text(json.dumps(record, indent=1))
    record["wall_seconds"] = record.get("wall_seconds", 0.0) + time.perf_counter() - started
    json_path.write_text(json.dumps(record, indent=1))
    write_markdown(record, output_dir / "water.md")
    print(table(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
