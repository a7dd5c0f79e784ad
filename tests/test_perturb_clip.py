"""perturb_clip: shared analysis, view invariants, determinism, edge cases, parameters."""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.perturb import (
    PERTURB_VERSION,
    EmotionParams,
    PerturbationError,
    SpeakerParams,
    WorldAnalysis,
    analyse,
    emotion_view,
    flatten_pitch,
    perturb_clip,
    speaker_view,
)
from pipeline.rng import make_rng
from pipeline.testing.signals import voiced_clip, white_noise

REPO = Path(__file__).resolve().parents[1]
BOTH = {"speaker": (3, None), "emotion": (3, None)}


def assert_valid_views(out: dict, num_samples: int, counts: dict | None = None) -> None:
    for kind, (count, _) in (counts or BOTH).items():
        assert len(out[kind]) == count
        for view, drawn in out[kind]:
            assert view.dtype == np.float32 and view.shape == (num_samples,)
            assert np.isfinite(view).all()
            assert np.max(np.abs(view), initial=0.0) <= 1.0
            json.dumps(drawn)  # the manifest records it as JSON


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return voiced_clip(0.5, 150.0, 200.0)


@pytest.fixture(scope="module")
def views(clip) -> dict:
    return perturb_clip(clip, "clip-a", 42, {"speaker": (5, None), "emotion": (5, None)})


# ------------------------------------------------------------------ views and their rngs


def test_views_are_valid(clip, views):
    assert_valid_views(views, clip.size, {"speaker": (5, None), "emotion": (5, None)})


@pytest.mark.parametrize("kind", ["speaker", "emotion"])
def test_different_view_indices_give_different_views(views, kind):
    for (a, _), (b, _) in itertools.combinations(views[kind], 2):
        assert not np.array_equal(a, b)


def test_view_i_uses_make_rng_seed_kind_clip_i(clip, views):
    # The contract with the Dask stage: view i of a kind is reproducible on its own.
    analysis = analyse(clip)
    flat = flatten_pitch(analysis)
    for index in (1, 5):
        s_view, s_drawn = speaker_view(analysis, make_rng(42, "speaker", "clip-a", index))
        e_view, e_drawn = emotion_view(flat, make_rng(42, "emotion", "clip-a", index))
        assert s_view.tobytes() == views["speaker"][index - 1][0].tobytes()
        assert e_view.tobytes() == views["emotion"][index - 1][0].tobytes()
        assert s_drawn == views["speaker"][index - 1][1]
        assert e_drawn == views["emotion"][index - 1][1]


def test_a_view_does_not_depend_on_the_other_views_requested(clip, views):
    alone = perturb_clip(clip, "clip-a", 42, {"emotion": (2, None)})
    assert set(alone) == {"emotion"}
    for (a, _), (b, _) in zip(alone["emotion"], views["emotion"][:2], strict=False):
        assert a.tobytes() == b.tobytes()


def test_seed_and_clip_id_change_the_views(clip, views):
    other_seed = perturb_clip(clip, "clip-a", 43, {"speaker": (1, None)})
    other_clip = perturb_clip(clip, "clip-b", 42, {"speaker": (1, None)})
    first = views["speaker"][0][0]
    assert not np.array_equal(other_seed["speaker"][0][0], first)
    assert not np.array_equal(other_clip["speaker"][0][0], first)


_DIGEST_SCRIPT = textwrap.dedent(
    """
    import hashlib, json
    from pipeline.testing.signals import voiced_clip
    from pipeline.perturb import perturb_clip
    out = perturb_clip(voiced_clip(0.5, 150.0, 200.0), "clip-a", 42,
                       {"speaker": (5, None), "emotion": (5, None)})
    digest = hashlib.sha256()
    for kind in ("speaker", "emotion"):
        for view, drawn in out[kind]:
            digest.update(view.tobytes())
            digest.update(json.dumps(drawn, sort_keys=True).encode())
    print(digest.hexdigest())
    """
)


def _digest(out: dict) -> str:
    digest = hashlib.sha256()
    for kind in ("speaker", "emotion"):
        for view, drawn in out[kind]:
            digest.update(view.tobytes())
            digest.update(json.dumps(drawn, sort_keys=True).encode())
    return digest.hexdigest()


def test_same_bytes_in_two_separate_processes(views):
    # Fresh interpreters get fresh hash salts: only hashlib-based seeding agrees.
    digests = [
        subprocess.run(
            [sys.executable, "-c", _DIGEST_SCRIPT],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout.strip()
        for _ in range(2)
    ]
    assert digests[0] == digests[1] == _digest(views)


def test_analysis_is_shared(monkeypatch, clip):
    import pipeline.perturb as perturb

    calls = []
    real = perturb.analyse
    monkeypatch.setattr(perturb, "analyse", lambda *a, **k: calls.append(1) or real(*a, **k))
    perturb.perturb_clip(clip, "clip-a", 0, {"speaker": (3, None), "emotion": (3, None)})
    assert len(calls) == 1


def test_dio_is_selectable_and_gives_other_views(clip, views):
    out = perturb_clip(clip, "clip-a", 42, {"speaker": (1, None)}, f0_method="dio")
    assert analyse(clip, f0_method="dio").f0_method == "dio"
    assert_valid_views(out, clip.size, {"speaker": (1, None)})
    assert out["speaker"][0][1] != {} and not np.array_equal(
        out["speaker"][0][0], views["speaker"][0][0]
    )


# --------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (np.zeros(0), "empty clip"),
        (np.zeros(10), "clip too short for WORLD: 10 samples < 400"),
        (np.full(16000, np.nan), "16000 non-finite"),
        (np.where(np.arange(16000) == 5, np.inf, 0.1), "1 non-finite"),
        (np.zeros((2, 16000)), "expected mono audio"),
        (np.zeros(16000, dtype=np.int16), "expected floating-point audio"),
    ],
    ids=["empty", "10-samples", "nan", "inf", "stereo", "int16"],
)
def test_invalid_clips_raise_a_named_error(audio, message):
    with pytest.raises(PerturbationError, match=message):
        perturb_clip(audio, "bad", 0, BOTH)


def test_unknown_f0_method_and_kind_raise():
    with pytest.raises(PerturbationError, match="unknown f0 method"):
        analyse(np.zeros(1000), f0_method="crepe")
    with pytest.raises(PerturbationError, match="unknown perturbation kind"):
        perturb_clip(np.zeros(1000), "c", 0, {"noise": (1, None)})
    with pytest.raises(PerturbationError, match="need SpeakerParams"):
        perturb_clip(np.zeros(1000), "c", 0, {"speaker": (1, EmotionParams())})


def test_50_ms_clip_is_padded_for_world_and_perturbed():
    clip = voiced_clip(0.05, 200.0, 200.0)
    analysis = analyse(clip)
    # Padded to one CheapTrick window (1024 samples) for analysis, views trimmed back.
    assert analysis.num_samples == 800 and analysis.f0.size == 1024 // 80 + 1
    out = perturb_clip(clip, "short", 0, BOTH)
    assert_valid_views(out, 800)
    assert out["speaker"][0][1]["voiced_frames"] > 0


def test_digital_silence_gives_silent_views():
    out = perturb_clip(np.zeros(16000), "silence", 0, BOTH)
    assert_valid_views(out, 16000)
    for view, drawn in out["speaker"] + out["emotion"]:
        assert not view.any() and drawn["silent"] is True
    assert all(drawn["rms_scaled"] is False for _, drawn in out["emotion"])


def test_white_noise_has_no_voicing_and_still_gets_views():
    noise = white_noise(1.0, seed=2)
    out = perturb_clip(noise, "noise", 0, BOTH)
    assert_valid_views(out, noise.size)
    for _, drawn in out["speaker"]:
        assert drawn["voiced_frames"] == 0 and drawn["f0_shifted"] is False
    for view, _ in out["emotion"]:
        assert np.sqrt(np.mean(view.astype(np.float64) ** 2)) == pytest.approx(0.05, rel=0.01)


def test_clip_clipped_at_full_scale_stays_below_full_scale():
    clipped = np.clip(4.0 * voiced_clip(1.0), -1.0, 1.0)
    assert np.mean(np.abs(clipped) == 1.0) > 0.05
    out = perturb_clip(clipped, "clipped", 0, BOTH)
    assert_valid_views(out, clipped.size)
    # Louder than full scale on the way (EQ boosts up to +12 dB), limited at the end.
    assert max(np.max(np.abs(v)) for v, _ in out["speaker"]) <= 0.99


def test_loud_view_is_limited_and_says_so():
    loud = voiced_clip(0.5, peak=1.0)
    params = SpeakerParams(eq_gain_db=24.0)
    gains = [
        d["output_gain"] for _, d in perturb_clip(loud, "l", 0, {"speaker": (4, params)})["speaker"]
    ]
    assert min(gains) < 1.0


@pytest.mark.slow
def test_30_second_clip():
    clip = voiced_clip(30.0, 120.0, 260.0)
    out = perturb_clip(clip, "long", 0, {"speaker": (1, None), "emotion": (1, None)})
    assert_valid_views(out, clip.size, {"speaker": (1, None), "emotion": (1, None)})


def test_float32_input_gives_the_same_views_as_its_float64_values(clip):
    as32 = clip.astype(np.float32)
    a = perturb_clip(as32, "c", 0, BOTH)
    b = perturb_clip(as32.astype(np.float64), "c", 0, BOTH)
    assert _digest(a) == _digest(b)


def test_non_contiguous_input_gives_the_same_views_and_is_not_modified(clip):
    frame = np.stack([clip, -clip], axis=1)  # (samples, 2): a column is strided
    column = frame[:, 0]
    assert not column.flags.c_contiguous
    before = column.copy()
    a = perturb_clip(column, "c", 0, BOTH)
    b = perturb_clip(np.ascontiguousarray(column), "c", 0, BOTH)
    assert _digest(a) == _digest(b)
    assert np.array_equal(column, before)


_CRASH_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from pipeline.perturb import PerturbationError, perturb_clip
    cases = {
        "empty": np.zeros(0), "one": np.ones(1), "ten": np.zeros(10),
        "min": np.full(400, 0.1), "silence": np.zeros(800), "tiny": np.full(1000, 1e-300),
        "nan": np.full(500, np.nan), "dc": np.ones(2000), "alternating": (-1.0) ** np.arange(900),
    }
    for name, audio in cases.items():
        for method in ("harvest", "dio"):
            try:
                perturb_clip(audio, name, 0, {"speaker": (1, None), "emotion": (1, None)}, method)
                print(name, method, "ok")
            except PerturbationError as err:
                print(name, method, "error", err)
    """
)


def test_degenerate_inputs_never_crash_the_process():
    # A native crash (segfault, abort) would kill this subprocess, not pytest.
    result = subprocess.run(
        [sys.executable, "-c", _CRASH_SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = {tuple(line.split()[:2]): line.split()[2] for line in result.stdout.splitlines()}
    assert len(outcome) == 18
    for method in ("harvest", "dio"):
        for name in ("empty", "one", "ten", "nan"):
            assert outcome[name, method] == "error"
        for name in ("min", "silence", "tiny", "dc", "alternating"):
            assert outcome[name, method] == "ok"


def test_hand_built_analysis_is_checked_before_synthesis():
    broken = WorldAnalysis(
        f0=np.zeros(10), sp=np.ones((9, 513)), ap=np.ones((9, 513)), frame_period_ms=5.0,
        sample_rate=16000, num_samples=800, f0_method="harvest",
    )  # fmt: skip
    with pytest.raises(PerturbationError, match="does not match"):
        speaker_view(broken, make_rng(0))


# --------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("cls", [SpeakerParams, EmotionParams])
def test_params_round_trip_through_json(cls):
    params = cls()
    again = cls.from_dict(json.loads(json.dumps(params.to_dict())))
    assert again == params
    assert cls.from_dict({}) == params  # missing keys take the defaults


def test_paper_defaults():
    s, e = SpeakerParams(), EmotionParams()
    assert (s.formant_ratio_max, s.pitch_ratio_max, s.pitch_range_ratio_max) == (1.4, 2.0, 1.5)
    assert (s.eq_low_shelf_hz, s.eq_high_shelf_hz, s.eq_num_peaking) == (60.0, 10_000.0, 8)
    assert (s.eq_q_min, s.eq_q_max, s.eq_gain_db) == (2.0, 5.0, 12.0)
    # eta1 and eta2 of appendix A.1. n_spec is not a paper value (the paper gives no band
    # count): see test_band_count_is_the_toolkits_choice.
    assert (e.num_permuted_bands, e.target_rms) == (20, 0.05)
    assert isinstance(PERTURB_VERSION, str) and PERTURB_VERSION


def test_band_count_is_the_toolkits_choice():
    """40 bands of 187.5 Hz: the toolkit's default (README, "Selectivity", band-layout sweep),
    not the paper's; any count from 1 to n_fft / 2 is accepted."""
    e = EmotionParams()
    assert e.num_bands == 40 and e.bins_per_band * 16000 / e.n_fft == 187.5
    assert EmotionParams(num_bands=10, num_permuted_bands=5).bins_per_band == 51


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: SpeakerParams(formant_ratio_max=0.5), "formant_ratio_max"),
        (lambda: SpeakerParams(eq_q_min=6.0), "eq_q_min <= eq_q_max"),
        (lambda: SpeakerParams(peak_limit=1.5), "peak_limit"),
        (lambda: EmotionParams(num_permuted_bands=1), "single band"),
        (lambda: EmotionParams(num_permuted_bands=41), "num_permuted_bands"),
        (lambda: EmotionParams(num_bands=1000), "num_bands"),
        (lambda: SpeakerParams.from_dict({"formant_ratio": 1.2}), "unknown SpeakerParams"),
        (lambda: EmotionParams.from_dict({"num_bands": "many"}), "bad value"),
    ],
)
def test_bad_parameters_raise_a_named_error(build, message):
    with pytest.raises(PerturbationError, match=message):
        build()


def test_changed_parameters_change_the_views(clip, views):
    kinds = {
        "speaker": (1, SpeakerParams(eq_gain_db=0.0)),
        "emotion": (1, EmotionParams(num_bands=20)),
    }
    out = perturb_clip(clip, "clip-a", 42, kinds)
    assert not np.array_equal(out["speaker"][0][0], views["speaker"][0][0])
    assert not np.array_equal(out["emotion"][0][0], views["emotion"][0][0])
    assert max(out["emotion"][0][1]["permuted_bands"]) < 20


# ----------------------------------------------------------------------- property test


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    num_samples=st.integers(min_value=400, max_value=6000),
    log_amplitude=st.floats(min_value=-9.0, max_value=1.0),
    tone_hz=st.floats(min_value=60.0, max_value=1500.0),
    noise_fraction=st.floats(min_value=0.0, max_value=1.0),
)
def test_any_valid_clip_gives_valid_views(num_samples, log_amplitude, tone_hz, noise_fraction):
    # Lengths around WORLD's window, levels from -180 dBFS to +20 dBFS (beyond full scale),
    # tonal to noisy content: every view keeps the invariants the shards rely on.
    t = np.arange(num_samples) / 16000
    rng = np.random.default_rng(num_samples)
    audio = (1 - noise_fraction) * np.sin(2 * np.pi * tone_hz * t)
    audio = 10.0**log_amplitude * (audio + noise_fraction * rng.standard_normal(num_samples))
    counts = {"speaker": (1, None), "emotion": (1, None)}
    out = perturb_clip(audio, "prop", 0, counts, f0_method="dio")
    assert_valid_views(out, num_samples, counts)
