"""Any corpus described by a CSV: one row per clip with a path, an emotion and a speaker.

``--data-dir DIR --csv FILE`` (default ``DIR/labels.csv``); paths in the CSV are relative to
``DIR``; column names are options (defaults ``path``, ``emotion``, ``speaker``). Other
columns are kept as extra labels of the clip. Clip ids derive from the relative path
(folders joined with ``__``, extension dropped), so they are stable and file-name safe.
"""

from __future__ import annotations

import csv
import hashlib
import os
import stat
from pathlib import Path, PurePosixPath

from pipeline.datasets.base import (
    IMPORT_STAGE,
    Candidate,
    DatasetError,
    DatasetSpec,
    Listing,
    safe_id,
)
from pipeline.manifest import Failure


def _regular_file(path: Path) -> int:
    """A read descriptor of ``path``, refused (DatasetError) unless it is a regular file: a
    FIFO, socket or device as the label file would block the import or never end. Opened
    non-blocking and checked on the descriptor itself (no race with a swapped file)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = (
                "a FIFO"
                if stat.S_ISFIFO(mode)
                else "a folder"
                if stat.S_ISDIR(mode)
                else ("a device or socket")
            )
            raise DatasetError(f"label file {path} is {what}, not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_rows(
    csv_path: Path, required: list[str], hints: dict[str, str] | None = None
) -> tuple[list[str], list[tuple[int, dict]]]:
    """Rows of ``csv_path`` as (line number, row dict); checks that ``required`` columns exist.

    ``hints`` maps a column to the option that names it, for the error message.

    Accepts a UTF-8 BOM and CRLF line endings.
    """
    try:
        with open(_regular_file(csv_path), newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            twice = sorted({h for h in header if h and header.count(h) > 1})
            if twice:
                raise DatasetError(
                    f"{csv_path.name}: column {twice[0]!r} appears more than once in the "
                    "header; rename one of them"
                )
            reader.fieldnames = header
            rows = [(reader.line_num, row) for row in reader]
    except FileNotFoundError:
        raise DatasetError(f"label file {csv_path} not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"label file {csv_path} cannot be read as CSV: {e}") from None
    for column in required:
        if column not in header:
            hint = f"; pass {hints[column]}" if hints and column in hints else ""
            raise DatasetError(
                f"{csv_path.name} has no column {column!r} "
                f"(columns: {', '.join(header) or 'none'}){hint}"
            )
    return header, rows


def path_id(rel: str) -> str:
    """A file-name-safe id from a relative path: ``a/b/c.wav`` -> ``a__b__c``."""
    path = PurePosixPath(rel)
    parts = (path.with_suffix("") if path.name else path).parts
    return safe_id("__".join(p for p in parts if p not in ("..", ".", "/")))


def list_csv(
    data_dir: Path,
    seed: int,
    csv: str | os.PathLike[str] | None = None,
    path_column: str = "path",
    emotion_column: str = "emotion",
    speaker_column: str = "speaker",
) -> Listing:
    """List the clips of a CSV-described corpus (nothing is decoded here)."""
    del seed  # the listing does not draw anything
    csv_path = Path(csv) if csv is not None else data_dir / "labels.csv"
    columns = [path_column, emotion_column, speaker_column]
    if len(set(columns)) != 3:
        raise DatasetError("--path-column, --emotion-column and --speaker-column must differ")
    flags = ("--path-column", "--emotion-column", "--speaker-column")
    header, rows = read_rows(csv_path, columns, dict(zip(columns, flags, strict=True)))
    extra_columns = [h for h in header if h and h not in columns]

    candidates: list[Candidate] = []
    rejected: list[Failure] = []
    ids: set[str] = set()
    for line, row in rows:
        rel = (row.get(path_column) or "").strip().replace("\\", "/")
        emotion = (row.get(emotion_column) or "").strip()
        speaker = (row.get(speaker_column) or "").strip()
        clip_id = path_id(rel) if rel and "\x00" not in rel else f"line{line}"
        if clip_id in ids:
            # Two paths that sanitise alike ("a b.wav", "a_b.wav"): disambiguate by content
            # of the path, which is stable.
            clip_id = f"{clip_id}-{hashlib.sha1(rel.encode()).hexdigest()[:8]}"
        ids.add(clip_id)
        if not rel:
            rejected.append(Failure(clip_id, IMPORT_STAGE, f"bad row: line {line} has no path"))
        elif not emotion or not speaker:
            missing = emotion_column if not emotion else speaker_column
            rejected.append(
                Failure(
                    clip_id,
                    IMPORT_STAGE,
                    f"label outside the vocabulary rules: empty {missing}",
                    rel,
                )
            )
        else:
            extra = {k: (row.get(k) or "").strip() for k in extra_columns if row.get(k)}
            candidates.append(Candidate(clip_id, rel, emotion, speaker, extra))
    return Listing(
        source=f"csv:{csv_path.name}",
        candidates=candidates,
        rejected=rejected,
        notes=[f"labels from {csv_path}"],
    )


SPEC = DatasetSpec(
    name="csv",
    title="the CSV corpus",
    folder="CSV",
    obtain="point --data-dir at the folder the CSV's paths are relative to",
    list_clips=list_csv,
    options=("csv", "path_column", "emotion_column", "speaker_column"),
)
