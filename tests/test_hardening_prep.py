"""Hardening (issue 13): ``perturb`` checks its sources and its parameters before any work.

Before the fix a source file replaced by other audio of the same length was perturbed
silently (the manifest held its SHA-256 but nobody compared it), and an out-of-range
parameter (``eq_low_shelf_hz=7999``, above the high shelf as clamped at 16 kHz) passed
the option check, failed every shard and left an empty, incomplete view set behind.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf

from pipeline.manifest import Manifest
from pipeline.prep import PerturbSettings, PrepError, fixed_executor, parse_params, run_perturb
from pipeline.testing.prep_corpus import GONE_ID, NAME, SHORT_ID, make_corpus

SETTINGS = PerturbSettings(kinds=("speaker",), views=1, shard_size=4, seed=5)


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
            path, SETTINGS, fixed_executor(pool), cache_dir=tmp_path / "cache", progress=False
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
