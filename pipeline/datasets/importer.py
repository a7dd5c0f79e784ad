"""The one function that turns a corpus into a manifest.

:func:`build_manifest` does the shared work for every corpus: it refuses paths that leave
the data folder, decodes every candidate (a thread pool, results kept in listing order),
turns each unusable file into a :class:`~pipeline.manifest.Failure`, builds the label
vocabularies, assigns the seeded splits and returns the :class:`~pipeline.manifest.Manifest`
with an :class:`~pipeline.datasets.base.ImportSummary` whose invariant is
``found == imported + failed``.
"""

from __future__ import annotations

import functools
import logging
import os
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.audio import AudioError, SourceAudio, read_source
from pipeline.datasets.base import (
    IMPORT_STAGE,
    Candidate,
    DatasetError,
    ImportSummary,
    Listing,
    failure_category,
    safe_id,
)
from pipeline.datasets.registry import REGISTRY, default_data_dir
from pipeline.manifest import (
    SPLITS,
    Clip,
    Failure,
    Manifest,
    relative_path_problem,
    relative_to_manifest,
)
from pipeline.splits import SplitError, SplitItem, assign_splits

log = logging.getLogger(__name__)


def _is_text(value: str) -> bool:
    """Whether ``value`` is real text: a file name whose bytes are not UTF-8 arrives from the
    operating system with lone surrogates (``surrogateescape``), which JSON cannot store."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(value: str) -> str:
    """``value`` with its undecodable bytes written as ``\\xNN`` (for records and messages)."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _text_names_only(listing: Listing) -> Listing:
    """A clip whose file name (or any field) is not UTF-8 text becomes a recorded failure of
    that clip, its path written with the bytes escaped; the rest of the corpus imports."""
    candidates, rejected = [], []
    for c in listing.candidates:
        fields = (c.id, c.path, c.emotion, c.speaker, *c.extra, *c.extra.values())
        if all(_is_text(v) for v in fields):
            candidates.append(c)
            continue
        reason = f"file name is not valid UTF-8: {_shown(c.path)}"
        rejected.append(Failure(safe_id(_shown(c.id)), IMPORT_STAGE, reason, _shown(c.path)))
    for f in listing.rejected:
        if all(_is_text(v) for v in (f.id, f.reason, f.path)):
            rejected.append(f)
        else:
            rejected.append(
                Failure(safe_id(_shown(f.id)), f.stage, _shown(f.reason), _shown(f.path))
            )
    if rejected == listing.rejected:
        return listing
    return replace(listing, candidates=candidates, rejected=rejected)


def _inside(data_dir: Path, rel: str) -> Path | str:
    """The absolute path of ``rel`` when it stays inside ``data_dir``, else a failure reason.

    The lexical rule is the one a manifest is checked with when loaded
    (:func:`~pipeline.manifest.relative_path_problem`); here the resolved target (symlinks
    followed) must stay inside too.
    """
    why = relative_path_problem(rel)
    if why in ("leaves its folder", "is absolute"):
        return f"path escapes the data folder: {rel}"
    if why:
        return f"bad path: {rel!r} {why}"
    try:
        root = data_dir.resolve()
        target = (root / rel).resolve()
    except RuntimeError:  # Python 3.11 raises this for a symlink loop
        return f"symlink loop: {rel} never reaches a file"
    except (OSError, ValueError) as e:
        return f"bad path: {rel!r} ({e})"
    if target != root and root in target.parents:
        return target
    return f"path escapes the data folder: {rel}"


def _decode(path: Path) -> SourceAudio | str:
    """Decode one clip; an unusable file gives its failure reason instead of raising."""
    try:
        return read_source(path)
    except AudioError as e:
        return e.reason
    except Exception as e:  # a decoder bug on one odd file must not stop the import
        return f"unreadable audio: {type(e).__name__}: {e}"


def decode_candidates(
    data_dir: Path, candidates: Sequence[Candidate], jobs: int | None = None
) -> tuple[list[tuple[Candidate, SourceAudio]], list[Failure]]:
    """Decode every candidate; results keep the candidates' order whatever ``jobs`` is."""
    decoded: list[tuple[Candidate, SourceAudio]] = []
    failures: list[Failure] = []
    paths: list[Path] = []
    todo: list[Candidate] = []
    by_target: dict[Path, list[Candidate]] = {}
    for c in candidates:
        target = _inside(data_dir, c.path)
        if isinstance(target, str):
            failures.append(Failure(c.id, IMPORT_STAGE, target, c.path))
            continue
        by_target.setdefault(target, []).append(c)
        paths.append(target)
        todo.append(c)
    # One file listed twice (under two spellings or links) would put the same audio in two
    # clips, possibly in train and test with different labels: keep the first listing when
    # the labels agree, refuse every listing when they do not.
    dropped = _duplicates(by_target.values(), failures, "is the same file as")
    if dropped:
        kept = [(p, c) for p, c in zip(paths, todo, strict=True) if c.id not in dropped]
        paths, todo = [p for p, _ in kept], [c for _, c in kept]
    workers = jobs or min(4, os.cpu_count() or 1)
    if workers > 1 and len(todo) > 1:
        # soundfile and scipy release the GIL for the heavy parts; map keeps input order.
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            results = list(pool.map(_decode, paths, chunksize=16))
        except BaseException:  # Ctrl-C: drop the queued files instead of decoding them all
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    else:
        results = [_decode(p) for p in paths]
    for c, result in zip(todo, results, strict=True):
        if isinstance(result, str):
            failures.append(Failure(c.id, IMPORT_STAGE, result, c.path))
        else:
            decoded.append((c, result))
    # The same rule for the same bytes under another name (a copy, a hard link): the SHA-256
    # of each file's bytes, recorded in the manifest anyway, finds them.
    by_content: dict[str, list[Candidate]] = {}
    for c, src in decoded:
        by_content.setdefault(src.sha256, []).append(c)
    dropped = _duplicates(by_content.values(), failures, "has the same bytes (SHA-256) as")
    if dropped:
        decoded = [(c, src) for c, src in decoded if c.id not in dropped]
    return decoded, failures


def _duplicates(
    groups: Iterable[list[Candidate]], failures: list[Failure], relation: str
) -> set[str]:
    """Apply the duplicate rule to groups of listings of one audio file; returns the ids
    dropped and appends their failures (in the listings' order).

    All listings of one file with the same labels: the first is kept, the others fail.
    Labels that disagree: every listing fails, since neither label can be trusted and the
    same audio must not sit in train and test.
    """
    dropped: set[str] = set()
    for listed in groups:
        if len(listed) < 2:
            continue
        first = listed[0]
        agree = all((c.emotion, c.speaker) == (first.emotion, first.speaker) for c in listed)
        for c in listed if not agree else listed[1:]:
            dropped.add(c.id)
            why = (
                f"duplicate: {c.path} {relation} clip {first.id}"
                if agree
                else f"duplicate: {c.path} is one of {len(listed)} listings of the same audio "
                "with different labels"
            )
            failures.append(Failure(c.id, IMPORT_STAGE, why, c.path))
    return dropped


def _unique_ids(listing: Listing) -> tuple[list[Candidate], list[Failure]]:
    """Keep the first candidate of each id; later ones become failures with a suffixed id."""
    seen: set[str] = {f.id for f in listing.rejected}
    kept, dupes = [], []
    for c in listing.candidates:
        if c.id in seen:
            n = 2
            while f"{c.id}~{n}" in seen:
                n += 1
            dup_id = f"{c.id}~{n}"
            seen.add(dup_id)
            dupes.append(
                Failure(dup_id, IMPORT_STAGE, f"duplicate clip: id {c.id!r} listed again", c.path)
            )
            continue
        seen.add(c.id)
        kept.append(c)
    return kept, dupes


# Characters refused in a label: controls (C0, DEL, C1: ESC starts the terminal sequences
# that clear a screen or retitle a window), format characters (bidi overrides that
# reorder what is printed, zero-width characters that make two labels look alike),
# surrogates and the Unicode line and paragraph separators.
_REFUSED_IN_LABELS = ("Cc", "Cf", "Cs", "Zl", "Zp")


def label_problem(text: str) -> str | None:
    """Why ``text`` (NFC) cannot be a label, or None: it holds a refused character."""
    for ch in text:
        if unicodedata.category(ch) in _REFUSED_IN_LABELS:
            return f"holds the control or format character U+{ord(ch):04X}"
    return None


def _clean_labels(candidates: Sequence[Candidate]) -> tuple[list[Candidate], list[Failure]]:
    """Labels in Unicode NFC (``colère`` typed precomposed or decomposed is one class), and
    a failure for each candidate whose label holds a refused character (label_problem)."""
    kept, failures = [], []
    for c in candidates:
        emotion = unicodedata.normalize("NFC", c.emotion)
        speaker = unicodedata.normalize("NFC", c.speaker)
        extra = {
            unicodedata.normalize("NFC", k): unicodedata.normalize("NFC", v)
            for k, v in c.extra.items()
        }
        fields = [("emotion", emotion), ("speaker", speaker), *extra.items()]
        bad = next(((n, why) for n, v in fields if (why := label_problem(v))), None)
        bad = bad or next(((n, why) for n, _ in fields if (why := label_problem(n))), None)
        if bad is not None:
            name, why = bad
            failures.append(Failure(c.id, IMPORT_STAGE, f"bad label: {name!r} {why}", c.path))
            continue
        kept.append(Candidate(c.id, c.path, emotion, speaker, extra))
    return kept, failures


def _vocabulary(present: set[str], order: Sequence[str]) -> tuple[str, ...]:
    known = [label for label in order if label in present]
    return (*known, *sorted(present - set(known)))


def build_manifest(
    dataset: str,
    data_dir: str | os.PathLike[str] | None,
    name: str | None = None,
    seed: int = 42,
    protocol: str = "default",
    *,
    manifest_path: str | os.PathLike[str] | None = None,
    jobs: int | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    test_speakers: Sequence[str] | None = None,
    **options: Any,
) -> tuple[Manifest, ImportSummary]:
    """Import corpus ``dataset`` from ``data_dir`` (default ``data/<Folder>``) into a manifest.

    ``name`` names the manifest and its cache folder (default: the dataset name).
    ``manifest_path``, when given, makes the stored ``data_dir`` relative to the manifest's
    folder. ``options`` are the corpus's own options (see ``REGISTRY[dataset].options``).
    Raises :class:`DatasetError` for user mistakes.
    """
    spec = REGISTRY.get(dataset)
    if spec is None:
        raise DatasetError(f"unknown dataset {dataset!r} (one of {', '.join(REGISTRY)})")
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        flag = "--" + unknown[0].replace("_", "-")
        raise DatasetError(f"option {flag} does not apply to dataset {dataset!r}")
    folder = Path(data_dir) if data_dir is not None else default_data_dir(spec)
    if spec.prepare is not None:
        options = spec.prepare(folder, seed, options)
    if not folder.is_dir():
        how = "pass --data-dir DIR" if data_dir is None else "check --data-dir"
        raise DatasetError(f"{spec.title} not found at {folder}/: {spec.obtain}; {how}")
    name = name or dataset
    if safe_id(name) != name:
        raise DatasetError(f"--name {name!r}: use letters, digits, '.', '_' or '-' only")

    listing = _text_names_only(spec.list_clips(folder, seed, **options))
    candidates, duplicates = _unique_ids(listing)
    candidates, label_failures = _clean_labels(candidates)
    decoded, decode_failures = decode_candidates(folder, candidates, jobs)
    failures = [*listing.rejected, *duplicates, *label_failures, *decode_failures]
    found = len(listing.candidates) + len(listing.rejected)
    if not decoded:
        reasons = Counter(failure_category(f.reason) for f in failures).most_common(1)
        why = f" (most common failure: {reasons[0][0]})" if reasons else ""
        raise DatasetError(f"no clip of {folder}/ could be imported{why}")

    items = [SplitItem(c.id, c.emotion, c.speaker) for c, _ in decoded]
    try:
        assignment, split_info = assign_splits(
            items, seed, protocol, test_fraction, val_fraction, test_speakers
        )
    except SplitError as e:
        raise DatasetError(str(e)) from None
    clips = tuple(
        Clip(
            id=c.id,
            path=c.path,
            emotion=c.emotion,
            speaker=c.speaker,
            split=assignment[c.id],
            num_samples=int(src.audio.shape[0]),
            source_sample_rate=src.sample_rate,
            source_channels=src.channels,
            source_bytes=src.num_bytes,
            source_sha256=src.sha256,
            extra=dict(c.extra),
        )
        for c, src in decoded
    )
    nfc = functools.partial(unicodedata.normalize, "NFC")
    labels = {
        "emotion": _vocabulary({c.emotion for c in clips}, [nfc(e) for e in listing.emotions]),
        "speaker": _vocabulary({c.speaker for c in clips}, [nfc(s) for s in listing.speakers]),
    }
    stored_dir = (
        relative_to_manifest(folder, manifest_path)
        if manifest_path is not None
        else folder.resolve().as_posix()
    )
    manifest = Manifest(
        dataset=name,
        source=listing.source,
        data_dir=stored_dir,
        labels=labels,
        clips=clips,
        split=split_info,
        failures=tuple(failures),
    )
    summary = ImportSummary(
        dataset=dataset,
        name=name,
        found=found,
        imported=len(clips),
        failed=len(failures),
        failed_by_reason=dict(Counter(failure_category(f.reason) for f in failures)),
        splits={s: sum(1 for c in clips if c.split == s) for s in SPLITS},
        protocol=protocol,
        seed=seed,
        notes=tuple(listing.notes),
    )
    assert summary.found == summary.imported + summary.failed, "import lost clips"
    return manifest, summary


def save_manifest_keeping_views(manifest: Manifest, path: str | os.PathLike[str]) -> str | None:
    """Write ``manifest`` at ``path`` atomically, keeping the view sets of the file it replaces
    when that file describes exactly the same clips (ids, paths, labels, splits, checksums).

    Holds the manifest's lock (:class:`~pipeline.manifest.ManifestFile`): refused while a
    ``perturb`` runs on it, so neither command loses the other's work.
    Returns a note for the summary when view sets were kept or dropped, else None.
    """
    from pipeline.manifest import ManifestFile

    path = Path(path)
    note = None
    with ManifestFile(path, "manifest") as file:
        old, why = file.load_or_none()
        if why is not None:
            note = f"replaced {path}, which could not be read as a manifest"
        if old is not None and old.view_sets:
            same = [c.to_dict() for c in old.clips] == [c.to_dict() for c in manifest.clips]
            if same and old.labels == manifest.labels:
                manifest = replace(manifest, view_sets=old.view_sets)
                note = f"kept {len(old.view_sets)} view set(s) of the existing manifest"
            else:
                note = f"dropped {len(old.view_sets)} view set(s): the clips changed"
        file.save(manifest)
    return note
