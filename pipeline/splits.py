"""Seeded train / val / test splits, stratified on the task label (emotion).

Three protocols (DESIGN.md section 2):

- ``default``: stratified 80/20 train/test; a stratified validation part (10 % of all clips
  by default) is carved out of train for early stopping, so model selection never looks at
  test.
- ``paper``: the paper's one stratified 80/20 train/test split. The paper picks the best
  epoch on the test set; there is no separate validation part, and ``Manifest.split``
  records ``"validation_split": "test"`` so that the trainer selects on test exactly as the
  paper did (optimistic: report it as such).
- ``speaker-held-out``: whole speakers go to test (about 20 % of the clips), so test
  speakers are never seen in training; validation is stratified from the training speakers.
  The honest test of speaker invariance for the emotion task.

Every shuffle uses :func:`pipeline.rng.make_rng` seeded from (seed, protocol, purpose,
label), and items are sorted by id before shuffling, so the split depends only on the
seed and the clip ids and labels, never on the order in which files were listed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.rng import make_rng

PROTOCOLS = ("default", "paper", "speaker-held-out")


class SplitError(ValueError):
    """A split that cannot be made (e.g. one speaker only for speaker-held-out)."""


@dataclass(frozen=True)
class SplitItem:
    """What a split needs to know about a clip."""

    id: str
    emotion: str
    speaker: str


def _stratified(
    items: Sequence[SplitItem], fraction: float, rng_parts: tuple[object, ...]
) -> tuple[list[str], list[str]]:
    """Split ids into (rest, taken) with ``fraction`` of every emotion class in ``taken``.

    Per class, ``round(n * fraction)`` clips are taken, at least one when the class has two
    or more clips and never the last one, so every class keeps a clip in ``rest``.
    """
    by_class: dict[str, list[str]] = defaultdict(list)
    for item in items:
        by_class[item.emotion].append(item.id)
    rest, taken = [], []
    for label in sorted(by_class):
        ids = sorted(by_class[label])
        n = len(ids)
        k = round(n * fraction) if fraction > 0 else 0
        if fraction > 0 and n >= 2:
            k = min(max(k, 1), n - 1)
        else:
            k = 0
        order = make_rng(*rng_parts, label).permutation(n)
        taken.extend(ids[i] for i in order[:k])
        rest.extend(ids[i] for i in order[k:])
    return rest, taken


def assign_splits(
    items: Sequence[SplitItem],
    seed: int,
    protocol: str = "default",
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    test_speakers: Sequence[str] | None = None,
) -> tuple[dict[str, str], dict[str, Any]]:
    """Assign each clip id to "train", "val" or "test".

    ``test_fraction`` and ``val_fraction`` are shares of all clips. Returns the mapping and
    the description stored as ``Manifest.split`` (protocol, seed, fractions, stratification,
    ``validation_split`` naming the split used for model selection, test speakers).
    """
    if protocol not in PROTOCOLS:
        raise SplitError(f"unknown split protocol {protocol!r} (one of {', '.join(PROTOCOLS)})")
    if not 0.0 < test_fraction < 1.0 or not 0.0 <= val_fraction < 1.0 - test_fraction:
        raise SplitError("split fractions must satisfy 0 < test < 1 and 0 <= val < 1 - test")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise SplitError("split: clip ids must be unique")
    info: dict[str, Any] = {
        "protocol": protocol,
        "seed": seed,
        "stratify": "emotion",
        "test_fraction": test_fraction,
        "val_fraction": 0.0 if protocol == "paper" else val_fraction,
        "validation_split": "test" if protocol == "paper" else "val",
    }
    if protocol == "speaker-held-out":
        held = _pick_test_speakers(items, seed, test_fraction, test_speakers)
        test = [item.id for item in items if item.speaker in held]
        train_items = [item for item in items if item.speaker not in held]
        info["test_speakers"] = sorted(held)
    else:
        train_ids, test = _stratified(items, test_fraction, (seed, protocol, "test"))
        keep = set(train_ids)
        train_items = [item for item in items if item.id in keep]
    val: list[str] = []
    if protocol != "paper" and val_fraction > 0:
        # val_fraction is a share of all clips; carve it from train.
        share = val_fraction * len(items) / max(len(train_items), 1)
        _, val = _stratified(train_items, min(share, 0.5), (seed, protocol, "val"))
    assignment = {item_id: "train" for item_id in ids}
    assignment.update({i: "test" for i in test})
    assignment.update({i: "val" for i in val})
    return assignment, info


def _pick_test_speakers(
    items: Sequence[SplitItem],
    seed: int,
    test_fraction: float,
    requested: Sequence[str] | None,
) -> set[str]:
    """Speakers whose clips form the test set.

    Without ``requested``: speakers are taken in a seeded order until test holds at least
    ``test_fraction`` of the clips, skipping a speaker whose removal would leave some
    emotion with no training clip.
    """
    speakers = sorted({item.speaker for item in items})
    if requested:
        unknown = sorted(set(requested) - set(speakers))
        if unknown:
            raise SplitError(
                f"test speaker {unknown[0]!r} is not in the corpus "
                f"(speakers: {', '.join(speakers)})"
            )
        held = set(requested)
        if held == set(speakers):
            raise SplitError(
                "speaker-held-out: every speaker is a test speaker; none left to train"
            )
        return held
    if len(speakers) < 2:
        raise SplitError("speaker-held-out needs at least two speakers")
    emotions = {item.emotion for item in items}
    per_speaker: dict[str, list[SplitItem]] = defaultdict(list)
    for item in items:
        per_speaker[item.speaker].append(item)
    target = test_fraction * len(items)
    held: set[str] = set()
    count = 0
    for i in make_rng(seed, "speaker-held-out", "speakers").permutation(len(speakers)):
        if count >= target:
            break
        speaker = speakers[int(i)]
        remaining = {it.emotion for it in items if it.speaker not in held | {speaker}}
        if remaining != emotions:
            continue
        held.add(speaker)
        count += len(per_speaker[speaker])
    if not held:
        raise SplitError(
            "speaker-held-out: no speaker can be held out without leaving an emotion "
            "with no training clip"
        )
    return held
