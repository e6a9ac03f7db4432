"""Many scenes, resumable, split between processes: what ``di3cl predict MODEL INPUT... --output-dir DIR`` runs.

1. **Inputs** (:func:`collect_inputs`): files, folders (their SAR files), glob patterns (``"*.tif"``,
   expanded here when the shell did not) and ``@list.txt`` (one input per line, ``#`` comments; relative
   paths are relative to the list's folder). An input that matches nothing is a failure of that input,
   not of the run.
2. **Scenes** (:func:`plan_scenes`): files named ``{id}_vv.tif`` + ``{id}_vh.tif`` (also ``_hh``/``_hv``)
   are one dual-pol scene ``{id}`` (:func:`di3cl_hf.data.polarisation.group_polarisations`); a group
   lacking a polarisation its folder's other groups have fails alone. Scene ``{id}`` is written to
   ``DIR/{id}_{output_type}.tif``; two scenes with the same output name both fail (nothing is overwritten).
3. **Resumable** (:func:`output_is_complete`): a scene whose output is *complete* is skipped: the final
   file (never a leftover ``.{name}.*.tmp.tif``) opens as a GeoTIFF of the scene's height and width, the
   output's band count, uint8, its last pixel reads, and it was made by the same model with the same options
   (its :data:`~di3cl_hf.inference.provenance.PROVENANCE_TAG`); a map of ours made otherwise is recomputed.
   Outputs are written atomically (:func:`~di3cl_hf.inference.scene.predict_scene`), so a stopped run leaves
   only complete files, plus, when killed outright, a hidden temporary that the next run of that scene removes.
   ``overwrite`` recomputes everything; an existing output that is not complete is refused without it.
4. **Processes** (:func:`process_share`): under ``accelerate launch`` / ``torchrun`` (``RANK``,
   ``WORLD_SIZE``, ``LOCAL_RANK`` set) process ``r`` of ``n`` predicts scenes ``r, r + n, r + 2n, ...``
   of the sorted list: no overlap, any number of processes or nodes, each on ``cuda:LOCAL_RANK`` when
   GPUs are present. The outcomes are gathered on every process over a gloo process group (CPU, works
   with and without GPUs); rank 0 prints the summary.
5. **Failures**: one bad scene (unreadable, wrong bands, ...) is recorded with its reason and the next
   scene runs; the exit status is non-zero when any scene failed. Ctrl-C / SIGTERM stop the run.
"""

from __future__ import annotations

import glob
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import rasterio
import torch
import torch.distributed as dist
from rasterio.errors import RasterioError
from rasterio.windows import Window

from ..data.polarisation import POLARISATION_ORDER, PolarisationError, group_polarisations, polarisation_of
from ..data.sario import list_sar_files
from .outputs import OutputExistsError, OutputPathError, remove_stale_temporaries
from .provenance import read_provenance
from .sources import open_source

STATUSES = ("done", "skipped", "failed")


@dataclass
class SceneJob:
    """One scene to predict: its id, its file(s) (one per polarisation, or one) and its output."""

    key: str
    files: tuple[Path, ...]
    output: Path


@dataclass
class SceneOutcome:
    """What happened to one scene (or to an input that did not make a scene)."""

    key: str
    inputs: list[str]
    output: str | None
    status: str  # one of STATUSES
    reason: str = ""
    seconds: float = 0.0
    rank: int = 0
    pixels: int = 0


@dataclass
class ProcessShare:
    """This process's place among the processes of the run (1 of 1 without a launcher)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    _group: bool = field(default=False, repr=False)

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (which prints the summary)."""
        return self.rank == 0

    def device(self, device: str | None) -> str | None:
        """``device`` as given, else ``cuda:LOCAL_RANK`` when several processes share a machine's GPUs."""
        if device is not None or self.world_size == 1 or not torch.cuda.is_available():
            return device
        return f"cuda:{self.local_rank % torch.cuda.device_count()}"

    def gather(self, outcomes: list[SceneOutcome]) -> list[SceneOutcome]:
        """Every process's outcomes, on every process (this process's alone when it runs alone)."""
        if self.world_size == 1:
            return outcomes
        if not dist.is_initialized():
            dist.init_process_group("gloo")
            self._group = True
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, [asdict(o) for o in outcomes])
        return [SceneOutcome(**item) for part in gathered for item in part]

    def close(self) -> None:
        """Destroy the process group this object created."""
        if self._group and dist.is_initialized():
            dist.destroy_process_group()
            self._group = False


def process_share() -> ProcessShare:
    """This process's rank, world size and local rank from the launcher's environment (``accelerate
    launch``, ``torchrun``: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if not 0 <= rank < max(world, 1):
        raise ValueError(f"RANK={rank} outside WORLD_SIZE={world}")
    return ProcessShare(rank, max(world, 1), int(os.environ.get("LOCAL_RANK", rank)))


def _failure(key: str, inputs: Sequence[Any], reason: str) -> SceneOutcome:
    return SceneOutcome(key, [str(i) for i in inputs], None, "failed", reason)


def _list_file(item: str) -> list[str]:
    listing = Path(item[1:])
    lines = [line.strip() for line in listing.read_text().splitlines()]
    entries = [line for line in lines if line and not line.startswith("#")]
    return [entry if Path(entry).is_absolute() else str(listing.parent / entry) for entry in entries]


def collect_inputs(items: Sequence[str]) -> tuple[list[Path], list[SceneOutcome]]:
    """The input files named by ``items`` (files, folders, globs, ``@list.txt``), sorted and without
    duplicates, and a failure for each item that names no file."""
    files: list[Path] = []
    failures: list[SceneOutcome] = []
    pending = list(items)
    while pending:
        item = str(pending.pop(0))
        path = Path(item)
        if item.startswith("@") and not path.exists():
            try:
                pending = _list_file(item) + pending
            except OSError as error:
                failures.append(_failure(item, [item], f"cannot read the input list ({error})"))
        elif path.is_dir():
            found = list_sar_files(path)
            files.extend(found)
            if not found:
                failures.append(_failure(item, [item], "folder without SAR files"))
        elif path.exists():
            files.append(path)
        elif glob.has_magic(item):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
            files.extend(matches)
            if not matches:
                failures.append(_failure(item, [item], "the pattern matches no file"))
        else:
            failures.append(_failure(path.stem, [item], "no such file or directory"))
    unique = sorted({p.resolve(): p for p in files}.values(), key=lambda p: str(p))
    return unique, failures


def check_output_folder(output_dir: str | os.PathLike[str]) -> Path:
    """Create ``--output-dir`` if needed and refuse, before any model loads, one that is a file, cannot be
    created or is not writable (an :class:`OutputPathError`, one line)."""
    folder = Path(output_dir)
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"--output-dir {folder}: exists and is not a folder; give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputPathError(
            f"--output-dir {folder}: cannot be created ({error.strerror or error})"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"--output-dir {folder}: is not writable; choose a folder you can write to")
    return folder


def inputs_inside(items: Sequence[str], output_dir: str | os.PathLike[str]) -> list[str]:
    """The inputs named by ``items`` that lie inside ``output_dir`` (files, folders, glob matches, entries of
    ``@list`` files): they would be dropped (earlier maps are never taken for scenes), so the CLI refuses them.
    A folder *containing* the output folder is fine: only the files inside the output folder are skipped."""
    outputs = Path(output_dir).resolve()
    inside, pending = [], list(items)
    while pending:
        item = str(pending.pop(0))
        if item.startswith("@") and not Path(item).exists():
            try:
                pending = _list_file(item) + pending
            except OSError:
                pass  # reported by collect_inputs
            continue
        paths = [Path(m) for m in glob.glob(item, recursive=True)] if glob.has_magic(item) else [Path(item)]
        inside += [str(p) for p in paths if p.exists() and p.resolve().is_relative_to(outputs)]
    return inside


def readable_jobs(jobs: list[SceneJob]) -> tuple[list[SceneJob], list[SceneOutcome]]:
    """The jobs whose inputs open as SAR scenes, and a failure for each other one: checked before the model
    loads, so a run of unreadable inputs never loads it."""
    ready, failures = [], []
    for job in jobs:
        try:
            _scene_size(job)
        except Exception as error:  # noqa: BLE001 (any unreadable input is that scene's failure)
            failures.append(
                SceneOutcome(
                    job.key,
                    [str(f) for f in job.files],
                    str(job.output),
                    "failed",
                    f"{type(error).__name__}: {error}",
                )
            )
        else:
            ready.append(job)
    return ready, failures


def _group(files: list[Path]) -> tuple[list[tuple[str, tuple[Path, ...]]], list[SceneOutcome]]:
    """Scenes ``(key, files)`` of ``files`` by the polarisation naming rule; an incomplete group fails
    alone (group_polarisations rejects the whole list)."""
    try:
        return [(s.key, s.files) for s in group_polarisations(files)], []
    except PolarisationError:
        pass
    groups: dict[tuple[Path, str, str], list[Path]] = defaultdict(list)
    scenes, failures = [], []
    for path in files:
        found = polarisation_of(path)
        if found is None:
            scenes.append((path.stem, (path,)))
        else:
            groups[(path.parent, found[0], path.suffix.lower())].append(path)
    expected: dict[Path, set[str]] = defaultdict(set)
    for (folder, _, _), members in groups.items():
        expected[folder] |= {polarisation_of(p)[1] for p in members}  # type: ignore[index]
    for (folder, key, _), members in groups.items():
        try:
            (sample,) = group_polarisations(members)
        except PolarisationError as error:
            failures.append(_failure(key, members, str(error)))
            continue
        missing = [
            p for p in POLARISATION_ORDER if p in expected[folder] and p not in (sample.polarisations or ())
        ]
        if missing:
            reason = (
                f"lacks {', '.join(missing)} (other scenes in {folder} have them; name them {key}_vv.tif ...)"
            )
            failures.append(_failure(key, members, reason))
        else:
            scenes.append((key, sample.files))
    return sorted(scenes, key=lambda s: s[1][0]), failures


def plan_scenes(
    files: list[Path], output_dir: str | os.PathLike[str], output_type: str
) -> tuple[list[SceneJob], list[SceneOutcome]]:
    """Group ``files`` into scenes with their outputs ``output_dir/{id}_{output_type}.tif``; scenes
    sharing an output name fail (all of them: which one is meant cannot be told). Files inside
    ``output_dir`` are never inputs (an input folder that holds the output folder would otherwise take
    the previous run's maps for scenes)."""
    output_dir = Path(output_dir)
    outputs = output_dir.resolve()
    files = [f for f in files if not f.resolve().is_relative_to(outputs)]
    grouped, failures = _group(files)
    by_output: dict[Path, list[SceneJob]] = defaultdict(list)
    for key, members in grouped:
        job = SceneJob(key, tuple(members), output_dir / f"{key}_{output_type}.tif")
        by_output[job.output].append(job)
    jobs = []
    for output, same in by_output.items():
        if len(same) == 1:
            jobs.append(same[0])
            continue
        sources = "; ".join(", ".join(str(f) for f in job.files) for job in same)
        for job in same:
            failures.append(
                _failure(job.key, job.files, f"{len(same)} scenes would write {output}: {sources}")
            )
    return sorted(jobs, key=lambda j: str(j.files[0])), failures


def output_is_complete(
    output: Path, height: int, width: int, count: int, provenance: str | None = None
) -> bool:
    """Whether ``output`` is a finished prediction: a readable uint8 GeoTIFF of ``count`` bands and
    ``height`` x ``width`` pixels whose last pixel reads (a leftover temporary file never is: it has
    another name), and, when ``provenance`` is given, made by that model with those options (its tag)."""
    if not output.is_file():
        return False
    if provenance is not None and read_provenance(output) != provenance:
        return False
    try:
        with rasterio.open(output) as dataset:
            if (dataset.driver, dataset.height, dataset.width, dataset.count) != (
                "GTiff",
                height,
                width,
                count,
            ):
                return False
            if any(dtype != "uint8" for dtype in dataset.dtypes):
                return False
            dataset.read(window=Window(width - 1, height - 1, 1, 1))
    except (RasterioError, OSError):
        return False
    return True


def _scene_size(job: SceneJob) -> tuple[int, int]:
    with open_source(job.files if len(job.files) > 1 else job.files[0]) as scene:
        return scene.height, scene.width


def run_scene(
    job: SceneJob,
    predict: Callable[..., Any],
    output_bands: int,
    overwrite: bool = False,
    rank: int = 0,
    provenance: str | None = None,
) -> SceneOutcome:
    """Predict one scene with ``predict(source, output_path, overwrite=...)`` unless its output is
    complete (with ``provenance``: made the same way); a map of ours made by another model or with other
    options is recomputed; any error except an interrupt becomes a failed outcome with the reason."""
    source: Any = list(job.files) if len(job.files) > 1 else job.files[0]
    outcome = SceneOutcome(job.key, [str(f) for f in job.files], str(job.output), "done", rank=rank)
    start = time.perf_counter()
    try:
        height, width = _scene_size(job)
        outcome.pixels = height * width
        if not overwrite and output_is_complete(job.output, height, width, output_bands, provenance):
            outcome.status, outcome.reason = "skipped", "complete output exists"
            return outcome
        replace = overwrite
        if job.output.exists() and not overwrite:
            if provenance is None or read_provenance(job.output) is None:
                raise OutputExistsError(
                    f"{job.output}: exists but is not a complete prediction of this scene by this model with these "
                    "options; pass --overwrite to replace it"
                )
            replace, outcome.reason = (
                True,
                "replaced an earlier map made by another model or with other options",
            )
        remove_stale_temporaries(job.output)
        predict(source, job.output, overwrite=replace)
    except Exception as error:  # noqa: BLE001 (one bad scene never stops the others; the reason is kept)
        outcome.status, outcome.reason = "failed", f"{type(error).__name__}: {error}"
    outcome.seconds = time.perf_counter() - start
    return outcome


def format_summary(outcomes: list[SceneOutcome], seconds: float | None = None) -> str:
    """A readable summary: counts, the failures with their reasons, throughput of the predicted scenes."""
    counts = {status: sum(o.status == status for o in outcomes) for status in STATUSES}
    lines = [
        f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed ({len(outcomes)} in all)"
    ]
    done = [o for o in outcomes if o.status == "done"]
    if done and seconds:
        megapixels = sum(o.pixels for o in done) / 1e6
        lines.append(
            f"predicted {megapixels:.1f} Mpx in {seconds:.1f} s wall: {megapixels / seconds:.3f} Mpx/s, "
            f"{len(done) / seconds:.3f} scenes/s over {len({o.rank for o in done})} process(es)"
        )
    for outcome in outcomes:
        if outcome.status == "failed":
            lines.append(f"  FAILED {outcome.key} ({', '.join(outcome.inputs)}): {outcome.reason}")
    return "\n".join(lines)


__all__ = [
    "ProcessShare",
    "SceneJob",
    "SceneOutcome",
    "check_output_folder",
    "collect_inputs",
    "inputs_inside",
    "format_summary",
    "output_is_complete",
    "plan_scenes",
    "process_share",
    "readable_jobs",
    "run_scene",
]
