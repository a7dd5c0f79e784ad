"""``ncore-prep selectivity`` on signals built so that the answer is known.

The clips are harmonic tones through one formant filter. The speaker sets the F0 level
(120, 180 or 270 Hz), the emotion the F0 contour's direction (a half-octave rise or
fall around that level); durations, level and timbre carry nothing. Three view sets are
rendered from the clip parameters, so what each one removes is known by construction:

- ``scramble``: each view at a random F0 level (independent of the speaker), same contour:
  it removes the speaker and keeps the emotion;
- ``identity``: each view re-rendered with the clip's own parameters (fresh noise): it
  removes nothing;
- ``flatten`` (an emotion view set): each view at the clip's level with a flat contour: it
  removes the emotion and keeps the speaker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import lfilter

from pipeline.manifest import Clip, Manifest
from pipeline.rng import make_rng
from pipeline.selectivity import (
    ALL_FEATURES,
    OTHER_LABEL,
    THRESHOLDS,
    Row,
    SelectivitySettings,
    load_result,
    run_selectivity,
    verdicts,
)
from pipeline.shards import ShardClip, write_view_set
from pipeline.workers import worker_pool

SR = 16000
SPEAKER_F0 = (120.0, 180.0, 270.0)
EMOTIONS = ("rise", "fall")
SPEAKERS = ("a", "b", "c")
PER_CELL = 6
VIEWS = 1


def tone(f0: float, direction: int, rng: np.random.Generator, seconds: float = 0.8):
    """A harmonic tone whose F0 glides half an octave (up for +1, down for -1, flat for 0)
    around ``f0``, through a resonance at 700 Hz, peak 0.5, with a little noise."""
    n = int(seconds * SR)
    t = np.arange(n) / n
    track = f0 * 2.0 ** (0.5 * direction * (t - 0.5)) * (1 + 0.01 * rng.standard_normal())
    phase = 2 * np.pi * np.cumsum(track) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 25))
    r, theta = np.exp(-np.pi * 120 / SR), 2 * np.pi * 700 / SR
    x = lfilter([1.0], [1.0, -2 * r * np.cos(theta), r * r], x)
    ramp = np.minimum(1.0, np.minimum(np.arange(n), n - np.arange(n)) / (0.03 * SR))
    x = x * ramp
    x = 0.5 * x / np.abs(x).max()
    return x + 1e-3 * rng.standard_normal(n)


def view_folder(name: str) -> str:
    """The folder of view set ``name`` (named after its kind, views and key)."""
    return f"{'emotion' if name == 'flatten' else 'speaker'}-n{VIEWS}-{name}"


def write_known_corpus(folder: Path) -> Path:
    """Three view sets of known selectivity over 36 clips (speaker and emotion independent)."""
    clips, stored = [], {"scramble": [], "identity": [], "flatten": []}
    index = 0
    for s, speaker in enumerate(SPEAKERS):
        for e, emotion in enumerate(EMOTIONS):
            for k in range(PER_CELL):
                clip_id = f"{speaker}_{emotion}_{k}"
                rng = make_rng("known", clip_id)
                direction = 1 if e == 0 else -1
                original = tone(SPEAKER_F0[s], direction, rng)
                clips.append(
                    Clip(clip_id, f"{clip_id}.wav", emotion, speaker, "train", original.size, SR, 1)
                )
                rows = {name: [original] for name in stored}
                for v in range(1, VIEWS + 1):
                    vrng = make_rng("known", clip_id, v)
                    level = float(np.exp(vrng.uniform(np.log(100.0), np.log(330.0))))
                    rows["scramble"].append(tone(level, direction, vrng))
                    rows["identity"].append(tone(SPEAKER_F0[s], direction, vrng))
                    rows["flatten"].append(tone(SPEAKER_F0[s], 0, vrng))
                for name in stored:
                    drawn = [{"view": v} for v in range(1, VIEWS + 1)]
                    stored[name].append(ShardClip(clip_id, np.stack(rows[name]), drawn))
                index += 1
    path = folder / "known.json"
    view_sets = tuple(
        write_view_set(
            folder / "cache" / "known" / view_folder(name),
            stored[name],
            manifest_path=path,
            kind="emotion" if name == "flatten" else "speaker",
            views=VIEWS,
            seed=1,
            key=name,
            shard_size=20,
            code_version="test",
        )
        for name in stored
    )
    Manifest(
        dataset="known",
        source="test",
        data_dir=".",
        labels={"emotion": EMOTIONS, "speaker": SPEAKERS},
        clips=tuple(clips),
        view_sets=view_sets,
    ).save(path)
    return path


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    folder = tmp_path_factory.mktemp("selectivity")
    path = write_known_corpus(folder)
    results = run_selectivity(path, SelectivitySettings(views=VIEWS), lambda: worker_pool(2))
    return path, {vs.key: result for vs, result, _ in results}


@pytest.mark.slow
def test_a_perturbation_that_removes_the_speaker_cue(known):
    _, results = known
    r = results["scramble"]
    assert (r.removes, r.keeps) == (True, True), r.verdicts
    assert r.verdicts[0].startswith("p_s (speaker views): removes speaker: yes")
    # Size, against independent reference values: on the originals the F0 level identifies
    # all three speakers; on views drawn independently of the speaker it is at chance 1/3.
    orig = r.row("speaker", "f0_level", "originals")
    assert orig.balanced_accuracy > 0.95 and orig.chance == pytest.approx(1 / 3)
    for condition in ("views", "transfer"):
        view = r.row("speaker", "f0_level", condition)
        assert view.ci95[0] < 1 / 3 < view.ci95[1] + 0.05
        assert abs(view.balanced_accuracy - 1 / 3) < 0.2
    # The contour's direction survives a new level: rise vs fall stays decodable.
    for condition in ("originals", "views", "transfer"):
        assert r.row("emotion", "f0_contour", condition).balanced_accuracy > 0.9


@pytest.mark.slow
def test_a_perturbation_that_keeps_everything(known):
    _, results = known
    r = results["identity"]
    assert (r.removes, r.keeps) == (False, True), r.verdicts
    assert "removes speaker: no" in r.verdicts[0]
    for condition in ("views", "transfer"):
        assert r.row("speaker", "f0_level", condition).balanced_accuracy > 0.9


@pytest.mark.slow
def test_an_emotion_perturbation_that_flattens_the_contour(known):
    _, results = known
    r = results["flatten"]
    assert r.kind == "emotion"
    assert (r.removes, r.keeps) == (True, True), r.verdicts
    assert r.verdicts[0].startswith("p_e (emotion views): removes emotion: yes")
    assert r.row("emotion", "f0_contour", "originals").balanced_accuracy > 0.9
    assert abs(r.row("emotion", "f0_contour", "transfer").balanced_accuracy - 0.5) < 0.2
    assert r.row("speaker", "f0_level", "transfer").balanced_accuracy > 0.9


@pytest.mark.slow
def test_json_beside_the_view_set_has_the_documented_shape(known):
    path, results = known
    data = json.loads(
        (path.parent / "cache" / "known" / view_folder("scramble") / "selectivity.json").read_text()
    )
    assert data["schema_version"] == 1 and data["view_set"] == "scramble"
    assert data["kind"] == "speaker" and data["verdicts"] == list(results["scramble"].verdicts)
    assert {"decodable_margin", "removed_max", "kept_min"} <= set(data["thresholds"])
    conditions = {(r["label"], r["features"], r["condition"]) for r in data["rows"]}
    for label in ("speaker", "emotion"):
        assert (label, OTHER_LABEL, "originals") in conditions
        for features in (*data["feature_sets"], ALL_FEATURES):
            for condition in ("originals", "views", "transfer"):
                assert (label, features, condition) in conditions
    for row in data["rows"]:
        lo, hi = row["ci95"]
        assert lo <= row["balanced_accuracy"] <= hi and row["n"] == 36
        assert row["chance"] == pytest.approx(1 / 3 if row["label"] == "speaker" else 1 / 2)
    assert (
        load_result(path.parent / "cache" / "known" / view_folder("scramble"))
        == results["scramble"]
    )


@pytest.mark.slow
def test_same_command_same_bytes(known, tmp_path):
    path, _ = known
    first = (
        path.parent / "cache" / "known" / view_folder("identity") / "selectivity.json"
    ).read_bytes()
    run_selectivity(path, SelectivitySettings(views=VIEWS, keys=("identity",)))  # in-process
    assert (
        path.parent / "cache" / "known" / view_folder("identity") / "selectivity.json"
    ).read_bytes() == first


def _rows(label, features, orig, views, transfer, chance=0.25, ref=0.25):
    floor = max(chance, ref)
    out = [Row(label, OTHER_LABEL, "originals", ref, (ref - 0.02, ref + 0.02), chance, 100)]
    for condition, value in (("originals", orig), ("views", views), ("transfer", transfer)):
        kept = None if condition == "originals" else (value - floor) / (orig - floor)
        out.append(
            Row(label, features, condition, value, (value - 0.05, value + 0.05), chance, 100, kept)
        )
    return out


def test_verdict_thresholds_are_applied_as_stated():
    removed_max, kept_min = THRESHOLDS["removed_max"], THRESHOLDS["kept_min"]
    # Speaker orig 0.85, chance 0.25 (0.6 above the floor), intervals +-0.05 (0.083 of it):
    # not removed only when the interval's lower end retains more than removed_max.
    kept = 0.25 + (kept_min + 0.05) * 0.6
    cases = (
        (removed_max - 0.05, True),  # below the line
        (removed_max + 0.05, True),  # above it, but its interval reaches below
        (removed_max + 0.15, False),  # above it with the whole interval
    )
    for retained, expected in cases:
        value = 0.25 + retained * 0.6
        rows = _rows("speaker", "envelope", 0.85, value, 0.25)
        rows += _rows("emotion", "f0_contour", 0.85, kept, kept)
        _, removes, keeps = verdicts("speaker", rows)
        assert (removes, keeps) == (expected, True), retained
    # Keeping needs kept_min in both views and transfer.
    rows = _rows("speaker", "envelope", 0.85, 0.25, 0.25)
    rows += _rows("emotion", "f0_contour", 0.85, kept, 0.25 + (kept_min - 0.05) * 0.6)
    assert verdicts("speaker", rows)[2] is False
    # Nothing decodes the emotion from the originals: cannot tell.
    rows = _rows("speaker", "envelope", 0.85, 0.25, 0.25) + _rows(
        "emotion", "f0_contour", 0.3, 0.3, 0.3
    )
    lines, removes, keeps = verdicts("speaker", rows)
    assert removes is True and keeps is None and "cannot tell" in lines[0]
    # Entangled labels: the reference raises the floor and a caution line is printed.
    rows = _rows("speaker", "envelope", 0.85, 0.8, 0.8, ref=0.8) + _rows(
        "emotion", "f0_contour", 0.85, kept, kept
    )
    lines, removes, _ = verdicts("speaker", rows)
    assert removes is None and any(line.startswith("caution") for line in lines)


def _cli(args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, capture_output=True, text=True
    )


@pytest.mark.slow
def test_cli_mistakes_are_one_line(tmp_path, known):
    path, _ = known
    result = _cli(["selectivity", str(path), "--view-set", "nope"], tmp_path)
    assert result.returncode == 1 and "no view set with key nope" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    bare = tmp_path / "bare.json"
    m = Manifest.load(path)
    Manifest(m.dataset, m.source, m.data_dir, m.labels, m.clips).save(bare)
    result = _cli(["selectivity", str(bare)], tmp_path)
    assert result.returncode == 1 and "no complete view set" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_on_a_csv_corpus_then_inspect_shows_it(tmp_path):
    """The real path: generated WAVs imported as a csv corpus, WORLD views by `perturb`,
    then `selectivity` and `inspect` as subprocesses."""
    from pipeline.datasets.synthetic import SyntheticConfig, generate

    generate(
        tmp_path / "data",
        SyntheticConfig(
            clips=40, speakers=2, emotions=2, entanglement=0.0, min_duration=0.4, max_duration=0.6
        ),
    )
    steps = [
        ["manifest", "--dataset", "csv", "--data-dir", "data", "--name", "mine"],
        [
            "perturb",
            "--dataset",
            "mine",
            "--views",
            "2",
            "--f0",
            "dio",
            "--workers",
            "1",
            "--no-progress",
        ],
        ["selectivity", "manifests/mine.json", "--views", "1", "--jobs", "2"],
    ]
    for args in steps:
        result = _cli(args, tmp_path)
        assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "p_s (speaker views): removes speaker:" in out
    assert "p_e (emotion views): removes emotion:" in out
    written = sorted(tmp_path.glob("cache/mine/*/selectivity.json"))
    assert len(written) == 2
    result = _cli(["inspect", "manifests/mine.json"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("selectivity of p_") == 2
    assert "keeps emotion:" in result.stdout and "keeps speaker:" in result.stdout


# ------------------------------------------- pool workers end with the command (issue 22, §3)


@pytest.mark.slow
def test_killing_selectivity_leaves_no_worker_behind(tmp_path):
    import psutil

    from pipeline.testing.processes import kill_once_workers_run

    path = write_known_corpus(tmp_path)
    cmd = [sys.executable, "-m", "pipeline.cli", "selectivity", str(path), "--jobs", "2"]
    workers = kill_once_workers_run(cmd, tmp_path, 2)
    _, alive = psutil.wait_procs(workers, timeout=60)
    assert not alive, f"{len(alive)} worker(s) of the killed command are still running"


# ----- selectivity.json is read by one typed reader; the output folder is checked first ------
def _stored_result(folder: Path) -> Path:
    """A selectivity.json as ``ncore-prep selectivity`` writes it, in ``folder``."""
    from pipeline.selectivity import Selectivity, result_path

    rows = _rows("speaker", "envelope", 0.85, 0.3, 0.3) + _rows(
        "emotion", "f0_contour", 0.85, 0.8, 0.8
    )
    lines, removes, keeps = verdicts("speaker", rows)
    result = Selectivity("k1", "speaker", tuple(rows), tuple(lines), removes, keeps, 100, 2, 0)
    folder.mkdir(parents=True, exist_ok=True)
    result_path(folder).write_text(json.dumps(result.to_dict()))
    assert load_result(folder) == result
    return result_path(folder)


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def edit(data):
        target = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
        return data

    return edit


STORED_DAMAGE = {
    "a list": (lambda d: [], "must be a JSON object, got list"),
    "null": (lambda d: None, "must be a JSON object, got null"),
    "unknown kind": (_set("kind", "tempo"), "field 'kind' must be one of"),
    "version true": (_set("schema_version", True), "schema_version True"),
    "rows an object": (_set("rows", {}), "field 'rows' must be a list"),
    "score a string": (
        _set("rows", 0, "balanced_accuracy", "0.9"),
        "row 0: field 'balanced_accuracy' must be a number",
    ),
    "score above 1": (_set("rows", 1, "chance", 4.0), "row 1: field 'chance' must lie"),
    "unknown condition": (_set("rows", 2, "condition", "x"), "row 2: field 'condition'"),
    "removes a string": (_set("removes", "yes"), "field 'removes' must be true"),
    "clips negative": (_set("clips", -1), "field 'clips' must be an integer >= 0"),
}


@pytest.mark.parametrize("how", sorted(STORED_DAMAGE))
def test_a_damaged_selectivity_json_is_one_line_naming_the_file(tmp_path, how):
    from pipeline.selectivity import SelectivityError

    path = _stored_result(tmp_path / "speaker-n2-k1")
    damage, message = STORED_DAMAGE[how]
    path.write_text(json.dumps(damage(json.loads(path.read_text()))))
    with pytest.raises(SelectivityError, match=rf"selectivity\.json: .*{message}") as caught:
        load_result(path.parent)
    assert "\n" not in str(caught.value)


def _limited(limit_bytes: int):
    import resource

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


def test_a_full_disk_is_refused_before_the_measurement(tmp_path):
    """A view-set folder the result cannot be written into is one line before minutes of
    analysis ("disk full": a real RLIMIT_FSIZE in a real child process: writes fail)."""
    path = write_known_corpus(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "selectivity", str(path), "--views", "1"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},  # no truncated .pyc
        preexec_fn=_limited(1024),
        timeout=300,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # no progress line: nothing was analysed
    assert "cannot write selectivity.json there" in lines[0] and "nothing was measured" in lines[0]
    assert not list(tmp_path.rglob("selectivity.json")) and not list(tmp_path.rglob(".selec*"))


@pytest.mark.slow
def test_a_full_disk_at_the_write_is_one_line(tmp_path):
    """The probe fits, the result does not: the write's OSError is one line, no traceback."""
    path = write_known_corpus(tmp_path)
    args = ["selectivity", str(path), "--views", "1", "--view-set", "identity", "--jobs", "1"]
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},  # no truncated .pyc
        preexec_fn=_limited(6000),  # the 4 kB probe fits; the result (about 20 kB) does not
        timeout=600,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(error) == 1 and "cannot write the result" in error[0], result.stderr
    assert not list(tmp_path.rglob("selectivity.json"))


def test_a_fifo_in_place_of_selectivity_json_is_refused_without_blocking(tmp_path):
    from pipeline.selectivity import SelectivityError

    path = _stored_result(tmp_path / "speaker-n2-k1")
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(SelectivityError, match="is a FIFO, not a regular file"):
        load_result(path.parent)


def test_a_view_set_folder_out_of_its_cache_root_is_refused_before_any_write(tmp_path):
    """The folder is checked to be the view set's own (pipeline.viewset.cache_folder_problem)
    before anything, the writability probe included, is written there: with writes failing
    (RLIMIT_FSIZE), the refusal is the folder's, not the probe's."""
    import shutil

    path = write_known_corpus(tmp_path)
    own = tmp_path / "cache" / "known" / view_folder("identity")
    elsewhere = tmp_path / "elsewhere" / own.name
    elsewhere.parent.mkdir()
    shutil.move(own, elsewhere)
    own.symlink_to(elsewhere, target_is_directory=True)  # resolves out of the cache root
    before = sorted(p.name for p in elsewhere.iterdir())
    args = ["selectivity", str(path), "--views", "1", "--view-set", "identity", "--jobs", "1"]
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        preexec_fn=_limited(1024),
        timeout=300,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "the folder this toolkit gives it" in lines[0], result.stderr
    assert sorted(p.name for p in elsewhere.iterdir()) == before


def test_one_row_walk_feeds_the_text_markdown_and_html_tables():
    from pipeline.selectivity import Selectivity, format_table, markdown_table, table_rows

    rows = [
        *_rows("speaker", "envelope", 0.8523, 0.40, 0.30),
        *_rows("emotion", "f0_contour", 0.90, 0.85, 0.80)[1:],  # no other-label row
        Row("emotion", "level", "views", 0.5, (0.4, 0.6), 0.5, 100),  # no originals: left out
    ]
    result = Selectivity("k", "speaker", tuple(rows), ("v",), None, None, 100, 2, 0)
    walked = [(r.label, r.features) for r in table_rows(result)]
    assert walked == [
        ("speaker", OTHER_LABEL),
        ("speaker", "envelope"),
        ("emotion", "f0_contour"),
    ]
    envelope = table_rows(result)[1]
    # 85.23 % with the interval 80.23-90.23 %, as each table writes it.
    assert envelope.score("originals", "markdown") == "85.2 [80.2, 90.2]"
    assert envelope.score("originals", "html") == "85.2 [80.2\u201390.2]"
    assert envelope.score("originals", "text") == " 85.2 [80.2- 90.2]"
    assert table_rows(result)[0].score("views", "html") == ""
    body = markdown_table(result).splitlines()[2:]
    text = format_table(result)[2:-1]
    assert [line.split(" | ")[:2] for line in body] == [[f"| {a}", b] for a, b in walked]
    assert [line.split()[0] for line in text] == [a for a, _ in walked]
    assert "85.2 [80.2, 90.2]" in body[1] and "0.25 / 0.08" in body[1]
