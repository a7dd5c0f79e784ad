"""The records of ``ncore-prep selectivity``: a probe score (:class:`Row`), the selectivity of
one view set (:class:`Selectivity`, the content of ``selectivity.json``, schema in
docs/selectivity.md), and where the file lies."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import os_reason, probe_writable
from pipeline.errors import PipelineError
from pipeline.fields import parse_choice, parse_int, parse_number
from pipeline.manifest import read_regular_file
from pipeline.selectivity.features import FEATURE_SETS
from pipeline.stats.bootstrap import DEFAULT_BOOTSTRAP
from pipeline.stats.crossfit import DEFAULT_FOLDS
from pipeline.stats.protocol import CONDITIONS

SCHEMA_VERSION = 1
FILE_NAME = "selectivity.json"
LABELS = ("speaker", "emotion")
# What each kind of view set is meant to remove (its target) and to keep.
TARGET = {"speaker": "speaker", "emotion": "emotion"}
KEPT = {"speaker": "emotion", "emotion": "speaker"}
PERTURBATION_NAME = {"speaker": "p_s", "emotion": "p_e"}
FOLDS = DEFAULT_FOLDS
BOOTSTRAP = DEFAULT_BOOTSTRAP
THRESHOLDS = {
    "decodable_margin": 0.10,
    "removed_max": 0.25,
    "kept_min": 0.75,
}
ALL_FEATURES = "all"
OTHER_LABEL = "other label"


class SelectivityError(PipelineError):
    """A request that cannot be measured (no view set, no clips); the message says why."""


@dataclass(frozen=True)
class Row:
    """One probe score: ``label`` decoded from ``features`` in ``condition``."""

    label: str
    features: str
    condition: str
    balanced_accuracy: float
    ci95: tuple[float, float]
    chance: float
    n: int
    retained: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "features": self.features,
            "condition": self.condition,
            "balanced_accuracy": self.balanced_accuracy,
            "ci95": list(self.ci95),
            "chance": self.chance,
            "n": self.n,
            "retained": self.retained,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "row") -> Row:
        """One row of ``selectivity.json``, every field typed (SelectivityError naming it)."""
        d = _object(d, where)
        ci95 = d.get("ci95")
        if not isinstance(ci95, list) or len(ci95) != 2:
            raise SelectivityError(f"{where}: field 'ci95' must be a list of two fractions")
        retained = d.get("retained")
        return cls(
            label=_choice(d.get("label"), "label", LABELS, where),
            features=_choice(
                d.get("features"),
                "features",
                (OTHER_LABEL, ALL_FEATURES, *(f.name for f in FEATURE_SETS)),
                where,
            ),
            condition=_choice(d.get("condition"), "condition", CONDITIONS, where),
            balanced_accuracy=_fraction(d.get("balanced_accuracy"), "balanced_accuracy", where),
            ci95=(_fraction(ci95[0], "ci95", where), _fraction(ci95[1], "ci95", where)),
            chance=_fraction(d.get("chance"), "chance", where),
            n=_count(d.get("n"), "n", where),
            retained=None if retained is None else _number(retained, "retained", where),
        )


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        kind = "null" if value is None else type(value).__name__
        raise SelectivityError(f"{where}: must be a JSON object, got {kind}")
    return value


def _number(value: Any, key: str, where: str) -> float:
    return parse_number(value, key, where, error=SelectivityError)


def _fraction(value: Any, key: str, where: str) -> float:
    """A balanced accuracy or chance level: in [0, 1] (NaN where no probe could be fitted)."""
    number = _number(value, key, where)
    if not (np.isnan(number) or 0.0 <= number <= 1.0):
        raise SelectivityError(f"{where}: field {key!r} must lie in [0, 1], got {value!r}")
    return number


def _count(value: Any, key: str, where: str, minimum: int = 0) -> int:
    return parse_int(value, key, where, minimum, error=SelectivityError)


def _choice(value: Any, key: str, choices: Sequence[str], where: str) -> str:
    return parse_choice(value, key, where, choices, SelectivityError)


def _flag(value: Any, key: str, where: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise SelectivityError(f"{where}: field {key!r} must be true, false or null")
    return value


@dataclass(frozen=True)
class Selectivity:
    """The selectivity of one view set (the content of ``selectivity.json``)."""

    view_set: str
    kind: str
    rows: tuple[Row, ...]
    verdicts: tuple[str, ...]
    removes: bool | None
    keeps: bool | None
    clips: int
    views_used: int
    seed: int
    dropped: tuple[dict[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "view_set": self.view_set,
            "kind": self.kind,
            "perturbation": PERTURBATION_NAME[self.kind],
            "target": TARGET[self.kind],
            "kept": KEPT[self.kind],
            "removes": self.removes,
            "keeps": self.keeps,
            "clips": self.clips,
            "views_used": self.views_used,
            "seed": self.seed,
            "folds": FOLDS,
            "bootstrap": BOOTSTRAP,
            "thresholds": dict(THRESHOLDS),
            "feature_sets": {
                f.name: {"description": f.description, "targeted_by": list(f.targeted_by)}
                for f in FEATURE_SETS
            },
            "rows": [r.to_dict() for r in self.rows],
            "verdicts": list(self.verdicts),
            "dropped": [dict(d) for d in self.dropped],
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = FILE_NAME) -> Selectivity:
        """The one reader of ``selectivity.json``: a wrong type or value (a list, null, an
        unknown kind, a score above 1) is a SelectivityError naming ``where`` and the field."""
        d = _object(d, where)
        version = d.get("schema_version")
        if isinstance(version, bool) or not isinstance(version, int) or version != SCHEMA_VERSION:
            raise SelectivityError(
                f"{where}: selectivity schema_version {version!r} is not supported "
                f"(expected {SCHEMA_VERSION})"
            )
        rows, verdicts, dropped = d.get("rows"), d.get("verdicts"), d.get("dropped", [])
        if not isinstance(rows, list):
            raise SelectivityError(f"{where}: field 'rows' must be a list")
        if not isinstance(verdicts, list) or not all(isinstance(v, str) for v in verdicts):
            raise SelectivityError(f"{where}: field 'verdicts' must be a list of sentences")
        if not isinstance(dropped, list) or not all(
            isinstance(x, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in x.items())
            for x in dropped
        ):
            raise SelectivityError(f"{where}: field 'dropped' must list objects of strings")
        view_set = d.get("view_set")
        if not isinstance(view_set, str) or not view_set:
            raise SelectivityError(f"{where}: field 'view_set' must be a view-set key")
        return cls(
            view_set=view_set,
            kind=_choice(d.get("kind"), "kind", tuple(PERTURBATION_NAME), where),
            rows=tuple(Row.from_dict(r, f"{where}: row {i}") for i, r in enumerate(rows)),
            verdicts=tuple(verdicts),
            removes=_flag(d.get("removes"), "removes", where),
            keeps=_flag(d.get("keeps"), "keeps", where),
            clips=_count(d.get("clips"), "clips", where),
            views_used=_count(d.get("views_used"), "views_used", where, 1),
            seed=_count(d.get("seed"), "seed", where),
            dropped=tuple(dict(x) for x in dropped),
        )

    def row(self, label: str, features: str, condition: str) -> Row:
        for r in self.rows:
            if (r.label, r.features, r.condition) == (label, features, condition):
                return r
        raise KeyError((label, features, condition))


def result_path(view_set_folder: str | os.PathLike[str]) -> Path:
    """Where the selectivity of the view set stored in ``view_set_folder`` is written."""
    return Path(view_set_folder) / FILE_NAME


def load_result(view_set_folder: str | os.PathLike[str]) -> Selectivity | None:
    """The stored selectivity of a view set, or None when none has been computed."""
    path = result_path(view_set_folder)
    if not path.exists():
        return None
    try:
        data = json.loads(read_regular_file(path).decode("utf-8"))
    except OSError as e:
        raise SelectivityError(f"{path}: unreadable selectivity result ({os_reason(e)})") from None
    except (ValueError, RecursionError) as e:  # not UTF-8, not JSON
        text = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise SelectivityError(f"{path}: unreadable selectivity result ({text})") from None
    return Selectivity.from_dict(data, str(path))


def check_writable(folder: Path) -> None:
    """Refuse (SelectivityError, one line) a view-set folder the result cannot be written
    into: forbidden, read-only or full. Checked before the measurement, which takes minutes,
    by writing and removing a small probe file (a full disk fails the write, not the open)."""
    try:
        probe_writable(folder, f".{FILE_NAME}.probe-")
    except OSError as e:
        raise SelectivityError(
            f"{folder}: cannot write {FILE_NAME} there ({os_reason(e)}); nothing was measured"
        ) from None
