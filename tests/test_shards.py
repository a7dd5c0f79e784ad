"""``pipeline.shards.write_view_set``: what the public writer refuses (issue 22, section 5)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.shards import ShardClip, ShardError, write_view_set


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
