"""The view-set contract shared by the writers of views and by validation.

A view set (``cache/<dataset>/<kind>-n<N>-<key>/``) is defined by four things that the
stage that writes it (``pipeline/prep.py``, ``pipeline.shards.write_view_set``) and the
check that re-reads it (``pipeline/qa.py``) must agree on, so they live here and nowhere
else:

- :func:`view_set_key`: the hash of everything that determines a view set's bytes (the
  sources' checksums included, :func:`source_digest`), :func:`expected_key`, the key a
  recorded view set's settings hash to, and :func:`key_matches`, which also accepts the key
  view sets were given before the sources entered it;
- :func:`shard_members`: which clips go into which shard (the manifest's clips in order,
  ``shard_size`` at a time), decided before any work is submitted, and :func:`shard_name`,
  the folder each shard is stored in;
- :class:`ShardAttributes`: the frozen record of view-set settings every shard carries as
  Zarr attributes (beside its per-clip ``drawn`` and ``clip_crc32``), built by
  :meth:`ShardAttributes.for_shard` for the writer and compared by
  :meth:`ShardAttributes.mismatches` for validation.

This module imports nothing heavy (no numpy, zarr or pyworld), so a command that only plans
or finds nothing to do stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.manifest import (
    LEGACY_F0_CEIL_HZ,
    LEGACY_F0_FLOOR_HZ,
    SAMPLE_RATE,
    Manifest,
    ViewSet,
    shard_name,
    view_set_folder_name,
)

__all__ = [
    "ShardAttributes",
    "cache_folder",
    "cache_folder_problem",
    "expected_key",
    "key_matches",
    "legacy_key",
    "shard_members",
    "shard_name",
    "source_digest",
    "view_set_key",
]


def _f0_range(f0_floor_hz: float, f0_ceil_hz: float) -> dict[str, float]:
    """The F0 range as it enters keys and attributes: nothing for WORLD's defaults, 71-800 Hz.

    View sets made before the range became an option, and those made while 71-800 Hz was the
    toolkit's default, used WORLD's range; leaving it out keeps their keys, folders and shard
    bytes unchanged. Any other range, the toolkit's default 71-2000 Hz included, is in the key,
    so raising the default made new keys: an old view set is never taken for a new one.
    """
    if float(f0_floor_hz) == LEGACY_F0_FLOOR_HZ and float(f0_ceil_hz) == LEGACY_F0_CEIL_HZ:
        return {}
    return {"f0_floor_hz": float(f0_floor_hz), "f0_ceil_hz": float(f0_ceil_hz)}


def view_set_key(
    dataset: str,
    kind: str,
    views: int,
    seed: int,
    params: Mapping[str, Any],
    f0_method: str,
    shard_size: int,
    clip_ids: Sequence[str],
    sample_rate: int = SAMPLE_RATE,
    code_version: str | None = None,
    f0_floor_hz: float = LEGACY_F0_FLOOR_HZ,
    f0_ceil_hz: float = LEGACY_F0_CEIL_HZ,
    sources: str | None = None,
) -> str:
    """A 10-hex-digit hash of everything that determines a view set's bytes.

    Besides what determines the views (kind, parameters, N, seed, F0 method and F0 search
    range in Hz (left out when it is WORLD's 71-800 Hz, which is also what omitting it
    means here), sample rate, perturbation code version: ``PERTURB_VERSION`` of
    ``pipeline/perturb.py`` when None) it covers the shard layout (shard size and the
    ordered clip ids), so a rebuilt manifest or another shard size never reuses shards cut
    differently, and the audio itself: ``sources`` (:func:`source_digest` of the manifest's
    clips) makes two corpora imported under one dataset name with the same clip ids get two
    keys, so two folders. None (a manifest that records no checksums) leaves it out.
    """
    if code_version is None:
        from pipeline.perturb import PERTURB_VERSION

        code_version = PERTURB_VERSION
    corpus = hashlib.sha256("\x1f".join(clip_ids).encode("utf-8")).hexdigest()
    payload = {
        "dataset": dataset,
        "kind": kind,
        "views": int(views),
        "seed": int(seed),
        "params": dict(params),
        "f0_method": f0_method,
        "shard_size": int(shard_size),
        "sample_rate": int(sample_rate),
        "code_version": str(code_version),
        "clips": corpus,
        **_f0_range(f0_floor_hz, f0_ceil_hz),
        **({"sources": sources} if sources is not None else {}),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=5).hexdigest()


def source_digest(manifest: Manifest) -> str | None:
    """A SHA-256 over every clip's recorded source checksum and size, in clip order (None
    when the manifest records no checksum: one written before they were recorded)."""
    if not any(c.source_sha256 for c in manifest.clips):
        return None
    text = "\x1e".join(f"{c.id}\x1f{c.source_sha256}\x1f{c.source_bytes}" for c in manifest.clips)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def expected_key(manifest: Manifest, view_set: ViewSet) -> str:
    """The key that ``view_set``'s recorded settings and the manifest's clips and sources
    hash to: the key ``ncore-prep perturb`` gives it today."""
    return _key_of(manifest, view_set, source_digest(manifest))


def legacy_key(manifest: Manifest, view_set: ViewSet) -> str:
    """The key the same settings had before the sources' checksums entered the key."""
    return _key_of(manifest, view_set, None)


def key_matches(manifest: Manifest, view_set: ViewSet) -> bool:
    """Whether ``view_set``'s key is what its settings hash to, today or before the sources
    entered the key (such a view set is still read: every reader compares each shard with
    the checksum its manifest lists, ``pipeline.shards.open_shard``)."""
    return view_set.key in (expected_key(manifest, view_set), legacy_key(manifest, view_set))


def _key_of(manifest: Manifest, view_set: ViewSet, sources: str | None) -> str:
    return view_set_key(
        manifest.dataset,
        view_set.kind,
        view_set.views,
        view_set.seed,
        view_set.params,
        view_set.f0_method,
        view_set.shard_size,
        [c.id for c in manifest.clips],
        manifest.sample_rate,
        view_set.code_version,
        view_set.f0_floor_hz,
        view_set.f0_ceil_hz,
        sources,
    )


def cache_folder(cache_dir: str | os.PathLike[str], dataset: str, view_set: ViewSet) -> Path:
    """The folder the toolkit gives ``view_set`` under cache root ``cache_dir``:
    ``<cache_dir>/<dataset>/<kind>-n<N>-<key>``."""
    return (
        Path(cache_dir)
        / dataset
        / view_set_folder_name(view_set.kind, view_set.views, view_set.key)
    )


def cache_folder_problem(
    manifest: Manifest,
    manifest_path: str | os.PathLike[str],
    view_set: ViewSet,
    cache_dir: str | os.PathLike[str] | None,
) -> str | None:
    """Why ``view_set``'s recorded folder is not one ``ncore-prep perturb`` may write into or
    delete in, or None.

    The folder, symlinks resolved, must be exactly :func:`cache_folder` of the cache root,
    symlinks resolved too: ``cache_dir`` when given (``perturb --cache-dir``), else the root
    the manifest records (its folder's grandparent, for a repair). So a folder that merely
    ends with the view set's name (``../../elsewhere/speaker-n2-<key>``), a folder under
    another cache root, and a view-set folder (or dataset folder) that is a symlink out of
    the cache root are all refused before anything is written or deleted.
    """
    # The recorded folder as written (relative to the manifest's real folder), not resolved:
    # the root a repair uses is read from it lexically, and symlinks are resolved below.
    base = os.path.realpath(Path(manifest_path).parent)
    recorded = Path(os.path.normpath(os.path.join(base, view_set.folder)))
    root = Path(os.path.abspath(cache_dir)) if cache_dir is not None else recorded.parent.parent
    expected = cache_folder(root, manifest.dataset, view_set)
    real_root = os.path.realpath(root)
    if os.path.realpath(recorded) == os.path.join(
        real_root, manifest.dataset, expected.name
    ) and os.path.realpath(expected.parent) == os.path.join(real_root, manifest.dataset):
        return None
    return (
        f"view set {view_set_folder_name(view_set.kind, view_set.views, view_set.key)}: its "
        f"folder {view_set.folder[:120]!r} is not {str(expected)!r}, the folder this toolkit "
        "gives it under the cache root (symlinks resolved); nothing was written there. "
        "Pass the cache root it lives in with --cache-dir, or perturb again into a new view set"
    )


def length_mismatches(
    clip_ids: Sequence[str], offsets: Sequence[int], clips: Mapping[str, Any]
) -> list[tuple[str, int, int]]:
    """``(clip id, stored samples, manifest samples)`` of every clip a shard stores (ids and
    offsets, in order) at another length than the manifest's ``clips`` record; clips the
    manifest does not list are left to the caller."""
    found = []
    for i, cid in enumerate(clip_ids):
        clip = clips.get(cid)
        stored = int(offsets[i + 1]) - int(offsets[i])
        if clip is not None and stored != clip.num_samples:
            found.append((cid, stored, clip.num_samples))
    return found


def shard_members(manifest: Manifest, shard_size: int) -> list[list[str]]:
    """Clip ids of each shard: the manifest's clips in order, ``shard_size`` at a time."""
    ids = [c.id for c in manifest.clips]
    return [ids[i : i + shard_size] for i in range(0, len(ids), shard_size)]


@dataclass(frozen=True)
class ShardAttributes:
    """The view-set settings a shard carries as Zarr attributes.

    ``kind``, ``views``, ``seed``, ``key`` and ``params`` are always there. The others are
    written by ``ncore-prep perturb`` (``f0_method``, ``code_version``, ``dataset``,
    ``shard_index``; the F0 range only when it is not WORLD's 71-800 Hz) and are
    None for shards written by ``pipeline.shards.write_view_set`` from views made elsewhere.
    :meth:`to_dict` omits None fields and keeps a fixed order, so the bytes of a shard do
    not depend on who built the record.
    """

    kind: str
    views: int
    seed: int
    key: str
    params: dict[str, Any]
    f0_method: str | None = None
    code_version: str | None = None
    dataset: str | None = None
    shard_index: int | None = None
    f0_floor_hz: float | None = None
    f0_ceil_hz: float | None = None

    @classmethod
    def for_shard(cls, view_set: ViewSet, dataset: str, index: int) -> ShardAttributes:
        """The attributes shard ``index`` of ``view_set`` (of manifest ``dataset``) carries."""
        f0_range = _f0_range(view_set.f0_floor_hz, view_set.f0_ceil_hz)
        return cls(
            kind=view_set.kind,
            views=view_set.views,
            seed=view_set.seed,
            key=view_set.key,
            params=dict(view_set.params),
            f0_method=view_set.f0_method,
            code_version=view_set.code_version,
            dataset=dataset,
            shard_index=index,
            f0_floor_hz=f0_range.get("f0_floor_hz"),
            f0_ceil_hz=f0_range.get("f0_ceil_hz"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The attributes to store, in a fixed order, without the fields that are None."""
        fields = (
            "kind", "views", "seed", "key", "params", "f0_method", "code_version", "dataset",
            "shard_index", "f0_floor_hz", "f0_ceil_hz",
        )  # fmt: skip
        return {name: getattr(self, name) for name in fields if getattr(self, name) is not None}

    @classmethod
    def from_dict(cls, attrs: Mapping[str, Any]) -> ShardAttributes:
        """The record of a shard's attributes (other attributes, e.g. ``drawn``, ignored).

        Missing required fields become None-like placeholders so that validation can
        report every mismatch instead of failing on the first.
        """
        return cls(
            kind=attrs.get("kind"),  # type: ignore[arg-type]
            views=attrs.get("views"),  # type: ignore[arg-type]
            seed=attrs.get("seed"),  # type: ignore[arg-type]
            key=attrs.get("key"),  # type: ignore[arg-type]
            params=attrs.get("params"),  # type: ignore[arg-type]
            f0_method=attrs.get("f0_method"),
            code_version=attrs.get("code_version"),
            dataset=attrs.get("dataset"),
            shard_index=attrs.get("shard_index"),
            f0_floor_hz=attrs.get("f0_floor_hz"),
            f0_ceil_hz=attrs.get("f0_ceil_hz"),
        )

    def mismatches(self, expected: ShardAttributes) -> list[str]:
        """One message per field that differs from ``expected`` (the writer's record).

        The always-present fields must match; an optional field is compared when this
        shard records it (a shard from ``write_view_set`` has none of them), and the F0
        range also when only ``expected`` records one.
        """
        problems = []
        for name in ("kind", "views", "seed", "key", "params"):
            have, want = getattr(self, name), getattr(expected, name)
            if have != want:
                problems.append(f"attribute {name}={have!r} but the view set says {want!r}")
        for name in ("f0_method", "code_version", "dataset", "shard_index"):
            have, want = getattr(self, name), getattr(expected, name)
            if have is not None and have != want:
                problems.append(f"attribute {name}={have!r} but the view set says {want!r}")
        written_by_prep = self.f0_method is not None
        for name in ("f0_floor_hz", "f0_ceil_hz"):
            have, want = getattr(self, name), getattr(expected, name)
            if (have is not None or (written_by_prep and want is not None)) and have != want:
                problems.append(f"attribute {name}={have!r} but the view set says {want!r}")
        return problems
