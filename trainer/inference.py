"""The one forward path for prediction and embeddings.

Validation during training, the evaluation's test pass, the leakage probes (on the test
split or on another manifest) and ``ncore-train embed`` all call :func:`infer` on batches
from ``trainer/data.py``, so they share one dtype policy (:func:`autocast`: bf16 on CUDA,
full precision elsewhere), one model call (``NCoreModel.infer``: a clip's outputs do not
depend on the batch it is in), one pooling (the model's masked mean over valid frames), one
crop (the centre window of clips longer than ``max_seconds``) and one result type.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from trainer.distributed import SINGLE, Distributed, all_gather_objects


def autocast(device: torch.device):
    """bf16 autocast on CUDA; full precision elsewhere (CPU bf16 is slow and inexact)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@dataclass(frozen=True)
class Inference:
    """Both heads' predictions and the view-0 embedding of every clip, one row per clip.

    ``clip_ids`` (n,); ``y_task`` / ``y_adv`` int64 (n,): the labels as the batches gave
    them; ``task_pred`` int64 (n,); ``adv_pred`` int64 (n,) or None without an adversary;
    ``embeddings`` float32 (n, D): masked mean of the backbone's last hidden state.
    """

    clip_ids: tuple[str, ...]
    y_task: np.ndarray
    y_adv: np.ndarray
    task_pred: np.ndarray
    adv_pred: np.ndarray | None
    embeddings: np.ndarray

    def __len__(self) -> int:
        return len(self.clip_ids)

    @property
    def task_accuracy(self) -> float | None:
        """Fraction of clips whose task prediction is right; None without clips."""
        return _accuracy(self.y_task, self.task_pred)

    @property
    def adv_accuracy(self) -> float | None:
        """The adversarial head's accuracy on y-; None without clips or adversary."""
        return None if self.adv_pred is None else _accuracy(self.y_adv, self.adv_pred)

    def in_order(self, clip_ids: Sequence[str]) -> Inference:
        """The rows of ``clip_ids`` (each present), in that order."""
        where = {cid: i for i, cid in enumerate(self.clip_ids)}
        index = np.asarray([where[cid] for cid in clip_ids], dtype=np.int64)
        return Inference(
            clip_ids=tuple(clip_ids),
            y_task=self.y_task[index],
            y_adv=self.y_adv[index],
            task_pred=self.task_pred[index],
            adv_pred=None if self.adv_pred is None else self.adv_pred[index],
            embeddings=self.embeddings[index],
        )


def _accuracy(truth: np.ndarray, pred: np.ndarray) -> float | None:
    if len(pred) == 0:
        return None
    return float(np.mean(truth == pred))


@torch.no_grad()
def infer(
    model: torch.nn.Module,
    batches: Iterable,
    device: torch.device,
    ddp: Distributed = SINGLE,
) -> Inference:
    """Run ``model`` (an ``NCoreModel``, put in eval mode) over ``batches`` (``Batch``es of
    view 0) and return every clip's predictions and embedding, gathered over ranks and
    sorted by clip id, so the result does not depend on how ranks or loader workers split
    the clips."""
    model.eval()
    rows: list[tuple] = []
    for batch in batches:
        with autocast(device):  # batch-invariant: no padding reaches a mask-less backbone
            out = model.infer(
                batch.audio.to(device), batch.lengths.to(device), batch.y_task.to(device)
            )
        task_pred = out.task_logits.argmax(-1).cpu().numpy()
        adv_pred = (
            out.adv_logits.argmax(-1).cpu().numpy()
            if out.adv_logits is not None
            else [None] * len(task_pred)
        )
        embeddings = out.embeddings[:, 0].float().cpu().numpy()
        rows.extend(
            zip(
                batch.clip_ids,
                batch.y_task.tolist(),
                batch.y_adv.tolist(),
                task_pred.tolist(),
                list(adv_pred),
                embeddings,
                strict=True,
            )
        )
    rows = [row for part in all_gather_objects(rows, ddp) for row in part]
    rows.sort(key=lambda row: row[0])
    dim = int(model.backbone.config.hidden_size)
    has_adv = getattr(model, "adv_head", None) is not None
    return Inference(
        clip_ids=tuple(r[0] for r in rows),
        y_task=np.asarray([r[1] for r in rows], dtype=np.int64),
        y_adv=np.asarray([r[2] for r in rows], dtype=np.int64),
        task_pred=np.asarray([r[3] for r in rows], dtype=np.int64),
        adv_pred=np.asarray([r[4] for r in rows], dtype=np.int64) if has_adv else None,
        embeddings=(
            np.stack([r[5] for r in rows]).astype(np.float32, copy=False)
            if rows
            else np.zeros((0, dim), np.float32)
        ),
    )
