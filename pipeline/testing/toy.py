"""The toy corpus writer: views already in memory -> real Zarr shards + a real manifest.

:func:`write_toy_corpus` is the one writer behind every toy corpus (the trainer tests'
:func:`write_trainer_corpus` below, the data-stall benchmark's in ``bench/train.py``): the
caller makes the audio, the writer stores it with ``pipeline.shards.write_view_set`` and
writes the manifest that lists it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.manifest import SAMPLE_RATE, Clip, Manifest
from pipeline.rng import make_rng
from pipeline.shards import ShardClip, write_view_set


@dataclass(frozen=True)
class ToyClip:
    """One clip and its views: ``audio`` float (1 + N, T) in [-1, 1], row 0 the original;
    ``drawn`` one dict per view (what the "perturbation" drew)."""

    id: str
    emotion: str
    speaker: str
    split: str
    audio: np.ndarray
    drawn: tuple[dict, ...] = field(default=())


def write_toy_corpus(
    folder: str | Path,
    clips: Sequence[ToyClip],
    *,
    emotions: Sequence[str],
    speakers: Sequence[str],
    dataset: str = "toy",
    kind: str = "speaker",
    key: str = "test",
    seed: int = 1,
    shard_size: int = 12,
    data_dir: str = ".",
) -> Path:
    """Write ``clips`` as one complete ``kind`` view set under ``folder/cache/`` and the
    manifest ``folder/manifest.json`` that lists them; returns the manifest path. Every
    clip has the same number of views; the source files (``<id>.wav`` in ``data_dir``)
    are not written."""
    folder = Path(folder)
    views = clips[0].audio.shape[0] - 1
    path = folder / "manifest.json"
    view_set = write_view_set(
        folder / "cache" / dataset / f"{kind}-n{views}-{key}",
        [ShardClip(c.id, c.audio, list(c.drawn) or [{}] * views) for c in clips],
        manifest_path=path,
        kind=kind,
        views=views,
        seed=seed,
        key=key,
        shard_size=shard_size,
        code_version=key,
    )
    manifest = Manifest(
        dataset=dataset,
        source=key,
        data_dir=data_dir,
        labels={"emotion": tuple(emotions), "speaker": tuple(speakers)},
        clips=tuple(
            Clip(
                id=c.id,
                path=f"{c.id}.wav",
                emotion=c.emotion,
                speaker=c.speaker,
                split=c.split,
                num_samples=c.audio.shape[1],
                source_sample_rate=SAMPLE_RATE,
                source_channels=1,
            )
            for c in clips
        ),
        view_sets=(view_set,),
    )
    manifest.save(path)
    return path


# ----- the trainer tests' corpus -----------------------------------------------------------------
EMOTIONS = ("calm", "joy", "anger")
SPEAKERS = ("s0", "s1", "s2", "s3")
EMOTION_F0 = (140.0, 260.0, 420.0)


def tone(f0: float, rolloff: float, gain: float, samples: int, rng: np.random.Generator):
    """A harmonic tone with amplitude ``gain``, harmonic k weighted ``k ** -rolloff``."""
    t = np.arange(samples) / SAMPLE_RATE
    f0 = f0 * (1 + 0.03 * rng.standard_normal())
    wave = sum(k**-rolloff * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 12))
    wave = wave / np.abs(wave).max()
    return (gain * wave + 0.003 * rng.standard_normal(samples)).astype(np.float64)


def split_of(c: int) -> str:
    return {3: "val", 7: "test"}.get(c % 8, "train")


def write_trainer_corpus(
    folder: Path, n_clips: int = 48, views: int = 2, shard_size: int = 12, seconds: float = 0.5
) -> Path:
    """A small learnable corpus for the trainer tests; returns the manifest path.

    Emotion sets the pitch of a harmonic tone, speaker its brightness (harmonic roll-off)
    and loudness; the stored "perturbed" views change brightness and loudness at random,
    as a speaker perturbation would, and keep the pitch. Clip lengths vary between
    ``seconds / 2`` and ``seconds`` so that batches are padded.
    """
    clips = []
    for c in range(n_clips):
        rng = make_rng("trainer-corpus", c)
        emotion, speaker = c % 3, (c // 3) % 4
        samples = int(SAMPLE_RATE * seconds * (0.5 + 0.5 * rng.random()))
        f0 = EMOTION_F0[emotion]
        rows = [tone(f0, 0.5 + 0.4 * speaker, 0.3 + 0.1 * speaker, samples, rng)]
        for v in range(1, views + 1):
            vrng = make_rng("trainer-corpus", c, v)
            rows.append(
                tone(f0, 0.5 + 1.5 * vrng.random(), 0.2 + 0.3 * vrng.random(), samples, vrng)
            )
        clips.append(
            ToyClip(
                f"clip{c:04d}",
                EMOTIONS[emotion],
                SPEAKERS[speaker],
                split_of(c),
                np.stack(rows),
                tuple({"v": v} for v in range(1, views + 1)),
            )
        )
    return write_toy_corpus(
        folder, clips, emotions=EMOTIONS, speakers=SPEAKERS, shard_size=shard_size
    )


# A tiny one-epoch training on a toy corpus (seconds on a CPU): tests of ``ncore-train``.
TOY_TRAIN_OPTIONS = [
    "--backbone", "tiny", "--lr", "1e-3", "--epochs", "1", "--seeds", "1",
    "--batch-size", "8", "--max-seconds", "0.3", "--device", "cpu",
]  # fmt: skip


def toy_train_args(root: Path, *extra: str) -> list[str]:
    """``ncore-train`` arguments for the toy corpus written at ``root / "corpus"``."""
    return ["--manifest", str(root / "corpus" / "manifest.json"), *TOY_TRAIN_OPTIONS, *extra]
