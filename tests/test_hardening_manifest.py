"""Hardening (issue 13): a manifest is data, not a set of paths to trust; writers share a lock.

Every test here failed on the code before the fix: a wrong JSON type crashed the readers, a
hostile name or path was followed, two writers overwrote each other, a symlinked manifest
was replaced by a copy and escaped the lock, atomic writes ignored the umask.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.manifest import Clip, Manifest, ManifestError, ManifestFile, ViewSet
from pipeline.qa import validate

PREP = (sys.executable, "-m", "pipeline.cli")


def _manifest(root: Path) -> Path:
    """A valid two-clip manifest with one (empty) view set under ``root``."""
    clips = (
        Clip("a", "x/a.wav", "joy", "s1", "train", 16000, 16000, 1),
        Clip("b", "x/b.wav", "fear", "s2", "test", 8000, 16000, 1),
    )
    vs = ViewSet(
        kind="speaker",
        views=2,
        seed=1,
        params={"formant_ratio_max": 1.4},
        key="abc123",
        folder="../cache/demo/speaker-n2-abc123",
        num_shards=1,
        shard_size=4,
        code_version="1",
    )
    m = Manifest(
        dataset="demo",
        source="csv:labels.csv",
        data_dir="../data",
        labels={"emotion": ("joy", "fear"), "speaker": ("s1", "s2")},
        clips=clips,
        view_sets=(vs,),
    )
    path = root / "manifests" / "demo.json"
    m.save(path)
    return path


def _edit(path: Path, mutate) -> Path:
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    return path


WRONG_TYPES = {
    "view_sets null": lambda d: d.update(view_sets=None),
    "clip entry 5": lambda d: d["clips"].append(5),
    "split a list": lambda d: d.update(split=[1, 2]),
    "clips a string": lambda d: d.update(clips="abc"),
    "labels numbers": lambda d: d["labels"].update(emotion=[1, 2]),
    "failures [1]": lambda d: d.update(failures=[1]),
    "shards a string": lambda d: d["view_sets"][0].update(shards="abc"),
    "labels a list": lambda d: d.update(labels=["joy"]),
    "extra a list": lambda d: d["clips"][0].update(extra=[1]),
    "params null": lambda d: d["view_sets"][0].update(params=None),
    "clip id a number": lambda d: d["clips"][0].update(id=7),
    "sha256 a number": lambda d: d["clips"][0].update(source_sha256=5),
    "failure path a list": lambda d: d.update(
        failures=[{"id": "z", "stage": "s", "reason": "r", "path": []}]
    ),
    "f0 method a number": lambda d: d["view_sets"][0].update(f0_method=3),
}


@pytest.mark.parametrize("case", sorted(WRONG_TYPES))
def test_wrong_json_types_are_one_manifest_error_for_every_reader(tmp_path, case):
    path = _edit(_manifest(tmp_path), WRONG_TYPES[case])
    with pytest.raises(ManifestError) as info:
        Manifest.load(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    # validate is documented never to raise: the problem is in its report.
    report = validate(path)
    assert not report.ok and report.errors[0].where == "manifest"
    runner = CliRunner()
    for args in (["validate", str(path)], ["inspect", str(path)]):
        result = runner.invoke(main, args)
        assert result.exit_code == 1, (args, result.output)
        assert not isinstance(result.exception, (TypeError, AttributeError, KeyError))
        assert result.output.strip().splitlines()[-1].startswith("Error:")


HOSTILE = {
    "dataset climbs": (lambda d: d.update(dataset="../../../../x"), "dataset"),
    "view-set folder climbs": (
        lambda d: d["view_sets"][0].update(folder="../../x"),
        "folder",
    ),
    "clip id climbs": (lambda d: d["clips"][0].update(id="../../x"), "id"),
    "clip path escapes": (lambda d: d["clips"][0].update(path="../../x.wav"), "path"),
    "clip path absolute": (lambda d: d["clips"][0].update(path="/etc/passwd"), "path"),
    "clip path the folder": (lambda d: d["clips"][0].update(path="x/.."), "path"),
    "clip path NUL": (lambda d: d["clips"][0].update(path="a\x00.wav"), "NUL"),
    "clip id too long": (lambda d: d["clips"][0].update(id="c" * 235), "characters long"),
    "shard path climbs": (
        lambda d: d["view_sets"][0].update(
            shards=[{"index": 0, "path": "../../y", "clips": 0, "samples": 0, "checksum": "s"}]
        ),
        "must be named",
    ),
    "view-set key climbs": (lambda d: d["view_sets"][0].update(key="../k"), "key"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_every_name_and_path_is_checked_when_the_manifest_loads(tmp_path, case):
    mutate, word = HOSTILE[case]
    path = _edit(_manifest(tmp_path), mutate)
    with pytest.raises(ManifestError, match=word):
        Manifest.load(path)


def test_perturb_on_a_hostile_manifest_writes_nothing_outside(tmp_path):
    """The reproduction of the issue: a view-set folder ``../../x`` made perturb write there."""
    project = tmp_path / "project"
    path = _edit(
        _manifest(project),
        lambda d: d["view_sets"][0].update(folder="../../victim/speaker-n2-abc123x"),
    )
    victim = tmp_path / "victim"
    (victim / "shard-00000.zarr").mkdir(parents=True)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = subprocess.run(
        [
            *PREP,
            "perturb",
            "--dataset",
            "demo",
            "--views",
            "2",
            "--manifest-dir",
            str(path.parent),
            "--cache-dir",
            str(project / "cache"),
        ],
        capture_output=True,
        text=True,
        cwd=project,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "folder" in result.stderr
    assert (victim / "shard-00000.zarr").is_dir()  # nothing deleted
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_all_manifest_writers_take_one_lock(tmp_path):
    """`ncore-prep manifest` while a perturb holds the manifest is refused, file unchanged."""
    data = tmp_path / "data"
    manifests = tmp_path / "manifests"
    cmd = [sys.executable, "-m", "pipeline.cli", "manifest", "--dataset", "synthetic"]
    cmd += ["--data-dir", str(data), "--manifest-dir", str(manifests), "--clips", "24"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    path = manifests / "synthetic.json"
    original = path.read_bytes()
    with ManifestFile(path, "perturb"):  # what a running perturb holds
        second = subprocess.run([*cmd, "--seed", "7"], capture_output=True, text=True, timeout=300)
    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "in use by `ncore-prep perturb`" in lines[0], second.stderr
    assert path.read_bytes() == original
    third = subprocess.run([*cmd, "--seed", "7"], capture_output=True, text=True, timeout=300)
    assert third.returncode == 0 and path.read_bytes() != original  # free again: it writes


def test_a_save_never_overwrites_a_change_made_behind_it(tmp_path):
    path = _manifest(tmp_path)
    with ManifestFile(path, "perturb") as file:
        m = file.load()
        # Another program (that does not lock) rewrites the manifest meanwhile.
        _edit(path, lambda d: d.update(source="csv:other.csv"))
        with pytest.raises(ManifestError, match="changed by another program"):
            file.save(m)
    assert Manifest.load(path).source == "csv:other.csv"
    with ManifestFile(path, "perturb") as file:  # a fresh read may save
        file.save(file.load())


def test_a_symlinked_manifest_shares_the_lock_and_stays_a_link(tmp_path):
    path = _manifest(tmp_path)
    alias = path.with_name("alias.json")
    alias.symlink_to(path.name)
    with ManifestFile(alias, "perturb"), pytest.raises(ManifestError, match="in use by"):
        ManifestFile(path, "manifest").__enter__()
    with ManifestFile(alias, "manifest") as file:
        m = file.load()
        file.save(Manifest(**{**m.__dict__, "source": "csv:edited.csv"}))
    assert alias.is_symlink() and os.readlink(alias) == path.name
    assert Manifest.load(path).source == "csv:edited.csv"
    loop = tmp_path / "loop.json"
    loop.symlink_to("loop.json")
    with pytest.raises(ManifestError, match="symlink loop"):
        ManifestFile(loop, "manifest").__enter__()


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_respect_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = _manifest(tmp_path)
        with ManifestFile(path, "manifest") as file:
            file.save(file.load())
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
