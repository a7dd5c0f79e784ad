"""The training loop: one function, top to bottom (nanoGPT style).

``train(config)`` runs every seed; ``train_seed`` is the loop itself: setup, model,
optimizer and schedule, resume, then per epoch: stream batches, accumulate gradients,
clip, step, evaluate on the validation split, log, checkpoint, early-stop; finally test
the selected epoch and save its backbone with ``save_pretrained``.

Runs the same under ``torchrun`` (DDP; NCCL on GPUs, gloo on CPU): the loaders split shards
between ranks, rank 0 writes every file.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pipeline.memory import tune_malloc
from pipeline.rng import stable_seed
from trainer.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from trainer.config import TrainConfig
from trainer.errors import TrainerError
from trainer.losses import ncore_loss
from trainer.model import NCoreModel, load_backbone, save_backbone

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TEST_METRICS_FILE = "test_metrics.json"
CHECKPOINT_DIR = "checkpoint"
CUDA_PREFETCH = 2  # training batches read ahead by a thread on CUDA (no loader workers)
BEST_DIR = "best"


@dataclass(frozen=True)
class Distributed:
    """Where this process sits in a ``torchrun`` job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


@dataclass(frozen=True)
class RunPlan:
    """What the manifest says about this run: view set, label vocabularies, sizes."""

    manifest: Any
    manifest_path: Path
    view_set: Any
    views: int
    task_names: tuple[str, ...]
    adv_names: tuple[str, ...]
    train_clips: int
    val_split: str
    out: Path


# ----- setup helpers -----------------------------------------------------------------------


def setup_distributed(device_kind: str) -> Distributed:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    if not dist.is_initialized():
        # NCCL for CUDA tensors, gloo beside it for the loop's few CPU tensors (epoch sums).
        backend = "cpu:gloo,cuda:nccl" if device_kind == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def resolve_device(requested: str | None, ddp: Distributed | None = None) -> torch.device:
    """``None`` -> CUDA when present, else CPU. Asking for CUDA without one is an error."""
    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise TrainerError(
            f"--device {requested!r} is not a torch device (cpu, cuda, cuda:1)"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainerError(
                f"--device {requested} asked for but torch sees no CUDA GPU: use --device cpu"
            )
        if device.index is None:
            device = torch.device("cuda", ddp.local_rank if ddp else 0)
        if ddp is not None:
            torch.cuda.set_device(device)  # NCCL collectives run on the current device
    return device


def plan_run(config: TrainConfig) -> RunPlan:
    """Read the manifest and check that it has what the config asks for (one-line errors)."""
    from pipeline.manifest import Manifest, ManifestError

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
    # The paper protocol has no validation split: it selects the epoch on test (DESIGN.md 2).
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
        out=out,
    )


def build_model(config: TrainConfig, plan: RunPlan, seed: int) -> NCoreModel:
    """Backbone + heads, with head (and tiny backbone) weights drawn from ``seed``."""
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
            num_task_classes=len(plan.task_names),
            num_adv_classes=len(plan.adv_names) if config.adversary else None,
            dropout=config.dropout,
            grl_alpha=config.grl_alpha,
        )


def linear_warmup_decay(step: int, total: int, warmup: int) -> float:
    """LR factor: 0 -> 1 over ``warmup`` steps, then 1 -> 0 linearly at ``total``
    (transformers' ``get_linear_schedule_with_warmup``)."""
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def grl_alpha_at(alpha: float, schedule: str, progress: float) -> float:
    """GRL strength at training ``progress`` in [0, 1] (optimizer steps done / total).

    ``constant``: ``alpha`` throughout. ``dann``: Ganin & Lempitsky's ramp
    ``alpha * (2 / (1 + exp(-10 p)) - 1)``, 0 at the start and ~``alpha`` at the end, so the
    adversarial head learns y- before the encoder is pushed against it.
    """
    if schedule == "constant":
        return alpha
    if schedule == "dann":
        return alpha * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)
    raise TrainerError(f"unknown GRL schedule {schedule!r}")


def seed_epoch_rngs(seed: int, epoch: int, rank: int) -> None:
    """Seed torch's and numpy's global generators for this (seed, epoch, rank).

    Dropout (torch) and HF's SpecAugment masks (numpy) draw from the global generators and
    take no Generator argument; re-seeding them at every epoch start makes an epoch's
    random draws independent of what ran before, so a resumed run repeats them exactly.
    """
    torch.manual_seed(stable_seed(seed, "train-epoch", epoch, rank))
    np.random.seed(stable_seed(seed, "train-epoch-numpy", epoch, rank) % 2**32)  # noqa: NPY002


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's global generator states (torch CPU, the CUDA device, numpy)."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [str(kind), torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss],
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def gather_rng_states(ddp: Distributed, device: torch.device) -> list[dict[str, Any]]:
    """Every rank's :func:`rng_state`, in rank order (a collective under DDP)."""
    mine = rng_state(device)
    if not ddp.enabled:
        return [mine]
    states: list[Any] = [None] * ddp.world_size
    dist.all_gather_object(states, mine)
    return states


def set_rng_state(states: list[dict[str, Any]], ddp: Distributed) -> None:
    """Restore this rank's generators from :func:`gather_rng_states`' list.

    Dropout and SpecAugment then draw exactly what the interrupted run would have drawn.
    Under another number of processes that cannot hold: the draws restart from the
    epoch's seed, which is logged.
    """
    if len(states) != ddp.world_size:
        log.warning(
            "checkpoint holds generator states of %d processes, not %d: dropout draws of "
            "the rest of this epoch will differ from the interrupted run",
            len(states),
            ddp.world_size,
        )
        return
    state = states[ddp.rank]
    torch.set_rng_state(state["torch"])
    kind, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), pos, has_gauss, gauss))  # noqa: NPY002
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"], torch.cuda.current_device())


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


def eval_loader(config: TrainConfig, plan: RunPlan, split: str, ddp: Distributed):
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


def autocast(device: torch.device):
    """bf16 autocast on CUDA; full precision elsewhere (CPU bf16 is slow and inexact)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def predict(model: NCoreModel, loader, device: torch.device, ddp: Distributed) -> dict[str, Any]:
    """Predictions of both heads on every clip of ``loader`` (gathered over ranks).

    Returns lists ``clip_ids``, ``y_task``, ``y_adv``, ``task_pred``, ``adv_pred`` (empty
    without an adversary) and ``embeddings`` (an array (clips, D)), sorted by clip id so that
    the result does not depend on the rank/worker split.
    """
    model.eval()
    rows: list[tuple] = []
    for batch in loader:
        with autocast(device):  # batch-invariant: no padding reaches a mask-less backbone
            out = model.infer(batch.audio.to(device), batch.lengths.to(device))
        task_pred = out.task_logits.argmax(-1).cpu().tolist()
        adv_pred = (
            out.adv_logits.argmax(-1).cpu().tolist()
            if out.adv_logits is not None
            else [None] * len(task_pred)
        )
        embeddings = out.embeddings[:, 0].float().cpu().numpy()
        rows.extend(
            zip(
                batch.clip_ids,
                batch.y_task.tolist(),
                batch.y_adv.tolist(),
                task_pred,
                adv_pred,
                embeddings,
                strict=True,
            )
        )
    if ddp.enabled:
        gathered: list[list[tuple]] = [[] for _ in range(ddp.world_size)]
        dist.all_gather_object(gathered, rows)
        rows = [row for part in gathered for row in part]
    rows.sort(key=lambda row: row[0])
    ids, y_task, y_adv, task_pred, adv_pred, embeddings = (
        (list(c) for c in zip(*rows, strict=True)) if rows else ([],) * 6
    )
    return {
        "clip_ids": ids,
        "y_task": y_task,
        "y_adv": y_adv,
        "task_pred": task_pred,
        "adv_pred": [] if not adv_pred or adv_pred[0] is None else adv_pred,
        "embeddings": np.stack(embeddings) if embeddings else np.zeros((0, 0), np.float32),
    }


def lockstep(loader, ddp: Distributed, device: torch.device):
    """Yield ``(batch, weight, last)``: ``last`` marks the epoch's final batch, and under DDP
    every rank yields the same number of batches.

    The data module already gives ranks equal batch counts; this is the safety net that
    keeps collectives from hanging if they ever differ: a rank that has run out repeats its
    last batch with weight 0 (no gradient, not counted) until every rank is done. One
    batch of look-ahead tells the loop which batch is the last, so the epoch's final
    (possibly partial) gradient accumulation is synchronised and stepped.
    """

    def anyone_has(batch) -> bool:
        if not ddp.enabled:
            return batch is not None
        flag = torch.tensor([0 if batch is None else 1], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    batches = iter(loader)
    current = next(batches, None)
    fallback = current
    more = anyone_has(current)
    while more:
        if current is None and fallback is None:
            raise TrainerError(
                f"rank {ddp.rank} got no training clip: fewer train clips than processes"
            )
        following = next(batches, None)
        more = anyone_has(following)
        if current is not None:
            fallback = current
            yield current, 1.0, not more
        else:
            yield fallback, 0.0, not more
        current = following


def check_ranks_agree(model: nn.Module, device: torch.device) -> None:
    """Raise if the ranks' weights have drifted apart (a broken gradient synchronisation).

    Compares one float64 fingerprint of all parameters across ranks: cheap, and it turns a
    silent divergence into an error at the end of the epoch where it happened.
    """
    with torch.no_grad():
        fingerprint = sum(
            (p.detach().double() * (i + 1)).sum() for i, p in enumerate(model.parameters())
        )
    fingerprints = [
        torch.zeros((), dtype=torch.float64, device=device) for _ in range(dist.get_world_size())
    ]
    dist.all_gather(fingerprints, fingerprint.to(device))
    if any(not torch.equal(f, fingerprints[0]) for f in fingerprints):
        raise RuntimeError(f"DDP ranks hold different weights: {[f.item() for f in fingerprints]}")


def optimizer_step(optimizer, scheduler, params, clip_norm: float) -> int:
    """Clip, step, advance the schedule, clear gradients; returns 1 (one step taken)."""
    torch.nn.utils.clip_grad_norm_(params, clip_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return 1


def accuracy(truth: list[int], pred: list[int]) -> float | None:
    """Fraction of ``pred`` equal to ``truth``; None when there is nothing to compare."""
    if not pred:
        return None
    return float(np.mean(np.asarray(truth) == np.asarray(pred)))


def save_selected(model: NCoreModel, folder: Path, info: dict[str, Any]) -> None:
    """Write the selected model as ``best/``: ``backbone/`` (save_pretrained, loadable with
    transformers), ``heads.safetensors`` and ``model.json``; atomically (temp + rename)."""
    from safetensors.torch import save_file, save_model

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        save_backbone(model.backbone, model.spec, tmp / "backbone")
        heads = {
            name: tensor.detach().cpu().contiguous()
            for name, tensor in model.state_dict().items()
            if not name.startswith("backbone.")
        }
        save_file(heads, str(tmp / "heads.safetensors"))
        save_model(model, str(tmp / "model.safetensors"))  # the whole model, for the test pass
        (tmp / "model.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_metrics_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` with ``rows`` (used on resume to drop rows past the
    checkpoint, so a resumed run's file matches an uninterrupted one)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, path)


def read_metrics_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


# ----- the loop ----------------------------------------------------------------------------


def train_seed(
    config: TrainConfig, plan: RunPlan, seed: int, device: torch.device, ddp: Distributed
) -> dict[str, Any]:
    """Train one seed; returns its test metrics (also written to ``seed-<s>/test_metrics.json``)."""
    run_dir = plan.out / f"seed-{seed}"
    ckpt_dir = run_dir / CHECKPOINT_DIR
    metrics_path = run_dir / METRICS_FILE
    done_path = run_dir / TEST_METRICS_FILE

    # -- resume or refuse to overwrite ---------------------------------------------------
    latest = latest_checkpoint(ckpt_dir)
    if not config.resume and (latest is not None or done_path.exists()):
        raise TrainerError(
            f"{run_dir} already holds a run: pass --resume to continue it or another --out"
        )
    if config.resume and done_path.exists():
        log.info("seed %d already finished (%s); skipping", seed, done_path)
        return json.loads(done_path.read_text(encoding="utf-8"))

    # -- model, optimizer, schedule --------------------------------------------------------
    model = build_model(config, plan, seed).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    loader = train_loader(config, plan, seed, ddp, device)
    val_loader = eval_loader(config, plan, plan.val_split, ddp)
    steps_per_epoch = math.ceil(len(loader) / config.grad_accum)
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = int(config.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: linear_warmup_decay(step, total_steps, warmup_steps)
    )

    start_epoch, step, best_acc, best_epoch, bad_epochs = 1, 0, -1.0, 0, 0
    partial: dict[str, Any] | None = None
    if config.resume and latest is not None:
        state = load_checkpoint(
            latest, model, optimizer, scheduler, config=config.replace(seeds=(seed,))
        )
        if state["seed"] != seed:
            raise TrainerError(f"checkpoint {latest} belongs to seed {state['seed']}, not {seed}")
        start_epoch = state["loader"]["next_epoch"]
        step, best_acc = state["step"], state["best_acc"]
        best_epoch, bad_epochs = state["best_epoch"], state["bad_epochs"]
        if "partial_epoch" in state:
            partial = state  # a checkpoint inside epoch start_epoch
            log.info(
                "seed %d: resuming from %s (epoch %d, after %d batches)",
                seed,
                latest,
                start_epoch,
                state["loader"]["batches"],
            )
        else:
            log.info("seed %d: resuming from %s (epoch %d done)", seed, latest, state["epoch"])
        if ddp.main:
            write_metrics_rows(
                metrics_path,
                [r for r in read_metrics_rows(metrics_path) if r["epoch"] < start_epoch],
            )
    elif ddp.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_metrics_rows(metrics_path, [])

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
        **extra: Any,
    ) -> None:
        """Save the run as it stands now (the loop's current epoch, step, best metric);
        ``batch`` and ``rng`` for a checkpoint inside the epoch, ``extra`` into state.json."""
        save_checkpoint(
            ckpt_dir,
            epoch,
            raw_model,
            optimizer,
            scheduler,
            state={
                "seed": seed,
                "step": step,
                "best_acc": best_acc,
                "best_epoch": best_epoch,
                "bad_epochs": bad_epochs,
                "loader": loader_state,
                **extra,
            },
            config=config.replace(seeds=(seed,)),
            batch=batch,
            rng=rng,
        )

    # -- epochs ---------------------------------------------------------------------------
    for epoch in range(start_epoch, config.epochs + 1):
        if bad_epochs >= config.patience:
            break
        started = time.perf_counter()
        seed_epoch_rngs(seed, epoch, ddp.rank)
        model.train()
        sums = torch.zeros(6, dtype=torch.float64)  # ce, reg, adv, task hits, adv hits, clips
        alphas: list[float] = []  # the GRL strength of each counted micro-batch
        micro = 0
        restore_rng = None
        loader.set_epoch(epoch)
        if partial is not None:  # continue inside this epoch, exactly where it stopped
            if ddp.main:  # rank 0 carries the saved total; the epoch's all_reduce adds the rest
                sums = torch.tensor(partial["partial_epoch"]["sums"], dtype=torch.float64)
            alphas = list(partial["partial_epoch"]["alphas"])
            micro = partial["loader"]["batches"]
            loader.load_state_dict(partial["loader"])
            restore_rng = partial["rng"]
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
                    out = model(audio, lengths)
                terms = ncore_loss(
                    out,
                    y_task,
                    y_adv,
                    config.lambda_ce,
                    config.lambda_reg,
                    config.lambda_grl,
                    config.grl_objective,
                    config.consistency_norm,
                )
                (terms.total * weight / config.grad_accum).backward()
            if last_of_step:
                step += optimizer_step(optimizer, scheduler, params, config.clip_grad_norm)
            if weight:
                alphas.append(raw_model.grl_alpha)
                n = len(y_task)
                adv_hits = (
                    0
                    if out.adv_logits is None
                    else (out.adv_logits.argmax(-1) == y_adv).sum().item()
                )
                sums += torch.tensor(
                    [
                        terms.ce.item() * n,
                        terms.consistency.item() * n,
                        terms.adversarial.item() * n,
                        (out.task_logits.argmax(-1) == y_task).sum().item(),
                        adv_hits,
                        n,
                    ],
                    dtype=torch.float64,
                )
            if (
                config.checkpoint_every
                and last_of_step
                and not last
                and step % config.checkpoint_every == 0
            ):
                rng = gather_rng_states(ddp, device)
                total = sums.to(device, copy=True)  # the epoch's sums so far, over all ranks
                if ddp.enabled:
                    dist.all_reduce(total)
                if ddp.main:
                    # micro, not the loader's count: lockstep reads one batch ahead.
                    checkpoint(
                        {**loader.state_dict(), "batches": micro, "next_epoch": epoch},
                        batch=micro,
                        rng=rng,
                        partial_epoch={"sums": total.cpu().tolist(), "alphas": alphas},
                    )
                if ddp.enabled:
                    dist.barrier()
        if ddp.enabled:
            dist.all_reduce(sums)
            check_ranks_agree(raw_model, device)
        clips = max(sums[5].item(), 1.0)

        val = predict(raw_model, val_loader, device, ddp)
        val_acc = accuracy(val["y_task"], val["task_pred"]) or 0.0
        row = {
            "epoch": epoch,
            "step": step,
            "lr": scheduler.get_last_lr()[0],
            "train_ce": sums[0].item() / clips,
            "train_consistency": sums[1].item() / clips,
            "train_adv": sums[2].item() / clips,
            "train_acc_task": sums[3].item() / clips,
            "train_acc_adv": sums[4].item() / clips if config.adversary else None,
            # Mean GRL strength over the epoch's batches (rank 0's; all ranks agree).
            "grl_alpha": float(np.mean(alphas)) if config.adversary and alphas else None,
            "val_acc_task": val_acc,
            "val_acc_adv": accuracy(val["y_adv"], val["adv_pred"]),
            "train_clips": int(sums[5].item()),
            "seconds": round(time.perf_counter() - started, 3),
        }
        improved = val_acc > best_acc
        if improved:
            best_acc, best_epoch, bad_epochs = val_acc, epoch, 0
        else:
            bad_epochs += 1
        if ddp.main:
            log.info(
                "seed %d epoch %d/%d | ce %.4f reg %.4f adv %.4f | train acc %.3f/%s | "
                "val acc %.3f/%s%s | lr %.2e | %.1f s",
                seed,
                epoch,
                config.epochs,
                row["train_ce"],
                row["train_consistency"],
                row["train_adv"],
                row["train_acc_task"],
                _fmt(row["train_acc_adv"]),
                val_acc,
                _fmt(row["val_acc_adv"]),
                " *" if improved else "",
                row["lr"],
                row["seconds"],
            )
            with metrics_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            if improved:
                save_selected(
                    raw_model,
                    run_dir / BEST_DIR,
                    {
                        "epoch": epoch,
                        "val_acc_task": val_acc,
                        "seed": seed,
                        "task": config.task,
                        "task_names": list(plan.task_names),
                        "adv_names": list(plan.adv_names),
                        "dropout": config.dropout,
                        "grl_alpha": config.grl_alpha,
                        "adversary": config.adversary,
                    },
                )
            checkpoint({**loader.state_dict(), "next_epoch": epoch + 1})
        if ddp.enabled:
            dist.barrier()  # every rank sees the checkpoint and best/ before going on

    # -- test the selected epoch ------------------------------------------------------------
    from trainer.checkpoint import load_weights
    from trainer.evaluate import seed_record

    load_weights(raw_model, run_dir / BEST_DIR / "model.safetensors")
    test = predict(raw_model, eval_loader(config, plan, "test", ddp), device, ddp)
    record = seed_record(
        seed,
        plan.task_names,
        plan.adv_names,
        test["y_task"],
        test["y_adv"],
        test["task_pred"],
        test["adv_pred"] or None,
        probes={},
    )
    record["best_epoch"] = best_epoch
    record["val_acc_task"] = best_acc
    if ddp.main:
        tmp = done_path.with_name(f".{done_path.name}.tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, done_path)
        m = record["metrics"]
        log.info(
            "seed %d test (epoch %d): accuracy %.4f macro F1 %.4f UAR %.4f",
            seed,
            best_epoch,
            m["accuracy"],
            m["macro_f1"],
            m["uar"],
        )
    if ddp.enabled:
        dist.barrier()
    return record


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def train(config: TrainConfig) -> list[dict[str, Any]]:
    """Train every seed of ``config``; returns the per-seed test records."""
    tune_malloc()  # host arrays (CPU activations, loader blocks) stay on the heap
    requested = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    resolve_device(requested)  # fail early and in one line, before joining a process group
    ddp = setup_distributed(torch.device(requested).type)
    device = resolve_device(requested, ddp)
    plan = plan_run(config)
    if ddp.main:
        plan.out.mkdir(parents=True, exist_ok=True)
        (plan.out / "config.json").write_text(
            json.dumps(
                {**config.to_dict(), "resolved_views": plan.views, "view_set": plan.view_set.key},
                indent=1,
            )
            + "\n",
            encoding="utf-8",
        )
        log.info(
            "training %s on %s (%s views of %s, %d train clips) -> %s",
            config.task,
            device,
            plan.views,
            config.view_kind,
            plan.train_clips,
            plan.out,
        )
    records = [train_seed(config, plan, seed, device, ddp) for seed in config.seeds]
    if ddp.enabled:
        dist.destroy_process_group()
    return records
