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

Modules: :mod:`~pipeline.selectivity.features` (the acoustic feature sets),
:mod:`~pipeline.selectivity.measure` (reading, probing, verdicts; the statistics are those
of ``pipeline/stats/``), :mod:`~pipeline.selectivity.records` (``selectivity.json``) and
:mod:`~pipeline.selectivity.tables` (one row walk for the text, Markdown and HTML tables).
"""

from pipeline.selectivity.features import FEATURE_NAMES, FEATURE_SETS, FeatureSet, clip_features
from pipeline.selectivity.measure import (
    DEFAULT_MAX_CLIPS,
    DEFAULT_VIEWS,
    SelectivitySettings,
    choose_clips,
    measure_view_set,
    run_selectivity,
    verdicts,
)
from pipeline.selectivity.records import (
    ALL_FEATURES,
    BOOTSTRAP,
    CONDITIONS,
    FILE_NAME,
    FOLDS,
    KEPT,
    LABELS,
    OTHER_LABEL,
    PERTURBATION_NAME,
    SCHEMA_VERSION,
    TARGET,
    THRESHOLDS,
    Row,
    Selectivity,
    SelectivityError,
    check_writable,
    load_result,
    result_path,
)
from pipeline.selectivity.tables import TableRow, format_table, markdown_table, table_rows

__all__ = [
    "ALL_FEATURES",
    "BOOTSTRAP",
    "CONDITIONS",
    "DEFAULT_MAX_CLIPS",
    "DEFAULT_VIEWS",
    "FEATURE_NAMES",
    "FEATURE_SETS",
    "FILE_NAME",
    "FOLDS",
    "KEPT",
    "LABELS",
    "OTHER_LABEL",
    "PERTURBATION_NAME",
    "SCHEMA_VERSION",
    "TARGET",
    "THRESHOLDS",
    "FeatureSet",
    "Row",
    "Selectivity",
    "SelectivityError",
    "SelectivitySettings",
    "TableRow",
    "check_writable",
    "choose_clips",
    "clip_features",
    "format_table",
    "load_result",
    "markdown_table",
    "measure_view_set",
    "result_path",
    "run_selectivity",
    "table_rows",
    "verdicts",
]
