"""``ncore-prep inspect MANIFEST --html DIR``: an offline page to listen to cached views.

The folder it writes opens from ``file://`` with no network: ``index.html`` (inline CSS and
a few lines of script, no CDN, no web font), ``audio/`` and ``img/``. For each chosen view
set the page has a header (kind, N, seed, key, parameters, clips in = stored + failed,
bytes per second of audio, the failures with their reasons, and the selectivity table when
``ncore-prep selectivity`` has measured it), then a grid: one row per sampled clip
(label, speaker, duration, split) and one cell per row of the shard (the original, then
views 1..N), each with an audio player, a spectrogram thumbnail with the F0 track and the
parameters drawn for that view.

- The audio is the shard's own int16 data written losslessly (WAV or FLAC, 16 kHz,
  PCM_16): what the trainer reads, not a re-rendering.
- Each shard is read once, in one zarr call covering the sampled clips it holds; shards
  holding no sampled clip are never opened. Memory is one view set's sampled clips.
- Files are named by a hash of their samples, so the original (row 0, identical in every
  view set) is written and drawn once; the same command gives the same bytes.
- The folder is built under a temporary name and swapped in when complete; an existing
  folder is replaced only when it holds an earlier page (never anything else).
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import math
import os
import struct
import time
import zlib
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import replace_folder
from pipeline.inspection import (
    F0_CEIL_HZ,
    F0_FLOOR_HZ,
    InspectError,
    _flat,
    _human_bytes,
    _short,
    f0_track,
    folder_bytes,
)
from pipeline.manifest import SAMPLE_RATE, Clip, Manifest, ViewSet
from pipeline.rng import make_rng

AUDIO_FORMATS = ("wav", "flac")
GENERATOR = "ncore-prep inspect --html"  # marks a folder as an earlier page that may be replaced
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
    m: Manifest, vs: ViewSet, manifest_path: Path, clips: Sequence[Clip]
) -> tuple[dict[str, ClipViews], int]:
    """The rows of ``clips`` in ``vs``, one zarr read per shard; (by clip id, shards read)."""
    from pipeline.shards import ShardDamaged, ShardError, ShardReader

    failed = {f.id: f.reason for f in vs.failures}
    position = {c.id: i for i, c in enumerate(m.clips)}
    entries = {s.index: s for s in vs.shards}
    out: dict[str, ClipViews] = {}
    wanted: dict[int, list[str]] = defaultdict(list)
    for c in clips:
        if c.id in failed:
            out[c.id] = ClipViews(note=f"failed: {failed[c.id]}")
            continue
        index = position[c.id] // vs.shard_size
        if index not in entries:
            out[c.id] = ClipViews(note=f"shard {index} not computed yet (re-run perturb)")
            continue
        wanted[index].append(c.id)
    folder = vs.folder_path(manifest_path)
    for index in sorted(wanted):
        entry = entries[index]
        try:
            # verify=False: each clip's CRC-32 is checked below, so that the page marks a
            # damaged clip instead of refusing the whole shard.
            try:
                reader = ShardReader(folder / entry.path, manifest_path, verify=False)
            except ShardDamaged as e:  # unreadable attributes: every clip of it is marked
                for cid in wanted[index]:
                    out[cid] = ClipViews(note=f"damaged: {_first_words(e, entry.path)}")
                continue
            missing = [cid for cid in wanted[index] if cid not in reader.clip_ids]
            if missing:
                raise ShardError(
                    f"clip {missing[0]} is not in it although the manifest places it there"
                )
            if reader.num_views != 1 + vs.views:
                raise ShardError(
                    f"{reader.num_views} rows per clip, the manifest says {1 + vs.views}"
                )
            local = {cid: reader.clip_ids.index(cid) for cid in wanted[index]}
            lo, hi = min(local.values()), max(local.values()) + 1
        except (ShardError, ValueError, OSError) as e:
            raise InspectError(f"shard {entry.path} of {vs.kind}-{vs.key}: {e}") from None
        try:
            block: np.ndarray | None = reader.read_int16(lo, hi)
        except Exception:  # codecs raise many types on truncated bytes: read clip by clip
            block = None
        crcs = reader.stored.clip_crc32
        base = int(reader.offsets[lo])
        for cid, i in local.items():
            if block is None:
                try:
                    rows = np.ascontiguousarray(reader.read_int16(i, i + 1))
                except Exception:
                    out[cid] = ClipViews(note=f"damaged: samples cannot be decoded in {entry.path}")
                    continue
            else:
                a, b = int(reader.offsets[i]) - base, int(reader.offsets[i + 1]) - base
                rows = np.ascontiguousarray(block[:, a:b])
            if i < len(crcs) and zlib.crc32(rows.tobytes()) != crcs[i]:
                out[cid] = ClipViews(note=f"damaged: CRC-32 mismatch in {entry.path}")
                continue
            out[cid] = ClipViews(rows=rows, drawn=reader.drawn(i))
    return out, len(wanted)


def _first_words(error: Exception, shard: str) -> str:
    """A damaged shard's reason for a page note: what is wrong, without the paths."""
    text, opening = str(error), "damaged shard ("
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


# ---------------------------------------------------------------- the page


def row_hash(samples: np.ndarray) -> str:
    """Name of a stored row's files: a hash of its int16 samples (16 hex digits)."""
    data = np.ascontiguousarray(samples, dtype="<i2").tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt_ratio(v: Any) -> str:
    return f"{float(v):.3f}"


def params_html(drawn: dict[str, Any]) -> str:
    """The drawn parameters of one view, compact: each value in a ``span.p[data-k]``.

    p_s: r1 (formant ratio), r2 (pitch ratio), r3 (pitch-range ratio) to 3 decimals and the
    EQ gains in dB (frequencies and Qs in the tooltip); p_e: the permuted bands as
    ``target<-source``. Any other key is shown as ``name=value``. Outcome flags (F0 left
    alone, silence, a peak-limiting gain) follow.
    """
    parts: list[str] = []
    rest = dict(drawn)
    for key, name, title in (
        ("formant_ratio", "r1", "formant ratio r1"),
        ("pitch_ratio", "r2", "pitch ratio r2"),
        ("pitch_range_ratio", "r3", "pitch-range ratio r3"),
    ):
        if key in rest:
            value = rest.pop(key)
            parts.append(
                f'<span class="p" data-k="{key}" title="{title}">{name} '
                f"<b>{_fmt_ratio(value)}</b></span>"
            )
    eq = rest.pop("eq", None)
    if isinstance(eq, dict) and {"gains_db", "frequencies_hz", "qs"} <= eq.keys():
        tip = "EQ: " + "; ".join(
            f"{f:.0f} Hz {g:+.1f} dB Q {q:.2f}"
            for f, g, q in zip(eq["frequencies_hz"], eq["gains_db"], eq["qs"], strict=True)
        )
        gains = " ".join(f"{float(g):+.1f}" for g in eq["gains_db"])
        parts.append(
            f'<span class="p eq" data-k="eq.gains_db" title="{_esc(tip)}">'
            f"EQ dB <b>{gains}</b></span>"
        )
    elif eq is not None:
        rest["eq"] = eq
    if "permuted_bands" in rest and "band_sources" in rest:
        targets, sources = rest.pop("permuted_bands"), rest.pop("band_sources")
        pairs = " ".join(f"{t}\u2190{s}" for t, s in zip(targets, sources, strict=True))
        parts.append(
            f'<span class="p bands" data-k="permuted_bands" title="band target\u2190source '
            f'({len(targets)} bands moved)">bands <b>{pairs or "none"}</b></span>'
        )
    flags = []
    if rest.pop("f0_shifted", True) is False:
        flags.append("F0 not shifted (unvoiced)")
    if rest.pop("silent", False):
        flags.append("silent")
    if "rms_scaled" in rest and rest.pop("rms_scaled") is False:
        flags.append("RMS not scaled")
    gain = rest.pop("output_gain", 1.0)
    if isinstance(gain, (int, float)) and gain < 1.0:
        flags.append(f"peak-limited x{gain:.3f}")
    for key in ("voiced_frames", "f0_median_hz"):  # known outcome fields, shown as F0 below
        rest.pop(key, None)
    for key, value in _flat(rest).items():
        parts.append(
            f'<span class="p" data-k="{_esc(key)}">{_esc(key)}=<b>{_esc(_short(value))}</b></span>'
        )
    if flags:
        parts.append(f'<span class="flags">{_esc("; ".join(flags))}</span>')
    return " ".join(parts)


def _measure_html(t: Thumbnail) -> str:
    f0 = f"F0 {t.f0_median_hz:.0f} Hz" if t.f0_median_hz is not None else "unvoiced"
    rms = f"{t.rms_dbfs:.1f} dBFS" if t.rms_dbfs is not None else "silent"
    return f'<span class="m">{f0} \u00b7 {rms}</span>'


CSS = """
body{font:13px/1.35 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
 color:#222;background:#fafafa}
header.page{padding:12px 18px;background:#1d2733;color:#eee}
header.page h1{font-size:18px;margin:0 0 4px}
header.page a{color:#9cd}
.filters{position:sticky;top:0;z-index:3;background:#eef2f6;padding:6px 18px;
 border-bottom:1px solid #ccd}
.filters label{margin-right:14px}
section.vs{padding:10px 18px 24px}
section.vs h2{font-size:16px;margin:10px 0 6px}
table.meta{border-collapse:collapse;margin-bottom:6px}
table.meta th{text-align:left;padding:1px 10px 1px 0;color:#555;font-weight:600;vertical-align:top}
table.meta td{padding:1px 0}
table.sel{border-collapse:collapse;margin:6px 0}
table.sel th,table.sel td{border:1px solid #ccd;padding:2px 6px;text-align:right}
table.sel td:first-child,table.sel td:nth-child(2){text-align:left}
.note{color:#a33}
nav.labels a{margin-right:10px}
table.grid{border-collapse:collapse;margin-top:8px}
table.grid thead th{position:sticky;top:30px;background:#dde4ec;z-index:2;padding:3px 4px}
table.grid th.clip{text-align:left;vertical-align:top;padding:4px 8px 4px 0;min-width:140px;
 max-width:170px;font-weight:normal;word-break:break-all}
table.grid th.clip b{font-weight:600}
tr.group th{background:#e4e9ef;text-align:left;padding:4px 6px;font-size:14px}
td.cell{vertical-align:top;padding:4px;border-left:1px solid #e2e2e2;width:THUMB_Wpx}
td.cell audio{width:THUMB_Wpx;height:32px;display:block}
td.cell img{display:block;width:THUMB_Wpx;height:THUMB_Hpx}
td.cell .m{display:block;color:#555;font-size:11px}
td.cell .p{white-space:nowrap;margin-right:6px;font-size:11px}
td.cell .eq,td.cell .bands{white-space:normal;display:block}
td.cell .flags{display:block;color:#a33;font-size:11px}
td.missing{color:#a33;padding:8px}
"""

CSS = CSS.replace("THUMB_W", str(THUMB_WIDTH)).replace("THUMB_H", str(THUMB_HEIGHT))

SCRIPT = """
(function(){
  var fl=document.getElementById('f-label'), fs=document.getElementById('f-speaker');
  function apply(){
    var l=fl.value, s=fs.value;
    document.querySelectorAll('tr[data-label]').forEach(function(tr){
      tr.hidden=(l!=='' && tr.dataset.label!==l)||(s!=='' && tr.dataset.speaker!==s);
    });
    document.querySelectorAll('tr.group').forEach(function(tr){
      tr.hidden=(l!=='' && tr.dataset.group!==l);
    });
  }
  fl.addEventListener('change',apply); fs.addEventListener('change',apply);
  document.addEventListener('play',function(e){
    document.querySelectorAll('audio').forEach(function(a){ if(a!==e.target) a.pause(); });
  },true);
})();
"""


def _meta_rows(pairs: Sequence[tuple[str, str]]) -> str:
    return "".join(f"<tr><th>{_esc(k)}</th><td>{v}</td></tr>" for k, v in pairs)


def _selectivity_html(folder: Path) -> str:
    """The view set's selectivity (``ncore-prep selectivity``), laid out as ``inspect``'s
    table: per label and feature set, chance, balanced accuracy [95 % interval] in each
    condition, the retained shares and n; then the verdicts. Or why there is none."""
    from pipeline.selectivity import CONDITIONS, PERTURBATION_NAME, SelectivityError, load_result

    try:
        result = load_result(folder)
    except SelectivityError as e:
        return f'<p class="note">selectivity: {_esc(e)}</p>'
    if result is None:
        return "<p>selectivity: not measured (<code>ncore-prep selectivity MANIFEST</code>)</p>"
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for r in result.rows:
        groups.setdefault((r.label, r.features), {})[r.condition] = r
    body = []
    for (label, features), by_condition in groups.items():
        first = next(iter(by_condition.values()))
        cells = []
        for c in CONDITIONS:
            r = by_condition.get(c)
            cells.append(
                f'<td data-k="{_esc(c)}">{100 * r.balanced_accuracy:.1f} '
                f"[{100 * r.ci95[0]:.1f}\u2013{100 * r.ci95[1]:.1f}]</td>"
                if r is not None
                else "<td></td>"
            )
        retained = "/".join(
            f"{by_condition[c].retained:.2f}"
            if c in by_condition and by_condition[c].retained is not None
            else "\u2013"
            for c in CONDITIONS[1:]
        )
        body.append(
            f"<tr><td>{_esc(label)}</td><td>{_esc(features)}</td>"
            f"<td>{100 * first.chance:.1f}</td>{''.join(cells)}"
            f"<td>{retained}</td><td>{first.n}</td></tr>"
        )
    head = "".join(f"<th>{_esc(c)}</th>" for c in CONDITIONS)
    verdicts = "".join(f"<li>{_esc(v)}</li>" for v in result.verdicts)
    name = PERTURBATION_NAME.get(result.kind, result.kind)
    return (
        f'<div class="selectivity"><b>Selectivity of {_esc(name)}</b> ({result.clips} clips, '
        f"{result.views_used} view(s) each; balanced accuracy % [95 % interval]; retained = "
        "share of (originals \u2212 floor) left in views/transfer)"
        '<table class="sel"><thead><tr><th>label</th><th>features</th><th>chance</th>'
        f"{head}<th>retained</th><th>n</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
        + (f"<ul>{verdicts}</ul>" if verdicts else "")
        + "</div>"
    )


def _view_set_header(m: Manifest, vs: ViewSet, manifest_path: Path) -> str:
    folder = vs.folder_path(manifest_path)
    stored = sum(s.clips for s in vs.shards)
    seconds = sum(s.samples for s in vs.shards) / SAMPLE_RATE
    on_disk = folder_bytes(folder)
    per_second = f"{on_disk / seconds / 1024:.1f} KB" if seconds else "n/a"
    state = "complete" if vs.complete else "INCOMPLETE"
    params = " ".join(
        f'<span class="vp" data-k="{_esc(k)}">{_esc(k)}=<b>{_esc(json.dumps(v))}</b></span>'
        for k, v in vs.params.items()
    )
    meta = [
        ("kind", _esc(vs.kind)),
        ("N (views per clip)", f'<span data-k="views">{vs.views}</span>'),
        ("seed", f'<span data-k="seed">{vs.seed}</span>'),
        ("key", f'<span data-k="key">{_esc(vs.key)}</span>'),
        ("F0 method (perturbation)", _esc(vs.f0_method)),
        ("code version", _esc(vs.code_version)),
        ("parameters", params or "none"),
        (
            "clips",
            f'<span data-k="clip-counts">{len(m.clips)} in = {stored} stored + '
            f"{len(vs.failures)} failed</span>",
        ),
        (
            "shards",
            f"{len(vs.shards)}/{vs.num_shards} ({state}), {vs.shard_size} clips each",
        ),
        (
            "disk",
            f"{_human_bytes(on_disk)} for {seconds:.1f} s of audio: "
            f'<span data-k="bytes-per-second">{per_second}</span> per second of audio '
            f"(1 + N rows)",
        ),
        ("folder", _esc(vs.folder)),
    ]
    failures = ""
    if vs.failures:
        items = "".join(
            f"<li><b>{_esc(f.id)}</b>: {_esc(f.reason)}</li>"
            for f in vs.failures[:MAX_LISTED_FAILURES]
        )
        more = len(vs.failures) - MAX_LISTED_FAILURES
        if more > 0:
            items += f"<li>... and {more} more (ncore-prep inspect lists them)</li>"
        failures = (
            f'<details class="failures" open><summary>{len(vs.failures)} failed clip(s)'
            f"</summary><ul>{items}</ul></details>"
        )
    return f'<table class="meta">{_meta_rows(meta)}</table>' + failures + _selectivity_html(folder)


def _clip_header(c: Clip) -> str:
    return (
        f'<th class="clip"><b>{_esc(c.id)}</b><br>{_esc(c.emotion)} \u00b7 {_esc(c.speaker)}'
        f"<br>{c.duration:.2f} s \u00b7 {_esc(c.split)}</th>"
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
    _check_out_dir(out)
    view_sets = select_view_sets(m, options.view_sets)
    clips = (
        clips_by_id(m, options.clip_ids)
        if options.clip_ids
        else sample_clips(m, options.per_label, options.seed)
    )
    drawn_rows: dict[str, Thumbnail] = {}
    sections: list[str] = []
    cells = shards_read = 0
    audio_seconds = 0.0
    try:
        # Built in a temporary sibling and renamed over ``out`` when complete (modes from
        # the umask); on any failure ``out`` is left as it was.
        with replace_folder(out) as tmp:
            (tmp / "audio").mkdir()
            (tmp / "img").mkdir()
            with _thumbnail_executor(options.workers) as pool:
                for number, vs in enumerate(view_sets):
                    views, read = read_view_set(m, vs, path, clips)
                    shards_read += read
                    _draw_missing(views, drawn_rows, pool, tmp, options.audio_format)
                    for cv in views.values():
                        if cv.rows is not None:
                            cells += cv.rows.shape[0]
                            audio_seconds += cv.rows.size / SAMPLE_RATE
                    sections.append(
                        _section_html(m, vs, path, number, clips, views, drawn_rows, options)
                    )
                    del views
            page = _page_html(m, path, view_sets, clips, sections, options)
            (tmp / "index.html").write_text(page, encoding="utf-8")
    except BrokenProcessPool:
        raise InspectError(
            "a process drawing the thumbnails died (out of memory?); try --workers 1"
        ) from None
    return ListenPage(
        index=out / "index.html",
        view_sets=len(view_sets),
        clips=len(clips),
        cells=cells,
        files=len(drawn_rows),
        audio_seconds=audio_seconds,
        shards_read=shards_read,
        seconds=time.perf_counter() - start,
    )


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InspectError(f"--html {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        index = out / "index.html"
        earlier = (
            index.is_file()
            and GENERATOR in index.read_text(encoding="utf-8", errors="replace")[:2000]
        )
        if not earlier:
            raise InspectError(
                f"--html {out}: folder is not empty and holds no earlier listening page; "
                "choose an empty or new folder"
            )


class _InProcess:
    """The executor interface for ``workers=1``: run each call now, in this process."""

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn, *iterables):
        return map(fn, *iterables)


def _thumbnail_executor(workers: int | None) -> Executor | _InProcess:
    count = workers if workers is not None else (os.cpu_count() or 1)
    if count <= 1:
        return _InProcess()
    import multiprocessing

    # spawn, not fork: zarr keeps an event-loop thread, which must not be forked.
    return ProcessPoolExecutor(count, mp_context=multiprocessing.get_context("spawn"))


def _draw_missing(
    views: dict[str, ClipViews],
    drawn_rows: dict[str, Thumbnail],
    pool: Executor | _InProcess,
    tmp: Path,
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
    # Tasks of about 8 rows: few enough round trips, enough tasks to keep every worker busy.
    batches = [hashes[i : i + 8] for i in range(0, len(hashes), 8)]
    results = list(pool.map(draw_thumbnails, [[todo[h] for h in batch] for batch in batches]))
    subtype = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16")}[audio_format]
    for batch, thumbs in zip(batches, results, strict=True):
        for h, thumb in zip(batch, thumbs, strict=True):
            # Encoded in memory, then written: a full or read-only disk is an OSError (one
            # line), not libsndfile's "System error".
            encoded = io.BytesIO()
            sf.write(encoded, todo[h], SAMPLE_RATE, format=subtype[0], subtype=subtype[1])
            (tmp / "audio" / f"{h}.{audio_format}").write_bytes(encoded.getvalue())
            (tmp / "img" / f"{h}.png").write_bytes(thumb.png)
            drawn_rows[h] = thumb


def _section_html(
    m: Manifest,
    vs: ViewSet,
    path: Path,
    number: int,
    clips: Sequence[Clip],
    views: dict[str, ClipViews],
    drawn_rows: dict[str, Thumbnail],
    options: ListenOptions,
) -> str:
    sid = f"vs{number}"
    labels = list(dict.fromkeys(c.emotion for c in clips))
    nav = " ".join(
        f'<a href="#{sid}-label-{i}">{_esc(label)} '
        f"({sum(1 for c in clips if c.emotion == label)})</a>"
        for i, label in enumerate(labels)
    )
    head = "".join(f"<th>{'original' if i == 0 else f'view {i}'}</th>" for i in range(1 + vs.views))
    body: list[str] = []
    previous: str | None = None
    for c in clips:
        if c.emotion != previous:
            previous = c.emotion
            i = labels.index(c.emotion)
            body.append(
                f'<tr class="group" id="{sid}-label-{i}" data-group="{_esc(c.emotion)}">'
                f'<th colspan="{2 + vs.views}">{_esc(c.emotion)}</th></tr>'
            )
        cv = views[c.id]
        attrs = (
            f'data-clip="{_esc(c.id)}" data-label="{_esc(c.emotion)}" '
            f'data-speaker="{_esc(c.speaker)}"'
        )
        if cv.rows is None:
            body.append(
                f"<tr {attrs}>{_clip_header(c)}"
                f'<td class="missing" colspan="{1 + vs.views}">{_esc(cv.note)}</td></tr>'
            )
            continue
        tds = []
        for v, row in enumerate(cv.rows):
            h = row_hash(row)
            name = "original" if v == 0 else f"view {v}"
            drawn = cv.drawn[v - 1] if 0 < v <= len(cv.drawn) else {}
            tds.append(
                f'<td class="cell" data-view="{v}" data-samples="{row.size}" '
                f"data-drawn='{_esc(json.dumps(drawn, sort_keys=True))}'>"
                f'<audio controls preload="metadata" src="audio/{h}.{options.audio_format}" '
                f'title="{_esc(c.id)}: {name}"></audio>'
                f'<img src="img/{h}.png" width="{THUMB_WIDTH}" height="{THUMB_HEIGHT}" '
                f'alt="spectrogram and F0 of {_esc(c.id)}, {name}">'
                f"{_measure_html(drawn_rows[h])}"
                f"{params_html(drawn) if v else ''}</td>"
            )
        body.append(f"<tr {attrs}>{_clip_header(c)}{''.join(tds)}</tr>")
    title = f"{vs.kind} views, N = {vs.views}, seed {vs.seed}, key {vs.key}"
    return (
        f'<section class="vs" id="{sid}" data-kind="{_esc(vs.kind)}" data-key="{_esc(vs.key)}" '
        f'data-views="{vs.views}"><h2>{_esc(title)}</h2>'
        + _view_set_header(m, vs, path)
        + f'<nav class="labels">labels: {nav}</nav>'
        + f'<table class="grid"><thead><tr><th class="clip">clip</th>{head}</tr></thead>'
        + f"<tbody>{''.join(body)}</tbody></table></section>"
    )


def _page_html(
    m: Manifest,
    path: Path,
    view_sets: Sequence[ViewSet],
    clips: Sequence[Clip],
    sections: Sequence[str],
    options: ListenOptions,
) -> str:
    toc = " \u00b7 ".join(
        f'<a href="#vs{i}">{_esc(vs.kind)} N={vs.views} ({_esc(vs.key)})</a>'
        for i, vs in enumerate(view_sets)
    )
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

    def options_of(values: Sequence[str]) -> str:
        return "".join(f'<option value="{_esc(v)}">{_esc(v)}</option>' for v in values)

    labels = list(dict.fromkeys(c.emotion for c in clips))
    speakers = sorted({c.speaker for c in clips}, key=m.label_index("speaker").__getitem__)
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
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="generator" content="{GENERATOR}">'
        f"<title>{_esc(m.dataset)}: listening page</title><style>{CSS}</style></head><body>"
        f'<header class="page"><h1>{_esc(m.dataset)}: cached views</h1>'
        f"<div>manifest {_esc(path.name)} \u00b7 {len(m.clips)} clips{import_failures} "
        f"\u00b7 shown: {_esc(how)}, {len(clips)} clips</div>"
        f"<div>view sets: {toc}</div><div>{_esc(legend)}</div></header>"
        '<div class="filters"><label>label <select id="f-label"><option value="">all</option>'
        f"{options_of(labels)}</select></label>"
        '<label>speaker <select id="f-speaker"><option value="">all</option>'
        f"{options_of(speakers)}</select></label></div>"
        + "".join(sections)
        + f"<script>{SCRIPT}</script></body></html>\n"
    )
