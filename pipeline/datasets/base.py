"""The records every corpus importer shares: what a listing holds and how a corpus registers.

Each corpus module lists what it finds as :class:`Listing` (candidate clips with labels,
plus items already rejected from the label table) without decoding anything, and exposes
a :class:`DatasetSpec`; :mod:`pipeline.datasets.registry` collects the specs and
:mod:`pipeline.datasets.importer` turns a listing into a manifest.

User mistakes (no such folder, a missing column, an option that does not apply) raise
:class:`DatasetError`, which the command line prints as one line.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.manifest import MAX_NAME_CHARS, SPLITS, Failure

IMPORT_STAGE = "import"


class DatasetError(PipelineError):
    """A user mistake about a corpus: wrong folder, missing column, inapplicable option."""


@dataclass(frozen=True)
class Candidate:
    """A clip listed by a corpus, before decoding. ``path`` is relative to the data folder."""

    id: str
    path: str
    emotion: str
    speaker: str
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Listing:
    """What an importer found: candidates to decode and items rejected without decoding.

    ``emotions`` / ``speakers`` give the corpus's own label order, when it has one; labels
    not in it are appended in sorted order. ``notes`` are lines for the summary.
    """

    source: str
    candidates: list[Candidate]
    rejected: list[Failure] = field(default_factory=list)
    emotions: tuple[str, ...] = ()
    speakers: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ImportSummary:
    """Counts of an import. ``found == imported + failed`` always holds."""

    dataset: str
    name: str
    found: int
    imported: int
    failed: int
    failed_by_reason: dict[str, int]
    splits: dict[str, int]
    protocol: str
    seed: int
    notes: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        out = [
            f"{self.name} ({self.dataset}): {self.found} clips found, {self.imported} imported, "
            f"{self.failed} failed"
        ]
        for reason, count in sorted(self.failed_by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
            out.append(f"  failed, {reason}: {count}")
        split = ", ".join(f"{s} {self.splits.get(s, 0)}" for s in SPLITS)
        out.append(f"  splits ({self.protocol}, seed {self.seed}): {split}")
        out.extend(f"  {note}" for note in self.notes)
        return out


@dataclass(frozen=True)
class DatasetSpec:
    """A registered corpus.

    ``folder`` is its default location under ``data/``; ``obtain`` tells a user where to get
    it; ``list_clips(data_dir, seed, **options)`` lists it; ``options`` names the keyword
    options it accepts; ``prepare(data_dir, seed, options)`` (synthetic only) creates the
    corpus when it is absent and returns the options left for ``list_clips``.
    """

    name: str
    title: str
    folder: str
    obtain: str
    list_clips: Callable[..., Listing]
    options: tuple[str, ...] = ()
    prepare: Callable[[Path, int, dict[str, Any]], dict[str, Any]] | None = None


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_id(text: str) -> str:
    """A clip id safe as a file name: runs of other characters become ``_``."""
    cleaned = _UNSAFE.sub("_", text).strip("._") or "clip"
    if len(cleaned) > MAX_NAME_CHARS:  # keep it a usable file name; the hash keeps it unique
        digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        cleaned = f"{cleaned[: MAX_NAME_CHARS - 9]}-{digest}"
    return cleaned


def failure_category(reason: str) -> str:
    """The summary group of a failure reason: the text before its first colon."""
    return reason.split(":", 1)[0]
