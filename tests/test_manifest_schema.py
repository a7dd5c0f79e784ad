"""pipeline.manifest: round trip, atomic save, refusal of unknown versions and broken invariants."""

from __future__ import annotations

import json

import pytest

from pipeline.manifest import Clip, Failure, Manifest, ManifestError, ViewSet


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
