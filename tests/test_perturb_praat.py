"""The optional F0 engine ``praat`` (Praat's tracker via praat-parselmouth, GPL-3.0).

Skipped, with the reason, when praat-parselmouth is not installed (it is in the ``dev``
extra). The engine must find a known F0, and views made from its analysis must have the
effects the signal tests check for harvest (p_s scales F0 by r2, p_e flattens it).
"""

from __future__ import annotations

import numpy as np
import pytest

import pipeline.prep as prep
from pipeline.perturb import (
    EmotionParams,
    SpeakerParams,
    analyse,
    emotion_view,
    flatten_pitch,
    praat_available,
    speaker_view,
)
from pipeline.rng import make_rng
from pipeline.testing.signals import voiced_clip

needs_praat = pytest.mark.skipif(
    not praat_available(), reason="praat-parselmouth (optional, GPL-3.0) is not installed"
)
SOURCE_MEDIAN_F0 = 210.0  # voiced_clip glides linearly from 180 to 240 Hz


@pytest.fixture(scope="module")
def analysis():
    return analyse(voiced_clip(1.0, 180.0, 240.0), f0_method="praat")


def _median_f0(audio: np.ndarray) -> float:
    an = analyse(audio)  # measured with harvest: independent of the engine under test
    return float(np.median(an.f0[an.voiced]))


@needs_praat
def test_praat_engine_finds_the_known_f0_on_world_frames(analysis):
    harvest = analyse(voiced_clip(1.0, 180.0, 240.0))
    assert analysis.f0.shape == harvest.f0.shape and analysis.sp.shape == harvest.sp.shape
    assert analysis.f0_method == "praat" and analysis.voiced.mean() > 0.9
    assert np.median(analysis.f0[analysis.voiced]) == pytest.approx(SOURCE_MEDIAN_F0, rel=0.01)
    # The contour glides 180 -> 240 Hz: the voiced frames follow it, not a constant.
    voiced = analysis.f0[analysis.voiced]
    assert voiced[:20].mean() < 195.0 and voiced[-20:].mean() > 225.0


@needs_praat
@pytest.mark.parametrize("view_index", [1, 2, 3])
def test_praat_analysis_gives_p_s_views_at_r2(analysis, view_index):
    params = SpeakerParams(eq_gain_db=0.0)
    view, drawn = speaker_view(analysis, make_rng(7, "speaker", "f0", view_index), params)
    expected = drawn["pitch_ratio"] * SOURCE_MEDIAN_F0
    assert _median_f0(view) == pytest.approx(expected, rel=0.05)


@needs_praat
def test_praat_analysis_gives_flat_p_e_views(analysis):
    view, _ = emotion_view(
        flatten_pitch(analysis),
        make_rng(0, "emotion", "flat", 1),
        EmotionParams(num_permuted_bands=0),
    )
    an = analyse(view)
    # Frames the praat analysis left unvoiced (the 20 ms fades) are resynthesised as noise,
    # which harvest may call voiced at any F0: the flattening is judged on the others.
    frames = min(an.f0.size, analysis.f0.size)
    both = an.voiced[:frames] & analysis.voiced[:frames]
    f0 = an.f0[:frames][both]
    assert f0.size > 150 and f0.std() / f0.mean() < 0.02


def test_praat_engine_without_the_package_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(prep, "praat_available", lambda: False)
    with pytest.raises(prep.PrepError, match=r"praat-parselmouth \(GPL-3\.0"):
        prep.PerturbSettings(f0_method="praat")


@needs_praat
def test_perturb_command_with_the_praat_engine(tmp_path):
    import os

    from click.testing import CliRunner

    from pipeline.cli import main
    from pipeline.manifest import Manifest
    from pipeline.qa import validate
    from pipeline.shards import ShardReader
    from pipeline.testing.prep_corpus import NAME, make_corpus

    path = make_corpus(tmp_path)
    args = ["perturb", "--dataset", NAME, "--kind", "emotion", "--views", "1", "--f0", "praat"]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(main, [*args, "--no-progress"], catch_exceptions=False)
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    (vs,) = Manifest.load(path).view_sets
    assert vs.f0_method == "praat" and vs.complete
    assert ShardReader(vs.shard_paths(path)[0]).attrs["f0_method"] == "praat"
    assert validate(path).ok
