"""Weight files of a run: the checkpoints, which resume exactly and load without pickled
code, and the selected model (``best/``).

A checkpoint is a folder ``epoch-0003/`` (written after epoch 3) or
``epoch-0004-batch-000120/`` (written during epoch 4, after its first 120 batches, with
``--checkpoint-every``) holding

- ``model.safetensors``: the N-CORE model weights (backbone and heads);
- ``optim.pt``: optimizer and scheduler state dicts, and for a checkpoint inside an epoch
  the random generator states of every rank (tensors, numbers, lists and dicts only, so
  ``torch.load(weights_only=True)`` reads them);
- ``state.json``: epoch, global step, best metric, epochs without improvement, the loader
  position (the epoch to run next and, inside an epoch, the batches of it already done)
  and the full config.

Both are written into a temporary folder and renamed when complete
(``pipeline.atomic.replace_folder``), so a run killed while saving leaves the previous one
intact and never a half-written one. Folder and file names come from ``trainer/rundir.py``.
"""

from __future__ import annotations

import errno
import math
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.atomic import replace_folder
from trainer.config import TrainConfig
from trainer.errors import TrainerError
from trainer.rundir import (
    BACKBONE_DIR,
    CHECKPOINT_STATE_FILE,
    HEADS_FILE,
    WEIGHTS_FILE,
    ModelRecord,
    ResumeState,
    SeedDir,
    read_checkpoint_state,
    recorded_config,
    write_checkpoint_state,
)

PREFIX = "epoch-"


def checkpoint_name(epoch: int, batch: int | None = None) -> str:
    """Folder name of the checkpoint written after ``epoch`` (1-based), or during it after
    ``batch`` of its batches."""
    name = f"{PREFIX}{epoch:04d}"
    return name if batch is None else f"{name}-batch-{batch:06d}"


def _progress(path: Path) -> tuple[int, float] | None:
    """(epoch, batches done in it; inf when complete) named by a checkpoint folder."""
    parts = path.name[len(PREFIX) :].split("-batch-")
    if not all(p.isdigit() for p in parts) or len(parts) > 2:
        return None
    return int(parts[0]), (int(parts[1]) if len(parts) == 2 else math.inf)


@contextmanager
def weight_files_written(folder: Path) -> Iterator[None]:
    """Turn the write failures of safetensors and ``torch.save`` into ``OSError``.

    Both report a full disk (or a file-size limit) with their own exception types and a
    message that holds the system's reason; the command line reports an ``OSError`` in one
    line, the others would be a traceback.
    """
    try:
        yield
    except OSError:
        raise
    except Exception as error:
        text = str(error)
        if type(error).__name__ != "SafetensorError" and "write" not in text.lower():
            raise
        found = re.search(r"os error (\d+)", text)
        code = int(found.group(1)) if found else errno.EIO
        reason = os.strerror(code) if found else "writing failed (is the disk full?)"
        raise OSError(code, reason, str(folder)) from None


def save_checkpoint(
    folder: str | os.PathLike[str],
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    config: TrainConfig,
    keep: int = 1,
    batch: int | None = None,
    rng: Any = None,
    clips: Any = None,
) -> Path:
    """Write ``folder/epoch-XXXX`` (``-batch-YYYYYY`` inside an epoch) atomically and delete
    all but the newest ``keep``.

    ``state`` is JSON-ready (numbers, strings, lists, dicts); the config and epoch are added.
    ``rng`` (tensors, numbers, lists, dicts) is stored beside the optimizer state, and so is
    ``clips`` (inside an epoch: each rank's detached embeddings and labels of the epoch so
    far, which the adversary's end-of-epoch instruments read).
    """
    from safetensors.torch import save_model

    folder = Path(folder)
    final = folder / checkpoint_name(epoch, batch)
    # A re-run of the same epoch after a resume replaces the folder.
    with weight_files_written(final), replace_folder(final) as tmp:
        save_model(model, str(tmp / WEIGHTS_FILE))
        blob = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        if rng is not None:
            blob["rng"] = rng
        if clips is not None:
            blob["epoch_clips"] = clips
        torch.save(blob, tmp / "optim.pt")
        write_checkpoint_state(tmp, {"epoch": epoch, **state, "config": config.to_dict()})
    for old in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(folder: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints in ``folder``, oldest first (temporary folders are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [
        p
        for p in folder.iterdir()
        if p.is_dir()
        and p.name.startswith(PREFIX)
        and _progress(p) is not None
        and (p / CHECKPOINT_STATE_FILE).is_file()
    ]
    return sorted(found, key=_progress)


def latest_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint in ``folder``, or None."""
    found = list_checkpoints(folder)
    return found[-1] if found else None


def read_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``state.json`` of checkpoint ``path``, its version checked
    (``trainer.rundir.read_checkpoint_state``)."""
    path = Path(path)
    try:
        state = read_checkpoint_state(path)
    except TrainerError:
        raise  # a version this toolkit does not read: not damage
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise TrainerError(damaged_checkpoint(path, error)) from None
    if not isinstance(state.get("config"), dict):
        problem = ValueError("state.json field 'config' is missing or not an object")
        raise TrainerError(damaged_checkpoint(path, problem))
    return state


def resume_state(path: str | os.PathLike[str], state: dict[str, Any]) -> ResumeState:
    """The typed state a resume reads (:class:`~trainer.rundir.ResumeState`) of checkpoint
    ``path`` (``state``: :func:`load_checkpoint`'s); refused in one line naming the
    checkpoint and the field when it lacks what a resume reads or holds an impossible value
    (``step: -5``)."""
    try:
        return ResumeState.from_dict(state, CHECKPOINT_STATE_FILE)
    except TrainerError as error:
        raise TrainerError(damaged_checkpoint(Path(path), ValueError(str(error)))) from None


def check_same_config(path: str | os.PathLike[str], state: dict[str, Any], config: TrainConfig):
    """Refuse (one line) to resume a checkpoint written under another config."""
    saved = recorded_config(state["config"], f"checkpoint {path}: state.json config")
    difference = config.first_difference(saved)
    if difference is not None:
        name, theirs, mine = difference
        raise TrainerError(
            f"checkpoint {path} is from another config ({name}={theirs!r} there, {mine!r} "
            "now): resume with the same settings or pick another --out"
        )


def load_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    config: TrainConfig | None = None,
) -> dict[str, Any]:
    """Restore ``model`` (and optimizer/scheduler when given) from checkpoint ``path``.

    With ``config``, a checkpoint written under a different config is refused first.
    Returns the checkpoint's state dict (epoch, step, best metric, ...; ``"rng"`` too when
    the optimizer state was read and the checkpoint holds generator states).
    """
    from safetensors.torch import load_model

    path = Path(path)
    state = read_state(path)
    if config is not None:
        check_same_config(path, state, config)
    try:
        load_model(model, str(path / WEIGHTS_FILE), strict=True)
        if optimizer is not None or scheduler is not None:
            blob = torch.load(path / "optim.pt", map_location="cpu", weights_only=True)
            if optimizer is not None:
                optimizer.load_state_dict(blob["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(blob["scheduler"])
            if "rng" in blob:
                state["rng"] = blob["rng"]
            if "epoch_clips" in blob:
                state["epoch_clips"] = blob["epoch_clips"]
    except Exception as error:  # truncated or garbled files raise many types
        raise TrainerError(damaged_checkpoint(path, error)) from None
    return state


def damaged_checkpoint(path: Path, error: BaseException) -> str:
    """The one-line message for a checkpoint whose files cannot be read back."""
    text = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
    return (
        f"checkpoint {path} is damaged ({type(error).__name__}{': ' + text if text else ''}); "
        "delete that folder and re-run with --resume (the seed restarts from the previous "
        "checkpoint, or from the beginning if there is none)"
    )


def save_selected(model: nn.Module, seed_dir: SeedDir, record: ModelRecord) -> None:
    """Write the selected model as ``best/``: ``backbone/`` (save_pretrained, loadable with
    transformers), ``heads.safetensors``, ``model.safetensors`` (the whole model) and its
    record ``model.json``, atomically."""
    from safetensors.torch import save_file, save_model

    from trainer.model import save_backbone

    with weight_files_written(seed_dir.best), replace_folder(seed_dir.best) as tmp:
        save_backbone(model.backbone, model.spec, tmp / BACKBONE_DIR)
        heads = {
            name: tensor.detach().cpu().contiguous()
            for name, tensor in model.state_dict().items()
            if not name.startswith("backbone.")
        }
        save_file(heads, str(tmp / HEADS_FILE))
        save_model(model, str(tmp / WEIGHTS_FILE))
        seed_dir.write_model_record(tmp, record)


def load_selected_heads(model: nn.Module, seed_dir: SeedDir) -> None:
    """Load ``best/heads.safetensors`` into ``model`` (whose backbone is already loaded)."""
    from safetensors.torch import load_file

    path = seed_dir.best / HEADS_FILE
    retrain = (
        f"delete {seed_dir.path} and re-run ncore-train --resume with the same settings to "
        "train that seed again"
    )
    try:
        heads = load_file(str(path))
    except FileNotFoundError:
        raise TrainerError(f"{path}: no such file; {retrain}") from None
    except Exception as error:  # safetensors raises its own type for truncated headers/data
        text = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
        raise TrainerError(
            f"{path}: unreadable ({type(error).__name__}{': ' + text if text else ''}); {retrain}"
        ) from None
    try:
        missing, unexpected = model.load_state_dict(heads, strict=False)
    except RuntimeError as error:  # a tensor of another shape
        text = str(error).strip().splitlines()
        raise TrainerError(
            f"{path} does not match the model ({text[-1].strip()[:160] if text else 'shapes'})"
        ) from None
    missing = [k for k in missing if not k.startswith("backbone.")]
    if missing or unexpected:
        raise TrainerError(
            f"{seed_dir.best}: {HEADS_FILE} does not match the model "
            f"(missing {missing[:3]}, unexpected {list(unexpected)[:3]})"
        )
