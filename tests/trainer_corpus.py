"""A small learnable corpus for trainer tests, written with the real shard writer.

Emotion sets the pitch of a harmonic tone, speaker its brightness (harmonic roll-off) and
loudness; the stored "perturbed" views change brightness and loudness at random, as a
speaker perturbation would, and keep the pitch. Everything is drawn from seeded generators.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.manifest import Clip, Manifest
from pipeline.rng import make_rng
from pipeline.shards import ShardClip, write_view_set

SR = 16000
EMOTIONS = ("calm", "joy", "anger")
SPEAKERS = ("s0", "s1", "s2", "s3")
EMOTION_F0 = (140.0, 260.0, 420.0)


def tone(f0: float, rolloff: float, gain: float, samples: int, rng: np.random.Generator):
    """A harmonic tone with amplitude ``gain``, harmonic k weighted ``k ** -rolloff``."""
    t = np.arange(samples) / SR
    f0 = f0 * (1 + 0.03 * rng.standard_normal())
    wave = sum(k**-rolloff * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 12))
    wave = wave / np.abs(wave).max()
    return (gain * wave + 0.003 * rng.standard_normal(samples)).astype(np.float64)


def split_of(c: int) -> str:
    return {3: "val", 7: "test"}.get(c % 8, "train")


def write_trainer_corpus(
    folder: Path, n_clips: int = 48, views: int = 2, shard_size: int = 12, seconds: float = 0.5
) -> Path:
    """Write shards + manifest under ``folder``; returns the manifest path.

    Clip lengths vary between ``seconds / 2`` and ``seconds`` so that batches are padded.
    """
    folder = Path(folder)
    clips, stored = [], []
    for c in range(n_clips):
        rng = make_rng("trainer-corpus", c)
        emotion, speaker = c % 3, (c // 3) % 4
        samples = int(SR * seconds * (0.5 + 0.5 * rng.random()))
        original = tone(EMOTION_F0[emotion], 0.5 + 0.4 * speaker, 0.3 + 0.1 * speaker, samples, rng)
        rows = [original]
        for v in range(1, views + 1):
            vrng = make_rng("trainer-corpus", c, v)
            rows.append(
                tone(
                    EMOTION_F0[emotion],
                    0.5 + 1.5 * vrng.random(),
                    0.2 + 0.3 * vrng.random(),
                    samples,
                    vrng,
                )
            )
        clip_id = f"clip{c:04d}"
        clips.append(
            Clip(
                clip_id,
                f"{clip_id}.wav",
                EMOTIONS[emotion],
                SPEAKERS[speaker],
                split_of(c),
                samples,
                SR,
                1,
            )
        )
        stored.append(ShardClip(clip_id, np.stack(rows), [{"v": v} for v in range(1, views + 1)]))
    path = folder / "manifest.json"
    view_set = write_view_set(
        folder / "cache" / f"speaker-n{views}-test",
        stored,
        manifest_path=path,
        kind="speaker",
        views=views,
        seed=1,
        key="test",
        shard_size=shard_size,
        code_version="test",
    )
    manifest = Manifest(
        dataset="toy",
        source="test",
        data_dir=".",
        labels={"emotion": EMOTIONS, "speaker": SPEAKERS},
        clips=tuple(clips),
        view_sets=(view_set,),
    )
    manifest.save(path)
    return path
