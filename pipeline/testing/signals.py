"""Synthetic test signals with known F0 and formants (built in memory, deterministic).

A voiced clip is a band-limited glottal-like source (all harmonics of a known F0 contour
with a -6 dB/octave roll-off, as glottal flow plus lip radiation) through a cascade of
two-pole formant resonators, with short fades at both ends.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from pipeline.manifest import SAMPLE_RATE

# (centre Hz, bandwidth Hz): an /a/-like vowel whose strongest envelope peak is F1.
DEFAULT_FORMANTS = ((700.0, 90.0), (1200.0, 110.0), (2600.0, 160.0))


def f0_glide(duration_s: float, start_hz: float, end_hz: float, sample_rate: int) -> np.ndarray:
    """A linear F0 contour in Hz, one value per sample."""
    return np.linspace(start_hz, end_hz, round(duration_s * sample_rate))


def glottal_source(f0_hz: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Sum of all harmonics below 0.95 * Nyquist of the per-sample F0 ``f0_hz``, 1/k amplitudes."""
    phase = 2.0 * np.pi * np.cumsum(f0_hz) / sample_rate
    out = np.zeros_like(phase)
    max_harmonic = int(0.95 * (sample_rate / 2) / float(np.min(f0_hz)))
    for k in range(1, max_harmonic + 1):
        # Harmonics that would pass 0.95 * Nyquist at some instant are faded out there.
        audible = (k * f0_hz) < 0.95 * sample_rate / 2
        out += audible * np.sin(k * phase) / k
    return out


def resonate(
    x: np.ndarray,
    formants: tuple[tuple[float, float], ...] = DEFAULT_FORMANTS,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Cascade of two-pole resonators (centre Hz, bandwidth Hz), unit gain at DC each."""
    y = np.asarray(x, dtype=np.float64)
    for centre, bandwidth in formants:
        radius = np.exp(-np.pi * bandwidth / sample_rate)
        theta = 2.0 * np.pi * centre / sample_rate
        a = [1.0, -2.0 * radius * np.cos(theta), radius**2]
        y = signal.lfilter([sum(a)], a, y)
    return y


def fade(x: np.ndarray, fade_s: float = 0.02, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Raised-cosine fade in and out of ``fade_s`` seconds."""
    n = min(round(fade_s * sample_rate), x.size // 2)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))
    out = x.copy()
    out[:n] *= ramp
    out[x.size - n :] *= ramp[::-1]
    return out


def voiced_clip(
    duration_s: float = 1.0,
    f0_start_hz: float = 180.0,
    f0_end_hz: float = 240.0,
    formants: tuple[tuple[float, float], ...] = DEFAULT_FORMANTS,
    peak: float = 0.5,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """A vowel-like voiced clip, float64 (samples,), with a linear F0 glide and known formants.

    The median F0 is (f0_start_hz + f0_end_hz) / 2; the strongest envelope peak is the
    first formant.
    """
    f0 = f0_glide(duration_s, f0_start_hz, f0_end_hz, sample_rate)
    y = fade(resonate(glottal_source(f0, sample_rate), formants, sample_rate), 0.02, sample_rate)
    return peak * y / np.max(np.abs(y))


def white_noise(duration_s: float, seed: int = 0, rms: float = 0.1) -> np.ndarray:
    """Gaussian white noise, float64 (samples,) at 16 kHz, from a seeded Generator."""
    rng = np.random.default_rng(seed)
    return rms * rng.standard_normal(round(duration_s * SAMPLE_RATE))


# (centre Hz, bandwidth Hz): the open, wide resonances of a scream or cry.
SCREAM_FORMANTS = ((1300.0, 200.0), (2600.0, 250.0), (3800.0, 300.0))


def scream_f0(
    f0_hz: float, vibrato: float, duration_s: float = 1.0, rate_hz: float = 5.0
) -> np.ndarray:
    """The F0 contour of :func:`scream` in Hz, one value per sample: ``f0_hz`` with a sine
    vibrato of +-``vibrato`` (relative) at ``rate_hz``."""
    t = np.arange(round(duration_s * SAMPLE_RATE)) / SAMPLE_RATE
    return f0_hz * (1.0 + vibrato * np.sin(2.0 * np.pi * rate_hz * t))


def scream(
    f0_hz: float = 1200.0, vibrato: float = 0.06, duration_s: float = 1.0, rate_hz: float = 5.0
) -> np.ndarray:
    """A synthetic scream, float64 (samples,) at peak 0.5: the harmonics of
    :func:`scream_f0` through :data:`SCREAM_FORMANTS`, 30 ms fades."""
    f0 = scream_f0(f0_hz, vibrato, duration_s, rate_hz)
    y = fade(resonate(glottal_source(f0), SCREAM_FORMANTS), 0.03)
    return 0.5 * y / np.max(np.abs(y))
