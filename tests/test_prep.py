"""The perturbation stage: view-set keys, a real Dask cluster, failures, determinism, resume.

One tiny corpus (13 clips of 0.4 s, two of them broken) is built once. The reference run
goes through the command line against a Dask scheduler started here; the other runs (one
local worker, a run killed by SIGKILL and resumed) must give the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from pipeline.audio import load_audio
from pipeline.cli import main
from pipeline.manifest import Manifest, ManifestError, ManifestFile
from pipeline.perturb import PERTURB_VERSION, SpeakerParams
from pipeline.prep import (
    PerturbSettings,
    PrepError,
    choose_executor,
    dask_executor,
    fixed_executor,
    parse_params,
    run_perturb,
)
from pipeline.shards import INT16_SCALE, ShardReader
from pipeline.testing.prep_corpus import (
    GONE_ID,
    NAME,
    SHORT_ID,
    copy_project,
    make_corpus,
    restore_gone,
    tree_digest,
    view_sets_of,
)
from pipeline.viewset import view_set_key

VIEWS = 2
SHARD_SIZE = 2
SETTINGS = PerturbSettings(views=VIEWS, shard_size=SHARD_SIZE, seed=7)
CLI_ARGS = ["--dataset", NAME, "--views", str(VIEWS), "--shard-size", str(SHARD_SIZE)]
CLI_ARGS += ["--seed", "7", "--no-progress"]
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Root of the pristine corpus (data + manifest, no views)."""
    root = tmp_path_factory.mktemp("corpus")
    make_corpus(root)
    return root


@pytest.fixture(scope="module")
def scheduler():
    """A Dask cluster of two worker processes started by the tests; yields its address."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture(scope="module")
def reference(corpus, scheduler, tmp_path_factory) -> Path:
    """An uninterrupted run through the CLI on the test's scheduler; returns its root."""
    root = tmp_path_factory.mktemp("reference")
    copy_project(corpus, root)
    result = _cli(root, [*CLI_ARGS, "--scheduler", scheduler])
    assert result.exit_code == 0, result.output
    return root


def _cli(root: Path, args: list[str]):
    runner = CliRunner()
    cwd = os.getcwd()
    os.chdir(root)  # default --cache-dir / --manifest-dir are relative to the working folder
    try:
        return runner.invoke(main, ["perturb", *args], catch_exceptions=False)
    finally:
        os.chdir(cwd)


def _manifest(root: Path) -> Path:
    return root / "manifests" / f"{NAME}.json"


# --------------------------------------------------------------------------- keys and settings


def test_view_set_key_covers_every_setting():
    base = dict(
        dataset="d",
        kind="speaker",
        views=5,
        seed=1,
        params=SpeakerParams().to_dict(),
        f0_method="harvest",
        shard_size=256,
        clip_ids=["a", "b"],
        sample_rate=16000,
        code_version=PERTURB_VERSION,
    )
    key = view_set_key(**base)
    assert key == view_set_key(**dict(base))  # stable: a pure function of its inputs
    assert len(key) == 10 and int(key, 16) >= 0
    changes = {
        "dataset": "e",
        "kind": "emotion",
        "views": 4,
        "seed": 2,
        "params": {**SpeakerParams().to_dict(), "formant_ratio_max": 1.3},
        "f0_method": "dio",
        "shard_size": 128,
        "clip_ids": ["b", "a"],
        "sample_rate": 8000,
        "code_version": PERTURB_VERSION + "x",
    }
    keys = {name: view_set_key(**{**base, name: value}) for name, value in changes.items()}
    assert key not in keys.values()
    assert len(set(keys.values())) == len(keys)


def test_parse_params_applies_values_and_names_unknown_ones():
    params = parse_params("speaker", ["formant_ratio_max=1.2", "eq-num-peaking=4"])
    assert params.formant_ratio_max == 1.2 and params.eq_num_peaking == 4
    assert params.pitch_ratio_max == SpeakerParams().pitch_ratio_max
    with pytest.raises(PrepError, match=r"unknown parameter 'nope'.*formant_ratio_max"):
        parse_params("speaker", ["nope=1"])
    with pytest.raises(PrepError, match="NAME=VALUE"):
        parse_params("emotion", ["num_bands"])
    with pytest.raises(PrepError):
        parse_params("emotion", ["num_bands=many"])


def test_settings_reject_bad_values():
    for bad in (dict(views=0), dict(shard_size=0), dict(kinds=("pitch",)), dict(f0_method="x")):
        with pytest.raises(PrepError):
            PerturbSettings(**bad)


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_reference_run_stores_every_clip_or_its_failure(reference):
    path = _manifest(reference)
    manifest = Manifest.load(path)
    ids = [c.id for c in manifest.clips]
    assert len(manifest.view_sets) == 2
    for vs in manifest.view_sets:
        assert vs.complete and vs.num_shards == -(-len(ids) // SHARD_SIZE)
        failed = {f.id: f.reason for f in vs.failures}
        assert set(failed) == {SHORT_ID, GONE_ID}
        assert "too short" in failed[SHORT_ID] and "missing file" in failed[GONE_ID]
        assert all(f.stage == "perturb" for f in vs.failures)
        stored: list[str] = []
        for shard_path, entry in zip(vs.shard_paths(path), vs.shards, strict=True):
            reader = ShardReader(shard_path)
            assert reader.num_views == 1 + VIEWS and len(reader) == entry.clips
            assert reader.attrs["key"] == vs.key and reader.attrs["kind"] == vs.kind
            stored.extend(reader.clip_ids)
            for i, cid in enumerate(reader.clip_ids):
                rows = reader.read_clip(i)
                clip = manifest.clip_by_id()[cid]
                assert rows.shape == (1 + VIEWS, clip.num_samples)
                source, _, _ = load_audio(manifest.data_path(path) / clip.path)
                # view 0 is the original, quantised to int16
                assert np.max(np.abs(rows[0] - source)) <= 1 / INT16_SCALE
                for v in range(1, 1 + VIEWS):
                    assert not np.array_equal(rows[v], rows[0])
                assert not np.array_equal(rows[1], rows[2])  # views are drawn independently
                assert len(reader.drawn(i)) == VIEWS
        # clips in = stored + failed, each clip exactly once, in manifest order
        assert sorted(stored + list(failed)) == sorted(ids)
        assert stored == [c for c in ids if c not in failed]
    # the last shard holds only the short clip: written empty, listed with 0 clips
    last = manifest.view_sets[0].shards[-1]
    assert last.clips == 0 and last.samples == 0


@pytest.mark.slow
def test_rerun_after_success_does_nothing(reference):
    before = tree_digest(reference / "cache")
    manifest_before = _manifest(reference).read_bytes()
    result = _cli(reference, [*CLI_ARGS, "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "nothing to do" in result.output
    assert tree_digest(reference / "cache") == before
    assert _manifest(reference).read_bytes() == manifest_before


@pytest.mark.slow
def test_a_run_with_nothing_to_do_imports_no_heavy_module(reference):
    # What makes a no-op cheap (README: its CPU cost): the parent plans from the manifest
    # alone; zarr, scipy.signal and pyworld are imported by the workers only.
    code = (
        "import sys\n"
        "from pipeline.cli import main\n"
        f"main({['perturb', *CLI_ARGS]!r}, standalone_mode=False)\n"
        "print(sorted(m for m in ('zarr', 'scipy.signal', 'pyworld') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=reference, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "nothing to do" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_one_worker_gives_the_same_bytes_and_full_speed_malloc(corpus, reference, tmp_path):
    path = copy_project(corpus, tmp_path)
    with dask_executor(workers=1) as (executor, description):
        assert "1 worker" in description
        # the nanny must not start workers with MALLOC_TRIM_THRESHOLD_ (slows WORLD down)
        assert executor.submit(os.environ.get, "MALLOC_TRIM_THRESHOLD_").result() is None
        summary = run_perturb(
            path, SETTINGS, fixed_executor(executor), cache_dir=tmp_path / "cache", progress=False
        )
    assert summary.shards_run == 7 and not summary.errors
    assert summary.clips_stored == 11 and len(summary.failures) == 2
    assert tree_digest(tmp_path / "cache") == tree_digest(reference / "cache")
    assert view_sets_of(path) == view_sets_of(_manifest(reference))


@pytest.mark.slow
def test_process_pool_gives_the_same_bytes_as_dask(corpus, reference, tmp_path):
    # The reference ran on a Dask cluster; the local default for small corpora is a pool.
    path = copy_project(corpus, tmp_path)
    with choose_executor(path, "auto", workers=2) as (executor, description):
        assert "local pool of 2 worker" in description
        summary = run_perturb(
            path, SETTINGS, fixed_executor(executor), cache_dir=tmp_path / "cache", progress=False
        )
    assert summary.shards_run == 7 and not summary.errors
    assert tree_digest(tmp_path / "cache") == tree_digest(reference / "cache")
    assert view_sets_of(path) == view_sets_of(_manifest(reference))


def test_executor_choice_follows_the_corpus_size(corpus, tmp_path, monkeypatch):
    import pipeline.prep as prep

    path = copy_project(corpus, tmp_path)
    chosen = []
    monkeypatch.setattr(prep, "dask_executor", lambda *a: chosen.append("dask"))
    monkeypatch.setattr(prep, "process_executor", lambda *a: chosen.append("processes"))
    seconds = sum(c.num_samples for c in Manifest.load(path).clips) / 16000
    choose_executor(path, "auto")
    monkeypatch.setattr(prep, "DASK_ABOVE_AUDIO_S", seconds / 2)
    choose_executor(path, "auto")
    choose_executor(path, "auto", scheduler="tcp://somewhere:8786")
    choose_executor(path, "processes")
    assert chosen == ["processes", "dask", "dask", "processes"]
    with pytest.raises(PrepError, match="--scheduler needs --executor dask"):
        choose_executor(path, "processes", scheduler="tcp://somewhere:8786")


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_uninterrupted(corpus, reference, tmp_path):
    path = copy_project(corpus, tmp_path)
    cmd = [sys.executable, "-m", "pipeline.cli", "perturb", *CLI_ARGS, "--workers", "2"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    listed = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            listed = _listed_shards(path)
            if listed >= 1:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        proc.kill()
        output = proc.communicate()[0].decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, output
    assert 1 <= listed < 7, "the run must be killed part-way"
    # Its workers must not outlive it (they would finish shards behind the resumed run).
    deadline = time.monotonic() + 60
    while _processes_in(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _processes_in(tmp_path), "processes of the killed run are still running"
    listed = _listed_shards(path)  # the kill may land after a later save
    assert listed < 7, "killed too late to test resume"

    resumed = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    # only the unfinished shards were recomputed
    assert f"in {7 - listed} of 7 shards" in resumed.stdout
    assert tree_digest(tmp_path / "cache") == tree_digest(reference / "cache")
    assert view_sets_of(path) == view_sets_of(_manifest(reference))
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def _processes_in(folder: Path) -> list[int]:
    """Live processes whose working folder is ``folder`` (Linux /proc; [] elsewhere)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if os.readlink(entry / "cwd") == str(folder):
                found.append(int(entry.name))
        except OSError:  # gone, a zombie, or not ours
            continue
    return found


def _listed_shards(manifest_path: Path) -> int:
    """Shards listed by both view sets (the manifest is replaced atomically, so reads are whole)."""
    try:
        data = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError):
        return 0
    counts = [len(vs["shards"]) for vs in data.get("view_sets", [])]
    return min(counts) if len(counts) == 2 else 0


@pytest.mark.slow
def test_changed_parameter_makes_a_new_view_set_beside_the_old(reference, tmp_path):
    root = tmp_path / "p"
    path = copy_project(reference, root)
    shutil.copytree(reference / "cache", root / "cache")
    old_bytes = tree_digest(root / "cache")
    old_sets = view_sets_of(path)
    changed = PerturbSettings(
        kinds=("speaker",),
        views=VIEWS,
        shard_size=SHARD_SIZE,
        seed=7,
        speaker=SpeakerParams(formant_ratio_max=1.2),
    )
    with ThreadPoolExecutor(2) as pool:
        summary = run_perturb(
            path, changed, fixed_executor(pool), cache_dir=root / "cache", progress=False
        )
    new_sets = view_sets_of(path)
    assert new_sets[:2] == old_sets and len(new_sets) == 3
    assert new_sets[2]["key"] not in {vs["key"] for vs in old_sets}
    assert summary.view_sets[0].key == new_sets[2]["key"]
    after = tree_digest(root / "cache")
    assert {k: v for k, v in after.items() if k in old_bytes} == old_bytes
    assert any(k.startswith(f"{NAME}/speaker-n{VIEWS}-{new_sets[2]['key']}/") for k in after)


def test_second_run_on_a_locked_manifest_is_refused(corpus, tmp_path):
    path = copy_project(corpus, tmp_path)
    with ManifestFile(path, "perturb"):
        with pytest.raises(ManifestError, match="in use by `ncore-prep perturb`"):
            with ThreadPoolExecutor(1) as pool:
                run_perturb(path, SETTINGS, fixed_executor(pool), cache_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_cli_user_mistakes_are_one_line(corpus, tmp_path):
    runner = CliRunner()
    manifests = str(copy_project(corpus, tmp_path).parent)
    bad = [
        ["perturb", "--dataset", "nothere", "--manifest-dir", manifests],
        ["perturb", "--dataset", NAME, "--speaker-param", "bogus=1", "--manifest-dir", manifests],
        [
            "perturb",
            "--dataset",
            NAME,
            "--emotion-param",
            "num_bands=0",
            "--manifest-dir",
            manifests,
        ],
    ]
    for args in bad:
        result = runner.invoke(main, args)
        assert result.exit_code == 1, result.output
        assert result.output.startswith("Error: ") and result.output.count("\n") == 1
        assert "Traceback" not in result.output


def test_unreachable_scheduler_is_a_clear_error():
    unreachable = "tcp://127.0.0.1:9"  # the discard port: nothing listens there
    with pytest.raises(PrepError, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9"):
        with dask_executor(scheduler=unreachable, connect_timeout=1):
            pass


@pytest.mark.slow
def test_views_do_not_depend_on_which_kinds_share_the_analysis(corpus, reference, tmp_path):
    path = copy_project(corpus, tmp_path)
    with ThreadPoolExecutor(2) as pool:
        first = run_perturb(
            path,
            replace(SETTINGS, kinds=("speaker",)),
            fixed_executor(pool),
            cache_dir=tmp_path / "cache",
            progress=False,
        )
        second = run_perturb(
            path, SETTINGS, fixed_executor(pool), cache_dir=tmp_path / "cache", progress=False
        )
    assert first.shards_run == second.shards_run == 7
    # the second run found the speaker shards done and computed the emotion ones only
    assert second.views_written == first.views_written
    assert tree_digest(tmp_path / "cache") == tree_digest(reference / "cache")
    assert view_sets_of(path) == view_sets_of(_manifest(reference))


@pytest.mark.slow
def test_a_listed_shard_that_vanished_is_recomputed(reference, tmp_path):
    path = copy_project(reference, tmp_path)
    shutil.copytree(reference / "cache", tmp_path / "cache")
    vs = Manifest.load(path).view_sets[1]
    shutil.rmtree(vs.shard_paths(path)[3])
    with ThreadPoolExecutor(1) as pool:
        summary = run_perturb(
            path, SETTINGS, fixed_executor(pool), cache_dir=tmp_path / "cache", progress=False
        )
    assert summary.shards_run == 1 and summary.view_sets[1].complete
    assert tree_digest(tmp_path / "cache") == tree_digest(reference / "cache")
    assert view_sets_of(path) == view_sets_of(_manifest(reference))


def test_a_symlink_put_in_the_data_folder_after_import_is_not_followed(corpus, tmp_path):
    # Containment is checked on the resolved path when the worker reads the file.
    copy_project(corpus, tmp_path)
    manifest = Manifest.load(_manifest(tmp_path))
    victim = next(c for c in manifest.clips if c.id not in (GONE_ID, SHORT_ID))
    source = tmp_path / "data" / victim.path
    outside = tmp_path / "outside.wav"
    shutil.move(source, outside)
    source.symlink_to(outside)
    result = _cli(tmp_path, [*CLI_ARGS, "--executor", "processes", "--workers", "1"])
    assert result.exit_code == 0, result.output
    for vs in Manifest.load(_manifest(tmp_path)).view_sets:
        reasons = {f.id: f.reason for f in vs.failures}
        assert "escapes the data folder" in reasons[victim.id]


# ------------------------------------------------ failures tell the truth (issue 22, section 3)


def test_a_transient_failure_is_retried_when_the_file_is_back(corpus, tmp_path):
    path = copy_project(corpus, tmp_path)
    settings = PerturbSettings(kinds=("speaker",), views=1, shard_size=SHARD_SIZE, seed=7)

    def run():
        with ThreadPoolExecutor(1) as pool:
            return run_perturb(
                path, settings, fixed_executor(pool), cache_dir=tmp_path / "cache", progress=False
            )

    first = run()
    assert {f.id for f in first.failures} == {GONE_ID, SHORT_ID}
    assert run().nothing_to_do  # the file is still gone: nothing to retry
    restore_gone(path)
    third = run()
    assert third.shards_run == 1 and not third.failures  # only the shard holding it
    failed = {f.id for f in Manifest.load(path).view_sets[0].failures}
    assert failed == {SHORT_ID}  # a permanent failure (bad audio) stays recorded
    assert run().nothing_to_do


def test_a_run_where_every_clip_failed_exits_1(corpus, tmp_path):
    path = copy_project(corpus, tmp_path)
    for wav in (tmp_path / "data").rglob("*.wav"):
        wav.unlink()
    result = _cli(tmp_path, [*CLI_ARGS, "--kind", "speaker", "--executor", "processes"])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1].startswith("Error: every one of the 13 clip(s)")
    assert "missing file" in result.output.splitlines()[-1]
    # the data comes back: the next run computes every clip
    shutil.rmtree(tmp_path / "data")
    shutil.copytree(corpus / "data", tmp_path / "data")
    again = _cli(tmp_path, [*CLI_ARGS, "--kind", "speaker", "--executor", "processes"])
    assert again.exit_code == 0, again.output
    assert {f.id for f in Manifest.load(path).view_sets[0].failures} == {GONE_ID, SHORT_ID}


@pytest.mark.parametrize("floor", ["762", "1000", "3999"])
def test_an_f0_floor_beyond_cheaptrick_is_refused_before_any_work(corpus, tmp_path, floor):
    path = copy_project(corpus, tmp_path)
    before = path.read_bytes()
    args = [*CLI_ARGS, "--f0-floor", floor, "--f0-ceil", "4000", "--f0", "dio"]
    result = _cli(tmp_path, args)
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and "761.9 Hz" in result.output, result.output
    assert path.read_bytes() == before and not (tmp_path / "cache").exists()
    with pytest.raises(PrepError, match="F0 floor"):
        replace(SETTINGS, f0_floor_hz=float(floor), f0_ceil_hz=4000.0)
    assert replace(SETTINGS, f0_floor_hz=761.0, f0_ceil_hz=4000.0).f0_floor_hz == 761.0


def _wait_for_listed(proc: subprocess.Popen, path: Path, at_least: int) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        listed = _listed_shards(path)
        if listed >= at_least:
            return listed
        time.sleep(0.01)
    return _listed_shards(path)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("executor", "target"),
    [("processes", "the command"), ("processes", "its process group"), ("dask", "the command")],
)
def test_ctrl_c_stops_perturb_promptly_and_keeps_what_is_done(
    corpus, reference, tmp_path, executor, target
):
    path = copy_project(corpus, tmp_path)
    cmd = [sys.executable, "-m", "pipeline.cli", "perturb", *CLI_ARGS, "--workers", "1"]
    cmd += ["--executor", executor]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # A shell without job control starts background commands with SIGINT ignored, and
    # Python keeps an inherited SIG_IGN: give the command the disposition a terminal gives.
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        listed = _wait_for_listed(proc, path, 1)
        assert 1 <= listed < 6, "the run must be interrupted part-way"
        if target == "the command":
            proc.send_signal(signal.SIGINT)
        else:  # what a terminal's Ctrl-C does: every process of the group gets SIGINT
            os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, out.decode() + err.decode()
    lines = err.decode().strip().splitlines()
    assert lines[-1].startswith("Error: interrupted:"), lines
    assert "Traceback" not in err.decode()
    after = _listed_shards(path)
    assert listed <= after < 7, "queued shards ran after Ctrl-C"
    deadline = time.monotonic() + 60
    while _processes_in(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _processes_in(tmp_path), "workers of the interrupted run are still running"
    resumed = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert f"in {7 - after} of 7 shards" in resumed.stdout
    assert tree_digest(tmp_path / "cache") == tree_digest(reference / "cache")
    assert view_sets_of(path) == view_sets_of(_manifest(reference))


# ----- checks before any work (regressions of issue 13) ----------------------------------------
# Before the fix a source file replaced by other audio of the same length was perturbed
# silently (the manifest held its SHA-256 but nobody compared it), and an out-of-range
# parameter (``eq_low_shelf_hz=7999``, above the high shelf as clamped at 16 kHz) passed the
# option check, failed every shard and left an empty, incomplete view set behind.
ONE_VIEW = PerturbSettings(kinds=("speaker",), views=1, shard_size=4, seed=5)


def test_a_replaced_source_file_is_a_source_changed_failure(tmp_path):
    path = make_corpus(tmp_path)
    manifest = Manifest.load(path)
    victim = next(c for c in manifest.clips if c.id not in (GONE_ID, SHORT_ID))
    source = manifest.data_path(path) / victim.path
    audio, rate = sf.read(source)
    rng = np.random.default_rng(1)
    sf.write(source, 0.1 * rng.standard_normal(audio.shape[0]), rate)  # same length
    with ThreadPoolExecutor(1) as pool:
        summary = run_perturb(
            path, ONE_VIEW, fixed_executor(pool), cache_dir=tmp_path / "cache", progress=False
        )
    reasons = {f.id: f.reason for f in summary.failures}
    assert reasons[victim.id].startswith("source changed: the file's SHA-256 differs")
    vs = Manifest.load(path).view_sets[0]
    stored = sum(s.clips for s in vs.shards)
    # every other clip is stored; the gone and the short clip fail for their own reasons
    assert stored == len(manifest.clips) - 3 and len(vs.failures) == 3
    assert not reasons[GONE_ID].startswith("source changed")


@pytest.mark.parametrize(
    "assignment",
    ["eq_low_shelf_hz=7999", "eq_high_shelf_hz=50", "f0_max_hz=9000", "eq_gain_db=nan"],
)
def test_out_of_range_parameters_are_refused_before_any_work(tmp_path, assignment):
    with pytest.raises(PrepError):
        parse_params("speaker", [assignment])
    path = make_corpus(tmp_path)
    before = path.read_bytes()
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pipeline.cli", "perturb", "--dataset", NAME),
            *("--views", "1", "--kind", "speaker", "--speaker-param", assignment),
            *("--no-progress", "--manifest-dir", str(path.parent)),
            *("--cache-dir", str(tmp_path / "cache")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and assignment.split("=")[0] in result.stderr
    assert path.read_bytes() == before  # no empty view set recorded
    assert not (tmp_path / "cache").exists()  # nothing computed
