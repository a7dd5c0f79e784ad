"""pipeline/manifest.py: round trip, atomic save, refusal of unknown versions and broken
invariants; a manifest is data, not a set of paths to trust; writers share one lock.

The second half holds regressions of issue 13, each of which failed on the code before the
fix: a wrong JSON type crashed the readers (perturb and training too), a hostile name or path
was followed, two writers overwrote each other, a symlinked manifest was replaced by a copy
and escaped the lock, a full disk while saving was a traceback. "Disk full" is a real limit
on file size (RLIMIT_FSIZE: the write fails with EFBIG) set in a real child process. (That
atomic writes follow the umask: tests/test_atomic.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.manifest import Clip, Failure, Manifest, ManifestError, ManifestFile, ViewSet
from pipeline.qa import validate
from pipeline.testing.corpus_trees import make_csv_tree
from pipeline.testing.processes import file_size_limit, only_line


def _manifest(**changes):
    clips = (
        Clip("a", "x/a.wav", "joy", "s1", "train", 16000, 44100, 2, 100, "ab" * 32, {"k": "v"}),
        Clip("b", "x/b.wav", "fear", "s2", "test", 8000, 16000, 1),
    )
    fields = {
        "dataset": "demo",
        "source": "csv:labels.csv",
        "data_dir": "../data/demo",
        "labels": {"emotion": ("joy", "fear"), "speaker": ("s1", "s2")},
        "clips": clips,
        "split": {"protocol": "default", "seed": 1},
        "failures": (Failure("c", "import", "empty file: 0 bytes", "x/c.wav"),),
    }
    fields.update(changes)
    return Manifest(**fields)


def test_round_trip_through_json(tmp_path):
    m = _manifest()
    m.save(tmp_path / "m.json")
    loaded = Manifest.load(tmp_path / "m.json")
    assert loaded == m
    data = json.loads((tmp_path / "m.json").read_text())
    assert data["schema_version"] == 1 and data["sample_rate"] == 16000
    assert data["labels"]["emotion"] == ["joy", "fear"]
    assert loaded.clips[0].duration == 1.0
    assert not [p for p in tmp_path.iterdir() if p.name != "m.json"]  # no temp file left


def _write(tmp_path, data):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data))
    return path


def test_unknown_schema_version_is_refused(tmp_path):
    data = _manifest().to_dict()
    data["schema_version"] = 2
    with pytest.raises(ManifestError, match="schema_version 2 is not supported"):
        Manifest.load(_write(tmp_path, data))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["clips"].append(dict(d["clips"][0])), "clip 'a': id listed twice"),
        (lambda d: d["clips"][1].update(emotion="rage"), "clip 'b': emotion 'rage' not in"),
        (lambda d: d["clips"][1].update(split="dev"), "clip 'b': split 'dev' is not one of"),
        (lambda d: d["clips"][0].pop("num_samples"), "clip 'a': missing field 'num_samples'"),
        (lambda d: d["clips"][0].update(num_samples=0), "clip 'a': field 'num_samples'"),
        (lambda d: d["failures"].append({**d["failures"][0], "id": "a"}), "failure 'a': also"),
        (lambda d: d.update(sample_rate=22050), "sample_rate must be 16000"),
        (lambda d: d["labels"].update(speaker=[]), "vocabulary 'speaker'"),
    ],
)
def test_broken_invariants_name_the_problem(tmp_path, mutate, message):
    data = _manifest().to_dict()
    mutate(data)
    with pytest.raises(ManifestError, match=message):
        Manifest.load(_write(tmp_path, data))


def test_not_json_and_missing_file(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{"schema_version": 1, "clips": [')
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.load(path)
    with pytest.raises(ManifestError, match="no such manifest"):
        Manifest.load(tmp_path / "none.json")


def test_save_replaces_atomically(tmp_path):
    path = tmp_path / "m.json"
    _manifest().save(path)
    before = path.read_text()
    vs = ViewSet("speaker", 5, 42, {}, "k1", "cache/demo/speaker-n5-k1", 2, 256, "1")
    updated = _manifest().with_view_set(vs)
    updated.save(path)
    assert path.read_text() != before
    assert Manifest.load(path).view_set  # loads back
    assert Manifest.load(path).view_sets[0].key == "k1"


def test_a_hard_linked_manifest_is_refused_by_every_writer(tmp_path):
    # Two names of one file: one lock per name, and the first atomic save splits them, so
    # two perturbs through the two names would each keep only their own view set.
    import os

    from pipeline.manifest import ManifestFile

    path = tmp_path / "m.json"
    _manifest().save(path)
    os.link(path, tmp_path / "alias.json")
    for name in ("m.json", "alias.json"):
        with pytest.raises(ManifestError, match="hard links"), ManifestFile(tmp_path / name, "x"):
            pass
    assert os.stat(path).st_ino == os.stat(tmp_path / "alias.json").st_ino  # nothing split
    os.unlink(tmp_path / "alias.json")
    with ManifestFile(path, "x") as file:
        file.save(file.load())


@pytest.mark.parametrize("version", [True, 1.0, "1", None, [1]])
def test_schema_version_must_be_the_integer_itself(tmp_path, version):
    """``true == 1`` and ``1.0 == 1`` in Python: a version is refused unless it is the int."""
    data = _manifest().to_dict()
    data["schema_version"] = version
    with pytest.raises(ManifestError, match=r"m\.json: manifest: schema_version .* not supported"):
        Manifest.load(_write(tmp_path, data))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("test_fraction", "abc", "field 'test_fraction' must be a number"),
        ("test_fraction", 1.5, "field 'test_fraction' must lie in"),
        ("val_fraction", 2.5, "field 'val_fraction' must lie in"),
        ("val_fraction", 0.9, "field 'val_fraction' must lie in"),  # 0.9 >= 1 - 0.2
        ("protocol", "nonsense", "field 'protocol' must be one of"),
        ("stratify", 3, "field 'stratify' must be one of"),
        ("seed", True, "field 'seed' must be an integer"),
        ("validation_split", "dev", "field 'validation_split' must be one of"),
        ("test_speakers", "s1", "field 'test_speakers' must be a list"),
        ("test_fracton", 0.2, "unknown field 'test_fracton'"),
    ],
)
def test_split_settings_are_typed_when_read(tmp_path, field, value, message):
    """The manifest's ``split`` object is read by one typed parser (SplitSettings): a wrong
    type or value is one line naming the file and the field, not a traceback later."""
    data = _manifest(
        split={"protocol": "default", "seed": 1, "test_fraction": 0.2, "val_fraction": 0.1}
    ).to_dict()
    data["split"][field] = value
    path = _write(tmp_path, data)
    with pytest.raises(ManifestError, match=rf"m\.json: manifest: split: {message}") as caught:
        Manifest.load(path)
    assert "\n" not in str(caught.value)
    with pytest.raises(ManifestError, match=message):  # built in code: the same check
        _manifest(split=data["split"])
    from click.testing import CliRunner

    from pipeline.cli import main

    for command in ("validate", "inspect", "selectivity"):  # every command reads it so
        result = CliRunner().invoke(main, [command, str(path)])
        assert result.exit_code == 1 and message in result.output, result.output
        assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
        if command != "validate":  # validate lists its problems, then counts them
            assert len(result.output.strip().splitlines()) == 1, result.output


def test_split_settings_round_trip(tmp_path):
    split = {
        "protocol": "speaker-held-out",
        "seed": 3,
        "stratify": "emotion",
        "test_fraction": 0.25,
        "val_fraction": 0.1,
        "validation_split": "val",
        "test_speakers": ["s2"],
    }
    _manifest(split=split).save(tmp_path / "m.json")
    assert Manifest.load(tmp_path / "m.json").split == split


def test_a_lone_surrogate_in_any_string_is_refused(tmp_path):
    """JSON can spell a lone surrogate ("\\udce9"): not text, it could never be written back."""
    data = _manifest().to_dict()
    text = json.dumps(data).replace('"x/c.wav"', '"x/c\\udce9.wav"')
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(ManifestError, match=r"failure 'c': field 'path' is not valid UTF-8"):
        Manifest.load(path)


def test_a_fifo_in_place_of_a_manifest_is_refused_without_blocking(tmp_path):
    """A FIFO blocks a reader until someone writes to it: refused on the descriptor."""
    import os

    from click.testing import CliRunner

    from pipeline.cli import main

    path = tmp_path / "m.json"
    os.mkfifo(path)
    with pytest.raises(ManifestError, match=r"m\.json: cannot read manifest \(is a FIFO"):
        Manifest.load(path)
    for command in ("validate", "inspect"):
        result = CliRunner().invoke(main, [command, str(path)])
        assert result.exit_code == 1 and "is a FIFO, not a regular file" in result.output


# ----- a manifest is data, not a set of paths to trust (regressions of issue 13) ----------------
PREP = (sys.executable, "-m", "pipeline.cli")
TRAIN = (sys.executable, "-m", "trainer.cli")


def _saved_manifest(root: Path) -> Path:
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
    path = _edit(_saved_manifest(tmp_path), WRONG_TYPES[case])
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
    path = _edit(_saved_manifest(tmp_path), mutate)
    with pytest.raises(ManifestError, match=word):
        Manifest.load(path)


def test_perturb_on_a_hostile_manifest_writes_nothing_outside(tmp_path):
    """The reproduction of the issue: a view-set folder ``../../x`` made perturb write there."""
    project = tmp_path / "project"
    path = _edit(
        _saved_manifest(project),
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
    path = _saved_manifest(tmp_path)
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
    path = _saved_manifest(tmp_path)
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


# ----- a full disk ---------------------------------------------------------------------------
def test_a_full_disk_while_saving_a_manifest_is_one_line_and_keeps_the_old_one(tmp_path):
    data = make_csv_tree(tmp_path / "data")
    manifests = tmp_path / "m"
    cmd = [*PREP, "manifest", "--dataset", "csv", "--data-dir", str(data)]
    cmd += ["--manifest-dir", str(manifests)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    old = (manifests / "csv.json").read_bytes()
    full = subprocess.run(
        [*cmd, "--seed", "7"],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=file_size_limit(len(old) // 2),
    )
    line = only_line(full)
    assert "csv.json" in line and "File too large" in line
    assert (manifests / "csv.json").read_bytes() == old
    assert sorted(p.name for p in manifests.iterdir()) == [".csv.json.lock", "csv.json"]


@pytest.mark.parametrize("case", ["view_sets null", "clip entry 5", "split a list"])
def test_perturb_and_training_report_a_wrongly_typed_manifest_in_one_line(tmp_path, case):
    path = _edit(_saved_manifest(tmp_path), WRONG_TYPES[case])
    perturb = subprocess.run(
        [*PREP, "perturb", "--dataset", "demo", "--manifest-dir", str(path.parent)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert str(path) in only_line(perturb)
    train = subprocess.run(
        [*TRAIN, "--manifest", str(path), "--backbone", "tiny", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert train.returncode == 1 and "Traceback" not in train.stderr
    assert str(path) in train.stderr.strip().splitlines()[-1]


# ----- the first week's layout: a one-off migrate, then the readers refuse it --------------
def _first_week_manifest(root):
    """A real corpus perturbed under WORLD's range (71-800 Hz, the only one before
    2026-11-30), its manifest then written in the first week's layout: view sets without
    ``f0_floor_hz``/``f0_ceil_hz`` (docs/CONTRACTS.md; commit aa19f4a added them). Returns
    the manifest path and the current manifest's bytes."""
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.manifest import LEGACY_F0_CEIL_HZ, LEGACY_F0_FLOOR_HZ
    from pipeline.prep import PerturbSettings, fixed_executor, run_perturb
    from pipeline.testing.prep_corpus import make_corpus

    path = make_corpus(root)
    settings = PerturbSettings(
        kinds=("speaker",),
        views=2,
        shard_size=5,
        seed=9,
        f0_floor_hz=LEGACY_F0_FLOOR_HZ,
        f0_ceil_hz=LEGACY_F0_CEIL_HZ,
    )
    with ThreadPoolExecutor(1) as pool:
        run_perturb(path, settings, fixed_executor(pool), cache_dir=root / "cache", progress=False)
    current = path.read_bytes()
    data = json.loads(current)
    assert data["view_sets"] and all(vs["f0_ceil_hz"] == 800.0 for vs in data["view_sets"])
    for vs in data["view_sets"]:
        del vs["f0_floor_hz"], vs["f0_ceil_hz"]
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path, current


def test_a_first_week_manifest_is_refused_naming_migrate_which_rewrites_it_once(tmp_path):
    from click.testing import CliRunner

    from pipeline.cli import main

    path, current = _first_week_manifest(tmp_path)
    old = path.read_bytes()
    key = json.loads(old)["view_sets"][0]["key"]
    with pytest.raises(ManifestError) as refused:
        Manifest.load(path)
    assert str(refused.value) == (
        f"{path}: view set {key!r}: records no F0 range (a manifest written before "
        f"2026-11-30); rewrite it once with `ncore-prep migrate {path}`"
    )
    runner = CliRunner()
    result = runner.invoke(main, ["inspect", str(path)])
    assert result.exit_code == 1 and result.output == f"Error: {refused.value}\n"
    result = runner.invoke(main, ["validate", str(path)])  # a report, the refusal its line
    assert result.exit_code == 1 and str(refused.value) in result.output
    assert path.read_bytes() == old  # a reader never rewrites it

    result = runner.invoke(main, ["migrate", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"rewrote {path}: view set(s) {key} now record the F0 range they were made with "
        "(71-800 Hz)\n"
    )
    # Exactly the manifest the current toolkit wrote for these view sets, byte for byte;
    # the view set keeps its key, and its shards read back and verify.
    assert path.read_bytes() == current
    migrated = Manifest.load(path)
    assert [(vs.key, vs.f0_floor_hz, vs.f0_ceil_hz) for vs in migrated.view_sets] == [
        (key, 71.0, 800.0)
    ]
    assert runner.invoke(main, ["validate", str(path)]).exit_code == 0
    again = runner.invoke(main, ["migrate", str(path)])
    assert again.exit_code == 0 and again.output == f"{path}: already current\n"
    assert path.read_bytes() == current
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(
        [path.name, f".{path.name}.lock"]
    )  # no temporary file left


def test_migrate_refuses_what_is_not_a_first_week_manifest(tmp_path):
    """Anything else wrong is refused as at load, and nothing is written."""
    from click.testing import CliRunner

    from pipeline.cli import main

    data = _manifest().to_dict()
    data["clips"][0]["num_samples"] = 0
    path = _write(tmp_path, data)
    before = path.read_bytes()
    result = CliRunner().invoke(main, ["migrate", str(path)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {path}: clip 'a': field 'num_samples' must be an integer >= 1, got 0"
    ]
    assert path.read_bytes() == before
