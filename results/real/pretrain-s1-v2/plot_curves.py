"""Curves of the issue #24 pre-training runs from their logs.

    python results/real/pretrain-s1-v2/plot_curves.py OUT.png di3cl=LOG mocov2=LOG

Three panels per objective: the global InfoNCE loss, its top-1 accuracy and the online monitor's linear-probe
water IoU (ETCI validation blocks) with the best update marked.
"""

import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STEP = re.compile(r"step (\d+)/\d+ (.*)")
MONITOR = re.compile(r"monitor step (\d+) probe_iou=([-\d.e+na]+)")


def read_log(path: str) -> tuple[dict[str, list[float]], list[tuple[int, float]]]:
    series: dict[str, list[float]] = {}
    monitor: list[tuple[int, float]] = []
    for line in open(path):
        if match := MONITOR.search(line):
            monitor.append((int(match.group(1)), float(match.group(2))))
        elif match := STEP.search(line):
            series.setdefault("step", []).append(float(match.group(1)))
            for key, value in re.findall(r"(\w+)=([-\d.e+]+)", match.group(2)):
                series.setdefault(key, []).append(float(value))
    return series, monitor


def main(output: str, runs: list[str]) -> None:
    figure, (loss, top1, probe) = plt.subplots(1, 3, figsize=(15, 4))
    for run in runs:
        name, path = run.split("=", 1)
        series, monitor = read_log(path)
        loss.plot(series["step"], series["global_loss"], label=name)
        top1.plot(series["step"], series["global_top1"], label=name)
        steps, values = zip(*monitor)
        line = probe.plot(steps, values, marker="o", label=name)[0]
        best = max(monitor, key=lambda item: item[1])
        probe.scatter([best[0]], [best[1]], s=120, facecolors="none", edgecolors=line.get_color())
    loss.set_title("global InfoNCE loss (interval means)")
    top1.set_title("global top-1 (positive among 1 + 2048 keys)")
    probe.set_title("online probe: water IoU, ETCI validation (best circled)")
    for axis in (loss, top1, probe):
        axis.set_xlabel("update")
        axis.legend()
    figure.suptitle("ResNet-18, 1 channel, real Sentinel-1 corpus (2,276 images, 3,776 draws per epoch), batch 32")
    figure.tight_layout()
    figure.savefig(output, dpi=100)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
