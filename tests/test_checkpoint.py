"""Checkpoints (trainer/checkpoint.py): a damaged checkpoint is one line on ``--resume``, never a
traceback or a silent restart (a regression of issue 13: it used to crash). The run is a real
tiny one (tests/conftest.py, ``trained_copy``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.testing.processes import one_line_error
from pipeline.testing.toy import toy_train_args
from trainer.cli import main


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


DAMAGE = {
    "truncated weights": lambda c: _truncate(c / "model.safetensors"),
    "truncated optimizer": lambda c: _truncate(c / "optim.pt"),
    "garbled state": lambda c: (c / "state.json").write_text('{"schema_version": 1, "seed": "x"'),
    "state fields missing": lambda c: (c / "state.json").write_text('{"schema_version": 1}'),
    "negative step": lambda c: _edit_state(c, step=-5),
    "best epoch after the checkpoint": lambda c: _edit_state(c, best_epoch=99),
}


def _edit_state(checkpoint: Path, **changes) -> None:
    state = json.loads((checkpoint / "state.json").read_text())
    (checkpoint / "state.json").write_text(json.dumps({**state, **changes}))


@pytest.mark.slow
@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_a_damaged_checkpoint_is_one_line_on_resume(trained_copy, how):
    run = trained_copy / "runs" / "r"
    (run / "seed-1" / "training.json").unlink()  # as if killed after its last checkpoint
    checkpoint = next((run / "seed-1" / "checkpoint").iterdir())
    DAMAGE[how](checkpoint)
    line = one_line_error(
        CliRunner().invoke(main, toy_train_args(trained_copy, "--out", str(run), "--resume"))
    )
    assert f"checkpoint {checkpoint}" in line and "damaged" in line
