"""What a run is made of: its plan (from the manifest), its model and its loaders.

- :func:`plan_run` reads the manifest ONCE per command and checks that it has what the
  config asks for (one-line :class:`~trainer.errors.TrainerError` otherwise);
- :func:`build_model` builds the starting model from label counts and a seed;
  :func:`load_selected_model` rebuilds a run's selected model from ``best/``;
- :func:`train_loader` / :func:`eval_loader` build the ``trainer/data.py`` loaders the
  loop and the evaluation use.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.manifest import Manifest, ManifestError, ViewSet
from pipeline.rng import stable_seed
from trainer.config import TrainConfig
from trainer.distributed import SINGLE, Distributed
from trainer.errors import TrainerError
from trainer.model import NCoreModel, load_backbone
from trainer.rundir import RunDir, SeedDir

log = logging.getLogger(__name__)

CUDA_PREFETCH = 2  # training batches read ahead by a thread on CUDA (no loader workers)


@dataclass(frozen=True)
class RunPlan:
    """What the manifest says about this run: view set, label vocabularies, sizes."""

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

    @property
    def out(self) -> Path:
        return self.run.path


def plan_run(config: TrainConfig) -> RunPlan:
    """Read the manifest and check that it has what the config asks for (one-line errors)."""
    manifest_path = Path(config.manifest)
    try:
        manifest = Manifest.load(manifest_path)
        view_set = manifest.view_set(config.view_kind, config.views or None)
    except ManifestError as error:
        raise TrainerError(str(error)) from None
    views = view_set.views if config.views is None else config.views
    train_clips = len(manifest.clips_in("train"))
    if train_clips == 0:
        raise TrainerError(f"{manifest_path}: no clip in the train split")
    if not manifest.clips_in("test"):
        raise TrainerError(f"{manifest_path}: no clip in the test split")
    # What the view set actually stores: clips that failed perturbation are neither trained
    # nor tested. Checked here, before any training, not when the test finds nothing.
    failed = {f.id for f in view_set.failures}
    where = f"{manifest_path}: view set {view_set.kind}-n{view_set.views}-{view_set.key}"
    classes = {getattr(c, config.task) for c in manifest.clips_in("train") if c.id not in failed}
    if len(classes) < 2:
        raise TrainerError(
            f"{where} stores training clips of {len(classes)} {config.task} class(es) "
            f"({', '.join(sorted(classes)) or 'none'}); a classifier needs at least two"
        )
    for split in ("test", "val"):
        listed = [c.id for c in manifest.clips_in(split)]
        if listed and all(cid in failed for cid in listed):
            raise TrainerError(
                f"{where}: every {split} clip ({len(listed)}) failed perturbation, so there is "
                f"nothing to {'test' if split == 'test' else 'select epochs'} on; see the "
                "failures with `ncore-prep inspect`"
            )
    # The paper protocol has no validation split: it selects the epoch on test
    # (docs/evaluation.md, "Protocols").
    val_split = "val" if manifest.clips_in("val") else "test"
    if val_split == "test":
        log.warning(
            "%s has no validation split: selecting epochs on test (paper protocol)", manifest_path
        )
    name = f"{manifest.dataset}-{config.task}-{config.view_kind}-n{views}"
    out = Path(config.out) if config.out else Path("runs") / name
    return RunPlan(
        manifest=manifest,
        manifest_path=manifest_path,
        view_set=view_set,
        views=views,
        task_names=tuple(manifest.labels[config.task]),
        adv_names=tuple(manifest.labels[config.adversarial_label]),
        train_clips=train_clips,
        val_split=val_split,
        run=RunDir(out),
        splits=splits_digest(manifest),
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
    )


def eval_loader(config: TrainConfig, plan: RunPlan, split: str, ddp: Distributed = SINGLE):
    """Batches of view 0 of ``split`` (``trainer.data``), split between ranks."""
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
    )


def manifest_batches(
    config: TrainConfig,
    manifest: Manifest,
    manifest_path: str | Path,
    on_failure: Callable[[str, str], None],
    batch_size: int | None = None,
):
    """Batches of view 0 of every clip of any ``manifest`` (``trainer.data.original_batches``)
    labelled and cropped as the run ``config`` evaluates: a new iterator per call."""
    from trainer.data import original_batches

    return original_batches(
        manifest,
        manifest_path,
        [c.id for c in manifest.clips],
        task=config.task,
        kind=config.view_kind,
        batch_size=batch_size or config.batch_size,
        max_seconds=config.max_seconds,
        on_failure=on_failure,
    )
