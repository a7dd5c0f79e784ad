"""Audio-EQ-Cookbook biquads and the NANSY random parametric equaliser.

The random EQ of the speaker perturbation (Choi et al., 2021) is a low-shelf, a row of
peaking filters and a high-shelf, each with a random gain and Q. Here every filter is one
second-order section (SOS row ``[b0, b1, b2, 1, a1, a2]``) built with the formulas of
R. Bristow-Johnson's Audio EQ Cookbook, and the whole EQ is applied as one SOS cascade
(numerically safer than multiplying the polynomials out).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

LOW_SHELF = "low_shelf"
PEAKING = "peaking"
HIGH_SHELF = "high_shelf"
FILTER_TYPES = (LOW_SHELF, PEAKING, HIGH_SHELF)

# A shelf placed at or above Nyquist is not a filter; 0.45 * fs keeps the high shelf a
# little below it (7.2 kHz at 16 kHz) where the bilinear transform is still well behaved.
MAX_SHELF_FRACTION_OF_FS = 0.45


def _normalised(b: tuple[float, float, float], a: tuple[float, float, float]) -> np.ndarray:
    a0 = a[0]
    return np.array([b[0] / a0, b[1] / a0, b[2] / a0, 1.0, a[1] / a0, a[2] / a0])


def biquad_sos(
    filter_type: str, frequency_hz: float, q: float, gain_db: float, sample_rate: int
) -> np.ndarray:
    """One cookbook biquad as an SOS row, shape (6,).

    ``filter_type`` is ``"low_shelf"``, ``"peaking"`` or ``"high_shelf"``; ``frequency_hz``
    is the centre (peaking) or corner (shelf) frequency in Hz, strictly between 0 and
    Nyquist; ``q`` > 0; ``gain_db`` the gain at the centre (peaking) or on the shelf (dB).
    """
    nyquist = sample_rate / 2.0
    if not 0.0 < frequency_hz < nyquist:
        raise ValueError(f"filter frequency {frequency_hz} Hz not in (0, {nyquist}) Hz")
    if not q > 0.0:
        raise ValueError(f"filter Q must be > 0, got {q}")
    amp = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * frequency_hz / sample_rate
    cos_w0 = math.cos(w0)
    alpha = math.sin(w0) / (2.0 * q)
    if filter_type == PEAKING:
        b = (1.0 + alpha * amp, -2.0 * cos_w0, 1.0 - alpha * amp)
        a = (1.0 + alpha / amp, -2.0 * cos_w0, 1.0 - alpha / amp)
    elif filter_type == LOW_SHELF:
        root = 2.0 * math.sqrt(amp) * alpha
        b = (
            amp * ((amp + 1) - (amp - 1) * cos_w0 + root),
            2.0 * amp * ((amp - 1) - (amp + 1) * cos_w0),
            amp * ((amp + 1) - (amp - 1) * cos_w0 - root),
        )
        a = (
            (amp + 1) + (amp - 1) * cos_w0 + root,
            -2.0 * ((amp - 1) + (amp + 1) * cos_w0),
            (amp + 1) + (amp - 1) * cos_w0 - root,
        )
    elif filter_type == HIGH_SHELF:
        root = 2.0 * math.sqrt(amp) * alpha
        b = (
            amp * ((amp + 1) + (amp - 1) * cos_w0 + root),
            -2.0 * amp * ((amp - 1) + (amp + 1) * cos_w0),
            amp * ((amp + 1) + (amp - 1) * cos_w0 - root),
        )
        a = (
            (amp + 1) - (amp - 1) * cos_w0 + root,
            2.0 * ((amp - 1) - (amp + 1) * cos_w0),
            (amp + 1) - (amp - 1) * cos_w0 - root,
        )
    else:
        raise ValueError(f"unknown filter type {filter_type!r}; expected one of {FILTER_TYPES}")
    return _normalised(b, a)


def eq_frequencies(
    sample_rate: int, low_shelf_hz: float, high_shelf_hz: float, num_peaking: int
) -> list[float]:
    """Corner/centre frequencies in Hz: low shelf, ``num_peaking`` peaks, high shelf.

    The high shelf is clamped to ``0.45 * sample_rate``; the peaking filters are spaced
    geometrically strictly between the two shelves.
    """
    high = min(high_shelf_hz, MAX_SHELF_FRACTION_OF_FS * sample_rate)
    if not 0.0 < low_shelf_hz < high:
        raise ValueError(
            f"low shelf {low_shelf_hz} Hz must lie below the high shelf {high} Hz "
            f"at {sample_rate} Hz"
        )
    inner = np.geomspace(low_shelf_hz, high, num_peaking + 2)[1:-1]
    return [float(low_shelf_hz), *(float(f) for f in inner), float(high)]


def draw_random_eq(
    rng: np.random.Generator,
    sample_rate: int,
    *,
    low_shelf_hz: float = 60.0,
    high_shelf_hz: float = 10_000.0,
    num_peaking: int = 8,
    q_min: float = 2.0,
    q_max: float = 5.0,
    max_gain_db: float = 12.0,
) -> dict[str, Any]:
    """Draw one random EQ; returns a JSON-able dict of lists, one entry per filter.

    Keys: ``types``, ``frequencies_hz``, ``qs`` (log-uniform in [q_min, q_max]) and
    ``gains_db`` (uniform in [-max_gain_db, max_gain_db]). Gains are drawn before Qs, all
    filters at once, so the draw order is fixed.
    """
    frequencies = eq_frequencies(sample_rate, low_shelf_hz, high_shelf_hz, num_peaking)
    count = len(frequencies)
    gains = rng.uniform(-max_gain_db, max_gain_db, size=count)
    qs = np.exp(rng.uniform(math.log(q_min), math.log(q_max), size=count))
    return {
        "types": [LOW_SHELF, *([PEAKING] * num_peaking), HIGH_SHELF],
        "frequencies_hz": frequencies,
        "qs": [float(q) for q in qs],
        "gains_db": [float(g) for g in gains],
    }


def eq_sos(eq: dict[str, Any], sample_rate: int) -> np.ndarray:
    """The SOS cascade of a drawn EQ (as returned by :func:`draw_random_eq`), shape (F, 6)."""
    rows = [
        biquad_sos(kind, freq, q, gain, sample_rate)
        for kind, freq, q, gain in zip(
            eq["types"], eq["frequencies_hz"], eq["qs"], eq["gains_db"], strict=True
        )
    ]
    return np.stack(rows) if rows else np.zeros((0, 6))


def apply_sos(sos: np.ndarray, audio: np.ndarray) -> np.ndarray:
    """Filter ``audio`` (samples,) with the cascade ``sos`` (F, 6); float64, same length."""
    if len(sos) == 0 or audio.size == 0:
        return np.asarray(audio, dtype=np.float64).copy()
    from scipy.signal import sosfilt  # imported on first use (a heavy import)

    return sosfilt(sos, np.asarray(audio, dtype=np.float64))
