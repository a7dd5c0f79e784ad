"""`ncore-prep manifest`: files written, summary, one-line errors, same command same bytes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.manifest import Manifest, ViewSet

SMALL = ["--clips", "32", "--speakers", "4", "--emotions", "2"]


def _run(args, cwd):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(main, ["manifest", *args])
    finally:
        os.chdir(old)


def test_synthetic_manifest_written_with_summary(tmp_path):
    result = _run(["--dataset", "synthetic", *SMALL], tmp_path)
    assert result.exit_code == 0, result.output
    path = tmp_path / "manifests" / "synthetic.json"
    manifest = Manifest.load(path)
    assert manifest.data_path(path) == (tmp_path / "data" / "Synthetic").resolve()
    assert manifest.view_sets == ()
    assert "32 clips found, 32 imported, 0 failed" in result.output
    counts = {s: len(manifest.clips_in(s)) for s in ("train", "val", "test")}
    assert f"train {counts['train']}, val {counts['val']}, test {counts['test']}" in result.output
    assert sum(counts.values()) == 32


def test_same_command_same_bytes_and_other_seed_differs(tmp_path):
    args = ["--dataset", "synthetic", *SMALL, "--data-dir", str(tmp_path / "d")]
    _run([*args, "--manifest-dir", "a"], tmp_path)
    _run([*args, "--manifest-dir", "b"], tmp_path)
    _run([*args, "--manifest-dir", "c", "--seed", "7"], tmp_path)
    a = (tmp_path / "a" / "synthetic.json").read_bytes()
    assert a == (tmp_path / "b" / "synthetic.json").read_bytes()
    assert a != (tmp_path / "c" / "synthetic.json").read_bytes()


def test_name_protocol_and_rerun_keeps_view_sets(tmp_path):
    args = ["--dataset", "synthetic", *SMALL, "--name", "shoe", "--protocol", "speaker-held-out"]
    assert _run(args, tmp_path).exit_code == 0
    path = tmp_path / "manifests" / "shoe.json"
    manifest = Manifest.load(path)
    assert manifest.dataset == "shoe" and manifest.split["protocol"] == "speaker-held-out"
    held = set(manifest.split["test_speakers"])
    assert all((c.split == "test") == (c.speaker in held) for c in manifest.clips)
    vs = ViewSet("speaker", 5, 42, {}, "k1", "../cache/shoe/speaker-n5-k1", 1, 256, "1")
    manifest.with_view_set(vs).save(path)
    result = _run(args, tmp_path)
    assert "kept 1 view set" in result.output
    assert Manifest.load(path).view_sets == (vs,)
    result = _run([*args, "--seed", "3"], tmp_path)
    assert "dropped 1 view set" in result.output
    assert Manifest.load(path).view_sets == ()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "recanvo"], "ReCANVo not found at data/ReCANVo/"),
        (["--dataset", "vivae", "--data-dir", "nowhere"], "check --data-dir"),
        (["--dataset", "synthetic", "--keep", "x"], "--keep applies to --dataset recanvo"),
        (["--dataset", "vivae", "--csv", "x.csv"], "--csv applies to --dataset csv, not vivae"),
        (["--dataset", "csv", "--clips", "3"], "--clips applies to --dataset synthetic"),
        (["--dataset", "synthetic", "--name", "a/b"], "--name 'a/b'"),
    ],
)
def test_user_mistakes_are_one_line(tmp_path, args, message):
    result = _run(args, tmp_path)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_an_option_of_another_corpus_is_refused_before_any_work(tmp_path):
    # The synthetic corpus is generated when absent: a wrong option must stop that too.
    result = _run(["--dataset", "synthetic", *SMALL, "--subset", "core_set"], tmp_path)
    assert result.exit_code == 1 and "--subset applies to --dataset vivae" in result.output
    assert list(tmp_path.iterdir()) == []


def test_corpus_options_of_the_command_match_the_registry():
    from pipeline.cli import DATASETS, CorpusOption, manifest_command
    from pipeline.datasets import REGISTRY

    assert set(DATASETS) == set(REGISTRY)
    takes = {name: set() for name in DATASETS}
    for param in manifest_command.params:
        if isinstance(param, CorpusOption):
            for dataset in param.datasets:
                takes[dataset].add("csv" if param.name == "csv_file" else param.name)
    assert takes == {name: set(spec.options) for name, spec in REGISTRY.items()}


def test_real_process_stderr_for_wrong_column(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "labels.csv").write_text("file,emotion,speaker\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "manifest", "--dataset", "csv", "--data-dir", "c"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "Error: labels.csv has no column 'path' (columns: file, emotion, speaker); "
        "pass --path-column"
    ]
    assert not list(tmp_path.glob("manifests/*.json"))


@pytest.mark.parametrize(
    "args",
    [
        ["manifest", "--dataset", "synthetic", "--jobs", "{n}"],
        ["perturb", "--dataset", "synthetic", "--workers", "{n}"],
        ["validate", "m.json", "--repair", "--workers", "{n}"],
        ["selectivity", "m.json", "--jobs", "{n}"],
        ["inspect", "m.json", "--html", "page", "--workers", "{n}"],
        ["listen", "m.json", "page", "--workers", "{n}"],
    ],
)
@pytest.mark.parametrize("n", [0, 100000])
def test_worker_counts_beyond_the_machine_are_one_line(tmp_path, args, n):
    """Every process or thread count of the pipeline is 1..os.cpu_count(): 100000 forked
    until the machine was unusable. Refused before anything runs or is written."""
    flag = next(a for a in args if a in ("--jobs", "--workers"))
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(main, [a.format(n=n) for a in args])
    finally:
        os.chdir(old)
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        f"Error: {flag} {n}: must be between 1 and {os.cpu_count()} (this machine's CPU count)"
    ]
    assert list(tmp_path.iterdir()) == []
