"""Training configuration: one frozen dataclass, read from a config file and/or options.

Precedence, lowest first: the defaults below (appendix A.1 of the paper), a config file
(``--config run.toml`` or ``.json``), then options given on the command line. The resolved
config is written next to every run and inside every checkpoint, so a run can be repeated
and a checkpoint can refuse to resume under different settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from pipeline import fields
from pipeline.manifest import LABELS, VIEW_KINDS, other_label
from trainer.errors import TrainerError

SCHEMA_VERSION = 1
TASKS = LABELS
PERTURBATIONS = VIEW_KINDS
GRL_OBJECTIVES = ("dann", "paper")
GRL_SCHEDULES = ("constant", "dann")
ADV_INPUTS = ("raw", "standardize", "whiten")  # what the adversary reads (trainer/adversary.py)
ADV_CONDITIONS = ("none", "task-label", "reweight")  # its handling of entangled labels

# Training recipes: named presets of the adversary's settings (docs/training.md, "Recipes").
# ``ncore`` (the default, beyond the paper): an adversary that can learn; its own AdamW
# (``adv_lr``, constant, ``adv_weight_decay``), ``adv_steps`` updates per optimizer step on
# the detached embedding, whitened input; and the linear eraser at half the task CE's push
# (``lambda_erase``; trainer/adversary.py linear_leakage). ``paper``: appendix A.1
# exactly, the adversarial head in the backbone's optimizer and schedule, trained only by
# the shared backward, on the raw embedding. A recipe fills the settings the user did not
# give; given ones win.
RECIPES: dict[str, dict[str, Any]] = {
    "ncore": {
        "adv_lr": 1e-3,
        "adv_steps": 5,
        "adv_input": "whiten",
        "adv_condition": "none",
        "adv_weight_decay": 0.0,
        "lambda_erase": 0.5,
    },
    "paper": {
        "adv_lr": None,
        "adv_steps": 0,
        "adv_input": "raw",
        "adv_condition": "none",
        "adv_weight_decay": 0.0,
        "lambda_erase": 0.0,
    },
}
DEFAULT_RECIPE = "ncore"
CONSISTENCY_NORMS = ("none", "batch-variance")  # as trainer.losses.CONSISTENCY_NORMS
PROTOCOLS = ("default", "paper", "speaker-held-out")  # as pipeline.splits.PROTOCOLS
SELECT_METRICS = ("accuracy", "uar")  # as trainer.metrics.SELECT_METRICS

# Fields that do not change what a run computes: a checkpoint written under other values
# of these may still be resumed. Everything else must match exactly.
# ``protocol`` and ``fixed_split`` only choose the split, and a resumed seed compares the
# split it would draw with its recorded ``split.json`` instead (trainer/loop.py).
RESUME_NEUTRAL_FIELDS = frozenset(
    {"out", "resume", "seeds", "device", "num_workers", "checkpoint_every", "protocol",
     "fixed_split", "view_set_key"}
)  # fmt: skip
# ``view_set_key`` only names the view set; the run record's resolved key is compared.


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of one ``ncore-train`` invocation (all seeds share it).

    ``views=None`` means "every view stored in the view set"; ``perturbation=None`` means
    the paper's pairing for the task (emotion task -> speaker-perturbed views and vice
    versa). Durations are in seconds; ``lr`` is the peak learning rate of the linear
    schedule. ``grl_schedule``: ``constant`` keeps the GRL strength at ``grl_alpha`` (the
    paper); ``dann`` ramps it from 0 to ``grl_alpha`` over training (Ganin & Lempitsky).
    ``recipe`` names the preset the adversary's settings came from (``RECIPES``):
    ``adv_lr`` is the adversary's own constant AdamW learning rate (None: the paper's, one
    optimizer and schedule for everything), ``adv_steps`` its updates per optimizer step on
    the detached embedding of that step's clips, ``adv_input`` what it reads (``raw``, or the
    embedding ``standardize``d per dimension or ``whiten``ed with running statistics),
    ``adv_condition`` how it handles entangled labels (``task-label``: it is also given
    y+; ``reweight``: its loss is weighted so y+ and y- are independent).
    ``lambda_erase`` is the linear eraser's strength (``trainer.adversary.linear_leakage``,
    not in the paper: the in-batch cross-covariance of the adversary's whitened input with
    y-, within y+ classes when ``adv_condition`` is not ``none``): its gradient at the
    embedding as a fraction of the task CE's, set every batch, times the GRL strength.
    ``consistency_norm``: ``none`` is eq. 1 (the paper); ``batch-variance`` (not in the
    paper) divides it by the batch's embedding variance, making it scale-free.
    ``protocol``: the split protocol (None: the manifest's); every seed draws its own split
    under it, stratified on the task's label, unless ``fixed_split`` keeps the manifest's
    stored split for all seeds (``pipeline/splits.py``). ``select_metric``: the validation
    metric that selects the epoch (``accuracy`` or ``uar``).
    """

    manifest: str
    task: str = "emotion"
    views: int | None = None
    perturbation: str | None = None
    view_set_key: str | None = None  # None: the largest complete view set of the kind
    backbone: str = "facebook/hubert-base-ls960"
    lambda_ce: float = 1.0
    lambda_reg: float = 0.005
    lambda_grl: float = 0.01
    grl_alpha: float = 1.0
    grl_schedule: str = "constant"
    grl_objective: str = "dann"
    recipe: str = DEFAULT_RECIPE
    adv_lr: float | None = RECIPES[DEFAULT_RECIPE]["adv_lr"]
    adv_steps: int = RECIPES[DEFAULT_RECIPE]["adv_steps"]
    adv_input: str = RECIPES[DEFAULT_RECIPE]["adv_input"]
    adv_condition: str = RECIPES[DEFAULT_RECIPE]["adv_condition"]
    adv_weight_decay: float = RECIPES[DEFAULT_RECIPE]["adv_weight_decay"]
    lambda_erase: float = RECIPES[DEFAULT_RECIPE]["lambda_erase"]
    consistency_norm: str = "none"
    protocol: str | None = None
    fixed_split: bool = False
    select_metric: str = "accuracy"
    adversary: bool = True
    dropout: float = 0.1
    lr: float = 1e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    batch_size: int = 16
    grad_accum: int = 1
    clip_grad_norm: float = 1.0
    epochs: int = 100
    patience: int = 20
    seeds: tuple[int, ...] = (42, 100, 510)
    max_seconds: float | None = None
    freeze_feature_encoder: bool = False
    gradient_checkpointing: bool = False
    device: str | None = None
    num_workers: int = 0
    checkpoint_every: int = 0  # optimizer steps between checkpoints inside an epoch; 0: none
    out: str | None = None
    resume: bool = False
    schema_version: int = field(default=SCHEMA_VERSION)

    def __post_init__(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise TrainerError(f"config: {message}")

        for f in dataclasses.fields(self):
            value = _typed(f.name, str(f.type), getattr(self, f.name))
            object.__setattr__(self, f.name, value)

        check(
            self.schema_version == SCHEMA_VERSION, f"unknown schema_version {self.schema_version}"
        )
        check(self.task in TASKS, f"task must be one of {TASKS}, got {self.task!r}")
        check(
            self.perturbation is None or self.perturbation in PERTURBATIONS,
            f"perturbation must be one of {PERTURBATIONS}, got {self.perturbation!r}",
        )
        check(
            self.grl_objective in GRL_OBJECTIVES,
            f"grl_objective must be one of {GRL_OBJECTIVES}, got {self.grl_objective!r}",
        )
        check(
            self.grl_schedule in GRL_SCHEDULES,
            f"grl_schedule must be one of {GRL_SCHEDULES}, got {self.grl_schedule!r}",
        )
        check(
            self.consistency_norm in CONSISTENCY_NORMS,
            f"consistency_norm must be one of {CONSISTENCY_NORMS}, got {self.consistency_norm!r}",
        )
        check(
            self.protocol is None or self.protocol in PROTOCOLS,
            f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}",
        )
        check(
            self.select_metric in SELECT_METRICS,
            f"select_metric must be one of {SELECT_METRICS}, got {self.select_metric!r}",
        )
        check(
            self.recipe in RECIPES, f"recipe must be one of {tuple(RECIPES)}, got {self.recipe!r}"
        )
        check(
            self.adv_input in ADV_INPUTS,
            f"adv_input must be one of {ADV_INPUTS}, got {self.adv_input!r}",
        )
        check(
            self.adv_condition in ADV_CONDITIONS,
            f"adv_condition must be one of {ADV_CONDITIONS}, got {self.adv_condition!r}",
        )
        check(self.adv_lr is None or self.adv_lr > 0, f"adv_lr must be > 0, got {self.adv_lr}")
        check(self.adv_steps >= 0, f"adv_steps must be >= 0, got {self.adv_steps}")
        check(
            self.adv_steps == 0 or self.adv_lr is not None,
            "adv_steps needs the adversary's own optimizer (adv_lr); the paper recipe has none",
        )
        check(
            self.lambda_erase == 0 or self.adversary,
            "lambda_erase needs the adversary (its labels and input statistics)",
        )
        check(
            self.adv_weight_decay >= 0,
            f"adv_weight_decay must be >= 0, got {self.adv_weight_decay}",
        )
        check(self.views is None or self.views >= 0, f"views must be >= 0, got {self.views}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.grad_accum >= 1, f"grad_accum must be >= 1, got {self.grad_accum}")
        check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        check(self.patience >= 1, f"patience must be >= 1, got {self.patience}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(
            0 <= self.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}"
        )
        check(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        check(len(self.seeds) >= 1, "seeds must not be empty")
        repeated = sorted({s for s in self.seeds if self.seeds.count(s) > 1})
        check(not repeated, f"seeds must be distinct, got {repeated[0] if repeated else ''} twice")
        # grl_alpha < 0 would turn the reversal off (the encoder would help the adversary).
        for name in (
            "lambda_ce",
            "lambda_reg",
            "lambda_grl",
            "lambda_erase",
            "weight_decay",
            "grl_alpha",
        ):
            value = getattr(self, name)
            check(value >= 0, f"{name} must be >= 0, got {value}")
        check(
            self.clip_grad_norm > 0,
            f"clip_grad_norm must be > 0 (the norm gradients are clipped to), got "
            f"{self.clip_grad_norm}",
        )
        check(
            self.max_seconds is None or self.max_seconds > 0,
            f"max_seconds must be > 0, got {self.max_seconds}",
        )
        check(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}")
        # Each loader worker is a process: more than the machine has cores only thrashes it
        # (100000 forks until the machine is unusable).
        cores = os.cpu_count() or 1
        check(
            self.num_workers <= cores,
            f"num_workers must be at most {cores} (this machine's CPU count), got "
            f"{self.num_workers}",
        )
        check(
            self.checkpoint_every >= 0,
            f"checkpoint_every must be >= 0, got {self.checkpoint_every}",
        )

    @property
    def adversarial_label(self) -> str:
        """The label y- that the adversarial head predicts."""
        return other_label(self.task)

    @property
    def view_kind(self) -> str:
        """Perturbation kind of the views: explicit, or the paper's pairing for the task."""
        return self.perturbation or other_label(self.task)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        data = dataclasses.asdict(self)
        data["seeds"] = list(self.seeds)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming the key. Keys that
        are absent take their default, so configs written before a field existed still load
        (and mean what they meant: every new field defaults to the old behaviour, except
        ``fixed_split``: runs from before per-seed splits record no split per seed, and the
        evaluation and ``--resume`` then use the manifest's split, as they were trained)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise TrainerError(f"config: unknown setting {unknown[0]!r}")
        data = dict(data)
        # Records written before recipes existed were trained with the paper's adversary.
        data.setdefault("lambda_erase", 0.0)  # records from before the eraser had none
        data = with_recipe(data, data.get("recipe", "paper"))
        if "seeds" in data:
            data["seeds"] = parse_seeds(data["seeds"])
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (and validated). Turning the adversary off also
        turns the eraser off unless ``lambda_erase`` is given (as :func:`with_recipe`)."""
        return dataclasses.replace(self, **without_orphan_eraser(changes))

    def first_difference(self, other: TrainConfig) -> tuple[str, Any, Any] | None:
        """The first field (other than resume-neutral ones) whose value differs, or None."""
        mine, theirs = self.to_dict(), other.to_dict()
        for name in mine:
            if name not in RESUME_NEUTRAL_FIELDS and mine[name] != theirs.get(name):
                return name, theirs.get(name), mine[name]
        return None


def _typed(name: str, annotation: str, value: Any) -> Any:
    """``value`` checked against the field's annotation (as written in the class above),
    through the one set of field parsers (``pipeline/fields.py``).

    A config file is user input: ``lr = "fast"``, ``epochs = 1.5`` or ``epochs = true``
    are refused with one line naming the setting, not accepted or crashed on later. An
    integer is accepted where a float is expected (and stored as a float).
    """
    optional = annotation.endswith(" | None")
    base = annotation.removesuffix(" | None")
    if value is None and optional:
        return None
    parse = {
        "bool": lambda: fields.parse_bool(value, name, "config", TrainerError),
        "int": lambda: fields.parse_int(value, name, "config", error=TrainerError),
        "float": lambda: fields.parse_number(value, name, "config", False, TrainerError, True),
        "str": lambda: fields.parse_str(value, name, "config", error=TrainerError),
        "tuple[int, ...]": lambda: parse_seeds(value),
    }
    if base not in parse:  # pragma: no cover - a field type this function does not know yet
        raise TypeError(f"config field {name}: unsupported annotation {annotation}")
    return parse[base]()


def parse_seeds(value: Any) -> tuple[int, ...]:
    """Seeds from ``"42,100,510"``, an int, or a list of ints (booleans and fractions refused)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if isinstance(value, str):
        parts: list[Any] = [p.strip() for p in value.split(",") if p.strip()]
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        raise TrainerError(f"config: seeds must be integers, got {value!r}")
    seeds = []
    for p in parts:
        if isinstance(p, str) and p.lstrip("-").isdigit():
            p = int(p)
        if not isinstance(p, int) or isinstance(p, bool):
            raise TrainerError(f"config: seeds must be integers, got {value!r}")
        seeds.append(p)
    return tuple(seeds)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a ``.toml`` or ``.json`` file, keys spelt like the options
    (``lambda-reg`` or ``lambda_reg``). A ``[train]`` table in TOML is also accepted."""
    from pipeline.manifest import read_regular_file

    path = Path(path)
    try:  # a FIFO in its place is refused, not waited on (as every record the toolkit reads)
        text = read_regular_file(path).decode("utf-8")
    except OSError as error:
        raise TrainerError(f"{path}: cannot read config file ({error.strerror})") from None
    except UnicodeDecodeError:
        raise TrainerError(f"{path}: config file is not UTF-8 text") from None
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise TrainerError(f"{path}: config file must end in .toml or .json")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise TrainerError(f"{path}: not a valid config file ({error})") from None
    if isinstance(data, dict) and isinstance(data.get("train"), dict):
        data = data["train"]
    if not isinstance(data, dict):
        raise TrainerError(f"{path}: config file must hold a table of settings")
    return {key.replace("-", "_"): value for key, value in data.items()}


def resolve_config(file_settings: dict[str, Any] | None, overrides: dict[str, Any]) -> TrainConfig:
    """Defaults <- file settings <- overrides (options given on the command line)."""
    merged: dict[str, Any] = dict(file_settings or {})
    merged.update(overrides)
    if not merged.get("manifest"):
        raise TrainerError("no manifest: pass --manifest PATH (or set manifest in --config)")
    return TrainConfig.from_dict(with_recipe(merged, merged.get("recipe", DEFAULT_RECIPE)))


def with_recipe(settings: dict[str, Any], recipe: Any) -> dict[str, Any]:
    """``settings`` with ``recipe``'s values for the adversary settings it does not give
    (an unknown recipe is left for the config's own check to refuse in one line)."""
    if not isinstance(recipe, str) or recipe not in RECIPES:
        return {**settings, "recipe": recipe}
    return without_orphan_eraser({**RECIPES[recipe], **settings, "recipe": recipe}, settings)


def without_orphan_eraser(
    settings: dict[str, Any], given: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``settings`` with ``lambda_erase`` 0 when they turn the adversary off and ``given``
    (default: ``settings``) does not name the eraser: without the adversary there is nothing
    to erase with (its labels, its input statistics); asked for explicitly, the config's
    check refuses it in one line."""
    given = settings if given is None else given
    if settings.get("adversary") is False and "lambda_erase" not in given:
        return {**settings, "lambda_erase": 0.0}
    return settings
