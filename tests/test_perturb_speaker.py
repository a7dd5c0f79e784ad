"""Speaker perturbation p_s, measured on synthetic voiced clips and white noise."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import signal

from pipeline import eq as eqlib
from pipeline.perturb import (
    SpeakerParams,
    analyse,
    draw_speaker,
    render_speaker_view,
    speaker_view,
)
from pipeline.rng import make_rng
from pipeline.testing.signals import SAMPLE_RATE, voiced_clip, white_noise

SOURCE_MEDIAN_F0 = 210.0  # voiced_clip glides linearly from 180 to 240 Hz
NO_EQ = SpeakerParams(eq_gain_db=0.0)


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return voiced_clip(1.0, 180.0, 240.0)


@pytest.fixture(scope="module")
def analysis(clip):
    return analyse(clip)


@pytest.fixture(scope="module")
def low_clip_analysis():
    # A low voice: its harmonics (100 to 140 Hz apart) sample the envelope densely, so
    # CheapTrick re-estimates the formant of a view precisely enough to measure its shift.
    return analyse(voiced_clip(1.0, 100.0, 140.0))


def median_voiced_f0(audio: np.ndarray) -> float:
    reanalysis = analyse(audio)
    assert reanalysis.voiced.sum() > 100, "the view should still be voiced"
    return float(np.median(reanalysis.f0[reanalysis.voiced]))


def strongest_envelope_peak_hz(audio: np.ndarray) -> float:
    """Centre (power-weighted, within 3 dB) of the strongest peak of the mean voiced
    log-envelope between 200 Hz and 4 kHz."""
    an = analyse(audio)
    log_env = np.log(an.sp[an.voiced][5:-5]).mean(axis=0)
    freqs = np.arange(log_env.size) * an.sample_rate / an.fft_size
    in_band = (freqs > 200.0) & (freqs < 4000.0)
    top = int(np.argmax(np.where(in_band, log_env, -np.inf)))
    floor = log_env[top] - np.log(10**0.3)
    lo, hi = top, top
    while log_env[lo - 1] > floor:
        lo -= 1
    while log_env[hi + 1] > floor:
        hi += 1
    weights = np.exp(log_env[lo : hi + 1])
    return float(np.sum(weights * freqs[lo : hi + 1]) / np.sum(weights))


def test_analysis_finds_the_known_f0(analysis):
    # The instrument first: the analysis recovers the generator's median F0.
    assert analysis.voiced.mean() > 0.9
    assert np.median(analysis.f0[analysis.voiced]) == pytest.approx(SOURCE_MEDIAN_F0, rel=0.02)


@pytest.mark.parametrize("view_index", [1, 2, 3, 4, 5, 6])
def test_view_median_f0_is_r2_times_source_median(analysis, view_index):
    view, drawn = speaker_view(analysis, make_rng(7, "speaker", "f0", view_index), NO_EQ)
    expected = drawn["pitch_ratio"] * SOURCE_MEDIAN_F0
    assert drawn["f0_shifted"] is True
    assert median_voiced_f0(view) == pytest.approx(expected, rel=0.05)


def test_f0_test_views_cover_both_directions(analysis):
    # Guards the test above: its views raise and lower the pitch, by noticeable amounts.
    ratios = [draw_speaker(make_rng(7, "speaker", "f0", i))["pitch_ratio"] for i in range(1, 7)]
    assert min(ratios) < 0.9 and max(ratios) > 1.1


def test_view_f0_range_is_scaled_by_r3(analysis):
    params = SpeakerParams(eq_gain_db=0.0, pitch_ratio_max=1.0)
    source_spread = np.ptp(analysis.f0[analysis.voiced][10:-10])
    for index in (1, 2, 3):
        view, drawn = speaker_view(analysis, make_rng(3, "speaker", "r3", index), params)
        reanalysis = analyse(view)
        spread = np.ptp(reanalysis.f0[reanalysis.voiced][10:-10])
        assert spread / source_spread == pytest.approx(drawn["pitch_range_ratio"], rel=0.1)


def test_analysis_finds_the_known_first_formant(low_clip_analysis):
    an = low_clip_analysis
    log_env = np.log(an.sp[an.voiced]).mean(axis=0)
    freqs = np.arange(log_env.size) * an.sample_rate / an.fft_size
    assert freqs[np.argmax(log_env)] == pytest.approx(700.0, rel=0.05)


@pytest.mark.parametrize("view_index", [1, 2, 3, 4, 5, 6])
def test_strongest_envelope_peak_moves_by_r1(low_clip_analysis, view_index):
    # Pitch and EQ held fixed so that only the formant warp moves the envelope.
    params = SpeakerParams(pitch_ratio_max=1.0, pitch_range_ratio_max=1.0, eq_gain_db=0.0)
    source_audio = render_speaker_view(
        low_clip_analysis,
        {"formant_ratio": 1.0, "pitch_ratio": 1.0, "pitch_range_ratio": 1.0, "eq": _flat_eq()},
        params,
    )[0]
    source_peak = strongest_envelope_peak_hz(source_audio)
    view, drawn = speaker_view(
        low_clip_analysis, make_rng(11, "speaker", "formant", view_index), params
    )
    assert strongest_envelope_peak_hz(view) == pytest.approx(
        drawn["formant_ratio"] * source_peak, rel=0.05
    )


def _flat_eq() -> dict:
    return eqlib.draw_random_eq(make_rng(0), SAMPLE_RATE, max_gain_db=0.0)


def test_formant_test_views_cover_both_directions():
    ratios = [
        draw_speaker(make_rng(11, "speaker", "formant", i))["formant_ratio"] for i in range(1, 7)
    ]
    assert min(ratios) < 0.85 and max(ratios) > 1.15


def _measured_response_db(x: np.ndarray, y: np.ndarray, nperseg: int):
    # H1 estimate of the transfer function x -> y (exact for a noiseless LTI system).
    freqs, cross = signal.csd(x, y, SAMPLE_RATE, nperseg=nperseg)
    _, auto = signal.welch(x, SAMPLE_RATE, nperseg=nperseg)
    return freqs, 20.0 * np.log10(np.abs(cross / auto))


def _designed_response_db(eq: dict, freqs: np.ndarray, index: int) -> np.ndarray:
    sos = eqlib.biquad_sos(
        eq["types"][index],
        eq["frequencies_hz"][index],
        eq["qs"][index],
        eq["gains_db"][index],
        SAMPLE_RATE,
    )
    _, response = signal.sosfreqz(sos[None, :], worN=freqs, fs=SAMPLE_RATE)
    return 20.0 * np.log10(np.abs(response))


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    return white_noise(20.0, seed=5)


@pytest.mark.parametrize("view_index", [1, 2, 3])
def test_eq_response_on_white_noise_matches_designed_filters(noise, view_index):
    eq = draw_speaker(make_rng(5, "speaker", "eq", view_index))["eq"]
    filtered = eqlib.apply_sos(eqlib.eq_sos(eq, SAMPLE_RATE), noise)
    freqs, measured = _measured_response_db(noise, filtered, nperseg=8192)
    designed = sum(_designed_response_db(eq, freqs, i) for i in range(len(eq["types"])))
    band = (freqs >= 100.0) & (freqs <= 7000.0)
    assert np.max(np.abs(measured[band] - designed[band])) < 1.0
    # The EQ does something: somewhere in the band it deviates by several dB.
    assert np.max(np.abs(measured[band])) > 3.0


def test_eq_has_paper_layout_and_ranges():
    eq = draw_speaker(make_rng(5, "speaker", "eq", 1))["eq"]
    freqs = eq["frequencies_hz"]
    assert eq["types"] == ["low_shelf", *["peaking"] * 8, "high_shelf"]
    assert freqs[0] == 60.0 and freqs[-1] == pytest.approx(0.45 * SAMPLE_RATE)
    assert np.all(np.diff(np.log(freqs)) == pytest.approx(np.log(freqs[1] / freqs[0])))
    many = [draw_speaker(make_rng(5, "speaker", "eq", i))["eq"] for i in range(200)]
    qs = np.array([e["qs"] for e in many])
    gains = np.array([e["gains_db"] for e in many])
    assert qs.min() >= 2.0 and qs.max() <= 5.0
    assert gains.min() >= -12.0 and gains.max() <= 12.0 and gains.min() < -11.5
    # Q is log-uniform: its log-median sits at the geometric mean of the range.
    assert np.median(qs) == pytest.approx(np.sqrt(10.0), rel=0.05)


@pytest.mark.parametrize("index", range(10))
def test_isolated_eq_filter_reaches_drawn_gain(noise, index):
    eq = draw_speaker(make_rng(5, "speaker", "eq", 2))["eq"]
    sos = eqlib.biquad_sos(
        eq["types"][index], eq["frequencies_hz"][index], eq["qs"][index], eq["gains_db"][index],
        SAMPLE_RATE,
    )  # fmt: skip
    freqs, measured = _measured_response_db(noise, eqlib.apply_sos(sos[None, :], noise), 16384)
    if eq["types"][index] == "peaking":
        at = np.interp(eq["frequencies_hz"][index], freqs, measured)
    elif eq["types"][index] == "low_shelf":
        at = measured[1]  # ~1 Hz: the bottom of the shelf
    else:
        at = measured[-2]  # ~8 kHz: the top of the shelf
    assert at == pytest.approx(eq["gains_db"][index], abs=0.25)


def test_ratio_distributions_span_paper_ranges():
    draws = [draw_speaker(make_rng(0, "speaker", "dist", i)) for i in range(1, 2001)]
    for key, low, high in (
        ("formant_ratio", 1 / 1.4, 1.4),
        ("pitch_ratio", 0.5, 2.0),
        ("pitch_range_ratio", 1 / 1.5, 1.5),
    ):
        values = np.array([d[key] for d in draws])
        assert values.min() >= low and values.max() <= high
        # Spans the range: reaches within 2 % of both ends.
        assert values.min() < low * 1.02 and values.max() > high * 0.98
        assert 0.45 < np.mean(values < 1.0) < 0.55


def test_view_is_rebuilt_from_its_json_record(analysis):
    view, drawn = speaker_view(analysis, make_rng(1, "speaker", "regen", 1))
    record = json.loads(json.dumps(drawn))
    rebuilt, _ = render_speaker_view(analysis, record)
    assert rebuilt.tobytes() == view.tobytes()


def test_unvoiced_clip_keeps_f0_but_is_still_warped_and_equalised():
    an = analyse(white_noise(1.0, seed=9))
    assert an.voiced.sum() == 0
    view, drawn = speaker_view(an, make_rng(1, "speaker", "noise", 1))
    assert drawn["voiced_frames"] == 0 and drawn["f0_shifted"] is False
    assert drawn["f0_median_hz"] is None
    # The view is not the input: its spectrum carries the drawn EQ.
    identity = render_speaker_view(
        an,
        {"formant_ratio": 1.0, "pitch_ratio": 1.0, "pitch_range_ratio": 1.0, "eq": _flat_eq()},
    )[0]
    freqs, p_view = signal.welch(view, SAMPLE_RATE, nperseg=1024)
    _, p_ident = signal.welch(identity, SAMPLE_RATE, nperseg=1024)
    ratio_db = 10 * np.log10(p_view / p_ident)
    band = (freqs > 100) & (freqs < 7000)
    assert np.ptp(ratio_db[band]) > 6.0
