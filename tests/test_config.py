"""The training config (trainer/config.py): every field is typed; a value of the wrong type in a
config file is one line naming the field (a regression of issue 13: ``epochs = true`` was
accepted as 1), and the conversions a user expects still happen."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pipeline.testing.processes import one_line_error
from trainer.cli import main
from trainer.config import TrainConfig
from trainer.errors import TrainerError


@pytest.mark.slow
@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('lr = "fast"', "lr"),
        ("epochs = 1.5", "epochs"),
        ("epochs = true", "epochs"),
        ("seeds = [1.5]", "seeds"),
        ('batch-size = "16"', "batch_size"),
        ("dropout = nan", "dropout"),
        ("adversary = 1", "adversary"),
    ],
)
def test_config_values_of_the_wrong_type_are_one_line(trained_copy, text, field):
    config = trained_copy / "run.toml"
    config.write_text(text + "\n")
    manifest = str(trained_copy / "corpus" / "manifest.json")
    args = ["--config", str(config), "--manifest", manifest, "--backbone", "tiny"]
    line = one_line_error(CliRunner().invoke(main, [*args, "--out", str(trained_copy / "x")]))
    assert field in line
    assert not (trained_copy / "x").exists()


def test_config_types_accept_what_they_should():
    config = TrainConfig.from_dict({"manifest": "m.json", "lr": 1, "seeds": "1, 2", "views": None})
    assert config.lr == 1.0 and isinstance(config.lr, float) and config.seeds == (1, 2)
    with pytest.raises(TrainerError, match="config: field 'epochs' must be an integer, got True"):
        TrainConfig.from_dict({"manifest": "m.json", "epochs": True})
