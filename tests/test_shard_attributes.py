"""A shard's Zarr attributes are read by one typed parser (pipeline/shards.py,
``parse_shard_attributes``): a wrong type or value in any attribute (``drawn[0] = 5``, a string
``formant_ratio``, a CRC-32 that is no 32-bit count) is one line naming the shard, the
attribute and the repair command, for every reader (training, inspect, the page, validate),
never a traceback and never garbage accepted. The shards are real ones written by
``ncore-prep perturb`` (both kinds); each test edits its own copy's attributes with zarr.
"""

from __future__ import annotations

import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import zarr
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.manifest import Manifest
from pipeline.prep import PerturbSettings, fixed_executor, run_perturb
from pipeline.shards import ShardDamaged, ShardError, ShardReader
from pipeline.testing.prep_corpus import NAME, make_corpus

SETTINGS = PerturbSettings(kinds=("speaker", "emotion"), views=2, shard_size=4, seed=5)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("attrs")
    path = make_corpus(root)
    with ThreadPoolExecutor(1) as pool:
        run_perturb(path, SETTINGS, fixed_executor(pool), cache_dir=root / "cache", progress=False)
    return root


@pytest.fixture
def copy(project, tmp_path) -> Path:
    for name in ("data", "manifests", "cache"):
        shutil.copytree(project / name, tmp_path / name)
    return tmp_path / "manifests" / f"{NAME}.json"


def first_shard(manifest_path: Path, kind: str) -> Path:
    vs = Manifest.load(manifest_path).view_set(kind)
    return vs.shard_paths(manifest_path)[0]


def edit_attrs(shard: Path, edit) -> None:
    group = zarr.open_group(shard, mode="r+", zarr_format=3)
    attrs = dict(group.attrs)
    edit(attrs)
    group.attrs.put(attrs)


def _drawn(i, v, name, value):
    def edit(attrs):
        attrs["drawn"][i][v][name] = value

    return edit


def _set(name, value):
    def edit(attrs):
        attrs[name] = value

    return edit


def _clip_drawn(i, value):
    def edit(attrs):
        attrs["drawn"][i] = value

    return edit


def _crc(i, value):
    def edit(attrs):
        attrs["clip_crc32"][i] = value

    return edit


# (kind, edit, words of the message)
DAMAGE = {
    "drawn[0] = 5": ("speaker", _clip_drawn(0, 5), "'drawn[0]' is not a list of 2 view"),
    "drawn[0] one view short": ("speaker", lambda a: a["drawn"][0].pop(), "'drawn[0]' is not"),
    "drawn not a list": ("speaker", _set("drawn", {"0": []}), "'drawn' does not hold one list"),
    "formant_ratio a string": (
        "speaker",
        _drawn(0, 0, "formant_ratio", "1.1"),
        "formant_ratio '1.1' is not a positive number",
    ),
    "pitch_ratio negative": ("speaker", _drawn(1, 1, "pitch_ratio", -2.0), "pitch_ratio -2.0"),
    "eq gains strings": (
        "speaker",
        _drawn(0, 0, "eq", {"frequencies_hz": [1], "qs": [1], "gains_db": ["x"]}),
        "eq does not hold lists of numbers",
    ),
    "silent a string": ("speaker", _drawn(0, 0, "silent", "no"), "silent 'no' is not true"),
    "bands of strings": (
        "emotion",
        _drawn(0, 0, "permuted_bands", ["<img src=x>"]),
        "two lists of band indices",
    ),
    "crc a string": ("speaker", _crc(0, "123"), "'clip_crc32' does not hold one CRC-32"),
    "crc negative": ("speaker", _crc(0, -1), "'clip_crc32' does not hold one CRC-32"),
    "crc beyond 32 bits": ("speaker", _crc(0, 2**40), "'clip_crc32' does not hold"),
    "kind unknown": ("speaker", _set("kind", "tempo"), "attribute 'kind' 'tempo'"),
    "views a string": ("speaker", _set("views", "2"), "attribute 'views' '2' is not a count"),
    "params a list": ("speaker", _set("params", []), "attribute 'params' is not an object"),
    "checksum a number": ("speaker", _set("checksum", 5), "attribute 'checksum' is not a con"),
    "checksum not sha256": ("emotion", _set("checksum", "md5:00"), "'checksum' is not a content"),
}


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_wrong_attributes_are_one_line_for_every_reader(copy, how):
    kind, edit, words = DAMAGE[how]
    shard = first_shard(copy, kind)
    ShardReader(shard, copy).drawn(0)  # as written: read back
    edit_attrs(shard, edit)
    for verify in (True, False):  # readers and validate open shards the same way
        with pytest.raises(ShardDamaged, match=re.escape(words)) as caught:
            ShardReader(shard, copy, verify=verify)
        line = str(caught.value)
        assert "\n" not in line and str(shard) in line and "validate --repair" in line
    # validate names it and exits 1; inspect --clip of a clip in it: one line, exit 1.
    result = CliRunner().invoke(main, ["validate", str(copy)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert words in result.output
    clip_id = str(zarr.open_group(shard, mode="r", zarr_format=3)["clip_ids"][0])
    out = copy.parent / "export"
    result = CliRunner().invoke(main, ["inspect", str(copy), "--clip", clip_id, "--out", str(out)])
    assert result.exit_code in (0, 1) and "Traceback" not in result.output, result.output
    assert words in result.output  # refused, or exported with the view set marked damaged


@pytest.mark.parametrize("version", [True, 1.0, "1", 2])
def test_a_shard_version_other_than_the_integer_is_refused(copy, version):
    shard = first_shard(copy, "speaker")
    edit_attrs(shard, _set("schema_version", version))
    with pytest.raises(ShardError, match=r"shard-00000\.zarr: shard schema_version .* not supp"):
        ShardReader(shard, copy)
