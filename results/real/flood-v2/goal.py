"""Check issue #24's goal on a flood.json written by examples/evaluate_flood.py; prints a markdown table.

    python results/real/flood-v2/goal.py results/real/flood-v2/flood.json
    python results/real/flood-v2/goal.py results/real/flood-v2/flood.json di3cl-seed1-1800   # another DI3CL row

Goal, per task, label fraction (1 %, 10 %) and mode: DI3CL >= random + 0.05 IoU with the gap above twice the larger
seed standard deviation (ddof 1), DI3CL >= MoCo v2, and every learned row above every classical row.
"""

import json
import sys

import numpy as np


def stats(runs):
    values = [r["iou"] for r in runs]
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def main(path: str, di3cl: str = "di3cl") -> None:
    runs = list(json.load(open(path))["runs"].values())
    if not any(r["init"] == di3cl for r in runs):
        names = sorted({r["init"] for r in runs if r["mode"] != "classical"})
        raise SystemExit(f"{path}: no runs of {di3cl!r}; initialisations there: {', '.join(names)}")
    print(
        "| task | labels | mode | random | MoCo v2 | DI3CL | DI3CL − random (2 × std) | DI3CL ≥ MoCo v2 | best classical "
        "| learned rows above it | goal |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---|---:|---|---|")
    for task in dict.fromkeys(r["task"] for r in runs):
        for fraction in (0.01, 0.1):
            classical = [
                r
                for r in runs
                if r["task"] == task and r["fraction"] == fraction and r["mode"] == "classical"
            ]
            best_name, best = max(
                (
                    (name, stats([r for r in classical if r["init"] == name])[0])
                    for name in {r["init"] for r in classical}
                ),
                key=lambda item: item[1],
            )
            for mode in ("frozen", "full"):
                chosen = {
                    init: [
                        r
                        for r in runs
                        if r["task"] == task
                        and r["fraction"] == fraction
                        and r["mode"] == mode
                        and r["init"] == init
                    ]
                    for init in ("random", "mocov2", "di3cl")
                }
                chosen["di3cl"] = [
                    r
                    for r in runs
                    if (r["task"], r["fraction"], r["mode"], r["init"]) == (task, fraction, mode, di3cl)
                ]
                if not all(chosen.values()):
                    continue
                rows = {init: stats(found) for init, found in chosen.items()}
                (rm, rs), (mm, ms), (dm, ds) = rows["random"], rows["mocov2"], rows["di3cl"]
                gap, bar = dm - rm, 2 * max(rs, ds)
                above = sum(m > best for m, _ in rows.values())
                met = gap >= 0.05 and gap > bar and dm >= mm and above == 3
                print(
                    f"| {task} | {100 * fraction:g} % | {mode} | {rm:.3f} ± {rs:.3f} | {mm:.3f} ± {ms:.3f} | "
                    f"{dm:.3f} ± {ds:.3f} | {gap:+.3f} ({bar:.3f}) | {'yes' if dm >= mm else 'no'} | "
                    f"{best:.3f} ({best_name}) | {above} / 3 | {'**met**' if met else 'missed'} |"
                )


if __name__ == "__main__":
    main(*sys.argv[1:3])
