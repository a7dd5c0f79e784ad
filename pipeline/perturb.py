"""Speaker (p_s) and emotion (p_e) perturbations from one WORLD analysis per clip.

Section 3.3 of the paper as docs/design.md section 3 makes it precise. A clip is analysed
ONCE with WORLD (:func:`analyse`); any number of views of both kinds are then drawn from
that analysis:

- :func:`speaker_view` (p_s, for the emotion task): formant warp of the spectral envelope
  (r1), F0 scaling around the median with range scaling (r2, r3), WORLD resynthesis, a
  random parametric EQ, peak kept below full scale.
- :func:`flatten_pitch` once per clip, then :func:`emotion_view` (p_e, for the speaker
  task): permutation of ``eta1`` of ``n_spec`` equal-width STFT bands, then RMS scaling to
  ``eta2``. The paper lists pitch flattening last; it comes first here because F0 cannot
  be estimated on a band-scrambled signal and because the N views then share one
  flattening (the flattening is deterministic, so nothing is lost).

Every random draw comes from the ``numpy.random.Generator`` passed in; use
``pipeline.rng.make_rng(seed, kind, clip_id, view_index)`` (view indices start at 1) or
:func:`perturb_clip`, which does exactly that. Each view returns the parameters it drew as
a JSON-able dict; ``render_speaker_view`` / ``render_emotion_view`` rebuild the view from
that dict alone.

Bad input raises :class:`PerturbationError` (a ``ValueError``) with a one-line reason
before anything reaches the C code of pyworld, so a bad clip cannot take a worker down.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import numbers
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline import eq as eqlib
from pipeline.errors import PipelineError
from pipeline.manifest import DEFAULT_F0_CEIL_HZ, DEFAULT_F0_FLOOR_HZ, F0_METHODS, SAMPLE_RATE
from pipeline.rng import make_rng

if TYPE_CHECKING:
    from scipy.signal import ShortTimeFFT

logger = logging.getLogger(__name__)

# Bump whenever the output of any view (or a drawn dict) changes for the same inputs: it is
# part of the view-set key, so a bump makes a new view set instead of mixing versions.
PERTURB_VERSION = "1"

DEFAULT_SAMPLE_RATE = SAMPLE_RATE  # the one definition: pipeline/manifest.py
FRAME_PERIOD_MS = 5.0
# "praat" (in F0_METHODS): Praat's autocorrelation pitch tracker through the optional
# praat-parselmouth package (GPL-3.0), its F0 handed to CheapTrick and D4C
# (see docs/perturbations.md).
PRAAT_OCTAVE_COST = 0.05
KINDS = ("speaker", "emotion")

# Below this a clip is rejected: a view of less than 25 ms carries nothing a model can
# use, and WORLD's analysis windows are far longer.
MIN_DURATION_S = 0.025
# A clip whose peak is below 2**-20 (about -120 dBFS, far under one int16 step) is treated
# as digital silence: WORLD's safeguard noise would dominate its analysis, and its views
# are silent.
SILENCE_PEAK = 2.0**-20


class PerturbationError(PipelineError):
    """A clip or a parameter that the perturbations cannot handle; the message says why."""


# WORLD's CheapTrick analyses every frame at F0 = max(f0, floor) with a Hann window of 3 F0
# periods, and takes unvoiced frames (and frames below the floor it derives from its FFT
# size, 3 fs / (fft_size - 3)) at world::kDefaultF0 = 500 Hz (WORLD's constantnumbers.h).
# The FFT size comes from the F0 floor alone (:func:`cheaptrick_fft_size`); when a high
# floor makes it too short for a 500 Hz window (at 16 kHz: 64 samples for a floor above
# 3 * 16000 / 63 = 761.9 Hz), CheapTrick writes past its FFT buffer and the process dies
# of heap corruption. :func:`max_f0_floor_hz` is the highest floor whose FFT holds it.
WORLD_DEFAULT_F0_HZ = 500.0


def cheaptrick_fft_size(sample_rate: int, f0_floor_hz: float) -> int:
    """CheapTrick's FFT size (samples) for an F0 floor: pyworld's
    ``get_cheaptrick_fft_size``, 2 ** (1 + floor(log2(3 fs / f0_floor + 1))), computed here
    so that settings can be checked without importing pyworld (a test compares the two)."""
    return 2 ** (1 + math.floor(math.log2(3.0 * sample_rate / f0_floor_hz + 1.0)))


def max_f0_floor_hz(sample_rate: int = SAMPLE_RATE) -> float:
    """The highest F0 floor (Hz) whose CheapTrick FFT holds the window of WORLD's default
    F0 (:data:`WORLD_DEFAULT_F0_HZ`): 761.9 Hz at 16 kHz.

    The FFT must satisfy 3 fs / (fft_size - 3) <= 500 Hz; the smallest power of two that
    does is 2 ** k, and the floor keeps it while 3 fs / floor + 1 >= 2 ** (k - 1).
    """
    needed = 3.0 * sample_rate / WORLD_DEFAULT_F0_HZ + 3.0
    k = math.ceil(math.log2(needed))
    return 3.0 * sample_rate / (2 ** (k - 1) - 1)


def f0_range_problem(
    f0_floor_hz: float,
    f0_ceil_hz: float,
    sample_rate: int = SAMPLE_RATE,
    names: tuple[str, str] = ("f0_floor_hz", "f0_ceil_hz"),
) -> str | None:
    """Why WORLD cannot analyse with this F0 search range at ``sample_rate``, or None.

    The one check of every F0 range before it reaches pyworld (the settings of
    ``ncore-prep perturb``, a view set being repaired, :func:`analyse`); ``names`` are the
    two values as the caller's user knows them (``--f0-floor``, ``--f0-ceil``).
    """
    floor, ceil = names
    values = (f0_floor_hz, f0_ceil_hz)
    if not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in values):
        return f"{floor} and {ceil} must be finite numbers, got {f0_floor_hz!r}, {f0_ceil_hz!r}"
    if not 0.0 < f0_floor_hz < f0_ceil_hz < sample_rate / 2:
        return (
            f"the F0 range must satisfy 0 < {floor} < {ceil} < {sample_rate / 2:g} Hz "
            f"(Nyquist), got {f0_floor_hz:g} and {f0_ceil_hz:g}"
        )
    highest = max_f0_floor_hz(sample_rate)
    if f0_floor_hz > highest:
        return (
            f"{floor}: an F0 floor of {f0_floor_hz:g} Hz is above "
            f"{math.floor(highest * 10) / 10:g} Hz, "
            f"the highest WORLD's CheapTrick can analyse at {sample_rate} Hz (its FFT of "
            f"{cheaptrick_fft_size(sample_rate, f0_floor_hz)} samples would be too short)"
        )
    return None


# --------------------------------------------------------------------------- parameters


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise PerturbationError(message)


class _ParamsMixin:
    """``to_dict`` / ``from_dict`` for the frozen parameter dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        """The parameters as a JSON-able dict (field name -> value)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        """Parameters from :meth:`to_dict` output; missing keys take the paper's defaults."""
        names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(names))
        _check(not unknown, f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
        values = {}
        for key, value in data.items():
            caster = int if names[key].type in ("int", int) else float
            try:
                values[key] = caster(value)
            except (TypeError, ValueError, OverflowError) as err:
                raise PerturbationError(f"{cls.__name__}.{key}: bad value {value!r}") from err
            _check(
                math.isfinite(values[key]),
                f"{cls.__name__}.{key}: must be a finite number, got {value!r}",
            )
        return cls(**values)


@dataclass(frozen=True)
class SpeakerParams(_ParamsMixin):
    """Parameters of the speaker perturbation p_s (defaults: the paper / NANSY).

    Ratios r ~ U(1, max) are inverted with probability 1/2, so r1 spans [1/1.4, 1.4]
    (the paper's rho1 in [0.7, 1.4]) and r2 spans [0.5, 2] (rho2).
    """

    formant_ratio_max: float = 1.4  # r1: spectral-envelope frequency warp
    pitch_ratio_max: float = 2.0  # r2: F0 scaling
    pitch_range_ratio_max: float = 1.5  # r3: F0 range scaling around the median
    f0_min_hz: float = 40.0  # shifted F0 is kept in [f0_min_hz, f0_max_hz]
    f0_max_hz: float = 2000.0
    eq_low_shelf_hz: float = 60.0
    eq_high_shelf_hz: float = 10_000.0  # clamped to 0.45 * sample rate
    eq_num_peaking: int = 8
    eq_q_min: float = 2.0  # Q ~ log-uniform [eq_q_min, eq_q_max]
    eq_q_max: float = 5.0
    eq_gain_db: float = 12.0  # gains ~ U(-eq_gain_db, eq_gain_db) dB
    peak_limit: float = 0.99  # a view louder than this is scaled down to it

    def __post_init__(self) -> None:
        for name in ("formant_ratio_max", "pitch_ratio_max", "pitch_range_ratio_max"):
            value = getattr(self, name)
            _check(1.0 <= value < 10.0, f"SpeakerParams.{name} must be in [1, 10), got {value}")
        _check(
            0.0 < self.f0_min_hz < self.f0_max_hz,
            f"SpeakerParams needs 0 < f0_min_hz < f0_max_hz, got {self.f0_min_hz}, "
            f"{self.f0_max_hz}",
        )
        _check(
            0.0 < self.eq_low_shelf_hz < self.eq_high_shelf_hz,
            "SpeakerParams needs 0 < eq_low_shelf_hz < eq_high_shelf_hz",
        )
        _check(0 <= self.eq_num_peaking <= 64, "SpeakerParams.eq_num_peaking must be in [0, 64]")
        # The shelves as the EQ will use them at 16 kHz (the high shelf clamped below
        # Nyquist): a low shelf above the clamped high shelf would fail on every clip, so it
        # is refused here, before any work.
        try:
            eqlib.eq_frequencies(
                DEFAULT_SAMPLE_RATE, self.eq_low_shelf_hz, self.eq_high_shelf_hz, 0
            )
        except ValueError as e:
            raise PerturbationError(f"SpeakerParams.eq_low_shelf_hz: {e}") from None
        _check(
            self.f0_max_hz < DEFAULT_SAMPLE_RATE / 2,
            f"SpeakerParams.f0_max_hz must be below {DEFAULT_SAMPLE_RATE // 2} Hz (Nyquist), "
            f"got {self.f0_max_hz}",
        )
        _check(
            0.0 < self.eq_q_min <= self.eq_q_max,
            f"SpeakerParams needs 0 < eq_q_min <= eq_q_max, got {self.eq_q_min}, {self.eq_q_max}",
        )
        _check(0.0 <= self.eq_gain_db <= 40.0, "SpeakerParams.eq_gain_db must be in [0, 40] dB")
        _check(0.0 < self.peak_limit <= 1.0, "SpeakerParams.peak_limit must be in (0, 1]")


@dataclass(frozen=True)
class EmotionParams(_ParamsMixin):
    """Parameters of the emotion perturbation p_e.

    ``num_bands`` is the paper's n_spec, ``num_permuted_bands`` its eta1 and
    ``target_rms`` its eta2. eta1 = 20 and eta2 = 0.05 are the paper's (appendix A.1); the
    paper gives no band count (and its reference code no band permutation), so
    ``num_bands`` = 40 (187.5 Hz bands at the defaults) is this toolkit's choice, kept
    after the layout sweep of ``studies/selectivity.py`` (README, "Selectivity"). Bands
    are ``(n_fft // 2) // num_bands`` bins wide, starting above the DC bin; the few bins
    left over at the top (7.5 to 8 kHz at the defaults) stay in place.
    """

    num_bands: int = 40  # n_spec: not given by the paper, this toolkit's choice
    num_permuted_bands: int = 20  # eta1 (0 disables the permutation; 1 is impossible)
    target_rms: float = 0.05  # eta2, linear full-scale units
    n_fft: int = 1024  # STFT size in samples (Hann window of the same length)
    hop_length: int = 256  # STFT hop in samples
    peak_limit: float = 0.99  # if RMS scaling pushes the peak above this, scale down

    def __post_init__(self) -> None:
        _check(
            self.n_fft >= 16 and self.n_fft % 2 == 0,
            f"EmotionParams.n_fft must be even >= 16, got {self.n_fft}",
        )
        _check(
            0 < self.hop_length <= self.n_fft // 2,
            f"EmotionParams.hop_length must be in (0, n_fft/2], got {self.hop_length}",
        )
        _check(
            1 <= self.num_bands <= self.n_fft // 2,
            f"EmotionParams.num_bands must be in [1, n_fft/2 = {self.n_fft // 2}], "
            f"got {self.num_bands}",
        )
        _check(
            self.num_permuted_bands == 0 or 2 <= self.num_permuted_bands <= self.num_bands,
            "EmotionParams.num_permuted_bands must be 0 or in [2, num_bands] "
            f"(a single band cannot be permuted), got {self.num_permuted_bands}",
        )
        _check(0.0 < self.target_rms < 1.0, "EmotionParams.target_rms must be in (0, 1)")
        _check(0.0 < self.peak_limit <= 1.0, "EmotionParams.peak_limit must be in (0, 1]")

    @property
    def bins_per_band(self) -> int:
        """Width of one band in STFT bins."""
        return (self.n_fft // 2) // self.num_bands


# ----------------------------------------------------------------------------- analysis


@dataclass(frozen=True, eq=False)
class WorldAnalysis:
    """WORLD parameters of one clip, shared by all its views.

    ``f0`` (frames,) in Hz, 0 on unvoiced frames; ``sp`` (frames, fft_size/2 + 1) the
    spectral envelope (power) and ``ap`` (same shape) the aperiodicity, all float64, one
    frame every ``frame_period_ms``. The analysis runs on the clip scaled to peak 1 (WORLD
    adds fixed-level safeguard noise, so a quiet clip would otherwise analyse worse);
    ``input_peak`` restores the level at synthesis. Clips shorter than one CheapTrick
    window are zero-padded at the end before analysis, so the frames may cover more than
    ``num_samples``; synthesis is trimmed back to ``num_samples``.
    """

    f0: np.ndarray
    sp: np.ndarray
    ap: np.ndarray
    frame_period_ms: float
    sample_rate: int
    num_samples: int
    f0_method: str
    input_peak: float = 1.0
    f0_floor_hz: float = DEFAULT_F0_FLOOR_HZ
    f0_ceil_hz: float = DEFAULT_F0_CEIL_HZ

    @property
    def silent(self) -> bool:
        """True for digital silence (peak below :data:`SILENCE_PEAK`): views are silent."""
        return self.input_peak < SILENCE_PEAK

    @property
    def voiced(self) -> np.ndarray:
        """Boolean mask of voiced frames, shape (frames,)."""
        return self.f0 > 0.0

    @property
    def fft_size(self) -> int:
        """CheapTrick FFT size in samples."""
        return 2 * (self.sp.shape[1] - 1)


@functools.cache
def _world():
    """pyworld, imported on first use: planning and no-op commands never pay for it."""
    with warnings.catch_warnings():
        # pyworld 0.3.5 imports the deprecated pkg_resources at import time.
        warnings.simplefilter("ignore")
        import pyworld
    return pyworld


def praat_available() -> bool:
    """Whether the optional ``praat-parselmouth`` package (``--f0 praat``) is installed."""
    import importlib.util

    return importlib.util.find_spec("parselmouth") is not None


def _praat_f0(
    x: np.ndarray, sample_rate: int, times: np.ndarray, floor_hz: float, ceil_hz: float
) -> np.ndarray:
    """F0 (Hz, 0 = unvoiced) at WORLD's frame ``times`` (s) from Praat's pitch tracker.

    Praat's "To Pitch (ac)" with a 5 ms step and an octave cost of 0.05 per octave (Praat's
    default 0.01 let octave-down errors through on 200-1100 Hz voices); its frames are
    centred at other instants than WORLD's, so each WORLD frame takes the linear
    interpolation of the two Praat frames around it when both are voiced, the nearer one's
    value when only that one is, and 0 otherwise (also outside Praat's frames). WORLD's
    StoneMask then refines every voiced value (and unvoices frames whose refinement fails,
    in pauses). The two settings were chosen on a development set of studies/f0_quality.py
    clips disjoint from the ones it reports.
    """
    try:
        import parselmouth
    except ImportError:
        raise PerturbationError(
            "f0 method 'praat' needs the optional package praat-parselmouth (GPL-3.0): "
            "pip install praat-parselmouth"
        ) from None
    sound = parselmouth.Sound(x, sampling_frequency=float(sample_rate))
    pitch = sound.to_pitch_ac(
        time_step=FRAME_PERIOD_MS / 1000.0,
        pitch_floor=float(floor_hz),
        pitch_ceiling=float(ceil_hz),
    )
    values = np.asarray(pitch.selected_array["frequency"], dtype=np.float64)
    centres = np.asarray(pitch.xs(), dtype=np.float64)
    f0 = np.zeros(times.shape[0])
    if values.size == 0:
        return f0
    step = float(pitch.time_step)
    position = (times - centres[0]) / step  # in Praat frames
    left = np.floor(position).astype(np.intp)
    inside = (position >= -0.5) & (position <= values.size - 0.5)
    lo = np.clip(left, 0, values.size - 1)
    hi = np.clip(left + 1, 0, values.size - 1)
    weight = np.clip(position - left, 0.0, 1.0)
    both = (values[lo] > 0) & (values[hi] > 0)
    nearest = np.clip(np.rint(position).astype(np.intp), 0, values.size - 1)
    f0 = np.where(both, values[lo] * (1.0 - weight) + values[hi] * weight, values[nearest])
    f0 = np.where(inside, f0, 0.0)
    return _world().stonemask(x, np.ascontiguousarray(f0), times, sample_rate)


def min_num_samples(sample_rate: int) -> int:
    """The shortest clip (samples) that :func:`analyse` accepts at ``sample_rate``."""
    return math.ceil(MIN_DURATION_S * sample_rate)


def validate_audio(audio: Any, sample_rate: int = DEFAULT_SAMPLE_RATE) -> np.ndarray:
    """Check a clip and return it as a float64 C-contiguous copy, shape (samples,).

    Raises :class:`PerturbationError` for anything WORLD must not see: not 1-D, not
    floating point, empty, shorter than :func:`min_num_samples`, or NaN/inf samples.
    """
    _check(
        isinstance(sample_rate, (int, np.integer)) and sample_rate >= 8000,
        f"sample rate must be an integer >= 8000 Hz, got {sample_rate!r}",
    )
    array = np.asarray(audio)
    _check(array.ndim == 1, f"expected mono audio of shape (samples,), got shape {array.shape}")
    _check(
        array.dtype.kind == "f",
        f"expected floating-point audio in [-1, 1], got dtype {array.dtype}",
    )
    _check(array.size > 0, "empty clip: 0 samples")
    minimum = min_num_samples(sample_rate)
    _check(
        array.size >= minimum,
        f"clip too short for WORLD: {array.size} samples < {minimum} "
        f"({MIN_DURATION_S} s at {sample_rate} Hz)",
    )
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - np.count_nonzero(finite))
        raise PerturbationError(f"clip has {bad} non-finite (NaN or inf) sample(s)")
    # A copy, not a view: the caller's buffer is never modified, and pyworld gets the
    # float64 C-contiguous memory its Cython signatures demand.
    return np.array(array, dtype=np.float64, order="C", copy=True)


def _num_frames(num_samples: int, sample_rate: int, frame_period_ms: float) -> int:
    # pyworld's frame count for a signal of num_samples samples.
    return int(1000.0 * num_samples / sample_rate / frame_period_ms) + 1


def analyse(
    audio: np.ndarray,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    f0_method: str = "harvest",
    *,
    f0_floor_hz: float = DEFAULT_F0_FLOOR_HZ,
    f0_ceil_hz: float = DEFAULT_F0_CEIL_HZ,
) -> WorldAnalysis:
    """WORLD analysis of one mono clip, computed once and shared by all its views.

    ``audio`` (samples,) floating point at ``sample_rate`` Hz; ``f0_method`` is
    ``"harvest"`` (default, robust), ``"dio"`` (DIO refined by StoneMask, several times
    faster) or ``"praat"`` (Praat's pitch tracker, :func:`_praat_f0`; needs the optional
    GPL-3.0 package praat-parselmouth). F0 is searched in [f0_floor_hz, f0_ceil_hz].
    Frames every 5 ms.
    Digital silence gets an all-unvoiced, zero-envelope analysis without calling WORLD.
    Raises :class:`PerturbationError` on invalid input.
    """
    x = validate_audio(audio, sample_rate)
    _check(f0_method in F0_METHODS, f"unknown f0 method {f0_method!r}; expected {F0_METHODS}")
    why = f0_range_problem(f0_floor_hz, f0_ceil_hz, sample_rate)
    _check(why is None, str(why))
    pyworld = _world()
    num_samples = x.size
    fft_size = pyworld.get_cheaptrick_fft_size(sample_rate, f0_floor_hz)
    # Pad short clips to one CheapTrick window so that every analysis window of WORLD
    # lies on real memory; the synthesis is trimmed back to num_samples.
    padded = np.pad(x, (0, max(0, fft_size - num_samples)))
    peak = float(np.max(np.abs(x)))
    common = {
        "frame_period_ms": FRAME_PERIOD_MS,
        "sample_rate": int(sample_rate),
        "num_samples": num_samples,
        "f0_method": f0_method,
        "input_peak": peak,
        "f0_floor_hz": float(f0_floor_hz),
        "f0_ceil_hz": float(f0_ceil_hz),
    }
    if peak < SILENCE_PEAK:
        frames = _num_frames(padded.size, sample_rate, FRAME_PERIOD_MS)
        bins = fft_size // 2 + 1
        return WorldAnalysis(
            f0=np.zeros(frames), sp=np.zeros((frames, bins)), ap=np.ones((frames, bins)), **common
        )
    padded /= peak
    if f0_method == "harvest":
        f0, times = pyworld.harvest(
            padded, sample_rate, f0_floor=f0_floor_hz, f0_ceil=f0_ceil_hz,
            frame_period=FRAME_PERIOD_MS,
        )  # fmt: skip
    elif f0_method == "dio":
        f0, times = pyworld.dio(
            padded, sample_rate, f0_floor=f0_floor_hz, f0_ceil=f0_ceil_hz,
            frame_period=FRAME_PERIOD_MS,
        )  # fmt: skip
        f0 = pyworld.stonemask(padded, f0, times, sample_rate)
    else:
        times = np.arange(_num_frames(padded.size, sample_rate, FRAME_PERIOD_MS))
        times = times * (FRAME_PERIOD_MS / 1000.0)
        f0 = _praat_f0(padded, sample_rate, times, f0_floor_hz, f0_ceil_hz)
    sp = pyworld.cheaptrick(padded, f0, times, sample_rate, f0_floor=f0_floor_hz)
    ap = pyworld.d4c(padded, f0, times, sample_rate, fft_size=fft_size)
    return WorldAnalysis(f0=f0, sp=sp, ap=ap, **common)


def _check_analysis(analysis: WorldAnalysis) -> None:
    # pyworld.synthesize trusts its arrays; a hand-built analysis is checked first.
    _check(isinstance(analysis, WorldAnalysis), "expected a WorldAnalysis from analyse()")
    frames = analysis.f0.shape[0]
    _check(
        analysis.f0.ndim == 1 and frames >= 2,
        f"analysis f0 must be (frames >= 2,), got {analysis.f0.shape}",
    )
    _check(
        analysis.sp.ndim == 2 and analysis.sp.shape[0] == frames and analysis.sp.shape[1] >= 2,
        f"analysis sp shape {analysis.sp.shape} does not match {frames} frames",
    )
    _check(analysis.ap.shape == analysis.sp.shape, "analysis ap and sp shapes differ")
    _check(analysis.num_samples >= 1, "analysis covers no samples")


def _synthesize(analysis: WorldAnalysis, f0: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """WORLD resynthesis at the clip's level, trimmed/padded to num_samples; float64."""
    y = _world().synthesize(
        np.ascontiguousarray(f0, dtype=np.float64),
        np.ascontiguousarray(sp, dtype=np.float64),
        np.ascontiguousarray(analysis.ap, dtype=np.float64),
        analysis.sample_rate,
        analysis.frame_period_ms,
    )
    n = analysis.num_samples
    y = y[:n] if y.size >= n else np.pad(y, (0, n - y.size))
    return y * analysis.input_peak


def _limit_peak(y: np.ndarray, peak_limit: float) -> tuple[np.ndarray, float]:
    """Scale ``y`` down to ``peak_limit`` if louder; returns (y, gain applied)."""
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak <= peak_limit:
        return y, 1.0
    gain = peak_limit / peak
    return y * gain, gain


# ---------------------------------------------------------------- speaker perturbation


def _ratio(rng: np.random.Generator, maximum: float) -> float:
    """r ~ U(1, maximum), inverted with probability 1/2 (two draws, fixed order)."""
    value = float(rng.uniform(1.0, maximum))
    return 1.0 / value if rng.random() < 0.5 else value


def draw_speaker(
    rng: np.random.Generator,
    params: SpeakerParams = SpeakerParams(),
    sample_rate: int = DEFAULT_SAMPLE_RATE,
) -> dict[str, Any]:
    """Draw the random parameters of one p_s view (JSON-able dict).

    Keys: ``formant_ratio`` (r1), ``pitch_ratio`` (r2), ``pitch_range_ratio`` (r3) and
    ``eq`` (types, frequencies_hz, qs, gains_db; see :func:`pipeline.eq.draw_random_eq`).
    The draw order is fixed: r1, r2, r3, EQ gains, EQ Qs.
    """
    r1 = _ratio(rng, params.formant_ratio_max)
    r2 = _ratio(rng, params.pitch_ratio_max)
    r3 = _ratio(rng, params.pitch_range_ratio_max)
    eq = eqlib.draw_random_eq(
        rng,
        sample_rate,
        low_shelf_hz=params.eq_low_shelf_hz,
        high_shelf_hz=params.eq_high_shelf_hz,
        num_peaking=params.eq_num_peaking,
        q_min=params.eq_q_min,
        q_max=params.eq_q_max,
        max_gain_db=params.eq_gain_db,
    )
    return {"formant_ratio": r1, "pitch_ratio": r2, "pitch_range_ratio": r3, "eq": eq}


def warp_envelope(sp: np.ndarray, ratio: float) -> np.ndarray:
    """Formant warp sp'(f) = sp(f / ratio) of an envelope (frames, bins); float64.

    Linear interpolation between bins; frequencies beyond the top bin take its value
    (clamping), so ``ratio < 1`` does not wrap or zero the top of the spectrum.
    """
    bins = sp.shape[1]
    source = np.minimum(np.arange(bins, dtype=np.float64) / ratio, bins - 1.0)
    lower = np.minimum(np.floor(source).astype(np.intp), bins - 2)
    weight = source - lower
    return sp[:, lower] * (1.0 - weight) + sp[:, lower + 1] * weight


def shift_f0(
    f0: np.ndarray,
    pitch_ratio: float,
    range_ratio: float,
    f0_min_hz: float = 40.0,
    f0_max_hz: float = 2000.0,
) -> np.ndarray:
    """f0' = r2 * (m + r3 * (f0 - m)) on voiced frames (m: median voiced F0), clipped to
    [f0_min_hz, f0_max_hz]; unvoiced frames (0) stay 0. (frames,) Hz -> (frames,) Hz.
    """
    out = np.array(f0, dtype=np.float64, copy=True)
    voiced = out > 0.0
    if not voiced.any():
        return out
    median = float(np.median(out[voiced]))
    shifted = pitch_ratio * (median + range_ratio * (out[voiced] - median))
    out[voiced] = np.clip(shifted, f0_min_hz, f0_max_hz)
    return out


def render_speaker_view(
    analysis: WorldAnalysis,
    drawn: Mapping[str, Any],
    params: SpeakerParams = SpeakerParams(),
) -> tuple[np.ndarray, dict[str, Any]]:
    """Build a p_s view from drawn parameters (as from :func:`draw_speaker`).

    Returns the view, float32 (num_samples,) with peak <= params.peak_limit, and what
    happened: ``voiced_frames``, ``f0_median_hz`` (source, None if unvoiced),
    ``f0_shifted`` (False when no frame is voiced: F0 is then left alone while the
    warp and EQ still apply), ``silent`` and ``output_gain`` (the peak-limiting factor).
    """
    _check_analysis(analysis)
    voiced = analysis.voiced
    info: dict[str, Any] = {
        "voiced_frames": int(np.count_nonzero(voiced)),
        "f0_median_hz": float(np.median(analysis.f0[voiced])) if voiced.any() else None,
        "f0_shifted": bool(voiced.any()) and not analysis.silent,
        "silent": analysis.silent,
        "output_gain": 1.0,
    }
    if analysis.silent:
        return np.zeros(analysis.num_samples, dtype=np.float32), info
    sp = warp_envelope(analysis.sp, float(drawn["formant_ratio"]))
    f0 = shift_f0(
        analysis.f0,
        float(drawn["pitch_ratio"]),
        float(drawn["pitch_range_ratio"]),
        params.f0_min_hz,
        min(params.f0_max_hz, analysis.sample_rate / 4.0),
    )
    y = _synthesize(analysis, f0, sp)
    y = eqlib.apply_sos(eqlib.eq_sos(drawn["eq"], analysis.sample_rate), y)
    y, gain = _limit_peak(y, params.peak_limit)
    info["output_gain"] = gain
    return y.astype(np.float32), info


def speaker_view(
    analysis: WorldAnalysis,
    rng: np.random.Generator,
    params: SpeakerParams = SpeakerParams(),
) -> tuple[np.ndarray, dict[str, Any]]:
    """One speaker-perturbed view p_s of an analysed clip.

    Returns (view float32 (num_samples,), drawn) where ``drawn`` holds the random draws
    of :func:`draw_speaker` plus the outcome of :func:`render_speaker_view`; it is
    JSON-able and ``render_speaker_view(analysis, drawn, params)`` rebuilds the view.
    """
    _check_analysis(analysis)
    drawn = draw_speaker(rng, params, analysis.sample_rate)
    view, info = render_speaker_view(analysis, drawn, params)
    return view, {**drawn, **info}


# ---------------------------------------------------------------- emotion perturbation


def flatten_pitch(analysis: WorldAnalysis) -> np.ndarray:
    """The clip resynthesised with every voiced frame at the mean voiced F0.

    Computed once per clip (it is deterministic) and shared by all p_e views. A clip with
    no voiced frame is resynthesised with its F0 unchanged; digital silence gives zeros.
    Returns float64 (num_samples,).
    """
    _check_analysis(analysis)
    if analysis.silent:
        return np.zeros(analysis.num_samples)
    f0 = np.array(analysis.f0, dtype=np.float64, copy=True)
    voiced = f0 > 0.0
    if voiced.any():
        f0[voiced] = float(np.mean(f0[voiced]))
    return _synthesize(analysis, f0, analysis.sp)


@dataclass(frozen=True, eq=False)
class _StftPlan:
    """What the STFT of p_e needs for one (n_fft, hop): windows and slice bookkeeping.

    The conventions are those of ``scipy.signal.ShortTimeFFT(hann(n_fft, sym=False), hop,
    mfft=n_fft)`` with its default ``phase_shift=0`` (slice p is centred on sample p * hop,
    its FFT input rolled so that the centre is sample 0): the band permutation moves complex
    values between bins, so the phase convention is part of the views' definition.
    ``transform`` is that scipy object, used only for its slice range (``p_min``,
    ``p_max(n)``) and its canonical dual window.
    """

    n_fft: int
    hop: int
    window: np.ndarray  # (n_fft,) periodic Hann
    dual_window: np.ndarray  # (n_fft,) canonical dual window (least-squares inverse)
    p_min: int  # first slice index (<= 0): slices start before the signal
    transform: ShortTimeFFT

    @property
    def mid(self) -> int:
        return self.n_fft // 2


@functools.lru_cache(maxsize=8)
def _stft_plan(n_fft: int, hop_length: int) -> _StftPlan:
    from scipy.signal import ShortTimeFFT
    from scipy.signal.windows import hann

    transform = ShortTimeFFT(hann(n_fft, sym=False), hop=hop_length, fs=1.0, mfft=n_fft)
    return _StftPlan(
        n_fft=n_fft,
        hop=hop_length,
        window=np.asarray(transform.win, dtype=np.float64),
        dual_window=np.asarray(transform.dual_win, dtype=np.float64),
        p_min=int(transform.p_min),
        transform=transform,
    )


def _overlap_add(frames: np.ndarray, hop: int) -> np.ndarray:
    """Sum of ``frames`` (P, L), frame p starting at sample p * hop; float64 (P * hop + L').

    Each frame is cut into blocks of ``hop`` samples (zero-padded to L' = a multiple of
    hop) and the blocks are added with one vectorised add per block position. Every
    output sample receives its frames in ascending order, as a frame-by-frame loop adds
    them, so the sums are the same to the last bit.
    """
    count, length = frames.shape
    blocks_per_frame = -(-length // hop)
    padded = np.zeros((count, blocks_per_frame * hop))
    padded[:, :length] = frames
    blocks = padded.reshape(count, blocks_per_frame, hop)
    out = np.zeros((count + blocks_per_frame - 1, hop))
    for r in range(blocks_per_frame - 1, -1, -1):  # later blocks come from earlier frames
        out[r : r + count] += blocks[:, r]
    return out.reshape(-1)


def stft(x: np.ndarray, params: EmotionParams = EmotionParams()) -> np.ndarray:
    """Complex STFT used by p_e, shape (n_fft // 2 + 1, frames); Hann window, hop in samples.

    Frames extend past both ends so that :func:`istft` reconstructs ``x`` exactly. A
    signal shorter than ``n_fft`` is zero-padded at the end to ``n_fft`` samples first.
    One framed array and one batched FFT; the values are those of
    ``scipy.signal.ShortTimeFFT.stft`` (see ``tests/test_perturb_emotion.py``).
    """
    plan = _stft_plan(params.n_fft, params.hop_length)
    x = np.asarray(x, dtype=np.float64)
    x = np.pad(x, (0, max(0, plan.n_fft - x.size)))
    p_max = int(plan.transform.p_max(x.size))
    count = p_max - plan.p_min
    first = plan.p_min * plan.hop - plan.mid  # first sample of the first slice (< 0)
    padded = np.zeros((count - 1) * plan.hop + plan.n_fft)
    padded[-first : -first + x.size] = x
    frames = np.lib.stride_tricks.sliding_window_view(padded, plan.n_fft)[:: plan.hop]
    windowed = np.roll(frames * plan.window, -plan.mid, axis=1)
    return np.fft.rfft(windowed, n=plan.n_fft, axis=1).T


def istft(
    spec: np.ndarray,
    num_samples: int,
    params: EmotionParams = EmotionParams(),
) -> np.ndarray:
    """Inverse of :func:`stft` (least-squares overlap-add), float64 (num_samples,).

    All frames are inverted by one batched inverse FFT, weighted by the canonical dual
    window and overlap-added (:func:`_overlap_add`).
    """
    plan = _stft_plan(params.n_fft, params.hop_length)
    # Reconstruct at least n_fft samples (the length stft() padded to), then trim.
    length = max(num_samples, plan.n_fft)
    last = min(int(plan.transform.p_max(length)), spec.shape[1] + plan.p_min)
    frames = np.fft.irfft(np.asarray(spec)[:, : last - plan.p_min].T, n=plan.n_fft, axis=1)
    frames = np.roll(frames, plan.mid, axis=1) * plan.dual_window
    signal = _overlap_add(frames, plan.hop)
    first = plan.p_min * plan.hop - plan.mid  # sample index of signal[0] (< 0)
    return signal[-first : -first + length][:num_samples]


def band_bins(band: int, params: EmotionParams = EmotionParams()) -> slice:
    """STFT bins of band ``band`` (0-based): ``bins_per_band`` bins starting above DC."""
    width = params.bins_per_band
    return slice(1 + band * width, 1 + (band + 1) * width)


def draw_emotion(
    rng: np.random.Generator,
    params: EmotionParams = EmotionParams(),
) -> dict[str, Any]:
    """Draw the band permutation of one p_e view (JSON-able dict).

    ``permuted_bands``: the eta1 chosen bands, ascending; ``band_sources[i]``: the band
    whose content moves into ``permuted_bands[i]``. The map is a derangement of the chosen
    bands (no chosen band keeps its own content), drawn uniformly by rejection.
    """
    count = params.num_permuted_bands
    if count == 0:
        return {"permuted_bands": [], "band_sources": []}
    chosen = np.sort(rng.choice(params.num_bands, size=count, replace=False))
    identity = np.arange(count)
    # A random permutation is a derangement with probability ~1/e (1/2 for two bands);
    # 10_000 failures in a row has probability below 1e-1700.
    for _ in range(10_000):
        order = rng.permutation(count)
        if not np.any(order == identity):
            break
    else:  # pragma: no cover - unreachable in practice
        raise RuntimeError("could not draw a derangement")
    return {
        "permuted_bands": [int(b) for b in chosen],
        "band_sources": [int(b) for b in chosen[order]],
    }


def permute_bands(
    spec: np.ndarray,
    drawn: Mapping[str, Any],
    params: EmotionParams = EmotionParams(),
) -> np.ndarray:
    """Move the complex STFT contents of the drawn bands; (bins, frames) -> same shape."""
    out = spec.copy()
    for target, source in zip(drawn["permuted_bands"], drawn["band_sources"], strict=True):
        out[band_bins(int(target), params)] = spec[band_bins(int(source), params)]
    return out


def band_permuted(
    flat: np.ndarray,
    drawn: Mapping[str, Any],
    params: EmotionParams = EmotionParams(),
) -> np.ndarray:
    """STFT, band permutation, inverse STFT of ``flat``: float64, same length, no scaling."""
    x = np.asarray(flat, dtype=np.float64)
    return istft(permute_bands(stft(x, params), drawn, params), x.size, params)


def _check_flat(flat: Any) -> np.ndarray:
    array = np.asarray(flat)
    _check(array.ndim == 1 and array.size > 0, f"expected a 1-D signal, got shape {array.shape}")
    _check(array.dtype.kind == "f", f"expected floating-point audio, got dtype {array.dtype}")
    _check(bool(np.isfinite(array).all()), "signal has non-finite (NaN or inf) samples")
    return np.asarray(array, dtype=np.float64)


def render_emotion_view(
    flat: np.ndarray,
    drawn: Mapping[str, Any],
    params: EmotionParams = EmotionParams(),
) -> tuple[np.ndarray, dict[str, Any]]:
    """Build a p_e view of a pitch-flattened clip from a drawn band permutation.

    Returns the view, float32 (samples,), and what happened: ``silent`` (digital silence:
    RMS scaling skipped, the view stays silent), ``rms_scaled`` and ``output_gain``
    (below 1 only when RMS scaling pushed the peak over ``params.peak_limit``; the view's
    RMS is then below ``target_rms``).
    """
    x = _check_flat(flat)
    info: dict[str, Any] = {"silent": False, "rms_scaled": False, "output_gain": 1.0}
    if float(np.max(np.abs(x))) < SILENCE_PEAK:
        info["silent"] = True
        return np.zeros(x.size, dtype=np.float32), info
    y = band_permuted(x, drawn, params)
    rms = float(np.sqrt(np.mean(np.square(y))))
    if rms > SILENCE_PEAK:
        y = y * (params.target_rms / rms)
        info["rms_scaled"] = True
    y, gain = _limit_peak(y, params.peak_limit)
    info["output_gain"] = gain
    return y.astype(np.float32), info


def emotion_view(
    flat: np.ndarray,
    rng: np.random.Generator,
    params: EmotionParams = EmotionParams(),
) -> tuple[np.ndarray, dict[str, Any]]:
    """One emotion-perturbed view p_e of a clip already passed through :func:`flatten_pitch`.

    Returns (view float32 (samples,), drawn): the permutation of :func:`draw_emotion`
    plus the outcome of :func:`render_emotion_view`, which rebuilds the view from it.
    """
    x = _check_flat(flat)
    drawn = draw_emotion(rng, params)
    view, info = render_emotion_view(x, drawn, params)
    return view, {**drawn, **info}


# ----------------------------------------------------------------------------- one clip


def perturb_clip(
    audio: np.ndarray,
    clip_id: str,
    seed: int,
    kinds: Mapping[str, tuple[int, SpeakerParams | EmotionParams | None]],
    f0_method: str = "harvest",
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    *,
    f0_floor_hz: float = DEFAULT_F0_FLOOR_HZ,
    f0_ceil_hz: float = DEFAULT_F0_CEIL_HZ,
) -> dict[str, list[tuple[np.ndarray, dict[str, Any]]]]:
    """All views of one clip from ONE WORLD analysis (F0 searched in [floor, ceil] Hz).

    ``kinds`` maps ``"speaker"`` / ``"emotion"`` to (N, params or None for defaults).
    View i (1..N) of kind k uses ``make_rng(seed, k, clip_id, i)``, so a view does not
    depend on which other views or kinds are drawn, nor in which process. Returns
    ``{kind: [(view float32 (samples,), drawn dict), ...]}`` with N entries per kind.
    Raises :class:`PerturbationError` for a clip or request that cannot be perturbed.
    """
    for kind, (count, params) in kinds.items():
        _check(kind in KINDS, f"unknown perturbation kind {kind!r}; expected {KINDS}")
        _check(int(count) >= 0, f"number of {kind} views must be >= 0, got {count}")
        expected = SpeakerParams if kind == "speaker" else EmotionParams
        _check(
            params is None or isinstance(params, expected),
            f"{kind} views need {expected.__name__}, got {type(params).__name__}",
        )
    analysis = analyse(
        audio, sample_rate, f0_method, f0_floor_hz=f0_floor_hz, f0_ceil_hz=f0_ceil_hz
    )
    out: dict[str, list[tuple[np.ndarray, dict[str, Any]]]] = {}
    for kind, (count, params) in kinds.items():
        rngs = (make_rng(seed, kind, clip_id, index) for index in range(1, int(count) + 1))
        if kind == "speaker":
            speaker_params = params if isinstance(params, SpeakerParams) else SpeakerParams()
            out[kind] = [speaker_view(analysis, rng, speaker_params) for rng in rngs]
        else:
            emotion_params = params if isinstance(params, EmotionParams) else EmotionParams()
            flat = flatten_pitch(analysis) if count else np.zeros(0)
            out[kind] = [emotion_view(flat, rng, emotion_params) for rng in rngs]
    logger.debug("perturbed %s: %s", clip_id, {k: len(v) for k, v in out.items()})
    return out
