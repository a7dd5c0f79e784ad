"""The view-set contract (pipeline/viewset.py): keys, the F0 range, shard attributes.

The keys pinned here were computed by the code before the F0 range became an option
(``pipeline/prep.py`` at commit d4624f8): a view set made with WORLD's default range must
keep its key, folder and shard bytes.
"""

from __future__ import annotations

import pytest

from pipeline.manifest import ManifestError, ViewSet
from pipeline.viewset import ShardAttributes, view_set_key

OLD = dict(
    dataset="d",
    kind="speaker",
    views=5,
    seed=1,
    params={"a": 1.5},
    f0_method="harvest",
    shard_size=64,
    clip_ids=["x", "y"],
    sample_rate=16000,
    code_version="1",
)


def test_default_f0_range_keeps_the_keys_of_existing_view_sets():
    assert view_set_key(**OLD) == "a92b23cb24"
    assert view_set_key(**OLD, f0_floor_hz=71.0, f0_ceil_hz=800.0) == "a92b23cb24"
    other = dict(OLD, kind="emotion", views=3, seed=7, params={"num_bands": 40})
    other.update(f0_method="dio", shard_size=8, clip_ids=["a"])
    assert view_set_key(**other) == "fab120b5a3"


def test_f0_range_is_part_of_the_key():
    keys = {
        view_set_key(**OLD),
        view_set_key(**OLD, f0_ceil_hz=2000.0),
        view_set_key(**OLD, f0_ceil_hz=1999.0),
        view_set_key(**OLD, f0_floor_hz=60.0),
        view_set_key(**OLD, f0_floor_hz=60.0, f0_ceil_hz=2000.0),
    }
    assert len(keys) == 5


def _view_set(**changes) -> ViewSet:
    base = dict(
        kind="speaker", views=2, seed=5, params={"formant_ratio_max": 1.4}, key="abc",
        folder="../cache/demo/speaker-n2-abc", num_shards=3, shard_size=4, code_version="1",
    )  # fmt: skip
    return ViewSet(**{**base, **changes})


def test_shard_attributes_of_the_default_range_are_those_written_before():
    # The attribute dict (and its order) that pipeline/prep.py wrote at commit d4624f8.
    old = {
        "kind": "speaker", "views": 2, "seed": 5, "key": "abc",
        "params": {"formant_ratio_max": 1.4}, "f0_method": "harvest", "code_version": "1",
        "dataset": "demo", "shard_index": 2,
    }  # fmt: skip
    attrs = ShardAttributes.for_shard(_view_set(), "demo", 2).to_dict()
    assert list(attrs.items()) == list(old.items())
    wide = ShardAttributes.for_shard(_view_set(f0_ceil_hz=2000.0), "demo", 2).to_dict()
    assert wide == {**old, "f0_floor_hz": 71.0, "f0_ceil_hz": 2000.0}


def test_shard_attribute_mismatches_are_named():
    vs = _view_set(f0_ceil_hz=2000.0)
    expected = ShardAttributes.for_shard(vs, "demo", 1)
    assert ShardAttributes.from_dict(expected.to_dict()).mismatches(expected) == []
    # A shard written with the default range where the view set records 2 kHz.
    default_range = ShardAttributes.for_shard(_view_set(), "demo", 1).to_dict()
    found = ShardAttributes.from_dict(default_range).mismatches(expected)
    assert any(m.startswith("attribute f0_ceil_hz=None") for m in found)
    moved = ShardAttributes.from_dict({**expected.to_dict(), "shard_index": 0})
    assert moved.mismatches(expected) == ["attribute shard_index=0 but the view set says 1"]
    # A shard from write_view_set records only the five required fields: nothing to compare.
    external = ShardAttributes(vs.kind, vs.views, vs.seed, vs.key, dict(vs.params))
    assert ShardAttributes.from_dict(external.to_dict()).mismatches(expected) == []
    assert ShardAttributes.from_dict({}).mismatches(expected)[0].startswith("attribute kind=None")


def test_manifest_records_the_f0_range_and_reads_old_view_sets():
    vs = _view_set(f0_floor_hz=60.0, f0_ceil_hz=2000.0)
    data = vs.to_dict()
    assert (data["f0_floor_hz"], data["f0_ceil_hz"]) == (60.0, 2000.0)
    assert ViewSet.from_dict(data) == vs
    old = {k: v for k, v in data.items() if k not in ("f0_floor_hz", "f0_ceil_hz")}
    loaded = ViewSet.from_dict(old)
    assert (loaded.f0_floor_hz, loaded.f0_ceil_hz) == (71.0, 800.0)  # WORLD's defaults
    with pytest.raises(ManifestError, match=r"f0_floor_hz 900\.0 must be below f0_ceil_hz"):
        ViewSet.from_dict({**data, "f0_floor_hz": 900.0, "f0_ceil_hz": 800.0})
    with pytest.raises(ManifestError, match="'f0_ceil_hz' must be a frequency"):
        ViewSet.from_dict({**data, "f0_ceil_hz": "high"})
