"""The one view-set reader: which view set a manifest means, where each clip is stored, and
how its samples are read and checked.

Every command that reads clips of a view set goes through here: the training stream and
the evaluation loaders (``trainer/data.py``), embedding, ``ncore-prep selectivity``,
``listen`` and ``inspect``. The module owns:

- :class:`LocatedManifest`: a manifest and the path it was read from, which resolves the
  relative folders it records (source audio, view-set folders);
- :func:`choose_view_set`: which view set a manifest means for a kind, a number of views
  or a key, in one rule, or one clear :class:`~pipeline.manifest.ManifestError`;
- :func:`clip_places`: which shard holds each clip and at which row (membership itself is
  :func:`pipeline.viewset.shard_members`, the contract the writer and validation share);
- the CRC policy: :func:`open_shards` opens the shards of a view set through
  ``pipeline.shards.open_shard`` (a shard another manifest or view set wrote is refused,
  :class:`~pipeline.shards.ShardForeign`; a damaged one raises
  :class:`~pipeline.shards.ShardDamaged`), and every sample read is checked against the
  CRC-32 written with it; :func:`read_clips` either refuses a damaged clip (``mark=False``)
  or marks it and reads on (``mark=True``, the listening page).

Validation (``pipeline/qa.py``) reads every shard file itself, stray ones included, to
report each problem rather than stop at the first; it shares membership and the shard
format, not this policy.

This module imports no zarr (``pipeline/shards.py`` is imported when a shard is opened),
so choosing a view set stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.manifest import Manifest, ManifestError, ViewSet
from pipeline.viewset import shard_members

if TYPE_CHECKING:
    from pipeline.shards import ShardReader

__all__ = [
    "LocatedManifest",
    "StoredClip",
    "choose_view_set",
    "clip_places",
    "open_shards",
    "read_clips",
    "reopen_shard",
]


@dataclass(frozen=True)
class LocatedManifest:
    """A manifest and the path it was read from (relative folders resolve against it)."""

    manifest: Manifest
    path: Path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LocatedManifest:
        return cls(Manifest.load(path), Path(path))

    @classmethod
    def of(cls, manifest: Manifest, path: str | os.PathLike[str]) -> LocatedManifest:
        return cls(manifest, Path(path))

    def __str__(self) -> str:
        return str(self.path)

    def data_path(self) -> Path:
        """The folder of the source audio."""
        return self.manifest.data_path(self.path)

    def folder(self, view_set: ViewSet) -> Path:
        """The folder of ``view_set``'s shards."""
        return view_set.folder_path(self.path)


# ----- which view set -----------------------------------------------------------------
def choose_view_set(
    source: LocatedManifest,
    kind: str | None = None,
    views: int | None = None,
    key: str | ViewSet | None = None,
    *,
    any_kind: bool = False,
) -> ViewSet:
    """The view set ``source`` means, or a one-line ManifestError.

    ``key`` (a run's recorded or ``--view-set`` one, or a :class:`ViewSet`): that view set,
    which must be complete and store at least ``views`` views. Otherwise the largest complete
    view set of ``kind`` with at least ``views`` views; with ``any_kind`` (view 0, the
    original, is the same audio in every view set) the largest complete one of another kind
    when ``kind`` has none.
    """
    manifest, path = source.manifest, source.path
    if key is not None:
        key = key.key if isinstance(key, ViewSet) else key
        found = [vs for vs in manifest.view_sets if vs.key == key]
        if not found:
            keys = ", ".join(f"{vs.kind}-n{vs.views}-{vs.key}" for vs in manifest.view_sets)
            raise ManifestError(
                f"{path}: view set {key!r} is not in the manifest (it has: "
                f"{keys or 'none'}); perturb it again with its settings or name another one "
                "with --view-set"
            )
        if not found[0].complete:
            raise ManifestError(
                f"{path}: view set {key!r} is incomplete; re-run `ncore-prep perturb` "
                "with its settings to finish it"
            )
        if views is not None and views > found[0].views:
            raise ManifestError(
                f"{views} views asked for but view set {found[0].key} stores {found[0].views}"
            )
        return found[0]
    if kind is None:
        raise ManifestError(f"{path}: name a view-set kind or key")
    try:
        return manifest.view_set(kind, views)
    except ManifestError:
        others = [vs for vs in manifest.view_sets if vs.complete and vs.kind != kind]
        if not any_kind or not others:
            raise
        return max(others, key=lambda vs: (vs.views, vs.key))


# ----- where each clip is -------------------------------------------------------------
def clip_places(manifest: Manifest, view_set: ViewSet) -> dict[str, tuple[int, int]]:
    """``{clip id: (shard index, row among the shard's members)}`` of every clip the
    manifest lists (:func:`pipeline.viewset.shard_members`). A shard does not store the
    clips that failed in the view set, so the row of a stored clip is read from the shard
    (its ``clip_ids``); this is where the manifest places it."""
    return {
        cid: (index, row)
        for index, ids in enumerate(shard_members(manifest, view_set.shard_size))
        for row, cid in enumerate(ids)
    }


# ----- opening and reading ------------------------------------------------------------
def open_shards(
    source: LocatedManifest,
    view_set: ViewSet,
    indices: Iterable[int] | None = None,
    *,
    verify: bool = True,
    skip_unreadable: bool = False,
) -> list[ShardReader]:
    """Checked readers (``pipeline.shards.open_shard``) of the complete shards of
    ``view_set`` (or of shards ``indices``), in shard order.

    A damaged shard (:class:`~pipeline.shards.ShardDamaged`) and a foreign one
    (:class:`~pipeline.shards.ShardForeign`) always raise: damaged or foreign audio is never
    read, and never skipped in silence. A shard that cannot be opened at all raises
    :class:`~pipeline.shards.ShardError`, or with ``skip_unreadable`` is left out (logged).
    """
    import logging

    from pipeline.shards import ShardDamaged, ShardError, ShardForeign, open_shard

    wanted = None if indices is None else set(indices)
    readers = []
    for entry in sorted(view_set.shards, key=lambda s: s.index):
        if wanted is not None and entry.index not in wanted:
            continue
        try:
            readers.append(open_shard(source.manifest, source.path, view_set, entry, verify=verify))
        except (ShardDamaged, ShardForeign):
            raise
        except ShardError as error:
            if not skip_unreadable:
                raise
            logging.getLogger(__name__).warning("%s; decoding its clips from source instead", error)
    return readers


def reopen_shard(
    path: str | os.PathLike[str], manifest_path: str | os.PathLike[str] | None, checksum: str
) -> ShardReader:
    """A verifying reader of the shard at ``path``, opened again (by a loader worker) after
    :func:`open_shards` checked it: refused (:class:`~pipeline.shards.ShardForeign`) when its
    recorded content checksum is no longer ``checksum``, the one the manifest lists."""
    from pipeline.shards import ShardForeign, ShardReader

    reader = ShardReader(path, manifest_path)
    recorded = reader.attrs.get("checksum")
    if checksum and recorded is not None and recorded != checksum:
        raise ShardForeign(
            f"{path}: the shard changed since the loader checked it (its "
            "checksum is not the one the manifest lists)"
        )
    return reader


@dataclass
class StoredClip:
    """A clip's stored rows in one view set: int16 (rows, T) and the drawn parameters of
    views 1..N, or why there are none: ``status`` ``"failed"`` (perturbation failed;
    ``reason`` says why), ``"missing"`` (its shard is not computed yet; ``shard`` is its
    index) or ``"damaged"`` (``reason``: what is wrong, ``shard_path`` where)."""

    rows: np.ndarray | None = None
    drawn: list[dict[str, Any]] = field(default_factory=list)
    status: str = "ok"
    reason: str = ""
    shard: int = -1
    shard_path: str = ""


def read_clips(
    source: LocatedManifest,
    view_set: ViewSet,
    clip_ids: Sequence[str],
    *,
    mark: bool = False,
) -> dict[str, StoredClip]:
    """Every stored row of ``clip_ids`` in ``view_set``, one zarr read per shard, each clip
    checked against its CRC-32.

    Only the shards that hold the clips are opened (checked: a foreign shard raises
    :class:`~pipeline.shards.ShardForeign`). ``mark=False``: a damaged shard or clip raises
    :class:`~pipeline.shards.ShardDamaged`. ``mark=True``: it is returned with status
    ``"damaged"`` and the others are read (a shard whose attributes are damaged marks
    all its clips). A shard that does not hold a clip the manifest places there, or stores
    another number of rows, raises :class:`~pipeline.shards.ShardError`.
    """
    from pipeline.shards import ShardError

    failed = {f.id: f.reason for f in view_set.failures}
    places = clip_places(source.manifest, view_set)
    entries = {s.index: s for s in view_set.shards}
    out: dict[str, StoredClip] = {}
    wanted: dict[int, list[str]] = {}
    for cid in clip_ids:
        index = places[cid][0]
        if cid in failed:
            out[cid] = StoredClip(status="failed", reason=failed[cid], shard=index)
        elif index not in entries:
            out[cid] = StoredClip(status="missing", shard=index)
        else:
            wanted.setdefault(index, []).append(cid)
    for index in sorted(wanted):
        entry = entries[index]
        try:
            out.update(_read_shard(source, view_set, entry, wanted[index], mark))
        except (ShardError, ValueError, OSError) as error:
            where = f"shard {entry.path} of {view_set.kind}-{view_set.key}"
            raise type(error)(f"{where}: {error}") from None
    return out


def _read_shard(
    source: LocatedManifest, view_set: ViewSet, entry: Any, wanted: list[str], mark: bool
) -> dict[str, StoredClip]:
    """The clips ``wanted`` of shard ``entry`` (see :func:`read_clips`)."""
    from pipeline.shards import ShardDamaged, ShardError, open_shard

    index = entry.index
    try:
        reader = open_shard(source.manifest, source.path, view_set, entry, verify=not mark)
    except ShardDamaged as error:  # unreadable attributes: every clip of it
        if not mark:
            raise
        return {
            cid: StoredClip(
                status="damaged shard", reason=str(error), shard=index, shard_path=entry.path
            )
            for cid in wanted
        }
    missing = [cid for cid in wanted if cid not in reader.clip_ids]
    if missing:
        raise ShardError(f"clip {missing[0]} is not in it although the manifest places it there")
    if reader.num_views != 1 + view_set.views:
        raise ShardError(
            f"{reader.num_views} rows per clip, the manifest says {1 + view_set.views}"
        )
    rows = {cid: reader.clip_ids.index(cid) for cid in wanted}
    lo, hi = min(rows.values()), max(rows.values()) + 1
    if mark:
        return _read_marking(reader, rows, lo, hi, index, entry.path)
    block = reader.read_int16(lo, hi)  # verified: damage raises
    base = int(reader.offsets[lo])
    out = {}
    for cid, i in rows.items():
        a, b = int(reader.offsets[i]) - base, int(reader.offsets[i + 1]) - base
        out[cid] = StoredClip(
            rows=np.ascontiguousarray(block[:, a:b]),
            drawn=reader.drawn(i),
            shard=index,
            shard_path=entry.path,
        )
    return out


def _read_marking(
    reader: ShardReader, rows: dict[str, int], lo: int, hi: int, index: int, path: str
) -> dict[str, StoredClip]:
    """Clips ``rows`` (id -> row) of an unverified reader, a damaged one marked."""
    out = {}
    try:
        block: np.ndarray | None = reader.read_int16(lo, hi)
    except Exception:  # codecs raise many types on truncated bytes: read clip by clip
        block = None
    base = int(reader.offsets[lo])
    for cid, i in rows.items():
        if block is None:
            try:
                samples = np.ascontiguousarray(reader.read_int16(i, i + 1))
            except Exception:
                out[cid] = StoredClip(
                    status="damaged", reason="samples cannot be decoded", shard=index,
                    shard_path=path,
                )  # fmt: skip
                continue
        else:
            a, b = int(reader.offsets[i]) - base, int(reader.offsets[i + 1]) - base
            samples = np.ascontiguousarray(block[:, a:b])
        if not reader.crc_matches(i, samples):
            out[cid] = StoredClip(
                status="damaged", reason="CRC-32 mismatch", shard=index, shard_path=path
            )
            continue
        out[cid] = StoredClip(rows=samples, drawn=reader.drawn(i), shard=index, shard_path=path)
    return out
