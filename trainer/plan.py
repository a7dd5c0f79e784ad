"""What a run is made of: its plan (from the manifest), its model and its loaders.

- :func:`plan_run` reads the manifest ONCE per command and checks that it has what the
  config asks for (one-line :class:`~trainer.errors.TrainerError` otherwise), and draws
  every seed's split (``pipeline/splits.py``: one split per seed by default);
  :func:`seed_plan` is the plan of one seed, whose manifest carries that seed's split;
- :func:`build_model` builds the starting model from label counts and a seed;
  :func:`load_selected_model` rebuilds a run's selected model from ``best/``;
- :func:`train_loader` / :func:`eval_loader` build the ``trainer/data.py`` loaders the
  loop and the evaluation use.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.manifest import Manifest, ViewSet
from pipeline.rng import stable_seed
from pipeline.splits import SeedSplit, SplitError, seed_split, stored_seed_split
from trainer.config import TrainConfig
from trainer.distributed import SINGLE, Distributed
from trainer.errors import TrainerError
from trainer.model import NCoreModel, load_backbone
from trainer.rundir import RunDir, SeedDir

log = logging.getLogger(__name__)

CUDA_PREFETCH = 2  # training batches read ahead by a thread on CUDA (no loader workers)


@dataclass(frozen=True)
class RunPlan:
    """What the manifest says about this run: view set, label vocabularies, sizes, and the
    split of every seed (``splits``). A seed's plan (:func:`seed_plan`) has ``split`` set,
    its manifest's clips carry that split, and ``val_split`` is the split that selects the
    epoch (``val``; ``test`` under the paper protocol only)."""

    manifest: Manifest
    manifest_path: Path
    view_set: ViewSet
    views: int
    task_names: tuple[str, ...]
    adv_names: tuple[str, ...]
    train_clips: int
    val_split: str
    run: RunDir
    splits: str = ""  # digest of every clip's split and labels (splits_digest)
    seed_splits: dict[int, SeedSplit] = field(default_factory=dict)
    split: SeedSplit | None = None

    @property
    def out(self) -> Path:
        return self.run.path


def draw_split(config: TrainConfig, manifest: Manifest, manifest_path: Path, seed: int):
    """Seed ``seed``'s split under the config's protocol (one-line error naming the fix)."""
    mode = "fixed" if config.fixed_split else "per-seed"
    try:
        return seed_split(manifest.clips, manifest.split, seed, config.task, mode, config.protocol)
    except SplitError as error:  # named after the manifest it was drawn from
        raise SplitError(f"{manifest_path}: {error}") from None


def plan_run(config: TrainConfig, draw_splits: bool = True) -> RunPlan:
    """Read the manifest, check that it has what the config asks for and draw every seed's
    split (one-line errors, before any training). ``draw_splits=False`` (evaluation: the
    seeds' splits are read from their records) describes the manifest's stored split."""
    manifest_path = Path(config.manifest)
    manifest = Manifest.load(manifest_path)
    view_set = choose_view_set(config, manifest, manifest_path, reads_run=not draw_splits)
    views = view_set.views if config.views is None else config.views
    if draw_splits:
        seed_splits = {
            seed: draw_split(config, manifest, manifest_path, seed) for seed in config.seeds
        }
        first = seed_splits[config.seeds[0]]
    else:
        seed_splits, first = {}, stored_split(manifest, config.seeds[0])
    for split in seed_splits.values() or [first]:
        check_stored_clips(config, manifest, manifest_path, view_set, split)
    if draw_splits and first.selection_split == "test":
        log.info("protocol paper: the epoch is selected on the test split (recorded)")
    name = f"{manifest.dataset}-{config.task}-{config.view_kind}-n{views}"
    out = Path(config.out) if config.out else Path("runs") / name
    if not config.out and config.view_set_key is None and config.resume:
        # The default folder of the largest view set: resume the view set it recorded.
        recorded = recorded_view_set(RunDir(out))
        if recorded is not None and recorded != view_set.key:
            return plan_run(config.replace(out=str(out), view_set_key=recorded), draw_splits)
    return RunPlan(
        manifest=manifest,
        manifest_path=manifest_path,
        view_set=view_set,
        views=views,
        task_names=tuple(manifest.labels[config.task]),
        adv_names=tuple(manifest.labels[config.adversarial_label]),
        train_clips=len(first.train),
        val_split=first.selection_split,
        run=RunDir(out),
        splits=splits_digest(manifest),
        seed_splits=seed_splits,
    )


def recorded_view_set(run: RunDir) -> str | None:
    """The key of the view set the run in ``run`` trained on (``config.json``), or None when
    there is no run there (or one from before the key was recorded)."""
    if not run.config_path.is_file():
        return None
    return run.read_record().view_set


def choose_view_set(
    config: TrainConfig, manifest: Manifest, manifest_path: Path, reads_run: bool = False
) -> ViewSet:
    """The view set a run uses: ``config.view_set_key`` (``--view-set``); else, when the run
    folder ``config.out`` holds a run and this is a ``--resume`` or an evaluation
    (``reads_run``), the view set that run recorded; else the largest complete one of the
    kind with at least ``config.views`` views. A named or recorded view set that is gone
    from the manifest, unfinished, of another kind or with fewer views than asked is refused
    in one line: a run never goes on, or is measured, on another view set than its own."""
    from pipeline.manifest import ManifestError
    from pipeline.reader import LocatedManifest
    from pipeline.reader import choose_view_set as the_view_set

    source = LocatedManifest.of(manifest, manifest_path)
    key, asker = config.view_set_key, "--view-set"
    if key is None and config.out and (config.resume or reads_run):
        key, asker = recorded_view_set(RunDir(Path(config.out))), f"the run in {config.out}"
    if key is None:
        return the_view_set(source, config.view_kind, config.views or None)
    try:
        view_set = the_view_set(source, key=key)
    except ManifestError as error:  # the same error, with who asked for the view set
        raise ManifestError(f"{error} (asked for by {asker})") from None
    if view_set.kind != config.view_kind:
        raise TrainerError(
            f"{manifest_path}: view set {key} ({asker}) holds {view_set.kind} views, but the "
            f"run uses {config.view_kind} views"
        )
    if config.views and config.views > view_set.views:
        raise TrainerError(
            f"{manifest_path}: {config.views} views asked for but view set {key} ({asker}) "
            f"stores {view_set.views}"
        )
    return view_set


def check_stored_clips(
    config: TrainConfig,
    manifest: Manifest,
    manifest_path: Path,
    view_set: ViewSet,
    split: SeedSplit,
) -> None:
    """What the view set actually stores of ``split``: clips that failed perturbation are
    neither trained nor tested. Checked before any training, not when the test finds
    nothing (one-line errors)."""
    failed = {f.id for f in view_set.failures}
    where = f"{manifest_path}: view set {view_set.kind}-n{view_set.views}-{view_set.key}"
    by_id = manifest.clip_by_id()
    classes = {getattr(by_id[cid], config.task) for cid in split.train if cid not in failed}
    if len(classes) < 2:
        raise TrainerError(
            f"{where} stores training clips of {len(classes)} {config.task} class(es) "
            f"({', '.join(sorted(classes)) or 'none'}) for seed {split.seed}; a classifier "
            "needs at least two"
        )
    for name in ("test", "val"):
        listed = getattr(split, name)
        if listed and all(cid in failed for cid in listed):
            raise TrainerError(
                f"{where}: every {name} clip ({len(listed)}) failed perturbation (seed "
                f"{split.seed}'s split), so there is nothing to "
                f"{'test' if name == 'test' else 'select epochs'} on; see the failures with "
                "`ncore-prep inspect`"
            )


def stored_split(manifest: Manifest, seed: int) -> SeedSplit:
    """The manifest's stored split as seed ``seed``'s: what a run folder from before
    per-seed splits (no ``split.json``) was trained and selected on."""
    return stored_seed_split(manifest.clips, manifest.split, seed)


def recorded_split(seed_dir: SeedDir, manifest: Manifest) -> SeedSplit:
    """The split seed ``seed_dir`` trained and was tested on: its ``split.json``, else (a
    run folder from before per-seed splits) the manifest's stored split."""
    return seed_dir.read_split() or stored_split(manifest, seed_dir.seed)


def with_split(manifest: Manifest, split: SeedSplit) -> Manifest:
    """``manifest`` whose clips carry ``split`` (clips it does not list keep theirs): the
    one place a seed's split is laid onto a manifest, which the loaders read it from."""
    assignment = split.assignment()
    return replace(
        manifest,
        clips=tuple(replace(c, split=assignment.get(c.id, c.split)) for c in manifest.clips),
    )


def seed_plan(plan: RunPlan, split: SeedSplit) -> RunPlan:
    """The plan of one seed: its manifest's clips carry ``split`` (the loaders read a
    clip's split from there); the view sets, and so the cache, are untouched."""
    assignment = split.assignment()
    missing = sorted(set(assignment) - {c.id for c in plan.manifest.clips})
    if missing:
        raise TrainerError(
            f"{plan.manifest_path}: clip {missing[0]!r} of seed {split.seed}'s split is not in "
            "the manifest (the manifest changed since the run was trained)"
        )
    return replace(
        plan,
        manifest=with_split(plan.manifest, split),
        train_clips=len(split.train),
        val_split=split.selection_split,
        split=split,
    )


def splits_digest(manifest: Manifest) -> str:
    """A SHA-256 of every clip's id, split and labels, in id order.

    A run records it (``config.json``, every checkpoint) so that resuming refuses a manifest
    whose splits or labels changed under the same view set: the run would otherwise go on
    training and testing on other clips.
    """
    h = hashlib.sha256()
    for c in sorted(manifest.clips, key=lambda c: c.id):
        h.update("\x1f".join((c.id, c.split, c.emotion, c.speaker)).encode("utf-8") + b"\x1e")
    return "sha256:" + h.hexdigest()


def build_model(config: TrainConfig, task_classes: int, adv_classes: int, seed: int) -> NCoreModel:
    """Backbone + heads for ``task_classes`` y+ and ``adv_classes`` y- classes, with head
    (and tiny backbone) weights drawn from ``seed``: the model training starts from."""
    backbone, spec = load_backbone(config.backbone, seed=stable_seed(seed, "backbone"))
    if config.freeze_feature_encoder:
        # The bare encoders (HubertModel, Wav2Vec2Model, ...) expose the conv stack as
        # ``feature_extractor``; some model classes also have ``freeze_feature_encoder()``.
        encoder = getattr(backbone, "feature_extractor", None)
        if hasattr(backbone, "freeze_feature_encoder"):
            backbone.freeze_feature_encoder()
        elif isinstance(encoder, nn.Module):
            encoder.requires_grad_(False)
            encoder._requires_grad = False  # HF's flag: skip its gradient checkpointing
        else:
            raise TrainerError(f"backbone {config.backbone!r} has no feature encoder to freeze")
    if config.gradient_checkpointing:
        # Non-reentrant checkpointing works with DDP and a frozen conv stack; transformers 5
        # renamed the method (the old name is deprecated there).
        kwargs = {"use_reentrant": False}
        if hasattr(backbone, "activation_checkpointing_enable"):
            backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stable_seed(seed, "heads"))
        return NCoreModel(
            backbone,
            spec,
            num_task_classes=task_classes,
            num_adv_classes=adv_classes if config.adversary else None,
            dropout=config.dropout,
            grl_alpha=config.grl_alpha,
            adv_input=config.adv_input,
            adv_condition=config.adv_condition,
        )


def load_selected_model(
    seed_dir: SeedDir, device: torch.device | str = "cpu"
) -> tuple[NCoreModel, Any]:
    """The selected model of one seed (``best/``), in eval mode, and its ModelRecord.

    The backbone is loaded with ``from_pretrained`` from ``best/backbone`` (so any backbone
    the trainer saved), the heads from ``best/heads.safetensors``; sizes from the record.
    """
    from trainer.checkpoint import load_selected_heads

    record = seed_dir.model_record()
    backbone, spec = load_backbone(str(seed_dir.backbone))
    model = NCoreModel(
        backbone,
        spec,
        num_task_classes=len(record.task_names),
        num_adv_classes=len(record.adv_names) if record.adversary else None,
        dropout=record.dropout,
        grl_alpha=record.grl_alpha,
        adv_input=record.adv_input,
        adv_condition=record.adv_condition,
    )
    load_selected_heads(model, seed_dir)
    return model.to(device).eval(), record


def train_loader(
    config: TrainConfig, plan: RunPlan, seed: int, ddp: Distributed, device: torch.device
):
    """Batches of views 0..N of the train split (``trainer.data``); call ``set_epoch``.

    On CUDA without loader workers a thread reads ``CUDA_PREFETCH`` batches ahead while the
    GPU computes; on CPU it reads inside ``next()``, which measured faster there (the model
    already keeps every core busy; see docs/streaming.md).
    """
    from trainer.data import make_train_loader

    return make_train_loader(
        plan.manifest,
        plan.manifest_path,
        task=config.task,
        kind=config.view_kind,
        views=plan.views,
        batch_size=config.batch_size,
        seed=seed,
        max_seconds=config.max_seconds,
        num_workers=config.num_workers,
        rank=ddp.rank,
        world_size=ddp.world_size,
        pin_memory=False,
        prefetch=CUDA_PREFETCH if device.type == "cuda" else 0,
        view_set=plan.view_set,
    )


def eval_loader(
    config: TrainConfig, plan: RunPlan, split: str, ddp: Distributed = SINGLE, view: int = 0
):
    """Batches of view 0 (or perturbed view ``view``) of ``split`` (``trainer.data``), split
    between ranks."""
    from trainer.data import make_eval_loader

    return make_eval_loader(
        plan.manifest,
        plan.manifest_path,
        split,
        task=config.task,
        kind=config.view_kind,
        batch_size=config.batch_size,
        max_seconds=config.max_seconds,
        num_workers=config.num_workers,
        rank=ddp.rank,
        world_size=ddp.world_size,
        view=view,
        view_set=plan.view_set,
    )


def manifest_batches(
    config: TrainConfig,
    manifest: Manifest,
    manifest_path: str | Path,
    on_failure: Callable[[str, str], None],
    batch_size: int | None = None,
    clip_ids: Sequence[str] | None = None,
):
    """Batches of view 0 of every clip of any ``manifest`` (or of ``clip_ids``;
    ``trainer.data.original_batches``) labelled and cropped as the run ``config`` evaluates:
    a new iterator per call."""
    from trainer.data import original_batches

    return original_batches(
        manifest,
        manifest_path,
        [c.id for c in manifest.clips] if clip_ids is None else list(clip_ids),
        task=config.task,
        kind=config.view_kind,
        batch_size=batch_size or config.batch_size,
        max_seconds=config.max_seconds,
        on_failure=on_failure,
    )
