"""Linear probes: how much of a label a frozen embedding still carries (docs/evaluation.md).

The adversarial head's accuracy falling to chance shows only that *that* head was beaten.
Disentanglement is measured here instead, with a fresh logistic regression on frozen
embeddings (view 0). A probe for the discarded label y- that stays well above chance means
the information is still there (leakage); the same probe on the un-fine-tuned backbone
gives the starting point, and a probe for the kept label y+ always stands next to it.

The main protocol (:func:`held_out_probe`) fits the probe on the **training split's**
embeddings and scores it on the **test split**, with a bootstrap 95 % interval over test
clips (:func:`bootstrap_interval`); :func:`paired_difference` compares two runs on the
same test clips. Cross-validation inside the test split (:func:`linear_probe`) stays as a
secondary column (docs/evaluation.md says when it is the only defined figure).

The statistics themselves live once in ``pipeline/stats/`` (torch-free, shared with
``ncore-prep selectivity``); this module names what the trainer uses and adds
:func:`label_probes`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.stats.bootstrap import (
    CONFIDENCE,
    DEFAULT_BOOTSTRAP,
    bootstrap_interval,
    paired_difference,
)
from pipeline.stats.crossfit import DEFAULT_FOLDS, ProbeResult, linear_probe, nan_probe
from pipeline.stats.probe import HeldOutProbe, fit_accuracy, held_out_probe, one_hot
from pipeline.stats.protocol import (
    PerturbationProbe,
    held_out_label_only_probe,
    label_only_probe,
    perturbation_probe,
    transfer_probe,
    view_shift,
)

__all__ = [
    "CONFIDENCE",
    "DEFAULT_BOOTSTRAP",
    "DEFAULT_FOLDS",
    "HeldOutProbe",
    "PerturbationProbe",
    "ProbeResult",
    "bootstrap_interval",
    "fit_accuracy",
    "held_out_label_only_probe",
    "held_out_probe",
    "label_only_probe",
    "label_probes",
    "linear_probe",
    "nan_probe",
    "one_hot",
    "paired_difference",
    "perturbation_probe",
    "transfer_probe",
    "view_shift",
]


def label_probes(
    embeddings: np.ndarray,
    y_task: Sequence[int] | np.ndarray,
    y_adv: Sequence[int] | np.ndarray,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
) -> dict[str, ProbeResult]:
    """Probes of both labels on the same embeddings: ``{"task": y+, "adv": y-}``."""
    return {
        "task": linear_probe(embeddings, y_task, folds=folds, seed=seed),
        "adv": linear_probe(embeddings, y_adv, folds=folds, seed=seed),
    }
