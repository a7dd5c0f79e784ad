"""CSV importer: bad input becomes failures, the rest is imported."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.datasets import DatasetError, build_manifest
from pipeline.testing.corpus_trees import nan_wav_bytes, tone, wav_bytes


def _corpus(root):
    good = wav_bytes(tone(0.2, 22050, 330.0, channels=2), 22050)
    rows = ["path,emotion,speaker,session"]
    for i in range(12):
        rel = f"audio/{'ab'[i % 2]}/clip {i}.wav"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(good)
        rows.append(f"{rel},{'happy' if i % 3 else 'sad'},spk{i % 4},s{i}")
    (root / "bad").mkdir()
    (root / "bad" / "empty.wav").write_bytes(b"")
    (root / "bad" / "text.wav").write_text("hello")
    (root / "bad" / "nan.wav").write_bytes(nan_wav_bytes())
    (root / "bad" / "zero.wav").write_bytes(wav_bytes(np.zeros(0), 16000))
    (root.parent / "outside.wav").write_bytes(good)
    rows += [
        "bad/empty.wav,happy,spk0,x",
        "bad/text.wav,happy,spk0,x",
        "bad/nan.wav,sad,spk1,x",
        "bad/zero.wav,sad,spk1,x",
        "../outside.wav,sad,spk1,x",
        "audio/missing.wav,sad,spk2,x",
        "audio/a/clip 0.wav,,spk2,x",
    ]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_bad_rows_are_recorded_and_the_rest_imported(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    manifest, summary = build_manifest("csv", _corpus(root), name="mine", seed=0)
    assert summary.found == 19
    assert summary.imported == 12
    assert summary.failed == 7 == len(manifest.failures)
    by_path = {f.path: f.reason for f in manifest.failures}
    assert by_path["bad/empty.wav"].startswith("empty file")
    assert by_path["bad/text.wav"].startswith("unreadable audio")
    assert by_path["bad/nan.wav"].startswith("non-finite samples")
    assert by_path["bad/zero.wav"].startswith("zero-length audio")
    assert by_path["../outside.wav"].startswith("path escapes the data folder")
    assert by_path["audio/missing.wav"].startswith("missing file")
    assert by_path["audio/a/clip 0.wav"].startswith("label outside the vocabulary rules")
    clip = manifest.clip_by_id()["audio__b__clip_1"]
    assert clip.path == "audio/b/clip 1.wav" and clip.extra == {"session": "s1"}
    assert (clip.source_sample_rate, clip.source_channels, clip.num_samples) == (22050, 2, 3200)
    assert manifest.dataset == "mine"
    ids = [c.id for c in manifest.clips] + [f.id for f in manifest.failures]
    assert len(set(ids)) == len(ids)


def test_column_options_and_user_mistakes(tmp_path):
    root = tmp_path / "c"
    (root / "w").mkdir(parents=True)
    (root / "w" / "a.wav").write_bytes(wav_bytes(tone(0.1, 16000), 16000))
    (root / "w" / "b.wav").write_bytes(wav_bytes(tone(0.1, 16000), 16000))
    table = tmp_path / "meta.csv"
    table.write_text("file,label,who\nw/a.wav,x,p\nw/b.wav,y,q\n")
    manifest, _ = build_manifest(
        "csv",
        root,
        seed=0,
        csv=table,
        path_column="file",
        emotion_column="label",
        speaker_column="who",
    )
    assert {(c.emotion, c.speaker) for c in manifest.clips} == {("x", "p"), ("y", "q")}
    with pytest.raises(
        DatasetError, match=r"no column 'emotion' \(columns: file, label, who\); pass --emotion"
    ):
        build_manifest("csv", root, seed=0, csv=table, path_column="file")
    with pytest.raises(DatasetError, match="not found"):
        build_manifest("csv", root, seed=0)
    with pytest.raises(DatasetError, match="check --data-dir"):
        build_manifest("csv", tmp_path / "nowhere", seed=0, csv=table)
    with pytest.raises(DatasetError, match="does not apply"):
        build_manifest("csv", root, seed=0, csv=table, keep="a")


def test_decoding_order_and_result_do_not_depend_on_threads(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    _corpus(root)
    one, _ = build_manifest("csv", root, seed=5, jobs=1)
    four, _ = build_manifest("csv", root, seed=5, jobs=4)
    assert one.to_dict() == four.to_dict()


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_label_file_that_is_not_a_regular_file_is_refused_at_once(tmp_path, kind):
    """A FIFO as labels.csv used to block the import forever (nobody writes to it): it is
    refused in one line before it is opened for reading, and so is a folder."""
    import os
    import subprocess
    import sys

    root = _corpus(tmp_path / "corpus")
    labels = root / "labels.csv"
    labels.unlink()
    if kind == "fifo":
        os.mkfifo(labels)
    else:
        labels.mkdir()
    with pytest.raises(DatasetError, match=r"labels\.csv is a (FIFO|folder), not a regular file"):
        build_manifest("csv", root, seed=1)
    # The command: one line, exit 1, within the timeout (a hang fails the test).
    args = ["manifest", "--dataset", "csv", "--data-dir", str(root)]
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args, "--manifest-dir", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "not a regular file" in result.stderr
