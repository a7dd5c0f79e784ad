"""The acoustic features of ``ncore-prep selectivity`` (docs/selectivity.md): the documented
:data:`FEATURE_SETS` and :func:`clip_features`, which describes one signal by all of them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.manifest import SAMPLE_RATE

# WORLD settings of the feature analysis (not those of the perturbation): a wide F0 search
# so that a view shifted by p_s (up to x2 or /2) is still analysed as voiced.
F0_FLOOR_HZ = 40.0
F0_CEIL_HZ = 1600.0
FRAME_S = 0.005


@dataclass(frozen=True)
class FeatureSet:
    """A documented group of acoustic features. ``targeted_by`` lists the view-set kinds
    whose perturbation is meant to destroy these cues (empty: a cue both keep)."""

    name: str
    description: str
    targeted_by: tuple[str, ...]


FEATURE_SETS: tuple[FeatureSet, ...] = (
    FeatureSet(
        "f0_level",
        "median log2 F0 of the voiced frames",
        ("speaker",),
    ),
    FeatureSet(
        "f0_range",
        "10-90 % percentile range of log2 F0 over the voiced frames (octaves)",
        ("speaker", "emotion"),
    ),
    FeatureSet(
        "envelope",
        "mean WORLD spectral envelope of the voiced frames (all frames when none is "
        "voiced) at 24 log-spaced frequencies from 100 Hz to 7 kHz, in dB, minus its mean "
        "over the 24 (formants and tilt, not level)",
        ("speaker", "emotion"),
    ),
    FeatureSet(
        "level",
        "RMS level of the clip (dBFS); peak and frame-level percentiles are left out: after "
        "RMS normalisation they measure the crest factor, i.e. the temporal structure",
        ("emotion",),
    ),
    FeatureSet(
        "f0_contour",
        "log F0 of the voiced frames normalised to zero mean and unit spread within the "
        "clip, sampled at 8 equally spaced points, plus the rate of F0 direction changes per "
        "voiced second (shape, not level or range)",
        ("emotion",),
    ),
    FeatureSet(
        "voicing",
        "voiced share of the active frames, voiced runs per second, median frame-to-frame "
        "log-F0 change (jitter) and mean D4C aperiodicity (dB) of the voiced frames below "
        "1 kHz, 1-4 kHz and above 4 kHz",
        (),
    ),
    FeatureSet(
        "duration",
        "clip duration, active duration (10 ms frames within 30 dB of the loudest) and "
        "number of active runs (bursts)",
        (),
    ),
    FeatureSet(
        "temporal_envelope",
        "per band (0-0.5, 0.5-1.5, 1.5-3.5, 3.5-8 kHz), the share of the band's normalised "
        "energy-envelope modulation in 1-3, 3-6, 6-12 and 12-25 Hz, and the envelope's "
        "coefficient of variation",
        (),
    ),
)
FEATURE_NAMES = tuple(f.name for f in FEATURE_SETS)

_ENVELOPE_HZ = np.geomspace(100.0, 7000.0, 24)
_CONTOUR_POINTS = 8
_TEMPORAL_BANDS_HZ = ((0.0, 500.0), (500.0, 1500.0), (1500.0, 3500.0), (3500.0, 8000.0))
_MODULATION_HZ = ((1.0, 3.0), (3.0, 6.0), (6.0, 12.0), (12.0, 25.0))


def _frame_levels_db(x: np.ndarray, frame: int) -> np.ndarray:
    """RMS level (dBFS) of consecutive ``frame``-sample frames, shape (frames,)."""
    count = max(1, x.size // frame)
    frames = x[: count * frame].reshape(count, -1) if x.size >= frame else x[None, :]
    return 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def _runs(mask: np.ndarray) -> int:
    """Number of runs of True in a boolean array."""
    m = np.asarray(mask, dtype=np.int8)
    return int(np.sum(np.diff(np.concatenate([[0], m])) == 1))


def _stft_power(x: np.ndarray, n_fft: int = 512, hop: int = 160) -> np.ndarray:
    """Power spectrogram (bins, frames) with a Hann window; 10 ms hop at 16 kHz."""
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    count = 1 + (x.size - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(count)[:, None]
    frames = x[index] * np.hanning(n_fft)[None, :]
    return (np.abs(np.fft.rfft(frames, axis=1)) ** 2).T


def clip_features(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> dict[str, np.ndarray]:
    """Every feature set of one signal: ``{name: float64 vector}`` (NaN where undefined,
    e.g. F0 features of a clip with no voiced frame; probes impute the median).

    ``audio`` float (T,) at ``sample_rate``. Raises
    :class:`pipeline.perturb.PerturbationError` for a signal WORLD cannot analyse.
    """
    from pipeline.perturb import analyse

    x = np.asarray(audio, dtype=np.float64)
    analysis = analyse(x, sample_rate, "dio", f0_floor_hz=F0_FLOOR_HZ, f0_ceil_hz=F0_CEIL_HZ)
    f0 = analysis.f0[: max(1, round(x.size / sample_rate / FRAME_S))]
    sp, ap = analysis.sp[: f0.size], analysis.ap[: f0.size]
    voiced = f0 > 0
    nan = np.nan
    out: dict[str, np.ndarray] = {}

    # Level and activity from 10 ms frames.
    frame = sample_rate // 100
    levels = _frame_levels_db(x, frame)
    active = levels > levels.max() - 30.0
    out["level"] = np.array([10.0 * np.log10(np.mean(x**2) + 1e-12)])

    # F0 level and range.
    if voiced.sum() >= 2:
        log_f0 = np.log2(f0[voiced])
        out["f0_level"] = np.array([np.median(log_f0)])
        out["f0_range"] = np.array([np.percentile(log_f0, 90) - np.percentile(log_f0, 10)])
        spread = log_f0.std()
        shape = (log_f0 - log_f0.mean()) / spread if spread > 1e-9 else log_f0 * 0.0
        points = np.interp(
            np.linspace(0, shape.size - 1, _CONTOUR_POINTS), np.arange(shape.size), shape
        )
        # Direction changes of the contour smoothed over 25 ms (5 frames), per voiced second.
        smooth = np.convolve(log_f0, np.ones(5) / 5, mode="valid")
        slope = np.sign(np.diff(smooth))
        slope = slope[slope != 0]
        changes = np.count_nonzero(np.diff(slope)) / (voiced.sum() * FRAME_S)
        out["f0_contour"] = np.concatenate([points, [changes]])
        jitter = float(np.median(np.abs(np.diff(log_f0))))
    else:
        out["f0_level"] = np.array([nan])
        out["f0_range"] = np.array([nan])
        out["f0_contour"] = np.full(_CONTOUR_POINTS + 1, nan)
        jitter = nan

    # Spectral envelope shape (level removed).
    rows = sp[voiced] if voiced.any() else sp
    envelope = 10.0 * np.log10(np.mean(rows, axis=0) + 1e-20)
    freqs = np.linspace(0.0, sample_rate / 2.0, envelope.size)
    bands = np.interp(_ENVELOPE_HZ, freqs, envelope)
    out["envelope"] = bands - bands.mean()

    # Voicing: voiced share of the active 5 ms frames, voiced runs, jitter, aperiodicity.
    hop = round(FRAME_S * sample_rate)
    active5 = _frame_levels_db(x, hop)
    active5 = active5 > active5.max() - 30.0
    span = min(active5.size, f0.size)
    in_active = voiced[:span][active5[:span]]
    voiced_share = float(in_active.mean()) if in_active.size else float(voiced.mean())
    seconds = x.size / sample_rate
    if voiced.any():
        ap_db = 20.0 * np.log10(np.clip(ap[voiced].mean(axis=0), 1e-6, 1.0))
        ap_freqs = np.linspace(0.0, sample_rate / 2.0, ap_db.size)
        ap_bands = [
            ap_db[(ap_freqs >= lo) & (ap_freqs < hi)].mean()
            for lo, hi in ((0.0, 1000.0), (1000.0, 4000.0), (4000.0, sample_rate / 2.0 + 1))
        ]
    else:
        ap_bands = [nan, nan, nan]
    out["voicing"] = np.array([voiced_share, _runs(voiced) / seconds, jitter, *ap_bands])

    # Duration and bursts.
    out["duration"] = np.array([seconds, active.sum() * frame / sample_rate, _runs(active)])

    # Per-band temporal envelope: modulation shares and variation.
    power = _stft_power(x)
    bin_hz = sample_rate / 512
    frame_rate = sample_rate / 160.0
    temporal = []
    for lo, hi in _TEMPORAL_BANDS_HZ:
        rows_b = power[int(lo / bin_hz) : max(int(lo / bin_hz) + 1, int(hi / bin_hz))]
        env = np.sqrt(rows_b.sum(axis=0))
        mean = env.mean()
        if mean <= 1e-12 or env.size < 4:
            temporal.extend([nan] * (len(_MODULATION_HZ) + 1))
            continue
        norm = env / mean - 1.0
        spectrum = np.abs(np.fft.rfft(norm * np.hanning(norm.size))) ** 2
        mod_hz = np.fft.rfftfreq(norm.size, 1.0 / frame_rate)
        energy = [spectrum[(mod_hz >= a) & (mod_hz < b)].sum() for a, b in _MODULATION_HZ]
        total = sum(energy)
        temporal.extend([e / total if total > 0 else nan for e in energy])
        temporal.append(float(np.std(env) / mean))
    out["temporal_envelope"] = np.array(temporal)
    return out


def _features_of_rows(rows: np.ndarray) -> list[dict[str, np.ndarray] | str]:
    """Features of every row of one clip (original and views); a row WORLD cannot analyse
    gives its reason instead. Runs in a worker process."""
    from pipeline.perturb import PerturbationError

    out: list[dict[str, np.ndarray] | str] = []
    for row in rows:
        try:
            out.append(clip_features(row))
        except PerturbationError as e:
            out.append(str(e))
    return out
