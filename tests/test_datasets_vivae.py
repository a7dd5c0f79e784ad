"""VIVAE importer on a tree in the release's layout."""

from __future__ import annotations

import pytest

from pipeline.datasets import DatasetError, build_manifest
from pipeline.testing.corpus_trees import make_vivae

NAMES = [
    "S01_achievement_low_01.wav",
    "S01_achievement_low_1.wav",  # 1-digit item
    "S02_anger_peak_100.wav",  # 3-digit item
    "S03_fear_moderate_07.wav",
    "S04_pain_strong_12.wav",
    "S05_pleasure_peak_03.wav",
    "S06_surprise_low_04.wav",
    "S07_anger_moderate_05.wav",
    "S08_fear_low_06.wav",
    "S09_pain_low_07.wav",
    "S10_pleasure_low_08.wav",
    "S11_surprise_low_09.wav",
    "S02_achievement_strong_10.wav",
]


def test_vivae_names_parse_into_labels(tmp_path):
    root = make_vivae(tmp_path / "VIVAE", NAMES)
    manifest, summary = build_manifest("vivae", root, seed=1)
    assert summary.found == summary.imported == len(NAMES) and summary.failed == 0
    clips = manifest.clip_by_id()
    assert clips["S01_achievement_low_1"].extra["item"] == "1"
    assert clips["S01_achievement_low_01"].extra["item"] == "01"
    big = clips["S02_anger_peak_100"]
    assert (big.speaker, big.emotion, big.extra["intensity"], big.extra["item"]) == (
        "S02",
        "anger",
        "peak",
        "100",
    )
    assert big.path == "full_set/S02_anger_peak_100.wav"
    assert big.source_sample_rate == 44100 and big.source_channels == 1
    assert big.num_samples == 1600  # 0.1 s at 16 kHz
    # The fixed vocabulary order of the release, not the order files were found in.
    assert manifest.labels["emotion"] == (
        "achievement",
        "anger",
        "fear",
        "pain",
        "pleasure",
        "surprise",
    )
    assert manifest.labels["speaker"][0] == "S01" and manifest.labels["speaker"][-1] == "S11"


def test_vivae_bad_names_and_files_are_failures(tmp_path):
    root = make_vivae(tmp_path / "VIVAE", NAMES)
    full = root / "full_set"
    (full / "S01_boredom_low_01.wav").write_bytes((full / NAMES[0]).read_bytes())
    (full / "S01_anger_extreme_01.wav").write_bytes((full / NAMES[0]).read_bytes())
    (full / "readme_copy.wav").write_bytes((full / NAMES[0]).read_bytes())
    (full / "S03_pain_low_99.wav").write_bytes(b"not audio")
    (full / "notes.txt").write_text("ignored: not a wav")
    manifest, summary = build_manifest("vivae", root, seed=1)
    assert summary.found == len(NAMES) + 4
    assert summary.found == summary.imported + summary.failed
    assert summary.imported == len(NAMES)
    reasons = {f.id: f.reason for f in manifest.failures}
    assert reasons["S01_boredom_low_01"].startswith("label outside the vocabulary rules")
    assert reasons["S01_anger_extreme_01"].startswith("label outside the vocabulary rules")
    assert reasons["readme_copy"].startswith("unexpected file name")
    assert reasons["S03_pain_low_99"].startswith("unreadable audio")
    assert summary.failed_by_reason["label outside the vocabulary rules"] == 2


def test_vivae_core_set_and_folder_forms(tmp_path):
    root = make_vivae(tmp_path / "VIVAE", NAMES)
    core, _ = build_manifest("vivae", root, seed=1, subset="core_set")
    assert [c.path for c in core.clips] == [f"core_set/{NAMES[0]}"]
    # Pointing --data-dir at full_set itself works too.
    direct, _ = build_manifest("vivae", root / "full_set", seed=1)
    assert len(direct.clips) == len(NAMES) and direct.clips[0].path.count("/") == 0


def test_vivae_missing_folder_says_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError, match=r"zenodo.org/records/4066235.*--data-dir"):
        build_manifest("vivae", None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no full_set/ folder"):
        build_manifest("vivae", tmp_path / "empty")


def test_a_file_name_that_is_not_utf8_is_one_failure_and_the_rest_imports(tmp_path):
    """A name whose bytes are not UTF-8 (Latin-1 'é' here) used to abort the whole import
    (the manifest could not be written): it is a recorded failure with the bytes escaped."""
    import json
    import os

    from click.testing import CliRunner

    from pipeline.cli import main
    from pipeline.manifest import Manifest

    root = make_vivae(tmp_path / "VIVAE", NAMES)
    full = os.fsencode(root / "full_set")
    os.rename(full + b"/S03_fear_moderate_07.wav", full + b"/S03_fear_moderate_07\xe9.wav")
    args = ["manifest", "--dataset", "vivae", "--data-dir", str(root)]
    result = CliRunner().invoke(main, [*args, "--manifest-dir", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    manifest = Manifest.load(tmp_path / "m" / "vivae.json")
    escaped = [f for f in manifest.failures if "\\xe9" in f.path]
    assert len(escaped) == 1 and escaped[0].path == "full_set/S03_fear_moderate_07\\xe9.wav"
    assert "S03_fear_moderate_07" not in {c.id for c in manifest.clips}
    assert len(manifest.clips) + len(manifest.failures) == len(NAMES)
    json.loads((tmp_path / "m" / "vivae.json").read_text(encoding="utf-8"))  # real UTF-8


# A regression of issue 13: a symlink loop crashed the import.
def test_a_symlink_loop_found_by_listing_the_folder_is_one_failure(tmp_path):
    root = make_vivae(tmp_path / "VIVAE", ["S01_anger_low_01.wav", "S02_fear_peak_02.wav"])
    loop = root / "full_set" / "S03_pain_strong_03.wav"
    loop.symlink_to(loop.name)
    manifest, summary = build_manifest("vivae", root, "v", seed=0)
    assert summary.imported == 2 and summary.failed == 1
    assert manifest.failures[0].reason.startswith("symlink loop")
