"""Embeddings of any manifest with a trained model, for downstream use.

``ncore-train embed --run RUN --manifest PATH --out FILE.npz`` loads the selected model of a
run (``seed-<s>/best/``), reads the original audio of every clip of the manifest (view 0 of
a view set's shards when the manifest has one; otherwise the source file, decoded by
:func:`pipeline.audio.load_audio`, so it works on new recordings imported with
``ncore-prep manifest`` and never perturbed) and writes one ``.npz`` with

- ``clip_ids`` (n,) str; ``emotion``, ``speaker``, ``split`` (n,) str: the manifest's labels;
- ``embeddings`` float32 (n, D): masked mean of the backbone's last hidden state (view 0);
- ``task_pred`` (n,) str: the task head's predicted class for each clip;
- ``failed_ids``, ``failed_reasons`` (m,) str: clips whose audio could not be read;
- ``run``, ``seed``, ``task``, ``backbone`` (0-d str / int): provenance.

Clips are embedded in batches of similar length (fewer padded samples), written in
manifest order. Clips longer than ``max_seconds`` keep their centre window, as the trainer's
evaluation does.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.errors import TrainerError

log = logging.getLogger(__name__)

BEST_DIR = "best"
SAMPLE_RATE = 16000


# ----- finding and loading a finished model --------------------------------------------------
def seed_dirs(run: str | os.PathLike[str]) -> list[Path]:
    """``seed-<s>`` folders of ``run`` that hold a selected model, in seed order."""
    run = Path(run)
    found = [p for p in run.glob("seed-*") if (p / BEST_DIR / "model.json").is_file()]

    def seed_of(path: Path) -> int:
        try:
            return int(path.name.split("-", 1)[1])
        except ValueError:
            return 1 << 62

    return sorted(found, key=seed_of)


def pick_seed_dir(run: str | os.PathLike[str], seed: int | None = None) -> Path:
    """The seed folder to use: ``run`` itself when it is one, the given ``seed``, or the
    first finished seed. One-line error when there is none."""
    run = Path(run)
    if (run / BEST_DIR / "model.json").is_file():
        return run
    if not run.is_dir():
        raise TrainerError(f"--run {run}: no such run folder")
    if seed is not None:
        folder = run / f"seed-{seed}"
        if not (folder / BEST_DIR / "model.json").is_file():
            raise TrainerError(f"{folder}: no finished model (best/model.json) for seed {seed}")
        return folder
    found = seed_dirs(run)
    if not found:
        raise TrainerError(
            f"{run}: no seed-*/best/ model; train it first (ncore-train --manifest ...)"
        )
    return found[0]


def load_finished_model(seed_dir: str | os.PathLike[str], device: torch.device | str = "cpu"):
    """The selected model of one seed, in eval mode, and its ``model.json`` info.

    ``best/backbone`` is loaded with ``from_pretrained`` (so any backbone the trainer saved),
    the heads from ``best/heads.safetensors``; class counts come from ``model.json``.
    """
    from safetensors.torch import load_file

    from trainer.model import NCoreModel, load_backbone

    best = Path(seed_dir) / BEST_DIR
    try:
        info = json.loads((best / "model.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise TrainerError(f"{best}: unreadable model.json ({error})") from None
    backbone, spec = load_backbone(str(best / "backbone"))
    model = NCoreModel(
        backbone,
        spec,
        num_task_classes=len(info["task_names"]),
        num_adv_classes=len(info["adv_names"]) if info.get("adversary", True) else None,
        dropout=float(info.get("dropout", 0.1)),
        grl_alpha=float(info.get("grl_alpha", 1.0)),
    )
    heads = load_file(str(best / "heads.safetensors"))
    missing, unexpected = model.load_state_dict(heads, strict=False)
    missing = [k for k in missing if not k.startswith("backbone.")]
    if missing or unexpected:
        raise TrainerError(
            f"{best}: heads.safetensors does not match the model "
            f"(missing {missing[:3]}, unexpected {list(unexpected)[:3]})"
        )
    return model.to(device).eval(), info


# ----- reading view 0 of any manifest --------------------------------------------------------
@dataclass(frozen=True)
class ClipAudio:
    """One clip's original audio: float32 (T,) at 16 kHz in [-1, 1]."""

    clip_id: str
    audio: np.ndarray


def iter_original_audio(
    manifest: Any,
    manifest_path: str | os.PathLike[str],
    clip_ids: Sequence[str],
    on_failure: Callable[[str, str], None],
) -> Iterator[ClipAudio]:
    """View 0 of each clip in ``clip_ids`` (any order in, shard order out).

    Clips stored in a complete view set are read from its shards (row 0 only, one zarr read
    per block); the others are decoded from their source file. A clip that cannot be read
    is reported to ``on_failure(clip_id, reason)`` and skipped.
    """
    from pipeline.audio import AudioError, load_audio
    from pipeline.shards import ShardDamaged, ShardError, ShardReader

    wanted = set(clip_ids)
    stored: set[str] = set()
    complete = [vs for vs in manifest.view_sets if vs.complete]
    if complete:
        # View 0 is the same original audio in every view set: the smallest is enough.
        view_set = min(complete, key=lambda vs: (vs.views, vs.key))
        for path in view_set.shard_paths(manifest_path):
            try:
                reader = ShardReader(path, manifest_path)
            except ShardDamaged as error:  # never embed damaged audio, never silently skip it
                raise TrainerError(str(error)) from None
            except ShardError as error:
                log.warning("%s; decoding its clips from source instead", error)
                continue
            index = [i for i, cid in enumerate(reader.clip_ids) if cid in wanted]
            block = 64
            for start in range(0, len(index), block):
                chunk = index[start : start + block]
                try:
                    audios = reader.read_range(chunk[0], chunk[-1] + 1, views=[0])
                except ShardError as error:
                    raise TrainerError(str(error)) from None
                for i in chunk:
                    cid = reader.clip_ids[i]
                    stored.add(cid)
                    yield ClipAudio(cid, audios[i - chunk[0]][0])
    data_dir = manifest.data_path(manifest_path)
    by_id = manifest.clip_by_id()
    for cid in clip_ids:
        if cid in stored:
            continue
        try:
            audio, _, _ = load_audio(data_dir / by_id[cid].path)
        except AudioError as error:
            on_failure(cid, error.reason)
            continue
        yield ClipAudio(cid, audio)


def centre_window(audio: np.ndarray, max_samples: int | None) -> np.ndarray:
    """The centre ``max_samples`` of ``audio`` (all of it when shorter or no limit)."""
    if max_samples is None or len(audio) <= max_samples:
        return audio
    start = (len(audio) - max_samples) // 2
    return audio[start : start + max_samples]


@torch.no_grad()
def embed_audio(
    model: Any,
    clips: Sequence[ClipAudio],
    batch_size: int = 16,
    max_seconds: float | None = None,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (n, D) float32 and task-head predictions (n,) int of ``clips``, in order.

    Clips are batched by length (sorted) so that little padding is computed; the result
    does not depend on the batching (:meth:`~trainer.model.NCoreModel.infer`)."""
    max_samples = None if max_seconds is None else max(1, round(max_seconds * SAMPLE_RATE))
    audios = [centre_window(c.audio, max_samples) for c in clips]
    order = sorted(range(len(audios)), key=lambda i: (len(audios[i]), clips[i].clip_id))
    dim = int(model.backbone.config.hidden_size)
    embeddings = np.zeros((len(audios), dim), dtype=np.float32)
    predictions = np.zeros(len(audios), dtype=np.int64)
    model.eval()
    for start in range(0, len(order), batch_size):
        members = order[start : start + batch_size]
        longest = max(len(audios[i]) for i in members)
        batch = torch.zeros((len(members), 1, longest), dtype=torch.float32)
        lengths = torch.tensor([len(audios[i]) for i in members], dtype=torch.long)
        for row, i in enumerate(members):
            batch[row, 0, : len(audios[i])] = torch.from_numpy(np.asarray(audios[i], np.float32))
        out = model.infer(batch.to(device), lengths.to(device))  # batch-invariant
        embeddings[members] = out.embeddings[:, 0].float().cpu().numpy()
        predictions[members] = out.task_logits.argmax(-1).cpu().numpy()
    return embeddings, predictions


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

    out = Path(out)
    if out.suffix != ".npz":
        raise TrainerError(f"--out {out}: embeddings are written as NumPy .npz (name it *.npz)")
    seed_dir = pick_seed_dir(run, seed)
    run_dir = seed_dir.parent
    config: dict[str, Any] = {}
    if (run_dir / "config.json").is_file():
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    if max_seconds is None:
        max_seconds = config.get("max_seconds")
    try:
        manifest = Manifest.load(manifest_path)
    except (ManifestError, OSError) as error:
        raise TrainerError(f"--manifest {manifest_path}: {error}") from None
    clips = [c for c in manifest.clips if split is None or c.split == split]
    if not clips:
        raise TrainerError(
            f"--manifest {manifest_path}: no clip" + (f" in split {split!r}" if split else "")
        )

    torch_device = torch.device(device or "cpu")
    model, info = load_finished_model(seed_dir, torch_device)
    failures: dict[str, str] = {}

    def record_failure(clip_id: str, reason: str) -> None:
        log.warning("clip %s: %s (skipped)", clip_id, reason)
        failures[clip_id] = reason

    read = {
        item.clip_id: item
        for item in iter_original_audio(
            manifest, manifest_path, [c.id for c in clips], record_failure
        )
    }
    kept = [c for c in clips if c.id in read]
    embeddings, predictions = embed_audio(
        model, [read[c.id] for c in kept], batch_size, max_seconds, torch_device
    )
    names = list(info["task_names"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.npz")
    np.savez(
        tmp,
        clip_ids=np.array([c.id for c in kept], dtype=str),
        emotion=np.array([c.emotion for c in kept], dtype=str),
        speaker=np.array([c.speaker for c in kept], dtype=str),
        split=np.array([c.split for c in kept], dtype=str),
        embeddings=embeddings,
        task_pred=np.array([names[i] for i in predictions], dtype=str),
        failed_ids=np.array(sorted(failures), dtype=str),
        failed_reasons=np.array([failures[k] for k in sorted(failures)], dtype=str),
        run=np.array(str(run_dir)),
        seed=np.array(int(info.get("seed", -1))),
        task=np.array(str(info.get("task", ""))),
        backbone=np.array(str(config.get("backbone", ""))),
    )
    os.replace(tmp, out)
    return {
        "path": str(out),
        "clips": len(kept),
        "failed": len(failures),
        "dim": embeddings.shape[1],
    }
