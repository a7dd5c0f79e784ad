"""``ncore-prep listen MANIFEST DIR`` (alias ``inspect MANIFEST --html DIR``): an offline
page to listen to cached views.

The folder it writes opens from ``file://`` with no network: ``index.html`` (inline CSS and
a few lines of script, no CDN, no web font), ``audio/`` and ``img/``. ``index.html`` is
``pipeline/templates/listen.html.j2`` (jinja2, autoescape on) rendered over a view model of
frozen records (:class:`PageView`), with ``listen.css`` and ``listen.js`` inlined.

For each chosen view set the page has a header (kind, N, seed, key, parameters, clips in =
stored + failed, bytes per second of audio, the failures with their reasons, and the
selectivity table when ``ncore-prep selectivity`` has measured it), then a grid: one row
per sampled clip (label, speaker, duration, split) and one cell per row of the shard (the
original, then views 1..N), each with an audio player, a spectrogram thumbnail with the F0
track and the parameters drawn for that view.

- The audio is the shard's own int16 data written losslessly (WAV or FLAC, 16 kHz,
  PCM_16): what the trainer reads, not a re-rendering.
- Each shard is read once, in one zarr call covering the sampled clips it holds; shards
  holding no sampled clip are never opened. Memory is one view set's sampled clips.
- Files are named by a hash of their samples, so the original (row 0, identical in every
  view set) is written and drawn once; the same command gives the same bytes.
- The page writes only into a folder it created, an empty one, or one holding its own
  ownership record (``.ncore-page.json``: the files it wrote there); anything else is
  refused in one line. Every file it writes is listed in the record before it is
  written, each is written atomically, ``index.html`` last; then the files of the previous
  page that the new one does not use are deleted. Nothing else in the folder is touched,
  and a kill at any point leaves the previous page or the new one whole, with no file
  that the next build does not know about.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import struct
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import kill_point, probe_writable, write_bytes, write_text
from pipeline.inspection import (
    F0_CEIL_HZ,
    F0_FLOOR_HZ,
    InspectError,
    f0_track,
    flat_params,
    folder_bytes,
    human_bytes,
    short_value,
)
from pipeline.manifest import SAMPLE_RATE, Clip, Manifest, ViewSet
from pipeline.reader import LocatedManifest
from pipeline.rng import make_rng

AUDIO_FORMATS = ("wav", "flac")
GENERATOR = "ncore-prep inspect --html"  # the page's <meta name="generator">
# The page folder's ownership record: the files this toolkit wrote there. A folder is
# written into only when it is new, empty or holds this record, and only the files listed
# in it are ever replaced or deleted (a user's NOTES.md beside the page survives).
OWNER_FILE = ".ncore-page.json"
OWNER_SCHEMA = 1
THUMB_WIDTH = 200  # px; every cell of a row spans the clip's whole duration (N = 5: 1440 px)
THUMB_HEIGHT = 80  # px
SPEC_FMIN_HZ = 50.0
SPEC_FMAX_HZ = SAMPLE_RATE / 2
SPEC_NFFT = 1024  # 64 ms: resolves harmonics down to about 100 Hz
SPEC_RANGE_DB = 70.0  # each thumbnail shows its loudest 70 dB
F0_METHOD = "dio"  # dio + stonemask: 25x faster than harvest, plenty for a thumbnail
# dio's search on a signal decimated 2x (8 kHz, well above the 1 kHz ceiling): 1.6x faster;
# on 20 synthetic clips the median distance to harvest stayed 1.6 cents, voicing 99.5 % equal.
F0_DIO_SPEED = 2
F0_RGB = (80, 230, 255)  # cyan: visible on every colour of the magma map
MAX_LISTED_FAILURES = 200


@dataclass(frozen=True)
class ListenOptions:
    """What goes on the page.

    ``view_sets``: selectors (kind, key or folder name), all view sets when empty;
    ``per_label``: clips drawn per emotion label (all of a label's clips when it has fewer);
    ``seed``: seed of that draw; ``clip_ids``: these clips instead of a draw;
    ``audio_format``: "wav" or "flac" (both lossless); ``workers``: processes drawing the
    thumbnails (None: one per core, 1: in this process).
    """

    view_sets: tuple[str, ...] = ()
    per_label: int = 10
    seed: int = 0
    clip_ids: tuple[str, ...] = ()
    audio_format: str = "wav"
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.per_label < 1:
            raise InspectError(f"--per-label must be >= 1, got {self.per_label}")
        if self.seed < 0:
            raise InspectError(f"--sample-seed must be >= 0, got {self.seed}")
        if self.audio_format not in AUDIO_FORMATS:
            raise InspectError(
                f"--audio-format must be one of {', '.join(AUDIO_FORMATS)}, "
                f"got {self.audio_format!r}"
            )
        if self.workers is not None and self.workers < 1:
            raise InspectError(f"--workers must be >= 1, got {self.workers}")


@dataclass
class ListenPage:
    """What :func:`build_page` wrote: the page, its counts, and how long it took (s)."""

    index: Path
    view_sets: int
    clips: int
    cells: int
    files: int
    audio_seconds: float
    shards_read: int
    seconds: float
    view: PageView  # what the page shows, as the template received it

    def summary(self) -> str:
        return (
            f"wrote {self.index}: {self.view_sets} view set(s), {self.clips} clips, "
            f"{self.cells} players ({self.files} audio files, {self.audio_seconds:.1f} s of "
            f"audio) from {self.shards_read} shard(s) in {self.seconds:.1f} s"
        )


# ---------------------------------------------------------------- choosing what to show


def select_view_sets(m: Manifest, selectors: Sequence[str]) -> list[ViewSet]:
    """The view sets named by ``selectors`` (kind, key or folder name), in manifest order."""
    if not m.view_sets:
        raise InspectError(
            f"manifest {m.dataset!r} has no view set; run `ncore-prep perturb` first"
        )
    if not selectors:
        return list(m.view_sets)
    chosen = []
    for sel in selectors:
        hits = [vs for vs in m.view_sets if sel in (vs.kind, vs.key, Path(vs.folder).name)]
        if not hits:
            known = ", ".join(f"{vs.kind} ({Path(vs.folder).name})" for vs in m.view_sets)
            raise InspectError(f"no view set matches {sel!r}; the manifest has: {known}")
        chosen.extend(vs for vs in hits if vs not in chosen)
    return [vs for vs in m.view_sets if vs in chosen]


def sample_clips(m: Manifest, per_label: int, seed: int) -> list[Clip]:
    """Up to ``per_label`` clips of every emotion label, drawn without replacement.

    Each label's draw has its own generator, seeded from (seed, label), so adding a label
    or changing ``per_label`` elsewhere does not change a label's clips. Returned sorted by
    label (vocabulary order), speaker and id.
    """
    chosen: list[Clip] = []
    for label in m.labels["emotion"]:
        pool = [c for c in m.clips if c.emotion == label]
        if len(pool) <= per_label:
            chosen.extend(pool)
            continue
        rng = make_rng(seed, "listen", label)
        picks = rng.choice(len(pool), size=per_label, replace=False)
        chosen.extend(pool[int(i)] for i in picks)
    return _sorted_clips(m, chosen)


def _sorted_clips(m: Manifest, clips: Sequence[Clip]) -> list[Clip]:
    emotion = m.label_index("emotion")
    speaker = m.label_index("speaker")
    return sorted(clips, key=lambda c: (emotion[c.emotion], speaker[c.speaker], c.id))


def clips_by_id(m: Manifest, ids: Sequence[str]) -> list[Clip]:
    """The clips ``ids`` (sorted like a sample); an unknown id is an :class:`InspectError`."""
    known = m.clip_by_id()
    failed = {f.id: f.reason for f in m.failures}
    for cid in ids:
        if cid in failed:
            raise InspectError(f"clip {cid} was not imported: {failed[cid]}")
        if cid not in known:
            example = ", ".join(c.id for c in m.clips[:3])
            raise InspectError(f"clip {cid} is not in the manifest (ids look like: {example})")
    return _sorted_clips(m, [known[cid] for cid in dict.fromkeys(ids)])


# ---------------------------------------------------------------- reading the shards


@dataclass
class ClipViews:
    """A clip's rows in one view set: int16 (1 + N, T) and the drawn parameters of 1..N,
    or ``note`` saying why there are none (failed, shard not computed, damaged)."""

    rows: np.ndarray | None = None
    drawn: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None


def read_view_set(
    source: LocatedManifest, vs: ViewSet, clips: Sequence[Clip]
) -> tuple[dict[str, ClipViews], int]:
    """The rows of ``clips`` in ``vs``, one zarr read per shard; (by clip id, shards read).

    Read through ``pipeline.reader.read_clips`` with ``mark``: a damaged clip is marked on
    the page instead of refusing the whole shard; a shard that is not the one this manifest
    lists (another view set's or manifest's) is refused."""
    from pipeline.reader import read_clips
    from pipeline.shards import ShardError

    try:
        stored = read_clips(source, vs, [c.id for c in clips], mark=True)
    except (ShardError, ValueError, OSError) as e:
        raise InspectError(str(e)) from None
    out: dict[str, ClipViews] = {}
    for cid, clip in stored.items():
        if clip.status == "failed":
            out[cid] = ClipViews(note=f"failed: {clip.reason}")
        elif clip.status == "missing":
            out[cid] = ClipViews(note=f"shard {clip.shard} not computed yet (re-run perturb)")
        elif clip.status == "damaged shard":
            out[cid] = ClipViews(note=f"damaged: {_first_words(clip.reason, clip.shard_path)}")
        elif clip.status == "damaged":
            out[cid] = ClipViews(note=f"damaged: {clip.reason} in {clip.shard_path}")
        else:
            out[cid] = ClipViews(rows=clip.rows, drawn=clip.drawn)
    return out, len({c.shard for c in stored.values() if c.status not in ("failed", "missing")})


def _first_words(error: str, shard: str) -> str:
    """A damaged shard's reason for a page note: what is wrong, without the paths."""
    text, opening = error, "damaged shard ("
    start, end = text.find(opening), text.rfind("); repair it")
    inner = text[start + len(opening) : end] if 0 <= start < end else text
    return f"{inner[:120]} in {shard} (run ncore-prep validate --repair)"


# ---------------------------------------------------------------- drawing the thumbnails


@dataclass(frozen=True)
class Thumbnail:
    """A row's spectrogram PNG and the numbers printed under it."""

    png: bytes
    f0_median_hz: float | None  # median voiced F0, None when nothing is voiced
    rms_dbfs: float | None  # None for digital silence


_MAGMA: np.ndarray | None = None


def _colormap() -> np.ndarray:
    """matplotlib's magma as a (256, 3) uint8 lookup table (taken once per process)."""
    global _MAGMA
    if _MAGMA is None:
        from matplotlib import colormaps

        _MAGMA = (colormaps["magma"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round()
        _MAGMA = _MAGMA.astype(np.uint8)
    return _MAGMA


def png_bytes(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of ``rgb`` (H, W, 3) uint8; the same pixels give the same bytes."""
    height, width, _ = rgb.shape
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, -1)], axis=1)

    def chunk(tag: bytes, data: bytes) -> bytes:
        body = tag + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 3))  # smaller and faster than 6 here
        + chunk(b"IEND", b"")
    )


def _row_of(freq_hz: np.ndarray, height: int) -> np.ndarray:
    """Pixel row (0 = top = SPEC_FMAX_HZ) of each frequency on the log axis."""
    span = math.log(SPEC_FMAX_HZ / SPEC_FMIN_HZ)
    return (np.log(SPEC_FMAX_HZ / freq_hz) / span) * (height - 1)


def spectrogram_rgb(
    audio: np.ndarray,
    f0_hz: np.ndarray,
    f0_times_s: np.ndarray,
    width: int = THUMB_WIDTH,
    height: int = THUMB_HEIGHT,
) -> np.ndarray:
    """A (height, width, 3) uint8 spectrogram of ``audio`` (float, 16 kHz) with its F0 track.

    Frequency is on a log axis from SPEC_FMIN_HZ (bottom) to SPEC_FMAX_HZ (top), so the F0
    line sits on the first harmonic and a pitch ratio is a constant vertical shift. One
    column per pixel: a Hann-windowed SPEC_NFFT frame centred on it. Colours: magma over
    the image's loudest SPEC_RANGE_DB dB; digital silence is black.
    """
    x = np.asarray(audio, dtype=np.float64)
    half = SPEC_NFFT // 2
    padded = np.pad(x, (half, half))
    centres = ((np.arange(width) + 0.5) * x.size / width).astype(np.int64)
    frames = padded[centres[:, None] + np.arange(SPEC_NFFT)[None, :]]
    power = np.abs(np.fft.rfft(frames * np.hanning(SPEC_NFFT), axis=1)) ** 2  # (W, bins)
    freqs = np.geomspace(SPEC_FMAX_HZ, SPEC_FMIN_HZ, height)  # top row first
    position = np.minimum(freqs / (SAMPLE_RATE / SPEC_NFFT), power.shape[1] - 1.000001)
    lower = np.floor(position).astype(np.int64)
    weight = position - lower
    image = power[:, lower] * (1.0 - weight) + power[:, lower + 1] * weight  # (W, H)
    db = 10.0 * np.log10(image.T + 1e-20)
    if np.max(np.abs(x), initial=0.0) == 0.0:
        level = np.zeros_like(db)
    else:
        level = np.clip((db - (db.max() - SPEC_RANGE_DB)) / SPEC_RANGE_DB, 0.0, 1.0)
    rgb = _colormap()[np.rint(level * 255).astype(np.int64)]
    if f0_hz.size:
        period = float(f0_times_s[1] - f0_times_s[0]) if f0_hz.size > 1 else 1.0
        frame = np.clip(np.rint(centres / SAMPLE_RATE / period).astype(np.int64), 0, f0_hz.size - 1)
        f0 = f0_hz[frame]
        voiced = (f0 >= SPEC_FMIN_HZ) & (f0 <= SPEC_FMAX_HZ)
        rows = np.rint(_row_of(np.where(voiced, f0, SPEC_FMIN_HZ), height)).astype(np.int64)
        previous: int | None = None
        for col in range(width):
            if not voiced[col]:
                previous = None
                continue
            r = int(rows[col])
            top, bottom = r, r + 1
            if previous is not None and abs(previous - r) <= height // 6:  # join, not octave jumps
                top, bottom = min(top, previous), max(bottom, previous)
            rgb[max(top, 0) : min(bottom, height - 1) + 1, col] = F0_RGB
            previous = r
    return rgb


def draw_thumbnail(samples: np.ndarray) -> Thumbnail:
    """Spectrogram PNG, median F0 and RMS of one stored row (int16 (T,))."""
    x = samples.astype(np.float64) / 32768.0
    f0, times = f0_track(x, method=F0_METHOD, dio_speed=F0_DIO_SPEED)
    voiced = f0[f0 > 0]
    rms = float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0
    return Thumbnail(
        png=png_bytes(spectrogram_rgb(x, f0, times)),
        f0_median_hz=float(np.median(voiced)) if voiced.size else None,
        rms_dbfs=20.0 * math.log10(rms) if rms > 0 else None,
    )


def draw_thumbnails(rows: Sequence[np.ndarray]) -> list[Thumbnail]:
    """:func:`draw_thumbnail` of each row (one task of the process pool)."""
    from pipeline.memory import tune_malloc

    tune_malloc()
    return [draw_thumbnail(r) for r in rows]


# ---------------------------------------------------------------- what the page shows


def row_hash(samples: np.ndarray) -> str:
    """Name of a stored row's files: a hash of its int16 samples (16 hex digits)."""
    data = np.ascontiguousarray(samples, dtype="<i2").tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


# The view model: everything the page shows, as text already formatted, in frozen records
# built from the manifest, the shards and the thumbnails. The template
# (pipeline/templates/listen.html.j2) only lays it out; jinja2's autoescape escapes every
# value it places, whatever its origin (labels, ids, failure reasons, drawn parameters).


@dataclass(frozen=True)
class Param:
    """One drawn parameter of a view: ``name`` then ``value`` in bold; ``key`` is the
    record's key (``data-k``), ``title`` the tooltip, ``css`` the span's classes."""

    key: str
    name: str
    value: str
    title: str | None = None
    css: str = "p"


@dataclass(frozen=True)
class AudioSource:
    """One stored row of a clip (the original or view ``view``): its audio and thumbnail
    files, the median F0 and level under the thumbnail, and the parameters drawn for it."""

    view: int
    name: str  # "original", "view 1", ...
    audio: str  # path relative to the page folder
    image: str
    samples: int
    measure: str  # "F0 212 Hz · -23.4 dBFS"
    params: tuple[Param, ...]
    flags: str  # outcome flags ("silent; peak-limited x0.912"), "" for none
    drawn_json: str  # the exact record, for the cell's data-drawn attribute


@dataclass(frozen=True)
class ClipRow:
    """A clip's row in one view set: its stored rows, or ``note`` saying why there are none."""

    id: str
    emotion: str
    speaker: str
    duration: str  # "0.31 s"
    split: str
    sources: tuple[AudioSource, ...]
    note: str | None = None


@dataclass(frozen=True)
class LabelGroup:
    """The rows of one emotion label, with the anchor the label links jump to."""

    label: str
    anchor: str
    rows: tuple[ClipRow, ...]


@dataclass(frozen=True)
class SelectivityRow:
    """One (label, feature set) of the selectivity table: chance, then per condition the
    balanced accuracy with its 95 % interval ("" where not measured), retained shares, n."""

    label: str
    features: str
    chance: str
    cells: tuple[tuple[str, str], ...]  # (condition, "90.0 [82.0–96.0]")
    retained: str
    n: str


@dataclass(frozen=True)
class SelectivityTable:
    """A view set's selectivity as ``ncore-prep selectivity`` measured it: ``rows`` and
    ``verdicts``; or ``note`` saying why there is none (``measured`` False: never run)."""

    measured: bool
    note: str | None = None
    title: str = ""
    caption: str = ""
    conditions: tuple[str, ...] = ()
    rows: tuple[SelectivityRow, ...] = ()
    verdicts: tuple[str, ...] = ()


@dataclass(frozen=True)
class ViewSetHeader:
    """What a view set's header lists (see the module doc)."""

    kind: str
    views: int
    seed: int
    key: str
    f0_method: str
    code_version: str
    params: tuple[tuple[str, str], ...]  # (name, JSON value)
    clip_counts: str  # "14 in = 12 stored + 2 failed"
    shards: str
    disk: str  # "1.2 MB for 3.4 s of audio"
    bytes_per_second: str  # "12.3 KB"
    folder: str
    failures: tuple[tuple[str, str], ...]  # (clip id, reason), at most MAX_LISTED_FAILURES
    failed: int  # all failures, listed or not
    selectivity: SelectivityTable


@dataclass(frozen=True)
class Section:
    """One view set: its anchor, title, header, column names and rows grouped by label."""

    anchor: str
    title: str
    header: ViewSetHeader
    columns: tuple[str, ...]  # "original", "view 1", ...
    groups: tuple[LabelGroup, ...]

    @property
    def rows(self) -> tuple[ClipRow, ...]:
        return tuple(r for g in self.groups for r in g.rows)


@dataclass(frozen=True)
class PageView:
    """The whole page: the corpus line, the legend, the filters' choices and the sections."""

    dataset: str
    generator: str
    summary: str  # "manifest x.json · 14 clips · shown: ..."
    legend: str
    labels: tuple[str, ...]  # the label filter's choices
    speakers: tuple[str, ...]
    sections: tuple[Section, ...]


def _fmt_ratio(v: Any) -> str:
    return f"{float(v):.3f}"


def view_params(drawn: dict[str, Any]) -> tuple[tuple[Param, ...], str]:
    """The drawn parameters of one view, compact, and its outcome flags.

    p_s: r1 (formant ratio), r2 (pitch ratio), r3 (pitch-range ratio) to 3 decimals and the
    EQ gains in dB (frequencies and Qs in the tooltip); p_e: the permuted bands as
    ``target<-source``. Any other key is shown as ``name=value``. The flags say when F0 was
    left alone, the view is silent or its peak was limited. Values not of the type perturb
    writes are shown as they are, never interpreted.
    """
    parts: list[Param] = []
    rest = dict(drawn)
    for key, name, title in (
        ("formant_ratio", "r1", "formant ratio r1"),
        ("pitch_ratio", "r2", "pitch ratio r2"),
        ("pitch_range_ratio", "r3", "pitch-range ratio r3"),
    ):
        if key in rest:
            value = rest.pop(key)
            shown = _fmt_ratio(value) if _is_number(value) else short_value(value)
            parts.append(Param(key, f"{name} ", shown, title))
    eq = rest.pop("eq", None)
    if _is_eq(eq):
        tip = "EQ: " + "; ".join(
            f"{f:.0f} Hz {g:+.1f} dB Q {q:.2f}"
            for f, g, q in zip(eq["frequencies_hz"], eq["gains_db"], eq["qs"], strict=True)
        )
        gains = " ".join(f"{float(g):+.1f}" for g in eq["gains_db"])
        parts.append(Param("eq.gains_db", "EQ dB ", gains, tip, "p eq"))
    elif eq is not None:
        rest["eq"] = eq
    if "permuted_bands" in rest and "band_sources" in rest:
        targets, sources = rest.pop("permuted_bands"), rest.pop("band_sources")
        if isinstance(targets, list) and isinstance(sources, list):
            pairs = " ".join(f"{t}\u2190{s}" for t, s in zip(targets, sources, strict=False))
            count = len(targets)
        else:
            pairs, count = f"{short_value(targets)} \u2190 {short_value(sources)}", "?"
        title = f"band target\u2190source ({count} bands moved)"
        parts.append(Param("permuted_bands", "bands ", pairs or "none", title, "p bands"))
    flags = []
    if rest.pop("f0_shifted", True) is False:
        flags.append("F0 not shifted (unvoiced)")
    if rest.pop("silent", False):
        flags.append("silent")
    if "rms_scaled" in rest and rest.pop("rms_scaled") is False:
        flags.append("RMS not scaled")
    gain = rest.pop("output_gain", 1.0)
    if _is_number(gain) and gain < 1.0:
        flags.append(f"peak-limited x{gain:.3f}")
    for key in ("voiced_frames", "f0_median_hz"):  # known outcome fields, shown as F0 below
        rest.pop(key, None)
    for key, value in flat_params(rest).items():
        parts.append(Param(key, f"{key}=", short_value(value)))
    return tuple(parts), "; ".join(flags)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_eq(eq: Any) -> bool:
    """An EQ record as perturb writes it: three lists of numbers of one length."""
    if not isinstance(eq, dict) or not {"gains_db", "frequencies_hz", "qs"} <= eq.keys():
        return False
    lists = [eq[k] for k in ("gains_db", "frequencies_hz", "qs")]
    return (
        all(isinstance(v, list) for v in lists)
        and len({len(v) for v in lists}) == 1
        and all(_is_number(x) for v in lists for x in v)
    )


def _measure(t: Thumbnail) -> str:
    f0 = f"F0 {t.f0_median_hz:.0f} Hz" if t.f0_median_hz is not None else "unvoiced"
    rms = f"{t.rms_dbfs:.1f} dBFS" if t.rms_dbfs is not None else "silent"
    return f"{f0} \u00b7 {rms}"


def selectivity_table(folder: Path) -> SelectivityTable:
    """The view set's selectivity (``ncore-prep selectivity``), laid out as ``inspect``'s
    table: per label and feature set, chance, balanced accuracy [95 % interval] in each
    condition, the retained shares and n; then the verdicts. Or why there is none.

    The one place the page reads selectivity records; its rows are selectivity's one row
    walk (``pipeline.selectivity.table_rows``)."""
    from pipeline.selectivity import (
        CONDITIONS,
        PERTURBATION_NAME,
        SelectivityError,
        load_result,
        table_rows,
    )

    try:
        result = load_result(folder)
    except SelectivityError as e:
        return SelectivityTable(measured=True, note=f"selectivity: {e}")
    if result is None:
        return SelectivityTable(measured=False)
    rows = tuple(
        SelectivityRow(
            row.label,
            row.features,
            f"{100 * row.chance:.1f}",
            tuple((c, row.score(c, "html")) for c in CONDITIONS),
            row.retained_text("\u2013", "/"),
            str(row.n),
        )
        for row in table_rows(result)
    )
    return SelectivityTable(
        measured=True,
        title=f"Selectivity of {PERTURBATION_NAME.get(result.kind, result.kind)}",
        caption=(
            f"({result.clips} clips, {result.views_used} view(s) each; balanced accuracy % "
            "[95 % interval]; retained = share of (originals \u2212 floor) left in "
            "views/transfer)"
        ),
        conditions=tuple(CONDITIONS),
        rows=rows,
        verdicts=tuple(result.verdicts),
    )


def view_set_header(m: Manifest, vs: ViewSet, manifest_path: Path) -> ViewSetHeader:
    """The header of ``vs``: its settings, counts, size on disk, failures and selectivity."""
    folder = vs.folder_path(manifest_path)
    stored = sum(s.clips for s in vs.shards)
    seconds = sum(s.samples for s in vs.shards) / SAMPLE_RATE
    on_disk = folder_bytes(folder)
    state = "complete" if vs.complete else "INCOMPLETE"
    return ViewSetHeader(
        kind=vs.kind,
        views=vs.views,
        seed=vs.seed,
        key=vs.key,
        f0_method=vs.f0_method,
        code_version=vs.code_version,
        params=tuple((k, json.dumps(v)) for k, v in vs.params.items()),
        clip_counts=f"{len(m.clips)} in = {stored} stored + {len(vs.failures)} failed",
        shards=f"{len(vs.shards)}/{vs.num_shards} ({state}), {vs.shard_size} clips each",
        disk=f"{human_bytes(on_disk)} for {seconds:.1f} s of audio",
        bytes_per_second=f"{on_disk / seconds / 1024:.1f} KB" if seconds else "n/a",
        folder=vs.folder,
        failures=tuple((f.id, f.reason) for f in vs.failures[:MAX_LISTED_FAILURES]),
        failed=len(vs.failures),
        selectivity=selectivity_table(folder),
    )


def clip_row(
    c: Clip, cv: ClipViews, drawn_rows: dict[str, Thumbnail], audio_format: str
) -> ClipRow:
    """A clip's row: one :class:`AudioSource` per stored row (files named by
    :func:`row_hash`), or the note saying why it has none."""
    sources = []
    for v, row in enumerate(cv.rows if cv.rows is not None else ()):
        h = row_hash(row)
        drawn = cv.drawn[v - 1] if 0 < v <= len(cv.drawn) else {}
        if not isinstance(drawn, dict):
            drawn = {"drawn": drawn}
        params, flags = view_params(drawn) if v else ((), "")
        sources.append(
            AudioSource(
                view=v,
                name="original" if v == 0 else f"view {v}",
                audio=f"audio/{h}.{audio_format}",
                image=f"img/{h}.png",
                samples=int(row.size),
                measure=_measure(drawn_rows[h]),
                params=params,
                flags=flags,
                drawn_json=json.dumps(drawn, sort_keys=True, default=str),
            )
        )
    return ClipRow(
        id=c.id,
        emotion=c.emotion,
        speaker=c.speaker,
        duration=f"{c.duration:.2f} s",
        split=c.split,
        sources=tuple(sources),
        note=cv.note if cv.rows is None else None,
    )


def section_view(
    m: Manifest,
    vs: ViewSet,
    path: Path,
    number: int,
    clips: Sequence[Clip],
    views: dict[str, ClipViews],
    drawn_rows: dict[str, Thumbnail],
    audio_format: str,
) -> Section:
    """View set ``vs`` (the ``number``-th on the page) with the rows of ``clips``."""
    anchor = f"vs{number}"
    labels = list(dict.fromkeys(c.emotion for c in clips))
    groups = tuple(
        LabelGroup(
            label=label,
            anchor=f"{anchor}-label-{i}",
            rows=tuple(
                clip_row(c, views[c.id], drawn_rows, audio_format)
                for c in clips
                if c.emotion == label
            ),
        )
        for i, label in enumerate(labels)
    )
    return Section(
        anchor=anchor,
        title=f"{vs.kind} views, N = {vs.views}, seed {vs.seed}, key {vs.key}",
        header=view_set_header(m, vs, path),
        columns=tuple("original" if i == 0 else f"view {i}" for i in range(1 + vs.views)),
        groups=groups,
    )


def page_view(
    m: Manifest,
    path: Path,
    clips: Sequence[Clip],
    sections: Sequence[Section],
    options: ListenOptions,
) -> PageView:
    """The page around ``sections``: the corpus line, the legend and the filters' choices."""
    how = (
        f"clips {', '.join(options.clip_ids)}"
        if options.clip_ids
        else f"up to {options.per_label} clips per emotion label, sample seed {options.seed}"
    )
    import_failures = (
        f"; {len(m.failures)} clip(s) not imported (ncore-prep inspect lists them)"
        if m.failures
        else ""
    )
    legend = (
        "Each cell: the stored int16 audio of that row (lossless "
        f"{options.audio_format.upper()}); a spectrogram, log frequency "
        f"{SPEC_FMIN_HZ:.0f} Hz\u2013{SPEC_FMAX_HZ / 1000:.0f} kHz, loudest "
        f"{SPEC_RANGE_DB:.0f} dB of the image, with the F0 track in cyan on the same axis "
        f"(WORLD {F0_METHOD} + stonemask, {F0_FLOOR_HZ:.0f}\u2013{F0_CEIL_HZ:.0f} Hz); median "
        "F0 and RMS level. Speaker views: r1 formant ratio, r2 pitch ratio, r3 pitch-range "
        "ratio (below 1 lowers), EQ gains in dB from the 60 Hz low shelf to the high shelf "
        "(hover for frequencies and Qs). Emotion views: STFT bands moved, target\u2190source."
    )
    speaker_order = m.label_index("speaker")
    return PageView(
        dataset=m.dataset,
        generator=GENERATOR,
        summary=(
            f"manifest {path.name} \u00b7 {len(m.clips)} clips{import_failures} "
            f"\u00b7 shown: {how}, {len(clips)} clips"
        ),
        legend=legend,
        labels=tuple(dict.fromkeys(c.emotion for c in clips)),
        speakers=tuple(sorted({c.speaker for c in clips}, key=speaker_order.__getitem__)),
        sections=tuple(sections),
    )


def render_page(page: PageView) -> str:
    """``index.html`` of ``page``: the template with the stylesheet and the script inlined
    (package files beside it), so the page opens from ``file://`` with no server."""
    import jinja2
    from markupsafe import Markup

    templates = resources.files("pipeline") / "templates"
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pipeline", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    # The two package files are trusted source, placed as they are; every value of the
    # view model is escaped by autoescape.
    css = Markup((templates / "listen.css").read_text("utf-8"))
    script = Markup((templates / "listen.js").read_text("utf-8"))
    return env.get_template("listen.html.j2").render(
        page=page, css=css, script=script, thumb_width=THUMB_WIDTH, thumb_height=THUMB_HEIGHT
    )


def build_page(
    manifest_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: ListenOptions = ListenOptions(),
) -> ListenPage:
    """Write the listening page of ``manifest_path`` into ``out_dir``; see the module doc.

    Raises :class:`InspectError` for a request that cannot be met (no view set, unknown
    selector or clip id, unreadable shard, ``out_dir`` holding something other than an
    earlier page) and :class:`pipeline.manifest.ManifestError` for a bad manifest.
    """
    start = time.perf_counter()
    path = Path(manifest_path)
    m = Manifest.load(path)
    out = Path(out_dir)
    previous = _check_out_dir(out)  # before any work: a foreign folder is refused at once
    _check_writable(out)  # before the page's minutes of drawing
    view_sets = select_view_sets(m, options.view_sets)
    clips = (
        clips_by_id(m, options.clip_ids)
        if options.clip_ids
        else sample_clips(m, options.per_label, options.seed)
    )
    drawn_rows: dict[str, Thumbnail] = {}
    sections: list[Section] = []
    cells = shards_read = 0
    audio_seconds = 0.0
    owned = PageFolder(out, previous)
    try:
        with _thumbnail_executor(options.workers) as pool:
            for number, vs in enumerate(view_sets):
                views, read = read_view_set(LocatedManifest(m, path), vs, clips)
                shards_read += read
                _draw_missing(views, drawn_rows, pool, owned, options.audio_format)
                for cv in views.values():
                    if cv.rows is not None:
                        cells += cv.rows.shape[0]
                        audio_seconds += cv.rows.size / SAMPLE_RATE
                sections.append(
                    section_view(
                        m, vs, path, number, clips, views, drawn_rows, options.audio_format
                    )
                )
                del views
        view = page_view(m, path, clips, sections, options)
        kill_point("listen:files")
        owned.write_text("index.html", render_page(view))
        kill_point("listen:index")
        owned.finish()
    except BaseException as e:
        owned.abandon()  # a page begun in a new or empty folder: nothing of it is left
        if isinstance(e, BrokenProcessPool):
            raise InspectError(
                "a process drawing the thumbnails died (out of memory?); try --workers 1"
            ) from None
        raise
    return ListenPage(
        index=out / "index.html",
        view_sets=len(view_sets),
        clips=len(clips),
        cells=cells,
        files=len(drawn_rows),
        audio_seconds=audio_seconds,
        shards_read=shards_read,
        seconds=time.perf_counter() - start,
        view=view,
    )


class PageFolder:
    """The page folder, written only where this toolkit owns it (see the module doc).

    :func:`_check_out_dir` refuses a folder that is not new, not empty and holds no
    ownership record; :meth:`write_bytes` lists a file in the record before writing it (atomically);
    :meth:`finish` deletes the files of the previous page that this one did not write and
    records exactly the files of this page.
    """

    def __init__(self, out: Path, previous: set[str]) -> None:
        self.out = out
        self.created = not out.exists()  # this build makes the folder
        self.previous = previous  # what the record listed before this build
        self.listed = set(previous)  # what the record lists now (previous + this build)
        self.written: set[str] = set()

    def _record(self, files: set[str]) -> None:
        record = {"generator": GENERATOR, "schema_version": OWNER_SCHEMA, "files": sorted(files)}
        write_text(self.out / OWNER_FILE, json.dumps(record, indent=1) + "\n")

    def _remove_stale_temporaries(self) -> None:
        """Temporaries of ``pipeline.atomic.write_bytes`` (``.<name>.<8 hex>.tmp``) of a
        killed build, beside the files this toolkit wrote: in the folders it made only."""
        for folder in (self.out, self.out / "audio", self.out / "img"):
            if folder.is_dir() and not folder.is_symlink():
                for tmp in folder.iterdir():
                    if _ATOMIC_TMP.fullmatch(tmp.name) and tmp.is_file():
                        tmp.unlink()

    def _path(self, rel: str) -> Path:
        target = self.out / rel
        parent = target.parent
        parent.mkdir(exist_ok=True)
        # A folder of the page replaced by a symlink: never written through.
        if os.path.realpath(parent) != os.path.join(
            os.path.realpath(self.out), *Path(rel).parts[:-1]
        ):
            raise InspectError(
                f"--html {self.out}: {parent.name}/ is a link out of the page folder"
            )
        return target

    def list_files(self, rels: Sequence[str]) -> None:
        """Record ``rels`` as this toolkit's before they are written (the folder and its
        record are made at the first file: a build refused before writing leaves nothing)."""
        if not self.out.is_dir():
            self.out.mkdir(parents=True)
        if not (self.out / OWNER_FILE).exists():
            self._record(self.listed)
            self._remove_stale_temporaries()
        new = set(rels) - self.listed
        if new:
            self.listed |= new
            self._record(self.listed)

    def write_bytes(self, rel: str, data: bytes) -> None:
        self.list_files([rel])
        write_bytes(self._path(rel), data)
        self.written.add(rel)
        kill_point("listen:file")

    def write_text(self, rel: str, content: str) -> None:
        self.write_bytes(rel, content.encode("utf-8"))

    def abandon(self) -> None:
        """After a failed build (a full disk, Ctrl-C) in a folder that held no page: delete
        the files this build wrote, its record and temporaries, and the folders it made,
        so nothing is left. A folder holding an earlier page keeps it whole (the next build
        deletes what this one left); a kill leaves what :meth:`list_files` recorded."""
        if self.previous or not self.out.is_dir() or self.out.is_symlink():
            return
        with contextlib.suppress(OSError):
            self._remove_stale_temporaries()
            for rel in sorted(self.listed | self.written):
                target = self.out / rel
                inside = os.path.realpath(target.parent) == os.path.join(
                    os.path.realpath(self.out), *Path(rel).parts[:-1]
                )
                if inside and (target.is_file() or target.is_symlink()):
                    target.unlink()
            (self.out / OWNER_FILE).unlink(missing_ok=True)
            for sub in ("audio", "img"):
                folder = self.out / sub
                if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
                    folder.rmdir()
            if self.created and not any(self.out.iterdir()):
                self.out.rmdir()

    def finish(self) -> None:
        """Delete the previous page's files that this page does not use; record this page's."""
        for rel in sorted(self.previous - self.written):
            target = self.out / rel
            inside = os.path.realpath(target.parent) == os.path.join(
                os.path.realpath(self.out), *Path(rel).parts[:-1]
            )
            if inside and (target.is_file() or target.is_symlink()):
                target.unlink()
        self._record(self.written)
        self.listed = set(self.written)


_ATOMIC_TMP = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")
_OWNED_NAME = re.compile(r"(index\.html|(audio|img)/[0-9a-f]{16}\.(wav|flac|png))")


def _check_writable(out: Path) -> None:
    """Refuse (one line) a page folder that cannot be written (forbidden, read-only or full
    disk) before any drawing: a small probe file is written where the page's files go (the
    folder, already checked new, empty or this toolkit's; else its nearest existing parent,
    where the folder would be made) and removed."""

    from pipeline.atomic import os_reason

    where = out.absolute()
    while not where.is_dir() and where != where.parent:
        where = where.parent
    try:
        probe_writable(where, ".ncore-page.probe-")
    except OSError as e:
        raise InspectError(
            f"{out}: cannot write there ({os_reason(e)}); nothing was written"
        ) from None


def _check_out_dir(out: Path) -> set[str]:
    """The files of the previous page in ``out`` (none for a new or empty folder); refuses
    in one line a path that is not a folder or a non-empty folder this toolkit does not own."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise InspectError(f"--html {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        return _owned_files(out)
    return set()


def _owned_files(out: Path) -> set[str]:
    """The files a non-empty ``out`` records as this toolkit's; refuses a folder without a
    valid record (one line): a folder holding anything else is never written into."""
    record_path = out / OWNER_FILE
    refusal = InspectError(
        f"--html {out}: folder is not empty and was not written by `ncore-prep inspect "
        f"--html` (no {OWNER_FILE}); choose an empty or new folder"
    )
    if not record_path.is_file() or record_path.is_symlink():
        raise refusal
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise refusal from None
    files = record.get("files") if isinstance(record, dict) else None
    if (
        record.get("generator") != GENERATOR
        or record.get("schema_version") != OWNER_SCHEMA
        or not isinstance(files, list)
        or not all(isinstance(f, str) and _OWNED_NAME.fullmatch(f) for f in files)
    ):
        raise refusal
    return set(files)


class _InProcess:
    """The executor interface for ``workers=1``: run each call now, in this process."""

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn, *iterables):
        return map(fn, *iterables)


def _thumbnail_executor(workers: int | None) -> AbstractContextManager[Executor] | _InProcess:
    count = workers if workers is not None else (os.cpu_count() or 1)
    if count <= 1:
        return _InProcess()
    from pipeline.workers import worker_pool

    # Never forked from this process, whose zarr event-loop thread runs; the workers end
    # with the page build (SIGKILL included) and a Ctrl-C terminates them.
    return worker_pool(count)


def _draw_missing(
    views: dict[str, ClipViews],
    drawn_rows: dict[str, Thumbnail],
    pool: Executor | _InProcess,
    owned: PageFolder,
    audio_format: str,
) -> None:
    """Write the audio and draw the thumbnail of every row not written yet."""
    import soundfile as sf

    todo: dict[str, np.ndarray] = {}
    for cv in views.values():
        if cv.rows is None:
            continue
        for row in cv.rows:
            h = row_hash(row)
            if h not in drawn_rows and h not in todo:
                todo[h] = row
    if not todo:
        return
    hashes = list(todo)
    owned.list_files(
        [f"{d}/{h}.{e}" for h in hashes for d, e in (("audio", audio_format), ("img", "png"))]
    )
    # Tasks of about 8 rows: few enough round trips, enough tasks to keep every worker busy.
    batches = [hashes[i : i + 8] for i in range(0, len(hashes), 8)]
    results = list(pool.map(draw_thumbnails, [[todo[h] for h in batch] for batch in batches]))
    subtype = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16")}[audio_format]
    for batch, thumbs in zip(batches, results, strict=True):
        for h, thumb in zip(batch, thumbs, strict=True):
            buffer = io.BytesIO()
            sf.write(buffer, todo[h], SAMPLE_RATE, format=subtype[0], subtype=subtype[1])
            owned.write_bytes(f"audio/{h}.{audio_format}", buffer.getvalue())
            owned.write_bytes(f"img/{h}.png", thumb.png)
            drawn_rows[h] = thumb
