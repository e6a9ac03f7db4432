"""Loss and top-1 curves of the real-S1 pre-training run from its log (``python plot_curve.py LOG OUT.png``)."""

import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PATTERN = re.compile(r"step (\d+)/\d+ (.*)")


def read_log(path: str) -> dict[str, list[float]]:
    series: dict[str, list[float]] = {}
    for line in open(path):
        match = PATTERN.search(line)
        if not match:
            continue
        series.setdefault("step", []).append(float(match.group(1)))
        for key, value in re.findall(r"(\w+)=([-\d.e+]+)", match.group(2)):
            series.setdefault(key, []).append(float(value))
    return series


def main(log: str, output: str) -> None:
    series = read_log(log)
    figure, (losses, accuracy) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss", "global_loss", "contour_loss", "instance_loss"):
        losses.plot(series["step"], series[key], label=key)
    losses.set_xlabel("update")
    losses.set_title("DI3CL losses (interval means)")
    losses.legend()
    for key in ("global_top1", "contour_top1"):
        accuracy.plot(series["step"], series[key], label=key)
    accuracy.set_xlabel("update")
    accuracy.set_title("InfoNCE top-1 (positive among 1 + 4096 keys)")
    accuracy.legend()
    figure.suptitle("DI3CL ResNet-18 on 1,600 real Sentinel-1 VH tiles (256², 128-px views, batch 32)")
    figure.tight_layout()
    figure.savefig(output, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
