"""Diagnostic for studies/leakage_synthetic.py: does the epoch selection hide what the
adversary and the consistency loss do later in training?

For every run folder given and every seed, probe emotion and speaker on the clips of a
manifest (the independent synthetic corpus) with (a) the selected model (``best/``) and
(b) the model of the last epoch (``checkpoint/epoch-XXXX``), and print a Markdown table.

    cd /tmp/ncore-leakage && REPO/.venv/bin/python REPO/studies/leakage_last_epoch.py \
        manifests/synthetic-independent.json runs/backbone-only runs/ncore-n2

(``REPO`` is this repository's checkout.)
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path, help="the manifest whose clips are probed")
    parser.add_argument("runs", type=Path, nargs="+", help="run folders of ncore-train")
    args = parser.parse_args()

    import torch

    from pipeline.manifest import Manifest
    from pipeline.rng import stable_seed
    from trainer.checkpoint import latest_checkpoint, load_checkpoint
    from trainer.inference import infer
    from trainer.plan import load_selected_model, manifest_batches
    from trainer.probes import linear_probe
    from trainer.rundir import RunDir
    from trainer.summary import format_mean_std, mean_std

    manifest_path, runs = args.manifest, [RunDir(p) for p in args.runs]
    manifest = Manifest.load(manifest_path)
    failures: dict[str, str] = {}
    lines = [
        "| Run | Model | Epoch | Probe emotion | Probe speaker (leakage) |",
        "|---|---|---|---|---|",
    ]
    for run in runs:
        config = run.read_record().config

        def batches(config=config):
            return manifest_batches(config, manifest, manifest_path, failures.__setitem__, 16)

        scores = {which: {"emotion": [], "speaker": [], "epoch": []} for which in ("best", "last")}
        for seed_dir in run.seeds_with_model():
            probe_seed = stable_seed(seed_dir.seed, "probe") % (2**32)
            model, record = load_selected_model(seed_dir)
            last = latest_checkpoint(seed_dir.checkpoints)
            for which in ("best", "last"):
                epoch = record.epoch
                if which == "last":
                    epoch = load_checkpoint(last, model)["epoch"]
                done = infer(model, batches(), torch.device("cpu"))
                y = {config.task: done.y_task, config.adversarial_label: done.y_adv}
                for label in ("emotion", "speaker"):
                    result = linear_probe(done.embeddings, y[label], seed=probe_seed)
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
