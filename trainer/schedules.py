"""Schedules over training progress: the learning rate and the GRL strength."""

from __future__ import annotations

import math

from trainer.errors import TrainerError


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
