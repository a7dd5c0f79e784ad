"""The manifest: one JSON file that describes a corpus, its splits, its cached views and failures.

Every record is a frozen dataclass with ``to_dict`` / ``from_dict``. ``from_dict`` checks
each field and raises :class:`ManifestError` whose message starts with the offending item,
so a hand-edited or truncated manifest is refused with a message that says what is wrong.

Paths: clip ``path`` is relative to the corpus folder ``data_dir``; ``data_dir`` and view-set
``folder`` are stored relative to the manifest file's folder when they lie below a common
root, so that a project folder can be moved as a whole.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
SAMPLE_RATE = 16000
SPLITS = ("train", "val", "test")
VIEW_KINDS = ("speaker", "emotion")
# The F0 search range of the WORLD analysis when none is given (WORLD's own defaults, Hz).
# A view set records the range it was made with; screams and cries need a higher ceiling
# (see docs/perturbations.md).
DEFAULT_F0_FLOOR_HZ = 71.0
DEFAULT_F0_CEIL_HZ = 800.0


class ManifestError(ValueError):
    """A manifest that cannot be used: unknown version, missing field or broken invariant."""


def _require(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise ManifestError(f"{where}: missing field {key!r}")
    return d[key]


def _as_str(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{where}: field {key!r} must be a non-empty string, got {value!r}")
    return value


def _as_int(value: Any, key: str, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ManifestError(
            f"{where}: field {key!r} must be an integer >= {minimum}, got {value!r}"
        )
    return value


def _as_hz(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e5:
        raise ManifestError(f"{where}: field {key!r} must be a frequency in Hz, got {value!r}")
    return float(value)


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
        where = f"clip {d.get('id', '?')!r}"
        split = _as_str(_require(d, "split", where), "split", where)
        if split not in SPLITS:
            raise ManifestError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
        extra = d.get("extra", {})
        if not isinstance(extra, dict) or not all(isinstance(v, str) for v in extra.values()):
            raise ManifestError(f"{where}: field 'extra' must map names to strings")
        return cls(
            id=_as_str(_require(d, "id", where), "id", where),
            path=_as_str(_require(d, "path", where), "path", where),
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
            source_sha256=str(d.get("source_sha256", "")),
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
        where = f"failure {d.get('id', '?')!r}"
        return cls(
            id=_as_str(_require(d, "id", where), "id", where),
            stage=_as_str(_require(d, "stage", where), "stage", where),
            reason=_as_str(_require(d, "reason", where), "reason", where),
            path=str(d.get("path", "")),
        )


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
        where = f"shard {d.get('path', '?')!r}"
        return cls(
            index=_as_int(_require(d, "index", where), "index", where),
            path=_as_str(_require(d, "path", where), "path", where),
            clips=_as_int(_require(d, "clips", where), "clips", where),
            samples=_as_int(_require(d, "samples", where), "samples", where),
            checksum=_as_str(_require(d, "checksum", where), "checksum", where),
        )


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
    f0_floor_hz: float = DEFAULT_F0_FLOOR_HZ  # F0 search range of the WORLD analysis, Hz
    f0_ceil_hz: float = DEFAULT_F0_CEIL_HZ

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
        where = f"view set {d.get('key', '?')!r}"
        kind = _as_str(_require(d, "kind", where), "kind", where)
        if kind not in VIEW_KINDS:
            raise ManifestError(f"{where}: kind {kind!r} is not one of {', '.join(VIEW_KINDS)}")
        params = _require(d, "params", where)
        if not isinstance(params, dict):
            raise ManifestError(f"{where}: field 'params' must be an object")
        vs = cls(
            kind=kind,
            views=_as_int(_require(d, "views", where), "views", where, 1),
            seed=_as_int(_require(d, "seed", where), "seed", where),
            params=params,
            key=_as_str(_require(d, "key", where), "key", where),
            folder=_as_str(_require(d, "folder", where), "folder", where),
            num_shards=_as_int(_require(d, "num_shards", where), "num_shards", where),
            shard_size=_as_int(_require(d, "shard_size", where), "shard_size", where, 1),
            code_version=_as_str(_require(d, "code_version", where), "code_version", where),
            f0_method=str(d.get("f0_method", "harvest")),
            shards=tuple(ShardEntry.from_dict(s) for s in d.get("shards", [])),
            failures=tuple(Failure.from_dict(f) for f in d.get("failures", [])),
            # Manifests written before the range became an option used WORLD's defaults.
            f0_floor_hz=_as_hz(d.get("f0_floor_hz", DEFAULT_F0_FLOOR_HZ), "f0_floor_hz", where),
            f0_ceil_hz=_as_hz(d.get("f0_ceil_hz", DEFAULT_F0_CEIL_HZ), "f0_ceil_hz", where),
        )
        if not vs.f0_floor_hz < vs.f0_ceil_hz:
            raise ManifestError(
                f"{where}: f0_floor_hz {vs.f0_floor_hz} must be below f0_ceil_hz {vs.f0_ceil_hz}"
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
        if self.schema_version != SCHEMA_VERSION:
            raise ManifestError(
                f"manifest schema_version {self.schema_version!r} is not supported "
                f"(this toolkit reads version {SCHEMA_VERSION})"
            )
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
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ManifestError(
                f"manifest schema_version {version!r} is not supported "
                f"(this toolkit reads version {SCHEMA_VERSION})"
            )
        where = "manifest"
        labels = _require(d, "labels", where)
        if not isinstance(labels, dict):
            raise ManifestError("manifest: field 'labels' must be an object")
        return cls(
            schema_version=version,
            dataset=_as_str(_require(d, "dataset", where), "dataset", where),
            source=_as_str(_require(d, "source", where), "source", where),
            data_dir=_as_str(_require(d, "data_dir", where), "data_dir", where),
            sample_rate=_as_int(_require(d, "sample_rate", where), "sample_rate", where, 1),
            labels={k: tuple(v) for k, v in labels.items()},
            split=dict(d.get("split", {})),
            clips=tuple(Clip.from_dict(c) for c in _require(d, "clips", where)),
            view_sets=tuple(ViewSet.from_dict(v) for v in d.get("view_sets", [])),
            failures=tuple(Failure.from_dict(f) for f in d.get("failures", [])),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Manifest:
        """Read and check a manifest; every problem is a ManifestError naming the file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ManifestError(f"{path}: no such manifest") from None
        except OSError as e:
            raise ManifestError(f"{path}: cannot read manifest ({e.strerror})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        try:
            return cls.from_dict(data)
        except ManifestError as e:
            raise ManifestError(f"{path}: {e}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: a temporary file in the same folder, then ``os.replace``."""
        self.check()
        write_json_atomic(Path(path), self.to_dict())


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON so that readers see either the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
