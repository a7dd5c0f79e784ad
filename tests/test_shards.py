"""pipeline/shards.py: what the writer refuses, and what every reader refuses.

- ``write_view_set`` refuses non-finite views (issue 22, section 5).
- A damaged shard never reaches a reader silently (a regression of issue 13: a deleted chunk
  read back as silence, flipped bytes and edited offsets decoded into wrong samples, a
  truncated chunk crashed the readers). Every read checks each clip's CRC-32 and stops with
  one line naming the shard and ``ncore-prep validate --repair``, which recomputes the shard
  from the source audio byte for byte.
- A shard's Zarr attributes are read by one typed parser (``parse_shard_attributes``): a wrong
  type or value in any attribute is one line naming the shard, the attribute and the repair
  command, for every reader (training, inspect, the page, validate).

The caches are real ones written by the perturb stage (tests/conftest.py: ``project_copy``,
``two_kinds_copy``); every test damages its own copy. Training, evaluation and embed on
damaged shards: tests/test_shards_e2e.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.manifest import Manifest
from pipeline.shards import (
    ShardClip,
    ShardDamaged,
    ShardError,
    ShardReader,
    open_view_set,
    write_view_set,
)
from pipeline.testing.damage import SHARD_DAMAGE


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_write_view_set_refuses_non_finite_views_and_writes_nothing(tmp_path, bad):
    good = np.full((2, 400), 0.1, dtype=np.float32)
    broken = good.copy()
    broken[1, 17] = bad
    clips = [ShardClip("a", good, [{}]), ShardClip("b", broken, [{}])]
    folder = tmp_path / "cache" / "speaker-n1-k"
    with pytest.raises(ShardError, match=r"^clip 'b': 1 NaN or infinite sample\(s\)"):
        write_view_set(
            folder, clips, manifest_path=tmp_path / "m.json", kind="speaker", views=1,
            seed=0, key="k", shard_size=1, code_version="test",
        )  # fmt: skip
    assert not folder.exists()


# ----- a damaged shard ------------------------------------------------------------------------
def _damaged_shard(project_copy: Path, damage) -> tuple[Path, list[str]]:
    vs = Manifest.load(project_copy).view_sets[0]
    shard = vs.shard_paths(project_copy)[1]
    ids = ShardReader(shard).clip_ids
    damage(shard)
    return shard, ids


@pytest.mark.parametrize("how", sorted(SHARD_DAMAGE))
def test_every_reader_refuses_a_damaged_shard_in_one_line(project_copy, how):
    shard, ids = _damaged_shard(project_copy, SHARD_DAMAGE[how])
    manifest = Manifest.load(project_copy)
    with pytest.raises(ShardDamaged) as info:
        _, readers = open_view_set(manifest, project_copy, "speaker")
        for reader in readers:
            for i in range(len(reader)):
                reader.read_clip(i, views=[0])  # even a subset of the rows is verified
    message = str(info.value)
    assert "\n" not in message
    assert str(shard) in message and f"ncore-prep validate --repair {project_copy}" in message
    # The other shards still read: only the damaged one is refused.
    vs = manifest.view_sets[0]
    for other in vs.shard_paths(project_copy):
        if other != shard:
            reader = ShardReader(other, project_copy)
            assert len(reader.read_range(0, len(reader))) == len(reader)
    # inspect of a damaged clip: one line, exit 1.
    try:
        damaged = ShardReader(shard, verify=False).clip_crc_mismatches()
    except Exception:  # undecodable: every clip of the shard
        damaged = ids
    assert damaged
    result = CliRunner().invoke(
        main,
        [
            "inspect",
            str(project_copy),
            "--clip",
            damaged[0],
            "--out",
            str(project_copy.parent / "x"),
        ],
    )
    assert result.exit_code == 1, result.output
    assert "damaged shard" in result.output and result.output.count("\n") == 1


# ----- the attributes of a shard ---------------------------------------------------------------
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
ATTRIBUTE_DAMAGE = {
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


@pytest.mark.parametrize("how", sorted(ATTRIBUTE_DAMAGE))
def test_wrong_attributes_are_one_line_for_every_reader(two_kinds_copy, how):
    kind, edit, words = ATTRIBUTE_DAMAGE[how]
    shard = first_shard(two_kinds_copy, kind)
    ShardReader(shard, two_kinds_copy).drawn(0)  # as written: read back
    edit_attrs(shard, edit)
    for verify in (True, False):  # readers and validate open shards the same way
        with pytest.raises(ShardDamaged, match=re.escape(words)) as caught:
            ShardReader(shard, two_kinds_copy, verify=verify)
        line = str(caught.value)
        assert "\n" not in line and str(shard) in line and "validate --repair" in line
    # validate names it and exits 1; inspect --clip of a clip in it: one line, exit 1.
    result = CliRunner().invoke(main, ["validate", str(two_kinds_copy)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert words in result.output
    clip_id = str(zarr.open_group(shard, mode="r", zarr_format=3)["clip_ids"][0])
    out = two_kinds_copy.parent / "export"
    result = CliRunner().invoke(
        main, ["inspect", str(two_kinds_copy), "--clip", clip_id, "--out", str(out)]
    )
    assert result.exit_code in (0, 1) and "Traceback" not in result.output, result.output
    assert words in result.output  # refused, or exported with the view set marked damaged


@pytest.mark.parametrize("version", [True, 1.0, "1", 2])
def test_a_shard_version_other_than_the_integer_is_refused(two_kinds_copy, version):
    shard = first_shard(two_kinds_copy, "speaker")
    edit_attrs(shard, _set("schema_version", version))
    with pytest.raises(ShardError, match=r"shard-00000\.zarr: shard schema_version .* not supp"):
        ShardReader(shard, two_kinds_copy)
