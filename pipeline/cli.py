"""``ncore-prep``: the data-preparation commands.

Each command parses its options, imports the modules it needs inside its body (so that
``ncore-prep --help`` stays fast and a command does not pay for another's dependencies)
and calls one library function. User mistakes become :class:`click.ClickException`: one
line on stderr and exit code 1, never a traceback.

To add a command: define ``@main.command("name")`` below; nothing else needs to change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

# Names are listed here (not imported from pipeline.datasets) so that --help needs no
# numpy / scipy / soundfile import; a test checks them against the registry.
DATASETS = ("synthetic", "vivae", "recanvo", "recanvo-balanced", "csv")
PROTOCOLS = ("default", "paper", "speaker-held-out")
RECANVO = ("recanvo", "recanvo-balanced")


class CorpusOption(click.Option):
    """An option of ``ncore-prep manifest`` that only some corpora take (``datasets``);
    its help starts with their names."""

    def __init__(self, *args: Any, datasets: tuple[str, ...], **kwargs: Any) -> None:
        kwargs["help"] = f"{'/'.join(datasets)}: {kwargs.get('help', '')}"
        super().__init__(*args, **kwargs)
        self.datasets = datasets


def check_corpus_options(ctx: click.Context, dataset: str) -> None:
    """One line and exit 1, before any work, for a corpus option given with a corpus that
    does not take it, e.g. ``--csv`` with ``--dataset vivae``."""
    for param in ctx.command.params:
        if not isinstance(param, CorpusOption) or dataset in param.datasets:
            continue
        if ctx.get_parameter_source(param.name) == ParameterSource.COMMANDLINE:
            raise click.ClickException(
                f"{param.opts[0]} applies to --dataset {' or '.join(param.datasets)}, not {dataset}"
            )


def terminal_safe(text: str) -> str:
    """``text`` with every control or format character but the line break escaped
    (``\\x1b``, ``\\u202e``): a label, path or failure reason read from a corpus or a
    manifest cannot clear the screen, retitle the window or reorder what is printed."""
    import unicodedata

    return "".join(
        ch
        if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Zl", "Zp")
        else (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        for ch in text
    )


def echo(text: str = "", err: bool = False) -> None:
    """Print a line to the terminal (every command prints through here): escaped."""
    click.echo(terminal_safe(text), err=err)


class Commands(click.Group):
    """The group of ``ncore-prep`` and ``ncore-train``: any :class:`~pipeline.errors.NCoreError`
    a command raises (a pipeline or a trainer error) becomes one line on stderr and exit 1,
    escaped like every printed line, as does a command's own ``click.ClickException``."""

    def invoke(self, ctx: click.Context) -> Any:
        from pipeline.errors import NCoreError

        try:
            return super().invoke(ctx)
        except click.ClickException as e:
            e.message = terminal_safe(e.message)
            raise
        except NCoreError as e:
            raise click.ClickException(terminal_safe(str(e))) from None


def _within_cpus(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """A worker or thread count: 1 to this machine's CPU count (one line, exit 1, otherwise).
    Each is a process or thread: 100000 of them fork until the machine is unusable."""
    if value is None:
        return None
    import os

    cores = os.cpu_count() or 1
    flag = "--" + (param.name or "workers").replace("_", "-")
    if not 1 <= value <= cores:
        raise click.ClickException(
            f"{flag} {value}: must be between 1 and {cores} (this machine's CPU count)"
        )
    return value


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ncore")
def main() -> None:
    """N-CORE data preparation: manifests, perturbed views, inspection and validation."""


@main.command("manifest")
@click.option(
    "--dataset",
    type=click.Choice(DATASETS),
    default="synthetic",
    show_default=True,
    help="Corpus to import.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Corpus folder (default data/<Name>; synthetic: generated there when absent).",
)
@click.option("--name", default=None, help="Manifest and cache name (default: the dataset).")
@click.option(
    "--manifest-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("manifests"),
    show_default=True,
    help="Where <name>.json is written.",
)
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the splits.")
@click.option(
    "--protocol",
    type=click.Choice(PROTOCOLS),
    default="default",
    show_default=True,
    help="default: train/val/test, val carved from train; paper: 80/20 train/test and "
    "selection on test; speaker-held-out: test speakers never in training.",
)
@click.option("--test-fraction", type=float, default=0.2, show_default=True)
@click.option("--val-fraction", type=float, default=0.1, show_default=True)
@click.option(
    "--test-speakers", default=None, help="speaker-held-out: comma-separated test speakers."
)
@click.option(
    "--jobs",
    type=int,
    default=None,
    callback=_within_cpus,
    help="Decoding threads (default: up to 4; output order fixed).",
)
@click.option(
    "--csv",
    "csv_file",
    cls=CorpusOption,
    datasets=("csv",),
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="label file (default DIR/labels.csv).",
)
@click.option(
    "--path-column",
    cls=CorpusOption,
    datasets=("csv",),
    default=None,
    help="column of paths [path].",
)
@click.option(
    "--emotion-column",
    cls=CorpusOption,
    datasets=("csv",),
    default=None,
    help="column of emotions [emotion].",
)
@click.option(
    "--speaker-column",
    cls=CorpusOption,
    datasets=("csv",),
    default=None,
    help="column of speakers [speaker].",
)
@click.option(
    "--subset",
    cls=CorpusOption,
    datasets=("vivae",),
    default=None,
    help="full_set (default) or core_set.",
)
@click.option(
    "--keep",
    cls=CorpusOption,
    datasets=RECANVO,
    default=None,
    help="labels to keep, comma-separated, or 'all' [paper's 7].",
)
@click.option(
    "--merge",
    cls=CorpusOption,
    datasets=RECANVO,
    default=None,
    help="FROM=TO,... [laugh=laughter].",
)
@click.option(
    "--min-count",
    cls=CorpusOption,
    datasets=RECANVO,
    type=int,
    default=None,
    help="drop labels with fewer clips.",
)
@click.option(
    "--per-class",
    cls=CorpusOption,
    datasets=("recanvo-balanced",),
    type=int,
    default=None,
    help="clips per label [100].",
)
@click.option(
    "--balance-seed",
    cls=CorpusOption,
    datasets=("recanvo-balanced",),
    type=int,
    default=None,
    help="seed of the draw [0].",
)
@click.option(
    "--clips",
    cls=CorpusOption,
    datasets=("synthetic",),
    type=int,
    default=None,
    help="number of clips [240].",
)
@click.option(
    "--speakers",
    cls=CorpusOption,
    datasets=("synthetic",),
    type=int,
    default=None,
    help="speakers [6].",
)
@click.option(
    "--emotions",
    cls=CorpusOption,
    datasets=("synthetic",),
    type=int,
    default=None,
    help="emotions, 2-6 [4].",
)
@click.option(
    "--entanglement",
    cls=CorpusOption,
    datasets=("synthetic",),
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="speaker/emotion entanglement, 0 independent .. 1 one speaker per emotion [0.5].",
)
@click.option(
    "--synthetic-seed",
    cls=CorpusOption,
    datasets=("synthetic",),
    type=int,
    default=None,
    help="generator seed [0].",
)
@click.option(
    "--preset",
    cls=CorpusOption,
    datasets=("synthetic",),
    type=click.Choice(["premise", "hard-case"]),
    default=None,
    help="where the factors live. premise: speaker only in cues the speaker perturbation "
    "randomises, emotion only in cues it keeps; hard-case: emotion also on F0 level, "
    "formants, tilt and level [premise].",
)
@click.pass_context
def manifest_command(
    ctx: click.Context,
    dataset: str,
    data_dir: Path | None,
    name: str | None,
    manifest_dir: Path,
    seed: int,
    protocol: str,
    test_fraction: float,
    val_fraction: float,
    test_speakers: str | None,
    jobs: int | None,
    csv_file: Path | None,
    **options: object,
) -> None:
    """Import a corpus and write manifests/<name>.json (clips, labels, splits, failures)."""
    check_corpus_options(ctx, dataset)
    from pipeline.datasets import build_manifest, save_manifest_keeping_views
    from pipeline.manifest import os_reason

    options["csv"] = csv_file
    name = name or dataset
    path = manifest_dir / f"{name}.json"
    speakers = [s.strip() for s in test_speakers.split(",") if s.strip()] if test_speakers else None
    try:
        manifest, summary = build_manifest(
            dataset,
            data_dir,
            name,
            seed,
            protocol,
            manifest_path=path,
            jobs=jobs,
            test_fraction=test_fraction,
            val_fraction=val_fraction,
            test_speakers=speakers,
            **options,
        )
        note = save_manifest_keeping_views(manifest, path)
    except OSError as e:
        raise click.ClickException(f"{e.filename or path}: {os_reason(e)}") from None
    for line in summary.lines():
        echo(line)
    if note:
        echo(f"  {note}")
    echo(f"wrote {path}")


# ---------------------------------------------------------------- perturb / inspect / validate


def _manifest_for(dataset: str, data_dir: Path | None, manifest_dir: Path, progress: bool) -> Path:
    """``manifest_dir/<dataset>.json``, built with the manifest command's defaults if absent."""
    path = manifest_dir / f"{dataset}.json"
    if path.exists():
        return path
    if dataset not in DATASETS:
        raise click.ClickException(
            f"no manifest {path}; run `ncore-prep manifest --name {dataset} ...` first"
        )
    from pipeline.datasets import build_manifest, save_manifest_keeping_views

    if progress:
        echo(f"no manifest {path}: importing {dataset} first (ncore-prep manifest)", err=True)
    manifest, summary = build_manifest(dataset, data_dir, dataset, manifest_path=path)
    save_manifest_keeping_views(manifest, path)
    for line in summary.lines():
        echo(line)
    return path


@main.command("perturb")
@click.option(
    "--dataset",
    default="synthetic",
    show_default=True,
    help="Manifest name: uses MANIFEST_DIR/<name>.json, importing the corpus of that name "
    "first when it has no manifest yet.",
)
@click.option("--views", type=click.IntRange(min=1), default=5, show_default=True, help="N.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Corpus folder, used only when the manifest must be built first.",
)
@click.option(
    "--kind",
    type=click.Choice(["speaker", "emotion", "both"]),
    default="both",
    show_default=True,
    help="both: one WORLD analysis per clip feeds a speaker and an emotion view set.",
)
@click.option("--seed", type=click.IntRange(min=0), default=42, show_default=True)
@click.option(
    "--shard-size",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Clips per shard (fixed before submission: the bytes never depend on --workers).",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    callback=_within_cpus,
    help="Local worker processes (default: one per core). Ignored with --scheduler.",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="An existing Dask scheduler, e.g. tcp://host:8786 (default: local workers).",
)
@click.option(
    "--executor",
    type=click.Choice(["auto", "processes", "dask"]),
    default="auto",
    show_default=True,
    help="What runs the shards locally: a process pool (starts in about a second) or a Dask "
    "cluster (restarts lost workers). auto: Dask with --scheduler or above 1 h of audio. "
    "The bytes written do not depend on it.",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("cache"),
    show_default=True,
)
@click.option(
    "--manifest-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("manifests"),
    show_default=True,
)
@click.option(
    "--f0",
    "f0_method",
    type=click.Choice(["harvest", "dio", "praat"]),
    default="harvest",
    show_default=True,
    help="F0 estimator of the WORLD analysis: harvest, dio (DIO + StoneMask, faster) or praat "
    "(Praat's tracker, about 5x faster than harvest; needs the optional GPL-3.0 package "
    "praat-parselmouth, see docs/perturbations.md).",
)
@click.option(
    "--f0-floor",
    "f0_floor_hz",
    type=click.FloatRange(min=0.0, min_open=True),
    default=71.0,  # pipeline.manifest.DEFAULT_F0_FLOOR_HZ
    show_default=True,
    help="Lowest F0 searched by the WORLD analysis, Hz (part of the view-set key); at most "
    "761.9 at 16 kHz, above which WORLD's CheapTrick FFT is too short.",
)
@click.option(
    "--f0-ceil",
    "f0_ceil_hz",
    type=click.FloatRange(min=0.0, min_open=True),
    default=2000.0,  # pipeline.manifest.DEFAULT_F0_CEIL_HZ (not imported: --help stays light)
    show_default=True,
    help="Highest F0 searched, Hz (part of the view-set key). 2000 follows screams and cries "
    "(they reach 1.5-2 kHz); view sets made before this default used 800, WORLD's, which "
    "--f0-ceil 800 finds again (docs/perturbations.md).",
)
@click.option(
    "--speaker-param",
    multiple=True,
    metavar="NAME=VALUE",
    help="Speaker perturbation parameter, repeatable (e.g. formant_ratio_max=1.4).",
)
@click.option(
    "--emotion-param",
    multiple=True,
    metavar="NAME=VALUE",
    help="Emotion perturbation parameter, repeatable (e.g. num_bands=40).",
)
@click.option("--progress/--no-progress", default=True, show_default=True)
def perturb_command(
    dataset: str,
    views: int,
    data_dir: Path | None,
    kind: str,
    seed: int,
    shard_size: int,
    workers: int | None,
    scheduler: str | None,
    executor: str,
    cache_dir: Path,
    manifest_dir: Path,
    f0_method: str,
    f0_floor_hz: float,
    f0_ceil_hz: float,
    speaker_param: tuple[str, ...],
    emotion_param: tuple[str, ...],
    progress: bool,
) -> None:
    """Precompute N perturbed views per clip into Zarr shards listed in the manifest.

    Re-running the same command resumes: only shards the manifest does not list are
    computed. Any changed setting makes a new view set beside the old ones.
    """
    from pipeline.manifest import os_reason
    from pipeline.prep import (
        PerturbInterrupted,
        PerturbSettings,
        choose_executor,
        format_summary,
        parse_params,
        run_perturb,
    )

    if scheduler and executor == "processes":
        raise click.ClickException("--scheduler needs --executor dask (or auto)")
    try:
        settings = PerturbSettings(
            kinds=("speaker", "emotion") if kind == "both" else (kind,),
            views=views,
            seed=seed,
            shard_size=shard_size,
            f0_method=f0_method,
            f0_floor_hz=f0_floor_hz,
            f0_ceil_hz=f0_ceil_hz,
            speaker=parse_params("speaker", speaker_param),
            emotion=parse_params("emotion", emotion_param),
        )
        path = _manifest_for(dataset, data_dir, manifest_dir, progress)
        summary = run_perturb(
            path,
            settings,
            lambda: choose_executor(path, executor, workers, scheduler),
            cache_dir=cache_dir,
            progress=progress,
        )
    except PerturbInterrupted as e:  # Ctrl-C: one line, the conventional status 128 + SIGINT
        echo(f"Error: {e}", err=True)
        raise SystemExit(130) from None
    except OSError as e:  # a full disk or a read-only cache folder while writing shards
        raise click.ClickException(f"{e.filename or cache_dir}: {os_reason(e)}") from None
    echo(format_summary(summary))
    if summary.errors:
        raise click.ClickException(
            f"{len(summary.errors)} shard(s) did not finish; re-run the same command to retry them"
        )
    if summary.every_clip_failed:
        raise click.ClickException(
            f"every one of the {summary.clips_run} clip(s) perturbed by this run failed "
            f"(first: {summary.failures[0].id}: {summary.failures[0].reason})"
        )


def _page_options(hidden: bool = False):
    """The options of the listening page: ``ncore-prep listen``'s, and (hidden) those of its
    alias ``inspect --html``."""
    options = (
        click.option(
            "--view-set",
            "view_sets",
            multiple=True,
            hidden=hidden,
            help="A view set by kind, key or folder name (repeatable; default all).",
        ),
        click.option(
            "--per-label",
            type=int,
            default=10,
            show_default=True,
            hidden=hidden,
            help="Clips per emotion label.",
        ),
        click.option(
            "--sample-seed",
            type=int,
            default=0,
            show_default=True,
            hidden=hidden,
            help="Seed of the clip sample.",
        ),
        click.option(
            "--ids",
            default=None,
            hidden=hidden,
            help="These clip ids (comma-separated) instead of a sample.",
        ),
        click.option(
            "--audio-format",
            type=click.Choice(["wav", "flac"]),
            default="wav",
            show_default=True,
            hidden=hidden,
            help="Lossless format of the audio files.",
        ),
        click.option(
            "--workers",
            type=int,
            default=None,
            callback=_within_cpus,
            hidden=hidden,
            help="Processes drawing the thumbnails (default one per core).",
        ),
    )

    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def _write_page(manifest: Path, out_dir: Path, listen: dict[str, Any]) -> None:
    """Build the listening page (``pipeline.listen.build_page``) and say what it wrote."""
    from pipeline.listen import ListenOptions, build_page

    ids = tuple(i.strip() for i in (listen.pop("ids") or "").split(",") if i.strip())
    listen["view_sets"] = tuple(listen["view_sets"])
    options = ListenOptions(clip_ids=ids, seed=listen.pop("sample_seed"), **listen)
    echo(build_page(manifest, out_dir, options).summary())


@main.command("listen")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("out_dir", metavar="DIR", type=click.Path(path_type=Path))
@_page_options()
def listen_command(manifest: Path, out_dir: Path, **listen: Any) -> None:
    """Write an offline listening page (index.html, audio, images) of sampled clips across
    view sets into DIR: a new or empty folder, or one holding an earlier page."""
    from pipeline.manifest import os_reason

    try:
        _write_page(manifest, out_dir, listen)
    except OSError as e:  # a full disk, a read-only folder
        raise click.ClickException(f"{e.filename or out_dir}: {os_reason(e)}") from None


@main.command("inspect")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--clip", "clip_id", default=None, help="Export every view of this clip.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the clip's WAVs and PNG (default inspect/<clip>).",
)
@click.option(
    "--html",
    "html_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="The listening page: the same as `ncore-prep listen MANIFEST DIR` (its options too).",
)
@_page_options(hidden=True)
def inspect_command(
    manifest: Path, clip_id: str | None, out: Path | None, html_dir: Path | None, **listen: Any
) -> None:
    """Summarise a manifest and its view sets, or export the views of one clip (--clip).
    --html DIR writes the listening page (the same as `ncore-prep listen`)."""
    from pipeline.inspection import InspectError, describe, export_clip
    from pipeline.manifest import name_problem, os_reason

    if clip_id is not None and name_problem(clip_id):
        raise click.ClickException(f"--clip {clip_id[:80]!r}: a clip id {name_problem(clip_id)}")
    try:
        if html_dir is not None:
            if clip_id is not None or out is not None:
                raise InspectError(
                    "--clip and --out export one clip; --html writes a page: not both"
                )
            _write_page(manifest, html_dir, listen)
            return
        if clip_id is None:
            echo(describe(manifest))
            return
        export = export_clip(manifest, clip_id, out or Path("inspect") / clip_id)
    except OSError as e:  # a full disk, a read-only or missing --out folder
        raise click.ClickException(f"{e.filename or html_dir or out}: {os_reason(e)}") from None
    for line in export.lines():
        echo(line)


@main.command("selectivity")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--view-set",
    "keys",
    multiple=True,
    metavar="KEY",
    help="Measure this view set only (repeatable; default: every complete view set).",
)
@click.option(
    "--max-clips",
    type=click.IntRange(min=10),
    default=300,
    show_default=True,
    help="Clips per view set; more are subsampled with --seed.",
)
@click.option(
    "--views",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Views per clip to analyse (the first ones).",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--jobs",
    type=int,
    default=None,
    callback=_within_cpus,
    help="Worker processes for the WORLD feature analysis (default: one per core).",
)
def selectivity_command(
    manifest: Path, keys: tuple[str, ...], max_clips: int, views: int, seed: int, jobs: int | None
) -> None:
    """Does each perturbation remove its factor and keep the other? Acoustic probes on the
    originals and views of every view set, written beside it as selectivity.json."""
    import os

    from pipeline.selectivity import (
        SelectivitySettings,
        format_table,
        run_selectivity,
    )
    from pipeline.workers import worker_pool

    # The feature analysis' imports, loaded once by the fork server (pipeline/workers.py).
    preload = ("pipeline.selectivity.measure",)
    workers = jobs or os.cpu_count() or 1
    settings = SelectivitySettings(max_clips=max_clips, views=views, seed=seed, keys=keys)
    results = run_selectivity(
        manifest,
        settings,
        # Workers that end with this command, SIGKILL included (pipeline/workers.py).
        (lambda: worker_pool(workers, preload=preload)) if workers > 1 else None,
        progress=lambda line: echo(line, err=True),
    )
    for view_set, result, path in results:
        echo(f"view set {view_set.kind} N={view_set.views} key={view_set.key}")
        for line in format_table(result, indent="  "):
            echo(line)
        echo(f"  wrote {path}")


@main.command("validate")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--repair",
    is_flag=True,
    help="Recompute every shard that fails, from the source audio and the recorded settings "
    "(same bytes as the original).",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    callback=_within_cpus,
    help="--repair: local worker processes (default: one per core).",
)
@click.option("--scheduler", default=None, metavar="ADDRESS", help="--repair: a Dask scheduler.")
def validate_command(
    manifest: Path, repair: bool, workers: int | None, scheduler: str | None
) -> None:
    """Re-read every shard: checksums, offsets, lengths, finite audio, manifest invariants.

    Exits with status 1 and names the shard and clip of every problem found. With
    --repair, damaged shards are recomputed first and the result is validated again.
    """
    from pipeline.qa import format_report, validate

    if repair:
        from pipeline.prep import PerturbInterrupted, choose_executor
        from pipeline.qa import repair as repair_shards

        try:
            outcome = repair_shards(
                manifest, lambda: choose_executor(manifest, "auto", workers, scheduler)
            )
        except PerturbInterrupted as e:  # Ctrl-C: damaged shards stay listed for next time
            echo(f"Error: {e}", err=True)
            raise SystemExit(130) from None
        for line in outcome.lines():
            echo(line)
        report = outcome.report
        echo(format_report(report))
        if not outcome.ok:  # the one line that says what the repair could not do
            raise click.ClickException(outcome.failure_line())
    else:
        report = validate(manifest)
        echo(format_report(report))
    if not report.ok:
        raise click.ClickException(f"{len(report.errors)} problem(s) found in {manifest}")


@main.command("migrate")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
def migrate_command(manifest: Path) -> None:
    """Rewrite a manifest written before view sets recorded their F0 range (before
    2026-11-30) as a current one, once; the other commands refuse the old layout."""
    from pipeline.manifest import LEGACY_F0_CEIL_HZ, LEGACY_F0_FLOOR_HZ, migrate, os_reason

    try:
        keys = migrate(manifest)
    except OSError as e:  # a read-only folder, a full disk
        raise click.ClickException(f"{e.filename or manifest}: {os_reason(e)}") from None
    if not keys:
        echo(f"{manifest}: already current")
        return
    echo(
        f"rewrote {manifest}: view set(s) {', '.join(keys)} now record the F0 range they were "
        f"made with ({LEGACY_F0_FLOOR_HZ:g}-{LEGACY_F0_CEIL_HZ:g} Hz)"
    )


if __name__ == "__main__":
    main()
