"""ONNX export of DI3CL models and an onnxruntime-backed model for scene inference.

:func:`export_onnx` writes ``DI3CLModel`` (output ``last_hidden_state``, ``[B, C4, H/32, W/32]``) or
``DI3CLForSemanticSegmentation`` (output ``logits``, ``[B, K, H, W]``) as one ONNX file with dynamic
batch, height and width (input ``pixel_values``, ``[B, C, H, W]`` float32, H and W multiples of 32),
opset :data:`ONNX_OPSET`, through PyTorch's TorchScript-based exporter (``dynamo=False``).

Why that exporter: with torch 2.14 the ``torch.export``-based one (``dynamo=True``, needs the extra
``onnxscript`` package) decomposes the UperNet pyramid pooling (``AdaptiveAvgPool2d`` of 1, 2, 3 and 6
bins) into gathers with indices of the example's size: the graph exports, but gives wrong logits
(max abs error 0.1) or fails (``GatherND invalid index``) at any other size. The TorchScript exporter
refuses adaptive pooling with a dynamic size outright. So the export replaces each such pooling layer
(in a copy of the model) by :class:`TraceableAdaptiveAvgPool2d`, the same average written as two
products with bin matrices built from the input's size inside the graph; it matches PyTorch to
~1e-6 and exports with dynamic shapes.

The file's ``metadata_props`` document the preprocessing the model expects (see
:func:`onnx_metadata`): the full processor configuration as JSON (``di3cl.processor``) and, readable
without it, ``di3cl.input_kind``, ``di3cl.db_range``, ``di3cl.image_mean``, ``di3cl.image_std``,
``di3cl.num_channels``, ``di3cl.normalisation`` (the formula), plus the task, output, classes and opset.

:class:`OnnxSegmentationModel` runs an exported segmentation model with onnxruntime behind the
``nn.Module`` interface :func:`~di3cl_hf.inference.scene.predict_scene` uses (``di3cl predict
--backend onnxruntime``).
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..atomic import temporary_path
from ..image_processing_di3cl import DI3CLImageProcessor
from .outputs import check_output_path

ONNX_OPSET = 17
"""The ONNX opset of exported models (onnxruntime >= 1.14, QGIS / GDAL plug-ins with ORT >= 1.14)."""
INPUT_NAME = "pixel_values"
NORMALISATION = (
    "pixel_values[c] = ((clip(dB[c], low[c], high[c]) - low[c]) / (high[c] - low[c]) - image_mean[c]) "
    "/ image_std[c]; dB = 10*log10(intensity) (20*log10 for amplitude, as is for dB inputs); "
    "low/high = db_range (or the clip_percentiles of the scene when set); invalid (nodata, NaN) pixels = 0"
)


class TraceableAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d(output_size)`` as ``P_h @ x @ P_w^T`` with bin matrices built in the graph.

    Bin ``i`` of an axis of length ``L`` covers ``[floor(i L / s), ceil((i + 1) L / s))``, as in
    PyTorch; the matrices are built from ``ones_like`` of one row / column of ``x``, so the exported
    graph computes them from the input's size (dynamic height and width).
    """

    def __init__(self, output_size: int | tuple[int, int]) -> None:
        super().__init__()
        size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        if any(s is None for s in size):
            raise ValueError(f"output size {output_size} with None is not supported")
        self.output_size = (int(size[0]), int(size[1]))

    @staticmethod
    def _bins(ones: torch.Tensor, size: int) -> torch.Tensor:
        """``[size, L]`` averaging matrix for an axis whose ``ones`` (``[L]``) give its length."""
        positions = ones.cumsum(0) - 1
        length = ones.sum()
        index = torch.arange(size, dtype=ones.dtype, device=ones.device)
        start = torch.floor(index * length / size)
        end = torch.ceil((index + 1) * length / size)
        inside = (positions[None, :] >= start[:, None]) & (positions[None, :] < end[:, None])
        return inside.to(ones.dtype) / (end - start)[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self._bins(torch.ones_like(x[0, 0, :, 0]), self.output_size[0])
        cols = self._bins(torch.ones_like(x[0, 0, 0, :]), self.output_size[1])
        return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


def make_traceable(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose ``nn.AdaptiveAvgPool2d`` layers are :class:`TraceableAdaptiveAvgPool2d`."""
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.AdaptiveAvgPool2d):
                replacement = TraceableAdaptiveAvgPool2d(child.output_size)
                setattr(module, name, replacement)
                # transformers' UperNetPyramidPoolingBlock runs its layers from a plain Python list
                for value in vars(module).values():
                    if isinstance(value, list):
                        value[:] = [replacement if item is child else item for item in value]
    return model


class _ExportWrapper(nn.Module):
    """``pixel_values -> logits`` (segmentation) or ``-> last_hidden_state`` (encoder), one tensor out."""

    def __init__(self, model: nn.Module, output: str) -> None:
        super().__init__()
        self.model, self.output = model, output

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return getattr(self.model(pixel_values=pixel_values, return_dict=True), self.output)


def model_output_name(model: nn.Module) -> str:
    """``"logits"`` for a segmentation model, ``"last_hidden_state"`` for the encoder (``DI3CLModel``)."""
    name = type(model).__name__
    if name == "DI3CLForSemanticSegmentation":
        return "logits"
    if name == "DI3CLModel":
        return "last_hidden_state"
    raise ValueError(f"ONNX export supports DI3CLModel and DI3CLForSemanticSegmentation, not {name}")


def onnx_metadata(model: nn.Module, processor: Any, output: str, opset: int = ONNX_OPSET) -> dict[str, str]:
    """The ``metadata_props`` of an exported model: task, output, classes, opset and preprocessing."""
    config = model.config
    metadata = {
        "di3cl.architecture": type(model).__name__,
        "di3cl.task": "segmentation" if output == "logits" else "features",
        "di3cl.input": f"{INPUT_NAME}: float32 [batch, {config.num_channels}, height, width], height and width "
        "multiples of 32",
        "di3cl.output": output,
        "di3cl.opset": str(opset),
        "di3cl.backbone": str(config.backbone),
        "di3cl.num_channels": str(config.num_channels),
        "di3cl.normalisation": NORMALISATION,
    }
    if output == "logits":
        id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
        metadata["di3cl.num_labels"] = str(config.num_labels)
        metadata["di3cl.id2label"] = json.dumps({str(k): v for k, v in sorted(id2label.items())})
    if processor is not None:
        metadata.update(
            {
                "di3cl.processor": processor.to_json_string(),
                "di3cl.input_kind": str(processor.input_kind),
                "di3cl.db_range": json.dumps(processor.db_range),
                "di3cl.clip_percentiles": json.dumps(processor.clip_percentiles),
                "di3cl.image_mean": json.dumps(list(processor.image_mean)),
                "di3cl.image_std": json.dumps(list(processor.image_std)),
                "di3cl.do_normalize": json.dumps(bool(processor.do_normalize)),
            }
        )
    return metadata


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote: the file, its output, the opset and the check's max abs difference."""

    path: Path
    output: str
    opset: int
    max_abs_diff: float | None


# Long through the export arguments and the atomic write's steps; one linear sequence.
def export_onnx(
    model: nn.Module,
    processor: Any,
    output_path: str | os.PathLike[str],
    *,
    opset: int = ONNX_OPSET,
    example_size: int = 128,
    overwrite: bool = False,
    verify: bool = True,
) -> OnnxExport:
    """Export a DI3CL encoder or segmentation model to ONNX (dynamic batch, height and width), atomically.

    Args:
        model: ``DI3CLModel`` or ``DI3CLForSemanticSegmentation`` (not changed: a copy is exported).
        processor: Its ``DI3CLImageProcessor`` (stored in the metadata), or ``None``.
        output_path: The ``.onnx`` file; it appears only when complete; an existing file only with
            ``overwrite``.
        opset: ONNX opset.
        example_size: Height and width of the example input used for tracing (a multiple of 32).
        overwrite: Replace an existing file.
        verify: Run the file with onnxruntime on a second input size and record the max abs
            difference to PyTorch (fp32) in the result.

    Raises:
        ValueError: Another model class, a bad output path, or an existing file without ``overwrite``.
        ImportError: ``onnx`` (or, with ``verify``, ``onnxruntime``) is not installed: ``pip install di3cl-hf[onnx]``.
    """
    try:  # optional dependency (the [onnx] extra): imported only where it is used
        import onnx
    except ImportError as error:
        raise ImportError("ONNX export needs the onnx package: pip install 'di3cl-hf[onnx]'") from error
    output = model_output_name(model)
    output_path = check_output_path(output_path, overwrite=overwrite, flag="--overwrite")
    model = model.eval().float()
    wrapper = _ExportWrapper(make_traceable(model).cpu(), output).eval()
    channels = int(model.config.num_channels)
    example = torch.randn(1, channels, example_size, example_size)
    spatial = {0: "batch", 2: "height", 3: "width"}
    out_axes = spatial if output == "logits" else {0: "batch", 2: "height_32", 3: "width_32"}
    temporary = temporary_path(output_path, ".tmp.onnx")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # the shape checks in forward are constants of the trace (known); the exporter choice is deliberate
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings(
                "ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning
            )
            torch.onnx.export(
                wrapper,
                (example,),
                str(temporary),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[output],
                dynamic_axes={INPUT_NAME: spatial, output: out_axes},
                do_constant_folding=True,
            )
        proto = onnx.load(str(temporary))
        for key, value in onnx_metadata(model, processor, output, opset).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.doc_string = f"DI3CL {type(model).__name__} -> {output}; preprocessing: {NORMALISATION}"
        onnx.checker.check_model(proto)
        onnx.save(proto, str(temporary))
        difference = None
        if verify:
            check = torch.randn(2, channels, example_size + 32, example_size + 64)
            with torch.no_grad():
                reference = getattr(model(pixel_values=check, return_dict=True), output).numpy()
            got = onnx_session(temporary).run([output], {INPUT_NAME: check.numpy()})[0]
            difference = float(np.abs(got - reference).max())
        os.replace(temporary, output_path)
    finally:
        temporary.unlink(missing_ok=True)
    return OnnxExport(Path(output_path), output, opset, difference)


def onnx_session(
    path: str | os.PathLike[str], threads: int | None = None, providers: list[str] | None = None
):
    """An onnxruntime ``InferenceSession`` (CPU unless ``providers`` says otherwise)."""
    try:  # optional dependency (the [onnx] extra)
        import onnxruntime as ort
    except ImportError as error:
        raise ImportError("running ONNX models needs onnxruntime: pip install 'di3cl-hf[onnx]'") from error
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 (onnxruntime's errors share no base class but Exception)
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file") from None
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise ValueError(
            f"{path}: not a loadable ONNX model ({reason}); export one with `di3cl export-onnx`"
        ) from None


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (through onnxruntime, without loading the graph twice)."""
    return dict(onnx_session(path, threads=1).get_modelmeta().custom_metadata_map)


def onnx_processor(metadata: dict[str, str], overrides: dict[str, Any] | None = None) -> DI3CLImageProcessor:
    """The ``DI3CLImageProcessor`` stored in an exported model's metadata, with ``overrides`` (``None`` values ignored)."""
    if "di3cl.processor" not in metadata:
        raise ValueError("the ONNX file has no di3cl.processor metadata: export it with `di3cl export-onnx`")
    settings = json.loads(metadata["di3cl.processor"])
    settings.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return DI3CLImageProcessor.from_dict(settings)


class OnnxSegmentationModel(nn.Module):
    """An exported segmentation model run by onnxruntime, usable as ``model`` in ``predict_scene``.

    ``forward(pixel_values [B, C, H, W]) -> logits [B, K, H, W]`` (float32, on the CPU); ``config``
    carries ``num_labels``, ``num_channels`` and ``id2label`` from the file's metadata. Run it with
    ``precision="fp32"`` (autocast does not reach onnxruntime).
    """

    def __init__(
        self, path: str | os.PathLike[str], threads: int | None = None, providers: list[str] | None = None
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.session = onnx_session(self.path, threads, providers)
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if self.metadata.get("di3cl.output") != "logits":
            raise ValueError(f"{self.path}: not an exported DI3CL segmentation model (output 'logits')")
        id2label = {int(k): v for k, v in json.loads(self.metadata.get("di3cl.id2label", "{}")).items()}
        self.config = SimpleNamespace(
            num_labels=int(self.metadata["di3cl.num_labels"]),
            num_channels=int(self.metadata["di3cl.num_channels"]),
            id2label=id2label,
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        array = pixel_values.detach().to("cpu", torch.float32).contiguous().numpy()
        (logits,) = self.session.run(["logits"], {INPUT_NAME: array})
        return torch.from_numpy(logits)


def load_onnx_model(
    path: str | os.PathLike[str],
    processor_overrides: dict[str, Any] | None = None,
    threads: int | None = None,
) -> tuple[OnnxSegmentationModel, DI3CLImageProcessor]:
    """``(model, processor)`` of an exported segmentation model, the processor from its metadata."""
    model = OnnxSegmentationModel(path, threads=threads)
    return model, onnx_processor(model.metadata, processor_overrides)


__all__ = [
    "ONNX_OPSET",
    "OnnxExport",
    "OnnxSegmentationModel",
    "TraceableAdaptiveAvgPool2d",
    "export_onnx",
    "load_onnx_model",
    "make_traceable",
    "onnx_metadata",
    "onnx_processor",
    "read_onnx_metadata",
]
