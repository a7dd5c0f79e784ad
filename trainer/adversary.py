"""An adversary that can learn, and what it can read (beyond the paper; docs/training.md,
"Recipes").

The paper trains h- as a fresh MLP on the raw pooled embedding, in the backbone's optimizer
and schedule. Measured on the positive control (README), such a head barely learns in a
short run: the task's cross-entropy puts nearly all of the embedding's variance into y+
directions, y- sits in directions holding a few per cent of it, and a head that reads y-
near chance sends the encoder a reversed gradient with no y- direction in it. The standard
remedies of domain-adversarial training, each a recorded option of ``ncore-train``:

- its own AdamW parameter group with its own constant learning rate (``adv_lr``) and
  weight decay, and ``adv_steps`` updates per optimizer step on the detached embeddings of
  that step's clips (:func:`adversary_updates`), so it keeps up with the encoder;
- input statistics it does not learn by gradient (:class:`InputNorm`): the embedding
  standardised per dimension or whitened, with running statistics of the detached
  embeddings; the reversed gradient flows through that fixed affine map, so the encoder is
  pushed hardest in the low-variance directions where y- lives;
- for entangled labels, where an unconditional adversary's optimum is the y+ -> y- map and
  its reversed gradient attacks the task: the adversary is given y+ (``task-label``; the
  equalised-odds adversary of Zhang, Lemoine and Mitchell 2018, the conditioning of CDAN,
  Long et al. 2018), or its loss is weighted so that y+ and y- are independent for it
  (``reweight``: weight p(y+) p(y-) / p(y+, y-) from the training split's counts).

:func:`adversary_competence` is the instrument: the adversary's accuracy on the
embeddings it was trained on against a standardised linear probe on the same embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import ADV_CONDITIONS, ADV_INPUTS  # noqa: F401 (re-exported)

# The adversary is "far behind" a linear probe reading the same embeddings when it trails
# it by more than this (fraction): the reversal then removes little (one-line warning).
BEHIND = 0.20


class InputNorm(nn.Module):
    """``(x - mean) @ transform`` with running statistics of detached embeddings.

    ``mode``: ``standardize`` (transform = diag(1 / std)) or ``whiten`` (ZCA: transform =
    C^(-1/2) of the running covariance C). Eigenvalues (variances) are floored at
    ``ridge`` times their mean, so directions the running window has not seen are not
    amplified without bound. Statistics are exponential moving averages (float64, the
    cumulative average until ``1 / momentum`` updates have been seen); :meth:`update`
    changes them, gradients never do. Buffers: saved with the model's heads.
    """

    def __init__(self, dim: int, mode: str, momentum: float = 0.05, ridge: float = 1e-2):
        super().__init__()
        if mode not in ("standardize", "whiten"):
            raise ValueError(f"unknown adversary input {mode!r}")
        self.mode, self.momentum, self.ridge = mode, momentum, ridge
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("second", torch.eye(dim, dtype=torch.float64))  # E[x x^T]
        self.register_buffer("transform", torch.eye(dim, dtype=torch.float32))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold the rows of ``x`` (n, D), detached, into the statistics; recompute the map."""
        x = x.detach().to(self.mean.device, torch.float64)
        n = x.shape[0]
        if n == 0:
            return
        rate = max(self.momentum, n / float(self.count.item() + n))
        self.mean.lerp_(x.mean(dim=0), rate)
        self.second.lerp_(x.T @ x / n, rate)
        self.count.add_(n)
        cov = self.second - torch.outer(self.mean, self.mean)
        if self.mode == "standardize":
            var = cov.diagonal().clamp(min=0)
            floor = self.ridge * var.mean().clamp(min=1e-12)
            transform = torch.diag((var + floor).rsqrt())
        else:
            cov = (cov + cov.T) / 2
            values, vectors = torch.linalg.eigh(cov)
            values = values.clamp(min=0)
            floor = self.ridge * values.mean().clamp(min=1e-12)
            transform = vectors @ torch.diag((values + floor).rsqrt()) @ vectors.T
        self.transform.copy_(transform.to(self.transform.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) @ self.transform.to(x.dtype)


def pair_weights(y_task: Sequence[int], y_adv: Sequence[int], task_classes: int, adv_classes: int):
    """(K+, K-) loss weights ``p(y+) p(y-) / p(y+, y-)`` from the training clips' labels,
    so that under the weighted loss y+ and y- are independent (0 for pairs never seen).
    Their mean over the clips is 1."""
    counts = np.zeros((task_classes, adv_classes), dtype=np.float64)
    np.add.at(counts, (np.asarray(y_task, int), np.asarray(y_adv, int)), 1.0)
    total = counts.sum()
    if total == 0:
        return torch.ones(task_classes, adv_classes, dtype=torch.float32)
    expected = np.outer(counts.sum(axis=1), counts.sum(axis=0)) / total
    weights = np.divide(expected, counts, out=np.zeros_like(counts), where=counts > 0)
    return torch.as_tensor(weights, dtype=torch.float32)


def adversary_loss(
    logits: torch.Tensor, y_adv: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of the adversary, per-clip ``weights`` normalised to sum 1 (or plain)."""
    if weights is None:
        return F.cross_entropy(logits.float(), y_adv)
    losses = F.cross_entropy(logits.float(), y_adv, reduction="none")
    return (losses * weights).sum() / weights.sum().clamp(min=1e-12)


def adversary_updates(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y_task: torch.Tensor,
    y_adv: torch.Tensor,
    steps: int,
    seed: int | None = None,
) -> None:
    """Fold ``x`` into the adversary's input statistics, then ``steps`` updates of the
    adversary alone on ``x`` (the detached view-0 embeddings (n, D) of one optimizer step's
    clips). ``optimizer`` holds the adversary in its own group; the other parameters get
    no gradient here, so AdamW leaves them untouched.

    ``seed`` (under DDP): the head's dropout masks are drawn from a generator seeded with
    it (the global generators are left as they were), so every rank, updating on the same
    gathered clips, draws the same masks and keeps the same weights; None: the global
    generator (one process, the stream of earlier versions)."""
    if model.adv_norm is not None:
        model.adv_norm.update(x)
    x = x.detach()
    devices = [x.device] if x.device.type == "cuda" else []
    forked = torch.random.fork_rng(devices=devices) if seed is not None else nullcontext()
    with forked:
        if seed is not None:
            torch.manual_seed(seed % 2**63)
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            logits = model.adversary_logits(x, y_task)
            adversary_loss(logits, y_adv, model.adversary_weights(y_task, y_adv)).backward()
            optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def linear_leakage(
    z: torch.Tensor,
    y_adv: torch.Tensor,
    adv_classes: int,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """The linear eraser's loss: how much of y- a linear map can read from ``z`` (n, D), the
    adversary's input (whitened: every direction counts alike). It is the squared Frobenius
    norm of the cross-covariance of ``z`` with y-'s one-hot coding, estimated over the pairs
    of distinct clips (the i = j terms, a positive bias of order D / n, left out), over the
    batch's mean variance per dimension of ``z`` (with its gradient): scale-free, so the
    encoder cannot lower it by shrinking every embedding, only by making y-'s class means
    coincide relative to the spread of the clips.

    Zero in expectation exactly when y-'s class means of ``z`` coincide, the condition under
    which no linear classifier reads y- better than the class priors (linear guardedness;
    Belrose et al. 2023, LEACE). Unlike a trained adversary it needs no race to keep up
    with the encoder: it is the closed-form answer at every step. ``groups`` (n,), e.g. y+:
    ``z`` and the one-hot are centred within each group, so only y- beyond the group is
    counted (the partial cross-covariance: with entangled labels, the speaker beyond the
    emotion). Fewer than two clips: 0, still in the graph."""
    n = z.shape[0]
    if n < 2:
        return z.sum() * 0.0
    z = z.float()
    onehot = F.one_hot(y_adv.long(), adv_classes).to(z.dtype)
    if groups is None:
        groups = torch.zeros(n, dtype=torch.long, device=z.device)
    z, onehot = _centred_within(z, groups), _centred_within(onehot, groups)
    gram, label_gram = z @ z.T, onehot @ onehot.T
    pairs = (gram * label_gram).sum() - (gram.diagonal() * label_gram.diagonal()).sum()
    spread = gram.diagonal().mean() / z.shape[1]  # mean variance per dimension
    return pairs / (n * (n - 1)) / (spread + 1e-12)


def _centred_within(x: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """``x`` (n, C) minus the mean of its rows' group (``groups`` (n,) integers >= 0)."""
    groups = groups.long()
    count = torch.bincount(groups).clamp(min=1).to(x.dtype)[:, None]
    sums = torch.zeros(count.shape[0], x.shape[1], dtype=x.dtype, device=x.device)
    return x - (sums.index_add(0, groups, x) / count)[groups]


def balanced_weight(
    anchor: torch.Tensor, term: torch.Tensor, x: torch.Tensor, share: float
) -> float:
    """The weight that makes ``term``'s gradient at the embedding ``x`` ``share`` times as
    long as ``anchor``'s (the task CE's): the linear eraser's strength, set every batch. A
    fixed weight does not transfer: through the whitening, the eraser's gradient measured
    130-165 times the CE's at weight 1 on the tiny backbone, and it held the task at chance.
    0 when either gradient is 0."""
    if share == 0:
        return 0.0
    g_anchor = torch.autograd.grad(anchor, x, retain_graph=True, allow_unused=True)[0]
    g_term = torch.autograd.grad(term, x, retain_graph=True, allow_unused=True)[0]
    if g_anchor is None or g_term is None:
        return 0.0
    norm_term = float(g_term.float().norm())
    return share * float(g_anchor.float().norm()) / norm_term if norm_term > 0 else 0.0


def gradient_share(ce: torch.Tensor, reversed_part: torch.Tensor, x: torch.Tensor) -> float:
    """||d(reversed adversarial term)/dx|| over ||d(task CE term)/dx||: how much of the
    encoder's push at the embedding ``x`` comes from the adversary (weights and the GRL's
    strength included); 0 when the CE term has no gradient."""
    g_ce = torch.autograd.grad(ce, x, retain_graph=True, allow_unused=True)[0]
    g_adv = torch.autograd.grad(reversed_part, x, retain_graph=True, allow_unused=True)[0]
    norm_ce = 0.0 if g_ce is None else float(g_ce.float().norm())
    norm_adv = 0.0 if g_adv is None else float(g_adv.float().norm())
    return norm_adv / norm_ce if norm_ce > 0 else 0.0


@torch.no_grad()
def adversary_accuracy(
    model: nn.Module, x: torch.Tensor, y_task: torch.Tensor, y_adv: torch.Tensor
) -> float:
    """The adversary's accuracy (eval mode, no dropout) on the embeddings ``x`` (n, D)."""
    was_training = model.training
    model.eval()
    try:
        pred = model.adversary_logits(x, y_task).argmax(-1)
    finally:
        model.train(was_training)
    return float((pred == y_adv).float().mean()) if len(y_adv) else float("nan")


def adversary_competence(
    model: nn.Module, x: torch.Tensor, y_task: torch.Tensor, y_adv: torch.Tensor
) -> tuple[float, float]:
    """(adversary accuracy, standardised linear probe accuracy) of y- on the same clips.

    Both read the same embeddings ``x`` (n, D) and, for a ``task-label`` adversary, the same
    one-hot y+; both are scored on the clips they were fitted on: what each *can read*, not
    what generalises. A probe far above the adversary means the reversed gradient carries
    little of the y- information there is (:data:`BEHIND`)."""
    from trainer.probes import fit_accuracy, one_hot

    head = adversary_accuracy(model, x, y_task, y_adv)
    features = x.detach().float().cpu().numpy()
    if model.adv_condition == "task-label":
        task = one_hot(y_task.cpu().numpy(), np.arange(model.task_classes))
        features = np.concatenate([features, task], 1)
    return head, fit_accuracy(features, y_adv.cpu().numpy())


def behind_warning(label: str, head: float, probe: float, eraser: bool = False) -> str | None:
    """The one-line warning when the adversary trails the probe by more than BEHIND;
    ``eraser``: a linear eraser is on, which does not depend on the adversary."""
    if not (np.isfinite(head) and np.isfinite(probe)) or probe - head <= BEHIND:
        return None
    line = (
        f"the adversary reads the {label} at {100 * head:.0f} %, a linear probe at "
        f"{100 * probe:.0f} %: the reversal removes little"
    )
    return line + " (the linear eraser does not depend on it)" if eraser else line
