"""Hardening (issue 13): a backbone folder never runs its own code, and unsafe weights are one line.

Before the fix a folder whose ``config.json`` has an ``auto_map`` made transformers ask
"run the custom code? [y/N]" on a terminal, and answering y ran the folder's Python file;
a pickled ``pytorch_model.bin`` (refused by torch's weights-only loader) gave a 61-line
traceback. The terminal is real here (a pseudo-terminal answering y), as is the model folder.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.errors import TrainerError
from trainer.model import load_backbone, tiny_backbone_config

LOAD = "import sys; from trainer.model import load_backbone; load_backbone(sys.argv[1])"


def remote_code_folder(root: Path, marker: Path) -> Path:
    folder = root / "remote"
    folder.mkdir()
    (folder / "config.json").write_text(
        '{"model_type": "evilnet", "architectures": ["EvilModel"], "auto_map": '
        '{"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}}'
    )
    (folder / "evil.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('the folder ran its code')\n"
        "from transformers import PretrainedConfig, PreTrainedModel\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evilnet'\n"
        "class EvilModel(PreTrainedModel):\n    config_class = EvilConfig\n"
    )
    return folder


def test_a_folder_with_auto_map_is_refused_even_when_the_user_answers_yes(tmp_path):
    marker = tmp_path / "RAN"
    folder = remote_code_folder(tmp_path, marker)
    master, slave = os.openpty()  # a terminal, where transformers would ask
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", LOAD, str(folder)],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    os.close(slave)
    os.write(master, b"y\n")
    out, _ = proc.communicate(timeout=300)
    os.close(master)
    text = out.decode()
    assert proc.returncode != 0
    assert not marker.exists(), "the folder's Python code ran"
    assert "[y/N]" not in text  # no question asked: the answer is always no
    assert "never runs code from a model folder" in text
    with pytest.raises(TrainerError, match="auto_map"):
        load_backbone(str(folder))


def test_a_pickled_weights_file_is_one_line_and_never_unpickled(tmp_path):
    folder = tmp_path / "pickled"
    tiny_backbone_config().save_pretrained(folder)
    marker = tmp_path / "PICKLED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(folder / "pytorch_model.bin", "wb") as f:
        pickle.dump({"w": Payload()}, f)
    with pytest.raises(TrainerError) as info:
        load_backbone(str(folder))
    assert "\n" not in str(info.value) and "cannot be loaded safely" in str(info.value)
    assert not marker.exists()
