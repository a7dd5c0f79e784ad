"""End to end: train a tiny run with ``ncore-train``, then its summary, figures, report and
embeddings, on the synthetic corpus with real shards."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.testing.eval_corpus import TRAIN_OPTIONS, prepared_corpus
from pipeline.testing.figures import assert_real_png
from trainer.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(manifest path, run folder, forward passes) of one finished tiny run, trained
    through the CLI; each pass is (calling module, the clip ids it scored)."""
    import trainer.evaluate
    import trainer.inference
    import trainer.loop
    from pipeline.manifest import Manifest

    manifest = prepared_corpus(tmp_path_factory.getbasetemp())
    run = tmp_path_factory.mktemp("eval") / "run"
    passes = []

    def counting(module):
        def infer(model, batches, device, *args, **kwargs):
            done = trainer.inference.infer(model, batches, device, *args, **kwargs)
            passes.append((module, frozenset(done.clip_ids)))
            return done

        return infer

    load = Manifest.load.__func__

    def counting_load(cls, path):
        passes.append(("manifest", str(path)))
        return load(cls, path)

    with pytest.MonkeyPatch.context() as patch:
        for module in (trainer.loop, trainer.evaluate):
            patch.setattr(module, "infer", counting(module.__name__))
        patch.setattr(Manifest, "load", classmethod(counting_load))
        result = CliRunner().invoke(
            main, ["--manifest", str(manifest), *TRAIN_OPTIONS, "--out", str(run)]
        )
    assert result.exit_code == 0, result.output
    return manifest, run, passes


def test_training_ends_with_a_summary_of_one_test_pass(trained):
    manifest_path, run, passes = trained
    split = json.loads((run / "seed-1" / "split.json").read_text())  # the seed's own split
    test_ids, val_ids, train_ids = (frozenset(split[s]) for s in ("test", "val", "train"))
    assert split["mode"] == "per-seed" and split["seed"] == 1
    # The loop scores validation only; the evaluation scores the test split once with the
    # selected model and once with the model training started from, and embeds the train
    # split once with each (the probes are fitted there), then the test clips' first two
    # perturbed views with each (the invariance figures; never scored against the task).
    assert [ids for module, ids in passes if module == "trainer.loop"] == [val_ids]
    assert [ids for module, ids in passes if module == "trainer.evaluate"] == [
        train_ids,
        test_ids,
        test_ids,
        test_ids,
    ] * 2
    # One command, one reading of the manifest (the plan is handed to the evaluation).
    assert [path for what, path in passes if what == "manifest"] == [str(manifest_path)]

    summary = json.loads((run / "summary.json").read_text())
    assert summary["seeds"] == [1] and "ddof=1" in summary["std"]
    assert summary["task"] == "emotion" and summary["adversarial_label"] == "speaker"
    evaluation = json.loads((run / "seed-1" / "evaluation.json").read_text())
    # The view set measured is the one the run recorded (config.json).
    assert evaluation["view_set"] == json.loads((run / "config.json").read_text())["view_set"]
    for key in ("accuracy", "macro_f1", "uar"):
        assert summary["metrics"][key]["mean"] == evaluation["metrics"][key]
        assert summary["metrics"][key]["std"] is None  # one seed: no std invented
    model = json.loads((run / "seed-1" / "best" / "model.json").read_text())
    assert evaluation["best_epoch"] == model["epoch"] == 1
    matrix = np.asarray(summary["confusion_matrix"]["summed_over_seeds"])
    assert matrix.sum() == evaluation["test_clips"] == len(test_ids)
    assert np.trace(matrix) / matrix.sum() == pytest.approx(summary["metrics"]["accuracy"]["mean"])
    for key in ("probe_task", "probe_adv", "backbone_probe_task", "backbone_probe_adv"):
        assert 0.0 <= summary["metrics"][key]["mean"] <= 1.0
    for label in ("task", "adv"):
        probe = evaluation["probes"]["finetuned"][label]
        assert summary["chance"][label] == pytest.approx(1.0 / probe["classes"])
    text = (run / "summary.md").read_text()
    assert "Probe y- (leakage)" in text and "not a measure of disentanglement" in text


def test_figures_are_real_images(trained):
    _, run, _ = trained
    figures = run / "figures"
    names = sorted(p.name for p in figures.glob("*.png"))
    assert names == [
        "accuracy_curves.png",
        "loss_curves.png",
        "tsne_backbone_emotion.png",
        "tsne_backbone_speaker.png",
        "tsne_finetuned_emotion.png",
        "tsne_finetuned_speaker.png",
    ]
    for path in figures.glob("*.png"):
        assert_real_png(path, min_bytes=4000)


def test_report_command_prints_one_row_per_run(trained, tmp_path):
    _, run, _ = trained
    out = tmp_path / "table.md"
    result = CliRunner().invoke(main, ["report", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = [line for line in out.read_text().splitlines() if line.startswith("| run ")]
    assert len(rows) == 1
    numbers = [float(x) for x in re.findall(r"\d+\.\d+", rows[0])]
    assert len(numbers) >= 7 and all(0.0 <= x <= 100.0 for x in numbers)
    header = out.read_text().splitlines()[0]
    for title in ("Acc", "F1", "UAR", "Probe y- (leakage)", "Chance y-"):
        assert f"| {title} |" in header


def test_embed_reads_shards_or_source_audio_alike(trained, tmp_path):
    from pipeline.manifest import Manifest

    manifest_path, run, _ = trained
    runner = CliRunner()
    with_views = tmp_path / "with_views.npz"
    result = runner.invoke(
        main,
        ["embed", "--run", str(run), "--manifest", str(manifest_path), "--out", str(with_views)],
    )
    assert result.exit_code == 0, result.output
    data = np.load(with_views)
    manifest = Manifest.load(manifest_path)
    assert list(data["clip_ids"]) == [c.id for c in manifest.clips]
    assert list(data["emotion"]) == [c.emotion for c in manifest.clips]
    assert data["embeddings"].shape == (len(manifest.clips), 96)
    assert len(data["failed_ids"]) == 0

    # The test clips' embeddings equal those of the evaluation's own pass (other batching).
    evaluated = np.load(run / "seed-1" / "test_embeddings.npz")
    index = {cid: i for i, cid in enumerate(data["clip_ids"])}
    rows = [index[cid] for cid in evaluated["clip_ids"]]
    np.testing.assert_allclose(data["embeddings"][rows], evaluated["embeddings"], atol=1e-4)

    # New recordings: a manifest without view sets is decoded from the source WAVs, and a
    # clip whose file is missing is recorded as a failure while the others go on.
    clips = list(manifest.clips)
    clips[0] = dataclasses.replace(clips[0], path="missing/nowhere.wav")
    bare = dataclasses.replace(manifest, view_sets=(), clips=tuple(clips))
    bare_path = manifest_path.with_name("bare.json")
    bare.save(bare_path)
    from_source = tmp_path / "from_source.npz"
    result = runner.invoke(
        main, ["embed", "--run", str(run), "--manifest", str(bare_path), "--out", str(from_source)]
    )
    assert result.exit_code == 0, result.output
    fresh = np.load(from_source)
    assert list(fresh["failed_ids"]) == [clips[0].id]
    assert "missing file" in fresh["failed_reasons"][0]
    assert list(fresh["clip_ids"]) == [c.id for c in clips[1:]]
    # 16-bit WAVs at 16 kHz and int16 shards hold the same samples.
    np.testing.assert_allclose(fresh["embeddings"], data["embeddings"][1:], atol=1e-4)

    # Probes on another manifest (here the bare one), fitted on its train split and scored
    # on its test split: the missing clip is skipped.
    missing = dataclasses.replace(clips[0], split="test")
    bare = dataclasses.replace(bare, clips=(missing, *clips[1:]))
    bare.save(bare_path)
    result = runner.invoke(
        main, ["evaluate", str(run), "--no-figures", "--probe-manifest", str(bare_path)]
    )
    assert result.exit_code == 0, result.output
    probes = json.loads((run / "probe-bare.json").read_text())
    counts = {s: sum(c.split == s for c in bare.clips) for s in ("train", "test")}
    assert probes["train_clips"] == counts["train"] and probes["clips"] == counts["test"] - 1
    assert list(probes["failed"]) == [clips[0].id]
    for key in ("finetuned_task", "finetuned_adv", "backbone_task", "backbone_adv"):
        assert 0.0 <= probes["probes"][key]["mean"] <= 1.0
    assert probes["chance"]["adv"] == pytest.approx(
        1 / probes["per_seed"][0]["finetuned_adv"]["classes"]
    )


def test_evaluate_and_embed_give_identical_embeddings_for_the_same_clips(trained, tmp_path):
    manifest_path, run, _ = trained
    out = tmp_path / "test.npz"
    result = CliRunner().invoke(
        main,
        [
            *("embed", "--run", str(run), "--manifest", str(manifest_path), "--split", "test"),
            *("--out", str(out), "--batch-size", "16"),  # the run's batch size
        ],
    )
    assert result.exit_code == 0, result.output
    embedded = np.load(out)
    evaluated = np.load(run / "seed-1" / "test_embeddings.npz")
    assert sorted(embedded["clip_ids"]) == sorted(evaluated["clip_ids"])
    index = {cid: i for i, cid in enumerate(embedded["clip_ids"])}
    rows = [index[cid] for cid in evaluated["clip_ids"]]
    # One forward path, the same batches: the same bits, not merely close values.
    assert np.array_equal(embedded["embeddings"][rows], evaluated["embeddings"])
    evaluation = json.loads((run / "seed-1" / "evaluation.json").read_text())
    names = evaluation["labels"]["task"]
    predicted = [names.index(p) for p in embedded["task_pred"][rows]]
    truth = [names.index(e) for e in embedded["emotion"][rows]]
    assert np.mean(np.equal(predicted, truth)) == evaluation["metrics"]["accuracy"]


def test_invariance_figures_embed_the_test_clips_perturbed_views(trained):
    # Recomputed independently: the test clips' views 1 and 2 read from the shards and
    # embedded through trainer.embed.embed_views, the distance and the transfer probe in
    # plain numpy / sklearn here, against what the evaluation recorded.
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from trainer.embed import embed_views
    from trainer.plan import load_selected_model
    from trainer.rundir import RunDir

    manifest_path, run, _ = trained
    evaluation = json.loads((run / "seed-1" / "evaluation.json").read_text())
    record = evaluation["perturbation"]
    config = RunDir(run).read_record().config
    assert record["views"] == 2 and record["kind"] == config.view_kind
    model, _ = load_selected_model(RunDir(run).seed(1))
    done = embed_views(model, manifest_path, record["kind"], 2, config.max_seconds)
    split = json.loads((run / "seed-1" / "split.json").read_text())
    index = {cid: i for i, cid in enumerate(done.clip_ids)}
    test = [index[c] for c in evaluation["clips"]["ids"]]
    x0, views = done.views[0][test], [v[test] for v in done.views[1:]]
    # The view shift, recomputed here: mean squared view-original distance over the mean
    # squared gap between the y- classes' centroids of the test originals.
    y_test = np.array(evaluation["clips"]["y_adv"])
    centroids = [x0[y_test == c].mean(axis=0) for c in np.unique(y_test)]
    gaps = [((a - b) ** 2).sum() for i, a in enumerate(centroids) for b in centroids[i + 1 :]]
    moved = np.mean([((v - x0) ** 2).sum(axis=1).mean() for v in views])
    finetuned = record["finetuned"]
    assert finetuned["view_shift"] == pytest.approx(np.sqrt(moved / np.mean(gaps)), rel=0.02)
    assert 0.0 < finetuned["view_shift"]  # views really are other audio
    # The y- transfer probe: fitted on the train clips' originals, scored on the views.
    train = [index[c] for c in split["train"] if c in index]
    names = evaluation["labels"]["adv"]
    by_id = {c["id"]: c for c in json.loads(manifest_path.read_text())["clips"]}
    y = np.array([names.index(by_id[c][config.adversarial_label]) for c in done.clip_ids])
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    probe.fit(done.views[0][train], y[train])
    transfer = np.mean([balanced_accuracy_score(y[test], probe.predict(v)) for v in views])
    assert finetuned["adv"]["transfer"] == pytest.approx(transfer, abs=0.05)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["perturbation"]["views"] == 2
    assert summary["metrics"]["transfer_adv"]["mean"] == finetuned["adv"]["transfer"]
    markdown = (run / "summary.md").read_text()
    assert "## Invariance to the" in markdown


def test_a_run_folder_of_the_layout_before_versioning_is_migrated_once(trained, tmp_path):
    import shutil

    _, run, _ = trained
    old = tmp_path / "old-run"
    shutil.copytree(run, old)
    seed = old / "seed-1"
    # The layout before schema_version: unversioned records, test_metrics.json as the
    # finished-seed mark holding the test record, no training.json or evaluation.json.
    model = json.loads((seed / "best" / "model.json").read_text())
    del model["schema_version"]
    (seed / "best" / "model.json").write_text(json.dumps(model))
    rows = [json.loads(x) for x in (seed / "metrics.jsonl").read_text().splitlines()]
    (seed / "metrics.jsonl").write_text(
        "".join(
            json.dumps({k: v for k, v in r.items() if k != "schema_version"}) + "\n" for r in rows
        )
    )
    record = json.loads((seed / "training.json").read_text())
    (seed / "training.json").unlink()
    evaluation = json.loads((seed / "evaluation.json").read_text())
    legacy = {k: v for k, v in evaluation.items() if k not in ("schema_version", "probes")}
    (seed / "test_metrics.json").write_text(json.dumps({**legacy, "probes": {}}))
    (seed / "evaluation.json").unlink()

    # Refused in one line naming the command, by evaluate and by a resume alike.
    for args in (
        ["evaluate", str(old), "--no-figures"],
        ["--manifest", str(trained[0]), *TRAIN_OPTIONS, "--out", str(old), "--resume"],
    ):
        refused = CliRunner().invoke(main, args)
        error = [line for line in refused.output.splitlines() if line.startswith("Error:")]
        assert refused.exit_code == 1 and len(error) == 1  # (training prints its plan first)
        assert "ncore-train migrate RUN_DIR" in error[0]
    migrated = CliRunner().invoke(main, ["migrate", str(old)])
    assert migrated.exit_code == 0, migrated.output
    assert not (seed / "test_metrics.json").exists()
    assert json.loads((seed / "training.json").read_text())["best_epoch"] == record["best_epoch"]
    moved = json.loads((seed / "evaluation.json").read_text())
    assert moved["metrics"] == evaluation["metrics"] and moved["clips"] == evaluation["clips"]
    result = CliRunner().invoke(main, ["evaluate", str(old), "--no-figures", "--force"])
    assert result.exit_code == 0, result.output
    again = json.loads((seed / "evaluation.json").read_text())
    for key in ("metrics", "probes", "clips", "perturbation", "best_epoch"):
        assert again[key] == evaluation[key], key  # the same test pass as before
    resumed = CliRunner().invoke(
        main,
        ["--manifest", str(trained[0]), *TRAIN_OPTIONS, "--out", str(old), "--resume"],
    )
    assert resumed.exit_code == 0, resumed.output  # training.json: the seed is finished
    assert json.loads((seed / "training.json").read_text()) == {**record, "last_epoch": None,
                                                                "steps": None}  # fmt: skip

    # A version this toolkit does not know is refused in one line naming the file.
    (seed / "best" / "model.json").write_text(json.dumps({**model, "schema_version": 7}))
    refused = CliRunner().invoke(main, ["evaluate", str(old), "--no-figures", "--force"])
    assert refused.exit_code == 1
    assert len(refused.output.strip().splitlines()) == 1
    assert "model.json: schema_version 7 is not supported" in refused.output


def test_user_mistakes_are_one_line(trained, tmp_path):
    manifest_path, run, _ = trained
    runner = CliRunner()
    bad_out = runner.invoke(
        main,
        [
            "embed",
            "--run",
            str(run),
            "--manifest",
            str(manifest_path),
            "--out",
            str(tmp_path / "x.csv"),
        ],
    )
    no_run = runner.invoke(main, ["report", str(tmp_path / "nothing")])
    for result in (bad_out, no_run):
        assert result.exit_code == 1
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("Error:")
