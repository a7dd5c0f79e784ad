"""Seeded train / val / test splits, stratified on the task's label.

Three protocols (docs/design.md section 2):

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

Stratification follows the task (``stratify``): emotion for the emotion task, speaker for
the speaker task (as the paper does). ``ncore-prep manifest`` stores one split (seed 42 by
default, stratified on emotion) in the clips; the trainer draws **one split per training
seed** with :func:`seed_split` from the same settings (docs/evaluation.md), so that the
spread over seeds includes the split's variance, or keeps the stored split for every seed
(``fixed``). Splits never touch the view cache: a view set's key covers the clip list, not
the clips' splits.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import PipelineError
from pipeline.fields import parse_choice, parse_int, parse_names, parse_number
from pipeline.rng import make_rng

PROTOCOLS = ("default", "paper", "speaker-held-out")
STRATIFY = ("emotion", "speaker")
SPLIT_MODES = ("per-seed", "fixed")
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_VAL_FRACTION = 0.1


class SplitError(PipelineError):
    """A split that cannot be made (e.g. one speaker only for speaker-held-out)."""


# ----- the split settings a manifest records (``Manifest.split``) -----------------------------
VALIDATION_SPLITS = ("val", "test")


def _number(value: Any, key: str, where: str) -> float:
    return parse_number(value, key, where, error=SplitError, finite=True)


def parse_test_fraction(value: Any, where: str = "split") -> float:
    """A test share of all clips: a number in (0, 1)."""
    fraction = _number(value, "test_fraction", where)
    if not 0.0 < fraction < 1.0:
        raise SplitError(f"{where}: field 'test_fraction' must lie in (0, 1), got {value!r}")
    return fraction


def parse_val_fraction(value: Any, test_fraction: float | None, where: str = "split") -> float:
    """A validation share of all clips: in [0, 1 - test_fraction)."""
    fraction = _number(value, "val_fraction", where)
    top = 1.0 - (test_fraction or 0.0)
    if not 0.0 <= fraction < top:
        raise SplitError(
            f"{where}: field 'val_fraction' must lie in [0, {top:g}) (1 - test_fraction), "
            f"got {value!r}"
        )
    return fraction


def _choice(value: Any, key: str, choices: tuple[str, ...], where: str) -> str:
    return parse_choice(value, key, where, choices, SplitError)


def _seed(value: Any, key: str, where: str) -> int:
    return parse_int(value, key, where, error=SplitError)


def _names(value: Any, key: str, where: str) -> tuple[str, ...]:
    return parse_names(value, key, where, SplitError, nonempty=True)


@dataclass(frozen=True)
class SplitSettings:
    """How a manifest's stored split was drawn (``Manifest.split``, written by
    :func:`assign_splits`): every field None (or empty) when the manifest does not record it.

    :meth:`from_dict` is the one reader of that object: a wrong type or value is a
    :class:`SplitError` naming the field, and an unknown field is refused, so a hand-edited
    ``"test_fraction": "abc"`` never reaches the split code.
    """

    protocol: str | None = None
    seed: int | None = None
    stratify: str | None = None
    test_fraction: float | None = None
    val_fraction: float | None = None
    validation_split: str | None = None
    test_speakers: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields that are recorded (None fields are left out, as they were absent)."""
        data = {
            "protocol": self.protocol,
            "seed": self.seed,
            "stratify": self.stratify,
            "test_fraction": self.test_fraction,
            "val_fraction": self.val_fraction,
            "validation_split": self.validation_split,
            "test_speakers": None if self.test_speakers is None else list(self.test_speakers),
        }
        return {k: v for k, v in data.items() if v is not None}

    @classmethod
    def from_dict(cls, data: Any, where: str = "split") -> SplitSettings:
        if not isinstance(data, Mapping):
            raise SplitError(f"{where}: must be an object, got {type(data).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(str(k) for k in set(data) - known)
        if unknown:
            raise SplitError(f"{where}: unknown field {unknown[0]!r}")

        def get(key: str, parse: Any) -> Any:
            value = data.get(key)
            return None if value is None else parse(value)

        test_fraction = get("test_fraction", lambda v: parse_test_fraction(v, where))
        return cls(
            protocol=get("protocol", lambda v: _choice(v, "protocol", PROTOCOLS, where)),
            seed=get("seed", lambda v: _seed(v, "seed", where)),
            stratify=get("stratify", lambda v: _choice(v, "stratify", STRATIFY, where)),
            test_fraction=test_fraction,
            val_fraction=get("val_fraction", lambda v: parse_val_fraction(v, test_fraction, where)),
            validation_split=get(
                "validation_split",
                lambda v: _choice(v, "validation_split", VALIDATION_SPLITS, where),
            ),
            test_speakers=get("test_speakers", lambda v: _names(v, "test_speakers", where)),
        )


@dataclass(frozen=True)
class SplitItem:
    """What a split needs to know about a clip."""

    id: str
    emotion: str
    speaker: str


def _stratified(
    items: Sequence[SplitItem],
    fraction: float,
    rng_parts: tuple[object, ...],
    stratify: str = "emotion",
) -> tuple[list[str], list[str]]:
    """Split ids into (rest, taken) with ``fraction`` of every class of label ``stratify``
    in ``taken``.

    Per class, ``round(n * fraction)`` clips are taken, at least one when the class has two
    or more clips and never the last one, so every class keeps a clip in ``rest``.
    """
    by_class: dict[str, list[str]] = defaultdict(list)
    for item in items:
        by_class[getattr(item, stratify)].append(item.id)
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
    stratify: str = "emotion",
) -> tuple[dict[str, str], dict[str, Any]]:
    """Assign each clip id to "train", "val" or "test", stratified on label ``stratify``.

    ``test_fraction`` and ``val_fraction`` are shares of all clips. Returns the mapping and
    the description stored as ``Manifest.split`` (protocol, seed, fractions, stratification,
    ``validation_split`` naming the split used for model selection, test speakers).
    """
    if protocol not in PROTOCOLS:
        raise SplitError(f"unknown split protocol {protocol!r} (one of {', '.join(PROTOCOLS)})")
    if stratify not in STRATIFY:
        raise SplitError(f"stratify must be one of {', '.join(STRATIFY)}, got {stratify!r}")
    if protocol == "speaker-held-out" and stratify == "speaker":
        raise SplitError(
            "speaker-held-out cannot be stratified on the speaker: its test speakers never "
            "appear in training (the speaker task would score 0 by construction)"
        )
    if not 0.0 < test_fraction < 1.0 or not 0.0 <= val_fraction < 1.0 - test_fraction:
        raise SplitError("split fractions must satisfy 0 < test < 1 and 0 <= val < 1 - test")
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise SplitError("split: clip ids must be unique")
    info: dict[str, Any] = {
        "protocol": protocol,
        "seed": seed,
        "stratify": stratify,
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
        train_ids, test = _stratified(items, test_fraction, (seed, protocol, "test"), stratify)
        keep = set(train_ids)
        train_items = [item for item in items if item.id in keep]
    val: list[str] = []
    if protocol != "paper" and val_fraction > 0:
        # val_fraction is a share of all clips; carve it from train.
        share = val_fraction * len(items) / max(len(train_items), 1)
        _, val = _stratified(train_items, min(share, 0.5), (seed, protocol, "val"), stratify)
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


# ----- the split of one training seed ---------------------------------------------------------
@dataclass(frozen=True)
class SeedSplit:
    """The split one training seed uses, and how it was drawn (the run folder records it).

    ``mode``: ``per-seed`` (drawn with ``split_seed`` = the training seed) or ``fixed`` (the
    split stored in the manifest, the same for every seed; ``split_seed`` = the manifest's
    split seed, None when it records none). ``train``, ``val``, ``test``: clip ids, sorted.
    The epoch is selected on ``val``; on ``test`` only under the paper protocol.
    """

    seed: int
    mode: str
    protocol: str
    split_seed: int | None
    stratify: str
    test_fraction: float | None
    val_fraction: float | None
    test_speakers: tuple[str, ...] = ()
    train: tuple[str, ...] = field(default=(), repr=False)
    val: tuple[str, ...] = field(default=(), repr=False)
    test: tuple[str, ...] = field(default=(), repr=False)

    @property
    def selection_split(self) -> str:
        """The split that selects the epoch: ``val``, or ``test`` (paper protocol only)."""
        return "val" if self.val else "test"

    def assignment(self) -> dict[str, str]:
        """Clip id -> ``train`` / ``val`` / ``test``."""
        return {
            **{cid: "train" for cid in self.train},
            **{cid: "val" for cid in self.val},
            **{cid: "test" for cid in self.test},
        }

    def describe(self) -> dict[str, Any]:
        """How the split was drawn (everything but the clip lists)."""
        return {
            "mode": self.mode,
            "protocol": self.protocol,
            "split_seed": self.split_seed,
            "stratify": self.stratify,
            "test_fraction": self.test_fraction,
            "val_fraction": self.val_fraction,
            "test_speakers": list(self.test_speakers),
            "selection_split": self.selection_split,
            "clips": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            **{k: v for k, v in self.describe().items() if k not in ("clips", "selection_split")},
            "train": list(self.train),
            "val": list(self.val),
            "test": list(self.test),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SeedSplit:
        where = "split record"
        if not isinstance(data, Mapping):
            raise SplitError(f"{where}: must be an object, got {type(data).__name__}")
        for key in ("seed", "mode", "protocol", "stratify", "train", "val", "test"):
            if key not in data:
                raise SplitError(f"{where}: missing field {key!r}")
        test_fraction = data.get("test_fraction")
        test_fraction = None if test_fraction is None else parse_test_fraction(test_fraction, where)
        val_fraction = data.get("val_fraction")
        val_fraction = (
            None if val_fraction is None else parse_val_fraction(val_fraction, test_fraction, where)
        )
        split_seed = data.get("split_seed")
        split = cls(
            seed=_seed(data["seed"], "seed", where),
            mode=_choice(data["mode"], "mode", SPLIT_MODES, where),
            protocol=_choice(data["protocol"], "protocol", PROTOCOLS, where),
            split_seed=None if split_seed is None else _seed(split_seed, "split_seed", where),
            stratify=_choice(data["stratify"], "stratify", STRATIFY, where),
            test_fraction=test_fraction,
            val_fraction=val_fraction,
            test_speakers=_names(data.get("test_speakers", []), "test_speakers", where),
            train=_names(data["train"], "train", where),
            val=_names(data["val"], "val", where),
            test=_names(data["test"], "test", where),
        )
        ids = [*split.train, *split.val, *split.test]
        if len(set(ids)) != len(ids):
            raise SplitError("split record: a clip id is in two splits")
        return split


def stored_seed_split(
    clips: Sequence[Any], recorded: Mapping[str, Any], seed: int, protocol: str | None = None
) -> SeedSplit:
    """The manifest's stored split (each clip's ``split``) as training seed ``seed``'s, with
    the settings it was drawn with (``recorded``: ``Manifest.split``); ``protocol`` None
    keeps the recorded one."""
    settings = SplitSettings.from_dict(recorded)
    by_split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for clip in clips:
        by_split[clip.split].append(clip.id)
    return SeedSplit(
        seed=int(seed),
        mode="fixed",
        protocol=protocol or settings.protocol or "default",
        split_seed=settings.seed,
        stratify=settings.stratify or "emotion",
        test_fraction=settings.test_fraction,
        val_fraction=settings.val_fraction,
        test_speakers=settings.test_speakers or (),
        train=tuple(sorted(by_split["train"])),
        val=tuple(sorted(by_split["val"])),
        test=tuple(sorted(by_split["test"])),
    )


def seed_split(
    clips: Sequence[Any],
    recorded: Mapping[str, Any],
    seed: int,
    task: str,
    mode: str = "per-seed",
    protocol: str | None = None,
) -> SeedSplit:
    """The split of training seed ``seed`` for ``task`` (``emotion`` or ``speaker``).

    ``clips``: the manifest's clips (``id``, ``emotion``, ``speaker``, ``split``);
    ``recorded``: the manifest's split settings (``Manifest.split``). ``protocol``: None
    keeps the manifest's protocol.

    - ``per-seed``: :func:`assign_splits` with the training seed, the protocol, the
      manifest's fractions (validation 10 % when the manifest's protocol had none) and
      stratification on the task's label. Under the manifest's settings, seed = the
      manifest's split seed and the emotion task this is exactly the stored split.
    - ``fixed``: the split stored in the clips, for every seed.

    Raises :class:`SplitError` (one line naming the fix) for the speaker task on a
    speaker-held-out split, and for a split without validation clips outside the paper
    protocol (that would select the epoch on test).
    """
    if task not in STRATIFY:
        raise SplitError(f"task must be one of {', '.join(STRATIFY)}, got {task!r}")
    if mode not in SPLIT_MODES:
        raise SplitError(f"split mode must be one of {', '.join(SPLIT_MODES)}, got {mode!r}")
    if protocol is not None and protocol not in PROTOCOLS:
        raise SplitError(f"unknown split protocol {protocol!r} (one of {', '.join(PROTOCOLS)})")
    settings = SplitSettings.from_dict(recorded)
    stored_protocol = settings.protocol
    if mode == "fixed" and protocol is not None and stored_protocol not in (None, protocol):
        if not (protocol == "paper" and not any(c.split == "val" for c in clips)):
            raise SplitError(
                f"--fixed-split keeps the manifest's split, drawn under protocol "
                f"{stored_protocol!r}: drop --protocol {protocol} or drop --fixed-split"
            )
    chosen = protocol or stored_protocol or "default"
    if task == "speaker" and chosen == "speaker-held-out":
        raise SplitError(
            "the speaker task cannot be trained on a speaker-held-out split (its test speakers "
            "never appear in training, so it scores 0 by construction): use --protocol default"
        )
    test_fraction = settings.test_fraction or DEFAULT_TEST_FRACTION
    if mode == "fixed":
        split = stored_seed_split(clips, recorded, seed, protocol=chosen)
    else:
        if chosen == "paper":
            val_fraction = 0.0
        elif stored_protocol == chosen and settings.val_fraction is not None:
            val_fraction = settings.val_fraction
        else:
            val_fraction = DEFAULT_VAL_FRACTION
        items = [SplitItem(c.id, c.emotion, c.speaker) for c in clips]
        assignment, info = assign_splits(
            items, int(seed), chosen, test_fraction, val_fraction, stratify=task
        )
        split = SeedSplit(
            seed=int(seed),
            mode=mode,
            protocol=chosen,
            split_seed=int(seed),
            stratify=task,
            test_fraction=test_fraction,
            val_fraction=val_fraction,
            test_speakers=tuple(info.get("test_speakers", ())),
            train=tuple(sorted(c for c, s in assignment.items() if s == "train")),
            val=tuple(sorted(c for c, s in assignment.items() if s == "val")),
            test=tuple(sorted(c for c, s in assignment.items() if s == "test")),
        )
    if not split.train or not split.test:
        raise SplitError(
            f"seed {seed}: the split has {len(split.train)} train and {len(split.test)} test "
            "clips; both need at least one"
        )
    if split.selection_split == "test" and chosen != "paper":
        raise SplitError(
            "the split has no validation clip, so the epoch would be selected on the test "
            "set: pass --protocol paper to do that as the paper did (recorded as such), or "
            + (
                "drop --fixed-split so that every seed draws a split with a validation part"
                if mode == "fixed"
                else "re-import the corpus with ncore-prep manifest --val-fraction 0.1"
            )
        )
    return split
