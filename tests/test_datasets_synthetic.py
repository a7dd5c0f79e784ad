"""The synthetic corpus: deterministic bytes, known factors, tunable entanglement."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from pipeline.audio import load_audio
from pipeline.datasets import DatasetError, build_manifest
from pipeline.datasets.synthetic import EMOTIONS, SyntheticConfig, generate, plan, speaker_traits


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_settings_same_bytes(tmp_path):
    config = SyntheticConfig(clips=24, speakers=3, emotions=3)
    generate(tmp_path / "a", config)
    generate(tmp_path / "b", config)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    generate(tmp_path / "c", SyntheticConfig(clips=24, speakers=3, emotions=3, seed=1))
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def _joint(entanglement):
    config = SyntheticConfig(clips=240, entanglement=entanglement)
    return Counter((spk, emo) for _, spk, emo in plan(config)), config


def test_entanglement_controls_the_joint_distribution():
    independent, config = _joint(0.0)
    per_emotion = config.clips // config.emotions
    # Independent: every emotion spread evenly over the speakers.
    assert all(n == per_emotion // config.speakers for n in independent.values())
    assert len(independent) == config.speakers * config.emotions
    entangled, _ = _joint(1.0)
    # Fully entangled: each emotion from one speaker only, a different one per emotion.
    emotions_by_speaker = Counter(spk for spk, _ in entangled)
    assert len(entangled) == config.emotions and max(emotions_by_speaker.values()) == 1
    half, _ = _joint(0.5)
    top_share = [
        max(n for (s, e), n in half.items() if e == emo) / per_emotion
        for emo in {e for _, e in half}
    ]
    assert all(0.5 < share < 1.0 for share in top_share)


def _f0(x, sr=16000):
    """Autocorrelation F0 of the middle 100 ms (Hz)."""
    mid = x[len(x) // 2 - 800 : len(x) // 2 + 800]
    mid = mid - mid.mean()
    ac = np.correlate(mid, mid, "full")[len(mid) - 1 :]
    lo, hi = sr // 1000, sr // 60
    return sr / (lo + int(np.argmax(ac[lo:hi])))


def test_speaker_and_emotion_factors_are_audible(tmp_path):
    config = SyntheticConfig(clips=60, speakers=6, emotions=2, entanglement=0.0)
    generate(tmp_path, config)
    f0 = {}
    for clip_id, spk, emo in plan(config):
        f0.setdefault((spk, emo), []).append(_f0(load_audio(tmp_path / f"wav/{clip_id}.wav")[0]))
    med = {k: float(np.median(v)) for k, v in f0.items()}
    # Speakers are ordered by base F0: the last speaker is well above the first.
    for emo in ("achievement", "anger"):
        assert med["spk06", emo] > 1.8 * med["spk01", emo]
    durations = [len(load_audio(p)[0]) / 16000 for p in sorted(tmp_path.glob("wav/*.wav"))]
    assert min(durations) >= 0.6 - 1e-3 and max(durations) <= 1.5 + 1e-3


def test_manifest_generates_once_and_refuses_other_settings(tmp_path):
    folder = tmp_path / "Synthetic"
    manifest, summary = build_manifest("synthetic", folder, seed=1, clips=40, speakers=4)
    assert summary.imported == 40 == len(list(folder.glob("wav/*.wav")))
    assert manifest.source == "synthetic"
    assert len(manifest.labels["speaker"]) == 4
    assert manifest.clips[0].id == manifest.clips[0].path[4:-4]  # wav/<id>.wav
    stamp = (folder / "labels.csv").stat().st_mtime_ns
    build_manifest("synthetic", folder, seed=2, clips=40, speakers=4)
    assert (folder / "labels.csv").stat().st_mtime_ns == stamp
    with pytest.raises(DatasetError, match="other settings"):
        build_manifest("synthetic", folder, seed=1, clips=48, speakers=4)
    with pytest.raises(DatasetError, match="entanglement"):
        build_manifest("synthetic", tmp_path / "x", entanglement=2.0)


# ----- generator version 2: speakers, presets ----------------------------------------------
@pytest.mark.parametrize("speakers", range(2, 13))
def test_every_speaker_distinct_on_every_axis(speakers):
    """Version 1 drew the vocal-tract order with (2i + 1) % n, not a permutation for even n:
    6 speakers had 3 formant scales. Every axis must now give each speaker its own value,
    spread over the documented range."""
    config = SyntheticConfig(speakers=speakers)
    traits = [speaker_traits(config, i) for i in range(speakers)]
    for axis, low, high in (("f0", 110.0, 110.0 * 2**1.6), ("formant_scale", 0.82, 1.18),
                            ("tilt", 0.9, 1.3)):  # fmt: skip
        values = np.sort([getattr(t, axis) for t in traits])
        step = (high - low) / (speakers - 1)
        # Distinct: neighbours at least half a grid step apart; the whole range is used.
        assert (
            np.diff(values).min() > 0.5 * step
            if axis != "f0"
            else np.diff(np.log2(values)).min() > 0.5 * 1.6 / (speakers - 1)
        )
        assert values[0] == pytest.approx(low, rel=0.02) and values[-1] == pytest.approx(
            high, rel=0.02
        )
    # No two axes rank the speakers alike (from 3 speakers on).
    if speakers >= 3:
        ranks = [
            np.argsort(np.argsort([getattr(t, a) for t in traits]))
            for a in ("f0", "formant_scale", "tilt")
        ]
        assert not np.array_equal(ranks[0], ranks[1])
        assert not np.array_equal(ranks[0], ranks[2])
        assert not np.array_equal(ranks[1], ranks[2])


def test_speakers_do_not_depend_on_the_corpus_seed():
    a = [speaker_traits(SyntheticConfig(seed=0), i) for i in range(6)]
    b = [speaker_traits(SyntheticConfig(seed=7, preset="hard-case"), i) for i in range(6)]
    assert a == b


def _f0_median(x, sr=16000):
    """Median F0 (Hz) of the voiced frames, by WORLD DIO (an estimator the generator never
    uses)."""
    import pyworld

    f0, t = pyworld.dio(x.astype(np.float64), sr, f0_floor=50.0, f0_ceil=1200.0)
    f0 = pyworld.stonemask(x.astype(np.float64), f0, t, sr)
    return float(np.median(f0[f0 > 0]))


def _bursts(x, sr=16000):
    """Number of runs of 10 ms frames above -25 dB of the clip's loudest frame, ignoring
    dips shorter than 30 ms."""
    frame = sr // 100
    energy = np.array([np.mean(x[i : i + frame] ** 2) for i in range(0, len(x) - frame, frame)])
    active = 10 * np.log10(energy / energy.max() + 1e-20) > -25
    runs, gap, on = 0, 99, False
    for a in active:
        if a and not on and gap >= 3:
            runs += 1
        gap = 0 if a else gap + 1
        on = a or (on and gap < 3)
    return runs


def _by_cell(folder, config):
    cells = {}
    for clip_id, spk, emo in plan(config):
        x = load_audio(folder / f"wav/{clip_id}.wav")[0]
        cells.setdefault((spk, emo), []).append(x)
    return cells


def test_presets_place_the_factors(tmp_path):
    """premise: emotion leaves the F0 level and the peak level alone and shows as bursts;
    hard-case: emotion moves the F0 level (x0.85 to x1.6) and the peak level."""
    config = SyntheticConfig(clips=72, speakers=3, emotions=6, entanglement=0.0)
    generate(tmp_path / "p", config)
    generate(tmp_path / "h", replace(config, preset="hard-case"))
    premise, hard = _by_cell(tmp_path / "p", config), _by_cell(tmp_path / "h", config)

    def emotion_f0_spread(cells):
        # Per speaker: the ratio of the highest to the lowest emotion's median F0 (octaves).
        out = []
        for spk in ("spk01", "spk02", "spk03"):
            med = [np.median([_f0_median(x) for x in cells[spk, e]]) for e in EMOTIONS]
            out.append(np.log2(max(med) / min(med)))
        return max(out)

    def emotion_peak_spread(cells):
        peaks = [
            np.median(
                [20 * np.log10(np.abs(x).max()) for k, xs in cells.items() if k[1] == e for x in xs]
            )
            for e in EMOTIONS
        ]
        return max(peaks) - min(peaks)

    # Speakers span 1.6 octaves; in the premise preset emotions move the median F0 by a
    # small fraction of that, in the hard case by about 0.9 octave (0.85 -> 1.6).
    assert emotion_f0_spread(premise) < 0.25
    assert emotion_f0_spread(hard) > 0.6
    assert emotion_peak_spread(premise) < 2.0
    assert emotion_peak_spread(hard) > 8.0
    # Bursts: pleasure has 4, pain 3, anger 2, the others 1 (premise); hard case all 1.
    expected = {"pleasure": 4, "pain": 3, "anger": 2, "achievement": 1, "surprise": 1, "fear": 1}
    for emotion, count in expected.items():
        counted = [_bursts(x) for k, xs in premise.items() if k[1] == emotion for x in xs]
        assert np.median(counted) == count, (emotion, counted)
        counted = [_bursts(x) for k, xs in hard.items() if k[1] == emotion for x in xs]
        assert np.median(counted) == 1, (emotion, counted)


def test_cli_preset_is_recorded_and_a_changed_preset_refused(tmp_path):
    folder = tmp_path / "Synthetic"
    build_manifest("synthetic", folder, clips=16, speakers=2, preset="hard-case")
    import json

    assert json.loads((folder / "synthetic.json").read_text())["preset"] == "hard-case"
    with pytest.raises(DatasetError, match="other settings"):
        build_manifest("synthetic", folder, clips=16, speakers=2)
    with pytest.raises(DatasetError, match="preset"):
        build_manifest("synthetic", tmp_path / "y", preset="nope")
