"""The run folder: the contract between training and evaluation.

This module is the only one that spells the folder's file names, and its records are
frozen dataclasses with ``to_dict`` / ``from_dict``, a ``schema_version`` and field checks,
refused loudly when unknown (as the manifest is, ``pipeline/manifest.py``)::

    runs/<name>/
      .lock                         held by the ncore-train writing the folder (RunDir.lock)
      config.json                   RunRecord: the TrainConfig + resolved views, view-set key,
                                    the splits' digest (trainer.plan.splits_digest)
      seed-<s>/
        split.json                  the seed's split: clip ids of train/val/test and how
                                    they were drawn (pipeline.splits.SeedSplit)
        metrics.jsonl               one EpochRow per line (read_epoch_rows)
        checkpoint/epoch-XXXX[-batch-YYYYYY]/   trainer/checkpoint.py
        best/                       the selected epoch: backbone/, heads.safetensors,
                                    model.safetensors, model.json (ModelRecord)
        training.json               SeedRecord: written when the seed's training is done
        evaluation.json             EvaluationRecord: the seed's test pass (trainer/evaluate.py)
        test_embeddings.npz         view-0 test embeddings (fine-tuned and initial)
      summary.json / summary.md     SummaryRecord over seeds (trainer/summary.py)
      figures/*.png                 trainer/plots.py
      probe-<manifest>.json / .md   ProbeReport of ``ncore-train evaluate --probe-manifest``

The evaluation's records are in ``trainer/records.py``; every record is read and written
here, and its ``schema_version`` checked in one place (:func:`parse_version`). Records
written before they were versioned (no ``schema_version``: the layout of the project's
first week, which marked a finished seed with ``test_metrics.json``) are refused in one
line naming ``ncore-train migrate RUN_DIR`` (:func:`migrate_run`), which rewrites them once.
No torch import here: reports and summaries read run folders without it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pipeline import fields as fields_
from pipeline.atomic import write_json, write_npz, write_text
from pipeline.locks import LockHeld, exclusive_lock
from pipeline.manifest import read_regular_file
from trainer.config import ADV_CONDITIONS, ADV_INPUTS, TrainConfig
from trainer.errors import TrainerError
from trainer.records import EvaluationRecord, ProbeReport, SummaryRecord

RUN_SCHEMA_VERSION = 1
CHECKPOINT_SCHEMA_VERSION = 1  # state.json of a checkpoint (trainer/checkpoint.py)

CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"  # held by the ncore-train writing the folder (RunDir.lock)
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
FIGURES_DIR = "figures"
SEED_PREFIX = "seed-"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_STATE_FILE = "state.json"
BEST_DIR = "best"
MODEL_RECORD_FILE = "model.json"
BACKBONE_DIR = "backbone"
HEADS_FILE = "heads.safetensors"
WEIGHTS_FILE = "model.safetensors"
SEED_RECORD_FILE = "training.json"
SPLIT_FILE = "split.json"
EVALUATION_FILE = "evaluation.json"
EMBEDDINGS_FILE = "test_embeddings.npz"
LEGACY_TEST_METRICS_FILE = "test_metrics.json"  # the finished-seed mark before version 1
PROBE_PREFIX = "probe-"


# ----- field parsing (one-line errors naming the file and field: pipeline/fields.py) -----------
MIGRATE_HINT = (
    "a run folder from before the records were versioned: run `ncore-train migrate RUN_DIR` once"
)


def parse_version(data: dict[str, Any], where: str, current: int = RUN_SCHEMA_VERSION) -> int:
    """The one version check of every record of the run folder (and the checkpoint's
    ``state.json``): ``current`` only; an unversioned record names the migrate command."""
    return fields_.parse_version(data, where, current, MIGRATE_HINT, TrainerError)


def _check_keys(data: Any, cls: type, where: str, optional: frozenset[str]) -> None:
    data = fields_.parse_object(data, where, TrainerError)
    names = {f.name for f in fields(cls)}
    fields_.check_keys(data, names, where, optional | {"schema_version"}, TrainerError)


def _int(value: Any, name: str, where: str, minimum: int | None = None) -> int:
    return fields_.parse_int(value, name, where, minimum, error=TrainerError)


def _float(value: Any, name: str, where: str, optional: bool = False) -> float | None:
    return fields_.parse_number(value, name, where, optional, TrainerError)


def _names(value: Any, name: str, where: str) -> tuple[str, ...]:
    return fields_.parse_names(value, name, where, TrainerError)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(read_regular_file(path).decode("utf-8"))
    except FileNotFoundError:
        raise TrainerError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise TrainerError(f"{path}: unreadable ({error})") from None


def _object(data: Any, where: str) -> dict[str, Any]:
    return fields_.parse_object(data, where, TrainerError)


def _read_record(path: Path, record: Any) -> Any:
    """``record.from_dict`` of the JSON file ``path``, its version checked."""
    where = str(path)
    data = _object(_read_json(path), where)
    parse_version(data, where)
    return record.from_dict({k: v for k, v in data.items() if k != "schema_version"}, where)


def _write_record(path: Path, record: Any) -> None:
    write_json(path, {"schema_version": RUN_SCHEMA_VERSION, **record.to_dict()})


# ----- records -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRecord:
    """``best/model.json``: what the selected model is and how to rebuild it.

    ``epoch`` (1-based) was selected by the ``select_metric`` (``accuracy`` or ``uar``) of
    the task head on ``selection_split`` (``val``; ``test`` under the paper protocol only;
    None in records written before it was recorded); ``val_acc_task`` is the accuracy there
    (fraction). ``task_names`` / ``adv_names`` are the label vocabularies (head sizes, in
    index order).
    """

    epoch: int
    val_acc_task: float
    seed: int
    task: str
    task_names: tuple[str, ...]
    adv_names: tuple[str, ...]
    dropout: float = 0.1
    grl_alpha: float = 1.0
    adversary: bool = True
    select_metric: str = "accuracy"
    selection_split: str | None = None
    adv_input: str = "raw"
    adv_condition: str = "none"
    schema_version: int = RUN_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "epoch": self.epoch,
            "val_acc_task": self.val_acc_task,
            "seed": self.seed,
            "task": self.task,
            "task_names": list(self.task_names),
            "adv_names": list(self.adv_names),
            "dropout": self.dropout,
            "grl_alpha": self.grl_alpha,
            "adversary": self.adversary,
            "select_metric": self.select_metric,
            "selection_split": self.selection_split,
            "adv_input": self.adv_input,
            "adv_condition": self.adv_condition,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = MODEL_RECORD_FILE) -> ModelRecord:
        optional = {"dropout", "grl_alpha", "adversary", "select_metric", "selection_split"}
        optional |= {"adv_input", "adv_condition"}  # records from before they existed: raw
        _check_keys(data, cls, where, frozenset(optional))
        select_metric = data.get("select_metric", "accuracy")
        if select_metric not in ("accuracy", "uar"):
            raise TrainerError(f"{where}: field 'select_metric' must be accuracy or uar")
        selection_split = data.get("selection_split")
        if selection_split not in (None, "val", "test"):
            raise TrainerError(f"{where}: field 'selection_split' must be val or test")
        adversary = data.get("adversary", True)
        if not isinstance(adversary, bool):
            raise TrainerError(f"{where}: field 'adversary' must be true or false")
        adv_input, adv_condition = data.get("adv_input", "raw"), data.get("adv_condition", "none")
        if adv_input not in ADV_INPUTS:
            raise TrainerError(f"{where}: field 'adv_input' must be one of {ADV_INPUTS}")
        if adv_condition not in ADV_CONDITIONS:
            raise TrainerError(f"{where}: field 'adv_condition' must be one of {ADV_CONDITIONS}")
        task = data["task"]
        if task not in ("emotion", "speaker"):
            raise TrainerError(f"{where}: field 'task' must be emotion or speaker, got {task!r}")
        return cls(
            schema_version=parse_version(data, where),
            epoch=_int(data["epoch"], "epoch", where, 1),
            val_acc_task=_float(data["val_acc_task"], "val_acc_task", where),
            seed=_int(data["seed"], "seed", where),
            task=task,
            task_names=_names(data["task_names"], "task_names", where),
            adv_names=_names(data["adv_names"], "adv_names", where),
            dropout=_float(data.get("dropout", 0.1), "dropout", where),
            grl_alpha=_float(data.get("grl_alpha", 1.0), "grl_alpha", where),
            adversary=adversary,
            select_metric=select_metric,
            selection_split=selection_split,
            adv_input=adv_input,
            adv_condition=adv_condition,
        )


@dataclass(frozen=True)
class SeedRecord:
    """``seed-<s>/training.json``: the seed's training is over (its presence says so).

    ``best_epoch`` and ``val_acc_task`` name the selected model; ``last_epoch`` is the last
    epoch run (below the configured count after early stopping) and ``steps`` the optimizer
    steps taken (both None when migrated from the legacy ``test_metrics.json``).
    """

    seed: int
    best_epoch: int
    val_acc_task: float
    last_epoch: int | None = None
    steps: int | None = None
    schema_version: int = RUN_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "seed": self.seed,
            "best_epoch": self.best_epoch,
            "val_acc_task": self.val_acc_task,
            "last_epoch": self.last_epoch,
            "steps": self.steps,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = SEED_RECORD_FILE) -> SeedRecord:
        _check_keys(data, cls, where, frozenset({"last_epoch", "steps"}))
        optional_int = {
            k: None if data.get(k) is None else _int(data[k], k, where, 0)
            for k in ("last_epoch", "steps")
        }
        return cls(
            schema_version=parse_version(data, where),
            seed=_int(data["seed"], "seed", where),
            best_epoch=_int(data["best_epoch"], "best_epoch", where, 0),
            val_acc_task=_float(data["val_acc_task"], "val_acc_task", where),
            **optional_int,
        )


@dataclass(frozen=True)
class EpochRow:
    """One line of ``metrics.jsonl``: the epoch's unweighted mean losses per clip, training
    accuracies of both heads, validation accuracies, the mean GRL strength over its
    batches, the learning rate after it, clips seen (all ranks) and wall seconds. Adversarial
    fields are None without an adversary; ``val_uar_task`` (the task head's validation UAR)
    is None in rows written before it was recorded. The adversary's instruments
    (``trainer/adversary.py``; None without an adversary and in older rows):
    ``adv_fit_acc``, its accuracy (eval mode) on the epoch's detached training embeddings
    at the end of the epoch, ``probe_fit_acc_adv``, a standardised linear probe's on the
    same embeddings (what can be read there), and ``adv_grad_share``, the mean over batches
    of the reversed gradient's norm at the embedding over the task CE's (the linear eraser's
    included), ``train_erase``, the linear eraser's mean loss (None without one)."""

    epoch: int
    step: int
    lr: float
    train_ce: float
    train_consistency: float
    train_adv: float
    train_acc_task: float
    train_acc_adv: float | None
    grl_alpha: float | None
    val_acc_task: float
    val_acc_adv: float | None
    train_clips: int
    seconds: float
    val_uar_task: float | None = None
    adv_fit_acc: float | None = None
    probe_fit_acc_adv: float | None = None
    adv_grad_share: float | None = None
    train_erase: float | None = None
    schema_version: int = RUN_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "schema_version"}
        data["schema_version"] = self.schema_version  # last: the metric columns come first
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = METRICS_FILE) -> EpochRow:
        diagnostics = {"adv_fit_acc", "probe_fit_acc_adv", "adv_grad_share", "train_erase"}
        _check_keys(data, cls, where, frozenset({"val_uar_task"} | diagnostics))
        optional = {"train_acc_adv", "grl_alpha", "val_acc_adv", "val_uar_task"} | diagnostics
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "schema_version":
                continue
            if f.name in ("epoch", "step", "train_clips"):
                values[f.name] = _int(data[f.name], f.name, where, 1 if f.name == "epoch" else 0)
            else:
                value = data.get(f.name)
                values[f.name] = _float(value, f.name, where, f.name in optional)
        return cls(schema_version=parse_version(data, where), **values)


@dataclass(frozen=True)
class RunRecord:
    """``config.json``: every setting of the run (a TrainConfig's fields, flat) plus what
    the manifest resolved: ``resolved_views`` (N) and ``view_set`` (its key)."""

    config: TrainConfig
    resolved_views: int | None
    view_set: str | None
    splits: str | None = None  # trainer.plan.splits_digest; None in runs written before it

    def to_dict(self) -> dict[str, Any]:
        extra = {"resolved_views": self.resolved_views, "view_set": self.view_set}
        if self.splits is not None:
            extra["splits"] = self.splits
        return {**self.config.to_dict(), **extra}

    @classmethod
    def from_dict(cls, data: Any, where: str = CONFIG_FILE) -> RunRecord:
        if not isinstance(data, dict):
            raise TrainerError(f"{where}: expected a JSON object")
        data = dict(data)
        views, key = data.pop("resolved_views", None), data.pop("view_set", None)
        splits = data.pop("splits", None)
        if splits is not None and not isinstance(splits, str):
            raise TrainerError(f"{where}: field 'splits' must be a string, got {splits!r}")
        if views is not None and (
            isinstance(views, bool) or not isinstance(views, int) or views < 0
        ):
            raise TrainerError(f"{where}: field 'resolved_views' must be an integer >= 0")
        if key is not None and not isinstance(key, str):
            raise TrainerError(f"{where}: field 'view_set' must be a string, got {key!r}")
        return cls(recorded_config(data, where), views, key, splits)


def recorded_config(data: Any, where: str) -> TrainConfig:
    """The TrainConfig a run folder or checkpoint recorded (``where`` names the file).

    ``num_workers`` is resume-neutral (how the machine that wrote it loaded batches, not
    what was computed): a value above this machine's CPU count, which a new config refuses,
    is read as that count, so a run trained on a larger machine can be evaluated or
    resumed here.
    """
    if not isinstance(data, dict):
        raise TrainerError(
            f"{where}: the config must be a JSON object, got {fields_.json_kind(data)}"
        )
    data = dict(data)
    workers = data.get("num_workers")
    if isinstance(workers, int) and not isinstance(workers, bool):
        data["num_workers"] = min(workers, os.cpu_count() or 1)
    try:
        return TrainConfig.from_dict(data)
    except TrainerError as error:
        raise TrainerError(f"{where}: {error}") from None


# ----- checkpoint state ----------------------------------------------------------------------
@dataclass(frozen=True)
class PartialEpoch:
    """``state.json`` ``partial_epoch`` (a checkpoint inside an epoch): the epoch's running
    sums (``trainer.loop.EpochSums.to_list``), the GRL strength of each counted batch and
    the reversed gradient's share of the CE's per batch (None in checkpoints from before
    it was recorded)."""

    sums: tuple[float, ...]
    alphas: tuple[float, ...]
    shares: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"sums": list(self.sums), "alphas": list(self.alphas)}
        if self.shares is not None:
            data["shares"] = list(self.shares)
        return data


@dataclass(frozen=True)
class ResumeState:
    """A checkpoint's ``state.json`` as a resume reads it (``trainer/checkpoint.py``).

    ``epoch``: the checkpoint's epoch (1-based; inside it for a ``partial_epoch``);
    ``step``: optimizer steps taken; ``best_acc``: the best selection score so far
    (validation ``--select-metric``; -1 before any epoch was scored) and ``best_val_acc``
    the validation accuracy of that epoch, ``best_epoch`` (0: none yet); ``bad_epochs``:
    epochs without improvement; ``loader``: the training loader's state
    (``trainer.data`` ``state_dict``) plus ``next_epoch`` (the epoch to run next) and,
    inside an epoch, ``batches`` (its batches already done); ``splits``: the digest of the
    splits trained on (None in checkpoints from before it). ``rng`` and ``epoch_clips``
    come from ``optim.pt`` (inside an epoch), not from ``state.json``.
    """

    epoch: int
    seed: int
    step: int
    best_acc: float
    best_val_acc: float
    best_epoch: int
    bad_epochs: int
    loader: Mapping[str, Any]
    splits: str | None = None
    partial_epoch: PartialEpoch | None = None
    rng: Any = None
    epoch_clips: Any = None

    @property
    def next_epoch(self) -> int:
        return self.loader["next_epoch"]

    @property
    def batches(self) -> int:
        """Batches of ``next_epoch`` already done (0 at an epoch's end)."""
        return self.loader.get("batches", 0) if self.partial_epoch is not None else 0

    def to_dict(self) -> dict[str, Any]:
        """The fields of ``state.json`` between its ``epoch`` and its ``config``."""
        data = {
            "seed": self.seed,
            "step": self.step,
            "best_acc": self.best_acc,
            "best_val_acc": self.best_val_acc,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "loader": dict(self.loader),
            "splits": self.splits,
        }
        if self.partial_epoch is not None:
            data["partial_epoch"] = self.partial_epoch.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> ResumeState:
        """Refuse (one line naming ``where`` and the field) a state that lacks what a
        resume reads or holds an impossible value: counters are integers >= 0, epochs
        >= 1, scores fractions (or -1 before any epoch was scored), and they agree."""

        def integer(name: str, value: Any, minimum: int) -> int:
            return fields_.parse_int(value, name, where, minimum, error=TrainerError)

        def score(name: str, value: Any) -> float:
            number = fields_.parse_number(value, name, where, error=TrainerError)
            if not (math.isnan(number) or -1.0 <= number <= 1.0):
                raise TrainerError(
                    f"{where}: field {name!r} must be a fraction (or -1 before the first "
                    f"epoch), got {value!r}"
                )
            return value

        loader = fields_.parse_object(data.get("loader"), f"{where}: field 'loader'", TrainerError)
        epoch = integer("epoch", data.get("epoch"), 1)
        seed = integer("seed", data.get("seed"), -(2**63))
        step = integer("step", data.get("step"), 0)
        best_epoch = integer("best_epoch", data.get("best_epoch"), 0)
        bad_epochs = integer("bad_epochs", data.get("bad_epochs"), 0)
        best_acc = score("best_acc", data.get("best_acc"))
        best_val_acc = score("best_val_acc", data.get("best_val_acc", best_acc))
        next_epoch = integer("loader.next_epoch", loader.get("next_epoch"), 1)
        partial = None
        if "partial_epoch" in data:
            integer("loader.batches", loader.get("batches"), 0)
            block = data["partial_epoch"]
            lists = ("sums", "alphas") + (("shares",) if "shares" in (block or {}) else ())
            if not (
                isinstance(block, dict)
                and all(isinstance(block.get(k), list) for k in lists)
                and all(
                    isinstance(v, int | float) and not isinstance(v, bool)
                    for k in lists
                    for v in block[k]
                )
            ):
                raise TrainerError(
                    f"{where}: field 'partial_epoch' must hold number lists 'sums' and 'alphas'"
                )
            shares = block.get("shares")
            partial = PartialEpoch(
                tuple(block["sums"]),
                tuple(block["alphas"]),
                None if shares is None else tuple(shares),
            )
        if best_epoch > epoch:
            raise TrainerError(
                f"{where}: field 'best_epoch' is {best_epoch}, after the checkpoint's epoch {epoch}"
            )
        if next_epoch != (epoch if partial else epoch + 1):
            raise TrainerError(
                f"{where}: field 'loader.next_epoch' is {next_epoch} for epoch {epoch}"
            )
        splits = data.get("splits")
        if splits is not None and not isinstance(splits, str):
            raise TrainerError(f"{where}: field 'splits' is not a string")
        return cls(
            epoch,
            seed,
            step,
            best_acc,
            best_val_acc,
            best_epoch,
            bad_epochs,
            loader,
            splits,
            partial,
            data.get("rng"),
            data.get("epoch_clips"),
        )


def write_checkpoint_state(folder: Path, data: dict[str, Any]) -> None:
    """``folder/state.json`` (a checkpoint being built): ``data`` with its version first,
    indented by one; NaN kept (a score may be NaN)."""
    record = {"schema_version": CHECKPOINT_SCHEMA_VERSION, **data}
    write_text(Path(folder) / CHECKPOINT_STATE_FILE, json.dumps(record, indent=1) + "\n")


def read_checkpoint_state(folder: Path) -> dict[str, Any]:
    """``folder/state.json`` as written, its version checked (``OSError`` / ``ValueError``
    when unreadable: the caller names the checkpoint damaged)."""
    path = Path(folder) / CHECKPOINT_STATE_FILE
    state = json.loads(read_regular_file(path).decode("utf-8"))
    if not isinstance(state, dict):
        raise ValueError(f"{CHECKPOINT_STATE_FILE} is not an object")
    parse_version(state, f"checkpoint {folder}", CHECKPOINT_SCHEMA_VERSION)
    return state


# ----- paths ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeedDir:
    """``<run>/seed-<s>/`` and the names inside it."""

    path: Path
    seed: int

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def best(self) -> Path:
        return self.path / BEST_DIR

    @property
    def backbone(self) -> Path:
        """``best/backbone/``: the selected backbone in ``save_pretrained`` form."""
        return self.best / BACKBONE_DIR

    @property
    def model_record_path(self) -> Path:
        return self.best / MODEL_RECORD_FILE

    @property
    def record_path(self) -> Path:
        return self.path / SEED_RECORD_FILE

    @property
    def evaluation(self) -> Path:
        return self.path / EVALUATION_FILE

    @property
    def split_path(self) -> Path:
        return self.path / SPLIT_FILE

    def read_split(self) -> Any:
        """The seed's :class:`~pipeline.splits.SeedSplit` (``split.json``); None for a run
        folder from before splits were recorded per seed (it used the manifest's split)."""
        from pipeline.splits import SeedSplit, SplitError

        if not self.split_path.is_file():
            return None
        where = str(self.split_path)
        data = _object(_read_json(self.split_path), where)
        parse_version(data, where)
        try:
            split = SeedSplit.from_dict({k: v for k, v in data.items() if k != "schema_version"})
        except SplitError as error:
            raise SplitError(f"{where}: {error}") from None
        if split.seed != self.seed:
            raise TrainerError(f"{where}: records seed {split.seed}, not {self.seed}")
        return split

    def write_split(self, split: Any) -> None:
        """``split.json``: the clip ids of each split and how they were drawn."""
        write_json(self.split_path, {"schema_version": RUN_SCHEMA_VERSION, **split.to_dict()})

    @property
    def embeddings(self) -> Path:
        return self.path / EMBEDDINGS_FILE

    @property
    def has_model(self) -> bool:
        """Whether ``best/`` holds a selected model (its record is written with it)."""
        return self.model_record_path.is_file()

    @property
    def finished(self) -> bool:
        """Whether the seed's training is over (its seed record is written). A seed
        finished under the layout before versioned records is refused, naming the migrate
        command (training it again would overwrite its model)."""
        if (self.path / LEGACY_TEST_METRICS_FILE).is_file():
            raise TrainerError(f"{self.path}: {MIGRATE_HINT}")
        return self.record_path.is_file()

    def model_record(self) -> ModelRecord:
        return ModelRecord.from_dict(
            _read_json(self.model_record_path), str(self.model_record_path)
        )

    def write_model_record(self, folder: Path, record: ModelRecord) -> None:
        """``record`` as ``folder/model.json`` (``folder``: ``best/`` being built)."""
        write_json(Path(folder) / MODEL_RECORD_FILE, record.to_dict())

    def seed_record(self) -> SeedRecord:
        return SeedRecord.from_dict(_read_json(self.record_path), str(self.record_path))

    def write_seed_record(self, record: SeedRecord) -> None:
        write_json(self.record_path, record.to_dict())

    def read_evaluation(self) -> EvaluationRecord:
        """``evaluation.json`` (``trainer.records.EvaluationRecord``)."""
        return _read_record(self.evaluation, EvaluationRecord)

    def read_embeddings(self) -> dict[str, Any]:
        """``test_embeddings.npz``: ``clip_ids`` (n,) strings, ``y_task`` / ``y_adv`` (n,)
        integer labels, ``embeddings`` / ``backbone_embeddings`` (n, D) floats.

        Read without pickle (an object array is refused, never unpickled) and every array's
        dtype and shape checked: a truncated, empty or foreign file is one TrainerError
        naming the file and the array.
        """
        import zipfile

        import numpy as np

        path = self.embeddings
        expected = {
            "clip_ids": ("U", 1),
            "y_task": ("i", 1),
            "y_adv": ("i", 1),
            "embeddings": ("f", 2),
            "backbone_embeddings": ("f", 2),
        }
        arrays: dict[str, Any] = {}
        try:
            data = np.load(path, allow_pickle=False)
            if not hasattr(data, "files"):
                raise TrainerError(f"{path}: not an .npz archive (a single array)")
            with data:
                for name, (kind, ndim) in expected.items():
                    if name not in data.files:
                        raise TrainerError(f"{path}: no array {name!r}")
                    array = data[name]
                    if array.dtype.kind not in ({kind, "u"} if kind == "i" else {kind}):
                        raise TrainerError(
                            f"{path}: array {name!r} has dtype {array.dtype}, expected "
                            f"{ {'U': 'strings', 'i': 'integers', 'f': 'floats'}[kind] }"
                        )
                    if array.ndim != ndim:
                        raise TrainerError(
                            f"{path}: array {name!r} has shape {array.shape}, expected {ndim} axes"
                        )
                    arrays[name] = array
        except FileNotFoundError:
            raise TrainerError(f"{path}: no such file (run `ncore-train evaluate`)") from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            # numpy: ValueError for pickled (object) arrays with allow_pickle=False and for
            # bytes that are no array; EOFError for an empty file; BadZipFile for truncation.
            text = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
            raise TrainerError(f"{path}: unreadable test embeddings ({text})") from None
        n = len(arrays["clip_ids"])
        for name, array in arrays.items():
            if len(array) != n:
                raise TrainerError(f"{path}: array {name!r} has {len(array)} rows for {n} clip ids")
        for name in ("embeddings", "backbone_embeddings"):
            if not np.all(np.isfinite(arrays[name])):
                raise TrainerError(f"{path}: array {name!r} holds non-finite values")
        return arrays

    def write_embeddings(self, **arrays: Any) -> None:
        """``test_embeddings.npz`` (the arrays :meth:`read_embeddings` reads)."""
        write_npz(self.embeddings, **arrays)

    def write_evaluation(self, record: EvaluationRecord) -> None:
        _write_record(self.evaluation, record)


@dataclass(frozen=True)
class RunDir:
    """``runs/<name>/``: its config, seeds and summary files."""

    path: Path

    def __init__(self, path: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def summary_json(self) -> Path:
        return self.path / SUMMARY_JSON

    @property
    def summary_md(self) -> Path:
        return self.path / SUMMARY_MD

    @property
    def figures(self) -> Path:
        return self.path / FIGURES_DIR

    def probe_files(self, manifest_path: str | os.PathLike[str]) -> tuple[Path, Path]:
        """(JSON, Markdown) of ``evaluate --probe-manifest`` on that manifest."""
        stem = Path(manifest_path).stem
        return self.path / f"{PROBE_PREFIX}{stem}.json", self.path / f"{PROBE_PREFIX}{stem}.md"

    def read_probe_report(self, manifest_path: str | os.PathLike[str]) -> ProbeReport:
        """``probe-<manifest>.json`` (``trainer.records.ProbeReport``)."""
        return _read_record(self.probe_files(manifest_path)[0], ProbeReport)

    def write_probe_report(
        self, manifest_path: str | os.PathLike[str], report: ProbeReport, markdown: str
    ) -> None:
        """``probe-<manifest>.json`` and its Markdown (``trainer.summary.probe_markdown``)."""
        json_path, md_path = self.probe_files(manifest_path)
        _write_record(json_path, report)
        write_text(md_path, markdown)

    def seed(self, seed: int) -> SeedDir:
        return SeedDir(self.path / f"{SEED_PREFIX}{seed}", seed)

    def seeds_with_model(self) -> list[SeedDir]:
        """Seed folders whose ``best/`` holds a model, in seed order."""
        found = []
        for p in self.path.glob(f"{SEED_PREFIX}*"):
            try:
                seed = int(p.name[len(SEED_PREFIX) :])
            except ValueError:
                continue
            if SeedDir(p, seed).has_model:
                found.append(SeedDir(p, seed))
        return sorted(found, key=lambda s: s.seed)

    def read_record(self) -> RunRecord:
        if not self.config_path.is_file():
            raise TrainerError(f"{self.path}: not a run folder (no {CONFIG_FILE})")
        return RunRecord.from_dict(_read_json(self.config_path), str(self.config_path))

    def write_record(self, record: RunRecord) -> None:
        write_json(self.config_path, record.to_dict())

    @contextmanager
    def lock(self, held: bool = True) -> Iterator[None]:
        """Hold the run folder for one ``ncore-train`` (``.lock`` inside it) while training.

        A second training into the same folder is refused at once, in one line naming the
        process that holds it. ``held=False`` (DDP ranks other than 0) does nothing: rank 0
        holds the folder for the whole job. The kernel releases the lock if the process dies.
        """
        if not held:
            yield
            return
        try:
            with exclusive_lock(self.path / LOCK_FILE, "`ncore-train`"):
                yield
        except LockHeld as error:
            raise TrainerError(
                f"{self.path} is in use by {error.holder}; wait for it to finish or pass "
                "another --out"
            ) from None

    def has_progress(self) -> bool:
        """Whether any seed has a checkpoint, a selected model or a finished record."""
        patterns = (f"{SEED_PREFIX}*/{CHECKPOINT_DIR}/*", f"{SEED_PREFIX}*/{BEST_DIR}")
        patterns += (f"{SEED_PREFIX}*/{SEED_RECORD_FILE}",)
        return any(next(self.path.glob(p), None) is not None for p in patterns)

    def check_record(self, record: RunRecord) -> None:
        """Refuse (one line) to train into a folder that holds another run's progress.

        A folder where nothing was trained yet (a start that failed) is reused. Otherwise it
        may hold this same run (a resume, or a restart of one that stopped before
        its first checkpoint): the config (apart from the resume-neutral fields: out, resume,
        seeds, device, num_workers, checkpoint_every), the resolved views, the view set and
        the splits must all be those recorded.
        """
        if not self.config_path.exists() or not self.has_progress():
            return  # nothing trained yet (e.g. a start that failed on its backbone)
        try:
            old = self.read_record()
        except TrainerError as error:
            raise TrainerError(
                f"{error}; this folder holds something else: pass another --out"
            ) from None
        difference = record.config.first_difference(old.config)
        if difference is None and (old.resolved_views, old.view_set) != (
            record.resolved_views,
            record.view_set,
        ):
            difference = (
                "view set",
                f"{old.view_set} (N={old.resolved_views})",
                f"{record.view_set} (N={record.resolved_views})",
            )
        if difference is not None:
            name, theirs, mine = difference
            raise TrainerError(
                f"{self.path} holds a run of another config ({name}={theirs!r} there, "
                f"{mine!r} now): resume it with the same settings or pass another --out"
            )
        if old.splits is not None and record.splits is not None and old.splits != record.splits:
            raise TrainerError(
                f"{self.path}: the manifest's splits or labels changed since this run started "
                f"(same view set {record.view_set}); continuing would train and test on other "
                "clips: pass another --out"
            )

    def read_summary(self) -> SummaryRecord:
        """``summary.json`` (``trainer.records.SummaryRecord``)."""
        if not self.summary_json.exists():
            raise TrainerError(
                f"{self.path}: no {SUMMARY_JSON} (evaluate the run first: ncore-train evaluate RUN)"
            )
        return _read_record(self.summary_json, SummaryRecord)

    def write_summary(self, summary: SummaryRecord, markdown: str) -> None:
        """``summary.json`` and ``summary.md`` (``trainer.summary.summary_markdown``)."""
        _write_record(self.summary_json, summary)
        write_text(self.summary_md, markdown)


def seed_dir_of(path: str | os.PathLike[str], seed: int | None = None) -> SeedDir:
    """The seed folder to use for ``path``: ``path`` itself when it is one, else its
    ``seed`` (or its first seed with a model). One-line error when there is none."""
    path = Path(path)
    if (path / BEST_DIR / MODEL_RECORD_FILE).is_file() and path.name.startswith(SEED_PREFIX):
        try:
            return SeedDir(path, int(path.name[len(SEED_PREFIX) :]))
        except ValueError:
            pass
    if not path.is_dir():
        raise TrainerError(f"--run {path}: no such run folder")
    run = RunDir(path)
    if seed is not None:
        chosen = run.seed(seed)
        if not chosen.has_model:
            raise TrainerError(
                f"{chosen.path}: no finished model ({BEST_DIR}/{MODEL_RECORD_FILE}) for seed {seed}"
            )
        return chosen
    found = run.seeds_with_model()
    if not found:
        raise TrainerError(
            f"{path}: no {SEED_PREFIX}*/{BEST_DIR}/ model; train it first "
            "(ncore-train --manifest ...)"
        )
    return found[0]


# ----- metrics.jsonl -------------------------------------------------------------------------
def read_epoch_rows(path: str | os.PathLike[str]) -> list[EpochRow]:
    """The rows of a ``metrics.jsonl`` in file order ([] when there is none yet)."""
    path = Path(path)
    if not path.exists():
        return []
    return [EpochRow.from_dict(data, where) for where, data in _json_lines(path)]


def write_epoch_rows(path: str | os.PathLike[str], rows: list[EpochRow]) -> None:
    """Rewrite ``metrics.jsonl`` with ``rows`` atomically (on resume: drop the rows past the
    checkpoint, so a resumed run's file matches an uninterrupted one)."""
    write_text(path, "".join(_row_line(r) for r in rows))


def append_epoch_row(path: str | os.PathLike[str], row: EpochRow) -> None:
    """Append one row (flushed and synced: the checkpoint written next relies on it)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(_row_line(row))
        f.flush()
        os.fsync(f.fileno())


def _row_line(row: EpochRow) -> str:
    return json.dumps(row.to_dict()) + "\n"


# ----- migration of run folders from before the records were versioned -----------------------
def _versioned(data: dict[str, Any], last: bool = False) -> dict[str, Any]:
    """``data`` with the current ``schema_version`` (first key; ``last`` for epoch rows)."""
    rest = {k: v for k, v in data.items() if k != "schema_version"}
    if last:
        return {**rest, "schema_version": RUN_SCHEMA_VERSION}
    return {"schema_version": RUN_SCHEMA_VERSION, **rest}


def migrate_run(path: str | os.PathLike[str]) -> list[Path]:
    """Rewrite the records of run folder ``path`` written before they were versioned (the
    layout of the project's first week, docs/CONTRACTS.md) as current records, each
    atomically (``pipeline/atomic.py``); returns the files rewritten ([] when the folder is
    current). Run it once per old folder (``ncore-train migrate RUN_DIR``): the readers
    accept only the current version.

    - records without ``schema_version`` (``model.json``, ``split.json``,
      ``evaluation.json``, ``summary.json``, ``probe-*.json``, the rows of
      ``metrics.jsonl``) get it, their fields checked by the record they become;
    - a seed finished under the old layout (``test_metrics.json``: the seed, its selected
      epoch and its test record) gets ``training.json`` and, when it has none,
      ``evaluation.json`` from it; ``test_metrics.json`` is then removed.

    A record of an unknown version, or one whose fields are not those of the current
    record, is refused in one line naming the file (nothing of it is rewritten).
    """
    run = RunDir(path)
    if not run.config_path.is_file():
        raise TrainerError(f"{run.path}: not a run folder (no {CONFIG_FILE})")
    written: list[Path] = []

    def old(file: Path) -> dict[str, Any] | None:
        """The JSON object of ``file`` when it lacks a version (None: absent or current)."""
        if not file.is_file():
            return None
        data = _object(_read_json(file), str(file))
        if "schema_version" in data:
            parse_version(data, str(file))  # current, or refused here
            return None
        return data

    def rewrite(file: Path, data: dict[str, Any], record: Any) -> None:
        data = _versioned(data)
        _read_back(data, file, record)
        write_json(file, data)
        written.append(file)

    seeds = sorted(
        (p for p in run.path.glob(f"{SEED_PREFIX}*") if p.is_dir()), key=lambda p: p.name
    )
    for folder in seeds:
        try:
            seed_dir = SeedDir(folder, int(folder.name[len(SEED_PREFIX) :]))
        except ValueError:
            continue
        data = old(seed_dir.model_record_path)
        if data is not None:
            rewrite(seed_dir.model_record_path, data, ModelRecord)
        data = old(seed_dir.split_path)
        if data is not None:
            from pipeline.splits import SeedSplit, SplitError

            try:
                SeedSplit.from_dict(data)
            except SplitError as error:
                raise SplitError(f"{seed_dir.split_path}: {error}") from None
            write_json(seed_dir.split_path, _versioned(data))
            written.append(seed_dir.split_path)
        if seed_dir.metrics.is_file():
            lines = _json_lines(seed_dir.metrics)
            if any("schema_version" not in r for _, r in lines):
                rows = [EpochRow.from_dict(_versioned(r, last=True), w) for w, r in lines]
                write_epoch_rows(seed_dir.metrics, rows)
                written.append(seed_dir.metrics)
        legacy = seed_dir.path / LEGACY_TEST_METRICS_FILE
        data = old(seed_dir.evaluation)
        if data is not None:
            rewrite(seed_dir.evaluation, data, EvaluationRecord)
        if legacy.is_file():
            data = _object(_read_json(legacy), str(legacy))
            if not seed_dir.evaluation.is_file():
                rewrite(seed_dir.evaluation, data, EvaluationRecord)
            if not seed_dir.record_path.is_file():
                where = str(legacy)
                if "best_epoch" not in data:
                    raise TrainerError(f"{where}: no best_epoch: not a finished seed's record")
                fields_of = {k: data.get(k) for k in ("seed", "best_epoch", "val_acc_task")}
                record = SeedRecord.from_dict(_versioned(fields_of), where)
                seed_dir.write_seed_record(record)
                written.append(seed_dir.record_path)
            legacy.unlink()
            written.append(legacy)
    data = old(run.summary_json)
    if data is not None:
        rewrite(run.summary_json, data, SummaryRecord)
    for file in sorted(run.path.glob(f"{PROBE_PREFIX}*.json")):
        data = old(file)
        if data is not None:
            rewrite(file, data, ProbeReport)
    return written


def _json_lines(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(where, object)`` of each line of a JSON-lines file, one-line errors naming it."""
    try:
        text = read_regular_file(path).decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise TrainerError(f"{path}: unreadable ({error})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            raise TrainerError(f"{where}: not a JSON row ({error.msg})") from None
        except RecursionError:
            raise TrainerError(f"{where}: not a JSON row (nested too deeply)") from None
        rows.append((where, _object(data, where)))
    return rows


def _read_back(data: dict[str, Any], file: Path, record: Any) -> None:
    """Check ``data`` (a versioned record's JSON) parses as ``record``, naming ``file``."""
    where = str(file)
    if record in (ModelRecord, SeedRecord):
        record.from_dict(data, where)
    else:
        record.from_dict({k: v for k, v in data.items() if k != "schema_version"}, where)
