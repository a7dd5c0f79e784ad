"""``ncore-prep inspect``: what a manifest holds, and every cached view of one clip.

(Named ``inspection`` rather than ``inspect`` so that running a file from inside this
folder can never shadow the standard library's ``inspect``, which dataclasses import.)

- :func:`describe` prints the corpus (clips per label and speaker, per split, durations),
  the import failures, and each view set with its parameters, shards, bytes on disk,
  failures and its selectivity table when ``ncore-prep selectivity`` has measured it.
- :func:`export_clip` writes each view of one clip as a WAV file and one PNG with the
  waveform, spectrogram and F0 track of every view side by side, and returns the drawn
  parameters of each view so that they can be printed.
"""

from __future__ import annotations

import io
import os
import statistics
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import write_bytes
from pipeline.errors import PipelineError
from pipeline.manifest import SAMPLE_RATE, SPLITS, Manifest, ViewSet
from pipeline.reader import LocatedManifest

F0_FLOOR_HZ = 60.0
F0_CEIL_HZ = 1000.0


class InspectError(PipelineError):
    """A request that cannot be answered (unknown clip, unreadable shard); says why."""


def folder_bytes(folder: Path) -> int:
    """Bytes of all files below ``folder`` (0 when it does not exist)."""
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _table(title: str, rows: dict[str, Counter[str]], columns: tuple[str, ...]) -> list[str]:
    """A fixed-width table: one row per label, one column per split, and a total."""
    width = max([len(title), *(len(r) for r in rows)])
    head = f"  {title:<{width}}" + "".join(f"{c:>8}" for c in (*columns, "total"))
    lines = [head]
    for label, counts in rows.items():
        cells = "".join(f"{counts.get(c, 0):>8}" for c in columns)
        lines.append(f"  {label:<{width}}{cells}{sum(counts.values()):>8}")
    return lines


def human_bytes(n: float) -> str:
    """``n`` bytes in B, KB, MB or GB (powers of 1024), to one decimal."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def describe(manifest_path: str | os.PathLike[str], max_listed: int = 10) -> str:
    """A human-readable description of the manifest at ``manifest_path`` and its view sets.

    Raises :class:`pipeline.manifest.ManifestError` when the manifest cannot be read.
    """
    path = Path(manifest_path)
    m = Manifest.load(path)
    durations = [c.duration for c in m.clips]
    total = sum(durations)
    lines = [
        f"manifest {path} (schema {m.schema_version})",
        f"dataset {m.dataset!r} from {m.source}; audio under {m.data_path(path)}",
        f"clips {len(m.clips)}: "
        + ", ".join(
            f"{s} {sum(1 for c in m.clips if c.split == s)} "
            f"({sum(c.duration for c in m.clips if c.split == s):.1f} s)"
            for s in SPLITS
        )
        + f"; {total:.1f} s of audio ({total / 60:.1f} min)",
    ]
    if durations:
        lines.append(
            f"duration per clip: min {min(durations):.2f} s, median "
            f"{statistics.median(durations):.2f} s, max {max(durations):.2f} s"
        )
    if m.split:
        info = ", ".join(f"{k}={v}" for k, v in m.split.items() if not isinstance(v, (dict, list)))
        if info:
            lines.append(f"split: {info}")
    for name in ("emotion", "speaker"):
        rows = {
            label: Counter(c.split for c in m.clips if getattr(c, name) == label)
            for label in m.labels[name]
        }
        lines.append(f"{name} labels ({len(rows)}):")
        lines.extend(_table(name, rows, SPLITS))
    if m.failures:
        reasons = Counter(f.reason.split(":", 1)[0] for f in m.failures)
        lines.append(
            f"import failures {len(m.failures)}: "
            + ", ".join(f"{r} {n}" for r, n in reasons.most_common())
        )
        for f in m.failures[:max_listed]:
            lines.append(f"  {f.id}: {f.reason}")
    if not m.view_sets:
        lines.append("view sets: none (run `ncore-prep perturb`)")
    for vs in m.view_sets:
        lines.extend(_describe_view_set(m, vs, path, max_listed))
    return "\n".join(lines)


def _describe_view_set(m: Manifest, vs: ViewSet, path: Path, max_listed: int) -> list[str]:
    folder = vs.folder_path(path)
    stored = sum(s.clips for s in vs.shards)
    on_disk = folder_bytes(folder)
    stored_seconds = sum(s.samples for s in vs.shards) / SAMPLE_RATE
    state = "complete" if vs.complete else "INCOMPLETE"
    per_second = (
        f", {on_disk / stored_seconds / 1024:.1f} KB per second of audio" if stored_seconds else ""
    )
    lines = [
        f"view set {vs.kind} N={vs.views} seed={vs.seed} key={vs.key} f0={vs.f0_method} "
        f"code={vs.code_version}: {state}, {len(vs.shards)}/{vs.num_shards} shards of "
        f"{vs.shard_size} clips",
        f"  clips: {len(m.clips)} in = {stored} stored + {len(vs.failures)} failed",
        f"  folder {folder} ({human_bytes(on_disk)} on disk{per_second})",
        "  params: " + ", ".join(f"{k}={v}" for k, v in vs.params.items()),
    ]
    for s in sorted(vs.shards, key=lambda s: s.index)[:max_listed]:
        lines.append(
            f"  {s.path}: {s.clips} clips, {s.samples / SAMPLE_RATE:.1f} s, "
            f"{human_bytes(folder_bytes(folder / s.path))}, {s.checksum[:19]}"
        )
    if len(vs.shards) > max_listed:
        lines.append(f"  ... and {len(vs.shards) - max_listed} more shards")
    for f in vs.failures[:max_listed]:
        lines.append(f"  failed {f.id}: {f.reason}")
    if len(vs.failures) > max_listed:
        lines.append(f"  ... and {len(vs.failures) - max_listed} more failures")
    lines.extend(_selectivity_lines(folder))
    return lines


def _selectivity_lines(folder: Path) -> list[str]:
    """The view set's selectivity table (``ncore-prep selectivity``), or how to get one."""
    from pipeline.selectivity import SelectivityError, format_table, load_result

    try:
        result = load_result(folder)
    except SelectivityError as e:
        return [f"  selectivity: {e}"]
    if result is None:
        return ["  selectivity: not measured (run `ncore-prep selectivity MANIFEST`)"]
    return format_table(result, indent="  ")


@dataclass
class ClipExport:
    """What :func:`export_clip` wrote and found.

    ``views`` maps a row label ("original", "speaker-<key> view 1", ...) to the WAV path;
    ``drawn`` maps each view's label to its drawn parameters; ``notes`` says where a view
    set has no views of the clip and why.
    """

    clip_id: str
    png: Path | None = None
    views: dict[str, Path] = field(default_factory=dict)
    drawn: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"clip {self.clip_id}:"]
        for label, wav in self.views.items():
            params = self.drawn.get(label)
            text = ", ".join(f"{k}={short_value(v)}" for k, v in flat_params(params or {}).items())
            out.append(f"  {label}: {wav}" + (f"\n    {text}" if text else ""))
        out.extend(f"  note: {n}" for n in self.notes)
        if self.png is not None:
            out.append(f"  figure: {self.png}")
        return out


def flat_params(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameter records as one level of dotted names (``eq.gains_db``)."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, dict):
            out.update(flat_params(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def short_value(value: Any) -> str:
    """A parameter value in a few characters: floats to 4 significant digits, lists of them."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(short_value(v) for v in value) + "]"
    return str(value)


def _views_of(
    source: LocatedManifest, vs: ViewSet, clip_id: str
) -> tuple[np.ndarray | None, list[dict[str, Any]], str | None]:
    """The clip's rows (1 + N, T) in ``vs`` and their drawn parameters, or a note why not."""
    from pipeline.reader import read_clips
    from pipeline.shards import ShardError, int16_to_float

    try:  # this manifest's shard, or refused; a damaged clip refused
        clip = read_clips(source, vs, [clip_id])[clip_id]
    except (ShardError, ValueError, OSError) as e:
        raise InspectError(str(e)) from None
    if clip.status == "failed":
        return None, [], f"{vs.kind}-{vs.key}: failed ({clip.reason})"
    if clip.status == "missing":
        return None, [], f"{vs.kind}-{vs.key}: shard {clip.shard} not computed yet"
    return int16_to_float(clip.rows), clip.drawn, None


def f0_track(
    audio: np.ndarray, method: str = "harvest", dio_speed: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """F0 (Hz, 0 when unvoiced) and frame times (s, every 5 ms) of a 16 kHz clip.

    ``method``: WORLD's ``harvest`` (robust, slow) or ``dio`` refined by ``stonemask``
    (about 25x faster); ``dio_speed`` (1-12) decimates dio's candidate search (stonemask
    still refines at the full rate). Empty arrays for a clip too short (< 50 ms) or silent.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pyworld

    x = np.ascontiguousarray(audio, dtype=np.float64)
    if x.size < SAMPLE_RATE // 20 or np.max(np.abs(x), initial=0.0) < 2.0**-20:
        return np.zeros(0), np.zeros(0)  # too short or silent: WORLD has nothing to track
    if method == "dio":
        f0, t = pyworld.dio(
            x, SAMPLE_RATE, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ, speed=dio_speed
        )
        return pyworld.stonemask(x, f0, t, SAMPLE_RATE), t
    if method != "harvest":
        raise ValueError(f"F0 method must be harvest or dio, got {method!r}")
    f0, t = pyworld.harvest(x, SAMPLE_RATE, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ)
    return f0, t


def export_clip(
    manifest_path: str | os.PathLike[str], clip_id: str, out_dir: str | os.PathLike[str]
) -> ClipExport:
    """Write every view of ``clip_id`` as WAV under ``out_dir`` and one PNG comparing them.

    Files: ``<clip>_original.wav``, ``<clip>_<kind>-<key>_view<i>.wav`` and ``<clip>.png``
    (one row per view: waveform, spectrogram, F0 track). The original comes from a shard
    (view 0) or, when no view set holds the clip, from the source file. Raises
    :class:`InspectError` for an unknown clip or an unreadable shard.
    """
    from pipeline.audio import AudioError, load_audio, write_wav

    path = Path(manifest_path)
    m = Manifest.load(path)
    clips = m.clip_by_id()
    if clip_id not in clips:
        failed = {f.id: f.reason for f in m.failures}
        if clip_id in failed:
            raise InspectError(f"clip {clip_id} was not imported: {failed[clip_id]}")
        example = ", ".join(c.id for c in m.clips[:3])
        raise InspectError(f"clip {clip_id} is not in {path} (ids look like: {example})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    export = ClipExport(clip_id)
    rows: list[tuple[str, np.ndarray]] = []
    original: np.ndarray | None = None
    for vs in m.view_sets:
        block, drawn, note = _views_of(LocatedManifest(m, path), vs, clip_id)
        if note is not None:
            export.notes.append(note)
            continue
        if original is None:
            original = block[0]
        for i in range(1, block.shape[0]):
            label = f"{vs.kind}-{vs.key} view {i}"
            wav = out / f"{clip_id}_{vs.kind}-{vs.key}_view{i}.wav"
            write_wav(wav, block[i])
            rows.append((label, block[i]))
            export.views[label] = wav
            export.drawn[label] = drawn[i - 1] if i - 1 < len(drawn) else {}
    if original is None:
        try:
            original, _, _ = load_audio(m.data_path(path) / clips[clip_id].path)
        except AudioError as e:
            raise InspectError(f"clip {clip_id}: no cached view and {e.reason}") from None
        export.notes.append("no view set holds this clip: the original comes from the source")
    wav = out / f"{clip_id}_original.wav"
    write_wav(wav, original)
    export.views = {"original": wav, **export.views}
    rows.insert(0, ("original", original))
    export.png = out / f"{clip_id}.png"
    plot_views(rows, export.png, title=f"{m.dataset} / {clip_id}")
    return export


PNG_DPI = 80


def plot_views(rows: list[tuple[str, np.ndarray]], png: Path, title: str = "") -> None:
    """One PNG: a row per view with its waveform, spectrogram and F0 track, shared time axis."""
    import matplotlib.pyplot as plt

    fig = views_figure(rows, title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PNG_DPI)
    plt.close(fig)
    write_bytes(png, buffer.getvalue())


def views_figure(rows: list[tuple[str, np.ndarray]], title: str = ""):  # -> matplotlib Figure
    """The figure of :func:`plot_views`, not yet saved.

    Constrained layout places the title, the column titles and the row labels without
    overlap at any number of rows (``tight_layout`` let the title run into the column
    titles from about 11 rows on: N = 5 of both kinds).
    """
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rows)
    fig, axes = plt.subplots(
        n, 3, figsize=(15, 1.9 * n + 0.6), squeeze=False, sharex=True, layout="constrained"
    )
    for r, (label, audio) in enumerate(rows):
        t = np.arange(audio.size) / SAMPLE_RATE
        ax_wave, ax_spec, ax_f0 = axes[r]
        ax_wave.plot(t, audio, linewidth=0.5, color="tab:blue")
        ax_wave.set_ylim(-1, 1)
        ax_wave.set_ylabel(label, fontsize=8)
        spectrum = np.asarray(audio, dtype=np.float64) + 1e-9  # avoids log(0) on silence
        nfft = 512 if audio.size >= 512 else max(16, 1 << (max(audio.size, 2).bit_length() - 1))
        ax_spec.specgram(spectrum, NFFT=nfft, Fs=SAMPLE_RATE, noverlap=nfft * 3 // 4, cmap="magma")
        ax_spec.set_ylim(0, SAMPLE_RATE / 2)
        f0, times = f0_track(audio)
        voiced = np.where(f0 > 0, f0, np.nan)
        ax_f0.plot(times, voiced, ".", markersize=2, color="tab:red")
        ax_f0.set_ylim(0, F0_CEIL_HZ)
        ax_f0.set_xlim(0, max(audio.size / SAMPLE_RATE, 1e-3))
        if r == 0:
            ax_wave.set_title("waveform")
            ax_spec.set_title("spectrogram (Hz)")
            ax_f0.set_title("F0 (Hz, harvest)")
    for ax in axes[-1]:
        ax.set_xlabel("time (s)")
        # At most 6 ticks: the default's 0.000, 0.025, ... labels of a short clip ran into
        # the next column's.
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(6))
    if title:
        fig.suptitle(title)
    return fig
