"""Validation of a manifest and every shard it lists (``ncore-prep validate``).

Every problem is reported with the item it is about first (the manifest, a view set, a
shard, a clip), so a user can go straight to it. Errors make the command exit non-zero;
warnings (an unfinished view set, a stray folder) do not, since they need no repair
beyond re-running ``ncore-prep perturb``.

What is checked:

- the manifest loads (schema version, fields, clips in = stored + failed for complete view
  sets: see :meth:`pipeline.manifest.Manifest.check`);
- each view set: its settings still hash to its key, its listed shards hold exactly the
  planned clips (the manifest's clips in order, ``shard_size`` at a time, minus the
  failures), no clip is both stored and failed;
- each shard: it opens, its attributes match the view set, 1 + N rows, offsets start at 0,
  increase strictly and end at the stored length, every clip has its manifest length and
  N drawn-parameter records, the samples decode, are finite, and match the manifest's
  checksum (a per-clip CRC names the damaged clips).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.manifest import (
    SAMPLE_RATE,
    Manifest,
    ManifestError,
    ShardEntry,
    ViewSet,
)
from pipeline.shards import ShardError, ShardReader, content_checksum, repair_command
from pipeline.viewset import (
    ShardAttributes,
    cache_folder_problem,
    key_matches,
    length_mismatches,
    shard_members,
)

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One finding; ``where`` names the item ("shard speaker-n5-ab12/shard-00003.zarr")."""

    where: str
    message: str
    severity: str = ERROR

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class ValidationReport:
    """Findings of :func:`validate` and what was read."""

    manifest_path: Path
    problems: list[Problem] = field(default_factory=list)
    view_sets: int = 0
    shards: int = 0
    clips: int = 0
    samples: int = 0
    damaged: dict[str, set[int]] = field(default_factory=dict)  # view-set key -> shard indices
    missing: dict[str, set[int]] = field(default_factory=dict)  # not listed (incomplete sets)
    retry: dict[str, set[int]] = field(default_factory=dict)  # transient failures, file back

    def to_repair(self) -> dict[str, set[int]]:
        """Shards ``validate --repair`` computes, by view-set key: damaged, unlisted, and
        those holding a transient failure whose file is readable now."""
        out: dict[str, set[int]] = {}
        for part in (self.damaged, self.missing, self.retry):
            for key, indices in part.items():
                if indices:
                    out.setdefault(key, set()).update(indices)
        return out

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        """One line: what was read and how many problems were found."""
        state = "OK" if self.ok else f"{len(self.errors)} error(s)"
        return (
            f"{self.manifest_path}: {state}, {len(self.warnings)} warning(s); read "
            f"{self.view_sets} view set(s), {self.shards} shard(s), {self.clips} stored clip(s), "
            f"{self.samples / SAMPLE_RATE:.1f} s of stored audio (each clip with its views)"
        )


def validate(
    manifest_path: str | os.PathLike[str],
    on_shard: Callable[[str], None] | None = None,
) -> ValidationReport:
    """Check the manifest at ``manifest_path`` and re-read every shard it lists.

    ``on_shard(name)`` is called before each shard is read (for a progress display).
    Never raises for a broken manifest or shard: everything found is in the report.
    """
    path = Path(manifest_path)
    report = ValidationReport(path)
    try:
        manifest = Manifest.load(path)
    except ManifestError as e:
        report.problems.append(Problem("manifest", str(e)))
        return report

    for vs in manifest.view_sets:
        report.view_sets += 1
        name = f"view set {vs.kind}-n{vs.views}-{vs.key}"
        misplaced = cache_folder_problem(manifest, path, vs, None)
        if misplaced:  # e.g. its folder, or its dataset folder, is a symlink out of the cache
            report.problems.append(Problem(name, misplaced.split(": ", 1)[1]))
        if not key_matches(manifest, vs):
            report.problems.append(
                Problem(
                    name,
                    "its recorded settings (or the manifest's clips) no longer hash to its "
                    "key; the manifest was edited or the clips changed since it was computed",
                )
            )
        if not vs.complete:
            from pipeline.prep import perturb_command

            listed = {s.index for s in vs.shards}
            report.missing[vs.key] = set(range(vs.num_shards)) - listed
            report.problems.append(
                Problem(
                    name,
                    f"incomplete: {len(vs.shards)} of {vs.num_shards} shards; finish it with "
                    f"`{repair_command(path)}` or `{perturb_command(path, vs)}`",
                    WARNING,
                )
            )
        _check_transient_failures(report, manifest, vs, path, name)
        failed = [f.id for f in vs.failures]
        if len(set(failed)) != len(failed):
            dup = next(i for i in failed if failed.count(i) > 1)
            report.problems.append(Problem(f"clip {dup}", f"listed twice in {name} failures"))
        folder = vs.folder_path(path)
        if vs.shards and not folder.is_dir():
            report.problems.append(Problem(name, f"folder {folder} does not exist"))
            continue
        members = shard_members(manifest, vs.shard_size)
        failed_set = set(failed)
        for entry in sorted(vs.shards, key=lambda s: s.index):
            if on_shard is not None:
                on_shard(f"{folder.name}/{entry.path}")
            planned = [c for c in members[entry.index] if c not in failed_set]
            _check_shard(report, manifest, vs, entry, folder / entry.path, planned, failed_set)
        if folder.is_dir():
            listed = {s.path for s in vs.shards}
            for stray in sorted(folder.iterdir()):
                if stray.name not in listed and stray.name.startswith("shard-"):
                    what = "unfinished" if ".tmp-" in stray.name else "not listed in the manifest"
                    report.problems.append(
                        Problem(
                            f"shard {folder.name}/{stray.name}",
                            f"{what}; re-running `ncore-prep perturb` replaces it",
                            WARNING,
                        )
                    )
    return report


def _check_transient_failures(
    report: ValidationReport, manifest: Manifest, vs: ViewSet, path: Path, name: str
) -> None:
    """A warning per shard holding a clip that failed because its file could not be read
    and whose file is readable now (it is computed again by perturb or --repair)."""
    from pipeline.prep import retry_indices

    try:
        indices = retry_indices(vs, manifest, path)
    except (OSError, ValueError):
        return
    if not indices:
        return
    report.retry[vs.key] = indices
    report.problems.append(
        Problem(
            name,
            f"{len(indices)} shard(s) hold clips that failed because their file could not be "
            f"read, and the files are readable now; `{repair_command(path)}` (or re-running "
            "`ncore-prep perturb`) computes them",
            WARNING,
        )
    )


def _check_shard(
    report: ValidationReport,
    manifest: Manifest,
    vs: ViewSet,
    entry: ShardEntry,
    path: Path,
    planned: list[str],
    failed: set[str],
) -> None:
    """Append the problems of one shard to ``report``."""
    where = f"shard {path.parent.name}/{path.name}"
    problems = report.problems

    def error(message: str, item: str = where) -> None:
        problems.append(Problem(item, message))
        report.damaged.setdefault(vs.key, set()).add(entry.index)

    if not path.is_dir():
        error("listed in the manifest but missing on disk; re-run `ncore-prep perturb`")
        return
    try:
        reader = ShardReader(path, verify=False)  # this module reports each problem itself
    except ShardError as e:
        error(str(e))
        return
    report.shards += 1
    attrs = reader.attrs
    expected = ShardAttributes.for_shard(vs, manifest.dataset, entry.index)
    for message in ShardAttributes.from_dict(attrs).mismatches(expected):
        error(message)
    if reader.num_views != 1 + vs.views:
        error(f"{reader.num_views} rows but the view set has 1 + {vs.views}")
    ids = reader.clip_ids
    if len(ids) != entry.clips:
        error(f"{len(ids)} clips stored but the manifest lists {entry.clips}")
    if ids != planned:
        extra = [c for c in ids if c not in planned]
        missing = [c for c in planned if c not in ids]
        if extra:
            note = "failed in this view set" if extra[0] in failed else "not planned here"
            error(f"stored in {where} but {note}", f"clip {extra[0]}")
        elif missing:
            error(f"planned in {where} but neither stored nor failed", f"clip {missing[0]}")
        else:
            error("clips stored out of the manifest's order")
    offsets = reader.offsets
    if offsets.size == 0 or offsets[0] != 0:
        error("offsets do not start at 0")
        return
    steps = np.diff(offsets)
    if np.any(steps <= 0):
        bad = int(np.argmax(steps <= 0))
        label = ids[bad] if bad < len(ids) else f"#{bad}"
        error(
            f"offsets do not increase (clip {bad} has {int(steps[bad])} samples)", f"clip {label}"
        )
        return
    if int(offsets[-1]) != reader.total_samples:
        error(f"offsets end at {int(offsets[-1])} but audio holds {reader.total_samples} samples")
        return
    if reader.total_samples != entry.samples:
        error(f"{reader.total_samples} samples stored but the manifest lists {entry.samples}")
    for cid, stored, expected in length_mismatches(ids, offsets, manifest.clip_by_id()):
        error(f"{stored} samples in {where} but {expected} in the manifest", f"clip {cid}")
    drawn = attrs.get("drawn")
    if not isinstance(drawn, list) or len(drawn) != len(ids):
        error("attribute 'drawn' does not hold one record per clip")
    else:
        for cid, records in zip(ids, drawn, strict=True):
            if not isinstance(records, list) or len(records) != vs.views:
                error(
                    f"drawn parameters for {len(records)} views, expected {vs.views}", f"clip {cid}"
                )
                break
    try:
        audio = reader.read_int16(0, len(ids)) if ids else np.zeros((reader.num_views, 0))
    except Exception as e:  # codecs raise many types on damaged bytes
        error(f"audio cannot be decoded ({type(e).__name__}: {e})")
        for i, cid in enumerate(ids):
            try:
                reader.read_int16(i, i + 1)
            except Exception:
                error(f"samples cannot be decoded from {where}", f"clip {cid}")
        return
    if audio.dtype.kind == "f" and not np.isfinite(audio).all():
        error("audio holds NaN or infinite samples")
    report.clips += len(ids)
    report.samples += int(audio.shape[1])
    if content_checksum(audio, offsets, ids) != entry.checksum:
        error("checksum differs from the manifest: the shard's contents changed")
        for cid in reader.clip_crc_mismatches(audio):
            error(f"samples in {where} differ from those written", f"clip {cid}")


def format_report(report: ValidationReport, limit: int = 50) -> str:
    """Problems (errors first, at most ``limit``), then the summary line."""
    ordered = report.errors + report.warnings
    lines = [f"{p.severity}: {p}" for p in ordered[:limit]]
    if len(ordered) > limit:
        lines.append(f"... and {len(ordered) - limit} more")
    lines.append(report.summary())
    return "\n".join(lines)


# --------------------------------------------------------------------------- repair


@dataclass(frozen=True)
class RepairOutcome:
    """What :func:`repair` did: shards recomputed, whether each got its old checksum back,
    and what could not be done (``errors``: a worker lost, a read-only or full disk)."""

    recomputed: dict[str, list[int]]  # view-set key -> shard indices attempted
    restored: int  # shards whose recomputed contents equal the checksum listed before
    changed: list[str]  # shards whose contents differ now (e.g. a source file changed)
    report: ValidationReport  # validation after the repair
    errors: tuple[str, ...] = ()
    unfinished: dict[str, list[int]] = field(default_factory=dict)  # still to repair, by key
    commands: tuple[str, ...] = ()  # `ncore-prep perturb` completing each unfinished set

    @property
    def ok(self) -> bool:
        """True when every shard that needed it was recomputed and recorded, with clips."""
        return not self.errors and not self.unfinished

    def failure_line(self) -> str:
        """One line: how many shards could not be recomputed and the first reason."""
        attempted = sum(len(v) for v in self.recomputed.values())
        left = sum(len(v) for v in self.unfinished.values())
        if not left and self.errors:  # recomputed, but the clips failed
            return f"repair incomplete: {self.errors[0]}"
        why = f"; first error: {self.errors[0]}" if self.errors else ""
        return (
            f"could not recompute {left or len(self.errors)} of {attempted} shard(s){why}; "
            "damaged shards stay listed (validate reports them), run the repair again once "
            "the cause is fixed"
        )

    def lines(self) -> list[str]:
        total = sum(len(v) for v in self.recomputed.values())
        if not total:
            return ["nothing to repair: every listed shard reads back as written"]
        done = total - sum(len(v) for v in self.unfinished.values())
        count = f"{done} shard(s)" if done == total else f"{done} of {total} shard(s)"
        out = [
            f"recomputed {count}; {self.restored} restored byte for byte "
            "(the checksum listed before the damage)"
        ]
        out.extend(f"  changed: {c}" for c in self.changed)
        out.extend(f"  error {e}" for e in self.errors)
        out.extend(f"  to finish: {c}" for c in self.commands)
        return out


def repair(
    manifest_path: str | os.PathLike[str],
    executor_factory: Callable[[], Any],
    progress: bool = False,
) -> RepairOutcome:
    """Recompute every shard that fails validation, every shard an incomplete view set
    lacks, and every shard holding a transient failure whose file is back, with the
    settings its view set records.

    The shards are computed again from the source audio by ``ncore-prep perturb``'s own
    stage (:func:`pipeline.prep.run_perturb`); since every draw is seeded from stable ids,
    a repaired shard holds the same samples as the original (its checksum is compared with
    the one listed before). A damaged shard stays listed until its replacement is recorded,
    so a failed or killed repair leaves it to be found and repaired again; what could not
    be done is in the outcome's ``errors`` and ``unfinished``. Raises ManifestError when the
    manifest itself cannot be used or a view set to repair has settings that no longer
    match its key, or that cannot be run (nothing can be recomputed then).
    """
    from pipeline.perturb import EmotionParams, PerturbationError, SpeakerParams
    from pipeline.prep import PerturbSettings, PrepError, perturb_command, run_perturb

    path = Path(manifest_path)
    before = validate(path)
    manifest_problems = [p for p in before.errors if p.where == "manifest"]
    if manifest_problems:
        raise ManifestError(str(manifest_problems[0]))
    todo = before.to_repair()
    if not todo:
        return RepairOutcome({}, 0, [], before)
    manifest = Manifest.load(path)
    listed = {(vs.key, s.index): s.checksum for vs in manifest.view_sets for s in vs.shards}
    errors: list[str] = []
    for vs in manifest.view_sets:
        if vs.key not in todo:
            continue
        name = f"view set {vs.kind}-n{vs.views}-{vs.key}"
        if not key_matches(manifest, vs):
            raise ManifestError(
                f"{name}: its settings no longer hash to its key, so its shards cannot be "
                "recomputed; run `ncore-prep perturb` to make a new view set"
            )
        params = dict(vs.params)
        try:
            settings = PerturbSettings(
                kinds=(vs.kind,),
                views=vs.views,
                seed=vs.seed,
                shard_size=vs.shard_size,
                f0_method=vs.f0_method,
                f0_floor_hz=vs.f0_floor_hz,
                f0_ceil_hz=vs.f0_ceil_hz,
                speaker=SpeakerParams.from_dict(params)
                if vs.kind == "speaker"
                else SpeakerParams(),
                emotion=EmotionParams.from_dict(params)
                if vs.kind == "emotion"
                else EmotionParams(),
            )
        except (PrepError, PerturbationError) as e:
            raise ManifestError(f"{name}: its recorded settings cannot be run: {e}") from None
        try:
            summary = run_perturb(
                path,
                settings,
                executor_factory,
                cache_dir=None,  # the cache root the manifest records
                progress=progress,
                redo=before.damaged.get(vs.key, ()),
            )
        except OSError as e:  # a read-only or full cache while planning
            errors.append(f"{name}: {type(e).__name__}: {e}")
            continue
        errors.extend(f"{name}: {e}" for e in summary.errors)
        if summary.every_clip_failed:  # shards recorded, but holding none of their clips
            first = summary.failures[0]
            errors.append(
                f"{name}: every one of the {summary.clips_run} clip(s) recomputed failed "
                f"(first: {first.id}: {first.reason})"
            )
    after_manifest = Manifest.load(path)
    after = validate(path)
    left = after.to_repair()
    unfinished = {k: sorted(v) for k, v in left.items() if k in todo}
    restored, changed = 0, []
    for vs in after_manifest.view_sets:
        for s in vs.shards:
            old = listed.get((vs.key, s.index))
            if (
                old is None
                or s.index not in before.damaged.get(vs.key, ())
                or s.index in left.get(vs.key, ())
            ):
                continue
            if old == s.checksum:
                restored += 1
            else:
                changed.append(f"{vs.kind}-n{vs.views}-{vs.key}/{s.path}")
    commands = tuple(
        perturb_command(path, vs)
        for vs in after_manifest.view_sets
        if vs.key in unfinished and not vs.complete
    )
    recomputed = {k: sorted(v) for k, v in todo.items()}
    return RepairOutcome(recomputed, restored, changed, after, tuple(errors), unfinished, commands)
