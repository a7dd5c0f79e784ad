"""ReCANVo (Johnson et al., 2023; Zenodo 5786860) and the paper's ReCANVo-Balanced.

Layout: a flat folder of WAV files (44.1 kHz, mono and stereo mixed) plus
``dataset_file_directory.csv`` with header ``Filename,Participant,Label`` (CRLF), 7,077 rows,
22 lower-case labels. File names are opaque; the clip id is the (sanitised) file stem.

Label rules, applied to the label table before any audio is decoded:

1. ``merge``: rename labels (the paper merges ``laugh`` into ``laughter``);
2. ``keep``: keep only these labels (the paper keeps ``delighted dysregulated frustrated
   request selftalk social laughter``; ``affectionate`` and ``yes`` have >= 100 clips but
   come almost entirely from one participant and are dropped);
3. ``min_count``: drop labels with fewer clips than this, after merging.

The default preset is exactly the paper's derived set (Table 6: 6,551 clips, 7 labels).
Rows excluded by the rules are recorded as failures with the rule that excluded them, so
that clips found = imported + failed.

``recanvo-balanced`` reduces the derived set to ``per_class`` clips per label (default 100,
Table 7) with :func:`water_fill` and a seeded draw of clips per participant.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.datasets.base import (
    IMPORT_STAGE,
    Candidate,
    DatasetError,
    DatasetSpec,
    Listing,
    safe_id,
)
from pipeline.datasets.csvcorpus import read_rows
from pipeline.manifest import Failure
from pipeline.rng import make_rng

LABEL_FILE = "dataset_file_directory.csv"
PARTICIPANTS = ("P01", "P02", "P03", "P05", "P06", "P08", "P11", "P16")
PAPER_KEEP = (
    "delighted",
    "dysregulated",
    "frustrated",
    "request",
    "selftalk",
    "social",
    "laughter",
)
PAPER_MERGE = {"laugh": "laughter"}
EXCLUDED = "excluded by label rules"
NOT_DRAWN = "not drawn for the balanced set"


@dataclass(frozen=True)
class Row:
    """One row of the label table: ``filename`` as written, with its CSV line number."""

    line: int
    filename: str
    participant: str
    label: str


def read_label_table(data_dir: Path) -> list[Row]:
    """The rows of ``dataset_file_directory.csv`` (CRLF or LF, optional BOM)."""
    path = data_dir / LABEL_FILE
    if not path.exists():
        raise DatasetError(
            f"ReCANVo: {LABEL_FILE} not found in {data_dir}/; pass --data-dir pointing at "
            "the folder that holds it and the .wav files"
        )
    _, rows = read_rows(path, ["Filename", "Participant", "Label"])
    return [
        Row(
            line=line,
            filename=(r.get("Filename") or "").strip(),
            participant=(r.get("Participant") or "").strip(),
            label=(r.get("Label") or "").strip(),
        )
        for line, r in rows
    ]


def apply_label_rules(
    rows: Sequence[Row],
    keep: Sequence[str] | None,
    merge: Mapping[str, str],
    min_count: int,
) -> tuple[list[Row], list[tuple[Row, str]]]:
    """Rows that pass the rules (labels merged) and the excluded ones with their reason."""
    merged = [
        Row(r.line, r.filename, r.participant, merge.get(r.label, r.label)) if r.label else r
        for r in rows
    ]
    counts = Counter(r.label for r in merged if r.label)
    kept, excluded = [], []
    for r in merged:
        if not r.label:
            excluded.append((r, "label outside the vocabulary rules: empty label"))
        elif keep is not None and r.label not in keep:
            excluded.append((r, f"{EXCLUDED}: label {r.label!r} is not kept"))
        elif counts[r.label] < min_count:
            excluded.append(
                (r, f"{EXCLUDED}: label {r.label!r} has {counts[r.label]} < {min_count} clips")
            )
        else:
            kept.append(r)
    return kept, excluded


def water_fill(
    available: Mapping[str, int], target: int, rng: np.random.Generator
) -> dict[str, int]:
    """Split ``target`` clips of one class over participants.

    Each participant gets an equal share, capped by what it has and by ``target // 2`` (no
    participant may hold a majority); the shortfall of capped participants is re-spread
    over the others, repeatedly; the remainder units (fewer than the number of uncapped
    participants) go one each to participants drawn with ``rng``. When the participants
    together have fewer than ``target`` clips, each gets its cap.
    """
    caps = {p: min(n, target // 2) for p, n in available.items()}
    active = sorted(p for p, cap in caps.items() if cap > 0)
    alloc = {p: 0 for p in available}
    remaining = target
    while active:
        share = remaining // len(active)
        capped = [p for p in active if caps[p] <= share]
        if not capped:
            break
        for p in capped:
            alloc[p] = caps[p]
            remaining -= caps[p]
        active = [p for p in active if p not in capped]
    if active:
        share, extra = divmod(remaining, len(active))
        for p in active:
            alloc[p] = share
        for i in sorted(rng.choice(len(active), size=extra, replace=False)):
            alloc[active[int(i)]] += 1
    return alloc


def balance(
    rows: Sequence[Row], per_class: int, seed: int
) -> tuple[list[Row], list[Row], dict[str, dict[str, int]]]:
    """Draw ``per_class`` rows per label by water-filling over participants.

    Returns (drawn rows in table order, rows not drawn, allocation label -> participant ->
    count). Every draw uses ``make_rng(seed, "recanvo-balanced", label, ...)`` over rows
    sorted by file name, so the result does not depend on the table's row order.
    """
    by_cell: dict[str, dict[str, list[Row]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_cell[r.label][r.participant].append(r)
    chosen: set[int] = set()
    allocation: dict[str, dict[str, int]] = {}
    for label in sorted(by_cell):
        cells = by_cell[label]
        available = {p: len(cells[p]) for p in sorted(cells)}
        alloc = water_fill(available, per_class, make_rng(seed, "recanvo-balanced", label))
        allocation[label] = alloc
        for p, count in alloc.items():
            pool = sorted(cells[p], key=lambda r: (r.filename, r.line))
            rng = make_rng(seed, "recanvo-balanced", label, p)
            for i in rng.choice(len(pool), size=count, replace=False):
                chosen.add(pool[int(i)].line)
    drawn = [r for r in rows if r.line in chosen]
    rest = [r for r in rows if r.line not in chosen]
    return drawn, rest, allocation


def _relative_audio_path(data_dir: Path, filename: str) -> str:
    """The file as listed; a name without extension also matches ``<name>.wav``."""
    if not Path(filename).suffix and (data_dir / f"{filename}.wav").exists():
        return f"{filename}.wav"
    return filename


def _clip_id(filename: str) -> str:
    name = Path(filename).name
    stem = name[:-4] if name.lower().endswith(".wav") else name
    return safe_id(stem)


def _parse_merge(merge: str | Mapping[str, str] | None) -> dict[str, str]:
    if merge is None:
        return dict(PAPER_MERGE)
    if isinstance(merge, Mapping):
        return dict(merge)
    out = {}
    for part in filter(None, (p.strip() for p in merge.split(","))):
        if "=" not in part:
            raise DatasetError(f"--merge expects FROM=TO[,FROM=TO...], got {part!r}")
        src, dst = (s.strip() for s in part.split("=", 1))
        out[src] = dst
    return out


def _parse_keep(keep: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if keep is None:
        return PAPER_KEEP
    if isinstance(keep, str):
        if keep.strip().lower() == "all":
            return None
        return tuple(filter(None, (k.strip() for k in keep.split(","))))
    return tuple(keep)


def list_recanvo(
    data_dir: Path,
    seed: int,
    keep: str | Sequence[str] | None = None,
    merge: str | Mapping[str, str] | None = None,
    min_count: int = 0,
    balanced: bool = False,
    per_class: int = 100,
    balance_seed: int = 0,
) -> Listing:
    """List ReCANVo under the label rules (default: the paper's derived set).

    ``keep`` is a comma-separated list or ``"all"``; ``merge`` is ``"from=to,..."``. With
    ``balanced``, ``per_class`` clips per label are drawn with ``balance_seed`` (not the
    split seed, so that every split seed sees the same balanced corpus).
    """
    del seed
    rows = read_label_table(data_dir)
    keep_labels = _parse_keep(keep)
    kept, excluded = apply_label_rules(rows, keep_labels, _parse_merge(merge), min_count)
    rejected = [
        Failure(_clip_id(r.filename) or f"line{r.line}", IMPORT_STAGE, why, r.filename)
        for r, why in excluded
    ]
    notes = []
    if balanced:
        kept, rest, allocation = balance(kept, per_class, balance_seed)
        rejected += [
            Failure(
                _clip_id(r.filename),
                IMPORT_STAGE,
                f"{NOT_DRAWN}: {per_class} clips per label",
                r.filename,
            )
            for r in rest
        ]
        short = {lab: sum(a.values()) for lab, a in allocation.items()}
        short = {lab: n for lab, n in short.items() if n < per_class}
        if short:
            notes.append(
                "labels short of "
                f"{per_class} clips (no participant may hold a majority): "
                + ", ".join(f"{lab} {n}" for lab, n in sorted(short.items()))
            )
    candidates = []
    for r in kept:
        if not r.filename or not r.participant:
            rejected.append(
                Failure(f"line{r.line}", IMPORT_STAGE, f"bad row: line {r.line} is incomplete")
            )
            continue
        rel = _relative_audio_path(data_dir, r.filename)
        candidates.append(Candidate(_clip_id(r.filename), rel, r.label, r.participant))
    labels_order = keep_labels or ()
    return Listing(
        source="recanvo-balanced" if balanced else "recanvo",
        candidates=candidates,
        rejected=rejected,
        emotions=tuple(labels_order),
        speakers=PARTICIPANTS,
        notes=notes,
    )


def list_recanvo_balanced(data_dir: Path, seed: int, **options: object) -> Listing:
    return list_recanvo(data_dir, seed, balanced=True, **options)


_OBTAIN = "download it from https://zenodo.org/records/5786860 and unpack it"
_OPTIONS = ("keep", "merge", "min_count")

SPEC = DatasetSpec(
    name="recanvo",
    title="ReCANVo",
    folder="ReCANVo",
    obtain=_OBTAIN,
    list_clips=list_recanvo,
    options=_OPTIONS,
)
BALANCED_SPEC = DatasetSpec(
    name="recanvo-balanced",
    title="ReCANVo",
    folder="ReCANVo",
    obtain=_OBTAIN,
    list_clips=list_recanvo_balanced,
    options=(*_OPTIONS, "per_class", "balance_seed"),
)
