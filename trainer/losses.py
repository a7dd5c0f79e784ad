"""The N-CORE objective (paper eqs. 1-4, docs/design.md section 5).

``L = l_CE * L_CE + l_REG * L_REG + s * l_GRL * L_GRL`` with ``s = +1`` for the standard
domain-adversarial objective (``dann``, the default: the reversal is done by the GRL alone,
so the adversarial head learns to predict y- and the encoder learns to defeat it) and
``s = -1`` for the sign printed in the paper's eq. 4 (``paper``: the head is trained to be
wrong and, through the GRL, the encoder to help it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainer.model import ModelOutput


def consistency_loss(embeddings: torch.Tensor) -> torch.Tensor:
    """Eq. 1: mean over the batch of the mean squared distance over all unordered pairs.

    ``embeddings``: (B, V, D) with V = N + 1 views. For each clip,
    ``sum_{i<j} ||x_i - x_j||^2 = V * sum_i ||x_i - mean||^2``, so the pair mean is
    ``2 / (V - 1) * sum_i ||x_i - mean||^2``: O(V) work and no cancellation between large
    norms. With a single view there is no pair and the loss is 0 (still in the graph).
    """
    views = embeddings.shape[1]
    if views < 2:
        return embeddings.sum() * 0.0
    centred = embeddings - embeddings.mean(dim=1, keepdim=True)
    per_clip = centred.pow(2).sum(dim=(1, 2)) * (2.0 / (views - 1))
    return per_clip.mean()


CONSISTENCY_NORMS = ("none", "batch-variance")


def batch_variance_consistency(embeddings: torch.Tensor) -> torch.Tensor:
    """Eq. 1 over twice the batch's total variance of the originals' embeddings (not in
    the paper; ``--consistency-norm batch-variance``): the views' spread relative to the
    clips' spread, 1 = views as far apart as two random clips.

    ``embeddings``: (B, V, D), view 0 the original. The variance is the biased one
    (divide by B) of view 0 over the batch, summed over the D dimensions; 1e-8 keeps a
    batch of one clip (variance 0) finite. The normaliser is NOT detached: only with its
    gradient is the loss invariant to the embeddings' scale, so that it can be lowered by
    making views agree (or clips differ), not by shrinking every embedding, which is how
    eq. 1 is mostly met (docs/evaluation.md, "Further diagnosis"). Same arithmetic as the
    diagnostic patch it replaces in bench/leakage_diagnosis.py.
    """
    clip_variance = embeddings[:, 0].var(dim=0, unbiased=False).sum()
    return consistency_loss(embeddings) / (2.0 * clip_variance + 1e-8)


@dataclass
class LossTerms:
    """The total objective and its parts (unweighted, detached), each a scalar tensor;
    ``task_term`` and ``adv_term`` are the weighted CE and signed adversarial terms as they
    enter ``total``, still in the graph (for :func:`trainer.adversary.gradient_share`)."""

    total: torch.Tensor
    ce: torch.Tensor
    consistency: torch.Tensor
    adversarial: torch.Tensor
    task_term: torch.Tensor | None = None
    adv_term: torch.Tensor | None = None
    erasure: torch.Tensor | None = None


def ncore_loss(
    output: ModelOutput,
    y_task: torch.Tensor,
    y_adv: torch.Tensor,
    lambda_ce: float = 1.0,
    lambda_reg: float = 0.005,
    lambda_grl: float = 0.01,
    grl_objective: str = "dann",
    consistency_norm: str = "none",
    adv_weights: torch.Tensor | None = None,
    erasure: torch.Tensor | None = None,
    lambda_erase: float = 0.0,
) -> LossTerms:
    """Combine eq. 2 (CE of h+ on view 0), eq. 1 (consistency) and eq. 3 (CE of h- after the
    GRL, which the model has already applied) with the sign of ``grl_objective``.
    ``consistency_norm``: ``none`` is eq. 1 (the paper); ``batch-variance`` divides it by
    the batch's embedding variance (:func:`batch_variance_consistency`). ``adv_weights``:
    per-clip weights of the adversarial CE (a ``reweight`` adversary), or None.
    ``erasure``: the linear eraser's loss (:func:`trainer.adversary.linear_leakage`, not in
    the paper), added with weight ``lambda_erase`` to the signed adversarial term (both
    act to remove y-), or None."""
    from trainer.adversary import adversary_loss

    ce = F.cross_entropy(output.task_logits.float(), y_task)
    consistency_of = {"none": consistency_loss, "batch-variance": batch_variance_consistency}
    consistency = consistency_of[consistency_norm](output.embeddings.float())
    if output.adv_logits is None:
        adversarial = ce.new_zeros(())
        sign = 0.0
    else:
        adversarial = adversary_loss(output.adv_logits, y_adv, adv_weights)
        sign = {"dann": 1.0, "paper": -1.0}[grl_objective]
    task_term, adv_term = lambda_ce * ce, sign * lambda_grl * adversarial
    if erasure is not None and lambda_erase:
        adv_term = adv_term + lambda_erase * erasure
    total = task_term + lambda_reg * consistency + adv_term
    return LossTerms(
        total,
        ce.detach(),
        consistency.detach(),
        adversarial.detach(),
        task_term,
        adv_term,
        None if erasure is None else erasure.detach(),
    )
