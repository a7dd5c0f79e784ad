"""The F0 range of the WORLD analysis on synthetic 1.2 and 1.5 kHz "screams".

WORLD's own ceiling (800 Hz, the toolkit's default until it became 2000 Hz) analyses such a
clip as unvoiced: p_s then cannot scale its F0 and p_e cannot flatten it. With the ceiling at
2000 Hz (the default, ``--f0-ceil``) both work. F0 is measured here by a normalised
autocorrelation tracker written for this test, or taken from the synthesis contour, both
independent of WORLD (whose analysis is what the option configures). An old cache made under
800 Hz is neither reused by the new default nor lost (the last tests).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.manifest import (
    DEFAULT_F0_CEIL_HZ,
    DEFAULT_F0_FLOOR_HZ,
    Manifest,
    ManifestError,
    migrate,
)
from pipeline.perturb import (
    EmotionParams,
    SpeakerParams,
    analyse,
    emotion_view,
    flatten_pitch,
    speaker_view,
)
from pipeline.qa import validate
from pipeline.rng import make_rng
from pipeline.shards import ShardReader
from pipeline.testing import signals
from pipeline.testing.prep_corpus import (
    NAME,
    SCREAM_CLIPS,
    SCREAMS,
    make_corpus,
    make_scream_corpus,
    tree_digest,
)
from pipeline.testing.signals import SAMPLE_RATE
from pipeline.viewset import source_digest, view_set_key

SCREAM_F0_HZ = 1200.0
VIBRATO = 0.06  # +-6 % at 5 Hz: a contour for p_e to flatten
NO_EQ = SpeakerParams(eq_gain_db=0.0)  # the EQ is not what is measured here
NO_PERMUTATION = EmotionParams(num_permuted_bands=0)


@pytest.fixture(scope="module")
def scream() -> np.ndarray:
    return signals.scream(SCREAM_F0_HZ, VIBRATO)


@pytest.fixture(scope="module")
def analyses(scream) -> dict[float, object]:
    """The scream analysed with WORLD's own ceiling (800 Hz) and with the default 2 kHz."""
    return {ceiling: analyse(scream, f0_ceil_hz=ceiling) for ceiling in (800.0, 2000.0)}


def track_f0(x: np.ndarray, lo_hz: float = 300.0, hi_hz: float = 3000.0) -> np.ndarray:
    """F0 (Hz) every 10 ms from 40 ms frames: the shortest lag whose normalised
    autocorrelation peak reaches 0.9 of the best one, refined by a parabola."""
    x = np.asarray(x, dtype=np.float64)
    n, hop = int(0.04 * SAMPLE_RATE), int(0.01 * SAMPLE_RATE)
    lags = np.arange(int(SAMPLE_RATE / hi_hz), int(np.ceil(SAMPLE_RATE / lo_hz)) + 1)
    out = []
    for start in range(0, x.size - n - lags[-1], hop):
        a = x[start : start + n]
        shifted = np.stack([x[start + lag : start + lag + n] for lag in lags])
        r = shifted @ a / np.sqrt(np.sum(shifted**2, axis=1) * np.dot(a, a) + 1e-20)
        peaks = [i for i in range(1, r.size - 1) if r[i - 1] <= r[i] >= r[i + 1]]
        best = max(r[i] for i in peaks)
        k = next(i for i in peaks if r[i] >= 0.9 * best)
        offset = 0.5 * (r[k - 1] - r[k + 1]) / (r[k - 1] - 2.0 * r[k] + r[k + 1])
        out.append(SAMPLE_RATE / (lags[k] + offset))
    return np.array(out)[5:-5]  # away from the fades


def test_the_tracker_finds_the_scream_and_its_vibrato(scream):
    f0 = track_f0(scream)
    assert np.median(f0) == pytest.approx(SCREAM_F0_HZ, rel=0.01)
    # A sine vibrato of +-6 % has a standard deviation of 6 % / sqrt(2).
    assert f0.std() / SCREAM_F0_HZ == pytest.approx(VIBRATO / np.sqrt(2), rel=0.15)


def test_worlds_800_hz_ceiling_misses_the_scream(scream, analyses):
    analysis = analyses[800.0]
    assert analysis.voiced.mean() < 0.05
    # p_e's flattening therefore leaves the vibrato in place.
    flat = track_f0(flatten_pitch(analysis))
    assert flat.std() > 0.8 * track_f0(scream).std()


@pytest.mark.parametrize("view_index", [1, 2, 3, 4])
def test_raised_ceiling_lets_p_s_scale_the_scream(scream, analyses, view_index):
    analysis = analyses[2000.0]
    assert analysis.voiced.mean() > 0.9
    view, drawn = speaker_view(analysis, make_rng(1, "speaker", "scream", view_index), NO_EQ)
    assert drawn["f0_shifted"] is True
    # p_s keeps shifted F0 at or below f0_max_hz (2 kHz by default).
    expected = min(drawn["pitch_ratio"] * np.median(track_f0(scream)), NO_EQ.f0_max_hz)
    assert abs(drawn["pitch_ratio"] - 1.0) > 0.05  # a shift the tracker can see
    assert np.median(track_f0(view)) == pytest.approx(expected, rel=0.03)


def relative_iqr(f0: np.ndarray) -> float:
    """Interquartile range over median: a spread that ignores the tracker's octave jumps."""
    q25, q50, q75 = np.percentile(f0, [25, 50, 75])
    return float((q75 - q25) / q50)


def test_raised_ceiling_lets_p_e_flatten_the_scream(scream, analyses):
    source = track_f0(scream)
    flat = flatten_pitch(analyses[2000.0])
    view, _ = emotion_view(flat, make_rng(1, "emotion", "s", 1), NO_PERMUTATION)
    f0 = track_f0(view)
    assert np.median(f0) == pytest.approx(np.mean(source), rel=0.02)  # at the mean F0
    assert f0.std() < 0.1 * source.std()


def test_band_permuted_views_of_the_scream_are_flat_only_with_the_raised_ceiling(scream, analyses):
    # Moving bands shifts harmonics, so the periodicity of a view is ambiguous (the tracker
    # jumps between candidates on some frames); the median over 12 views of the robust
    # spread still separates a flattened contour from a vibrato left in place.
    source = relative_iqr(track_f0(scream))
    spread = {}
    for ceiling in (800.0, 2000.0):
        flat = flatten_pitch(analyses[ceiling])
        views = [emotion_view(flat, make_rng(1, "emotion", "s", i))[0] for i in range(1, 13)]
        spread[ceiling] = np.median([relative_iqr(track_f0(v)) for v in views]) / source
    assert spread[2000.0] < 0.1
    assert spread[800.0] > 0.5


def test_perturb_command_records_the_f0_range(tmp_path):
    path = make_corpus(tmp_path)
    args = ["perturb", "--dataset", NAME, "--kind", "speaker", "--views", "1"]
    args += ["--shard-size", "8", "--f0-ceil", "2000", "--f0-floor", "60", "--no-progress"]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        bad = CliRunner().invoke(main, [*args[:-5], "--f0-floor", "900", "--f0-ceil", "800"])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    assert bad.exit_code == 1 and "--f0-floor < --f0-ceil" in bad.output
    manifest = Manifest.load(path)
    (vs,) = manifest.view_sets
    raw = json.loads(path.read_text())["view_sets"][0]
    assert (raw["f0_floor_hz"], raw["f0_ceil_hz"]) == (60.0, 2000.0)
    default_key = view_set_key(
        NAME, "speaker", 1, 42, vs.params, "harvest", 8, [c.id for c in manifest.clips]
    )
    assert vs.key != default_key
    attrs = ShardReader(vs.shard_paths(path)[0]).attrs
    assert (attrs["f0_floor_hz"], attrs["f0_ceil_hz"]) == (60.0, 2000.0)
    assert validate(path).ok


# ------------------------------------------- the F0 floor WORLD can take (issue 22, section 3)


def test_the_fft_size_formula_is_pyworlds_and_the_limit_follows_from_it():
    from pipeline.perturb import _world, cheaptrick_fft_size, max_f0_floor_hz

    pyworld = _world()
    for rate in (8000, 16000, 22050, 44100):
        for floor in np.geomspace(20.0, rate / 2 - 1, 200):
            assert cheaptrick_fft_size(rate, floor) == pyworld.get_cheaptrick_fft_size(
                rate, float(floor)
            ), (rate, floor)
        highest = max_f0_floor_hz(rate)
        # the FFT at the limit holds a 500 Hz window (3 fs / (fft - 3) <= 500); just above,
        # it does not
        fft = cheaptrick_fft_size(rate, highest)
        assert 3 * rate / (fft - 3) <= 500.0
        above = cheaptrick_fft_size(rate, highest * 1.0001)
        assert 3 * rate / (above - 3) > 500.0
    assert round(max_f0_floor_hz(16000), 1) == 761.9


_ANALYSE = """
import sys
import numpy as np
from pipeline.perturb import PerturbationError, analyse
x = 0.3 * np.random.default_rng(0).standard_normal(8000)
for floor in sys.argv[1:]:
    try:
        analyse(x, 16000, "dio", f0_floor_hz=float(floor), f0_ceil_hz=4000.0)
        print(floor, "analysed")
    except PerturbationError as e:
        print(floor, "refused:", e)
"""


def test_analyse_refuses_a_floor_that_would_corrupt_the_heap():
    """In a subprocess: on the old code pyworld's CheapTrick kills the process."""
    import subprocess
    import sys

    floors = ["761", "762", "1500", "3999"]
    result = subprocess.run(
        [sys.executable, "-c", _ANALYSE, *floors], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "761 analysed"
    for line, floor in zip(lines[1:], floors[1:], strict=True):
        assert line.startswith(f"{floor} refused: f0_floor_hz: an F0 floor of {floor} Hz is above")
        assert "above 761.9 Hz" in line


# ---------------------------- the default F0 range on a corpus, and old caches (issue 21)

FRAME_S = 0.005  # WORLD's frame period in the toolkit's analysis


def _perturb(root, *extra: str, dataset: str = SCREAMS):
    """``ncore-prep perturb`` through click, with no F0 option unless ``extra`` gives one."""
    args = ["perturb", "--dataset", dataset, "--views", "2", "--shard-size", "8"]
    args += ["--workers", "1", "--no-progress", "--cache-dir", str(root / "cache")]
    args += ["--manifest-dir", str(root / "manifests"), *extra]
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _clips(manifest_path, view_set):
    """``{clip id: (stored rows (1 + N, samples), drawn records)}`` of a view set."""
    out = {}
    for shard in view_set.shard_paths(manifest_path):
        reader = ShardReader(shard)
        for i, cid in enumerate(reader.clip_ids):
            out[cid] = (reader.read_clip(i), reader.drawn(i))
    return out


def test_perturb_with_no_f0_option_tracks_a_1500_hz_scream(tmp_path):
    path = make_scream_corpus(tmp_path)
    result = _perturb(tmp_path, "--kind", "both")
    assert result.exit_code == 0, result.output
    manifest = Manifest.load(path)
    speaker, emotion = (manifest.view_set(k) for k in ("speaker", "emotion"))
    for vs in (speaker, emotion):  # the range is recorded, and so in the key
        assert (
            (vs.f0_floor_hz, vs.f0_ceil_hz)
            == (DEFAULT_F0_FLOOR_HZ, DEFAULT_F0_CEIL_HZ)
            == (
                71.0,
                2000.0,
            )
        )
    assert validate(path).ok
    stored = _clips(path, speaker)
    flattened = _clips(path, emotion)
    assert sorted(stored) == sorted(f"wav__{stem}" for stem in SCREAM_CLIPS)
    for cid, (rows, drawn) in stored.items():
        f0_hz, vibrato = SCREAM_CLIPS[cid.removeprefix("wav__")]
        truth = signals.scream_f0(f0_hz, vibrato)  # the synthesis contour, per sample
        # The analysis the views were drawn from, redone with the view set's recorded
        # settings on the stored original (row 0), frame by frame against the contour.
        analysis = analyse(
            rows[0].astype(np.float64),
            f0_method=speaker.f0_method,
            f0_floor_hz=speaker.f0_floor_hz,
            f0_ceil_hz=speaker.f0_ceil_hz,
        )
        frames = np.arange(analysis.f0.size)
        inner = (frames * FRAME_S > 0.05) & (frames * FRAME_S < 0.95)  # away from the fades
        expected = truth[np.minimum(frames * round(FRAME_S * SAMPLE_RATE), truth.size - 1)]
        close = np.abs(analysis.f0 / expected - 1.0) < 0.03
        assert close[inner].mean() > 0.8, (cid, close[inner].mean())
        for record in drawn:  # what each p_s view recorded of that analysis
            assert record["f0_shifted"] is True
            assert record["voiced_frames"] > 0.8 * analysis.f0.size
            assert record["f0_median_hz"] == pytest.approx(f0_hz, rel=0.03)
        for view, record in zip(rows[1:], drawn, strict=True):  # and what p_s did with it
            want = min(record["pitch_ratio"] * f0_hz, SpeakerParams().f0_max_hz)
            assert np.median(track_f0(view)) == pytest.approx(want, rel=0.03), (cid, record)
        if vibrato:  # p_e flattened the vibrato (view 0 keeps it)
            assert relative_iqr(track_f0(rows[0])) > 0.02
            for view in flattened[cid][0][1:]:
                assert relative_iqr(track_f0(view)) < 0.25 * relative_iqr(track_f0(rows[0]))


def test_the_800_hz_ceiling_of_old_view_sets_misses_the_same_scream(tmp_path):
    path = make_scream_corpus(tmp_path)
    result = _perturb(tmp_path, "--kind", "speaker", "--f0-ceil", "800")
    assert result.exit_code == 0, result.output
    vs = Manifest.load(path).view_set("speaker")
    for _rows, drawn in _clips(path, vs).values():
        assert all(r["f0_shifted"] is False or r["voiced_frames"] < 20 for r in drawn), drawn


def _old_default_project(root):
    """A tiny corpus perturbed as ``ncore-prep perturb`` did by default before the ceiling
    became 2000 Hz (WORLD's 71-800 Hz), its manifest in the oldest form, without the range,
    then migrated (``ncore-prep migrate``)."""
    path = make_corpus(root)
    result = _perturb(root, "--kind", "speaker", "--f0-ceil", "800", dataset=NAME)
    assert result.exit_code == 0, result.output
    raw = json.loads(path.read_text())
    for record in raw["view_sets"]:
        del record["f0_floor_hz"], record["f0_ceil_hz"]
    path.write_text(json.dumps(raw, indent=2) + "\n")
    with pytest.raises(ManifestError, match=f"ncore-prep migrate {path}"):
        Manifest.load(path)  # refused until rewritten once
    assert migrate(path) == [record["key"] for record in raw["view_sets"]]
    manifest = Manifest.load(path)
    (old,) = manifest.view_sets
    ids = [c.id for c in manifest.clips]
    sources = source_digest(manifest)
    # the key the old default gave: no F0 range in it
    legacy = view_set_key(NAME, "speaker", 2, 42, old.params, "harvest", 8, ids, sources=sources)
    assert old.key == legacy
    return path, old


def test_new_default_writes_a_new_view_set_beside_an_old_one_and_says_so(tmp_path):
    path, old = _old_default_project(tmp_path)
    old_folder = old.folder_path(path)
    before = tree_digest(old_folder)
    result = _perturb(tmp_path, "--kind", "speaker", dataset=NAME)
    assert result.exit_code == 0, result.output
    manifest = Manifest.load(path)
    assert manifest.view_sets[0].key == old.key  # still listed, first
    (new,) = [vs for vs in manifest.view_sets if vs.key != old.key]
    assert (new.f0_floor_hz, new.f0_ceil_hz) == (71.0, 2000.0) and new.complete
    assert new.folder_path(path) != old_folder and new.folder_path(path).is_dir()
    assert tree_digest(old_folder) == before  # neither reused nor touched
    notes = [line for line in result.output.splitlines() if line.startswith("note:")]
    assert len(notes) == 1, result.output
    assert f"speaker-n2-{old.key}" in notes[0] and "71-800 Hz" in notes[0]
    assert "--f0-ceil 800" in notes[0] and "--f0-floor" not in notes[0]
    assert "--view-set" in notes[0]
    assert validate(path).ok  # the old view set still hashes to its key
    # The explicit option finds the old view set again: nothing to do, no note.
    again = _perturb(tmp_path, "--kind", "speaker", "--f0-ceil", "800", dataset=NAME)
    assert again.exit_code == 0 and again.output.startswith("nothing to do"), again.output
    (note,) = [line for line in again.output.splitlines() if line.startswith("note:")]
    assert f"speaker-n2-{new.key}" in note and "71-2000 Hz" in note and "--f0-ceil 2000" in note
    assert len(Manifest.load(path).view_sets) == 2


@pytest.mark.slow
def test_ncore_train_on_an_old_manifest_reads_the_view_set_it_names(tmp_path):
    from trainer.cli import main as train

    path, old = _old_default_project(tmp_path)
    args = ["--manifest", str(path), "--backbone", "tiny", "--seeds", "1", "--epochs", "1"]
    args += ["--lr", "1e-3", "--batch-size", "4", "--device", "cpu"]
    result = CliRunner().invoke(train, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["view_set"] == old.key
    assert f"view set {old.key}, F0 71-800 Hz" in result.output  # and says which
    # After a perturb under the new default, the old view set stays nameable.
    assert _perturb(tmp_path, "--kind", "speaker", dataset=NAME).exit_code == 0
    result = CliRunner().invoke(
        train, [*args, "--view-set", old.key, "--out", str(tmp_path / "named")]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "named" / "config.json").read_text())["view_set"] == old.key
    assert f"view set {old.key}, F0 71-800 Hz" in result.output


def test_the_commands_defaults_are_the_librarys():
    """``pipeline/cli.py`` spells the defaults out (its --help imports no numpy)."""
    import inspect

    from pipeline.prep import PerturbSettings

    options = {p.name: p.default for p in main.commands["perturb"].params}
    library = inspect.signature(analyse).parameters
    assert options["f0_floor_hz"] == library["f0_floor_hz"].default == DEFAULT_F0_FLOOR_HZ
    assert options["f0_ceil_hz"] == library["f0_ceil_hz"].default == DEFAULT_F0_CEIL_HZ
    assert (PerturbSettings().f0_floor_hz, PerturbSettings().f0_ceil_hz) == (71.0, 2000.0)


@pytest.mark.parametrize(("f0_hz", "voiced"), [(1320.0, True), (1345.0, False), (1500.0, False)])
def test_dio_is_unvoiced_above_a_twelfth_of_the_sample_rate(f0_hz, voiced):
    """StoneMask, which refines dio (and praat), unvoices F0 above 16 kHz / 12 = 1333 Hz:
    the documented reason to keep harvest for screams above it."""
    analysis = analyse(signals.scream(f0_hz, 0.0, 0.5), f0_method="dio")
    assert bool(analysis.voiced.mean() > 0.9) == voiced
    if voiced:
        assert np.median(analysis.f0[analysis.voiced]) == pytest.approx(f0_hz, rel=0.01)
