"""Embeddings of any manifest with a trained model, for downstream use.

``ncore-train embed --run RUN --manifest PATH --out FILE.npz`` loads the selected model of a
run (``seed-<s>/best/``), reads the original audio of every clip of the manifest (view 0 of
a view set's shards when the manifest has one; otherwise the source file, decoded by
:func:`pipeline.audio.load_audio`, so it works on new recordings imported with
``ncore-prep manifest`` and never perturbed) and writes one ``.npz`` with

- ``clip_ids`` (n,) str; ``emotion``, ``speaker``, ``split`` (n,) str: the manifest's labels
  (``split``: on the run's own manifest, the seed's split from ``split.json``);
- ``embeddings`` float32 (n, D): masked mean of the backbone's last hidden state (view 0);
- ``task_pred`` (n,) str: the task head's predicted class for each clip;
- ``failed_ids``, ``failed_reasons`` (m,) str: clips whose audio could not be read;
- ``run``, ``seed``, ``task``, ``backbone`` (0-d str / int): provenance.

The clips go through the same batches (``trainer.data.original_batches``) and the same
forward pass (``trainer.inference.infer``) as the evaluation's test pass, so the same clips
get the same embeddings; rows are written in manifest order. Clips longer than
``max_seconds`` keep their centre window, as in the evaluation.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import write_npz
from trainer.errors import TrainerError
from trainer.rundir import RunDir, seed_dir_of

log = logging.getLogger(__name__)


def embed_manifest(
    run: str | os.PathLike[str],
    manifest_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    seed: int | None = None,
    split: str | None = None,
    batch_size: int = 16,
    max_seconds: float | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Embed every clip of a manifest (or of one ``split``) with a run's selected model and
    write the ``.npz`` described in the module docstring. Returns counts and the path.

    ``max_seconds`` defaults to the run's training setting (None: whole clips)."""
    from pipeline.manifest import Manifest, ManifestError
    from trainer.data import original_batches
    from trainer.distributed import resolve_device
    from trainer.inference import infer
    from trainer.plan import load_selected_model, with_split

    out = Path(out)
    if out.suffix != ".npz":
        raise TrainerError(f"--out {out}: embeddings are written as NumPy .npz (name it *.npz)")
    seed_dir = seed_dir_of(run, seed)
    run_dir = RunDir(seed_dir.path.parent)
    config = run_dir.read_record().config if run_dir.config_path.is_file() else None
    if max_seconds is None and config is not None:
        max_seconds = config.max_seconds
    try:
        manifest = Manifest.load(manifest_path)
    except ManifestError as error:  # named after the option that gave it
        raise ManifestError(f"--manifest {error}") from None
    # On the run's own manifest, a clip's split is the one the seed trained and was tested
    # on (its split.json), not the split stored in the manifest.
    recorded = seed_dir.read_split()
    if recorded is not None and config is not None and _same_file(manifest_path, config.manifest):
        manifest = with_split(manifest, recorded)
    clips = [c for c in manifest.clips if split is None or c.split == split]
    if not clips:
        raise TrainerError(
            f"--manifest {manifest_path}: no clip" + (f" in split {split!r}" if split else "")
        )

    torch_device = resolve_device(device or "cpu")
    model, record = load_selected_model(seed_dir, torch_device)
    failures: dict[str, str] = {}

    def record_failure(clip_id: str, reason: str) -> None:
        log.warning("clip %s: %s (skipped)", clip_id, reason)
        failures[clip_id] = reason

    batches = original_batches(
        manifest,
        manifest_path,
        [c.id for c in clips],
        task=record.task,
        kind=None if config is None else config.view_kind,
        batch_size=batch_size,
        max_seconds=max_seconds,
        on_failure=record_failure,
    )
    done = infer(model, batches, torch_device)
    kept = [c for c in clips if c.id not in failures]
    done = done.in_order([c.id for c in kept])
    names = list(record.task_names)
    write_npz(
        out,
        clip_ids=np.array([c.id for c in kept], dtype=str),
        emotion=np.array([c.emotion for c in kept], dtype=str),
        speaker=np.array([c.speaker for c in kept], dtype=str),
        split=np.array([c.split for c in kept], dtype=str),
        embeddings=done.embeddings,
        task_pred=np.array([names[i] for i in done.task_pred], dtype=str),
        failed_ids=np.array(sorted(failures), dtype=str),
        failed_reasons=np.array([failures[k] for k in sorted(failures)], dtype=str),
        run=np.array(str(run_dir.path)),
        seed=np.array(int(record.seed)),
        task=np.array(str(record.task)),
        backbone=np.array("" if config is None else str(config.backbone)),
    )
    return {
        "path": str(out),
        "clips": len(kept),
        "failed": len(failures),
        "dim": done.embeddings.shape[1],
    }


@dataclasses.dataclass(frozen=True)
class ViewEmbeddings:
    """Embeddings of every stored view of a view set's clips: ``views[v]`` is (n, D) for
    view ``v`` (0 the original), rows in ``clip_ids`` order (the shards' order)."""

    clip_ids: list[str]
    views: list[np.ndarray]


def embed_views(
    model: Any,
    manifest_path: str | os.PathLike[str],
    kind: str,
    views: int,
    max_seconds: float | None = None,
    batch_size: int = 16,
    device: str = "cpu",
) -> ViewEmbeddings:
    """Embed view 0 and the first ``views`` perturbed views of every clip of the manifest's
    ``kind`` view set (the largest complete one, with at least ``views`` views) with
    ``model`` through :func:`trainer.inference.infer`, read by
    :func:`trainer.data.view_loader` as the evaluation reads them (centre window of
    ``max_seconds``; CRC-checked). Rows are in the stored order."""
    import torch

    from pipeline.manifest import Manifest
    from trainer.data import view_loader
    from trainer.inference import infer

    manifest = Manifest.load(manifest_path)
    torch_device = torch.device(device)
    done = [
        infer(
            model,
            view_loader(
                manifest, manifest_path, kind, v, batch_size=batch_size, max_seconds=max_seconds
            ),
            torch_device,
        )
        for v in range(1 + views)
    ]
    clip_ids = list(done[0].clip_ids)
    return ViewEmbeddings(clip_ids, [d.in_order(clip_ids).embeddings for d in done])


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False
