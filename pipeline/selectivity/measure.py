"""The measurement of ``ncore-prep selectivity``: read the clips of each view set, describe them
(``pipeline.selectivity.features``), probe each label in the three conditions with the
statistics layer (``pipeline.stats``), and state the verdicts."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.atomic import os_reason, write_json
from pipeline.manifest import Manifest, ViewSet, other_label
from pipeline.reader import LocatedManifest
from pipeline.rng import stable_seed
from pipeline.selectivity.features import FEATURE_NAMES, _features_of_rows
from pipeline.selectivity.records import (
    ALL_FEATURES,
    CONDITIONS,
    FOLDS,
    KEPT,
    LABELS,
    OTHER_LABEL,
    PERTURBATION_NAME,
    TARGET,
    THRESHOLDS,
    Row,
    Selectivity,
    SelectivityError,
    check_writable,
    result_path,
)
from pipeline.stats.bootstrap import balanced_accuracy_interval
from pipeline.stats.protocol import cross_fitted_correct, other_label_features

log = logging.getLogger(__name__)

DEFAULT_MAX_CLIPS = 300
DEFAULT_VIEWS = 2


# ----------------------------------------------------------------------------- verdicts


def _retained(score: float, original: float, floor: float, margin: float) -> float | None:
    if original - floor < margin:
        return None
    return (score - floor) / (original - floor)


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def verdicts(kind: str, rows: Sequence[Row]) -> tuple[list[str], bool | None, bool | None]:
    """Verdict lines of a view set of ``kind`` from its rows; also (removes, keeps)."""
    margin, removed_max, kept_min = (
        THRESHOLDS["decodable_margin"],
        THRESHOLDS["removed_max"],
        THRESHOLDS["kept_min"],
    )
    table = {(r.label, r.features, r.condition): r for r in rows}
    name = PERTURBATION_NAME[kind]
    target, kept = TARGET[kind], KEPT[kind]
    lines = []
    answers: dict[str, bool | None] = {}
    details: dict[str, str] = {}
    for label, want in ((target, "removes"), (kept, "keeps")):
        reference = table.get((label, OTHER_LABEL, "originals"))
        floor_ref = reference.balanced_accuracy if reference else 0.0
        decoding = []
        for features in (*FEATURE_NAMES, ALL_FEATURES):
            orig = table.get((label, features, "originals"))
            if orig is None:
                continue
            floor = max(orig.chance, floor_ref)
            if orig.balanced_accuracy - floor >= margin and orig.ci95[0] > floor:
                others = [table[(label, features, c)] for c in ("views", "transfer")]
                share = [
                    (r.balanced_accuracy - floor) / (orig.balanced_accuracy - floor) for r in others
                ]
                share_lo = [(r.ci95[0] - floor) / (orig.balanced_accuracy - floor) for r in others]
                decoding.append((features, orig, share, share_lo))
        if not decoding:
            answers[want] = None
            details[want] = f"cannot tell: no feature set decodes {label} from the originals"
            continue
        if want == "removes":
            # Not removed only on evidence: the interval's lower end above the line.
            worst = max(decoding, key=lambda d: max(d[2]))
            answers[want] = all(max(d[3]) <= removed_max for d in decoding)
            details[want] = (
                f"{worst[0]} keeps the most: {_pct(max(worst[2]))} of its above-floor "
                f"accuracy ({_pct(worst[1].balanced_accuracy)} on originals)"
            )
        else:
            best = max(decoding, key=lambda d: min(d[2]))
            answers[want] = min(best[2]) >= kept_min
            details[want] = (
                f"{best[0]} keeps the most: {_pct(min(best[2]))} of its above-floor "
                f"accuracy ({_pct(best[1].balanced_accuracy)} on originals)"
            )

    def word(value: bool | None) -> str:
        return "cannot tell" if value is None else ("yes" if value else "no")

    lines.append(
        f"{name} ({kind} views): removes {target}: {word(answers['removes'])} "
        f"({details['removes']}); keeps {kept}: {word(answers['keeps'])} ({details['keeps']})"
    )
    lines.append(
        f"thresholds: a feature set decodes a label when its balanced accuracy on the "
        f"originals is >= floor + {margin:.2f} with the interval's lower end above the floor "
        f"(floor = the larger of chance and the other-label reference); retained = "
        f"(score - floor) / (originals - floor); removes = no decoding feature set retains "
        f"more than {removed_max:.0%} in views or transfer with the lower end of its "
        f"interval; keeps = some decoding feature set retains >= {kept_min:.0%} in both"
    )
    for label in (target, kept):
        reference = table.get((label, OTHER_LABEL, "originals"))
        if reference and reference.balanced_accuracy - reference.chance >= margin:
            other = other_label(label)
            lines.append(
                f"caution: the {other} label alone predicts the {label} at "
                f"{_pct(reference.balanced_accuracy)} (chance {_pct(reference.chance)}): the two "
                f"labels are entangled in these clips; prefer a corpus where they vary "
                f"independently"
            )
    return lines, answers["removes"], answers["keeps"]


# ------------------------------------------------------------------------------ measure


@dataclass(frozen=True)
class SelectivitySettings:
    """What ``ncore-prep selectivity`` measures: at most ``max_clips`` clips (a seeded
    subsample beyond that), their first ``views`` views, view sets ``keys`` (all complete
    ones when empty)."""

    max_clips: int = DEFAULT_MAX_CLIPS
    views: int = DEFAULT_VIEWS
    seed: int = 0
    keys: tuple[str, ...] = ()


def choose_clips(ids: Sequence[str], max_clips: int, seed: int) -> list[str]:
    """At most ``max_clips`` of ``ids``: those with the smallest stable hash of (seed, id),
    in the given order. The choice depends only on the ids and the seed."""
    if len(ids) <= max_clips:
        return list(ids)
    ranked = sorted(ids, key=lambda c: stable_seed("selectivity-clips", seed, c))
    chosen = set(ranked[:max_clips])
    return [c for c in ids if c in chosen]


def _read_view_set(
    source: LocatedManifest, view_set: ViewSet, wanted: Sequence[str], views: int
) -> dict[str, np.ndarray]:
    """``{clip id: float32 (1 + views, T)}`` for the wanted clips, through the one reader
    (``pipeline.reader.read_clips``: each shard read once and checked to be the one the
    manifest lists, a damaged clip refused)."""
    from pipeline.reader import read_clips
    from pipeline.shards import int16_to_float

    stored = read_clips(source, view_set, wanted)
    return {
        cid: int16_to_float(clip.rows[: 1 + views])
        for cid, clip in stored.items()
        if clip.rows is not None
    }


def _label_rows(
    label: str,
    y_all: np.ndarray,
    other_all: np.ndarray,
    features: dict[str, tuple[np.ndarray, np.ndarray]],
    seed_parts: tuple[object, ...],
) -> list[Row]:
    """All rows of one label: the other-label reference, then every feature set."""
    counts = Counter(y_all.tolist())
    keep = np.array([counts[v] >= FOLDS for v in y_all.tolist()])
    y, other = y_all[keep], other_all[keep]
    classes = len(set(y.tolist()))
    if classes < 2:
        return []
    chance = 1.0 / classes
    seed = stable_seed("selectivity-folds", *seed_parts, label)
    rows = []
    onehot = other_label_features(other)
    ref = cross_fitted_correct(onehot, onehot[:, None, :], y, seed, FOLDS)
    boot = stable_seed("selectivity-bootstrap", *seed_parts, label, OTHER_LABEL)
    point, lo, hi = balanced_accuracy_interval(y, ref["originals"], boot)
    rows.append(Row(label, OTHER_LABEL, "originals", point, (lo, hi), chance, len(y)))
    floor_ref = point
    for name, (x_orig, x_views) in features.items():
        correct = cross_fitted_correct(x_orig[keep], x_views[keep], y, seed, FOLDS)
        scores = {}
        for condition in CONDITIONS:
            boot = stable_seed("selectivity-bootstrap", *seed_parts, label, name, condition)
            scores[condition] = balanced_accuracy_interval(y, correct[condition], boot)
        floor = max(chance, floor_ref)
        original = scores["originals"][0]
        for condition in CONDITIONS:
            point, lo, hi = scores[condition]
            retained = (
                None
                if condition == "originals"
                else _retained(point, original, floor, THRESHOLDS["decodable_margin"])
            )
            rows.append(Row(label, name, condition, point, (lo, hi), chance, len(y), retained))
    return rows


def measure_view_set(
    manifest: Manifest,
    view_set: ViewSet,
    features_of: dict[str, list[dict[str, np.ndarray] | str]],
    views: int,
    seed: int,
) -> Selectivity:
    """The selectivity of one view set from the features of its clips' rows
    (``features_of[clip id]`` = [original, view 1, ..., view K]; a string is a failure)."""
    by_id = manifest.clip_by_id()
    usable, dropped = [], []
    for clip_id, rows in features_of.items():
        failed = next((r for r in rows if isinstance(r, str)), None)
        if failed is not None:
            dropped.append({"id": clip_id, "reason": failed})
        else:
            usable.append(clip_id)
    if len(usable) < 2 * FOLDS:
        raise SelectivityError(
            f"view set {view_set.key}: only {len(usable)} clips could be analysed; need at "
            f"least {2 * FOLDS}"
        )
    labels = {
        name: np.array([manifest.label_index(name)[getattr(by_id[c], name)] for c in usable])
        for name in LABELS
    }
    features: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in (*FEATURE_NAMES, ALL_FEATURES):

        def pick(row: dict[str, np.ndarray], name: str = name) -> np.ndarray:
            if name == ALL_FEATURES:
                return np.concatenate([row[f] for f in FEATURE_NAMES])
            return row[name]

        x_orig = np.stack([pick(features_of[c][0]) for c in usable])
        x_views = np.stack([np.stack([pick(r) for r in features_of[c][1:]]) for c in usable])
        features[name] = (x_orig, x_views)
    rows: list[Row] = []
    for label in LABELS:
        other = other_label(label)
        rows.extend(
            _label_rows(label, labels[label], labels[other], features, (seed, view_set.key))
        )
    lines, removes, keeps = verdicts(view_set.kind, rows)
    return Selectivity(
        view_set=view_set.key,
        kind=view_set.kind,
        rows=tuple(rows),
        verdicts=tuple(lines),
        removes=removes,
        keeps=keeps,
        clips=len(usable),
        views_used=views,
        seed=seed,
        dropped=tuple(dropped),
    )


def run_selectivity(
    manifest_path: str | os.PathLike[str],
    settings: SelectivitySettings = SelectivitySettings(),
    executor: Callable[[], Executor] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[tuple[ViewSet, Selectivity, Path]]:
    """Measure every requested complete view set of the manifest and write each result
    beside its view set; returns (view set, result, path written) per view set.

    ``executor`` makes a :class:`concurrent.futures.Executor` for the feature analysis
    (default: in this process). Raises :class:`SelectivityError` for a request that
    cannot be measured and :class:`pipeline.manifest.ManifestError` for a bad manifest.
    """
    path = Path(manifest_path)
    manifest = Manifest.load(path)
    say = progress or (lambda _line: None)
    complete = [vs for vs in manifest.view_sets if vs.complete]
    if settings.keys:
        unknown = sorted(set(settings.keys) - {vs.key for vs in manifest.view_sets})
        if unknown:
            raise SelectivityError(
                f"{path}: no view set with key {', '.join(unknown)} (keys: "
                f"{', '.join(vs.key for vs in manifest.view_sets) or 'none'})"
            )
        complete = [vs for vs in complete if vs.key in settings.keys]
    if not complete:
        raise SelectivityError(f"{path}: no complete view set; run `ncore-prep perturb` first")
    if settings.views < 1 or settings.max_clips < 2 * FOLDS:
        raise SelectivityError(f"need --views >= 1 and --max-clips >= {2 * FOLDS}")
    from pipeline.viewset import cache_folder_problem

    for vs in complete:  # before minutes of analysis, not after them
        misplaced = cache_folder_problem(manifest, path, vs, None)
        if misplaced:  # selectivity.json is written into the view set's own folder only
            raise SelectivityError(f"{path}: {misplaced}")
        check_writable(vs.folder_path(path))  # only once the folder is known to be its own
    cache: dict[str, dict[str, np.ndarray] | str] = {}  # originals, shared by view sets
    results = []
    for vs in complete:
        views = min(settings.views, vs.views)
        failed = {f.id for f in vs.failures}
        stored = [c.id for c in manifest.clips if c.id not in failed]
        chosen = choose_clips(stored, settings.max_clips, settings.seed)
        say(f"view set {vs.kind} {vs.key}: {len(chosen)} clips, {views} view(s) each")
        audio = _read_view_set(LocatedManifest(manifest, path), vs, chosen, views)
        order = [c for c in chosen if c in audio]
        # Rows to analyse per clip: the original only when not analysed yet.
        todo = [audio[c] if c not in cache else audio[c][1:] for c in order]
        if executor is None:
            analysed = [_features_of_rows(rows) for rows in todo]
        else:
            with executor() as pool:
                analysed = list(pool.map(_features_of_rows, todo, chunksize=4))
        features_of: dict[str, list[dict[str, np.ndarray] | str]] = {}
        for c, rows in zip(order, analysed, strict=True):
            if c not in cache:
                cache[c] = rows[0]
                rows = rows[1:]
            features_of[c] = [cache[c], *rows]
        result = measure_view_set(manifest, vs, features_of, views, settings.seed)
        out = result_path(vs.folder_path(path))
        try:
            write_json(out, result.to_dict())
        except OSError as e:
            raise SelectivityError(f"{out}: cannot write the result ({os_reason(e)})") from None
        results.append((vs, result, out))
    return results
