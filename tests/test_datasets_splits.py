"""Splits: stratified, seeded, never selecting on test by default, speaker-held-out."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.splits import SplitError, SplitItem, assign_splits


def _items(n=300, speakers=6):
    emotions = ["a"] * 5 + ["b"] * 3 + ["c"] * 2  # imbalanced classes
    return [SplitItem(f"c{i:04d}", emotions[i % 10], f"s{(i * 7) % speakers}") for i in range(n)]


def test_default_is_stratified_train_val_test():
    items = _items()
    split, info = assign_splits(items, seed=42)
    assert info["validation_split"] == "val" and info["protocol"] == "default"
    by_class = Counter((it.emotion, split[it.id]) for it in items)
    totals = Counter(it.emotion for it in items)
    for label, n in totals.items():
        assert abs(by_class[label, "test"] / n - 0.2) < 0.02
        assert abs(by_class[label, "val"] / n - 0.1) < 0.02
        assert by_class[label, "train"] > 0


def test_paper_protocol_has_no_val_and_selects_on_test():
    split, info = assign_splits(_items(), seed=42, protocol="paper")
    assert set(split.values()) == {"train", "test"}
    assert info["validation_split"] == "test"
    assert abs(Counter(split.values())["test"] / 300 - 0.2) < 0.02


def test_seeded_reproducible_and_order_free():
    items = _items()
    a, _ = assign_splits(items, seed=1)
    b, _ = assign_splits(list(reversed(items)), seed=1)
    c, _ = assign_splits(items, seed=2)
    assert a == b
    assert a != c


def test_speaker_held_out_keeps_test_speakers_out_of_training():
    items = _items()
    split, info = assign_splits(items, seed=3, protocol="speaker-held-out")
    test_speakers = set(info["test_speakers"])
    assert test_speakers
    for it in items:
        assert (split[it.id] == "test") == (it.speaker in test_speakers)
    assert {it.emotion for it in items if split[it.id] == "train"} == {"a", "b", "c"}
    assert Counter(split.values())["test"] >= 0.2 * len(items)
    _, info = assign_splits(items, 3, "speaker-held-out", test_speakers=["s1"])
    assert info["test_speakers"] == ["s1"]
    with pytest.raises(SplitError, match="'nobody' is not in the corpus"):
        assign_splits(items, 3, "speaker-held-out", test_speakers=["nobody"])
    with pytest.raises(SplitError, match="two speakers"):
        assign_splits(_items(30, speakers=1), 3, "speaker-held-out")


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    seed=st.integers(0, 10**6),
)
def test_every_clip_once_and_every_class_keeps_training_data(sizes, seed):
    items = [
        SplitItem(f"{k}-{i}", f"e{k}", f"s{i % 3}") for k, n in enumerate(sizes) for i in range(n)
    ]
    split, _ = assign_splits(items, seed)
    assert set(split) == {it.id for it in items}
    assert {it.emotion for it in items if split[it.id] == "train"} == {it.emotion for it in items}
    for k, n in enumerate(sizes):
        if n >= 2:
            assert any(split[f"{k}-{i}"] == "test" for i in range(n))
