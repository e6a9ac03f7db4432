"""MSTAR-10 with a frozen DI3CL encoder: linear probe, k-NN and 1/5/10-shot linear probes (issue #15, item 4).

MSTAR is never copied into the repository: pass the folder (``<root>/train`` = 17°, ``<root>/test`` = 15°, one
sub-folder per class, 8-bit magnitude JPEG chips). Each ``--encoder NAME=FOLDER`` is a DI3CL folder written by
``save_pretrained`` (``NAME=random`` builds a randomly initialised encoder with ``--random_seed``, ``--backbone``,
``--num_channels``). Features of every chip are extracted once per encoder (cached under ``--cache_dir``), then
:mod:`di3cl_hf.training.probing` runs the probes. Results are merged into ``--output_json`` (one entry per encoder
name, atomic write) and ``--output_md`` is regenerated from it; text below the line ``<!-- notes -->`` in an
existing markdown file is kept. Example (the commands behind ``results/real/mstar.md``)::

    OMP_NUM_THREADS=1 python examples/evaluate_mstar.py --mstar_dir "$MSTAR_DIR" \
        --encoder random=random --encoder di3cl-real-s1=runs/s1/r18-s1/encoder \
        --output_json results/real/mstar.json --output_md results/real/mstar.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from di3cl_hf.atomic import write_json, write_text
from di3cl_hf.training.probing import evaluate_features, features_for, list_chips

NOTES_MARKER = "<!-- notes -->"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mstar_dir", required=True, help="MSTAR-10 root with train/ (17°) and test/ (15°)")
    parser.add_argument("--encoder", action="append", required=True, help="NAME=FOLDER or NAME=random")
    parser.add_argument("--output_json", default="results/real/mstar.json")
    parser.add_argument("--output_md", default="results/real/mstar.md")
    parser.add_argument(
        "--cache_dir", default="mstar-features", help="feature cache (outside the repository)"
    )
    parser.add_argument("--crop", type=int, default=128, help="centre crop of every chip, pixels")
    parser.add_argument("--size", type=int, default=128, help="encoder input size after the crop, pixels")
    parser.add_argument(
        "--radiometry",
        choices=("dn8", "amplitude"),
        default="dn8",
        help="dn8: the 8-bit values as display quick-look (as the S1 pre-training tiles were read); "
        "amplitude: 8-bit magnitude -> 20 log10 dB, per-chip 1-99.9 percentile clip",
    )
    parser.add_argument(
        "--normalisation",
        choices=("fit", "processor"),
        default="fit",
        help="fit: mean/std measured on 500 train chips (same inputs for every encoder); processor: the folder's",
    )
    parser.add_argument("--backbone", default="resnet18", help="backbone of NAME=random")
    parser.add_argument("--num_channels", type=int, default=1, help="channels of NAME=random")
    parser.add_argument("--random_seed", type=int, default=0, help="seed of NAME=random's initialisation")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=300, help="full-batch Adam steps of every linear probe")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10])
    return parser.parse_args(argv)


def _cell(entry: dict) -> str:
    return f"{100 * entry['accuracy']:.1f} ± {100 * entry['std']:.1f}"


def markdown(summary: dict, notes: str) -> str:
    """The results page: table (accuracy in %, mean ± std over the probe seeds), protocol, commands, machine."""
    shots = summary["protocol"]["shots"]
    header = (
        "| initialisation | linear probe | k-NN k=1 | k-NN k=20 | "
        + " | ".join(f"{s}-shot" for s in shots)
        + " |"
    )
    lines = [
        "# MSTAR-10, frozen DI3CL encoders (issue #15, item 4)",
        "",
        "Accuracy (%) on the 15° test set (2,425 chips), features of the frozen encoder (global average of the last",
        f"stage), mean ± std over probe seeds {summary['protocol']['seeds']} (the linear probe on all of train varies",
        "only by its initialisation; few-shot rows also vary the drawn chips). Chance: 10 %.",
        "",
        header,
        "|" + "---|" * (4 + len(shots)),
    ]
    for name, entry in summary["encoders"].items():
        row = [name, _cell(entry["linear_probe"])]
        row += [f"{100 * entry['knn'][k]:.1f}" for k in ("1", "20")]
        row += [_cell(entry["few_shot"][str(s)]) for s in shots]
        lines.append("| " + " | ".join(row) + " |")
    protocol = summary["protocol"]
    lines += [
        "",
        "## Protocol",
        "",
        f"- Data: `{protocol['mstar_dir']}` (not in the repository): train = 17° ({protocol['num_train']} chips), "
        f"test = 15° ({protocol['num_test']} chips), classes {', '.join(protocol['class_names'])}.",
        f"- Input: 8-bit chip, centre crop {protocol['crop']} px, resized to {protocol['size']} px, radiometry "
        f"`{protocol['radiometry']}`, normalisation `{protocol['normalisation']}` (fit = mean/std of 500 train "
        "chips, identical for every encoder).",
        "- Features standardised with the train mean/std; linear probe = multinomial logistic regression "
        f"(full-batch Adam, lr 0.01, {protocol['epochs']} steps), weight decay chosen from "
        "1e-5..1e-1 on a stratified 20 % held-out part of train (for k-shot: k-shot draws from the other 80 %), "
        "then refitted on train; never tuned on test.",
        "- k-NN: cosine similarity of standardised features, majority vote (ties by summed similarity).",
        "",
        "| initialisation | source | feature extraction (s) | probes (s) | wd (probe) | wd (1/5/10-shot) |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in summary["encoders"].items():
        decays = "/".join(f"{entry['few_shot'][str(s)]['weight_decay']:g}" for s in shots)
        lines.append(
            f"| {name} | `{entry['source']}` (sha256 {entry['weights_sha256_12']}) | {entry['feature_seconds']} "
            f"| {entry['probe_seconds']} | {entry['linear_probe']['weight_decay']:g} | {decays} |"
        )
    lines += ["", "## Commands", "", "```"]
    lines += [command for command in summary["commands"]]
    lines += ["```", "", f"Machine: {summary['machine']}", "", NOTES_MARKER, notes.rstrip(), ""]
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    cores = os.cpu_count()
    return (
        f"{cpu} ({cores} cores, shared with other jobs), torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    train = list_chips(args.mstar_dir, "train")
    test = list_chips(args.mstar_dir, "test", class_names=train.class_names)
    output_json, output_md = Path(args.output_json), Path(args.output_md)
    summary = (
        json.loads(output_json.read_text()) if output_json.is_file() else {"encoders": {}, "commands": []}
    )
    protocol = {
        "mstar_dir": str(args.mstar_dir),
        "num_train": len(train.paths),
        "num_test": len(test.paths),
        "class_names": train.class_names,
        **{
            key: getattr(args, key)
            for key in ("crop", "size", "radiometry", "normalisation", "epochs", "seeds", "shots")
        },
    }
    if summary.get("protocol", protocol) != protocol:
        raise SystemExit(
            f"{output_json}: written with another protocol {summary['protocol']}; use another file"
        )
    summary["protocol"] = protocol
    for spec in args.encoder:
        name, _, source = spec.partition("=")
        if not source:
            raise SystemExit(f"--encoder {spec!r}: expected NAME=FOLDER or NAME=random")
        start = time.perf_counter()
        info, train_features, test_features = features_for(name, source, args, train, test)
        print(
            f"{name}: features {tuple(train_features.shape)} train, {tuple(test_features.shape)} test",
            flush=True,
        )
        results = evaluate_features(
            train_features, train.labels, test_features, test.labels, args.shots, args.seeds, args.epochs
        )
        summary["encoders"][name] = {**info, **results, "wall_seconds": round(time.perf_counter() - start, 1)}
        print(json.dumps({k: results[k] for k in ("linear_probe", "knn")}, default=str)[:400], flush=True)
    command = "OMP_NUM_THREADS=1 python " + " ".join(
        shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]
    )
    if command not in summary["commands"]:
        summary["commands"].append(command)
    summary["machine"] = machine()
    summary["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_json(output_json, summary, indent=2)
    notes = ""
    if output_md.is_file() and NOTES_MARKER in output_md.read_text():
        notes = output_md.read_text().split(NOTES_MARKER, 1)[1].strip("\n")
    write_text(output_md, markdown(summary, notes))
    print(f"wrote {output_json} and {output_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
