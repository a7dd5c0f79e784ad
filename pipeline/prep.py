"""The offline stage behind ``ncore-prep perturb``: N perturbed views per clip, cached in shards.

How a run goes:

1. **Plan** (parent). One view set per perturbation kind; its ``key`` hashes everything that
   determines the stored bytes (:func:`view_set_key`), so changing any setting makes a new
   folder ``<cache>/<dataset>/<kind>-n<N>-<key>/`` beside the old ones. The manifest's clips,
   in manifest order, are cut into shards of ``shard_size`` clips. Membership is fixed here,
   before anything is submitted, so no byte depends on worker count or scheduling.
2. **Compute** (workers). One task per shard (:func:`compute_shard`): the worker decodes its
   clips from the source files, analyses each clip ONCE with WORLD, draws the views of every
   requested kind from that analysis and writes one shard per view set (under a temporary
   name, renamed when complete). A worker holds one shard at a time, so memory is bounded by
   the shard size. Clips that cannot be decoded or perturbed become failures with a reason.
3. **Record** (parent). After each completed task the parent adds the shard entries and
   failures to the manifest and rewrites it atomically. The manifest lists complete shards
   only, so a run killed at any moment (SIGKILL included) resumes by recomputing exactly the
   shards that are not listed, and ends byte-identical to an uninterrupted run.

Tasks go through the :class:`concurrent.futures.Executor` interface, which a Dask ``Client``
implements (:func:`dask_executor`): a local cluster of processes by default, or an existing
cluster given by its scheduler address.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Executor, as_completed
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.audio import AudioError, read_source
from pipeline.errors import PipelineError
from pipeline.manifest import (
    DEFAULT_F0_CEIL_HZ,
    DEFAULT_F0_FLOOR_HZ,
    LEGACY_F0_CEIL_HZ,
    LEGACY_F0_FLOOR_HZ,
    SAMPLE_RATE,
    Failure,
    Manifest,
    ManifestFile,
    ShardEntry,
    ViewSet,
    relative_to_manifest,
    view_set_folder_name,
)
from pipeline.memory import tune_malloc
from pipeline.perturb import (
    F0_METHODS,
    PERTURB_VERSION,
    EmotionParams,
    PerturbationError,
    SpeakerParams,
    f0_range_problem,
    perturb_clip,
    praat_available,
)
from pipeline.viewset import (
    ShardAttributes,
    cache_folder_problem,
    shard_members,
    shard_name,
    source_digest,
    view_set_key,
)

logger = logging.getLogger(__name__)

KINDS = ("speaker", "emotion")
STAGE = "perturb"
DEFAULT_SHARD_SIZE = 64  # small enough that even a few hundred clips keep every core busy


class PrepError(PipelineError, RuntimeError):
    """The stage cannot run or could not finish; the message says what to do."""


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class PerturbSettings:
    """What a run computes: kinds, views per clip (N), seed, shard size, F0 analysis, parameters.

    ``f0_floor_hz`` and ``f0_ceil_hz`` bound the F0 search of the WORLD analysis (Hz): by
    default 71-2000 Hz, for screams and cries (docs/perturbations.md); view sets made under
    WORLD's 71-800 Hz, the default before, keep their keys and are found again with
    ``f0_ceil_hz=800``.
    """

    kinds: tuple[str, ...] = KINDS
    views: int = 5
    seed: int = 42
    shard_size: int = DEFAULT_SHARD_SIZE
    f0_method: str = "harvest"
    f0_floor_hz: float = DEFAULT_F0_FLOOR_HZ
    f0_ceil_hz: float = DEFAULT_F0_CEIL_HZ
    speaker: SpeakerParams = field(default_factory=SpeakerParams)
    emotion: EmotionParams = field(default_factory=EmotionParams)

    def __post_init__(self) -> None:
        if not self.kinds or any(k not in KINDS for k in self.kinds):
            raise PrepError(f"kinds must be among {', '.join(KINDS)}, got {self.kinds!r}")
        if len(set(self.kinds)) != len(self.kinds):
            raise PrepError(f"kinds listed twice: {self.kinds!r}")
        if self.views < 1:
            raise PrepError(f"--views must be >= 1, got {self.views}")
        if self.shard_size < 1:
            raise PrepError(f"--shard-size must be >= 1, got {self.shard_size}")
        if self.seed < 0:
            raise PrepError(f"--seed must be >= 0, got {self.seed}")
        if self.f0_method not in F0_METHODS:
            raise PrepError(f"--f0 must be one of {', '.join(F0_METHODS)}, got {self.f0_method!r}")
        if self.f0_method == "praat" and not praat_available():
            raise PrepError(
                "--f0 praat needs the optional package praat-parselmouth (GPL-3.0; see "
                "docs/perturbations.md): pip install 'ncore[praat]'"
            )
        why = f0_range_problem(
            self.f0_floor_hz, self.f0_ceil_hz, SAMPLE_RATE, ("--f0-floor", "--f0-ceil")
        )
        if why is not None:
            raise PrepError(why)

    def params(self, kind: str) -> dict[str, Any]:
        """The parameters of ``kind`` as stored in the manifest and the shards."""
        return (self.speaker if kind == "speaker" else self.emotion).to_dict()


def parse_params(kind: str, assignments: Sequence[str]) -> SpeakerParams | EmotionParams:
    """Parameters of ``kind`` from ``NAME=VALUE`` strings over the paper's defaults.

    Raises PrepError naming the bad assignment and listing the known names.
    """
    cls = SpeakerParams if kind == "speaker" else EmotionParams
    values: dict[str, str] = {}
    for text in assignments:
        name, sep, value = text.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name or not value.strip():
            raise PrepError(f"--{kind}-param {text!r}: expected NAME=VALUE")
        values[name] = value.strip()
    known = sorted(cls().to_dict())
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise PrepError(
            f"--{kind}-param: unknown parameter {unknown[0]!r}; known: {', '.join(known)}"
        )
    try:
        return cls.from_dict(values)
    except PerturbationError as e:
        raise PrepError(f"--{kind}-param: {e}") from None


# --------------------------------------------------------------------------- worker side


@dataclass(frozen=True)
class ClipSource:
    """A clip as a worker needs it: id, absolute source path, manifest path, 16 kHz samples."""

    id: str
    path: str
    source: str
    num_samples: int
    sha256: str = ""  # of the source file's bytes at import; "" when the manifest has none
    data_dir: str = ""  # the corpus folder the file must stay inside, symlinks resolved


@dataclass(frozen=True)
class ShardOutput:
    """One view set's shard to write: kind, N, parameters, final folder path, shard attrs."""

    kind: str
    views: int
    params: dict[str, Any]
    path: str
    attrs: dict[str, Any]


@dataclass(frozen=True)
class ShardTask:
    """Everything a worker needs for one shard; small, so it travels cheaply to any cluster."""

    index: int
    clips: tuple[ClipSource, ...]
    outputs: tuple[ShardOutput, ...]
    seed: int
    f0_method: str
    f0_floor_hz: float = DEFAULT_F0_FLOOR_HZ
    f0_ceil_hz: float = DEFAULT_F0_CEIL_HZ


@dataclass(frozen=True)
class ShardResult:
    """What a worker reports: one entry per view set, failures, and timings for the summary.

    ``audio_seconds`` counts the source audio of the stored clips (16 kHz, view 0);
    ``busy_seconds`` the worker's wall time on the task; ``malloc_env`` the worker's
    ``MALLOC_TRIM_THRESHOLD_`` (None when unset) so that a run can report it.
    """

    index: int
    entries: dict[str, ShardEntry]
    failures: tuple[Failure, ...]
    audio_seconds: float
    busy_seconds: float
    malloc_env: str | None = None


def compute_shard(task: ShardTask) -> ShardResult:
    """Decode, perturb and store one shard of every requested view set (runs on a worker).

    Each clip is analysed once; its views of all kinds come from that analysis. A clip that
    cannot be decoded, no longer matches its manifest length, or cannot be perturbed becomes
    a failure; the shard is still written (possibly with zero clips) so the view set stays
    complete. The shard folders appear only when complete (see ``write_shard``).
    """
    # zarr and the decoders are imported here, by the workers: a run that plans and finds
    # nothing to do never pays for them.
    from pipeline.shards import ShardClip, write_shard

    tune_malloc()
    start = time.perf_counter()
    kinds: dict[str, tuple[int, SpeakerParams | EmotionParams]] = {
        o.kind: (
            o.views,
            SpeakerParams.from_dict(o.params)
            if o.kind == "speaker"
            else EmotionParams.from_dict(o.params),
        )
        for o in task.outputs
    }
    stored: dict[str, list[ShardClip]] = {o.kind: [] for o in task.outputs}
    failures: list[Failure] = []
    audio_samples = 0
    for clip in task.clips:
        if clip.data_dir and not _inside_resolved(clip.data_dir, clip.path):
            # A symlink placed in the data folder after import must not be followed out.
            reason = f"path escapes the data folder: {clip.source} (symlinks resolved)"
            failures.append(Failure(clip.id, STAGE, reason, clip.source))
            continue
        try:
            src = read_source(clip.path)
        except AudioError as e:
            failures.append(Failure(clip.id, STAGE, e.reason, clip.source))
            continue
        audio = src.audio
        if clip.sha256 and src.sha256 != clip.sha256:
            # Other audio under the same name (even of the same length) must not be stored
            # as this clip: its labels and split were decided for the old file.
            failures.append(
                Failure(
                    clip.id,
                    STAGE,
                    "source changed: the file's SHA-256 differs from the one recorded at "
                    "import; rebuild the manifest (`ncore-prep manifest`)",
                    clip.source,
                )
            )
            continue
        if audio.shape[0] != clip.num_samples:
            failures.append(
                Failure(
                    clip.id,
                    STAGE,
                    f"source changed: decodes to {audio.shape[0]} samples at 16 kHz but the "
                    f"manifest says {clip.num_samples}; rebuild the manifest",
                    clip.source,
                )
            )
            continue
        try:
            views = perturb_clip(
                audio,
                clip.id,
                task.seed,
                kinds,
                f0_method=task.f0_method,
                f0_floor_hz=task.f0_floor_hz,
                f0_ceil_hz=task.f0_ceil_hz,
            )
        except PerturbationError as e:
            failures.append(Failure(clip.id, STAGE, str(e) or type(e).__name__, clip.source))
            continue
        for kind, drawn_views in views.items():
            rows = np.stack([audio, *(np.asarray(v, dtype=np.float32) for v, _ in drawn_views)])
            if rows.shape != (1 + kinds[kind][0], audio.shape[0]):
                # A view of another length would break time alignment: a bug, not a bad clip.
                raise RuntimeError(
                    f"clip {clip.id!r}: {kind} views have shape {rows.shape}, expected "
                    f"{(1 + kinds[kind][0], audio.shape[0])}"
                )
            stored[kind].append(ShardClip(clip.id, rows, [d for _, d in drawn_views]))
        audio_samples += audio.shape[0]
    entries = {}
    for o in task.outputs:
        clips = stored[o.kind]
        samples, checksum = write_shard(o.path, clips, o.attrs, rows=1 + o.views)
        entries[o.kind] = ShardEntry(task.index, Path(o.path).name, len(clips), samples, checksum)
    return ShardResult(
        index=task.index,
        entries=entries,
        failures=tuple(failures),
        audio_seconds=audio_samples / SAMPLE_RATE,
        busy_seconds=time.perf_counter() - start,
        malloc_env=os.environ.get("MALLOC_TRIM_THRESHOLD_"),
    )


def _inside_resolved(folder: str, path: str) -> bool:
    """Whether ``path``, symlinks resolved, lies inside ``folder`` (resolved too)."""
    root, target = os.path.realpath(folder), os.path.realpath(path)
    return target != root and os.path.commonpath([root, target]) == root


# --------------------------------------------------------------------------- parent side


@dataclass(frozen=True)
class PrepSummary:
    """The outcome of one run, for the final report (seconds are wall-clock seconds)."""

    dataset: str
    manifest_path: Path
    clips: int
    view_sets: tuple[ViewSet, ...]
    shards_total: int
    shards_run: int
    clips_run: int
    clips_stored: int
    views_written: int
    audio_seconds: float
    failures: tuple[Failure, ...]
    wall_seconds: float
    busy_seconds: float
    errors: tuple[str, ...] = ()
    workers: str = ""
    startup_seconds: float = 0.0
    manifest_commands: tuple[str, ...] = ()  # per incomplete view set: the command finishing it
    known_failures: int = 0  # of ``failures``, those recorded with the same reason before
    other_f0_ranges: tuple[str, ...] = ()  # :func:`other_f0_range_notes`, one line per range

    @property
    def nothing_to_do(self) -> bool:
        return self.shards_run == 0 and not self.errors

    @property
    def every_clip_failed(self) -> bool:
        """True when this run perturbed clips, stored none of them, and not only because of
        failures already recorded before (a shard holding one clip too short for WORLD,
        computed again, is no news)."""
        return (
            self.clips_run > 0
            and self.clips_stored == 0
            and len(self.failures) > self.known_failures
        )


class PerturbInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped ``run_perturb``: queued shards were cancelled, completed ones
    are recorded in the manifest. The message says how far it got."""


def plan_view_sets(
    manifest: Manifest,
    manifest_path: str | os.PathLike[str],
    settings: PerturbSettings,
    cache_dir: str | os.PathLike[str] | None,
) -> list[ViewSet]:
    """One view set per requested kind: the manifest's own when the key matches, else new."""
    ids = [c.id for c in manifest.clips]
    num_shards = len(shard_members(manifest, settings.shard_size))
    existing = {vs.key: vs for vs in manifest.view_sets}
    sources = source_digest(manifest)
    planned = []
    for kind in settings.kinds:
        params = settings.params(kind)
        keyed = (
            manifest.dataset,
            kind,
            settings.views,
            settings.seed,
            params,
            settings.f0_method,
            settings.shard_size,
            ids,
            manifest.sample_rate,
            PERTURB_VERSION,
            settings.f0_floor_hz,
            settings.f0_ceil_hz,
        )
        key = view_set_key(*keyed, sources)
        legacy = view_set_key(*keyed)  # the key before the sources entered it
        if key not in existing and legacy in existing:
            key = legacy  # a view set of these settings made before: resume it
        if key in existing:
            planned.append(existing[key])
            continue
        if cache_dir is None:
            raise PrepError(f"{manifest_path}: no {kind} view set of these settings to repair")
        folder = (
            Path(cache_dir) / manifest.dataset / view_set_folder_name(kind, settings.views, key)
        )
        planned.append(
            ViewSet(
                kind=kind,
                views=settings.views,
                seed=settings.seed,
                params=params,
                key=key,
                folder=relative_to_manifest(folder, manifest_path),
                num_shards=num_shards,
                shard_size=settings.shard_size,
                code_version=PERTURB_VERSION,
                f0_method=settings.f0_method,
                f0_floor_hz=settings.f0_floor_hz,
                f0_ceil_hz=settings.f0_ceil_hz,
            )
        )
    return planned


def _f0_free_settings(vs: ViewSet) -> tuple[Any, ...]:
    """What determines a view set's views besides the F0 range and the clips."""
    return (vs.kind, vs.views, vs.seed, vs.params, vs.f0_method, vs.shard_size, vs.code_version)


def other_f0_range_notes(
    manifest: Manifest, planned: Sequence[ViewSet], settings: PerturbSettings
) -> list[str]:
    """One line per other F0 range under which the manifest holds view sets that differ from
    ``planned`` in that range only (kind, N, seed, parameters, F0 engine, shard size and code
    version equal): typically those made under 71-800 Hz, the default until it became 71-2000 Hz.

    Their keys differ, so they are neither reused nor touched; the line says they exist,
    under which range, and which options use them, so that a changed default never silently
    swaps the views a project trains on."""
    keys = {vs.key for vs in planned}
    found: dict[tuple[float, float], list[ViewSet]] = {}
    for vs in planned:
        for other in manifest.view_sets:
            same = _f0_free_settings(other) == _f0_free_settings(vs)
            f0_range = (other.f0_floor_hz, other.f0_ceil_hz)
            if same and other.key not in keys and f0_range != (vs.f0_floor_hz, vs.f0_ceil_hz):
                found.setdefault(f0_range, []).append(other)
    lines = []
    for (floor, ceil), others in found.items():
        names = ", ".join(view_set_folder_name(o.kind, o.views, o.key) for o in others)
        before = (
            f" (the default until it became {DEFAULT_F0_FLOOR_HZ:g}-{DEFAULT_F0_CEIL_HZ:g} Hz)"
            if (floor, ceil) == (LEGACY_F0_FLOOR_HZ, LEGACY_F0_CEIL_HZ)
            else ""
        )
        options = " ".join(
            f"{flag} {value:g}"
            for flag, value, now in (
                ("--f0-floor", floor, settings.f0_floor_hz),
                ("--f0-ceil", ceil, settings.f0_ceil_hz),
            )
            if value != now
        )
        lines.append(
            f"note: the manifest also lists {names}, of these settings but made with F0 "
            f"{floor:g}-{ceil:g} Hz{before}, kept beside these "
            f"({settings.f0_floor_hz:g}-{settings.f0_ceil_hz:g} Hz); to use them, pass "
            f"{options} to ncore-prep perturb, or --view-set KEY to ncore-train"
        )
    return lines


def _done(view_set: ViewSet, index: int, manifest_path: Path) -> bool:
    """A shard is done when the manifest lists it and its folder is there."""
    listed = any(s.index == index for s in view_set.shards)
    return listed and (view_set.folder_path(manifest_path) / shard_name(index)).is_dir()


def retry_indices(view_set: ViewSet, manifest: Manifest, manifest_path: Path) -> set[int]:
    """Shards of ``view_set`` holding a transient failure (the file could not be read, see
    :func:`pipeline.audio.is_transient`) whose file is readable now: computed again."""
    from pipeline.audio import is_transient, readable_now

    transient = {f.id for f in view_set.failures if is_transient(f.reason)}
    if not transient:
        return set()
    data_dir = manifest.data_path(manifest_path)
    by_id = manifest.clip_by_id()
    members = shard_members(manifest, view_set.shard_size)
    return {
        index
        for index, ids in enumerate(members)
        if any(
            c in transient and c in by_id and readable_now(data_dir / by_id[c].path) for c in ids
        )
    }


def perturb_command(manifest_path: str | os.PathLike[str], view_set: ViewSet) -> str:
    """The ``ncore-prep perturb`` command that computes the missing shards of ``view_set``
    (its settings spelled as flags, so that they hash to its key again; ``--cache-dir`` the
    cache root its folder lies in, the only root perturb writes it under)."""
    import shlex

    path = Path(manifest_path)
    folder = os.path.normpath(os.path.join(path.parent, view_set.folder))
    cache_root = os.path.dirname(os.path.dirname(folder)) or "."
    args = [
        "ncore-prep", "perturb", "--dataset", path.stem, "--manifest-dir", str(path.parent),
        "--cache-dir", cache_root,
        "--kind", view_set.kind, "--views", str(view_set.views), "--seed", str(view_set.seed),
        "--shard-size", str(view_set.shard_size), "--f0", view_set.f0_method,
        "--f0-floor", repr(float(view_set.f0_floor_hz)),
        "--f0-ceil", repr(float(view_set.f0_ceil_hz)),
    ]  # fmt: skip
    defaults = (SpeakerParams() if view_set.kind == "speaker" else EmotionParams()).to_dict()
    for name, value in sorted(view_set.params.items()):
        if defaults.get(name) != value:
            args += [f"--{view_set.kind}-param", f"{name}={value!r}"]
    return shlex.join(args)


def _put(manifest: Manifest, view_set: ViewSet) -> Manifest:
    """Add ``view_set`` or replace the one with its key, keeping the list order stable."""
    keys = [vs.key for vs in manifest.view_sets]
    if view_set.key not in keys:
        return replace(manifest, view_sets=(*manifest.view_sets, view_set))
    return replace(
        manifest,
        view_sets=tuple(view_set if vs.key == view_set.key else vs for vs in manifest.view_sets),
    )


def _record(
    manifest: Manifest, view_set: ViewSet, result: ShardResult, members: Sequence[str]
) -> Manifest:
    """The manifest with ``result``'s shard and failures in ``view_set``, replacing what it
    listed for that shard (entry and failures of its ``members``) before."""
    current = next(vs for vs in manifest.view_sets if vs.key == view_set.key)
    order = {c.id: i for i, c in enumerate(manifest.clips)}
    ids = set(members)
    kept = (f for f in current.failures if f.id not in ids)
    failures = sorted((*kept, *result.failures), key=lambda f: order[f.id])
    shards = sorted(
        (*(s for s in current.shards if s.index != result.index), result.entries[current.kind]),
        key=lambda s: s.index,
    )
    return _put(manifest, replace(current, shards=tuple(shards), failures=tuple(failures)))


def _remove_stale_temporaries(folder: Path) -> None:
    """Delete half-written shards (``shard-*.zarr.tmp-*``) left by a killed run."""
    for tmp in folder.glob("shard-*.zarr.tmp-*"):
        logger.info("removing the unfinished shard %s of an earlier run", tmp.name)
        shutil.rmtree(tmp, ignore_errors=True)


ExecutorFactory = Callable[[], AbstractContextManager[tuple[Executor, str]]]


def fixed_executor(executor: Executor, description: str = "the given executor") -> ExecutorFactory:
    """An executor factory for :func:`run_perturb` that hands out an executor already running."""
    return lambda: nullcontext((executor, description))


def run_perturb(
    manifest_path: str | os.PathLike[str],
    settings: PerturbSettings,
    executor_factory: ExecutorFactory,
    cache_dir: str | os.PathLike[str] | None = "cache",
    progress: bool = True,
    redo: Collection[int] = (),
) -> PrepSummary:
    """Compute and record every missing shard of the view sets ``settings`` asks for.

    ``executor_factory()`` gives a context manager yielding ``(executor, description)``;
    the executor runs :func:`compute_shard` (a Dask client's executor, see
    :func:`dask_executor`). It is entered only when there is work, so a finished job starts
    no cluster. Shards already listed in the manifest are skipped; every other shard is
    computed, and the manifest is rewritten after each one. Also computed again: the shards
    in ``redo`` (damaged shards, for ``validate --repair``) and shards holding a transient
    failure whose file is readable now (:func:`retry_indices`). A shard listed before stays
    listed until its replacement is recorded, so a failed or killed run never loses track
    of it. Task errors (a worker lost, a full or read-only disk, a bug) do not stop the
    other shards; they are returned in ``errors``. Ctrl-C cancels the queued shards, records
    the completed ones and raises :class:`PerturbInterrupted`. Every view set's folder must
    be the one the toolkit gives it under ``cache_dir`` (symlinks resolved; None: the cache
    root the manifest records, for a repair): ``pipeline.viewset.cache_folder_problem``.
    """
    from tqdm import tqdm

    manifest_path = Path(manifest_path)
    start = time.perf_counter()
    # The lock every manifest writer takes (a symlink shares its target's); saves refuse to
    # overwrite a change made behind it. The kernel drops it when the process dies.
    with ManifestFile(manifest_path, "perturb") as file:
        manifest = file.load()
        if not manifest.clips:
            raise PrepError(f"{manifest_path}: the manifest has no clips to perturb")
        view_sets = plan_view_sets(manifest, manifest_path, settings, cache_dir)
        f0_notes = other_f0_range_notes(manifest, view_sets, settings)
        for vs in view_sets:  # before anything is written or deleted there
            problem = cache_folder_problem(manifest, manifest_path, vs, cache_dir)
            if problem:
                raise PrepError(f"{manifest_path}: {problem}")
        members = shard_members(manifest, settings.shard_size)
        by_id = manifest.clip_by_id()
        data_dir = manifest.data_path(manifest_path)
        retry = {vs.key: retry_indices(vs, manifest, manifest_path) for vs in view_sets}
        known = {(f.id, f.reason) for vs in view_sets for f in vs.failures}
        tasks = []
        for index, ids in enumerate(members):
            outputs = []
            for vs in view_sets:
                again = index in redo or index in retry[vs.key]
                if _done(vs, index, manifest_path) and not again:
                    continue
                if index in retry[vs.key]:
                    logger.info(
                        "%s: shard %d: a file that could not be read is back", vs.key, index
                    )
                elif any(s.index == index for s in vs.shards) and index not in redo:
                    logger.warning("%s: shard %d is listed but missing; recomputing", vs.key, index)
                attrs = ShardAttributes.for_shard(vs, manifest.dataset, index).to_dict()
                path = vs.folder_path(manifest_path) / shard_name(index)
                outputs.append(ShardOutput(vs.kind, vs.views, vs.params, str(path), attrs))
            if outputs:
                clips = tuple(
                    ClipSource(
                        cid,
                        str(data_dir / by_id[cid].path),
                        by_id[cid].path,
                        by_id[cid].num_samples,
                        by_id[cid].source_sha256,
                        str(data_dir),
                    )
                    for cid in ids
                )
                tasks.append(
                    ShardTask(
                        index,
                        clips,
                        tuple(outputs),
                        settings.seed,
                        settings.f0_method,
                        settings.f0_floor_hz,
                        settings.f0_ceil_hz,
                    )
                )
        for vs in view_sets:
            manifest = _put(manifest, vs)
            folder = vs.folder_path(manifest_path)
            folder.mkdir(parents=True, exist_ok=True)
            _remove_stale_temporaries(folder)
        if tasks:
            file.save(manifest)  # records the plan (num_shards) before any work

        errors: list[str] = []
        run_failures: list[Failure] = []
        clips_stored = views_written = 0
        audio_seconds = busy_seconds = 0.0
        malloc_envs: set[str | None] = set()
        with (
            executor_factory() if tasks else nullcontext((None, "")) as (executor, workers),
            tqdm(
                total=len(tasks),
                unit="shard",
                desc=f"perturb {manifest.dataset}",
                disable=not progress or not tasks,
                file=sys.stderr,
            ) as bar,
        ):
            submitted = time.perf_counter()
            futures = {executor.submit(compute_shard, task): task for task in tasks}
            handled: set[Any] = set()

            def record(future: Any) -> None:
                nonlocal manifest, clips_stored, views_written, audio_seconds, busy_seconds
                handled.add(future)
                task = futures[future]
                try:
                    result = future.result()
                except Exception as e:  # a lost worker, a full disk, a bug: report, go on
                    errors.append(f"shard {task.index}: {type(e).__name__}: {e}")
                    bar.update(1)
                    return
                for vs in view_sets:
                    if vs.kind in result.entries:
                        manifest = _record(manifest, vs, result, members[task.index])
                file.save(manifest)
                clips_stored += next(iter(result.entries.values())).clips
                views_written += sum(e.clips for e in result.entries.values()) * settings.views
                audio_seconds += result.audio_seconds
                busy_seconds += result.busy_seconds
                run_failures.extend(result.failures)
                malloc_envs.add(result.malloc_env)
                bar.update(1)
                bar.set_postfix(clips=clips_stored, failed=len(run_failures))

            try:
                _injected_kill("perturb:planned")
                for future in as_completed(futures):
                    record(future)
            except KeyboardInterrupt:
                # Ctrl-C: nothing queued runs any more (the executor's exit terminates the
                # workers); the shards that did complete are recorded before stopping.
                for future in futures:
                    future.cancel()
                for future in futures:
                    if future not in handled and future.done() and not future.cancelled():
                        record(future)
                done = sum(len(vs.shards) for vs in manifest.view_sets if vs.key in retry)
                raise PerturbInterrupted(
                    f"interrupted: {len(handled) - len(errors)} of {len(tasks)} shard(s) of this "
                    f"run completed and recorded ({done} listed in {manifest_path}); re-run the "
                    "same command to compute the rest"
                ) from None
    if malloc_envs - {None}:
        logger.info("workers ran with MALLOC_TRIM_THRESHOLD_=%s (tuned in-task)", malloc_envs)
    final = tuple(next(v for v in manifest.view_sets if v.key == vs.key) for vs in view_sets)
    unfinished = [vs for vs in final if not vs.complete]
    return PrepSummary(
        manifest_commands=tuple(perturb_command(manifest_path, vs) for vs in unfinished),
        known_failures=sum((f.id, f.reason) in known for f in run_failures),
        other_f0_ranges=tuple(f0_notes),
        dataset=manifest.dataset,
        manifest_path=manifest_path,
        clips=len(manifest.clips),
        view_sets=final,
        shards_total=len(members),
        shards_run=len(tasks),
        clips_run=sum(len(t.clips) for t in tasks),
        clips_stored=clips_stored,
        views_written=views_written,
        audio_seconds=audio_seconds,
        failures=tuple(run_failures),
        wall_seconds=time.perf_counter() - start,
        busy_seconds=busy_seconds,
        errors=tuple(errors),
        workers=workers,
        startup_seconds=submitted - start if tasks else 0.0,
    )


def format_summary(summary: PrepSummary) -> str:
    """The final report: what was done, each view set's clip balance, failures, throughput."""
    lines = []
    if summary.nothing_to_do:
        lines.append(
            f"nothing to do: every shard of {len(summary.view_sets)} view set(s) of "
            f"{summary.dataset!r} is already complete"
        )
    else:
        # Throughput over the processing time, without planning and cluster start-up.
        busy_wall = max(summary.wall_seconds - summary.startup_seconds, 1e-9)
        rate = summary.audio_seconds / busy_wall
        clip_rate = summary.clips_run / busy_wall
        lines.append(
            f"perturbed {summary.clips_run} clips in {summary.shards_run} of "
            f"{summary.shards_total} shards on {summary.workers or 'the executor'}: "
            f"{summary.clips_stored} stored, {len(summary.failures)} failed, "
            f"{summary.views_written} views written"
        )
        lines.append(
            f"{summary.audio_seconds:.1f} s of audio in {summary.wall_seconds:.1f} s wall, "
            f"{summary.startup_seconds:.1f} s of it starting up: {clip_rate:.2f} clips/s, "
            f"{rate:.2f} s of audio per second (workers busy {summary.busy_seconds:.1f} s)"
        )
    for vs in summary.view_sets:
        stored = sum(s.clips for s in vs.shards)
        state = "complete" if vs.complete else f"INCOMPLETE {len(vs.shards)}/{vs.num_shards}"
        lines.append(
            f"{vs.kind} N={vs.views} seed={vs.seed} key={vs.key} ({state}): "
            f"{summary.clips} clips in = {stored} stored + {len(vs.failures)} failed"
            f"{'' if stored + len(vs.failures) == summary.clips else ' (unfinished)'}"
            f" -> {vs.folder}"
        )
    for f in summary.failures[:10]:
        lines.append(f"  failed {f.id}: {f.reason}")
    if len(summary.failures) > 10:
        lines.append(f"  ... and {len(summary.failures) - 10} more (see the manifest)")
    for e in summary.errors:
        lines.append(f"  error {e}")
    for command in summary.manifest_commands:
        lines.append(f"  to finish: {command}")
    lines.extend(summary.other_f0_ranges)
    return "\n".join(lines)


def _injected_kill(point: str) -> None:
    """For kill tests: SIGKILL this process at ``point`` when ``NCORE_KILL_AT`` names it."""
    if os.environ.get("NCORE_KILL_AT") == point:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def dask_executor(
    workers: int | None = None, scheduler: str | None = None, connect_timeout: float = 10.0
) -> Iterator[tuple[Executor, str]]:
    """A Dask client's executor and a description of the cluster behind it.

    With ``scheduler`` (e.g. ``tcp://host:8786``) it connects to that existing cluster;
    its workers must be able to import this package and read the source audio and cache
    paths; ``connect_timeout`` (seconds) bounds the wait for it. Otherwise it starts a
    local cluster of ``workers`` single-threaded processes (default: one per core) whose
    nannies do not set ``MALLOC_TRIM_THRESHOLD_``, so WORLD runs at full speed (see
    :func:`tune_malloc`, which also covers existing clusters).
    """
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=connect_timeout)
        except (OSError, TimeoutError) as e:
            raise PrepError(f"cannot reach the Dask scheduler at {scheduler}: {e}") from None
        try:
            n = len(client.scheduler_info().get("workers", {}))
            yield client.get_executor(pure=False), f"the Dask cluster at {scheduler} ({n} workers)"
        finally:
            client.close()
        return
    n_workers = workers or os.cpu_count() or 1
    if n_workers < 1:
        raise PrepError(f"--workers must be >= 1, got {n_workers}")
    # A nanny copies its pre-spawn environment into this process's os.environ, so a cluster
    # started earlier in the same process would leak the variable into the new workers.
    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # any free port: never collide with another cluster
            silence_logs=logging.ERROR,
        )
    try:
        with Client(cluster) as client:
            yield (
                client.get_executor(pure=False),
                f"a local Dask cluster of {n_workers} worker process(es)",
            )
    finally:
        cluster.close()


# What compute_shard imports, loaded once by the fork server of process_executor.
_WORKER_MODULES = [
    "pipeline.prep",
    "pipeline.shards",
    "pipeline.audio",
    "pipeline.workers",
    "scipy.signal",
]


def _load_world() -> None:
    """Pool-worker set-up: import pyworld once (its import warning silenced)."""
    from pipeline.perturb import _world

    _world()


@contextmanager
def process_executor(workers: int | None = None) -> Iterator[tuple[Executor, str]]:
    """A pool of ``workers`` local processes (default: one per core) and its description.

    The workers are forked from a fork server that imported numpy, scipy, pyworld and
    zarr once, so a small run pays for those imports once instead of once per worker and
    starts in about a second (a local Dask cluster: several seconds and several CPU
    seconds). Tasks are the same :func:`compute_shard` calls as on Dask, so the bytes are
    the same. A worker that dies (killed, out of memory) breaks the pool: its shard and the
    ones still queued are reported as errors and recomputed by the next run.
    """
    from pipeline.workers import worker_pool

    n_workers = workers or os.cpu_count() or 1
    if n_workers < 1:
        raise PrepError(f"--workers must be >= 1, got {n_workers}")
    # Workers end with ncore-prep (SIGKILL included) and ignore SIGINT; an interrupted run
    # cancels the queue and terminates them (pipeline/workers.py).
    with worker_pool(n_workers, _load_world, preload=_WORKER_MODULES) as pool:
        yield pool, f"a local pool of {n_workers} worker process(es)"


# Above this much audio in the manifest the local default is a Dask cluster: its start-up
# (seconds) is then negligible, and its nannies restart a lost worker and retry its task
# where a process pool would stop every queued shard.
DASK_ABOVE_AUDIO_S = 3600.0
EXECUTORS = ("auto", "processes", "dask")


def choose_executor(
    manifest_path: str | os.PathLike[str],
    executor: str = "auto",
    workers: int | None = None,
    scheduler: str | None = None,
) -> AbstractContextManager[tuple[Executor, str]]:
    """The executor ``ncore-prep perturb`` runs on (entered only when there is work).

    ``dask`` with ``scheduler`` connects to that cluster; ``dask`` alone starts a local
    cluster; ``processes`` a local process pool (:func:`process_executor`); ``auto`` picks
    Dask when a scheduler is given or the manifest holds more than an hour of audio
    (:data:`DASK_ABOVE_AUDIO_S`), a process pool otherwise. Whatever runs the tasks, the
    bytes written are the same.
    """
    if executor not in EXECUTORS:
        raise PrepError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if scheduler and executor == "processes":
        raise PrepError("--scheduler needs --executor dask (or auto)")
    if executor == "auto":
        audio_s = sum(c.num_samples for c in Manifest.load(manifest_path).clips) / SAMPLE_RATE
        dask = bool(scheduler) or audio_s > DASK_ABOVE_AUDIO_S
        executor = "dask" if dask else "processes"
    if executor == "dask":
        return dask_executor(workers, scheduler)
    return process_executor(workers)
