"""The shard format: the only module that touches zarr.

A shard is a Zarr v3 group holding a fixed list of clips and all their views:

- ``audio``   int16 (1 + N, total_samples): row 0 the original 16 kHz mono clip, rows 1..N
  the perturbed views; chunked along time and stored with Zarr's ``shards=`` so that the
  whole array is one file on disk.
- ``offsets`` int64 (clips + 1,): clip i is ``audio[:, offsets[i]:offsets[i + 1]]``.
- ``clip_ids`` variable-length strings (clips,), the manifest ids in order.
- attributes (JSON): ``schema_version``, ``kind``, ``views``, ``seed``, ``key``, ``params``,
  ``drawn`` (per clip, the parameters drawn for views 1..N), ``clip_crc32`` (per clip, a
  CRC-32 of its int16 samples, row-major over views) so that a reader can name a damaged
  clip, and ``checksum`` (the content checksum the manifest lists for the shard).

Every reader opens the shards of a view set through :func:`open_shard` (or
:func:`open_view_set`), which refuses a shard that is not the one the manifest lists:
another view set's (``kind``/``key``/settings attributes), another manifest's (content
checksum, clip ids, clip lengths), before any of its audio is used.

A shard is written under a temporary name next to its final name and renamed only once
complete, so a folder named ``shard-XXXXX.zarr`` is always a finished shard.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
import zarr.codecs

from pipeline.errors import PipelineError
from pipeline.viewset import shard_name

if TYPE_CHECKING:
    from pipeline.manifest import ViewSet

SHARD_SCHEMA_VERSION = 1
CHUNK_SAMPLES = 32768  # 2 s at 16 kHz: one clip rarely spans more than two chunks
INT16_SCALE = 32768.0


class ShardError(PipelineError):
    """A shard that cannot be read or does not match what the manifest says."""


class ShardDamaged(ShardError):
    """A shard whose stored bytes no longer match what was written (checked on every read)."""


class ShardForeign(ShardError):
    """A whole shard that is not the one its manifest lists: another view set's (copied from
    another folder) or another manifest's (another corpus under the same dataset name)."""


REPAIR_PLACEHOLDER = "MANIFEST"


def repair_command(manifest_path: str | os.PathLike[str] | None = None) -> str:
    """The command that recomputes damaged shards of a manifest, for error messages."""
    return f"ncore-prep validate --repair {manifest_path or REPAIR_PLACEHOLDER}"


def to_int16(audio: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] to int16 with rounding and clipping (no wrap-around)."""
    scaled = np.rint(np.asarray(audio, dtype=np.float64) * INT16_SCALE)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def int16_to_float(samples: np.ndarray) -> np.ndarray:
    """Stored int16 samples as float32 in [-1, 1) (a new array)."""
    return np.multiply(samples, np.float32(1.0 / INT16_SCALE), dtype=np.float32)


@dataclass(frozen=True)
class ShardClip:
    """One clip to store: views (1 + N, T) float in [-1, 1] and the drawn parameters of 1..N."""

    clip_id: str
    views: np.ndarray
    drawn: Sequence[dict[str, Any]]


def write_shard(
    path: str | os.PathLike[str],
    clips: Sequence[ShardClip],
    attrs: dict[str, Any],
    rows: int | None = None,
) -> tuple[int, str]:
    """Write ``clips`` as one shard at ``path`` atomically; returns (total samples, checksum).

    The group is built under ``<path>.tmp-<pid>`` and renamed when complete; a stale
    temporary folder from a killed run is removed first. ``attrs`` (kind, views, seed, key,
    params) are stored with the shard's own fields added. ``rows`` (1 + N) is needed only to
    write an empty shard (every clip of it failed), which keeps a view set's shard list
    dense so that readers need no special case.
    """
    path = Path(path)
    if not clips and rows is None:
        raise ShardError(f"{path.name}: an empty shard needs its number of rows")
    rows = clips[0].views.shape[0] if clips else int(rows)
    for c in clips:
        if c.views.ndim != 2 or c.views.shape[0] != rows:
            raise ShardError(
                f"{path.name}: clip {c.clip_id!r} has views of shape {c.views.shape}, "
                f"expected ({rows}, T)"
            )
    lengths = np.array([c.views.shape[1] for c in clips], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    audio = np.concatenate(
        [np.zeros((rows, 0), np.int16), *(to_int16(c.views) for c in clips)], axis=1
    )
    crcs = [zlib.crc32(np.ascontiguousarray(audio[:, a:b]).tobytes()) for a, b in _spans(offsets)]
    ids = [c.clip_id for c in clips]

    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    group = zarr.open_group(tmp, mode="w", zarr_format=3)
    total = int(offsets[-1])
    chunk = min(CHUNK_SAMPLES, max(total, 1))
    shard_len = max(-(-total // chunk), 1) * chunk
    arr = group.create_array(
        "audio",
        shape=audio.shape,
        dtype="int16",
        chunks=(rows, chunk),
        shards=(rows, shard_len),
        compressors=zarr.codecs.ZstdCodec(level=3),
    )
    arr[:] = audio
    group.create_array("offsets", shape=offsets.shape, dtype="int64")[:] = offsets
    group.create_array("clip_ids", shape=(len(ids),), dtype=str)[:] = np.array(ids, dtype=object)
    checksum = content_checksum(audio, offsets, ids)
    group.attrs.update(
        {
            **attrs,
            "schema_version": SHARD_SCHEMA_VERSION,
            "drawn": [list(c.drawn) for c in clips],
            "clip_crc32": crcs,
            # The manifest lists the same checksum: a reader compares the two before it
            # uses the shard (open_shard) without reading the audio.
            "checksum": checksum,
        }
    )
    if path.exists():  # an identical shard from an earlier run that the manifest missed
        shutil.rmtree(path)
    os.replace(tmp, path)
    return total, checksum


def write_view_set(
    folder: str | os.PathLike[str],
    clips: Sequence[ShardClip],
    *,
    manifest_path: str | os.PathLike[str],
    kind: str,
    views: int,
    seed: int,
    key: str,
    shard_size: int,
    code_version: str,
    params: dict[str, Any] | None = None,
) -> ViewSet:
    """Write views that are already in memory as a complete view set under ``folder``.

    ``clips`` (each with 1 + ``views`` rows) are cut into shards of ``shard_size`` in the
    given order; the returned :class:`ViewSet` lists them and stores ``folder`` relative to
    ``manifest_path``. For views made outside ``ncore-prep perturb`` (tests, benchmarks, or
    a user's own perturbations); the Dask stage writes shard by shard instead.
    """
    from pipeline.manifest import ShardEntry, ViewSet, relative_to_manifest, view_set_folder_name
    from pipeline.viewset import ShardAttributes

    folder = Path(folder)
    if folder.name != view_set_folder_name(kind, views, key):
        raise ShardError(
            f"{folder}: a view set's folder must be named "
            f"{view_set_folder_name(kind, views, key)!r} (its kind, views and key)"
        )
    for clip in clips:
        # int16 has no NaN: numpy would store NaN as 0 and inf as 32767 with only a warning,
        # so views that are not finite are refused before anything is written.
        finite = np.isfinite(np.asarray(clip.views, dtype=np.float64))
        if not finite.all():
            raise ShardError(
                f"clip {clip.clip_id!r}: {int(finite.size - np.count_nonzero(finite))} NaN or "
                "infinite sample(s) in its views; a view set stores finite audio only"
            )
    folder.mkdir(parents=True, exist_ok=True)
    params = dict(params or {})
    attrs = ShardAttributes(kind, views, seed, key, params).to_dict()
    entries = []
    for index, start in enumerate(range(0, len(clips), shard_size)):
        part = clips[start : start + shard_size]
        samples, checksum = write_shard(folder / shard_name(index), part, attrs)
        entries.append(ShardEntry(index, shard_name(index), len(part), samples, checksum))
    return ViewSet(
        kind=kind,
        views=views,
        seed=seed,
        params=params,
        key=key,
        folder=relative_to_manifest(folder, manifest_path),
        num_shards=len(entries),
        shard_size=shard_size,
        code_version=code_version,
        shards=tuple(entries),
    )


def content_checksum(audio: np.ndarray, offsets: np.ndarray, clip_ids: Sequence[str]) -> str:
    """sha256 over the decoded contents (independent of compression and file layout)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(audio, dtype="<i2").tobytes())
    h.update(np.ascontiguousarray(offsets, dtype="<i8").tobytes())
    h.update("\x1f".join(clip_ids).encode("utf-8"))
    return "sha256:" + h.hexdigest()


def _spans(offsets: np.ndarray) -> list[tuple[int, int]]:
    return [(int(offsets[i]), int(offsets[i + 1])) for i in range(len(offsets) - 1)]


# ----- the shard's attributes: one typed parser ---------------------------------------------
# Drawn parameters whose type the readers rely on (pipeline/perturb.py writes them):
_DRAWN_RATIOS = ("formant_ratio", "pitch_ratio", "pitch_range_ratio")  # > 0
_DRAWN_FLAGS = ("f0_shifted", "silent", "rms_scaled")
_DRAWN_BANDS = ("permuted_bands", "band_sources")  # band indices >= 0, equal lengths
_EQ_LISTS = ("frequencies_hz", "qs", "gains_db")  # numbers, equal lengths


@dataclass(frozen=True)
class StoredAttributes:
    """What a shard's Zarr attributes say, typed: the view-set fields, the parameters drawn
    for views 1..N of every clip (``drawn[i][v - 1]``) and every clip's CRC-32."""

    kind: str
    views: int
    seed: int
    key: str
    params: dict[str, Any]
    drawn: tuple[tuple[dict[str, Any], ...], ...]
    clip_crc32: tuple[int, ...]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def _drawn_problem(record: Any) -> str | None:
    """Why one view's drawn-parameter record is malformed, or None."""
    if not isinstance(record, dict) or not all(isinstance(k, str) for k in record):
        return "is not an object"
    for name in _DRAWN_RATIOS:
        if name in record and not (_finite(record[name]) and record[name] > 0):
            return f"{name} {record[name]!r} is not a positive number"
    for name in _DRAWN_FLAGS:
        if name in record and not isinstance(record[name], bool):
            return f"{name} {record[name]!r} is not true or false"
    for name in ("output_gain", "f0_median_hz"):
        if record.get(name) is not None and not _finite(record[name]):
            return f"{name} {record[name]!r} is not a number"
    if "voiced_frames" in record and not (
        isinstance(record["voiced_frames"], int)
        and not isinstance(record["voiced_frames"], bool)
        and record["voiced_frames"] >= 0
    ):
        return f"voiced_frames {record['voiced_frames']!r} is not a count"
    bands = [record.get(name) for name in _DRAWN_BANDS if name in record]
    if bands:
        if len(bands) != 2 or not all(
            isinstance(b, list)
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in b)
            for b in bands
        ):
            return "permuted_bands / band_sources are not two lists of band indices"
        if len(bands[0]) != len(bands[1]):
            return "permuted_bands and band_sources differ in length"
    if "eq" in record:
        eq = record["eq"]
        if not isinstance(eq, dict) or not all(
            isinstance(eq.get(k), list) and all(_finite(v) for v in eq[k]) for k in _EQ_LISTS
        ):
            return "eq does not hold lists of numbers " + ", ".join(_EQ_LISTS)
        if len({len(eq[k]) for k in _EQ_LISTS}) != 1:
            return "eq lists differ in length"
    return None


def parse_shard_attributes(attrs: Any, clips: int, rows: int, damaged: Any) -> StoredAttributes:
    """The one reader of a shard's attributes (``clips`` clips of ``rows`` = 1 + N rows).

    A wrong version is a :class:`ShardError`; any other wrong type or value (``drawn[0] =
    5``, a string ``formant_ratio``, a CRC-32 that is not a 32-bit count) is
    ``damaged(what)``, the reader's one-line :class:`ShardDamaged` naming the shard, the
    attribute and the repair command.
    """
    from pipeline.manifest import VIEW_KINDS

    if not isinstance(attrs, dict):
        raise damaged("its attributes are not an object")
    version = attrs.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version != SHARD_SCHEMA_VERSION:
        raise ShardError(
            f"shard schema_version {version!r} is not supported (expected {SHARD_SCHEMA_VERSION})"
        )
    kind, views, seed, key = (attrs.get(k) for k in ("kind", "views", "seed", "key"))
    if kind not in VIEW_KINDS:
        raise damaged(f"attribute 'kind' {kind!r} is not one of {', '.join(VIEW_KINDS)}")
    for name, value in (("views", views), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise damaged(f"attribute {name!r} {value!r} is not a count")
    if views != rows - 1:
        raise damaged(f"attribute 'views' is {views} but the audio holds {rows} rows per clip")
    if not isinstance(key, str) or not key:
        raise damaged(f"attribute 'key' {key!r} is not a view-set key")
    params = attrs.get("params")
    if not isinstance(params, dict):
        raise damaged("attribute 'params' is not an object")
    drawn = attrs.get("drawn")
    if not isinstance(drawn, list) or len(drawn) != clips:
        raise damaged(f"attribute 'drawn' does not hold one list per clip ({clips})")
    for i, records in enumerate(drawn):
        if not isinstance(records, list) or len(records) != views:
            raise damaged(f"attribute 'drawn[{i}]' is not a list of {views} view record(s)")
        for v, record in enumerate(records, 1):
            why = _drawn_problem(record)
            if why is not None:
                raise damaged(f"attribute 'drawn[{i}]' view {v}: {why}")
    crcs = attrs.get("clip_crc32")
    if (
        not isinstance(crcs, list)
        or len(crcs) != clips
        or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 2**32 for c in crcs)
    ):
        raise damaged("its attribute 'clip_crc32' does not hold one CRC-32 per clip")
    checksum = attrs.get("checksum")  # absent on shards written before it was recorded
    if checksum is not None and not (
        isinstance(checksum, str) and re.fullmatch(r"sha256:[0-9a-f]{64}", checksum)
    ):
        raise damaged("its attribute 'checksum' is not a content checksum (sha256:<64 hex>)")
    return StoredAttributes(
        kind=kind,
        views=views,
        seed=seed,
        key=key,
        params=dict(params),
        drawn=tuple(tuple(records) for records in drawn),
        clip_crc32=tuple(crcs),
    )


class ShardReader:
    """Read-only access to one shard. Metadata is read on open; audio on demand."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        manifest_path: str | os.PathLike[str] | None = None,
        *,
        verify: bool = True,
    ) -> None:
        self.path = Path(path)
        self.manifest_path = manifest_path
        self.verify = verify
        try:
            self._group = zarr.open_group(self.path, mode="r", zarr_format=3)
            self._audio = self._group["audio"]
            self.offsets: np.ndarray = np.asarray(self._group["offsets"][:], dtype=np.int64)
            self.clip_ids: list[str] = [str(s) for s in self._group["clip_ids"][:]]
            self.attrs: dict[str, Any] = dict(self._group.attrs)
        except Exception as e:  # zarr raises several types for a missing or broken group
            raise ShardError(
                f"{self.path.name}: cannot open shard ({type(e).__name__}: {e})"
            ) from e
        try:
            self.stored = parse_shard_attributes(
                self.attrs, len(self.clip_ids), int(self._audio.shape[0]), self._damaged
            )
        except ShardDamaged:
            raise
        except ShardError as e:
            raise ShardError(f"{self.path.name}: {e}") from None
        if len(self.offsets) != len(self.clip_ids) + 1:
            raise self._damaged(f"{len(self.clip_ids)} clip ids but {len(self.offsets)} offsets")
        self._crcs: list[int] = list(self.stored.clip_crc32)
        if verify:
            self._check_layout()

    def _damaged(self, what: str) -> ShardDamaged:
        """The one-line error for a damaged shard: where, what, and the repair command."""
        return ShardDamaged(
            f"{self.path}: damaged shard ({what}); repair it with "
            f"`{repair_command(self.manifest_path)}`"
        )

    def _check_layout(self) -> None:
        """Offsets, CRC list and chunk presence agree with the audio array (cheap: metadata)."""
        offsets, total = self.offsets, self.total_samples
        if self.offsets.size and (
            offsets[0] != 0 or int(offsets[-1]) != total or np.any(np.diff(offsets) <= 0)
        ):
            raise self._damaged(
                "offsets do not run from 0 to the stored length in increasing steps"
            )
        if total > 0:
            try:
                present = self._audio.nchunks_initialized
            except Exception as e:  # a store that cannot be listed
                raise self._damaged(f"audio chunks cannot be listed: {type(e).__name__}") from e
            if present == 0:
                raise self._damaged("its audio chunk file is missing")

    def __len__(self) -> int:
        return len(self.clip_ids)

    @property
    def num_views(self) -> int:
        """Rows stored per clip: 1 + N."""
        return int(self._audio.shape[0])

    @property
    def total_samples(self) -> int:
        return int(self._audio.shape[1])

    def read_int16(self, i0: int, i1: int, views: Sequence[int] | None = None) -> np.ndarray:
        """Raw int16 samples of clips i0..i1-1 as one (rows, T) block: a single zarr read.

        A reader opened with ``verify`` (the default; only ``validate`` turns it off, to
        report every damaged clip itself) checks each clip's samples against the CRC-32
        written with them; a mismatch raises :class:`ShardDamaged`, naming the shard and the
        repair command. All
        rows are read for that (a chunk holds every row, so this costs no extra decoding) and
        the requested ``views`` are selected afterwards.
        """
        a, b = int(self.offsets[i0]), int(self.offsets[i1])
        try:
            block = np.asarray(self._audio[:, a:b])
        except Exception as e:  # codecs raise many types on truncated or garbled bytes
            if not self.verify:
                raise
            raise self._damaged(f"audio cannot be decoded: {type(e).__name__}") from e
        if self.verify:
            for i in range(i0, i1):
                lo, hi = int(self.offsets[i]) - a, int(self.offsets[i + 1]) - a
                if not self.crc_matches(i, block[:, lo:hi]):
                    raise self._damaged(
                        f"clip {self.clip_ids[i]!r} does not match the CRC-32 written with it"
                    )
        if views is None:
            return block
        rows = list(views)
        if rows == list(range(rows[0], rows[-1] + 1)):
            return block[rows[0] : rows[-1] + 1]
        return block[rows]

    def crc_matches(self, i: int, samples: np.ndarray) -> bool:
        """Whether ``samples`` (clip i's stored int16 rows) match the CRC-32 written with
        them (True when the shard lists no CRC for clip i)."""
        if i >= len(self._crcs):
            return True
        return zlib.crc32(np.ascontiguousarray(samples).tobytes()) == self._crcs[i]

    def read_range(
        self, i0: int, i1: int, views: Sequence[int] | None = None, *, raw: bool = False
    ) -> list[np.ndarray]:
        """Clips i0..i1-1 as float32 arrays of shape (rows, T_i), read in one zarr call.

        Every clip read is verified against its CRC-32 (see :meth:`read_int16`).

        With ``raw`` they are the stored int16 samples instead (views into one block), for
        a reader that keeps only part of each clip and converts just that part
        (:func:`int16_to_float`).
        """
        if not 0 <= i0 <= i1 <= len(self):
            raise IndexError(f"{self.path.name}: clip range {i0}:{i1} outside 0:{len(self)}")
        if i0 == i1:
            return []
        block = self.read_int16(i0, i1, views)
        if not raw:
            block = int16_to_float(block)
        base = int(self.offsets[i0])
        return [
            block[:, int(self.offsets[i]) - base : int(self.offsets[i + 1]) - base]
            for i in range(i0, i1)
        ]

    def read_clip(self, i: int, views: Sequence[int] | None = None) -> np.ndarray:
        """Clip i as float32 (rows, T_i)."""
        return self.read_range(i, i + 1, views)[0]

    def drawn(self, i: int) -> list[dict[str, Any]]:
        """Parameters drawn for views 1..N of clip i."""
        return [dict(record) for record in self.stored.drawn[i]]

    def checksum(self) -> str:
        """Recompute the content checksum (reads the whole shard)."""
        return content_checksum(np.asarray(self._audio[:]), self.offsets, self.clip_ids)

    def clip_crc_mismatches(self, audio: np.ndarray | None = None) -> list[str]:
        """Ids of clips whose stored samples no longer match their CRC-32."""
        audio = np.asarray(self._audio[:]) if audio is None else audio
        return [
            cid
            for i, (cid, (a, b)) in enumerate(
                zip(self.clip_ids, _spans(self.offsets), strict=False)
            )
            if not self.crc_matches(i, audio[:, a:b])
        ]


def membership_problem(
    reader: ShardReader, manifest: Any, view_set: ViewSet, entry: Any
) -> str | None:
    """Why the shard ``reader`` holds is not shard ``entry`` of ``view_set`` of ``manifest``,
    or None. Raises :class:`ShardDamaged` when the difference is damage (a clip whose
    samples no longer match their CRC-32), not another shard.

    Compared, cheapest first: the view-set attributes (``kind``, ``views``, ``seed``,
    ``key``, ``params`` and those perturb records: a shard copied from another view set's
    folder), the clip count and stored samples the manifest lists, the clip ids (every one a
    clip of the manifest that did not fail in this view set) and their lengths, and the
    content checksum (the ``checksum`` attribute; a shard written before that attribute
    existed is read whole once and checksummed).
    """
    from pipeline.viewset import ShardAttributes, length_mismatches

    expected = ShardAttributes.for_shard(view_set, manifest.dataset, entry.index)
    problems = ShardAttributes.from_dict(reader.attrs).mismatches(expected)
    if problems:
        return problems[0]
    if len(reader) != entry.clips or reader.total_samples != entry.samples:
        return (
            f"it stores {len(reader)} clip(s) and {reader.total_samples} samples but the "
            f"manifest lists {entry.clips} and {entry.samples}"
        )
    clips = manifest.clip_by_id()
    failed = {f.id for f in view_set.failures}
    for cid in reader.clip_ids:
        if cid not in clips:
            return f"clip {cid!r} is not in the manifest"
        if cid in failed:
            return f"clip {cid!r} failed in this view set, yet the shard stores it"
    mismatches = length_mismatches(reader.clip_ids, reader.offsets, clips)
    recorded = reader.attrs.get("checksum")
    if mismatches or not isinstance(recorded, str):
        # Damage first (edited offsets change lengths too; damaged audio changes the
        # checksum): a shard another manifest wrote is whole, only not this manifest's.
        try:
            audio = np.asarray(reader._audio[:])
        except Exception as e:  # codecs raise many types on truncated or garbled bytes
            raise reader._damaged(f"audio cannot be decoded: {type(e).__name__}") from e
        damaged = reader.clip_crc_mismatches(audio)
        if damaged:
            raise reader._damaged(f"clip {damaged[0]!r} does not match the CRC-32 written with it")
        if mismatches:
            cid, stored, want = mismatches[0]
            return f"clip {cid!r} has {stored} samples there but {want} in the manifest"
        recorded = content_checksum(audio, reader.offsets, reader.clip_ids)
    if recorded != entry.checksum:
        return (
            f"its content checksum {recorded[:19]}... is not the {entry.checksum[:19]}... "
            "the manifest lists"
        )
    return None


def open_shard(
    manifest: Any,
    manifest_path: str | os.PathLike[str],
    view_set: ViewSet,
    entry: Any,
    *,
    verify: bool = True,
) -> ShardReader:
    """A reader of shard ``entry`` of ``view_set``, refused in one line
    (:class:`ShardForeign`) when the folder holds another shard (:func:`membership_problem`):
    the one place every reader of a manifest's shards opens them through."""
    from pipeline.manifest import view_set_folder_name

    path = view_set.folder_path(manifest_path) / entry.path
    reader = ShardReader(path, manifest_path, verify=verify)
    problem = membership_problem(reader, manifest, view_set, entry)
    if problem is not None:
        name = view_set_folder_name(view_set.kind, view_set.views, view_set.key)
        raise ShardForeign(
            f"{path}: not the shard {manifest_path} lists for view set {name} ({problem}); "
            "the view set does not belong to this manifest: another manifest or view set "
            "wrote this folder (give each corpus its own --name and perturb it again)"
        )
    return reader


def open_view_set(
    manifest: Any,
    manifest_path: str | os.PathLike[str],
    kind: str | ViewSet,
    views: int | None = None,
    *,
    verify: bool = True,
) -> tuple[ViewSet, list[ShardReader]]:
    """A view set (``kind``'s largest with at least ``views`` views, or the :class:`ViewSet`
    given) and a checked reader (:func:`open_shard`) per complete shard, in shard order.

    Raises :class:`pipeline.manifest.ManifestError` when the manifest has no such view set.
    """
    view_set = manifest.view_set(kind, views) if isinstance(kind, str) else kind
    entries = sorted(view_set.shards, key=lambda s: s.index)
    return view_set, [
        open_shard(manifest, manifest_path, view_set, e, verify=verify) for e in entries
    ]
