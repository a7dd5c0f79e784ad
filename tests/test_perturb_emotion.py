"""Emotion perturbation p_e: pitch flattening, band permutation, RMS scaling."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from pipeline.perturb import (
    EmotionParams,
    analyse,
    band_bins,
    band_permuted,
    draw_emotion,
    emotion_view,
    flatten_pitch,
    permute_bands,
    render_emotion_view,
    stft,
)
from pipeline.rng import make_rng
from pipeline.testing.signals import voiced_clip, white_noise

PARAMS = EmotionParams()
NO_PERMUTATION = EmotionParams(num_permuted_bands=0)


@pytest.fixture(scope="module")
def analysis():
    # F0 glides 180 -> 240 Hz: a standard deviation of about 8 % of the mean to flatten.
    return analyse(voiced_clip(1.0, 180.0, 240.0))


@pytest.fixture(scope="module")
def flat(analysis) -> np.ndarray:
    return flatten_pitch(analysis)


def voiced_f0(audio: np.ndarray) -> np.ndarray:
    an = analyse(audio)
    return an.f0[an.voiced]


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x.astype(np.float64)))))


def test_source_pitch_is_not_flat(analysis):
    f0 = analysis.f0[analysis.voiced]
    assert f0.std() / f0.mean() > 0.05


def test_flattened_pitch_has_under_2_percent_deviation(analysis, flat):
    f0 = voiced_f0(flat)
    assert f0.size > 0.9 * analysis.voiced.sum()
    assert f0.std() / f0.mean() < 0.02
    assert f0.mean() == pytest.approx(analysis.f0[analysis.voiced].mean(), rel=0.02)


def test_view_without_permutation_keeps_the_flat_pitch(flat):
    # With the permutation disabled the view is the flattened clip at eta2 RMS; F0 is
    # measurable there (a band-scrambled signal has no F0 to measure).
    view, _ = emotion_view(flat, make_rng(0, "emotion", "flat", 1), NO_PERMUTATION)
    f0 = voiced_f0(view)
    assert f0.size > 150
    assert f0.std() / f0.mean() < 0.02


@pytest.mark.parametrize("view_index", [1, 2, 3])
@pytest.mark.parametrize("source", ["voiced", "noise"])
def test_view_rms_is_eta2(flat, view_index, source):
    x = flat if source == "voiced" else white_noise(1.0, seed=3, rms=0.3)
    view, drawn = emotion_view(x, make_rng(0, "emotion", source, view_index))
    assert drawn["rms_scaled"] is True and drawn["output_gain"] == 1.0
    assert rms(view) == pytest.approx(0.05, rel=0.01)


def test_target_rms_is_a_parameter(flat):
    view, _ = emotion_view(flat, make_rng(0, "emotion", "rms", 1), EmotionParams(target_rms=0.1))
    assert rms(view) == pytest.approx(0.1, rel=0.01)


@pytest.mark.parametrize("view_index", [1, 2, 3])
def test_chosen_bands_are_exactly_permuted_in_stft_domain(flat, view_index):
    drawn = draw_emotion(make_rng(0, "emotion", "bands", view_index))
    targets, sources = drawn["permuted_bands"], drawn["band_sources"]
    assert len(targets) == 20 and len(set(targets)) == 20
    assert sorted(sources) == targets  # a permutation of the chosen bands ...
    assert all(t != s for t, s in zip(targets, sources, strict=True))  # ... a derangement
    spec = stft(flat)
    permuted = permute_bands(spec, drawn)
    for target, source in zip(targets, sources, strict=True):
        assert np.array_equal(permuted[band_bins(target)], spec[band_bins(source)])
        assert not np.allclose(permuted[band_bins(target)], spec[band_bins(target)])
    untouched = np.ones(spec.shape[0], dtype=bool)
    for target in targets:
        untouched[band_bins(target)] = False
    assert np.array_equal(permuted[untouched], spec[untouched])
    # 40 bands of 12 bins above DC; the bins above them stay in place.
    assert band_bins(39).stop == 1 + 40 * 12 <= spec.shape[0]


def test_inverse_stft_is_exact_without_permutation(flat):
    unchanged = band_permuted(flat, {"permuted_bands": [], "band_sources": []})
    assert np.max(np.abs(unchanged - flat)) < 1e-12


def _scipy_band_permuted(x: np.ndarray, drawn: dict, params: EmotionParams) -> np.ndarray:
    """The p_e round trip as it was written before vectorisation: scipy's ShortTimeFFT,
    which computes one slice per Python call (the reference the fast version must match)."""
    from scipy.signal import ShortTimeFFT
    from scipy.signal.windows import hann

    transform = ShortTimeFFT(hann(params.n_fft, sym=False), hop=params.hop_length, fs=1.0)
    spec = transform.stft(np.pad(x, (0, max(0, params.n_fft - x.size))))
    out = spec.copy()
    width = params.bins_per_band
    for target, source in zip(drawn["permuted_bands"], drawn["band_sources"], strict=True):
        out[1 + target * width : 1 + (target + 1) * width] = spec[
            1 + source * width : 1 + (source + 1) * width
        ]
    return transform.istft(out, k1=max(x.size, params.n_fft))[: x.size], spec


@pytest.mark.parametrize(
    "params",
    [
        PARAMS,
        EmotionParams(n_fft=512, hop_length=160),  # a hop that does not divide n_fft
        EmotionParams(n_fft=64, hop_length=24, num_bands=8, num_permuted_bands=5),
    ],
    ids=["default", "512-160", "64-24"],
)
def test_vectorised_stft_matches_the_per_frame_reference(params):
    rng = np.random.default_rng(11)
    for length in (200, params.n_fft - 1, params.n_fft, params.n_fft + 1, 16_000, 23_457):
        x = rng.standard_normal(length)
        drawn = draw_emotion(make_rng(5, "emotion", "stft", length), params)
        reference, reference_spec = _scipy_band_permuted(x, drawn, params)
        spec = stft(x, params)
        assert spec.shape == reference_spec.shape
        np.testing.assert_allclose(spec, reference_spec, rtol=0, atol=1e-9)
        view = band_permuted(x, drawn, params)
        assert view.shape == (length,)
        np.testing.assert_allclose(view, reference, rtol=0, atol=1e-12)


def _band_correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.vdot(a, b)) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_permuted_signal_carries_the_moved_band_contents():
    # On white noise every band has its own content, so the STFT of the view (before RMS
    # scaling) shows where each band's content went: the chosen bands hold their
    # source's content, the others their own.
    noise = white_noise(1.0, seed=4)
    drawn = draw_emotion(make_rng(0, "emotion", "noise-bands", 1))
    spec_in = stft(noise)
    spec_out = stft(band_permuted(noise, drawn))
    source_of = dict(zip(drawn["permuted_bands"], drawn["band_sources"], strict=True))
    for band in range(PARAMS.num_bands):
        out = spec_out[band_bins(band)]
        assert _band_correlation(out, spec_in[band_bins(source_of.get(band, band))]) > 0.9
        if band in source_of:
            assert _band_correlation(out, spec_in[band_bins(band)]) < 0.5


def test_views_of_one_clip_differ(flat):
    views = [emotion_view(flat, make_rng(0, "emotion", "clip", i)) for i in range(1, 6)]
    for (a, da), (b, db) in itertools.combinations(views, 2):
        assert (
            da["permuted_bands"] != db["permuted_bands"] or da["band_sources"] != db["band_sources"]
        )
        assert rms(a - b) > 0.01  # differ audibly, not by rounding


def test_view_is_rebuilt_from_its_json_record(flat):
    view, drawn = emotion_view(flat, make_rng(2, "emotion", "regen", 1))
    rebuilt, _ = render_emotion_view(flat, json.loads(json.dumps(drawn)))
    assert rebuilt.tobytes() == view.tobytes()


def test_permutation_draws_are_uniform_over_bands():
    counts = np.zeros(PARAMS.num_bands)
    for i in range(1, 401):
        counts[draw_emotion(make_rng(0, "emotion", "uniform", i))["permuted_bands"]] += 1
    # Each band is chosen with probability 20/40; 400 draws -> 200 +- 10 (1 sd).
    assert counts.min() > 160 and counts.max() < 240


def test_peaky_signal_is_limited_below_full_scale():
    # A sparse click train has a crest factor far above 1 / 0.05 = 20: scaling it to
    # RMS 0.05 would clip, so the view is scaled down to the peak limit instead.
    clicks = np.zeros(16000)
    clicks[::4000] = 0.5
    view, drawn = emotion_view(clicks, make_rng(0, "emotion", "clicks", 1))
    assert np.max(np.abs(view)) <= 0.99
    assert drawn["output_gain"] < 1.0 and rms(view) < 0.05
