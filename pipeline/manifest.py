"""The manifest: one JSON file that describes a corpus, its splits, its cached views and failures.

Every record is a frozen dataclass with ``to_dict`` / ``from_dict``. ``from_dict`` checks
each field and raises :class:`ManifestError` whose message starts with the offending item,
so a hand-edited or truncated manifest is refused with a message that says what is wrong.

Paths: clip ``path`` is relative to the corpus folder ``data_dir``; ``data_dir`` and view-set
``folder`` are stored relative to the manifest file's folder when they lie below a common
root, so that a project folder can be moved as a whole.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import posixpath
import re
import stat
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from pipeline import fields
from pipeline.atomic import json_text, os_reason, write_bytes, write_json
from pipeline.errors import PipelineError
from pipeline.splits import SplitError, SplitSettings

SCHEMA_VERSION = 1
# What a manifest without a schema_version is told (every manifest ncore-prep wrote has one).
UNVERSIONED = "not a manifest written by ncore-prep; import the corpus with `ncore-prep manifest`"
SAMPLE_RATE = 16000  # Hz: every clip and view of the toolkit (the one definition)
SPLITS = ("train", "val", "test")
LABELS = ("emotion", "speaker")
VIEW_KINDS = ("speaker", "emotion")
# The F0 search range of the WORLD analysis when none is given (Hz): WORLD's floor and a
# ceiling of 2 kHz, as screams and cries reach 1.5-2 kHz (docs/perturbations.md, "F0 range
# for nonverbal vocalisations"). A view set records the range it was made with.
DEFAULT_F0_FLOOR_HZ = 71.0
DEFAULT_F0_CEIL_HZ = 2000.0
# WORLD's own defaults, the toolkit's range until the ceiling was raised: what a view set
# that records no range was made with, and the one range left out of view-set keys and
# shard attributes (pipeline/viewset.py), so that view sets made under it keep their keys.
LEGACY_F0_FLOOR_HZ = 71.0
LEGACY_F0_CEIL_HZ = 800.0
# F0 engines of the WORLD analysis (pipeline/perturb.py); "praat" needs an optional package.
F0_METHODS = ("harvest", "dio", "praat")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def other_label(label: str) -> str:
    """The other of the two labels (emotion <-> speaker): the discarded label y- of a task,
    and the perturbation kind that the paper pairs with it."""
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, got {label!r}")
    return LABELS[1 - LABELS.index(label)]


class ManifestError(PipelineError):
    """A manifest that cannot be used: unknown version, missing field or broken invariant."""


# ----- fields: pipeline/fields.py's parsers, raising ManifestError -------------------------
def _require(d: dict[str, Any], key: str, where: str) -> Any:
    return fields.require(d, key, where, ManifestError)


def _as_str(value: Any, key: str, where: str) -> str:
    text = fields.parse_str(value, key, where, error=ManifestError, nonempty=True)
    if "\x00" in text:
        raise ManifestError(f"{where}: field {key!r} holds a NUL character")
    return _utf8(text, key, where)


def _as_text(value: Any, key: str, where: str) -> str:
    """A string that may be empty (optional descriptive fields)."""
    return _utf8(fields.parse_str(value, key, where, error=ManifestError), key, where)


def _utf8(value: str, key: str, where: str) -> str:
    """JSON may spell a lone surrogate (``"\\udce9"``), which is no text: the manifest could
    not be written back, nor the name printed. Refused here, where it is read."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ManifestError(f"{where}: field {key!r} is not valid UTF-8 text") from None
    return value


def _as_int(value: Any, key: str, where: str, minimum: int = 0) -> int:
    return fields.parse_int(value, key, where, minimum, error=ManifestError)


def _as_hz(value: Any, key: str, where: str) -> float:
    if fields.json_kind(value) != "a number" or not 0 < value < 1e5:  # NaN is not in range
        raise ManifestError(f"{where}: field {key!r} must be a frequency in Hz, got {value!r}")
    return float(value)


def _as_object(value: Any, key: str, where: str) -> dict[str, Any]:
    return fields.parse_object(value, f"{where}: field {key!r}", ManifestError)


def _entries(value: Any, key: str, where: str) -> list[dict[str, Any]]:
    """A list whose every item is a JSON object (clips, view sets, shards, failures)."""
    return fields.parse_objects(value, key, where, ManifestError)


def _where(d: dict[str, Any], what: str, key: str) -> str:
    """``what 'id'`` for messages, without trusting the id's type."""
    name = d.get(key, "?")
    return f"{what} {(name if isinstance(name, str) else repr(name))[:80]!r}"


def _check_version(data: dict[str, Any], where: str) -> int:
    """The record's ``schema_version``: exactly the integer this toolkit reads (``true`` and
    ``1.0`` compare equal to 1 in Python, but are not a version)."""
    return fields.parse_version(data, where, SCHEMA_VERSION, UNVERSIONED, ManifestError)


def parse_split(value: Any, where: str) -> dict[str, Any]:
    """The manifest's ``split`` object, read through :class:`pipeline.splits.SplitSettings`
    (every field typed and in range); returned as the dict it was, for the writers."""
    try:
        return SplitSettings.from_dict(
            _as_object(value, "split", where), f"{where}: split"
        ).to_dict()
    except SplitError as e:
        raise ManifestError(str(e)) from None


# ----- names and paths: the same rules at import and at load -------------------------------
MAX_NAME_CHARS = 160  # a name plus the suffixes inspect adds stays below 255 bytes
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._~-]*")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be used as a file or folder name we create, or None if it can.

    A name (dataset, clip id, view-set key) is 1..160 characters among letters, digits,
    ``. _ - ~``, not starting with a dot: never a path, never ``.`` or ``..``.
    """
    if not isinstance(name, str) or not name:
        return "must be a non-empty string"
    if len(name) > MAX_NAME_CHARS:
        return f"is {len(name)} characters long (at most {MAX_NAME_CHARS})"
    if not _NAME.fullmatch(name):
        return "may hold only letters, digits, '.', '_', '-', '~' and may not start with '.'"
    return None


def relative_path_problem(rel: str) -> str | None:
    """Why ``rel`` is not a path inside a folder (lexically), or None if it is.

    Refused: empty, absolute, a NUL character, ``.``, and any path whose normal form
    climbs out with ``..``. (At import the resolved target is checked as well, so a
    symlink pointing out of the data folder is refused there.)
    """
    if not isinstance(rel, str) or not rel:
        return "is empty"
    if "\x00" in rel:
        return "holds a NUL character"
    p = PurePosixPath(rel)
    if p.is_absolute() or PureWindowsPath(rel).is_absolute():
        return "is absolute"
    norm = posixpath.normpath(rel)
    if norm == "." or norm == ".." or norm.startswith("../"):
        return "leaves its folder" if norm != "." else "names the folder itself"
    return None


def _as_name(value: Any, key: str, where: str) -> str:
    text = _as_str(value, key, where)
    why = name_problem(text)
    if why:
        raise ManifestError(f"{where}: {key} {text[:80]!r} {why}")
    return text


def _as_relpath(value: Any, key: str, where: str) -> str:
    text = _as_str(value, key, where)
    why = relative_path_problem(text)
    if why:
        raise ManifestError(f"{where}: {key} {text[:80]!r} {why}")
    return text


MAX_KEY_CHARS = 32  # real keys are 10 hex digits; file names made from keys stay short


def _as_key(value: Any, where: str) -> str:
    key = _as_name(value, "key", where)
    if len(key) > MAX_KEY_CHARS:
        raise ManifestError(f"{where}: key is {len(key)} characters long (at most {MAX_KEY_CHARS})")
    return key


def view_set_folder_name(kind: str, views: int, key: str) -> str:
    """The last component of a view set's folder: ``<kind>-n<views>-<key>``."""
    return f"{kind}-n{views}-{key}"


@dataclass(frozen=True)
class Clip:
    """One imported clip.

    ``num_samples`` counts samples at 16 kHz after down-mixing to mono. ``extra`` holds
    additional labels (e.g. VIVAE intensity), strings only.
    """

    id: str
    path: str
    emotion: str
    speaker: str
    split: str
    num_samples: int
    source_sample_rate: int
    source_channels: int
    source_bytes: int = 0
    source_sha256: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Seconds at 16 kHz."""
        return self.num_samples / SAMPLE_RATE

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "emotion": self.emotion,
            "speaker": self.speaker,
            "split": self.split,
            "num_samples": self.num_samples,
            "source_sample_rate": self.source_sample_rate,
            "source_channels": self.source_channels,
            "source_bytes": self.source_bytes,
            "source_sha256": self.source_sha256,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Clip:
        where = _where(d, "clip", "id")
        split = _as_str(_require(d, "split", where), "split", where)
        if split not in SPLITS:
            raise ManifestError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
        extra = _as_object(d.get("extra", {}), "extra", where)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
            raise ManifestError(f"{where}: field 'extra' must map names to strings")
        sha = _as_text(d.get("source_sha256", ""), "source_sha256", where)
        if sha and not _SHA256.fullmatch(sha):
            raise ManifestError(f"{where}: field 'source_sha256' is not a SHA-256 in hex")
        return cls(
            id=_as_name(_require(d, "id", where), "id", where),
            path=_as_relpath(_require(d, "path", where), "path", where),
            emotion=_as_str(_require(d, "emotion", where), "emotion", where),
            speaker=_as_str(_require(d, "speaker", where), "speaker", where),
            split=split,
            num_samples=_as_int(_require(d, "num_samples", where), "num_samples", where, 1),
            source_sample_rate=_as_int(
                _require(d, "source_sample_rate", where), "source_sample_rate", where, 1
            ),
            source_channels=_as_int(
                _require(d, "source_channels", where), "source_channels", where, 1
            ),
            source_bytes=_as_int(d.get("source_bytes", 0), "source_bytes", where),
            source_sha256=sha,
            extra=dict(extra),
        )


@dataclass(frozen=True)
class Failure:
    """A clip that did not make it through a stage ("import", "perturb:<key>"), with why."""

    id: str
    stage: str
    reason: str
    path: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "stage": self.stage, "reason": self.reason, "path": self.path}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Failure:
        where = _where(d, "failure", "id")
        return cls(
            id=_as_name(_require(d, "id", where), "id", where),
            stage=_as_str(_require(d, "stage", where), "stage", where),
            reason=_as_str(_require(d, "reason", where), "reason", where),
            path=_as_text(d.get("path", ""), "path", where),
        )


def shard_name(index: int) -> str:
    """The folder name of shard ``index`` inside its view set's folder (``shard-00007.zarr``;
    part of the view-set contract, ``pipeline/viewset.py``, defined here because a
    manifest's shard entries are checked against it)."""
    return f"shard-{index:05d}.zarr"


@dataclass(frozen=True)
class ShardEntry:
    """A complete shard of a view set: its folder name, clip count, samples and checksum."""

    index: int
    path: str
    clips: int
    samples: int
    checksum: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "path": self.path,
            "clips": self.clips,
            "samples": self.samples,
            "checksum": self.checksum,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardEntry:
        where = _where(d, "shard", "path")
        entry = cls(
            index=_as_int(_require(d, "index", where), "index", where),
            path=_as_str(_require(d, "path", where), "path", where),
            clips=_as_int(_require(d, "clips", where), "clips", where),
            samples=_as_int(_require(d, "samples", where), "samples", where),
            checksum=_as_str(_require(d, "checksum", where), "checksum", where),
        )
        if entry.path != shard_name(entry.index):
            raise ManifestError(
                f"{where}: a shard of index {entry.index} must be named {shard_name(entry.index)!r}"
            )
        return entry


# ----- the first week's layout: view sets without their F0 range ---------------------------
MIGRATE_PLACEHOLDER = "MANIFEST"
F0_RANGE_FIELDS = ("f0_floor_hz", "f0_ceil_hz")


def migrate_command(path: str | os.PathLike[str] | None = None) -> str:
    """The one-off command that rewrites a manifest of the first week's layout."""
    return f"ncore-prep migrate {path or MIGRATE_PLACEHOLDER}"


def _predates_f0_range(d: dict[str, Any]) -> bool:
    """A view-set entry written before view sets recorded their F0 range (2026-11-30):
    neither field present. They were made with WORLD's range, ``LEGACY_F0_*``."""
    return not any(name in d for name in F0_RANGE_FIELDS)


def _f0_field(d: dict[str, Any], key: str, where: str) -> Any:
    if _predates_f0_range(d):
        raise ManifestError(
            f"{where}: records no F0 range (a manifest written before 2026-11-30); "
            f"rewrite it once with `{migrate_command()}`"
        )
    return _require(d, key, where)


@dataclass(frozen=True)
class ViewSet:
    """N perturbed views of every clip for one perturbation kind, parameters and seed.

    ``key`` is a short hash of everything that determines the views; ``folder`` is where its
    shards live (relative to the manifest's folder unless absolute). ``num_shards`` is fixed
    when the stage is planned; ``shards`` lists the complete ones only.
    """

    kind: str
    views: int
    seed: int
    params: dict[str, Any]
    key: str
    folder: str
    num_shards: int
    shard_size: int
    code_version: str
    f0_method: str = "harvest"
    shards: tuple[ShardEntry, ...] = ()
    failures: tuple[Failure, ...] = ()
    # F0 search range of the WORLD analysis, Hz; unrecorded means WORLD's (the legacy) one.
    f0_floor_hz: float = LEGACY_F0_FLOOR_HZ
    f0_ceil_hz: float = LEGACY_F0_CEIL_HZ

    @property
    def complete(self) -> bool:
        return len(self.shards) == self.num_shards

    def folder_path(self, manifest_path: str | os.PathLike[str]) -> Path:
        """Absolute folder of the shards, resolving a relative folder against the manifest."""
        return _resolve(self.folder, manifest_path)

    def shard_paths(self, manifest_path: str | os.PathLike[str]) -> list[Path]:
        """Absolute paths of the complete shards, in shard order."""
        root = self.folder_path(manifest_path)
        return [root / s.path for s in sorted(self.shards, key=lambda s: s.index)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "views": self.views,
            "seed": self.seed,
            "params": self.params,
            "key": self.key,
            "folder": self.folder,
            "num_shards": self.num_shards,
            "shard_size": self.shard_size,
            "code_version": self.code_version,
            "f0_method": self.f0_method,
            "f0_floor_hz": self.f0_floor_hz,
            "f0_ceil_hz": self.f0_ceil_hz,
            "shards": [s.to_dict() for s in sorted(self.shards, key=lambda s: s.index)],
            "failures": [f.to_dict() for f in self.failures],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViewSet:
        where = _where(d, "view set", "key")
        kind = _as_str(_require(d, "kind", where), "kind", where)
        if kind not in VIEW_KINDS:
            raise ManifestError(f"{where}: kind {kind!r} is not one of {', '.join(VIEW_KINDS)}")
        params = _as_object(_require(d, "params", where), "params", where)
        for name, value in params.items():
            if not isinstance(value, str | int | float | bool) or value is None:
                raise ManifestError(f"{where}: parameter {name!r} must be a number or a string")
        f0_method = _as_str(d.get("f0_method", "harvest"), "f0_method", where)
        if f0_method not in F0_METHODS:
            raise ManifestError(
                f"{where}: f0_method {f0_method!r} is not one of {', '.join(F0_METHODS)}"
            )
        vs = cls(
            kind=kind,
            views=_as_int(_require(d, "views", where), "views", where, 1),
            seed=_as_int(_require(d, "seed", where), "seed", where),
            params=params,
            key=_as_key(_require(d, "key", where), where),
            folder=_as_str(_require(d, "folder", where), "folder", where),
            num_shards=_as_int(_require(d, "num_shards", where), "num_shards", where),
            shard_size=_as_int(_require(d, "shard_size", where), "shard_size", where, 1),
            code_version=_as_str(_require(d, "code_version", where), "code_version", where),
            f0_method=f0_method,
            f0_floor_hz=_as_hz(_f0_field(d, "f0_floor_hz", where), "f0_floor_hz", where),
            f0_ceil_hz=_as_hz(_f0_field(d, "f0_ceil_hz", where), "f0_ceil_hz", where),
            shards=tuple(
                ShardEntry.from_dict(s) for s in _entries(d.get("shards", []), "shards", where)
            ),
            failures=tuple(
                Failure.from_dict(f) for f in _entries(d.get("failures", []), "failures", where)
            ),
        )
        if not vs.f0_floor_hz < vs.f0_ceil_hz:
            raise ManifestError(
                f"{where}: f0_floor_hz {vs.f0_floor_hz} must be below f0_ceil_hz {vs.f0_ceil_hz}"
            )
        # The folder is written into and its shard folders replaced: it must be this view
        # set's own folder (named after it), wherever the cache lies.
        expected = view_set_folder_name(vs.kind, vs.views, vs.key)
        if PurePosixPath(vs.folder).name != expected or posixpath.normpath(vs.folder) in (
            ".",
            "..",
        ):
            raise ManifestError(
                f"{where}: folder {vs.folder[:80]!r} must end with the view set's own "
                f"folder name {expected!r}"
            )
        indices = [s.index for s in vs.shards]
        if len(set(indices)) != len(indices):
            raise ManifestError(f"{where}: a shard index is listed twice")
        if any(i >= vs.num_shards for i in indices):
            raise ManifestError(f"{where}: shard index beyond num_shards={vs.num_shards}")
        return vs


@dataclass(frozen=True)
class Manifest:
    """A corpus: label vocabularies, clips with splits, view sets and failures."""

    dataset: str
    source: str
    data_dir: str
    labels: dict[str, tuple[str, ...]]
    clips: tuple[Clip, ...]
    split: dict[str, Any] = field(default_factory=dict)
    view_sets: tuple[ViewSet, ...] = ()
    failures: tuple[Failure, ...] = ()
    sample_rate: int = SAMPLE_RATE
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        self.check()

    # ----- invariants -----------------------------------------------------------------
    def check(self) -> None:
        """Raise ManifestError naming the first broken invariant."""
        _check_version({"schema_version": self.schema_version}, "manifest")
        parse_split(self.split, "manifest")
        why = name_problem(self.dataset)
        if why:
            raise ManifestError(f"manifest: dataset {self.dataset[:80]!r} {why}")
        if self.sample_rate != SAMPLE_RATE:
            raise ManifestError(
                f"manifest sample_rate must be {SAMPLE_RATE}, got {self.sample_rate}"
            )
        for name in ("emotion", "speaker"):
            vocab = self.labels.get(name)
            if not vocab:
                raise ManifestError(f"manifest labels: missing or empty vocabulary {name!r}")
            if len(set(vocab)) != len(vocab):
                raise ManifestError(f"manifest labels: vocabulary {name!r} has duplicates")
        seen: set[str] = set()
        emotions, speakers = set(self.labels["emotion"]), set(self.labels["speaker"])
        for c in self.clips:
            if c.id in seen:
                raise ManifestError(f"clip {c.id!r}: id listed twice")
            seen.add(c.id)
            if c.emotion not in emotions:
                raise ManifestError(f"clip {c.id!r}: emotion {c.emotion!r} not in vocabulary")
            if c.speaker not in speakers:
                raise ManifestError(f"clip {c.id!r}: speaker {c.speaker!r} not in vocabulary")
        for f in self.failures:
            if f.id in seen:
                raise ManifestError(f"failure {f.id!r}: also listed as an imported clip")
        keys = [vs.key for vs in self.view_sets]
        if len(set(keys)) != len(keys):
            raise ManifestError("manifest view_sets: a key is listed twice")
        for vs in self.view_sets:
            # The toolkit writes view sets only to <cache root>/<dataset>/<kind>-n<N>-<key>
            # (perturb also checks the root, symlinks resolved: pipeline/viewset.py).
            parent = PurePosixPath(posixpath.normpath(vs.folder)).parent
            if parent.name != self.dataset:
                raise ManifestError(
                    f"view set {vs.key!r}: folder {vs.folder[:80]!r} is not in the cache "
                    f"folder of dataset {self.dataset!r} (<cache>/{self.dataset}/"
                    f"{view_set_folder_name(vs.kind, vs.views, vs.key)})"
                )
            stored = sum(s.clips for s in vs.shards)
            failed = {f.id for f in vs.failures}
            unknown = failed - seen
            if unknown:
                raise ManifestError(
                    f"view set {vs.key!r}: failure for unknown clip {sorted(unknown)[0]!r}"
                )
            if vs.complete and stored + len(failed) != len(self.clips):
                raise ManifestError(
                    f"view set {vs.key!r}: {len(self.clips)} clips in but {stored} stored "
                    f"+ {len(failed)} failed"
                )

    # ----- look-ups ---------------------------------------------------------------------
    def clip_by_id(self) -> dict[str, Clip]:
        return {c.id: c for c in self.clips}

    def label_index(self, name: str) -> dict[str, int]:
        """Position of each label of vocabulary ``name`` ("emotion" or "speaker")."""
        return {label: i for i, label in enumerate(self.labels[name])}

    def clips_in(self, split: str) -> list[Clip]:
        return [c for c in self.clips if c.split == split]

    def counts(self, label: str, split: str | None = None) -> Counter[str]:
        return Counter(getattr(c, label) for c in self.clips if split in (None, c.split))

    def view_set(self, kind: str, views: int | None = None) -> ViewSet:
        """The view set of ``kind`` with at least ``views`` views (the largest complete one).

        Raises ManifestError with a message a user can act on when there is none.
        """
        candidates = [vs for vs in self.view_sets if vs.kind == kind]
        if not candidates:
            raise ManifestError(
                f"manifest {self.dataset!r} has no {kind} view set; run "
                f"`ncore-prep perturb --dataset {self.dataset} --kind {kind}` first"
            )
        complete = [vs for vs in candidates if vs.complete]
        if not complete:
            raise ManifestError(
                f"the {kind} view set of {self.dataset!r} is incomplete; re-run "
                f"`ncore-prep perturb` to finish it"
            )
        if views is not None:
            enough = [vs for vs in complete if vs.views >= views]
            if not enough:
                most = max(vs.views for vs in complete)
                raise ManifestError(
                    f"{views} {kind} views asked for but the manifest stores at most {most}"
                )
            complete = enough
        return max(complete, key=lambda vs: (vs.views, vs.key))

    def data_path(self, manifest_path: str | os.PathLike[str]) -> Path:
        return _resolve(self.data_dir, manifest_path)

    # ----- updates ----------------------------------------------------------------------
    def with_view_set(self, view_set: ViewSet) -> Manifest:
        """A copy with ``view_set`` added, or replacing the one with the same key."""
        others = tuple(vs for vs in self.view_sets if vs.key != view_set.key)
        return replace(self, view_sets=(*others, view_set))

    # ----- (de)serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "dataset": self.dataset,
            "source": self.source,
            "data_dir": self.data_dir,
            "sample_rate": self.sample_rate,
            "labels": {k: list(v) for k, v in self.labels.items()},
            "split": self.split,
            "clips": [c.to_dict() for c in self.clips],
            "view_sets": [vs.to_dict() for vs in self.view_sets],
            "failures": [f.to_dict() for f in self.failures],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        if not isinstance(d, dict):
            raise ManifestError("manifest: top level must be a JSON object")
        version = _check_version(d, "manifest")
        where = "manifest"
        labels = _as_object(_require(d, "labels", where), "labels", where)
        vocabularies = {}
        for name, vocab in labels.items():
            key = f"labels.{name}"
            words = fields.parse_names(vocab, key, where, ManifestError, nonempty=True)
            vocabularies[name] = tuple(_utf8(word, key, where) for word in words)
        return cls(
            schema_version=version,
            dataset=_as_name(_require(d, "dataset", where), "dataset", where),
            source=_as_str(_require(d, "source", where), "source", where),
            data_dir=_as_str(_require(d, "data_dir", where), "data_dir", where),
            sample_rate=_as_int(_require(d, "sample_rate", where), "sample_rate", where, 1),
            labels=vocabularies,
            split=parse_split(d.get("split", {}), where),
            clips=tuple(
                Clip.from_dict(c) for c in _entries(_require(d, "clips", where), "clips", where)
            ),
            view_sets=tuple(
                ViewSet.from_dict(v) for v in _entries(d.get("view_sets", []), "view_sets", where)
            ),
            failures=tuple(
                Failure.from_dict(f) for f in _entries(d.get("failures", []), "failures", where)
            ),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Manifest:
        """Read and check a manifest; every problem is a ManifestError naming the file."""
        return cls.from_bytes(_read_manifest_bytes(Path(path)), Path(path))

    @classmethod
    def from_bytes(cls, data: bytes, path: Path) -> Manifest:
        """Parse the bytes of a manifest file (``path`` only names it in messages)."""
        return cls.from_parsed(_parse_json(data, path), path)

    @classmethod
    def from_parsed(cls, parsed: Any, path: Path) -> Manifest:
        """:meth:`from_dict` with every message naming the file ``path`` (and the migrate
        command spelt with it)."""
        try:
            return cls.from_dict(parsed)
        except ManifestError as e:
            text = str(e).replace(migrate_command(), migrate_command(path))
            raise ManifestError(f"{path}: {text}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (``pipeline.atomic``: temporary file, fsync, rename).

        A symlinked manifest stays a link: the file it points to is replaced. Callers that
        may race with another command use :class:`ManifestFile`, which also locks.
        """
        self.check()
        write_json(manifest_target(Path(path)), self.to_dict())


def _parse_json(data: bytes, path: Path) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not valid JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise ManifestError(f"{path}: not valid JSON (nested too deeply)") from None


def migrate(path: str | os.PathLike[str]) -> list[str]:
    """Rewrite, once, a manifest of the first week's layout as a current one; the keys of
    the view sets it rewrote (none: it was current, and nothing is written).

    Before 2026-11-30 a view set did not record its F0 range: it was made with WORLD's,
    ``LEGACY_F0_FLOOR_HZ``-``LEGACY_F0_CEIL_HZ``, which is written into it. That range is
    left out of view-set keys and shard attributes (``pipeline/viewset.py``), so every key,
    folder and shard stays valid. Anything else wrong is refused as at load. The rewrite is
    atomic (``pipeline/atomic.py``) and made under the manifest's lock
    (:class:`ManifestFile`); the readers refuse the old layout in one line naming this
    command (``ncore-prep migrate MANIFEST``)."""
    with ManifestFile(path, "migrate") as file:
        data = _read_manifest_bytes(file.path)
        file._digest = hashlib.sha256(data).hexdigest()
        parsed = _parse_json(data, file.path)
        entries = parsed.get("view_sets") if isinstance(parsed, dict) else None
        old = [vs for vs in (entries if isinstance(entries, list) else []) if isinstance(vs, dict)]
        old = [vs for vs in old if _predates_f0_range(vs)]
        for vs in old:
            vs["f0_floor_hz"], vs["f0_ceil_hz"] = LEGACY_F0_FLOOR_HZ, LEGACY_F0_CEIL_HZ
        manifest = Manifest.from_parsed(parsed, file.path)
        if old:
            file.save(manifest)
        return [str(vs.get("key")) for vs in old]


def read_regular_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of the record file ``path``; an OSError unless it is a regular file.

    A FIFO (or a device) in place of a record would block its reader forever; it is opened
    non-blocking and refused on the descriptor itself, so no file swapped in between is
    read. A folder raises IsADirectoryError, as ``open()`` would.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device or socket"
            raise OSError(errno.EINVAL, f"is {kind}, not a regular file", str(path))
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb") as f:
            fd = -1  # closed by the file object
            return f.read()
    finally:
        if fd >= 0:
            os.close(fd)


def _read_manifest_bytes(path: Path) -> bytes:
    try:
        return read_regular_file(path)
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such manifest") from None
    except IsADirectoryError:
        raise ManifestError(f"{path}: is a folder, not a manifest file") from None
    except OSError as e:
        raise ManifestError(f"{path}: cannot read manifest ({e.strerror or e})") from None


def manifest_target(path: Path) -> Path:
    """The file a manifest path stands for: a symlink is followed to its target.

    Locks and atomic replacement act on the target, so that ``alias.json ->
    synthetic.json`` and ``synthetic.json`` share one lock and the link survives a save.
    A link that loops or points at a folder is refused.
    """
    try:
        target = path.resolve(strict=False)
    except (RuntimeError, OSError):  # a symlink loop
        raise ManifestError(f"{path}: symlink loop; point it at a manifest file") from None
    if target.is_dir():
        raise ManifestError(f"{path}: is a folder, not a manifest file")
    return target


def refuse_hard_links(path: Path, target: Path) -> None:
    """Refuse a manifest file with more than one hard link: two names of one file are two
    manifests to the lock (one per name) and become two files at the first atomic save, so
    two commands through the two names would each keep only their own view sets."""
    try:
        links = os.stat(target).st_nlink
    except OSError:
        return  # absent (a manifest still to be written) or unreadable: reported elsewhere
    if links > 1:
        raise ManifestError(
            f"{path}: the manifest file has {links} hard links (other names of the same "
            "file); a save would split them into separate manifests: keep one name and "
            "make the others symlinks to it"
        )


class ManifestFile:
    """A manifest file held under an exclusive lock, for every command that writes one.

    ``ncore-prep manifest``, ``perturb`` and the repair all go through this: the lock is an
    ``flock`` on ``.<name>.lock`` beside the resolved file (a symlink shares its target's
    lock), released by the kernel when the process dies (SIGKILL included). A second writer
    is refused with one line naming the command that holds it. :meth:`save` writes only over
    the version this process last read or wrote: a manifest changed behind the lock (an
    editor, a program that does not lock) is never silently overwritten.
    """

    def __init__(self, path: str | os.PathLike[str], command: str) -> None:
        self.path = Path(path)
        self.command = command
        self._lock: Any = None
        self._digest: str | None = None  # sha256 of the bytes last read or written; "" absent

    def __enter__(self) -> ManifestFile:
        from pipeline.locks import LockHeld, exclusive_lock

        self.target = manifest_target(self.path)
        refuse_hard_links(self.path, self.target)
        lock = exclusive_lock(
            self.target.with_name(f".{self.target.name}.lock"), f"`ncore-prep {self.command}`"
        )
        try:
            lock.__enter__()
        except LockHeld as e:
            raise ManifestError(
                f"{self.path} is in use by {e.holder}; wait for it to finish, then re-run"
            ) from None
        except OSError as e:
            raise ManifestError(
                f"{self.path}: cannot create its lock file ({os_reason(e)})"
            ) from None
        self._lock = lock
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None

    def exists(self) -> bool:
        return self.target.exists()

    def load(self) -> Manifest:
        """Read the manifest and remember its bytes' digest for :meth:`save`."""
        data = _read_manifest_bytes(self.path)
        self._digest = hashlib.sha256(data).hexdigest()
        return Manifest.from_bytes(data, self.path)

    def load_or_none(self) -> tuple[Manifest | None, str | None]:
        """The current manifest, or (None, why) when absent or unreadable (and remember it)."""
        try:
            data = read_regular_file(self.target)
        except FileNotFoundError:
            self._digest = ""
            return None, None
        except OSError as e:
            raise ManifestError(f"{self.path}: cannot read manifest ({os_reason(e)})") from None
        self._digest = hashlib.sha256(data).hexdigest()
        try:
            return Manifest.from_bytes(data, self.path), None
        except ManifestError as e:
            return None, str(e)

    def save(self, manifest: Manifest) -> None:
        """Replace the file atomically, unless it changed since this process last saw it."""
        if self._lock is None:
            raise RuntimeError("ManifestFile.save outside its `with` block")
        manifest.check()
        if self._digest is not None:
            try:
                now = hashlib.sha256(read_regular_file(self.target)).hexdigest()
            except FileNotFoundError:
                now = ""
            except OSError as e:
                raise ManifestError(f"{self.path}: cannot read manifest ({os_reason(e)})") from None
            if now != self._digest:
                raise ManifestError(
                    f"{self.path} was changed by another program during `ncore-prep "
                    f"{self.command}`; nothing was overwritten: re-run the command"
                )
        data = json_text(manifest.to_dict()).encode("utf-8")
        try:
            write_bytes(self.target, data)
        except OSError as e:
            raise ManifestError(
                f"{self.path}: cannot write the manifest ({os_reason(e)})"
            ) from None
        self._digest = hashlib.sha256(data).hexdigest()


def relative_to_manifest(
    target: str | os.PathLike[str], manifest_path: str | os.PathLike[str]
) -> str:
    """``target`` relative to the manifest's folder (POSIX separators), for storing in it."""
    base = Path(manifest_path).resolve().parent
    return Path(os.path.relpath(Path(target).resolve(), base)).as_posix()


def _resolve(stored: str, manifest_path: str | os.PathLike[str]) -> Path:
    p = Path(stored)
    if p.is_absolute():
        return p
    return (Path(manifest_path).resolve().parent / p).resolve()


load_manifest = Manifest.load
