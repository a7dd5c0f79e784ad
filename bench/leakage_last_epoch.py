"""Diagnostic for bench/leakage_synthetic.py: does the epoch selection hide what the
adversary and the consistency loss do later in training?

For every run folder given and every seed, probe emotion and speaker on the clips of a
manifest (the independent synthetic corpus) with (a) the selected model (``best/``) and
(b) the model of the last epoch (``checkpoint/epoch-XXXX``), and print a Markdown table.

    cd /tmp/ncore-leakage && /work/main/.venv/bin/python /work/main/bench/leakage_last_epoch.py \
        manifests/synthetic-independent.json runs/backbone-only runs/ncore-n2
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main() -> None:
    from pipeline.manifest import Manifest
    from pipeline.rng import stable_seed
    from trainer.checkpoint import latest_checkpoint, load_checkpoint
    from trainer.embed import embed_audio, iter_original_audio, load_finished_model, seed_dirs
    from trainer.evaluate import format_mean_std, load_run_config, mean_std
    from trainer.probes import linear_probe

    manifest_path, runs = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
    manifest = Manifest.load(manifest_path)
    failures: dict[str, str] = {}
    audio = list(
        iter_original_audio(
            manifest, manifest_path, [c.id for c in manifest.clips], failures.__setitem__
        )
    )
    by_id = manifest.clip_by_id()
    lines = [
        "| Run | Model | Epoch | Probe emotion | Probe speaker (leakage) |",
        "|---|---|---|---|---|",
    ]
    for run in runs:
        config, _ = load_run_config(run)
        y = {
            label: np.array(
                [manifest.label_index(label)[getattr(by_id[a.clip_id], label)] for a in audio]
            )
            for label in ("emotion", "speaker")
        }
        scores = {which: {"emotion": [], "speaker": [], "epoch": []} for which in ("best", "last")}
        for seed_dir in seed_dirs(run):
            seed = int(seed_dir.name.split("-")[1])
            probe_seed = stable_seed(seed, "probe") % (2**32)
            model, _ = load_finished_model(seed_dir)
            last = latest_checkpoint(seed_dir / "checkpoint")
            for which in ("best", "last"):
                if which == "last":
                    state = load_checkpoint(last, model)
                    epoch = state["epoch"]
                else:
                    epoch = json.loads((seed_dir / "best" / "model.json").read_text())["epoch"]
                model.eval()
                x, _ = embed_audio(model, audio, 16, config.max_seconds)
                for label in ("emotion", "speaker"):
                    result = linear_probe(x, y[label], seed=probe_seed)
                    scores[which][label].append(result.balanced_accuracy)
                scores[which]["epoch"].append(epoch)
        for which in ("best", "last"):
            s = scores[which]
            lines.append(
                f"| {run.name} | {which} | {','.join(map(str, s['epoch']))} | "
                f"{format_mean_std(mean_std(s['emotion']))} | "
                f"{format_mean_std(mean_std(s['speaker']))} |"
            )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
