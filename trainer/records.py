"""The evaluation's records: one seed's test record, the run summary, a probe report.

Frozen dataclasses with ``to_dict`` / ``from_dict`` (every field parsed, one-line errors
naming the file and field, ``pipeline/fields.py``), read and written only through
``trainer/rundir.py``, which checks their ``schema_version`` (in one place,
``rundir.parse_version``). ``to_dict`` gives the JSON layout key for key, in the order the
files have always had; ``from_dict(to_dict())`` is the same record. No torch, no files.

- :class:`EvaluationRecord`: ``seed-<s>/evaluation.json`` (``trainer.summary.seed_record``
  and ``trainer.evaluate.evaluate_seed``), with its parts :class:`AdversaryRecord`
  (``adversary``), :class:`Invariance` (``perturbation``) and :class:`ClipPredictions`
  (``clips``); the probe scores (``probes``) are the probes' own dicts
  (``trainer.probes.ProbeResult`` / ``HeldOutProbe``), label -> field -> number;
- :class:`SummaryRecord`: ``summary.json`` (``trainer.summary.summarize``), its statistics
  :class:`Stat` (mean, sample std, n, values and, for bootstrapped metrics, ``ci95``);
- :class:`ProbeReport`: ``probe-<manifest>.json`` (``trainer.summary.probe_summary``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline.fields import (
    check_keys,
    parse_int,
    parse_ints,
    parse_names,
    parse_number,
    parse_object,
    parse_str,
)
from trainer.errors import TrainerError

STD_NOTE = "sample standard deviation over seeds (ddof=1); null with a single seed"
CI_NOTE = (
    "ci95: bootstrap 95 % percentile interval of the mean over seeds, each seed's test clips "
    "resampled with replacement (1000 resamples); training is held fixed"
)

E = TrainerError  # the error every parser below raises


def _obj(value: Any, where: str) -> dict[str, Any]:
    return parse_object(value, where, E)


def _num(value: Any, name: str, where: str, optional: bool = True) -> float | None:
    return parse_number(value, name, where, optional, E)


def _numbers(value: Any, name: str, where: str) -> dict[str, float | None]:
    """An object of numbers (or nulls), e.g. a probe's scores or the head's metrics."""
    data = _obj(value, f"{where}: field {name!r}")
    out: dict[str, float | None] = {}
    for key, number in data.items():
        if isinstance(number, int) and not isinstance(number, bool):
            out[key] = number  # counts stay integers (classes, samples)
        else:
            out[key] = _num(number, f"{name}.{key}", where)
    return out


# ----- evaluation.json -------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassScores:
    """One task class of the per-class report: fractions and ``support`` (test clips)."""

    precision: float
    recall: float
    f1: float
    support: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
        }

    @classmethod
    def from_dict(cls, data: Any, name: str, where: str) -> ClassScores:
        data = _obj(data, f"{where}: field {name!r}")
        values = [_num(data.get(k), f"{name}.{k}", where, False) for k in ("precision", "recall")]
        f1 = _num(data.get("f1"), f"{name}.f1", where, False)
        support = parse_int(data.get("support"), f"{name}.support", where, 0, error=E)
        return cls(*values, f1, support)


@dataclass(frozen=True)
class AdversaryRecord:
    """``evaluation.json`` ``adversary``: the selected model's adversary (``head``) and a
    standardised linear probe (``probe``) reading y- from the training split's embeddings,
    scored there (fractions; ``head`` None without clips), ``chance`` = 1 / y- classes,
    the reversed gradient's share of the CE gradient in the selected epoch (``grad_share``,
    None when not recorded), the adversary's ``input`` and ``condition``."""

    head: float | None
    probe: float | None
    chance: float | None
    grad_share: float | None
    input: str
    condition: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "probe": self.probe,
            "chance": self.chance,
            "grad_share": self.grad_share,
            "input": self.input,
            "condition": self.condition,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> AdversaryRecord:
        inside = f"{where}: field 'adversary'"
        data = _obj(data, inside)
        check_keys(
            data, ("head", "probe", "chance", "grad_share", "input", "condition"), inside, error=E
        )
        numbers = [_num(data[k], f"adversary.{k}", where) for k in ("head", "probe", "chance")]
        return cls(
            *numbers,
            _num(data["grad_share"], "adversary.grad_share", where),
            parse_str(data["input"], "adversary.input", where, error=E),
            parse_str(data["condition"], "adversary.condition", where, error=E),
        )


@dataclass(frozen=True)
class InvarianceScores:
    """One model's invariance: per label the probe ``transfer`` (fitted on the training
    originals, scored on the test views) and its ``chance``; the ``view_shift`` (None in
    records from before it replaced the total-variance distance)."""

    task_transfer: float | None
    task_chance: float | None
    adv_transfer: float | None
    adv_chance: float | None
    view_shift: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": {"transfer": self.task_transfer, "chance": self.task_chance},
            "adv": {"transfer": self.adv_transfer, "chance": self.adv_chance},
            "view_shift": self.view_shift,
        }

    @classmethod
    def from_dict(cls, data: Any, name: str, where: str) -> InvarianceScores:
        data = _obj(data, f"{where}: field 'perturbation.{name}'")
        label = {
            k: _obj(data.get(k), f"{where}: field 'perturbation.{name}.{k}'")
            for k in ("task", "adv")
        }
        at = f"perturbation.{name}"
        return cls(
            _num(label["task"].get("transfer"), f"{at}.task.transfer", where),
            _num(label["task"].get("chance"), f"{at}.task.chance", where),
            _num(label["adv"].get("transfer"), f"{at}.adv.transfer", where),
            _num(label["adv"].get("chance"), f"{at}.adv.chance", where),
            _num(data.get("view_shift"), f"{at}.view_shift", where),
        )


@dataclass(frozen=True)
class Invariance:
    """``evaluation.json`` ``perturbation``: how invariant each model (``finetuned``,
    ``backbone``) is to the run's perturbation ``kind`` over ``views`` perturbed views."""

    kind: str
    views: int
    finetuned: InvarianceScores
    backbone: InvarianceScores

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "views": self.views,
            "finetuned": self.finetuned.to_dict(),
            "backbone": self.backbone.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Invariance:
        data = _obj(data, f"{where}: field 'perturbation'")
        return cls(
            parse_str(data.get("kind"), "perturbation.kind", where, error=E),
            parse_int(data.get("views"), "perturbation.views", where, 0, error=E),
            InvarianceScores.from_dict(data.get("finetuned"), "finetuned", where),
            InvarianceScores.from_dict(data.get("backbone"), "backbone", where),
        )


@dataclass(frozen=True)
class ClipPredictions:
    """``evaluation.json`` ``clips``: every test clip's id, labels, the task head's
    prediction and each held-out probe's (``probe_pred``: probe key -> class per clip, -1
    where the class never occurs in training), for intervals and paired comparisons."""

    ids: tuple[str, ...]
    y_task: tuple[int, ...]
    y_adv: tuple[int, ...]
    task_pred: tuple[int, ...]
    probe_pred: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ids": list(self.ids),
            "y_task": list(self.y_task),
            "y_adv": list(self.y_adv),
            "task_pred": list(self.task_pred),
            "probe_pred": {k: list(v) for k, v in self.probe_pred.items()},
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ClipPredictions:
        data = _obj(data, f"{where}: field 'clips'")
        ids = parse_names(data.get("ids"), "clips.ids", where, E)
        n = len(ids)

        def labels(value: Any, name: str) -> tuple[int, ...]:
            return parse_ints(value, f"clips.{name}", where, n, error=E)

        probe = _obj(data.get("probe_pred", {}), f"{where}: field 'clips.probe_pred'")
        return cls(
            ids,
            labels(data.get("y_task"), "y_task"),
            labels(data.get("y_adv"), "y_adv"),
            labels(data.get("task_pred"), "task_pred"),
            {k: labels(v, f"probe_pred.{k}") for k, v in probe.items()},
        )


@dataclass(frozen=True)
class Selection:
    """Which split selected a seed's epoch (``val``, ``test``; None: not recorded) and by
    which metric."""

    split: str | None
    metric: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "metric": self.metric}

    @classmethod
    def from_dict(cls, data: Any, name: str, where: str) -> Selection:
        data = _obj(data, f"{where}: field {name!r}")
        return cls(
            parse_str(data.get("split"), f"{name}.split", where, True, E),
            parse_str(data.get("metric"), f"{name}.metric", where, True, E),
        )


# Probe scores: model ("finetuned", "backbone", "labels_only", "<model>_cv") -> label
# ("task", "adv") -> the probe's fields (balanced_accuracy, chance, counts...).
Probes = Mapping[str, Mapping[str, Mapping[str, float | int | None]]]


@dataclass(frozen=True)
class EvaluationRecord:
    """``seed-<s>/evaluation.json``: one seed's test pass (docs/evaluation.md).

    ``metrics``: the task head's ``accuracy``, ``macro_f1``, ``uar`` and the adversarial
    head's ``adv_head_accuracy`` (fractions; None when undefined); ``per_class``: the task
    classes' scores in label order; ``confusion_matrix``: rows true, columns predicted;
    ``probes``: the leakage probes (:data:`Probes`). The selected model (``best_epoch``,
    ``val_acc_task``, ``selection``), the seed's split as drawn (``split``,
    ``pipeline.splits.SeedSplit.describe``), the ``adversary``, the view set measured
    (``view_set``), the invariance (``perturbation``) and the per-clip predictions
    (``clips``) are None when not recorded (left out of the file).
    """

    seed: int
    test_clips: int | None
    task_names: tuple[str, ...]
    adv_names: tuple[str, ...]
    metrics: Mapping[str, float | None]
    per_class: Mapping[str, ClassScores]
    confusion_matrix: tuple[tuple[int, ...], ...]
    probes: Probes
    best_epoch: int | None = None
    val_acc_task: float | None = None
    selection: Selection | None = None
    split: Mapping[str, Any] | None = None
    adversary: AdversaryRecord | None = None
    view_set: str | None = None
    perturbation: Invariance | None = None
    clips: ClipPredictions | None = None

    def replace(self, **changes: Any) -> EvaluationRecord:
        return replace(self, **changes)

    def probe_score(self, model: str, label: str) -> float | None:
        """The balanced accuracy of probe ``model`` / ``label`` (None when not run)."""
        probe = self.probes.get(model, {}).get(label)
        return None if probe is None else probe.get("balanced_accuracy")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"seed": self.seed}
        if self.test_clips is not None:
            data["test_clips"] = self.test_clips
        data |= {
            "labels": {"task": list(self.task_names), "adv": list(self.adv_names)},
            "metrics": dict(self.metrics),
            "per_class": {k: v.to_dict() for k, v in self.per_class.items()},
            "confusion_matrix": [list(row) for row in self.confusion_matrix],
            "probes": {m: {k: dict(v) for k, v in by.items()} for m, by in self.probes.items()},
        }
        optional = {
            "best_epoch": self.best_epoch,
            "val_acc_task": self.val_acc_task,
            "selection": self.selection and self.selection.to_dict(),
            "split": None if self.split is None else dict(self.split),
            "adversary": self.adversary and self.adversary.to_dict(),
            "view_set": self.view_set,
            "perturbation": self.perturbation and self.perturbation.to_dict(),
            "clips": self.clips and self.clips.to_dict(),
        }
        return data | {k: v for k, v in optional.items() if v is not None}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> EvaluationRecord:
        data = _obj(data, where)
        known = [f for f in cls.__dataclass_fields__ if f not in ("task_names", "adv_names")]
        optional = [f for f in known if cls.__dataclass_fields__[f].default is None]
        check_keys(
            data,
            {*known, "labels", "schema_version"},
            where,
            {*optional, "test_clips", "schema_version"},
            E,
        )
        labels = _obj(data["labels"], f"{where}: field 'labels'")
        task_names = parse_names(labels.get("task"), "labels.task", where, E)
        adv_names = parse_names(labels.get("adv"), "labels.adv", where, E)
        per_class = _obj(data["per_class"], f"{where}: field 'per_class'")
        matrix = data["confusion_matrix"]
        size = len(task_names)
        if not isinstance(matrix, list) or len(matrix) != size:
            raise E(
                f"{where}: field 'confusion_matrix' must be a square matrix of counts, one row "
                "per task label"
            )
        rows = tuple(parse_ints(r, "confusion_matrix", where, size, 0, E) for r in matrix)
        probes = {
            model: {
                label: _numbers(v, f"probes.{model}.{label}", where)
                for label, v in _obj(by, f"{where}: field 'probes.{model}'").items()
            }
            for model, by in _obj(data["probes"], f"{where}: field 'probes'").items()
        }
        get = data.get
        return cls(
            seed=parse_int(data["seed"], "seed", where, error=E),
            test_clips=parse_int(get("test_clips"), "test_clips", where, 0, True, E),
            task_names=task_names,
            adv_names=adv_names,
            metrics=_numbers(data["metrics"], "metrics", where),
            per_class={
                name: ClassScores.from_dict(per_class.get(name), f"per_class.{name}", where)
                for name in task_names
            },
            confusion_matrix=rows,
            probes=probes,
            best_epoch=parse_int(get("best_epoch"), "best_epoch", where, 0, True, E),
            val_acc_task=_num(get("val_acc_task"), "val_acc_task", where),
            selection=None
            if get("selection") is None
            else Selection.from_dict(data["selection"], "selection", where),
            split=None if get("split") is None else _obj(data["split"], f"{where}: field 'split'"),
            adversary=None
            if get("adversary") is None
            else AdversaryRecord.from_dict(data["adversary"], where),
            view_set=parse_str(get("view_set"), "view_set", where, True, E),
            perturbation=None
            if get("perturbation") is None
            else Invariance.from_dict(data["perturbation"], where),
            clips=None if get("clips") is None else ClipPredictions.from_dict(data["clips"], where),
        )


# ----- summary.json ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Stat:
    """A figure over seeds: ``mean`` and ``std`` (sample std, ddof=1; None with fewer than
    two finite values; ``mean`` None with none), ``n`` finite values of ``values`` (one per
    seed, None where undefined). ``ci95`` (``bootstrapped`` metrics only; None without
    test clips to resample): the bootstrap 95 % interval of the mean, [low, high]."""

    mean: float | None
    std: float | None
    n: int
    values: tuple[float | None, ...]
    ci95: tuple[float, float] | None = None
    bootstrapped: bool = False  # whether the file has a "ci95" key (null or an interval)

    def to_dict(self) -> dict[str, Any]:
        data = {"mean": self.mean, "std": self.std, "n": self.n, "values": list(self.values)}
        if self.bootstrapped:
            data["ci95"] = None if self.ci95 is None else list(self.ci95)
        return data

    def with_interval(self, interval: Sequence[float] | None) -> Stat:
        return replace(self, ci95=None if interval is None else tuple(interval), bootstrapped=True)

    @classmethod
    def from_dict(cls, data: Any, name: str, where: str) -> Stat:
        data = _obj(data, f"{where}: field {name!r}")
        check_keys(
            data, ("mean", "std", "n", "values", "ci95"), f"{where}: field {name!r}", ("ci95",), E
        )
        values = data["values"]
        if not isinstance(values, list):
            raise E(f"{where}: field '{name}.values' must be a list")
        ci95 = data.get("ci95")
        if ci95 is not None and (not isinstance(ci95, list) or len(ci95) != 2):
            raise E(f"{where}: field '{name}.ci95' must be [low, high] or null")
        return cls(
            _num(data["mean"], f"{name}.mean", where),
            _num(data["std"], f"{name}.std", where),
            parse_int(data["n"], f"{name}.n", where, 0, error=E),
            tuple(_num(v, f"{name}.values", where) for v in values),
            None if ci95 is None else tuple(_num(v, f"{name}.ci95", where, False) for v in ci95),
            "ci95" in data,
        )


@dataclass(frozen=True)
class RunInfo:
    """What a summary says about the run it describes (``trainer.evaluate.run_info``; the
    report groups by ``dataset`` and ``task``). Every field None when not known."""

    run: str | None = None
    dataset: str | None = None
    task: str | None = None
    adversarial_label: str | None = None
    backbone: str | None = None
    view_kind: str | None = None
    views: int | None = None
    adversary: bool | None = None
    recipe: str | None = None
    adv_lr: float | None = None
    adv_steps: int | None = None
    adv_input: str | None = None
    adv_condition: str | None = None
    grl_objective: str | None = None
    lambda_reg: float | None = None
    lambda_grl: float | None = None
    grl_alpha: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> RunInfo:
        values: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            value = data.get(name)
            kind = cls.__dataclass_fields__[name].type
            if "bool" in kind:
                if value is not None and not isinstance(value, bool):
                    raise E(f"{where}: field {name!r} must be true or false, got {value!r}")
            elif "int" in kind:
                value = parse_int(value, name, where, optional=True, error=E)
            elif "float" in kind:
                value = _num(value, name, where)
            else:
                value = parse_str(value, name, where, True, E)
            values[name] = value
        return cls(**values)


@dataclass(frozen=True)
class SelectionSummary:
    """How the seeds selected their epoch: the common ``split`` (``mixed`` when seeds
    differ; None when no record says) and ``metric``, and each seed's :class:`Selection`."""

    split: str | None
    metric: str | None
    per_seed: Mapping[str, Selection]

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "metric": self.metric,
            "per_seed": {k: v.to_dict() for k, v in self.per_seed.items()},
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> SelectionSummary:
        data = _obj(data, f"{where}: field 'selection'")
        per_seed = _obj(data.get("per_seed", {}), f"{where}: field 'selection.per_seed'")
        return cls(
            parse_str(data.get("split"), "selection.split", where, True, E),
            parse_str(data.get("metric"), "selection.metric", where, True, E),
            {
                k: Selection.from_dict(v, f"selection.per_seed.{k}", where)
                for k, v in per_seed.items()
            },
        )


@dataclass(frozen=True)
class SplitsSummary:
    """How the seeds' splits were drawn (the first seed's ``mode``, ``protocol`` and
    ``stratify``) and each seed's description (``SeedSplit.describe``; None when not
    recorded)."""

    mode: str | None
    protocol: str | None
    stratify: str | None
    per_seed: Mapping[str, Mapping[str, Any] | None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "protocol": self.protocol,
            "stratify": self.stratify,
            "per_seed": {k: None if v is None else dict(v) for k, v in self.per_seed.items()},
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> SplitsSummary:
        data = _obj(data, f"{where}: field 'splits'")
        per_seed = _obj(data.get("per_seed", {}), f"{where}: field 'splits.per_seed'")
        return cls(
            parse_str(data.get("mode"), "splits.mode", where, True, E),
            parse_str(data.get("protocol"), "splits.protocol", where, True, E),
            parse_str(data.get("stratify"), "splits.stratify", where, True, E),
            {
                k: None if v is None else _obj(v, f"{where}: field 'splits.per_seed.{k}'")
                for k, v in per_seed.items()
            },
        )


@dataclass(frozen=True)
class ClassSummary:
    """One task class over seeds: precision, recall, F1 as :class:`Stat` and the summed
    ``support``."""

    precision: Stat
    recall: Stat
    f1: Stat
    support: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "precision": self.precision.to_dict(),
            "recall": self.recall.to_dict(),
            "f1": self.f1.to_dict(),
            "support": self.support,
        }

    @classmethod
    def from_dict(cls, data: Any, name: str, where: str) -> ClassSummary:
        data = _obj(data, f"{where}: field {name!r}")
        stats = [
            Stat.from_dict(data.get(k), f"{name}.{k}", where) for k in ("precision", "recall", "f1")
        ]
        return cls(*stats, parse_int(data.get("support"), f"{name}.support", where, 0, error=E))


@dataclass(frozen=True)
class SummaryRecord:
    """``summary.json``: a run's evaluation over its seeds (``trainer.summary.summarize``).

    ``metrics``: summary key (``accuracy``, ``probe_adv``, ``view_shift``, ...) ->
    :class:`Stat`; ``chance``: 1 / classes of y+ and y- (None when unknown); ``confusion``:
    the task head's confusion matrices (rows true, columns predicted) summed over seeds and
    per seed; ``perturbation``: the invariance's ``(kind, views)`` (None without it).
    """

    info: RunInfo
    seeds: tuple[int, ...]
    selection: SelectionSummary
    splits: SplitsSummary
    task_names: tuple[str, ...]
    adv_names: tuple[str, ...]
    metrics: Mapping[str, Stat]
    chance_task: float | None
    chance_adv: float | None
    per_class: Mapping[str, ClassSummary]
    confusion: tuple[tuple[int, ...], ...]
    confusion_per_seed: Mapping[str, tuple[tuple[int, ...], ...]]
    perturbation: tuple[str, int] | None = None

    def stat(self, key: str) -> Stat | None:
        """The metric ``key`` (None when the summary has none)."""
        return self.metrics.get(key)

    def to_dict(self) -> dict[str, Any]:
        data = {
            **self.info.to_dict(),
            "seeds": list(self.seeds),
            "std": STD_NOTE,
            "ci95": CI_NOTE,
            "selection": self.selection.to_dict(),
            "splits": self.splits.to_dict(),
            "labels": {"task": list(self.task_names), "adv": list(self.adv_names)},
            "metrics": {k: v.to_dict() for k, v in self.metrics.items()},
            "chance": {"task": self.chance_task, "adv": self.chance_adv},
            "per_class": {k: v.to_dict() for k, v in self.per_class.items()},
            "confusion_matrix": {
                "labels": list(self.task_names),
                "rows": "true class",
                "columns": "predicted class",
                "summed_over_seeds": [list(r) for r in self.confusion],
                "per_seed": {k: [list(r) for r in m] for k, m in self.confusion_per_seed.items()},
            },
        }
        if self.perturbation is not None:
            data["perturbation"] = {"kind": self.perturbation[0], "views": self.perturbation[1]}
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str) -> SummaryRecord:
        data = _obj(data, where)
        known = {*RunInfo.__dataclass_fields__, "schema_version", "seeds", "std", "ci95"}
        known |= {"selection", "splits", "labels", "metrics", "chance", "per_class"}
        known |= {"confusion_matrix", "perturbation"}
        check_keys(
            data, known, where, {*RunInfo.__dataclass_fields__, "schema_version", "perturbation"}, E
        )
        if not isinstance(data["seeds"], list) or not data["seeds"]:
            raise E(f"{where}: field 'seeds' must be a non-empty list of seeds")
        seeds = parse_ints(data["seeds"], "seeds", where, error=E)
        labels = _obj(data["labels"], f"{where}: field 'labels'")
        task_names = parse_names(labels.get("task"), "labels.task", where, E)
        metrics = _obj(data["metrics"], f"{where}: field 'metrics'")
        chance = _obj(data["chance"], f"{where}: field 'chance'")
        per_class = _obj(data["per_class"], f"{where}: field 'per_class'")
        matrix = _obj(data["confusion_matrix"], f"{where}: field 'confusion_matrix'")

        def square(value: Any, name: str) -> tuple[tuple[int, ...], ...]:
            if not isinstance(value, list) or len(value) != len(task_names):
                raise E(f"{where}: field {name!r} must be a square matrix of counts")
            return tuple(parse_ints(r, name, where, len(task_names), 0, E) for r in value)

        per_seed = _obj(matrix.get("per_seed", {}), f"{where}: field 'confusion_matrix.per_seed'")
        perturbation = data.get("perturbation")
        if perturbation is not None:
            perturbation = _obj(perturbation, f"{where}: field 'perturbation'")
            perturbation = (
                parse_str(perturbation.get("kind"), "perturbation.kind", where, error=E),
                parse_int(perturbation.get("views"), "perturbation.views", where, 0, error=E),
            )
        return cls(
            info=RunInfo.from_dict(data, where),
            seeds=seeds,
            selection=SelectionSummary.from_dict(data["selection"], where),
            splits=SplitsSummary.from_dict(data["splits"], where),
            task_names=task_names,
            adv_names=parse_names(labels.get("adv"), "labels.adv", where, E),
            metrics={k: Stat.from_dict(v, f"metrics.{k}", where) for k, v in metrics.items()},
            chance_task=_num(chance.get("task"), "chance.task", where),
            chance_adv=_num(chance.get("adv"), "chance.adv", where),
            per_class={
                name: ClassSummary.from_dict(per_class.get(name), f"per_class.{name}", where)
                for name in task_names
            },
            confusion=square(matrix.get("summed_over_seeds"), "confusion_matrix.summed_over_seeds"),
            confusion_per_seed={
                k: square(v, f"confusion_matrix.per_seed.{k}") for k, v in per_seed.items()
            },
            perturbation=perturbation,
        )


# ----- probe-<manifest>.json ------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeReport:
    """``probe-<manifest>.json``: the leakage probes of a run's seeds on another corpus
    (``trainer.summary.probe_summary``): fitted on its train split (``train_clips``),
    scored on its test split (``clips``); ``failed``: clip id -> why it could not be read.
    ``probes``: probe key (``finetuned_task`` ... and ``<model>_cv_<label>``) -> balanced
    accuracy over seeds (:class:`Stat`; held-out keys with ``ci95``); ``per_seed``: each
    seed's probe dicts by the same keys, and ``seed``."""

    run: str
    manifest: str
    clips: int
    train_clips: int
    failed: Mapping[str, str]
    task: str
    adversarial_label: str
    probes: Mapping[str, Stat]
    chance_task: float | None
    chance_adv: float | None
    per_seed: tuple[Mapping[str, Any], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "manifest": self.manifest,
            "clips": self.clips,
            "train_clips": self.train_clips,
            "failed": dict(self.failed),
            "task": self.task,
            "adversarial_label": self.adversarial_label,
            "std": STD_NOTE,
            "ci95": CI_NOTE,
            "probes": {k: v.to_dict() for k, v in self.probes.items()},
            "chance": {"task": self.chance_task, "adv": self.chance_adv},
            "per_seed": [dict(r) for r in self.per_seed],
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ProbeReport:
        data = _obj(data, where)
        known = {"schema_version", "run", "manifest", "clips", "train_clips", "failed", "task"}
        known |= {"adversarial_label", "std", "ci95", "probes", "chance", "per_seed"}
        check_keys(data, known, where, {"schema_version"}, E)
        failed = _obj(data["failed"], f"{where}: field 'failed'")
        probes = _obj(data["probes"], f"{where}: field 'probes'")
        chance = _obj(data["chance"], f"{where}: field 'chance'")
        per_seed = data["per_seed"]
        if not isinstance(per_seed, list):
            raise E(f"{where}: field 'per_seed' must be a list")
        rows = []
        for i, row in enumerate(per_seed):
            row = _obj(row, f"{where}: field 'per_seed[{i}]'")
            seed = parse_int(row.get("seed"), f"per_seed[{i}].seed", where, error=E)
            rows.append(
                {"seed": seed}
                | {
                    k: _numbers(v, f"per_seed[{i}].{k}", where)
                    for k, v in row.items()
                    if k != "seed"
                }
            )
        return cls(
            run=parse_str(data["run"], "run", where, error=E),
            manifest=parse_str(data["manifest"], "manifest", where, error=E),
            clips=parse_int(data["clips"], "clips", where, 0, error=E),
            train_clips=parse_int(data["train_clips"], "train_clips", where, 0, error=E),
            failed={k: parse_str(v, f"failed.{k}", where, error=E) for k, v in failed.items()},
            task=parse_str(data["task"], "task", where, error=E),
            adversarial_label=parse_str(
                data["adversarial_label"], "adversarial_label", where, error=E
            ),
            probes={k: Stat.from_dict(v, f"probes.{k}", where) for k, v in probes.items()},
            chance_task=_num(chance.get("task"), "chance.task", where),
            chance_adv=_num(chance.get("adv"), "chance.adv", where),
            per_seed=tuple(rows),
        )
