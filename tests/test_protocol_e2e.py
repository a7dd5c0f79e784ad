"""End to end: one split per seed recorded in the run folder, selection by validation UAR,
refusals (selection on test outside the paper protocol, the speaker task on a
speaker-held-out split), and the paper protocol recorded and marked."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pipeline.manifest import Manifest
from pipeline.splits import seed_split
from pipeline.testing.eval_corpus import TRAIN_OPTIONS, prepared_corpus
from trainer.cli import main

pytestmark = pytest.mark.slow


def options(**changes: str) -> list[str]:
    """TRAIN_OPTIONS with some values replaced (``seeds="1,2"``)."""
    opts = list(TRAIN_OPTIONS)
    for name, value in changes.items():
        flag = "--" + name.replace("_", "-")
        if flag in opts:
            opts[opts.index(flag) + 1] = value
        else:
            opts += [flag, value]
    return opts


def edited_manifest(manifest_path, name: str, edit) -> str:
    """A copy of the manifest beside it (same relative paths), changed by ``edit(dict)``."""
    data = json.loads(manifest_path.read_text())
    edit(data)
    path = manifest_path.with_name(f"{name}.json")
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return prepared_corpus(tmp_path_factory.getbasetemp())


def test_every_seed_trains_and_is_evaluated_on_its_own_recorded_split(corpus, tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(
        main,
        [
            "--manifest", str(corpus), *options(seeds="1,2", epochs="2"),
            "--select-metric", "uar", "--out", str(run),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = Manifest.load(corpus)
    tests = {}
    for seed in (1, 2):
        recorded = json.loads((run / f"seed-{seed}" / "split.json").read_text())
        drawn = seed_split(manifest.clips, manifest.split, seed, "emotion")
        assert recorded["test"] == list(drawn.test) and recorded["train"] == list(drawn.train)
        assert recorded["mode"] == "per-seed" and recorded["stratify"] == "emotion"
        evaluation = json.loads((run / f"seed-{seed}" / "evaluation.json").read_text())
        assert evaluation["clips"]["ids"] == recorded["test"]  # scored on its own test split
        assert evaluation["selection"] == {"split": "val", "metric": "uar"}
        # The selected epoch is the one with the best validation UAR (first on ties).
        rows = [json.loads(line) for line in (run / f"seed-{seed}" / "metrics.jsonl").open()]
        best = max(rows, key=lambda r: (r["val_uar_task"], -r["epoch"]))
        model = json.loads((run / f"seed-{seed}" / "best" / "model.json").read_text())
        assert model["epoch"] == best["epoch"] and model["select_metric"] == "uar"
        tests[seed] = set(recorded["test"])
    assert tests[1] != tests[2]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["selection"]["split"] == "val" and summary["splits"]["mode"] == "per-seed"
    assert "Epoch selected on the validation split by uar" in (run / "summary.md").read_text()

    # The same seed in another run folder draws the same split, byte for byte.
    again = tmp_path / "again"
    result = CliRunner().invoke(
        main, ["--manifest", str(corpus), *options(seeds="2", epochs="1"), "--out", str(again)]
    )
    assert result.exit_code == 0, result.output
    same = (again / "seed-2" / "split.json").read_bytes()
    assert same == (run / "seed-2" / "split.json").read_bytes()


def test_selecting_on_test_needs_the_paper_protocol_and_is_marked(corpus, tmp_path):
    def drop_val(data):
        for clip in data["clips"]:
            clip["split"] = "train" if clip["split"] == "val" else clip["split"]
        data["split"]["val_fraction"] = 0.0

    no_val = edited_manifest(corpus, "no-val", drop_val)
    base = ["--manifest", no_val, *options(), "--fixed-split"]
    refused = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "refused")])
    assert refused.exit_code == 1
    assert "no validation clip" in refused.output and "--protocol paper" in refused.output
    assert "Traceback" not in refused.output and not (tmp_path / "refused").exists()

    paper = tmp_path / "paper"
    result = CliRunner().invoke(main, [*base, "--protocol", "paper", "--out", str(paper)])
    assert result.exit_code == 0, result.output
    summary = json.loads((paper / "summary.json").read_text())
    assert summary["selection"]["split"] == "test"
    assert "Epoch selected on the test split" in (paper / "summary.md").read_text()
    report = CliRunner().invoke(main, ["report", str(paper)])
    assert report.exit_code == 0 and "| paper † |" in report.output


def test_speaker_task_on_a_speaker_held_out_split_is_refused(corpus, tmp_path):
    def held_out(data):
        data["split"]["protocol"] = "speaker-held-out"

    for manifest, extra in (
        (str(corpus), ["--protocol", "speaker-held-out"]),
        (edited_manifest(corpus, "held-out", held_out), []),
    ):
        result = CliRunner().invoke(
            main,
            ["--manifest", manifest, *options(), "--task", "speaker", *extra,
             "--out", str(tmp_path / "speaker")],
        )  # fmt: skip
        assert result.exit_code == 1
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert (
            len(lines) == 1 and "speaker task cannot be trained on a speaker-held-out" in lines[0]
        )
