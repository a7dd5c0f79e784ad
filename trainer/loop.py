"""The training loop: one function, top to bottom (nanoGPT style).

``train(config)`` plans the run and trains every seed; ``train_seed`` is the loop itself:
model, optimizer and schedule, resume, then per epoch: stream batches, accumulate
gradients, clip, step, evaluate on the validation split, log, select, checkpoint,
early-stop. It ends when the selected model (``best/`` with its record) and the seed record
are written; testing is the evaluation's job (``trainer/evaluate.py``).

Runs the same under ``torchrun`` (DDP; NCCL on GPUs, gloo on CPU): the loaders split shards
between ranks, rank 0 writes every file. What the loop uses lives beside it: processes and
random state in ``distributed.py``, the plan, model and loaders in ``plan.py``, the forward
pass for validation in ``inference.py``, the run folder's names and records in
``rundir.py``, weight files in ``checkpoint.py``.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.memory import tune_malloc
from pipeline.rng import stable_seed
from trainer.adversary import (
    adversary_competence,
    adversary_updates,
    balanced_weight,
    behind_warning,
    gradient_share,
    linear_leakage,
    pair_weights,
)
from trainer.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    resume_state,
    save_checkpoint,
    save_selected,
)
from trainer.config import TrainConfig
from trainer.distributed import (
    Distributed,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    check_ranks_agree,
    gather_rng_states,
    lockstep,
    resolve_device,
    seed_epoch_rngs,
    set_rng_state,
    setup_distributed,
    teardown_distributed,
)
from trainer.errors import TrainerError
from trainer.inference import autocast, infer
from trainer.losses import ncore_loss
from trainer.metrics import uar
from trainer.plan import RunPlan, build_model, eval_loader, plan_run, seed_plan, train_loader
from trainer.rundir import (
    EpochRow,
    ModelRecord,
    PartialEpoch,
    ResumeState,
    RunRecord,
    SeedRecord,
    append_epoch_row,
    read_epoch_rows,
    write_epoch_rows,
)
from trainer.schedules import grl_alpha_at, linear_warmup_decay

log = logging.getLogger(__name__)


@dataclass
class EpochSums:
    """Running sums of one epoch over the clips seen so far (this rank's, until reduced):
    unweighted loss terms times clips, correct predictions of both heads, clips."""

    ce: float = 0.0
    consistency: float = 0.0
    adversarial: float = 0.0
    task_hits: float = 0.0
    adv_hits: float = 0.0
    clips: float = 0.0
    erasure: float = 0.0  # last: checkpoints saved before it hold one value fewer

    def add(self, terms: Any, out: Any, y_task: torch.Tensor, y_adv: torch.Tensor) -> None:
        """Count one micro-batch (``terms``: its LossTerms, ``out``: its ModelOutput)."""
        n = len(y_task)
        self.ce += terms.ce.item() * n
        self.consistency += terms.consistency.item() * n
        self.adversarial += terms.adversarial.item() * n
        self.task_hits += (out.task_logits.argmax(-1) == y_task).sum().item()
        if out.adv_logits is not None:
            self.adv_hits += (out.adv_logits.argmax(-1) == y_adv).sum().item()
        self.clips += n
        if terms.erasure is not None:
            self.erasure += terms.erasure.item() * n

    def to_list(self) -> list[float]:
        return [getattr(self, f.name) for f in fields(self)]

    @classmethod
    def from_saved(cls, saved: list[float] | dict[str, float]) -> EpochSums:
        """From :meth:`to_list` (a checkpoint's ``partial_epoch.sums``) or a field dict."""
        if isinstance(saved, dict):
            return cls(**saved)
        return cls(*saved)

    def reduced(self, ddp: Distributed) -> EpochSums:
        """The sums over all ranks (a collective under DDP, on the CPU: gloo; float64)."""
        total = torch.tensor(self.to_list(), dtype=torch.float64)
        return EpochSums.from_saved(all_reduce_sum(total, ddp).cpu().tolist())


def optimizer_step(optimizer, scheduler, params, clip_norm: float) -> int:
    """Clip, step, advance the schedule, clear gradients; returns 1 (one step taken)."""
    torch.nn.utils.clip_grad_norm_(params, clip_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return 1


# ----- the loop ----------------------------------------------------------------------------
def train_seed(
    config: TrainConfig, plan: RunPlan, seed: int, device: torch.device, ddp: Distributed
) -> SeedRecord:
    """Train one seed into ``seed-<s>/`` on its split (``plan.seed_splits[seed]``, recorded as
    ``split.json`` before the first step); returns its seed record."""
    seed_dir = plan.run.seed(seed)
    plan = seed_plan(plan, plan.seed_splits[seed])

    # -- resume or refuse to overwrite ---------------------------------------------------
    latest = latest_checkpoint(seed_dir.checkpoints)
    if not config.resume and (latest is not None or seed_dir.finished):
        raise TrainerError(
            f"{seed_dir.path} already holds a run: pass --resume to continue it or another --out"
        )
    if config.resume and seed_dir.finished:
        log.info("seed %d already finished (%s); skipping", seed, seed_dir.path)
        return seed_dir.seed_record()
    if latest is not None:  # resuming: the split must be the one the run started on
        recorded = seed_dir.read_split()
        if recorded is None and not config.fixed_split:
            raise TrainerError(
                f"{seed_dir.path} was started before splits were drawn per seed (on the "
                "manifest's split): resume it with --fixed-split"
            )
        if recorded is not None and recorded != plan.split:
            raise TrainerError(
                f"{seed_dir.split_path}: the seed's recorded split differs from the one drawn "
                "now (manifest, --protocol or --fixed-split changed): use another --out"
            )
    if ddp.main:
        seed_dir.path.mkdir(parents=True, exist_ok=True)
        seed_dir.write_split(plan.split)

    # -- model, optimizer, schedule --------------------------------------------------------
    model = build_model(config, len(plan.task_names), len(plan.adv_names), seed).to(device)
    if model.adv_condition == "reweight":
        y_task, y_adv = train_labels(plan, config)
        model.adv_pair_weights.copy_(
            pair_weights(y_task, y_adv, len(plan.task_names), len(plan.adv_names))
        )
    # The paper's recipe: one group, one schedule. Beyond it (adv_lr): the adversary in a
    # group of its own, at a constant rate (trainer/adversary.py).
    own_adversary = model.adv_head is not None and config.adv_lr is not None
    adv_params = list(model.adv_head.parameters()) if own_adversary else []
    adv_ids = {id(p) for p in adv_params}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in adv_ids]
    groups = [{"params": params, "lr": config.lr, "weight_decay": config.weight_decay}]
    if own_adversary:
        groups.append(
            {"params": adv_params, "lr": config.adv_lr, "weight_decay": config.adv_weight_decay}
        )
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    loader = train_loader(config, plan, seed, ddp, device)
    val_loader = eval_loader(config, plan, plan.val_split, ddp)
    steps_per_epoch = math.ceil(len(loader) / config.grad_accum)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = int(config.warmup_ratio * total_steps)

    def backbone_lr(step: int) -> float:
        return linear_warmup_decay(step, total_steps, warmup_steps)

    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, [backbone_lr] + ([lambda step: 1.0] if own_adversary else [])
    )

    # best_acc: the best selection score so far (validation --select-metric), the name the
    # checkpoints have always used; best_val_acc: the validation accuracy of that epoch.
    start_epoch, step, best_acc, best_epoch, bad_epochs = 1, 0, -1.0, 0, 0
    best_val_acc = -1.0
    partial: ResumeState | None = None
    if config.resume and latest is not None:
        state = resume_state(
            latest,
            load_checkpoint(
                latest, model, optimizer, scheduler, config=config.replace(seeds=(seed,))
            ),
        )
        if state.seed != seed:
            raise TrainerError(f"checkpoint {latest} belongs to seed {state.seed}, not {seed}")
        if state.splits is not None and state.splits != plan.splits:
            raise TrainerError(
                f"checkpoint {latest} was written under other splits or labels of the "
                "manifest's clips; resuming would train and test on other clips: pass another "
                "--out"
            )
        start_epoch, step = state.next_epoch, state.step
        best_acc, best_val_acc = state.best_acc, state.best_val_acc
        best_epoch, bad_epochs = state.best_epoch, state.bad_epochs
        if state.partial_epoch is not None:
            partial = state  # a checkpoint inside epoch start_epoch
            log.info(
                "seed %d: resuming from %s (epoch %d, after %d batches)",
                seed,
                latest,
                start_epoch,
                state.batches,
            )
        else:
            log.info("seed %d: resuming from %s (epoch %d done)", seed, latest, state.epoch)
        if ddp.main:
            rows = read_epoch_rows(seed_dir.metrics)
            write_epoch_rows(seed_dir.metrics, [r for r in rows if r.epoch < start_epoch])
    elif ddp.main:
        write_epoch_rows(seed_dir.metrics, [])

    raw_model = model
    if ddp.enabled:
        # Layer drop / SpecAugment may leave parameters without a gradient in a step.
        unused = getattr(model.backbone.config, "layerdrop", 0.0) > 0
        model = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=unused,
        )

    def checkpoint(
        loader_state: dict[str, Any],
        batch: int | None = None,
        rng: list[dict[str, Any]] | None = None,
        clips: list[list[tuple[torch.Tensor, ...]]] | None = None,
        partial_epoch: PartialEpoch | None = None,
    ) -> None:
        """Save the run as it stands now (the loop's current epoch, step, best metric);
        ``batch``, ``rng`` and ``partial_epoch`` for a checkpoint inside the epoch."""
        state = ResumeState(
            epoch=epoch,
            seed=seed,
            step=step,
            best_acc=best_acc,
            best_val_acc=best_val_acc,
            best_epoch=best_epoch,
            bad_epochs=bad_epochs,
            loader=loader_state,
            splits=plan.splits,
            partial_epoch=partial_epoch,
        )
        save_checkpoint(
            seed_dir.checkpoints,
            epoch,
            raw_model,
            optimizer,
            scheduler,
            state=state.to_dict(),
            config=config.replace(seeds=(seed,)),
            batch=batch,
            rng=rng,
            clips=clips,
        )

    # -- epochs ---------------------------------------------------------------------------
    last_epoch = start_epoch - 1
    for epoch in range(start_epoch, config.epochs + 1):
        if bad_epochs >= config.patience:
            break
        started = time.perf_counter()
        seed_epoch_rngs(seed, epoch, ddp.rank)
        model.train()
        sums = EpochSums()
        alphas: list[float] = []  # the GRL strength of each counted micro-batch
        shares: list[float] = []  # the reversed gradient's share of the CE's, per batch
        step_clips: list[tuple[torch.Tensor, ...]] = []  # this step's detached x0, labels
        epoch_clips: list[tuple[torch.Tensor, ...]] = []  # the epoch's, for the instruments
        micro = 0
        restore_rng = None
        loader.set_epoch(epoch)
        if partial is not None:  # continue inside this epoch, exactly where it stopped
            saved_epoch = partial.partial_epoch
            if ddp.main:  # rank 0 carries the saved total; the epoch's all_reduce adds the rest
                sums = EpochSums.from_saved(list(saved_epoch.sums))
            alphas = list(saved_epoch.alphas)
            shares = list(saved_epoch.shares or [])
            micro = partial.batches
            loader.load_state_dict(dict(partial.loader))
            restore_rng = partial.rng
            # The epoch's clips so far, for the adversary's instruments at its end: each
            # rank its own (under another number of processes, rank 0 all of them).
            saved = partial.epoch_clips or []
            if len(saved) == ddp.world_size:
                epoch_clips = [tuple(part) for part in saved[ddp.rank]]
            elif ddp.main:
                epoch_clips = [tuple(part) for rank in saved for part in rank]
            partial = None
        for batch, weight, last in lockstep(loader, ddp, device):
            if restore_rng is not None:
                # Here, not before the loop: starting the DataLoader's iterator draws its
                # base seed from the global generator, as it did in the interrupted run.
                set_rng_state(restore_rng, ddp)
                restore_rng = None
            micro += 1
            audio, lengths = batch.audio.to(device), batch.lengths.to(device)
            y_task, y_adv = batch.y_task.to(device), batch.y_adv.to(device)
            last_of_step = micro % config.grad_accum == 0 or last  # last: a partial step
            sync = nullcontext() if (last_of_step or not ddp.enabled) else model.no_sync()
            # Progress by optimizer step (restored on resume), so every rank and a resumed
            # run use the same strength.
            raw_model.grl_alpha = grl_alpha_at(
                config.grl_alpha, config.grl_schedule, step / total_steps
            )
            with sync:
                with autocast(device):
                    out = model(audio, lengths, y_task)
                erasure, erase_weight = None, 0.0
                if config.lambda_erase and out.adv_logits is not None:
                    erasure = linear_leakage(
                        raw_model.adversary_input(out.embeddings[:, 0].float()),
                        y_adv,
                        len(plan.adv_names),
                        y_task if raw_model.adv_condition != "none" else None,
                    )
                    # Its push at the embedding: lambda_erase times the task CE's, scaled
                    # like the reversal by the GRL strength.
                    erase_weight = balanced_weight(
                        config.lambda_ce * F.cross_entropy(out.task_logits.float(), y_task),
                        erasure,
                        out.embeddings,
                        config.lambda_erase * raw_model.grl_alpha,
                    )
                terms = ncore_loss(
                    out,
                    y_task,
                    y_adv,
                    config.lambda_ce,
                    config.lambda_reg,
                    config.lambda_grl,
                    config.grl_objective,
                    config.consistency_norm,
                    raw_model.adversary_weights(y_task, y_adv) if config.adversary else None,
                    erasure,
                    erase_weight,
                )
                if weight and out.adv_logits is not None:
                    shares.append(gradient_share(terms.task_term, terms.adv_term, out.embeddings))
                (terms.total * weight / config.grad_accum).backward()
            if weight and config.adversary:
                step_clips.append((out.embeddings[:, 0].detach().float(), y_task, y_adv))
            if last_of_step:
                if own_adversary and config.adv_steps:
                    for p in adv_params:  # it learns from its own updates below only
                        p.grad = None
                step += optimizer_step(optimizer, scheduler, params, config.clip_grad_norm)
                if own_adversary and config.adv_steps:  # a collective: every rank, every step
                    gathered = gathered_clips(step_clips, ddp, device)
                    if gathered is not None:
                        adversary_updates(
                            raw_model,
                            optimizer,
                            *gathered,
                            config.adv_steps,
                            # Under DDP each rank's global generator differs: draw the
                            # masks from one seeded by (seed, step), the same on every rank.
                            # One process keeps the global generator (its runs, and the
                            # published positive control, stay as they were).
                            seed=stable_seed("adversary", seed, step) if ddp.enabled else None,
                        )
                epoch_clips.extend(tuple(t.cpu() for t in part) for part in step_clips)
                step_clips = []
            if weight:
                alphas.append(raw_model.grl_alpha)
                sums.add(terms, out, y_task, y_adv)
            if (
                config.checkpoint_every
                and last_of_step
                and not last
                and step % config.checkpoint_every == 0
            ):
                rng = gather_rng_states(ddp, device)
                clips = (  # every rank's, in rank order (a collective under DDP)
                    all_gather_objects([tuple(t.cpu() for t in p) for p in epoch_clips], ddp)
                    if config.adversary
                    else None
                )
                total = sums.reduced(ddp)  # the epoch's sums so far, over all ranks
                if ddp.main:
                    # micro, not the loader's count: lockstep reads one batch ahead.
                    checkpoint(
                        {**loader.state_dict(), "batches": micro, "next_epoch": epoch},
                        batch=micro,
                        rng=rng,
                        clips=clips,
                        partial_epoch=PartialEpoch(
                            tuple(total.to_list()), tuple(alphas), tuple(shares)
                        ),
                    )
                barrier(ddp)
        sums = sums.reduced(ddp)
        check_ranks_agree(raw_model, device, ddp)
        clips = max(sums.clips, 1.0)

        adv_fit = probe_fit = None
        gathered = gathered_clips(epoch_clips, ddp, device) if config.adversary else None
        if gathered is not None and ddp.main:
            adv_fit, probe_fit = adversary_competence(raw_model, *gathered)
            warning = behind_warning(
                config.adversarial_label, adv_fit, probe_fit, config.lambda_erase > 0
            )
            if warning:
                log.warning("seed %d epoch %d: %s", seed, epoch, warning)

        val = infer(raw_model, val_loader, device, ddp)
        val_acc = val.task_accuracy or 0.0
        val_uar = uar(val.y_task, val.task_pred) if len(val) else 0.0
        score = val_uar if config.select_metric == "uar" else val_acc
        row = EpochRow(
            epoch=epoch,
            step=step,
            lr=scheduler.get_last_lr()[0],
            train_ce=sums.ce / clips,
            train_consistency=sums.consistency / clips,
            train_adv=sums.adversarial / clips,
            train_acc_task=sums.task_hits / clips,
            train_acc_adv=sums.adv_hits / clips if config.adversary else None,
            # Mean GRL strength over the epoch's batches (rank 0's; all ranks agree).
            grl_alpha=float(np.mean(alphas)) if config.adversary and alphas else None,
            val_acc_task=val_acc,
            val_acc_adv=val.adv_accuracy,
            train_clips=int(sums.clips),
            seconds=round(time.perf_counter() - started, 3),
            val_uar_task=val_uar,
            adv_fit_acc=adv_fit,
            probe_fit_acc_adv=probe_fit,
            adv_grad_share=float(np.mean(shares)) if shares else None,
            train_erase=sums.erasure / clips if config.lambda_erase and config.adversary else None,
        )
        improved = score > best_acc
        if improved:
            best_acc, best_val_acc, best_epoch, bad_epochs = score, val_acc, epoch, 0
        else:
            bad_epochs += 1
        last_epoch = epoch
        if ddp.main:
            log_epoch(seed, config.epochs, row, improved)
            append_epoch_row(seed_dir.metrics, row)
            if improved:
                save_selected(
                    raw_model,
                    seed_dir,
                    ModelRecord(
                        epoch=epoch,
                        val_acc_task=val_acc,
                        seed=seed,
                        task=config.task,
                        task_names=plan.task_names,
                        adv_names=plan.adv_names,
                        dropout=config.dropout,
                        grl_alpha=config.grl_alpha,
                        adversary=config.adversary,
                        select_metric=config.select_metric,
                        selection_split=plan.val_split,
                        adv_input=config.adv_input,
                        adv_condition=raw_model.adv_condition,
                    ),
                )
            checkpoint({**loader.state_dict(), "next_epoch": epoch + 1})
        barrier(ddp)  # every rank sees the checkpoint and best/ before going on

    # -- done: the seed record marks the selected model final -------------------------------
    record = SeedRecord(
        seed=seed,
        best_epoch=best_epoch,
        val_acc_task=best_val_acc,
        last_epoch=last_epoch,
        steps=step,
    )
    if ddp.main:
        seed_dir.write_seed_record(record)
        log.info(
            "seed %d done: epoch %d selected on %s by %s %.4f",
            seed,
            best_epoch,
            plan.val_split,
            config.select_metric,
            best_acc,
        )
    barrier(ddp)
    return record


def train_labels(plan: RunPlan, config: TrainConfig) -> tuple[list[int], list[int]]:
    """The training split's (y+, y-) label indices, clip by clip."""
    clips = [c for c in plan.manifest.clips if c.split == "train"]
    task = [plan.task_names.index(getattr(c, config.task)) for c in clips]
    adv = [plan.adv_names.index(getattr(c, config.adversarial_label)) for c in clips]
    return task, adv


def gathered_clips(
    parts: list[tuple[torch.Tensor, ...]], ddp: Distributed, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Concatenate ``(x0, y_task, y_adv)`` parts over micro-batches and ranks (rank order),
    on ``device`` (None when no rank has any): every rank then updates the adversary on the
    same clips, identically. A collective under DDP: every rank calls it."""
    local = [tuple(t.cpu() for t in part) for part in parts]
    everything = [part for rank in all_gather_objects(local, ddp) for part in rank]
    if not everything:
        return None
    return tuple(torch.cat([p[i] for p in everything]).to(device) for i in range(3))


def log_epoch(seed: int, epochs: int, row: EpochRow, improved: bool) -> None:
    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    log.info(
        "seed %d epoch %d/%d | ce %.4f reg %.4f adv %.4f | train acc %.3f/%s | "
        "val acc %.3f/%s uar %s%s | lr %.2e | %.1f s",
        seed,
        row.epoch,
        epochs,
        row.train_ce,
        row.train_consistency,
        row.train_adv,
        row.train_acc_task,
        fmt(row.train_acc_adv),
        row.val_acc_task,
        fmt(row.val_acc_adv),
        fmt(row.val_uar_task),
        " *" if improved else "",
        row.lr,
        row.seconds,
    )


def train(config: TrainConfig) -> tuple[RunPlan, list[SeedRecord]]:
    """Train every seed of ``config``; returns the run's plan and the per-seed records."""
    tune_malloc()  # host arrays (CPU activations, loader blocks) stay on the heap
    requested = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    resolve_device(requested)  # fail early and in one line, before joining a process group
    ddp = setup_distributed(torch.device(requested).type)
    device = resolve_device(requested, ddp)
    plan = plan_run(config)
    with plan.run.lock(held=ddp.main):
        records = _train_locked(config, plan, device, ddp)
    teardown_distributed(ddp)
    return plan, records


def _train_locked(
    config: TrainConfig, plan: RunPlan, device: torch.device, ddp: Distributed
) -> list[SeedRecord]:
    """The seeds of ``train``, with the run folder held by this job."""
    if ddp.main:
        record = RunRecord(config, plan.views, plan.view_set.key, plan.splits)
        plan.run.check_record(record)  # another run's folder is refused, not mixed into
        plan.run.write_record(record)
        split = plan.seed_splits[config.seeds[0]]
        log.info(
            "training %s on %s (%s views of %s, view set %s, F0 %g-%g Hz, %d train clips; %s "
            "split%s, protocol %s, epoch selected on %s by %s) -> %s",
            config.task,
            device,
            plan.views,
            config.view_kind,
            plan.view_set.key,
            plan.view_set.f0_floor_hz,
            plan.view_set.f0_ceil_hz,
            plan.train_clips,
            split.mode,
            f" stratified on {split.stratify}" if split.mode == "per-seed" else "",
            split.protocol,
            plan.val_split,
            config.select_metric,
            plan.out,
        )
    return [train_seed(config, plan, seed, device, ddp) for seed in config.seeds]
