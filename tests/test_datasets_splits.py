"""Splits: stratified, seeded, never selecting on test by default, speaker-held-out."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.splits import SeedSplit, SplitError, SplitItem, assign_splits, seed_split


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


# ----- one split per training seed (pipeline.splits.seed_split) ------------------------------
def _entangled(n=300):
    """Clips whose speaker mostly follows the emotion (as in ReCANVo), 4 emotions x 6
    speakers, unequal class sizes."""
    rng = np.random.default_rng(3)
    items = []
    for i in range(n):
        emotion = int(rng.choice(4, p=[0.4, 0.3, 0.2, 0.1]))
        speaker = emotion if rng.random() < 0.7 else int(rng.integers(6))
        items.append(SplitItem(f"c{i:04d}", f"e{emotion}", f"s{speaker}"))
    return items


def _clips(n=300, protocol="default", seed=42, **kwargs):
    """Manifest-like clips carrying the split ``ncore-prep manifest`` would store."""
    items = _entangled(n)
    stored, info = assign_splits(items, seed, protocol, **kwargs)
    clips = [
        SimpleNamespace(id=i.id, emotion=i.emotion, speaker=i.speaker, split=stored[i.id])
        for i in items
    ]
    return clips, info


def test_every_seed_draws_its_own_split_and_a_seed_always_the_same():
    clips, info = _clips()
    a = seed_split(clips, info, 100, "emotion")
    again = seed_split(list(reversed(clips)), info, 100, "emotion")
    b = seed_split(clips, info, 510, "emotion")
    assert a == again and a.to_dict() == again.to_dict()
    assert set(a.test) != set(b.test)
    assert len(set(a.test) ^ set(b.test)) > 0.2 * len(a.test)  # not a one-clip difference
    for split in (a, b):
        assert sorted([*split.train, *split.val, *split.test]) == sorted(c.id for c in clips)
        assert split.selection_split == "val" and split.mode == "per-seed"
    # The manifest's own seed reproduces the stored split exactly (emotion task).
    same = seed_split(clips, info, info["seed"], "emotion")
    assert same.assignment() == {c.id: c.split for c in clips}


def test_split_is_stratified_on_the_tasks_label():
    # Speakers and emotions cross unevenly, so a split stratified on one label misses the
    # other's quotas.
    clips, info = _clips(n=307)
    for task, other in (("speaker", "emotion"), ("emotion", "speaker")):
        split = seed_split(clips, info, 7, task)
        assert split.stratify == task
        test = set(split.test)
        totals = Counter(getattr(c, task) for c in clips)
        in_test = Counter(getattr(c, task) for c in clips if c.id in test)
        for label, n in totals.items():  # exactly round(n * 0.2) of every class
            assert in_test[label] == round(n * 0.2), (task, label)
        other_totals = Counter(getattr(c, other) for c in clips)
        other_test = Counter(getattr(c, other) for c in clips if c.id in test)
        assert any(other_test[k] != round(n * 0.2) for k, n in other_totals.items())


def test_fixed_split_is_the_manifests_for_every_seed():
    clips, info = _clips()
    stored = {c.id: c.split for c in clips}
    for seed in (1, 2, 3):
        split = seed_split(clips, info, seed, "speaker", mode="fixed")
        assert split.assignment() == stored
        assert split.split_seed == 42 and split.stratify == "emotion"


def test_speaker_task_on_a_speaker_held_out_split_is_refused():
    clips, info = _clips(protocol="speaker-held-out")
    for mode in ("per-seed", "fixed"):
        with pytest.raises(SplitError, match="speaker task cannot be trained on a speaker-held"):
            seed_split(clips, info, 1, "speaker", mode=mode)
    plain, plain_info = _clips()
    with pytest.raises(SplitError, match="speaker task cannot"):
        seed_split(plain, plain_info, 1, "speaker", protocol="speaker-held-out")
    held = seed_split(clips, info, 1, "emotion")
    speakers = {c.speaker for c in clips if c.id in set(held.test)}
    assert speakers == set(held.test_speakers)
    assert not speakers & {c.speaker for c in clips if c.id in set(held.train)}


def test_selecting_on_test_needs_the_paper_protocol():
    clips, info = _clips(val_fraction=0.0)  # default protocol, no validation clip
    with pytest.raises(SplitError, match="pass --protocol paper"):
        seed_split(clips, info, 1, "emotion", mode="fixed")
    split = seed_split(clips, info, 1, "emotion", mode="fixed", protocol="paper")
    assert split.selection_split == "test" and split.protocol == "paper"
    paper, paper_info = _clips(protocol="paper")
    drawn = seed_split(paper, paper_info, 5, "emotion")  # the manifest's protocol: paper
    assert drawn.selection_split == "test" and not drawn.val
    honest = seed_split(paper, paper_info, 5, "emotion", protocol="default")
    assert honest.selection_split == "val" and abs(len(honest.val) - 30) <= 3


def test_split_record_round_trips_and_refuses_overlaps():
    clips, info = _clips()
    split = seed_split(clips, info, 9, "emotion")
    assert SeedSplit.from_dict(split.to_dict()) == split
    bad = split.to_dict()
    bad["val"] = [*bad["val"], bad["test"][0]]
    with pytest.raises(SplitError, match="two splits"):
        SeedSplit.from_dict(bad)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("test_fraction", "abc", "'test_fraction' must be a number"),
        ("val_fraction", 2.5, "'val_fraction' must lie in"),
        ("protocol", "nonsense", "'protocol' must be one of"),
        ("seed", 1.5, "'seed' must be an integer"),
    ],
)
def test_recorded_settings_are_typed_before_a_split_is_drawn(field, value, message):
    """seed_split reads the manifest's settings through SplitSettings: one SplitError
    naming the field (not a ValueError traceback from float("abc") or a KeyError)."""
    clips, info = _clips()
    info = {**info, field: value}
    for mode in ("per-seed", "fixed"):
        with pytest.raises(SplitError, match=message):
            seed_split(clips, info, 1, "emotion", mode=mode)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("test_fraction", "abc", "'test_fraction' must be a number"),
        ("seed", "9", "'seed' must be an integer"),
        ("train", [1, 2], "'train' must be a list of names"),
        ("mode", "sometimes", "'mode' must be one of"),
        ("stratify", None, "'stratify' must be one of"),
    ],
)
def test_split_record_fields_are_typed(field, value, message):
    clips, info = _clips()
    record = seed_split(clips, info, 9, "emotion").to_dict()
    record[field] = value
    with pytest.raises(SplitError, match=rf"split record: field {message}"):
        SeedSplit.from_dict(record)
    with pytest.raises(SplitError, match="must be an object"):
        SeedSplit.from_dict([])
