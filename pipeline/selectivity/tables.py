"""The tables of ``ncore-prep selectivity``: one row walk (:func:`table_rows`) and its text,
Markdown and HTML renderings (``ncore-prep selectivity``/``inspect``, the benchmarks, the
listening page in ``pipeline/listen.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.selectivity.features import FEATURE_NAMES
from pipeline.selectivity.records import (
    ALL_FEATURES,
    CONDITIONS,
    LABELS,
    OTHER_LABEL,
    PERTURBATION_NAME,
    Row,
    Selectivity,
)

# A score as balanced accuracy % [95 % interval], per rendering.
SCORE_FORMAT = {
    "text": "{:5.1f} [{:4.1f}-{:5.1f}]",
    "markdown": "{:.1f} [{:.1f}, {:.1f}]",
    "html": "{:.1f} [{:.1f}\u2013{:.1f}]",
}


@dataclass(frozen=True)
class TableRow:
    """One displayed row: ``label`` decoded from ``features``; ``scores`` one per
    ``CONDITIONS`` (None where not measured: the other-label reference has originals
    only); ``retained`` the shares in views and transfer (None where undefined)."""

    label: str
    features: str
    chance: float
    n: int
    scores: tuple[Row | None, ...]
    retained: tuple[float | None, ...]

    @property
    def reference(self) -> bool:
        return self.features == OTHER_LABEL

    def score(self, condition: str, style: str) -> str:
        """The condition's cell in ``style`` (a key of :data:`SCORE_FORMAT`); "" if none."""
        r = self.scores[CONDITIONS.index(condition)]
        if r is None:
            return ""
        return SCORE_FORMAT[style].format(
            100 * r.balanced_accuracy, 100 * r.ci95[0], 100 * r.ci95[1]
        )

    def retained_text(self, dash: str, sep: str) -> str:
        return sep.join(dash if v is None else f"{v:.2f}" for v in self.retained)


def table_rows(result: Selectivity) -> list[TableRow]:
    """The rows of every displayed table, in order: per label the other-label reference
    first, then each feature set (``FEATURE_NAMES``, then ``all``); feature sets without
    a score on the originals are left out."""
    by_key = {(r.label, r.features, r.condition): r for r in result.rows}
    out = []
    for label in LABELS:
        for features in (OTHER_LABEL, *FEATURE_NAMES, ALL_FEATURES):
            scores = tuple(by_key.get((label, features, c)) for c in CONDITIONS)
            if scores[0] is None:
                continue
            out.append(
                TableRow(
                    label=label,
                    features=features,
                    chance=scores[0].chance,
                    n=scores[0].n,
                    scores=scores,
                    retained=tuple(None if r is None else r.retained for r in scores[1:]),
                )
            )
    return out


def caption(result: Selectivity) -> str:
    """What the table shows (the view set's perturbation, clips, views)."""
    return (
        f"selectivity of {PERTURBATION_NAME.get(result.kind, result.kind)} ({result.clips} "
        f"clips, {result.views_used} view(s) each"
    )


def format_table(result: Selectivity, indent: str = "") -> list[str]:
    """The result as text: one line per (label, feature set) with the three conditions,
    then the verdicts."""
    lines = [
        f"{indent}{caption(result)}; balanced accuracy % [95 % interval]; "
        f"retained = share of (originals - floor) left)",
        f"{indent}{'label':<8} {'features':<18} {'chance':>6}  {'originals':<20} "
        f"{'views':<20} {'transfer':<20} {'retained v/t':>12}",
    ]
    for row in table_rows(result):
        head = f"{indent}{row.label:<8} {row.features:<18} {100 * row.chance:6.1f}  "
        if row.reference:
            lines.append(head + f"{row.score('originals', 'text'):<20} {'':<20} {'':<20}")
            continue
        lines.append(
            head
            + " ".join(f"{row.score(c, 'text'):<20}" for c in CONDITIONS)
            + f" {row.retained_text('-', '/'):>12}"
        )
    lines.extend(f"{indent}{v}" for v in result.verdicts)
    return lines


def markdown_table(result: Selectivity) -> str:
    """The result as a Markdown table (for README and benchmarks)."""
    lines = [
        "| label | features | chance | originals | views | transfer | retained views / transfer |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in table_rows(result):
        head = f"| {row.label} | {row.features} | {100 * row.chance:.1f} | "
        if row.reference:
            lines.append(head + f"{row.score('originals', 'markdown')} | | | |")
            continue
        lines.append(
            head
            + " | ".join(row.score(c, "markdown") for c in CONDITIONS)
            + f" | {row.retained_text('–', ' / ')} |"
        )
    return "\n".join(lines) + "\n"
