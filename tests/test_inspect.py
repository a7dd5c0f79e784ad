"""``ncore-prep inspect``: the corpus summary and the per-clip export of every view."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.inspection import InspectError, describe, export_clip
from pipeline.manifest import SPLITS, Manifest
from pipeline.prep import PerturbSettings, fixed_executor, run_perturb
from pipeline.shards import ShardReader
from pipeline.testing.corpus_trees import make_csv_tree
from pipeline.testing.prep_corpus import GONE_ID, NAME, SHORT_ID, make_corpus
from pipeline.testing.processes import file_size_limit, only_line

VIEWS = 2


@pytest.fixture(scope="module")
def manifest_path(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("inspect")
    path = make_corpus(root)
    settings = PerturbSettings(views=VIEWS, shard_size=5, seed=9)
    with ThreadPoolExecutor(1) as pool:
        run_perturb(path, settings, fixed_executor(pool), cache_dir=root / "cache", progress=False)
    return path


def test_describe_counts_labels_per_split_and_view_sets(manifest_path):
    text = describe(manifest_path)
    m = Manifest.load(manifest_path)
    for name in ("emotion", "speaker"):
        for label in m.labels[name]:
            per_split = Counter(c.split for c in m.clips if getattr(c, name) == label)
            cells = [per_split.get(s, 0) for s in SPLITS]
            row = re.search(rf"^  {re.escape(label)}\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", text, re.M)
            assert row, label
            assert [int(x) for x in row.groups()] == [*cells, sum(cells)]
    for vs in m.view_sets:
        stored = sum(s.clips for s in vs.shards)
        assert f"key={vs.key}" in text
        assert f"{len(m.clips)} in = {stored} stored + {len(vs.failures)} failed" in text
    assert f"failed {GONE_ID}: missing file" in text
    on_disk = re.findall(r"\(([\d.]+) (KB|MB) on disk, ([\d.]+) KB per second of audio\)", text)
    assert len(on_disk) == 2 and all(float(size) > 0 for size, _, _ in on_disk)


def test_export_writes_every_view_as_in_the_shards(manifest_path, tmp_path):
    m = Manifest.load(manifest_path)
    clip_id = m.clips[6].id
    export = export_clip(manifest_path, clip_id, tmp_path)
    assert len(export.views) == 1 + VIEWS * len(m.view_sets)
    for vs in m.view_sets:
        index = 6 // vs.shard_size
        reader = ShardReader(vs.shard_paths(manifest_path)[index])
        i = reader.clip_ids.index(clip_id)
        rows = reader.read_int16(i, i + 1)
        original, rate = sf.read(export.views["original"], dtype="int16")
        assert rate == 16000 and np.array_equal(original, rows[0])
        for v in range(1, 1 + VIEWS):
            label = f"{vs.kind}-{vs.key} view {v}"
            audio, _ = sf.read(export.views[label], dtype="int16")
            assert np.array_equal(audio, rows[v]), label
            assert export.drawn[label] == reader.drawn(i)[v - 1]
    png = export.png.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_export_of_a_failed_clip_says_why_and_uses_the_source(manifest_path, tmp_path):
    export = export_clip(manifest_path, SHORT_ID, tmp_path)
    assert list(export.views) == ["original"]
    assert len(export.notes) == 3  # two view sets that failed it, and where the original is from
    assert all("too short" in n for n in export.notes[:2])
    audio, _ = sf.read(export.views["original"])
    assert audio.shape == (200,)
    with pytest.raises(InspectError, match="missing file"):
        export_clip(manifest_path, GONE_ID, tmp_path)


def test_cli_inspect_summary_clip_and_unknown_clip(manifest_path, tmp_path):
    runner = CliRunner()
    summary = runner.invoke(main, ["inspect", str(manifest_path)])
    assert summary.exit_code == 0 and f"dataset '{NAME}'" in summary.output
    clip_id = Manifest.load(manifest_path).clips[0].id
    out = tmp_path / "o"
    exported = runner.invoke(main, ["inspect", str(manifest_path), "--clip", clip_id, "--out", out])
    assert exported.exit_code == 0, exported.output
    assert "formant_ratio=" in exported.output and "permuted_bands=" in exported.output
    assert len(list(out.glob("*.wav"))) == 1 + 2 * VIEWS and len(list(out.glob("*.png"))) == 1
    unknown = runner.invoke(main, ["inspect", str(manifest_path), "--clip", "no-such-clip"])
    assert unknown.exit_code == 1
    assert unknown.output.startswith("Error: clip no-such-clip is not in")
    assert unknown.output.count("\n") == 1


# ----- a full disk and a hostile clip id (regressions of issue 13: tracebacks) ------------------
# "Disk full" is a real limit on file size (RLIMIT_FSIZE: the write fails with EFBIG) set in a
# real child process.
PREP = (sys.executable, "-m", "pipeline.cli")


def test_a_full_disk_while_exporting_a_clip_is_one_line(tmp_path):
    data = make_csv_tree(tmp_path / "data")
    cmd = [*PREP, "manifest", "--dataset", "csv", "--data-dir", str(data)]
    subprocess.run([*cmd, "--manifest-dir", str(tmp_path / "m")], check=True, timeout=300)
    manifest = tmp_path / "m" / "csv.json"
    clip = json.loads(manifest.read_text())["clips"][0]["id"]
    full = subprocess.run(
        [*PREP, "inspect", str(manifest), "--clip", clip, "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=file_size_limit(4096),  # a 0.3 s WAV is 9.6 kB
    )
    assert "File too large" in only_line(full)
    long = CliRunner().invoke(main, ["inspect", str(manifest), "--clip", "c" * 235])
    assert long.exit_code == 1 and "characters long" in long.output
    assert long.output.count("\n") == 1
