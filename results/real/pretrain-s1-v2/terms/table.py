"""Frozen-encoder, 10 %-label rows of the term ablation from a flood.json (examples/evaluate_flood.py), as markdown.

    python results/real/pretrain-s1-v2/terms/table.py results/real/flood-v2/flood.json

One row per initialisation that has runs in both cells (ETCI, OMBRIA after-only); mean ± std (ddof 1) over the
fine-tuning seeds 0-2 (the seeds every row shares), and the difference to the MoCo v2 row at update 1,801. Then
one row per objective over its pre-training seeds (update 1,800/1,801): mean ± std of the per-run means.
"""

import json
import sys

import numpy as np

CELLS = (("etci", "ETCI"), ("ombria-after", "OMBRIA after-only"))
PRETRAINING_SEEDS = {  # objective: its runs stopped at update 1,800/1,801, pre-training seeds 0, 1, ...
    "DI3CL": ("di3cl-final", "di3cl-seed1-1800", "di3cl-seed2-1800"),
    "MoCo v2": ("mocov2-final", "mocov2-seed1-1800"),
}
SEEDS = (0, 1, 2)


def values(runs, init, task):
    found = {
        r["seed"]: r["iou"]
        for r in runs
        if (r["init"], r["task"], r["mode"], r["fraction"]) == (init, task, "frozen", 0.1)
    }
    return [found[s] for s in SEEDS if s in found]


def main(path: str) -> None:
    runs = list(json.load(open(path))["runs"].values())
    inits = [
        i
        for i in dict.fromkeys(r["init"] for r in runs)
        if all(len(values(runs, i, t)) == len(SEEDS) for t, _ in CELLS)
    ]
    reference = {task: np.mean(values(runs, "mocov2-final", task)) for task, _ in CELLS}
    print(
        "| initialisation | "
        + " | ".join(f"{name}, frozen, 10 % | − MoCo v2 @1,801" for _, name in CELLS)
        + " |"
    )
    print("|---|" + "---:|---:|" * len(CELLS))
    for init in inits:
        cells = []
        for task, _ in CELLS:
            v = values(runs, init, task)
            cells += [f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}", f"{np.mean(v) - reference[task]:+.3f}"]
        print(f"| {init} | " + " | ".join(cells) + " |")
    print(
        "\n| objective | pre-training runs | "
        + " | ".join(f"{name}, frozen, 10 %" for _, name in CELLS)
        + " |"
    )
    print("|---|---:|" + "---:|" * len(CELLS))
    for objective, names in PRETRAINING_SEEDS.items():
        found = [name for name in names if name in inits]
        cells = []
        for task, _ in CELLS:
            means = [np.mean(values(runs, name, task)) for name in found]
            cells.append(
                f"{np.mean(means):.3f} ± {np.std(means, ddof=1):.3f} ({', '.join(f'{m:.3f}' for m in means)})"
            )
        print(f"| {objective} | {len(found)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
