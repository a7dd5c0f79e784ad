"""Fixtures shared by several test files: real caches and runs, made once, copied per test.

- ``perturbed_project`` / ``project_copy``: the prep corpus (pipeline/testing/prep_corpus.py)
  with one speaker view set written by the real perturb stage (threads, 2 views, shards of 4);
  ``project_copy`` is a private copy of it for a test that damages or edits it, and returns
  the copy's manifest path. Used by test_qa.py and test_shards.py.
- ``two_kinds_copy``: the same with a speaker and an emotion view set (test_shards.py).
- ``trained_project`` / ``trained_copy``: a toy corpus in real Zarr shards and one finished
  tiny run ``runs/r`` (the real ``ncore-train``); the copy's run config names the copy's
  manifest. Used by test_rundir.py, test_checkpoint.py, test_config.py, test_trainer_cli.py.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.prep import PerturbSettings, fixed_executor, run_perturb
from pipeline.testing.prep_corpus import NAME, make_corpus
from pipeline.testing.toy import TOY_TRAIN_OPTIONS, write_trainer_corpus


def _perturbed(root: Path, kinds: tuple[str, ...]) -> Path:
    path = make_corpus(root)
    settings = PerturbSettings(kinds=kinds, views=2, shard_size=4, seed=5)
    with ThreadPoolExecutor(1) as pool:
        summary = run_perturb(
            path, settings, fixed_executor(pool), cache_dir=root / "cache", progress=False
        )
    assert not summary.errors
    return root


def _copy(project: Path, to: Path) -> Path:
    for name in ("data", "manifests", "cache"):
        shutil.copytree(project / name, to / name)
    return to / "manifests" / f"{NAME}.json"


@pytest.fixture(scope="session")
def perturbed_project(tmp_path_factory) -> Path:
    """Read only: tests that change anything use ``project_copy``."""
    return _perturbed(tmp_path_factory.mktemp("perturbed"), ("speaker",))


@pytest.fixture
def project_copy(perturbed_project, tmp_path) -> Path:
    """A private copy of ``perturbed_project``; returns its manifest path."""
    return _copy(perturbed_project, tmp_path)


@pytest.fixture(scope="session")
def _two_kinds_project(tmp_path_factory) -> Path:
    return _perturbed(tmp_path_factory.mktemp("two-kinds"), ("speaker", "emotion"))


@pytest.fixture
def two_kinds_copy(_two_kinds_project, tmp_path) -> Path:
    """A private copy of the project with a speaker and an emotion view set."""
    return _copy(_two_kinds_project, tmp_path)


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory) -> Path:
    """A toy corpus (``corpus/manifest.json``) and one finished run ``runs/r`` trained on it.
    Read only: tests that change anything use ``trained_copy``."""
    from trainer.cli import main

    root = tmp_path_factory.mktemp("trained")
    manifest = write_trainer_corpus(root / "corpus", n_clips=24, views=1, shard_size=8)
    result = CliRunner().invoke(
        main, ["--manifest", str(manifest), *TOY_TRAIN_OPTIONS, "--out", str(root / "runs" / "r")]
    )
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def trained_copy(trained_project, tmp_path) -> Path:
    """A private copy of ``trained_project`` (corpus and run); the run's config names the
    copy's manifest."""
    shutil.copytree(trained_project / "corpus", tmp_path / "corpus")
    shutil.copytree(trained_project / "runs", tmp_path / "runs")
    manifest = str(tmp_path / "corpus" / "manifest.json")
    run = tmp_path / "runs" / "r"
    for path in [run / "config.json", *run.rglob("state.json")]:
        data = json.loads(path.read_text())
        (data["config"] if "config" in data else data)["manifest"] = manifest
        path.write_text(json.dumps(data))
    return tmp_path
