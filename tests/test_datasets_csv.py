"""CSV importer: bad input becomes failures, the rest is imported.

The second half holds regressions of issue 13 (hostile corpora): each reproduces a failure
of the code before the fix: a file listed twice imported twice, a duplicated CSV column
silently used, NUL / '.' paths and symlink loops crashing the import, a FIFO blocking it for
ever, a float WAV stored hard-clipped without a word.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from pipeline.audio import AudioError, read_source
from pipeline.datasets import DatasetError, build_manifest
from pipeline.manifest import Manifest
from pipeline.testing.corpus_trees import nan_wav_bytes, tone, wav_bytes


def _corpus(root):
    good = wav_bytes(tone(0.2, 22050, 330.0, channels=2), 22050)
    rows = ["path,emotion,speaker,session"]
    for i in range(12):
        rel = f"audio/{'ab'[i % 2]}/clip {i}.wav"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        # another tone per file: byte-identical files are duplicates
        (root / rel).write_bytes(wav_bytes(tone(0.2, 22050, 330.0 + 10 * i, channels=2), 22050))
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
    assert by_path["bad/text.wav"].startswith("unreadable audio")  # bytes read, not audio
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
    (root / "w" / "b.wav").write_bytes(wav_bytes(tone(0.1, 16000, 550.0), 16000))
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


# ------------------------------------------------------ input hygiene (issue 22, section 5)


def _table(root, rows):
    (root / "labels.csv").write_text(
        "path,emotion,speaker\n" + "".join(f"{p},{e},{s}\n" for p, e, s in rows),
        encoding="utf-8",
    )


def _tones(root, count):
    (root / "w").mkdir(parents=True)
    for i in range(count):
        (root / "w" / f"t{i}.wav").write_bytes(wav_bytes(tone(0.2, 16000, 200.0 + 50 * i), 16000))


@pytest.mark.parametrize("how", ["copy", "hard link"])
def test_the_same_bytes_under_another_name_are_duplicates(tmp_path, how):
    import os
    import shutil

    root = tmp_path / "c"
    _tones(root, 4)
    for name in ("same.wav", "other.wav"):
        if how == "copy":
            shutil.copyfile(root / "w" / "t0.wav", root / "w" / name)
        else:
            os.link(root / "w" / "t0.wav", root / "w" / name)
    rows = [(f"w/t{i}.wav", "joy" if i % 2 else "anger", f"s{i % 2}") for i in range(4)]
    _table(root, [*rows, ("w/same.wav", "anger", "s0")])  # same labels as t0: kept once
    manifest, summary = build_manifest("csv", root, seed=0)
    assert summary.found == summary.imported + summary.failed == 5
    reasons = {f.path: f.reason for f in manifest.failures}
    assert reasons == {
        "w/same.wav": "duplicate: w/same.wav has the same bytes (SHA-256) as clip w__t0"
    }
    # With other labels, neither listing can be trusted: both fail, none lands in a split.
    _table(root, [*rows, ("w/other.wav", "joy", "s1")])
    manifest, _ = build_manifest("csv", root, seed=0)
    failed = {f.path for f in manifest.failures if f.reason.startswith("duplicate")}
    assert failed == {"w/t0.wav", "w/other.wav"}
    assert "w/t0.wav" not in {c.path for c in manifest.clips}


def test_labels_are_nfc_and_control_characters_are_refused(tmp_path):
    import unicodedata

    root = tmp_path / "c"
    _tones(root, 5)
    nfc, nfd = unicodedata.normalize("NFC", "colère"), unicodedata.normalize("NFD", "colère")
    assert nfc != nfd
    rows = [
        ("w/t0.wav", nfc, "s0"),
        ("w/t1.wav", nfd, "s1"),
        ("w/t2.wav", "joy", "s0"),
        ("w/t3.wav", "joy\x1b[2J\x1b]0;pwned\x07", "s1"),  # clears the screen, retitles
        ("w/t4.wav", "joy", "s\u202e1"),  # right-to-left override
    ]
    _table(root, rows)
    manifest, summary = build_manifest("csv", root, seed=0)
    assert manifest.labels["emotion"] == (nfc, "joy")  # one class, in NFC
    assert {c.emotion for c in manifest.clips} == {nfc, "joy"}
    reasons = {f.path: f.reason for f in manifest.failures}
    assert (
        reasons["w/t3.wav"] == "bad label: 'emotion' holds the control or format character U+001B"
    )
    assert reasons["w/t4.wav"].startswith("bad label: 'speaker'")
    assert summary.found == summary.imported + summary.failed == 5


def test_everything_printed_to_a_terminal_is_escaped(tmp_path):
    """A manifest written by hand (or by an older version) with escape sequences in a label
    and a failure: ``inspect`` and ``validate`` print them escaped."""
    import json

    from click.testing import CliRunner

    from pipeline.cli import main

    root = tmp_path / "c"
    _tones(root, 4)
    _table(root, [(f"w/t{i}.wav", "joy" if i % 2 else "anger", f"s{i % 2}") for i in range(4)])
    manifest, _ = build_manifest("csv", root, seed=0)
    path = tmp_path / "m.json"
    data = manifest.to_dict()
    data["labels"]["emotion"] = [*data["labels"]["emotion"], "x\x1b]0;pwned\x07"]
    data["clips"][0]["emotion"] = "x\x1b]0;pwned\x07"
    data["failures"] = [{"id": "f", "stage": "import", "reason": "bad\x1b[2J", "path": "a\x9bb"}]
    path.write_text(json.dumps(data))
    runner = CliRunner()
    for args in (["inspect", str(path)], ["validate", str(path)]):
        result = runner.invoke(main, args)
        for raw in ("\x1b", "\x07", "\x9b"):
            assert raw not in result.output, (args, result.output)
        if args[0] == "inspect":
            assert result.exit_code == 0, result.output
            assert "x\\x1b]0;pwned\\x07" in result.output


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


# ----- hostile corpora (regressions of issue 13) -----------------------------------------------
PREP = (sys.executable, "-m", "pipeline.cli")


def _import_in_a_process(root, manifest_dir) -> subprocess.CompletedProcess:
    """``ncore-prep manifest --dataset csv`` in a real process."""
    args = ["manifest", "--dataset", "csv", "--data-dir", str(root)]
    return subprocess.run(
        [*PREP, *args, "--manifest-dir", str(manifest_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _listed_corpus(root, rows, files=6):
    """WAVs a0..a5 (labels by index) and labels.csv listing them, then the extra ``rows``."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["path,emotion,speaker"]
    for i in range(files):
        (root / f"a{i}.wav").write_bytes(wav_bytes(tone(0.2, 16000, 200.0 + 40 * i), 16000))
        lines.append(f"a{i}.wav,{'happy' if i % 2 else 'sad'},spk{i % 3}")
    lines += rows
    (root / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _by_path(manifest):
    return {f.path: f.reason for f in manifest.failures}


def test_a_file_listed_twice_becomes_a_duplicate_failure(tmp_path):
    # a1 again with other labels (contradiction: every listing refused); a2 again under
    # another spelling with the same labels (the first listing kept).
    root = _listed_corpus(tmp_path / "c", ["a1.wav,sad,spk0", "sub/../a2.wav,sad,spk2"])
    (root / "sub").mkdir()
    manifest, summary = build_manifest("csv", root, "c", seed=0)
    assert summary.found == summary.imported + summary.failed == 8
    paths = [c.path for c in manifest.clips]
    assert "a1.wav" not in paths  # neither label of a1 can be trusted
    assert paths.count("a2.wav") == 1 and "sub/../a2.wav" not in paths
    reasons = [f.reason for f in manifest.failures]
    assert sum(r.startswith("duplicate:") for r in reasons) == 3, reasons
    assert _by_path(manifest)["sub/../a2.wav"].startswith("duplicate: sub/../a2.wav is the same")
    assert sorted(paths) == ["a0.wav", "a2.wav", "a3.wav", "a4.wav", "a5.wav"]


def test_a_duplicated_csv_column_is_refused_in_one_line(tmp_path):
    root = _listed_corpus(tmp_path / "c", [])
    text = (root / "labels.csv").read_text().splitlines()
    text = [text[0] + ",emotion"] + [line + ",other" for line in text[1:]]
    (root / "labels.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(DatasetError, match="column 'emotion' appears more than once"):
        build_manifest("csv", root, "c", seed=0)
    result = _import_in_a_process(root, tmp_path / "m")
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "appears more than once" in result.stderr


def test_nul_dot_and_looping_paths_are_one_failure_each(tmp_path):
    root = _listed_corpus(
        tmp_path / "c", ["a\x00b.wav,sad,spk0", ".,sad,spk1", "loop.wav,sad,spk2"]
    )
    (root / "loop.wav").symlink_to("loop.wav")
    manifest, summary = build_manifest("csv", root, "c", seed=0)
    assert summary.imported == 6 and summary.failed == 3
    reasons = _by_path(manifest)
    assert reasons["a\x00b.wav"].startswith("bad path") and "NUL" in reasons["a\x00b.wav"]
    assert reasons["."].startswith("bad path")
    assert reasons["loop.wav"].startswith("symlink loop")


def test_a_fifo_is_refused_without_blocking(tmp_path):
    root = _listed_corpus(tmp_path / "c", ["p.wav,sad,spk0"])
    os.mkfifo(root / "p.wav")
    with pytest.raises(AudioError, match="not a regular file"):
        read_source(root / "p.wav")
    # The whole import in a real process: it must finish (the old code blocked for ever).
    result = _import_in_a_process(root, tmp_path / "m")
    assert result.returncode == 0, result.stderr
    manifest = Manifest.load(tmp_path / "m" / "csv.json")
    assert _by_path(manifest)["p.wav"].startswith("not a regular file")
    assert len(manifest.clips) == 6


@pytest.mark.parametrize(("peak", "refused"), [(4.03, True), (1.2, True), (0.95, False)])
def test_float_wav_beyond_full_scale_is_a_recorded_failure(tmp_path, peak, refused):
    root = _listed_corpus(tmp_path / "c", ["loud.wav,sad,spk0"])
    t = np.arange(8000) / 16000
    sf.write(root / "loud.wav", peak * np.sin(2 * np.pi * 220 * t), 16000, subtype="FLOAT")
    manifest, _ = build_manifest("csv", root, "c", seed=0)
    reasons = _by_path(manifest)
    if refused:
        assert reasons["loud.wav"].startswith("out-of-range samples")
        assert f"{peak:.3g}" in reasons["loud.wav"]
    else:
        assert "loud.wav" not in reasons and "loud.wav" in [c.path for c in manifest.clips]
