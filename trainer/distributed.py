"""Processes and devices: the ``torchrun`` process group, rank helpers, and random state.

- :func:`setup_distributed` / :func:`resolve_device`: where this process sits and computes;
- :func:`lockstep`: every rank yields the same number of batches, so collectives never hang;
- :func:`all_reduce_sum`, :func:`all_gather_objects`, :func:`barrier`, :func:`check_ranks_agree`;
- :func:`seed_epoch_rngs`, :func:`gather_rng_states`, :func:`set_rng_state`: the global
  generators that dropout and SpecAugment draw from, seeded per epoch and captured across
  ranks for an exact resume from inside an epoch.

Without ``torchrun`` everything here is a no-op for one process (rank 0 of 1).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from pipeline.rng import stable_seed
from trainer.errors import TrainerError

log = logging.getLogger(__name__)


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


SINGLE = Distributed()


def setup_distributed(device_kind: str) -> Distributed:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE
    if not dist.is_initialized():
        # NCCL for CUDA tensors, gloo beside it for the loop's few CPU tensors (epoch sums).
        backend = "cpu:gloo,cuda:nccl" if device_kind == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def teardown_distributed(ddp: Distributed) -> None:
    if ddp.enabled and dist.is_initialized():
        dist.destroy_process_group()


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


# ----- collectives (no-ops for one process) -----------------------------------------------------
def all_reduce_sum(tensor: torch.Tensor, ddp: Distributed) -> torch.Tensor:
    """``tensor`` summed over ranks, in place."""
    if ddp.enabled:
        dist.all_reduce(tensor)
    return tensor


def all_gather_objects(obj: Any, ddp: Distributed) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` for one process)."""
    if not ddp.enabled:
        return [obj]
    gathered: list[Any] = [None] * ddp.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(ddp: Distributed) -> None:
    if ddp.enabled:
        dist.barrier()


def lockstep(
    loader: Iterable[Any], ddp: Distributed, device: torch.device
) -> Iterator[tuple[Any, float, bool]]:
    """Yield ``(batch, weight, last)``: ``last`` marks the epoch's final batch, and under DDP
    every rank yields the same number of batches.

    The data module already gives ranks equal batch counts; this is the safety net that
    keeps collectives from hanging if they ever differ: a rank that has run out repeats its
    last batch with weight 0 (no gradient, not counted) until every rank is done. One
    batch of look-ahead tells the loop which batch is the last, so the epoch's final
    (possibly partial) gradient accumulation is synchronised and stepped.
    """

    def anyone_has(batch: Any) -> bool:
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


def check_ranks_agree(model: nn.Module, device: torch.device, ddp: Distributed) -> None:
    """Raise if the ranks' weights have drifted apart (a broken gradient synchronisation).

    Compares one float64 fingerprint of all parameters across ranks: cheap, and it turns a
    silent divergence into an error at the end of the epoch where it happened.
    """
    if not ddp.enabled:
        return
    with torch.no_grad():
        fingerprint = sum(
            (p.detach().double() * (i + 1)).sum() for i, p in enumerate(model.parameters())
        )
    fingerprints = [
        torch.zeros((), dtype=torch.float64, device=device) for _ in range(ddp.world_size)
    ]
    dist.all_gather(fingerprints, fingerprint.to(device))
    if any(not torch.equal(f, fingerprints[0]) for f in fingerprints):
        raise RuntimeError(f"DDP ranks hold different weights: {[f.item() for f in fingerprints]}")


# ----- global random state ----------------------------------------------------------------------
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
    return all_gather_objects(rng_state(device), ddp)


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
