"""The F0 range of the WORLD analysis on a synthetic 1.2 kHz "scream".

WORLD's default ceiling (800 Hz) analyses such a clip as unvoiced: p_s then cannot scale its
F0 and p_e cannot flatten it. With the ceiling raised (``--f0-ceil 2000``) both work. F0 is
measured here by a normalised autocorrelation tracker written for this test, independent
of WORLD (whose analysis is what the option configures).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.manifest import Manifest
from pipeline.perturb import (
    EmotionParams,
    SpeakerParams,
    analyse,
    emotion_view,
    flatten_pitch,
    speaker_view,
)
from pipeline.qa import validate
from pipeline.rng import make_rng
from pipeline.shards import ShardReader
from pipeline.testing.prep_corpus import NAME, make_corpus
from pipeline.testing.signals import SAMPLE_RATE, fade, glottal_source, resonate
from pipeline.viewset import view_set_key

SCREAM_F0_HZ = 1200.0
VIBRATO = 0.06  # +-6 % at 5 Hz: a contour for p_e to flatten
NO_EQ = SpeakerParams(eq_gain_db=0.0)  # the EQ is not what is measured here
NO_PERMUTATION = EmotionParams(num_permuted_bands=0)


@pytest.fixture(scope="module")
def scream() -> np.ndarray:
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    f0 = SCREAM_F0_HZ * (1.0 + VIBRATO * np.sin(2.0 * np.pi * 5.0 * t))
    formants = ((1300.0, 200.0), (2600.0, 250.0), (3800.0, 300.0))
    y = fade(resonate(glottal_source(f0), formants), 0.03)
    return 0.5 * y / np.max(np.abs(y))


@pytest.fixture(scope="module")
def analyses(scream) -> dict[float, object]:
    """The scream analysed with WORLD's default ceiling and with a 2 kHz one."""
    return {ceiling: analyse(scream, f0_ceil_hz=ceiling) for ceiling in (800.0, 2000.0)}


def track_f0(x: np.ndarray, lo_hz: float = 300.0, hi_hz: float = 3000.0) -> np.ndarray:
    """F0 (Hz) every 10 ms from 40 ms frames: the shortest lag whose normalised
    autocorrelation peak reaches 0.9 of the best one, refined by a parabola."""
    x = np.asarray(x, dtype=np.float64)
    n, hop = int(0.04 * SAMPLE_RATE), int(0.01 * SAMPLE_RATE)
    lags = np.arange(int(SAMPLE_RATE / hi_hz), int(np.ceil(SAMPLE_RATE / lo_hz)) + 1)
    out = []
    for start in range(0, x.size - n - lags[-1], hop):
        a = x[start : start + n]
        shifted = np.stack([x[start + lag : start + lag + n] for lag in lags])
        r = shifted @ a / np.sqrt(np.sum(shifted**2, axis=1) * np.dot(a, a) + 1e-20)
        peaks = [i for i in range(1, r.size - 1) if r[i - 1] <= r[i] >= r[i + 1]]
        best = max(r[i] for i in peaks)
        k = next(i for i in peaks if r[i] >= 0.9 * best)
        offset = 0.5 * (r[k - 1] - r[k + 1]) / (r[k - 1] - 2.0 * r[k] + r[k + 1])
        out.append(SAMPLE_RATE / (lags[k] + offset))
    return np.array(out)[5:-5]  # away from the fades


def test_the_tracker_finds_the_scream_and_its_vibrato(scream):
    f0 = track_f0(scream)
    assert np.median(f0) == pytest.approx(SCREAM_F0_HZ, rel=0.01)
    # A sine vibrato of +-6 % has a standard deviation of 6 % / sqrt(2).
    assert f0.std() / SCREAM_F0_HZ == pytest.approx(VIBRATO / np.sqrt(2), rel=0.15)


def test_default_ceiling_misses_the_scream(scream, analyses):
    analysis = analyses[800.0]
    assert analysis.voiced.mean() < 0.05
    # p_e's flattening therefore leaves the vibrato in place.
    flat = track_f0(flatten_pitch(analysis))
    assert flat.std() > 0.8 * track_f0(scream).std()


@pytest.mark.parametrize("view_index", [1, 2, 3, 4])
def test_raised_ceiling_lets_p_s_scale_the_scream(scream, analyses, view_index):
    analysis = analyses[2000.0]
    assert analysis.voiced.mean() > 0.9
    view, drawn = speaker_view(analysis, make_rng(1, "speaker", "scream", view_index), NO_EQ)
    assert drawn["f0_shifted"] is True
    # p_s keeps shifted F0 at or below f0_max_hz (2 kHz by default).
    expected = min(drawn["pitch_ratio"] * np.median(track_f0(scream)), NO_EQ.f0_max_hz)
    assert abs(drawn["pitch_ratio"] - 1.0) > 0.05  # a shift the tracker can see
    assert np.median(track_f0(view)) == pytest.approx(expected, rel=0.03)


def relative_iqr(f0: np.ndarray) -> float:
    """Interquartile range over median: a spread that ignores the tracker's octave jumps."""
    q25, q50, q75 = np.percentile(f0, [25, 50, 75])
    return float((q75 - q25) / q50)


def test_raised_ceiling_lets_p_e_flatten_the_scream(scream, analyses):
    source = track_f0(scream)
    flat = flatten_pitch(analyses[2000.0])
    view, _ = emotion_view(flat, make_rng(1, "emotion", "s", 1), NO_PERMUTATION)
    f0 = track_f0(view)
    assert np.median(f0) == pytest.approx(np.mean(source), rel=0.02)  # at the mean F0
    assert f0.std() < 0.1 * source.std()


def test_band_permuted_views_of_the_scream_are_flat_only_with_the_raised_ceiling(scream, analyses):
    # Moving bands shifts harmonics, so the periodicity of a view is ambiguous (the tracker
    # jumps between candidates on some frames); the median over 12 views of the robust
    # spread still separates a flattened contour from a vibrato left in place.
    source = relative_iqr(track_f0(scream))
    spread = {}
    for ceiling in (800.0, 2000.0):
        flat = flatten_pitch(analyses[ceiling])
        views = [emotion_view(flat, make_rng(1, "emotion", "s", i))[0] for i in range(1, 13)]
        spread[ceiling] = np.median([relative_iqr(track_f0(v)) for v in views]) / source
    assert spread[2000.0] < 0.1
    assert spread[800.0] > 0.5


def test_perturb_command_records_the_f0_range(tmp_path):
    path = make_corpus(tmp_path)
    args = ["perturb", "--dataset", NAME, "--kind", "speaker", "--views", "1"]
    args += ["--shard-size", "8", "--f0-ceil", "2000", "--f0-floor", "60", "--no-progress"]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        bad = CliRunner().invoke(main, [*args[:-5], "--f0-floor", "900", "--f0-ceil", "800"])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    assert bad.exit_code == 1 and "--f0-floor < --f0-ceil" in bad.output
    manifest = Manifest.load(path)
    (vs,) = manifest.view_sets
    raw = json.loads(path.read_text())["view_sets"][0]
    assert (raw["f0_floor_hz"], raw["f0_ceil_hz"]) == (60.0, 2000.0)
    default_key = view_set_key(
        NAME, "speaker", 1, 42, vs.params, "harvest", 8, [c.id for c in manifest.clips]
    )
    assert vs.key != default_key
    attrs = ShardReader(vs.shard_paths(path)[0]).attrs
    assert (attrs["f0_floor_hz"], attrs["f0_ceil_hz"]) == (60.0, 2000.0)
    assert validate(path).ok


# ------------------------------------------- the F0 floor WORLD can take (issue 22, section 3)


def test_the_fft_size_formula_is_pyworlds_and_the_limit_follows_from_it():
    from pipeline.perturb import _world, cheaptrick_fft_size, max_f0_floor_hz

    pyworld = _world()
    for rate in (8000, 16000, 22050, 44100):
        for floor in np.geomspace(20.0, rate / 2 - 1, 200):
            assert cheaptrick_fft_size(rate, floor) == pyworld.get_cheaptrick_fft_size(
                rate, float(floor)
            ), (rate, floor)
        highest = max_f0_floor_hz(rate)
        # the FFT at the limit holds a 500 Hz window (3 fs / (fft - 3) <= 500); just above,
        # it does not
        fft = cheaptrick_fft_size(rate, highest)
        assert 3 * rate / (fft - 3) <= 500.0
        above = cheaptrick_fft_size(rate, highest * 1.0001)
        assert 3 * rate / (above - 3) > 500.0
    assert round(max_f0_floor_hz(16000), 1) == 761.9


_ANALYSE = """
import sys
import numpy as np
from pipeline.perturb import PerturbationError, analyse
x = 0.3 * np.random.default_rng(0).standard_normal(8000)
for floor in sys.argv[1:]:
    try:
        analyse(x, 16000, "dio", f0_floor_hz=float(floor), f0_ceil_hz=4000.0)
        print(floor, "analysed")
    except PerturbationError as e:
        print(floor, "refused:", e)
"""


def test_analyse_refuses_a_floor_that_would_corrupt_the_heap():
    """In a subprocess: on the old code pyworld's CheapTrick kills the process."""
    import subprocess
    import sys

    floors = ["761", "762", "1500", "3999"]
    result = subprocess.run(
        [sys.executable, "-c", _ANALYSE, *floors], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "761 analysed"
    for line, floor in zip(lines[1:], floors[1:], strict=True):
        assert line.startswith(f"{floor} refused: f0_floor_hz: an F0 floor of {floor} Hz is above")
        assert "above 761.9 Hz" in line
