"""``ncore-prep selectivity``: does each perturbation remove one factor and keep the other?

N-CORE rests on one premise (the paper's Table 3): the speaker perturbation p_s destroys
speaker cues and keeps emotion cues; the emotion perturbation p_e does the opposite. This
module measures that premise on the cached views, at the signal level, with no model:

1. For each view set, up to ``max_clips`` stored clips (a seeded subsample when there are
   more) and their first ``views`` views are read from the shards.
2. Every signal (original and view) is described by the documented acoustic
   :data:`FEATURE_SETS`: the cues a perturbation targets (F0 level and range, spectral
   envelope, level) and those it is meant to keep (F0 contour shape normalised for level
   and range, voicing and aperiodicity, duration and bursts, per-band temporal envelope).
   WORLD (DIO + StoneMask, F0 searched in 40 to 1600 Hz, wider than the perturbations'
   analysis so that views shifted by p_s stay measurable) gives F0, envelope and
   aperiodicity.
3. For each label (speaker, emotion) and feature set, a linear probe (standardised
   logistic regression) is cross-fitted over clips (stratified 5 folds, all views of a clip
   in the clip's fold) in three conditions: ``originals`` (fitted and scored on originals),
   ``views`` (fitted and scored on views) and ``transfer`` (fitted on originals, scored on
   the views of held-out clips). Scores are balanced accuracy with a 95 % bootstrap
   interval over clips (1000 resamples), next to chance (1 / classes) and next to the
   ``other label`` reference: how well the other label alone predicts this one (on an
   entangled corpus it is far above chance, and so is every feature set).
4. Verdicts, per view set, with thresholds stated in the output (:data:`THRESHOLDS`):
   a feature set *decodes* a label when its balanced accuracy on the originals is at least
   ``decodable_margin`` above the floor (the larger of chance and the other-label
   reference) with the interval's lower end above the floor; the share it *retains* in a
   condition is (score - floor) / (originals - floor). The perturbation **removes** its
   target unless some decoding feature set retains more than ``removed_max`` in
   ``views`` or ``transfer`` with the lower end of its interval (evidence, so that the
   maximum over many noisy feature sets does not decide alone); it **keeps** the other
   label when some decoding feature set retains at least ``kept_min`` in both.

The result is written beside the view set as ``selectivity.json`` (:func:`result_path`)
and shown by ``ncore-prep inspect``.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import os_reason, probe_writable, write_json
from pipeline.errors import PipelineError
from pipeline.manifest import SAMPLE_RATE, Manifest, ViewSet, other_label, read_regular_file
from pipeline.rng import make_rng, stable_seed

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FILE_NAME = "selectivity.json"
LABELS = ("speaker", "emotion")
CONDITIONS = ("originals", "views", "transfer")
# What each kind of view set is meant to remove (its target) and to keep.
TARGET = {"speaker": "speaker", "emotion": "emotion"}
KEPT = {"speaker": "emotion", "emotion": "speaker"}
PERTURBATION_NAME = {"speaker": "p_s", "emotion": "p_e"}

FOLDS = 5
BOOTSTRAP = 1000
DEFAULT_MAX_CLIPS = 300
DEFAULT_VIEWS = 2
# WORLD settings of the feature analysis (not those of the perturbation): a wide F0 search
# so that a view shifted by p_s (up to x2 or /2) is still analysed as voiced.
F0_FLOOR_HZ = 40.0
F0_CEIL_HZ = 1600.0
FRAME_S = 0.005
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
class FeatureSet:
    """A documented group of acoustic features. ``targeted_by`` lists the view-set kinds
    whose perturbation is meant to destroy these cues (empty: a cue both keep)."""

    name: str
    description: str
    targeted_by: tuple[str, ...]


FEATURE_SETS: tuple[FeatureSet, ...] = (
    FeatureSet(
        "f0_level",
        "median log2 F0 of the voiced frames",
        ("speaker",),
    ),
    FeatureSet(
        "f0_range",
        "10-90 % percentile range of log2 F0 over the voiced frames (octaves)",
        ("speaker", "emotion"),
    ),
    FeatureSet(
        "envelope",
        "mean WORLD spectral envelope of the voiced frames (all frames when none is "
        "voiced) at 24 log-spaced frequencies from 100 Hz to 7 kHz, in dB, minus its mean "
        "over the 24 (formants and tilt, not level)",
        ("speaker", "emotion"),
    ),
    FeatureSet(
        "level",
        "RMS level of the clip (dBFS); peak and frame-level percentiles are left out: after "
        "RMS normalisation they measure the crest factor, i.e. the temporal structure",
        ("emotion",),
    ),
    FeatureSet(
        "f0_contour",
        "log F0 of the voiced frames normalised to zero mean and unit spread within the "
        "clip, sampled at 8 equally spaced points, plus the rate of F0 direction changes per "
        "voiced second (shape, not level or range)",
        ("emotion",),
    ),
    FeatureSet(
        "voicing",
        "voiced share of the active frames, voiced runs per second, median frame-to-frame "
        "log-F0 change (jitter) and mean D4C aperiodicity (dB) of the voiced frames below "
        "1 kHz, 1-4 kHz and above 4 kHz",
        (),
    ),
    FeatureSet(
        "duration",
        "clip duration, active duration (10 ms frames within 30 dB of the loudest) and "
        "number of active runs (bursts)",
        (),
    ),
    FeatureSet(
        "temporal_envelope",
        "per band (0-0.5, 0.5-1.5, 1.5-3.5, 3.5-8 kHz), the share of the band's normalised "
        "energy-envelope modulation in 1-3, 3-6, 6-12 and 12-25 Hz, and the envelope's "
        "coefficient of variation",
        (),
    ),
)
FEATURE_NAMES = tuple(f.name for f in FEATURE_SETS)

_ENVELOPE_HZ = np.geomspace(100.0, 7000.0, 24)
_CONTOUR_POINTS = 8
_TEMPORAL_BANDS_HZ = ((0.0, 500.0), (500.0, 1500.0), (1500.0, 3500.0), (3500.0, 8000.0))
_MODULATION_HZ = ((1.0, 3.0), (3.0, 6.0), (6.0, 12.0), (12.0, 25.0))


# ------------------------------------------------------------------------------ features


def _frame_levels_db(x: np.ndarray, frame: int) -> np.ndarray:
    """RMS level (dBFS) of consecutive ``frame``-sample frames, shape (frames,)."""
    count = max(1, x.size // frame)
    frames = x[: count * frame].reshape(count, -1) if x.size >= frame else x[None, :]
    return 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def _runs(mask: np.ndarray) -> int:
    """Number of runs of True in a boolean array."""
    m = np.asarray(mask, dtype=np.int8)
    return int(np.sum(np.diff(np.concatenate([[0], m])) == 1))


def _stft_power(x: np.ndarray, n_fft: int = 512, hop: int = 160) -> np.ndarray:
    """Power spectrogram (bins, frames) with a Hann window; 10 ms hop at 16 kHz."""
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    count = 1 + (x.size - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(count)[:, None]
    frames = x[index] * np.hanning(n_fft)[None, :]
    return (np.abs(np.fft.rfft(frames, axis=1)) ** 2).T


def clip_features(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> dict[str, np.ndarray]:
    """Every feature set of one signal: ``{name: float64 vector}`` (NaN where undefined,
    e.g. F0 features of a clip with no voiced frame; probes impute the median).

    ``audio`` float (T,) at ``sample_rate``. Raises
    :class:`pipeline.perturb.PerturbationError` for a signal WORLD cannot analyse.
    """
    from pipeline.perturb import analyse

    x = np.asarray(audio, dtype=np.float64)
    analysis = analyse(x, sample_rate, "dio", f0_floor_hz=F0_FLOOR_HZ, f0_ceil_hz=F0_CEIL_HZ)
    f0 = analysis.f0[: max(1, round(x.size / sample_rate / FRAME_S))]
    sp, ap = analysis.sp[: f0.size], analysis.ap[: f0.size]
    voiced = f0 > 0
    nan = np.nan
    out: dict[str, np.ndarray] = {}

    # Level and activity from 10 ms frames.
    frame = sample_rate // 100
    levels = _frame_levels_db(x, frame)
    active = levels > levels.max() - 30.0
    out["level"] = np.array([10.0 * np.log10(np.mean(x**2) + 1e-12)])

    # F0 level and range.
    if voiced.sum() >= 2:
        log_f0 = np.log2(f0[voiced])
        out["f0_level"] = np.array([np.median(log_f0)])
        out["f0_range"] = np.array([np.percentile(log_f0, 90) - np.percentile(log_f0, 10)])
        spread = log_f0.std()
        shape = (log_f0 - log_f0.mean()) / spread if spread > 1e-9 else log_f0 * 0.0
        points = np.interp(
            np.linspace(0, shape.size - 1, _CONTOUR_POINTS), np.arange(shape.size), shape
        )
        # Direction changes of the contour smoothed over 25 ms (5 frames), per voiced second.
        smooth = np.convolve(log_f0, np.ones(5) / 5, mode="valid")
        slope = np.sign(np.diff(smooth))
        slope = slope[slope != 0]
        changes = np.count_nonzero(np.diff(slope)) / (voiced.sum() * FRAME_S)
        out["f0_contour"] = np.concatenate([points, [changes]])
        jitter = float(np.median(np.abs(np.diff(log_f0))))
    else:
        out["f0_level"] = np.array([nan])
        out["f0_range"] = np.array([nan])
        out["f0_contour"] = np.full(_CONTOUR_POINTS + 1, nan)
        jitter = nan

    # Spectral envelope shape (level removed).
    rows = sp[voiced] if voiced.any() else sp
    envelope = 10.0 * np.log10(np.mean(rows, axis=0) + 1e-20)
    freqs = np.linspace(0.0, sample_rate / 2.0, envelope.size)
    bands = np.interp(_ENVELOPE_HZ, freqs, envelope)
    out["envelope"] = bands - bands.mean()

    # Voicing: voiced share of the active 5 ms frames, voiced runs, jitter, aperiodicity.
    hop = round(FRAME_S * sample_rate)
    active5 = _frame_levels_db(x, hop)
    active5 = active5 > active5.max() - 30.0
    span = min(active5.size, f0.size)
    in_active = voiced[:span][active5[:span]]
    voiced_share = float(in_active.mean()) if in_active.size else float(voiced.mean())
    seconds = x.size / sample_rate
    if voiced.any():
        ap_db = 20.0 * np.log10(np.clip(ap[voiced].mean(axis=0), 1e-6, 1.0))
        ap_freqs = np.linspace(0.0, sample_rate / 2.0, ap_db.size)
        ap_bands = [
            ap_db[(ap_freqs >= lo) & (ap_freqs < hi)].mean()
            for lo, hi in ((0.0, 1000.0), (1000.0, 4000.0), (4000.0, sample_rate / 2.0 + 1))
        ]
    else:
        ap_bands = [nan, nan, nan]
    out["voicing"] = np.array([voiced_share, _runs(voiced) / seconds, jitter, *ap_bands])

    # Duration and bursts.
    out["duration"] = np.array([seconds, active.sum() * frame / sample_rate, _runs(active)])

    # Per-band temporal envelope: modulation shares and variation.
    power = _stft_power(x)
    bin_hz = sample_rate / 512
    frame_rate = sample_rate / 160.0
    temporal = []
    for lo, hi in _TEMPORAL_BANDS_HZ:
        rows_b = power[int(lo / bin_hz) : max(int(lo / bin_hz) + 1, int(hi / bin_hz))]
        env = np.sqrt(rows_b.sum(axis=0))
        mean = env.mean()
        if mean <= 1e-12 or env.size < 4:
            temporal.extend([nan] * (len(_MODULATION_HZ) + 1))
            continue
        norm = env / mean - 1.0
        spectrum = np.abs(np.fft.rfft(norm * np.hanning(norm.size))) ** 2
        mod_hz = np.fft.rfftfreq(norm.size, 1.0 / frame_rate)
        energy = [spectrum[(mod_hz >= a) & (mod_hz < b)].sum() for a, b in _MODULATION_HZ]
        total = sum(energy)
        temporal.extend([e / total if total > 0 else nan for e in energy])
        temporal.append(float(np.std(env) / mean))
    out["temporal_envelope"] = np.array(temporal)
    return out


def _features_of_rows(rows: np.ndarray) -> list[dict[str, np.ndarray] | str]:
    """Features of every row of one clip (original and views); a row WORLD cannot analyse
    gives its reason instead. Runs in a worker process."""
    from pipeline.perturb import PerturbationError

    out: list[dict[str, np.ndarray] | str] = []
    for row in rows:
        try:
            out.append(clip_features(row))
        except PerturbationError as e:
            out.append(str(e))
    return out


# -------------------------------------------------------------------------------- probes


def _probe() -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(max_iter=2000, C=1.0),
    )


def _fit(x: np.ndarray, y: np.ndarray) -> Any:
    from sklearn.exceptions import ConvergenceWarning

    probe = _probe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=ConvergenceWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        probe.fit(x, y)
    return probe


def balanced_accuracy_ci(
    y: np.ndarray, correct: np.ndarray, rng: np.random.Generator, resamples: int = BOOTSTRAP
) -> tuple[float, float, float]:
    """Balanced accuracy and its 95 % percentile bootstrap interval over clips.

    ``y`` (clips,) the true class of each clip; ``correct`` (clips, K) 1 where prediction
    k of the clip is right (K predictions per clip: one per view, or 1). Recall per class
    pools the predictions of the class's clips; clips are resampled with replacement.
    """
    y = np.asarray(y)
    hits = np.asarray(correct, dtype=np.float64).reshape(len(y), -1)
    per_clip, per_count = hits.sum(axis=1), np.full(len(y), hits.shape[1], dtype=np.float64)
    classes = np.unique(y)

    def score(weights: np.ndarray) -> np.ndarray:
        # weights (R, clips) -> balanced accuracy (R,), over the classes present.
        recalls = []
        for c in classes:
            member = y == c
            n = weights[:, member] @ per_count[member]
            recalls.append(
                np.where(n > 0, (weights[:, member] @ per_clip[member]) / np.maximum(n, 1), np.nan)
            )
        return np.nanmean(np.stack(recalls), axis=0)

    point = float(score(np.ones((1, len(y))))[0])
    draws = rng.integers(0, len(y), size=(resamples, len(y)))
    weights = np.zeros((resamples, len(y)))
    np.add.at(weights, (np.arange(resamples)[:, None], draws), 1.0)
    boot = score(weights)
    return point, float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def cross_fitted_correct(
    x_orig: np.ndarray, x_views: np.ndarray, y: np.ndarray, seed: int, folds: int = FOLDS
) -> dict[str, np.ndarray]:
    """Out-of-fold correctness of the three probes, per clip.

    ``x_orig`` (clips, D), ``x_views`` (clips, K, D), ``y`` (clips,). Returns
    ``{"originals": (clips, 1), "views": (clips, K), "transfer": (clips, K)}`` booleans.
    Folds are stratified over clips; a clip's views are always in the clip's fold.
    """
    from sklearn.model_selection import StratifiedKFold

    n, k, d = x_views.shape
    out = {
        "originals": np.zeros((n, 1), dtype=bool),
        "views": np.zeros((n, k), dtype=bool),
        "transfer": np.zeros((n, k), dtype=bool),
    }
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed % (2**32))
    for train, test in splitter.split(x_orig, y):
        on_orig = _fit(x_orig[train], y[train])
        out["originals"][test, 0] = on_orig.predict(x_orig[test]) == y[test]
        flat_test = x_views[test].reshape(-1, d)
        out["transfer"][test] = (on_orig.predict(flat_test) == np.repeat(y[test], k)).reshape(-1, k)
        on_views = _fit(x_views[train].reshape(-1, d), np.repeat(y[train], k))
        out["views"][test] = (on_views.predict(flat_test) == np.repeat(y[test], k)).reshape(-1, k)
    return out


# ------------------------------------------------------------------------------- results


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
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SelectivityError(f"{where}: field {key!r} must be a number, got {value!r}")
    return float(value)


def _fraction(value: Any, key: str, where: str) -> float:
    """A balanced accuracy or chance level: in [0, 1] (NaN where no probe could be fitted)."""
    number = _number(value, key, where)
    if not (np.isnan(number) or 0.0 <= number <= 1.0):
        raise SelectivityError(f"{where}: field {key!r} must lie in [0, 1], got {value!r}")
    return number


def _count(value: Any, key: str, where: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SelectivityError(
            f"{where}: field {key!r} must be an integer >= {minimum}, got {value!r}"
        )
    return value


def _choice(value: Any, key: str, choices: Sequence[str], where: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise SelectivityError(
            f"{where}: field {key!r} must be one of {', '.join(choices)}, got {value!r}"
        )
    return value


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
    manifest: Manifest, manifest_path: Path, view_set: ViewSet, wanted: set[str], views: int
) -> dict[str, np.ndarray]:
    """``{clip id: float32 (1 + views, T)}`` for the wanted clips, whole shards read once;
    every shard checked to be the one the manifest lists (``pipeline.shards.open_shard``)."""
    from pipeline.shards import open_view_set

    out: dict[str, np.ndarray] = {}
    for reader in open_view_set(manifest, manifest_path, view_set)[1]:
        if not wanted.intersection(reader.clip_ids):
            continue
        rows = list(range(1 + views))
        for clip_id, audio in zip(
            reader.clip_ids, reader.read_range(0, len(reader), rows), strict=True
        ):
            if clip_id in wanted:
                out[clip_id] = audio
    return out


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
    onehot = (other[:, None] == np.unique(other)[None, :]).astype(np.float64)
    ref = cross_fitted_correct(onehot, onehot[:, None, :], y, seed)
    rng = make_rng("selectivity-bootstrap", *seed_parts, label, OTHER_LABEL)
    point, lo, hi = balanced_accuracy_ci(y, ref["originals"], rng)
    rows.append(Row(label, OTHER_LABEL, "originals", point, (lo, hi), chance, len(y)))
    floor_ref = point
    for name, (x_orig, x_views) in features.items():
        correct = cross_fitted_correct(x_orig[keep], x_views[keep], y, seed)
        scores = {}
        for condition in CONDITIONS:
            rng = make_rng("selectivity-bootstrap", *seed_parts, label, name, condition)
            scores[condition] = balanced_accuracy_ci(y, correct[condition], rng)
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
        audio = _read_view_set(manifest, path, vs, set(chosen), views)
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


# ------------------------------------------------------------------------------- display


def table_rows(result: Selectivity):
    """The rows of the displayed tables, in order: ``(label, features, rows)`` with the
    other-label reference (one row) first, then each feature set's rows in ``CONDITIONS``
    order (feature sets without rows left out)."""
    for label in LABELS:
        for r in result.rows:
            if r.label == label and r.features == OTHER_LABEL:
                yield label, OTHER_LABEL, [r]
        for features in (*FEATURE_NAMES, ALL_FEATURES):
            try:
                yield label, features, [result.row(label, features, c) for c in CONDITIONS]
            except KeyError:
                continue


def format_table(result: Selectivity, indent: str = "") -> list[str]:
    """The result as text: one line per (label, feature set) with the three conditions,
    then the verdicts."""
    lines = [
        f"{indent}selectivity of {PERTURBATION_NAME[result.kind]} ({result.clips} clips, "
        f"{result.views_used} view(s) each; balanced accuracy % [95 % interval]; "
        f"retained = share of (originals - floor) left)",
        f"{indent}{'label':<8} {'features':<18} {'chance':>6}  {'originals':<20} "
        f"{'views':<20} {'transfer':<20} {'retained v/t':>12}",
    ]

    def cell(r: Row) -> str:
        return f"{100 * r.balanced_accuracy:5.1f} [{100 * r.ci95[0]:4.1f}-{100 * r.ci95[1]:5.1f}]"

    for label, features, got in table_rows(result):
        if features == OTHER_LABEL:
            lines.append(
                f"{indent}{label:<8} {OTHER_LABEL:<18} {100 * got[0].chance:6.1f}  "
                f"{cell(got[0]):<20} {'':<20} {'':<20}"
            )
            continue
        kept = "/".join("-" if r.retained is None else f"{r.retained:.2f}" for r in got[1:])
        lines.append(
            f"{indent}{label:<8} {features:<18} {100 * got[0].chance:6.1f}  "
            + " ".join(f"{cell(r):<20}" for r in got)
            + f" {kept:>12}"
        )
    lines.extend(f"{indent}{v}" for v in result.verdicts)
    return lines


def markdown_table(result: Selectivity) -> str:
    """The result as a Markdown table (for README and benchmarks)."""

    def cell(r: Row) -> str:
        return f"{100 * r.balanced_accuracy:.1f} [{100 * r.ci95[0]:.1f}, {100 * r.ci95[1]:.1f}]"

    lines = [
        "| label | features | chance | originals | views | transfer | retained views / transfer |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, features, got in table_rows(result):
        if features == OTHER_LABEL:
            lines.append(
                f"| {label} | {OTHER_LABEL} | {100 * got[0].chance:.1f} | {cell(got[0])} | | | |"
            )
            continue
        kept = " / ".join("–" if r.retained is None else f"{r.retained:.2f}" for r in got[1:])
        lines.append(
            f"| {label} | {features} | {100 * got[0].chance:.1f} | "
            + " | ".join(cell(r) for r in got)
            + f" | {kept} |"
        )
    return "\n".join(lines) + "\n"
