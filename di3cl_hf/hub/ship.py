"""Ship a fine-tuned segmentation model inside the package: fp16 weights loaded as fp32, one Hub-layout folder.

:func:`ship_model` turns a ``save_pretrained`` folder of a :class:`~di3cl_hf.DI3CLForSemanticSegmentation`
(fp32, as fine-tuning writes it) into the folder the package ships (default
:data:`di3cl_hf.weights.DEFAULT_WATER_MODEL`) and ``di3cl push`` sends unchanged:

- ``config.json``: the model's, with ``dtype`` (and ``torch_dtype`` where present) ``float32``, so every loader
  gives fp32 parameters, and the ``auto_map`` of the remote-code files;
- ``model.safetensors``: every floating tensor stored as **fp16** (BatchNorm running statistics included),
  integer buffers unchanged. Every stored value is finite and fp16 -> fp32 -> fp16 is bit-exact (checked after
  writing, by reading the file back); a tensor that fp16 cannot hold (overflow) is refused, naming it;
- ``preprocessor_config.json`` (with its ``auto_map``) and the flat remote-code files, so the folder also loads
  without this package (``trust_remote_code=True``);
- ``README.md``: the model card of :func:`di3cl_hf.hub.cards.build_model_card` completed with the measured tables,
  the training data and its terms, the expected input, wall time and machine, the fp16 storage check and every
  file of the folder with its size in bytes. A comment line (:data:`SHIPPED_MARKER`) marks it, so
  :func:`di3cl_hf.hub.push.stage_model` keeps the folder and its card unchanged.

The folder is written to a temporary sibling, loaded back and checked (Auto classes, fp32, encoder through
``AutoModel``, size limit), then renamed into place; an existing folder is replaced only with ``overwrite``.

Example:
    >>> ship_model("runs/etci-water", tables=Path("results/real/flood.md").read_text(),  # doctest: +SKIP
    ...            training_data="ETCI 2021 ...", data_terms="...", wall_time="41 min", machine="AMD EPYC, 2 cores",
    ...            initialisation="random")
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..atomic import replace_directory, write_json, write_text
from ..weights import DEFAULT_WATER_MODEL
from .cards import DEFAULT_LICENSE, build_model_card, read_json, read_model_config
from .push import processor_with_auto_map, remote_code_files, with_auto_map

logger = logging.getLogger(__name__)

SHIPPED_MARKER = (
    "<!-- di3cl-shipped-model: written by di3cl_hf.hub.ship; di3cl push keeps this folder unchanged -->"
)
"""The card's marker line: a folder whose README.md holds it is pushed as it is."""

MAX_SHIPPED_BYTES = 30_000_000
"""Size limit of a shipped folder (30 MB, card included)."""

STORED_DTYPE = torch.float16
WEIGHTS_NAME = "model.safetensors"
FILES_HEADING = "## Files"
FILE_ROW = re.compile(r"^\| `(?P<name>[^`]+)` \| (?P<bytes>\d+) \|", flags=re.MULTILINE)
"""A row of the card's file table: ``| `name` | bytes | MB |``."""


class ShipError(ValueError):
    """The source folder cannot be shipped (not a segmentation model, weights fp16 cannot hold, too large, ...)."""


@dataclass
class CardText:
    """What the card says beyond what the model folder knows (markdown; ``tables`` usually results/real/flood.md).

    Attributes:
        tables: the measured tables (markdown; headings are nested one level under "Measured results").
        training_data: what the model was trained on (sets, splits, labels).
        data_terms: the training data's terms (e.g. the tiles may not be redistributed; the weights may).
        wall_time: training wall time (free text, e.g. "38 min").
        machine: the machine it ran on.
        initialisation: the encoder it was fine-tuned from (e.g. "random" or "DI3CL pre-trained on 100 S1 scenes").
        expected_input: polarisations, radiometry, single date or before/after.
        limitations: where the model fails (per-event / per-region scores), listed first under Limitations.
        title: one line under the card's title (default: built from the config).
    """

    tables: str
    training_data: str
    data_terms: str
    wall_time: str
    machine: str
    initialisation: str
    expected_input: str = ""
    limitations: str = ""
    title: str = ""
    extra: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ weights


def _read_weights(source: Path) -> dict[str, torch.Tensor]:
    single, index = source / WEIGHTS_NAME, source / f"{WEIGHTS_NAME}.index.json"
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        names = sorted(set(read_json(index)["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for name in names:
            state.update(load_file(str(source / name)))
        return state
    raise ShipError(f"{source}: no {WEIGHTS_NAME} (safetensors weights written by save_pretrained)")


def to_stored_dtype(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Floating tensors as fp16, others unchanged; returns ``(state, stats)`` with the largest relative change.

    Raises:
        ShipError: a tensor holds NaN/inf, or values fp16 cannot hold (beyond ±65504), naming it.
    """
    stored: dict[str, torch.Tensor] = {}
    worst, underflow = 0.0, 0
    limit = torch.finfo(STORED_DTYPE).max
    for key, tensor in state.items():
        if not tensor.is_floating_point():
            stored[key] = tensor.detach().clone().contiguous()
            continue
        value = tensor.detach().float()
        if not torch.isfinite(value).all():
            raise ShipError(f"{key}: holds NaN or inf; refusing to ship non-finite weights")
        largest = float(value.abs().max()) if value.numel() else 0.0
        if largest > limit:
            raise ShipError(
                f"{key}: |value| up to {largest:.4g}, beyond fp16's {limit:.0f}; cannot store as fp16"
            )
        half = value.to(STORED_DTYPE).contiguous()
        underflow += int(((half == 0) & (value != 0)).sum())
        scale = value.abs().max().clamp_min(1e-12)
        worst = max(worst, float((half.float() - value).abs().max() / scale) if value.numel() else 0.0)
        stored[key] = half
    return stored, {"max_relative_change": worst, "underflowed_to_zero": float(underflow)}


def check_stored_weights(path: str | os.PathLike) -> dict[str, int]:
    """Read ``path`` (safetensors) back and check every floating tensor is fp16, finite and bit-exact through fp32.

    Returns:
        ``{"float16": n, "integer": m, "values": total float values}``.

    Raises:
        ShipError: a floating tensor of another dtype, a non-finite value, or a round trip that changes bits.
    """
    counts = {"float16": 0, "integer": 0, "values": 0}
    with safe_open(str(path), framework="pt") as weights:
        for key in weights.keys():
            tensor = weights.get_tensor(key)
            if not tensor.is_floating_point():
                counts["integer"] += 1
                continue
            if tensor.dtype != STORED_DTYPE:
                raise ShipError(f"{path}: {key} is stored as {tensor.dtype}, expected {STORED_DTYPE}")
            if not torch.isfinite(tensor).all():
                raise ShipError(f"{path}: {key} holds a non-finite value")
            back = tensor.float().to(STORED_DTYPE)
            if not torch.equal(back.view(torch.int16), tensor.view(torch.int16)):
                raise ShipError(f"{path}: {key} changes through fp16 -> fp32 -> fp16")
            counts["float16"] += 1
            counts["values"] += tensor.numel()
    return counts


# ------------------------------------------------------------------------------------------ card


def nest_headings(markdown: str, top_level: int) -> str:
    """``markdown`` with its headings shifted so that its highest one is at ``top_level`` (``#`` -> ``###`` for 3),
    outside code blocks; nested under a card section, a pasted ``# title`` never becomes a section of its own."""
    lines = markdown.strip().splitlines()
    fenced, levels = False, []
    for line in lines:
        fenced = fenced != line.lstrip().startswith("```")
        found = re.match(r"^(#{1,6}) ", line)
        if found and not fenced:
            levels.append(len(found.group(1)))
    shift = max(0, top_level - min(levels)) if levels else 0
    fenced, nested = False, []
    for line in lines:
        fenced = fenced != line.lstrip().startswith("```")
        found = re.match(r"^(#{1,6}) ", line)
        nested.append(
            "#" * min(6, shift + len(found.group(1))) + line[len(found.group(1)) :]
            if found and not fenced
            else line
        )
    return "\n".join(nested)


def _first_sentence(text: str, limit: int = 160) -> str:
    first = re.split(r"(?<=[.;])\s|\n", text.strip(), maxsplit=1)[0].strip()
    return first if len(first) <= limit else first[: limit - 1].rstrip() + "…"


def files_table(folder: Path) -> str:
    """Markdown table of the folder's files (README.md, the card itself, excepted) with exact sizes."""
    rows, total = ["| file | bytes | MB |", "|---|---:|---:|"], 0
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name != "README.md"):
        size = path.stat().st_size
        total += size
        rows.append(f"| `{path.name}` | {size} | {size / 1e6:.2f} |")
    rows.append(f"| total (without this card) | {total} | {total / 1e6:.2f} |")
    return "\n".join(rows)


def card_files(card_text: str) -> dict[str, int]:
    """``{file name: bytes}`` as the card's file table lists them."""
    return {m["name"]: int(m["bytes"]) for m in FILE_ROW.finditer(card_text)}


def _model_section(folder: Path, text: CardText, storage: Mapping[str, Any]) -> str:
    config = read_model_config(folder)
    labels = ", ".join(f"{k} = {v}" for k, v in sorted((int(k), v) for k, v in config["id2label"].items()))
    title = text.title or (
        f"Sentinel-1 {config['backbone']} + UperNet (decoder {config.get('decoder_hidden_size')}) segmentation, "
        f"{config['num_channels']} input channels, classes {labels}."
    )
    local = DEFAULT_WATER_MODEL.name
    parts = [
        "## This model",
        "",
        title,
        "",
        f"- **Encoder initialisation**: {text.initialisation}",
        f"- **Trained on**: {_first_sentence(text.training_data)}",
        f"- **Training wall time**: {text.wall_time}",
        f"- **Machine**: {text.machine}",
    ]
    if text.expected_input:
        parts.append(f"- **Expected input**: {text.expected_input}")
    parts += [f"- **{key}**: {value}" for key, value in text.extra.items()]
    parts += [
        "",
        f"Shipped inside `di3cl-hf` as `di3cl_hf/weights/{local}` (the default model of `di3cl predict`, the "
        "Space's water model and the encoder `make demo` fine-tunes from):",
        "",
        "```bash",
        "di3cl predict scene_vv_vh.tif water.tif                     # the shipped model",
        "di3cl predict --output-dir maps/ scene_vv.tif scene_vh.tif   # one file per polarisation",
        "```",
        "",
        "```python",
        "from transformers import AutoModel, pipeline",
        "import di3cl_hf",
        "from di3cl_hf.weights import shipped_model_path",
        "",
        'segmenter = pipeline("image-segmentation", model=str(shipped_model_path()))',
        "encoder = AutoModel.from_pretrained(shipped_model_path())   # its encoder, from the same folder",
        "```",
        "",
        "## Training data and terms",
        "",
        text.training_data,
        "",
        text.data_terms,
        "",
        "## Weights",
        "",
        f"Every floating tensor (BatchNorm running statistics included) is stored as fp16 in `{WEIGHTS_NAME}`"
        " and loaded as fp32 (`config.json` says `dtype: float32`); integer buffers are stored as they are. Every "
        "stored value is finite and fp16 -> fp32 -> fp16 is bit-exact (checked on the written file). Largest "
        f"change of a tensor by the fp16 rounding, relative to its largest value: {storage['max_relative_change']:.2e}; "
        f"values rounded to zero: {int(storage['underflowed_to_zero'])}. On a fixed random input "
        f"(2 x {config['num_channels']} x 128 x 128) the fp16-stored model's logits differ from the fp32 model's by "
        f"at most {storage['max_logit_change']:.2e}, and {100 * storage['argmax_agreement']:.3f} % of the "
        "pixels get the same class. No pickle: safetensors only.",
        "",
    ]
    return "\n".join(parts)


def _insert_before(card: str, heading: str, block: str) -> str:
    """``block`` inserted before the line ``heading`` (appended when the card has no such heading)."""
    match = re.search(rf"^{re.escape(heading)}\s*$", card, flags=re.MULTILINE)
    if match is None:
        return card.rstrip() + "\n\n" + block.strip() + "\n"
    return card[: match.start()] + block.strip() + "\n\n" + card[match.start() :]


def write_card(folder: Path, text: CardText, storage: Mapping[str, Any], **card_kwargs: Any) -> str:
    """Write ``folder/README.md``: :func:`build_model_card` + this module's sections + the file table."""
    card = str(build_model_card(folder, has_code=True, **card_kwargs))
    card = re.sub(
        r"^(---\n.*?\n---\n)", lambda m: m.group(1) + SHIPPED_MARKER + "\n", card, count=1, flags=re.S
    )
    card = _insert_before(card, "## Intended use", _model_section(folder, text, storage))
    results = "## Measured results\n\n" + nest_headings(text.tables, 3) + "\n"
    card = _insert_before(card, "## Limitations", results)
    if text.limitations:
        block = "### Where this model fails\n\n" + nest_headings(text.limitations, 4) + "\n"
        card = card.replace("## Limitations\n\n", "## Limitations\n\n" + block + "\n### In general\n\n", 1)
    card = _insert_before(card, "## Citation", f"{FILES_HEADING}\n\n{files_table(folder)}\n")
    write_text(folder / "README.md", card)
    return card


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_MACHINE_PATH = re.compile(r"(?<![\w.~$/\\-])/(?:work|root|home|tmp|Users|mnt|scratch)/|\.\.[/\\]shared")
"""An absolute path of a machine, or a folder beside the repository (what tests/test_docs.py refuses in tracked
files)."""


def source_card_facts(source: Path) -> dict[str, Any]:
    """``run_info`` / ``datasets`` / ``base_model`` the fine-tuning run's card recorded; a ``base_model`` that is a
    local path (not a Hub id) is left out: a shipped card names no folder of the machine it was built on."""
    path = source / "README.md"
    if not path.is_file():
        return {}
    try:
        card = ModelCard.load(path)
    except Exception:  # not a card: nothing to keep
        return {}
    facts: dict[str, Any] = {}
    training = re.search(r"^## Training\n(.*?)(?=^## |\Z)", card.text, flags=re.MULTILINE | re.DOTALL)
    if training:
        facts["run_info"] = dict(
            re.findall(r"^- \*\*(.+?)\*\*: (.*)$", training.group(1), flags=re.MULTILINE)
        )
    if card.data.datasets:
        facts["datasets"] = list(card.data.datasets)
    base = card.data.base_model
    if isinstance(base, str) and _HUB_ID.fullmatch(base) and not Path(base).exists():
        facts["base_model"] = base
    return facts


def check_no_machine_paths(card: str) -> None:
    """Refuse a card naming an absolute machine path or a folder beside the repository (it is committed).

    Raises:
        ShipError: listing the offending lines.
    """
    found = [line.strip()[:160] for line in card.splitlines() if _MACHINE_PATH.search(line)]
    if found:
        raise ShipError(
            "the card names paths of this machine (a committed file must not); fix the texts or pass "
            "--base-model / --run-info explicitly:\n  " + "\n  ".join(found)
        )


def is_shipped_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` was written by :func:`ship_model` (its card carries :data:`SHIPPED_MARKER`)."""
    card = Path(folder) / "README.md"
    return card.is_file() and SHIPPED_MARKER in card.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------ folder


def _compare_outputs(
    config_dir: Path, fp32: Mapping[str, torch.Tensor], stored: Mapping[str, torch.Tensor]
) -> dict:
    """Logits of the fp32 weights and of the fp16-stored ones (loaded as fp32) on one fixed random input."""
    from ..configuration_di3cl import DI3CLConfig
    from ..modeling_di3cl import DI3CLForSemanticSegmentation

    model = DI3CLForSemanticSegmentation(DI3CLConfig.from_pretrained(config_dir)).float().eval()
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, int(model.config.num_channels), 128, 128, generator=generator)
    logits = []
    with torch.no_grad():
        for state in (fp32, stored):
            model.load_state_dict(
                {key: value.float() if value.is_floating_point() else value for key, value in state.items()}
            )
            logits.append(model(pixel_values=pixels).logits)
    return {
        "max_logit_change": float((logits[0] - logits[1]).abs().max()),
        "argmax_agreement": float((logits[0].argmax(1) == logits[1].argmax(1)).float().mean()),
    }


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No load reports while checking (AutoModel on a segmentation folder leaves its heads out by design)."""
    from transformers.utils import logging as transformers_logging

    level, bars = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(level)
        if bars:
            transformers_logging.enable_progress_bar()


def verify_shipped_folder(folder: str | os.PathLike, max_bytes: int = MAX_SHIPPED_BYTES) -> dict[str, Any]:
    """Check a shipped folder as a user gets it: files, fp16 storage, Auto-class loading as fp32, the encoder
    through ``AutoModel``, the processor, the size limit and the card's file table.

    Returns:
        ``{"bytes": total size, "float16": n, "integer": m, "values": v}``.

    Raises:
        ShipError: naming the first check that fails.
    """
    from transformers import AutoImageProcessor, AutoModel, AutoModelForSemanticSegmentation

    import di3cl_hf  # noqa: F401  (registers the DI3CL classes with the Auto classes)

    folder = Path(folder)
    for name in ("config.json", WEIGHTS_NAME, "preprocessor_config.json", "README.md"):
        if not (folder / name).is_file():
            raise ShipError(f"{folder}: no {name}")
    config = read_json(folder / "config.json")
    if config.get("dtype", "float32") != "float32" or config.get("torch_dtype", "float32") != "float32":
        raise ShipError(f"{folder}/config.json: dtype must be float32 (the weights load as fp32)")
    counts = check_stored_weights(folder / WEIGHTS_NAME)
    stored = load_file(str(folder / WEIGHTS_NAME))
    with _quiet_transformers():
        model = AutoModelForSemanticSegmentation.from_pretrained(folder)
        encoder = AutoModel.from_pretrained(folder)
        processor = AutoImageProcessor.from_pretrained(folder)
    state = model.state_dict()
    for key, value in stored.items():
        loaded = state.get(key)
        expected = value.float() if value.is_floating_point() else value
        if loaded is None or loaded.dtype != expected.dtype or not torch.equal(loaded, expected):
            raise ShipError(f"{folder}: {key} does not load as the fp32 value of the stored tensor")
    prefix = f"{model.base_model_prefix}."
    for key, value in encoder.state_dict().items():
        if not torch.equal(value, state[prefix + key]):
            raise ShipError(f"{folder}: AutoModel's {key} differs from the segmentation model's encoder")
    if int(processor.num_channels) != int(model.config.num_channels):
        raise ShipError(
            f"{folder}: processor for {processor.num_channels} channels, model {model.config.num_channels}"
        )
    total = sum(path.stat().st_size for path in folder.iterdir() if path.is_file())
    if total > max_bytes:
        raise ShipError(f"{folder}: {total / 1e6:.2f} MB, above the {max_bytes / 1e6:.0f} MB limit")
    listed = card_files((folder / "README.md").read_text(encoding="utf-8"))
    actual = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file() and p.name != "README.md"}
    if listed != actual:
        raise ShipError(f"{folder}/README.md: its file table {listed} does not match the folder {actual}")
    return {"bytes": total, **counts}


def _check_source(source: Path, target: Path, overwrite: bool) -> dict[str, Any]:
    config = read_model_config(source)
    if "DI3CLForSemanticSegmentation" not in (config.get("architectures") or []):
        raise ShipError(
            f"{source}: a DI3CLForSemanticSegmentation folder is expected, got {config.get('architectures')}"
        )
    if not (source / "preprocessor_config.json").is_file():
        raise ShipError(
            f"{source}: no preprocessor_config.json; the processor (radiometry, statistics) must ship"
        )
    if target.resolve() == source.resolve() or source.resolve() in target.resolve().parents:
        raise ShipError(f"{target}: must not be the source folder or inside it")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target}: exists; pass overwrite=True (--overwrite) to replace it")
    return config


def _write_folder(source: Path, stage: Path, config: dict, stored: dict, input_kind: str | None) -> str:
    """config, processor, fp16 weights and code files into ``stage`` (the card comes after); returns the
    processor's input kind."""
    config = with_auto_map({**config, "dtype": "float32"})
    if "torch_dtype" in config:
        config["torch_dtype"] = "float32"
    write_json(stage / "config.json", config)
    processor = read_json(source / "preprocessor_config.json")
    if input_kind is not None:
        processor["input_kind"] = input_kind
    write_json(stage / "preprocessor_config.json", processor_with_auto_map(processor))
    save_file(stored, str(stage / WEIGHTS_NAME), metadata={"format": "pt", "di3cl_stored_dtype": "float16"})
    os.chmod(stage / WEIGHTS_NAME, 0o644)
    for path in remote_code_files():
        shutil.copyfile(path, stage / path.name)
    return str(processor.get("input_kind", "auto"))


def ship_model(
    source: str | os.PathLike,
    target: str | os.PathLike = DEFAULT_WATER_MODEL,
    *,
    tables: str,
    training_data: str,
    data_terms: str,
    wall_time: str,
    machine: str,
    initialisation: str,
    expected_input: str = "",
    limitations: str = "",
    title: str = "",
    extra: Mapping[str, str] | None = None,
    repo_id: str | None = None,
    evaluation: str | os.PathLike | Mapping[str, Any] | None = None,
    datasets: Sequence[str] | None = None,
    base_model: str | None = None,
    run_info: Mapping[str, Any] | None = None,
    license: str = DEFAULT_LICENSE,
    input_kind: str | None = None,
    overwrite: bool = False,
    max_bytes: int = MAX_SHIPPED_BYTES,
) -> dict[str, Any]:
    """Write the shipped folder ``target`` from the fine-tuned ``source`` (module docstring), atomically.

    Args:
        source: a ``save_pretrained`` folder of a ``DI3CLForSemanticSegmentation`` with its processor (fp32).
        target: the shipped folder (default ``di3cl_hf/weights/s1-water-resnet18``); an existing one is
            replaced only with ``overwrite``.
        tables, training_data, data_terms, wall_time, machine, initialisation, expected_input, limitations,
            title, extra: the card's texts (markdown), see :class:`CardText`.
        repo_id: Hub id for the card's loading snippets (default: the folder name).
        evaluation: the model's own test scores (evaluation JSON of the fine-tuning run; default
            ``source/evaluation.json`` when present) for the card's ``model-index``.
        datasets, base_model, run_info, license: passed to :func:`build_model_card` (``run_info``, ``datasets``
            and ``base_model`` default to what the source's own card recorded).
        input_kind: the processor's ``input_kind`` to ship (default: the source processor's). ``"auto"`` reads
            8-bit tiles as ``dn8`` and float GeoTIFFs as dB or linear power by their values; a declared ``"dn8"``
            refuses dB input (warned).
        max_bytes: size limit of the whole folder.

    Returns:
        ``{"target", "bytes", "float16", "integer", "values", "max_relative_change", "max_logit_change",
        "argmax_agreement", ...}``.
    """
    source, target = Path(source), Path(target)
    config = _check_source(source, target, overwrite)
    text = CardText(
        tables=tables, training_data=training_data, data_terms=data_terms, wall_time=wall_time, machine=machine,
        initialisation=initialisation, expected_input=expected_input, limitations=limitations, title=title,
        extra=dict(extra or {}),
    )  # fmt: skip
    if evaluation is None and (source / "evaluation.json").is_file():
        evaluation = source / "evaluation.json"
    fp32 = _read_weights(source)
    stored, storage = to_stored_dtype(fp32)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = target.parent / f".{target.name}.ship-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        storage["input_kind"] = _write_folder(source, stage, config, stored, input_kind)
        storage.update(_compare_outputs(stage, fp32, stored))
        previous = source_card_facts(source)  # what the fine-tuning run's card recorded
        card_kwargs = dict(repo_id=repo_id or target.name, evaluation=evaluation, license=license)
        card_kwargs.update(_recorded(previous, datasets=datasets, base_model=base_model, run_info=run_info))
        check_no_machine_paths(write_card(stage, text, storage, **card_kwargs))
        report = verify_shipped_folder(stage, max_bytes)
        if target.exists() and not overwrite:  # appeared meanwhile
            raise FileExistsError(f"{target}: exists; pass overwrite=True (--overwrite) to replace it")
        replace_directory(stage, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    _warn_if_declared_dn8(target, storage["input_kind"])
    return {"target": str(target), **report, **storage}


def _recorded(previous: Mapping[str, Any], **given: Any) -> dict[str, Any]:
    """The card arguments given, else what the source's own card recorded (``datasets``, ``base_model``,
    ``run_info``; an empty ``run_info`` given stays empty)."""
    chosen = {key: value or previous.get(key) for key, value in given.items() if key != "run_info"}
    chosen["run_info"] = given["run_info"] if given.get("run_info") is not None else previous.get("run_info")
    return chosen


def _warn_if_declared_dn8(target: Path, input_kind: str) -> None:
    if input_kind == "dn8":
        logger.warning(
            "%s: the processor declares input_kind 'dn8': dB / linear inputs (the chips, S1 GRD GeoTIFFs) are refused "
            "unless declared; ship with input_kind='auto' (--input-kind auto) so 8-bit tiles still read as dn8",
            target,
        )


def describe(report: Mapping[str, Any]) -> str:
    """One paragraph a person reads after :func:`ship_model`."""
    return (
        f"shipped {report['target']}: {report['bytes'] / 1e6:.2f} MB, {report['float16']} fp16 tensors "
        f"({report['values']:,} values, finite, fp16->fp32->fp16 bit-exact), {report['integer']} integer buffers; "
        f"fp16 rounding: largest relative change {report['max_relative_change']:.2e}, logits within "
        f"{report['max_logit_change']:.2e}, {100 * report['argmax_agreement']:.3f} % same class on a random input; "
        f"processor input_kind {report['input_kind']}"
    )


__all__ = [
    "MAX_SHIPPED_BYTES",
    "SHIPPED_MARKER",
    "CardText",
    "ShipError",
    "card_files",
    "check_stored_weights",
    "describe",
    "files_table",
    "is_shipped_folder",
    "ship_model",
    "to_stored_dtype",
    "verify_shipped_folder",
    "write_card",
]
