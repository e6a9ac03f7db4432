"""Where and how the model runs: the device, the numeric precision and stop signals.

One implementation each, shared by pre-training, fine-tuning, evaluation, scene inference, the Space and the
benchmarks:

- :func:`resolve_precision` turns ``"auto"`` into ``"bf16"`` only where bf16 is *native* (CUDA cards with
  ``torch.cuda.is_bf16_supported()``; CPUs with AVX512_BF16 or AMX tiles) and ``"fp32"`` elsewhere. oneDNN
  reports bf16 support on any AVX-512 CPU (``torch.ops.mkldnn._is_mkldnn_bf16_supported()``) but *emulates*
  it there at about half the fp32 speed, so that flag is not used.
- :class:`StopSignal` turns SIGTERM / SIGINT into a flag checked between steps, and optionally runs
  clean-up callbacks (removing temporary files) first.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
"""The one precision vocabulary of every command and loop. ``"no"`` is read as ``"fp32"`` (deprecated)."""

_DEPRECATED_PRECISIONS = {"no": "fp32", "fp32": "fp32"}
_LOGGED: set[tuple[str, str, str]] = set()


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_capability() -> dict[str, Any]:
    """What the CPU offers for bf16: ``avx512_bf16``, ``amx_tile`` and oneDNN's (emulation-inclusive) flag."""

    def probe(name: str) -> bool:
        function = getattr(torch.cpu, name, None)
        try:
            return bool(function()) if function is not None else False
        except RuntimeError:
            return False

    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        onednn = False
    return {
        "avx512_bf16": probe("_is_avx512_bf16_supported"),
        "amx_tile": probe("_is_amx_tile_supported"),
        "onednn_bf16_incl_emulated": onednn,
    }


CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
"""The ``/proc/cpuinfo`` flags that decide the CPU's precision and speed class (see :func:`cpu_description`)."""


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def cpu_flags(names: Sequence[str] = CPU_FLAGS) -> dict[str, bool]:
    """Which of ``names`` the CPU reports in ``/proc/cpuinfo`` (all False where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        flags = []
    return {name: name in flags for name in names}


def cpu_description() -> str:
    """One line for benchmark output: model, the bf16-relevant flags and torch's thread count, e.g.
    ``"AMD EPYC; avx512f yes, avx512_bf16 yes, amx no; 2 torch threads"``. AMX counts when torch sees AMX
    tiles (``amx_tile`` in ``/proc/cpuinfo`` otherwise)."""
    flags = cpu_flags(("avx512f", "avx512_bf16", "amx_tile"))
    capability = cpu_capability()
    avx512_bf16 = flags["avx512_bf16"] or capability["avx512_bf16"]
    amx = flags["amx_tile"] or capability["amx_tile"]

    def yes(value: bool) -> str:
        return "yes" if value else "no"

    return (
        f"{cpu_model()}; avx512f {yes(flags['avx512f'])}, avx512_bf16 {yes(avx512_bf16)}, amx {yes(amx)}; "
        f"{torch.get_num_threads()} torch threads"
    )


def native_bf16(device: torch.device | str) -> tuple[bool, str]:
    """Whether ``device`` runs bf16 natively, and why (a short human-readable reason)."""
    device = torch.device(device)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return True, f"CUDA device {torch.cuda.get_device_name(device)} supports bf16"
        return False, "CUDA device without bf16 support"
    if device.type == "cpu":
        capability = cpu_capability()
        if capability["amx_tile"]:
            return True, "CPU has AMX tiles"
        if capability["avx512_bf16"]:
            return True, "CPU has AVX512_BF16"
        if capability["onednn_bf16_incl_emulated"]:
            return False, "CPU lacks AVX512_BF16/AMX (oneDNN would emulate bf16 at about half the fp32 speed)"
        return False, "CPU lacks AVX512_BF16/AMX"
    return False, f"no native bf16 rule for device type {device.type!r}"


def normalise_precision(requested: str) -> str:
    """Check ``requested`` against :data:`PRECISIONS` (``"no"`` is accepted as a deprecated ``"fp32"``)."""
    if requested in PRECISIONS:
        return requested
    if requested in _DEPRECATED_PRECISIONS:
        return _DEPRECATED_PRECISIONS[requested]
    raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")


def resolve_precision(requested: str, device: torch.device | str, *, log: bool = True) -> str:
    """Resolve ``requested`` (one of :data:`PRECISIONS`) to ``"bf16"``, ``"fp16"`` or ``"fp32"`` on ``device``.

    ``"auto"`` picks bf16 only where it is native (see the module docstring); fp16 is never chosen
    automatically (it needs loss scaling). The choice and its reason are logged once per process and setting.
    """
    requested = normalise_precision(requested)
    device = torch.device(device)
    if requested == "auto":
        native, reason = native_bf16(device)
        chosen = "bf16" if native else "fp32"
    else:
        chosen, reason = requested, "requested explicitly"
    key = (requested, device.type, chosen)
    if log and key not in _LOGGED:
        _LOGGED.add(key)
        logger.info("precision %s on %s (%s: %s)", chosen, device.type, requested, reason)
    return chosen


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a *resolved* precision (``None`` = plain fp32)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[normalise_precision(precision)]


def accelerate_mixed_precision(precision: str) -> str:
    """Accelerate's spelling of a resolved precision (``"no"`` for fp32)."""
    precision = normalise_precision(precision)
    return "no" if precision == "fp32" else precision


def fused_optimizer(device: torch.device | str) -> bool:
    """Whether torch's fused SGD / Adam / AdamW kernels run on ``device`` (CPU and CUDA): one pass over the
    parameters instead of several (``python benchmarks/optimizer_step.py``, 2-core AMD EPYC with AVX2: ResNet-50 SGD
    1.9x, AdamW 3.7x the default loop), equal to it up to rounding."""
    return torch.device(device).type in ("cpu", "cuda")


class StopSignal:
    """Turns SIGTERM / SIGINT into a flag that a loop checks between steps.

    The first signal sets :attr:`received`, runs the registered clean-up callbacks (e.g. removing a
    temporary output) and restores the previous handler, so a second signal acts as usual. Without a loop
    to check the flag (``raise_on_signal=True``) the handler raises :class:`KeyboardInterrupt` after the
    clean-up, so ``finally`` blocks run for SIGTERM exactly as for Ctrl-C. Use as a context manager;
    outside the main thread it installs nothing (signals are delivered to the main thread only).
    """

    def __init__(self, *, raise_on_signal: bool = False, message: str = "finishing the current step") -> None:
        self.received: int | None = None
        self.raise_on_signal = raise_on_signal
        self.message = message
        self._previous: dict[int, Any] = {}
        self._cleanups: list[Callable[[], None]] = []

    def add_cleanup(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when a signal arrives (before raising or returning to the loop)."""
        self._cleanups.append(callback)

    def install(self) -> StopSignal:
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        self.received = signum
        logger.warning("received %s: %s", signal.Signals(signum).name, self.message)
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
        for callback in self._cleanups:
            with contextlib.suppress(Exception):
                callback()
        if self.raise_on_signal:
            raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, handler)
        self._previous.clear()

    def __enter__(self) -> StopSignal:
        return self.install()

    def __exit__(self, *exc_info) -> None:
        self.restore()


__all__ = [
    "PRECISIONS",
    "StopSignal",
    "accelerate_mixed_precision",
    "autocast_dtype",
    "CPU_FLAGS",
    "cpu_capability",
    "cpu_description",
    "cpu_flags",
    "cpu_model",
    "default_device",
    "fused_optimizer",
    "native_bf16",
    "normalise_precision",
    "resolve_precision",
]
