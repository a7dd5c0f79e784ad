"""The training plan (trainer/plan.py): a corpus that cannot give a result is refused in one
line before anything is trained (a regression of issue 13: a task with one class trained to
"accuracy 1.0"; a run whose test clips all failed perturbation trained to the end and then
crashed). The corpora are toy clips in real Zarr shards."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.manifest import Clip, Failure, Manifest
from pipeline.rng import make_rng
from pipeline.shards import ShardClip, write_view_set
from pipeline.testing.processes import one_line_error
from pipeline.testing.toy import EMOTION_F0, EMOTIONS, SPEAKERS, TOY_TRAIN_OPTIONS, tone
from trainer.cli import main


def _corpus(folder: Path, *, train_emotions=(0, 1, 2), failed_split: str | None = None) -> Path:
    """24 toy clips; training clips only of ``train_emotions``; the clips of
    ``failed_split`` recorded as perturbation failures of the view set (not stored)."""
    splits = ["train", "train", "val", "test"]
    clips, stored = [], []
    for c in range(24):
        split = splits[c % 4]
        emotion = train_emotions[c % len(train_emotions)] if split == "train" else c % 3
        speaker = (c // 3) % 4
        rng = make_rng("hardening", c)
        audio = np.stack(
            [tone(EMOTION_F0[emotion], 0.5 + 0.4 * speaker, 0.3, 4000, rng) for _ in range(2)]
        )
        clip = Clip(f"c{c:02d}", f"c{c:02d}.wav", EMOTIONS[emotion], SPEAKERS[speaker], split,
                    4000, 16000, 1)  # fmt: skip
        clips.append(clip)
        if split != failed_split:
            stored.append(ShardClip(clip.id, audio, [{}]))
    path = folder / "manifest.json"
    view_set = write_view_set(
        folder / "cache" / "toy" / "speaker-n1-test",
        stored,
        manifest_path=path,
        kind="speaker",
        views=1,
        seed=1,
        key="test",
        shard_size=8,
        code_version="test",
    )
    failures = tuple(
        Failure(c.id, "perturb", "too short for WORLD: 4000 samples", c.path)
        for c in clips
        if c.split == failed_split
    )
    Manifest(
        dataset="toy",
        source="test",
        data_dir=".",
        labels={"emotion": EMOTIONS, "speaker": SPEAKERS},
        clips=tuple(clips),
        view_sets=(replace(view_set, failures=failures),),
    ).save(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("corpus", "message"),
    [
        ({"train_emotions": (1,)}, "stores training clips of 1 emotion class(es) (joy)"),
        ({"failed_split": "test"}, "every test clip (6) failed perturbation"),
        ({"failed_split": "val"}, "every val clip (6) failed perturbation"),
    ],
)
def test_a_corpus_that_cannot_give_a_result_is_refused_before_training(tmp_path, corpus, message):
    manifest = _corpus(tmp_path / "corpus", **corpus)
    out = tmp_path / "run"
    # The stored split is the one built to fail (every seed drawing its own split would
    # spread the failed clips over train, val and test).
    result = CliRunner().invoke(
        main, ["--manifest", str(manifest), *TOY_TRAIN_OPTIONS, "--fixed-split", "--out", str(out)]
    )
    assert message in one_line_error(result)
    assert not out.exists()  # refused before anything was trained or written
