"""The synthetic corpus: deterministic bytes, known factors, tunable entanglement."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

from pipeline.audio import load_audio
from pipeline.datasets import DatasetError, build_manifest
from pipeline.datasets.synthetic import SyntheticConfig, generate, plan


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
