"""Config, checkpoint, metrics and schedule of the trainer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from trainer.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from trainer.config import TrainConfig, read_config_file, resolve_config
from trainer.errors import TrainerError
from trainer.model import NCoreModel, load_backbone
from trainer.schedules import grl_alpha_at, linear_warmup_decay

# ----- config ------------------------------------------------------------------------------


def test_config_round_trips_through_json() -> None:
    config = TrainConfig(manifest="m.json", views=3, seeds=(1, 2), max_seconds=2.5, lr=3e-4)
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_config_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(TrainerError, match="'lambda_foo'"):
        TrainConfig.from_dict({"manifest": "m.json", "lambda_foo": 1})
    with pytest.raises(TrainerError, match="grl_objective"):
        TrainConfig(manifest="m.json", grl_objective="both")
    with pytest.raises(TrainerError, match="grl_schedule"):
        TrainConfig(manifest="m.json", grl_schedule="linear")
    with pytest.raises(TrainerError, match="consistency_norm"):
        TrainConfig(manifest="m.json", consistency_norm="layer")


def test_config_written_before_grl_schedule_existed_loads_as_constant() -> None:
    old = TrainConfig(manifest="m.json", lr=3e-4).to_dict()
    del old["grl_schedule"]
    config = TrainConfig.from_dict(old)
    assert config.grl_schedule == "constant" and config.lr == 3e-4


def test_consistency_norm_defaults_to_eq1_and_old_configs_load_as_none() -> None:
    assert TrainConfig(manifest="m.json").consistency_norm == "none"
    old = TrainConfig(manifest="m.json", consistency_norm="batch-variance").to_dict()
    again = TrainConfig.from_dict(json.loads(json.dumps(old)))
    assert again.consistency_norm == "batch-variance"
    del old["consistency_norm"]
    assert TrainConfig.from_dict(old).consistency_norm == "none"


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_config_file_values_are_overridden_by_options(tmp_path, suffix) -> None:
    path = tmp_path / f"run{suffix}"
    if suffix == ".toml":
        path.write_text('manifest = "a.json"\nlr = 0.5\nlambda-reg = 0.2\nseeds = [7, 8]\n')
    else:
        path.write_text(
            json.dumps({"manifest": "a.json", "lr": 0.5, "lambda-reg": 0.2, "seeds": "7,8"})
        )
    config = resolve_config(read_config_file(path), {"lr": 0.01})
    assert config.lr == 0.01  # the option wins
    assert config.lambda_reg == 0.2  # the file wins over the default
    assert config.seeds == (7, 8)
    assert config.lambda_grl == TrainConfig(manifest="x").lambda_grl  # untouched default


def test_view_kind_defaults_to_the_papers_pairing() -> None:
    assert TrainConfig(manifest="m", task="emotion").view_kind == "speaker"
    assert TrainConfig(manifest="m", task="speaker").view_kind == "emotion"
    assert TrainConfig(manifest="m", task="speaker", perturbation="speaker").view_kind == "speaker"
    assert TrainConfig(manifest="m", task="speaker").adversarial_label == "emotion"


# ----- schedule ----------------------------------------------------------------------------


def test_linear_schedule_warms_up_over_10_percent_then_decays_to_zero() -> None:
    total, warmup = 200, 20
    factors = [linear_warmup_decay(s, total, warmup) for s in range(total + 1)]
    assert factors[0] == 0.0 and factors[warmup] == 1.0 and factors[total] == 0.0
    assert np.all(np.diff(factors[: warmup + 1]) > 0)
    assert np.all(np.diff(factors[warmup:]) < 0)


def test_dann_grl_schedule_ramps_from_zero_to_alpha() -> None:
    alpha = 0.7
    progress = np.linspace(0.0, 1.0, 101)
    ramp = np.array([grl_alpha_at(alpha, "dann", p) for p in progress])
    # 2 / (1 + exp(-10 p)) - 1 is tanh(5 p): an independent way to compute the same curve.
    assert np.allclose(ramp, alpha * np.tanh(5.0 * progress), rtol=1e-12, atol=1e-15)
    assert ramp[0] == 0.0 and np.all(np.diff(ramp) > 0)
    assert alpha * 0.9999 < ramp[-1] < alpha
    assert ramp[10] < 0.5 * alpha < ramp[20]  # half strength at p = ln(3) / 10 ~ 0.11
    assert all(grl_alpha_at(alpha, "constant", p) == alpha for p in progress)


# ----- checkpoints ------------------------------------------------------------------------


def small_model(seed: int) -> NCoreModel:
    torch.manual_seed(seed)
    backbone, spec = load_backbone("tiny", seed=seed)
    return NCoreModel(backbone, spec, 3, 2)


def test_checkpoint_restores_model_optimizer_and_scheduler_exactly(tmp_path) -> None:
    config = TrainConfig(manifest="m.json", lr=1e-3)
    model = small_model(1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
    audio = 0.1 * torch.randn(2, 2, 4000)
    for _ in range(2):
        out = model(audio, torch.tensor([4000, 3000]))
        (out.task_logits.sum() + out.embeddings.pow(2).mean()).backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    path = save_checkpoint(tmp_path, 2, model, optimizer, scheduler, {"step": 2}, config)

    other = small_model(2)
    assert not torch.equal(other.task_head[0].weight, model.task_head[0].weight)
    other_opt = torch.optim.AdamW(other.parameters(), lr=1e-3)
    other_sched = torch.optim.lr_scheduler.LambdaLR(other_opt, lambda s: 1.0 / (1 + s))
    state = load_checkpoint(path, other, other_opt, other_sched, config=config)
    assert state["epoch"] == 2 and state["step"] == 2
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert other_sched.get_last_lr() == scheduler.get_last_lr()
    exp_avg = [s["exp_avg"] for s in optimizer.state_dict()["state"].values()]
    other_avg = [s["exp_avg"] for s in other_opt.state_dict()["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(exp_avg, other_avg, strict=True))


def test_checkpoint_from_another_config_is_refused(tmp_path) -> None:
    model = small_model(1)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    path = save_checkpoint(
        tmp_path,
        1,
        model,
        optimizer,
        scheduler,
        {},
        TrainConfig(manifest="m.json", lambda_reg=0.005),
    )
    with pytest.raises(TrainerError, match=r"another config \(lambda_reg=0.005 there, 0.1 now\)"):
        load_checkpoint(path, model, config=TrainConfig(manifest="m.json", lambda_reg=0.1))
    with pytest.raises(TrainerError, match=r"grl_schedule='constant' there, 'dann' now"):
        load_checkpoint(
            path,
            model,
            config=TrainConfig(manifest="m.json", lambda_reg=0.005, grl_schedule="dann"),
        )
    with pytest.raises(TrainerError, match=r"consistency_norm='none' there, 'batch-variance'"):
        load_checkpoint(
            path,
            model,
            config=TrainConfig(
                manifest="m.json", lambda_reg=0.005, consistency_norm="batch-variance"
            ),
        )
    # Settings that do not change the computation may differ.
    load_checkpoint(path, model, config=TrainConfig(manifest="m.json", device="cpu", out="x"))


def test_half_written_checkpoint_is_ignored_and_old_ones_are_pruned(tmp_path) -> None:
    model = small_model(1)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    config = TrainConfig(manifest="m.json")
    save_checkpoint(tmp_path, 1, model, optimizer, scheduler, {}, config)
    save_checkpoint(tmp_path, 2, model, optimizer, scheduler, {}, config)
    (tmp_path / ".epoch-0003.partial").mkdir()  # what a kill during a save leaves
    (tmp_path / "epoch-0004").mkdir()  # no state.json: incomplete
    assert latest_checkpoint(tmp_path).name == "epoch-0002"
    assert not (tmp_path / "epoch-0001").exists()
    blob = torch.load(tmp_path / "epoch-0002" / "optim.pt", weights_only=True)
    assert set(blob) == {"optimizer", "scheduler"}


def test_a_checkpoint_inside_an_epoch_sorts_between_the_epochs_around_it(tmp_path) -> None:
    model = small_model(1)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    config = TrainConfig(manifest="m.json")
    rng = [{"torch": torch.get_rng_state(), "numpy": ["MT19937", torch.arange(3), 1, 0, 0.0]}]

    def save(epoch, batch=None, keep=5):
        save_checkpoint(tmp_path, epoch, model, optimizer, scheduler, {}, config, keep, batch, rng)

    save(3)
    save(4, batch=12)
    save(4, batch=2)
    assert latest_checkpoint(tmp_path).name == "epoch-0004-batch-000012"
    state = load_checkpoint(latest_checkpoint(tmp_path), model, optimizer, scheduler)
    assert torch.equal(state["rng"][0]["torch"], rng[0]["torch"])  # read with weights_only
    save(4, keep=1)  # the end of epoch 4 replaces everything before it
    assert [p.name for p in tmp_path.iterdir()] == ["epoch-0004"]


# ----- typed reading of checkpoints, the selected model and config ranges (issue 22) ----------
def _resumable_state(**changes):
    """A state.json as the training loop writes it after epoch 3."""
    state = {
        "seed": 1,
        "step": 12,
        "best_acc": 0.5,
        "best_val_acc": 0.5,
        "best_epoch": 2,
        "bad_epochs": 1,
        "loader": {"epoch": 3, "batches": 4, "seed": 1, "num_workers": 0, "next_epoch": 4},
        "splits": "abc",
    }
    return {**state, **changes}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"step": -5}, "'step' must be an integer >= 0, got -5"),
        ({"bad_epochs": -1}, "'bad_epochs' must be an integer >= 0, got -1"),
        ({"best_epoch": 9}, "'best_epoch' is 9, after the checkpoint's epoch 3"),
        ({"best_acc": 7.0}, "'best_acc' must be a fraction .*, got 7.0"),
        ({"best_acc": True}, "'best_acc' must be a number, got True"),
        ({"step": 1.5}, "'step' must be an integer, got 1.5"),
        ({"step": None}, "'step' must be an integer, got None"),
        ({"loader": {"next_epoch": 0}}, "'loader.next_epoch' must be an integer >= 1, got 0"),
        ({"loader": {"next_epoch": 9}}, "'loader.next_epoch' is 9 for epoch 3"),
        ({"loader": []}, "'loader': expected a JSON object, got a list"),
    ],
)
def test_impossible_checkpoint_counters_are_refused_in_one_line(tmp_path, changes, field) -> None:
    from trainer.checkpoint import resume_state

    model = small_model(1)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    config = TrainConfig(manifest="m.json")
    path = save_checkpoint(tmp_path, 3, model, optimizer, scheduler, _resumable_state(), config)
    state = resume_state(path, load_checkpoint(path, model, config=config))  # as written: fine
    assert (state.epoch, state.step, state.next_epoch, state.batches) == (3, 12, 4, 0)
    assert state.best_val_acc == 0.5 and state.partial_epoch is None and state.splits == "abc"
    saved = json.loads((path / "state.json").read_text())
    assert state.to_dict() == {k: v for k, v in saved.items() if k in state.to_dict()}
    (path / "state.json").write_text(json.dumps({**saved, **changes}))
    state = load_checkpoint(path, model, config=config)
    with pytest.raises(TrainerError, match=rf"checkpoint {path} is damaged .*{field}") as caught:
        resume_state(path, state)
    assert "\n" not in str(caught.value)


def test_a_resume_state_inside_an_epoch_reads_its_partial_sums(tmp_path) -> None:
    from trainer.checkpoint import resume_state
    from trainer.rundir import PartialEpoch, ResumeState

    model = small_model(1)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    config = TrainConfig(manifest="m.json")
    loader = {"epoch": 4, "batches": 6, "seed": 1, "num_workers": 0, "next_epoch": 4}
    written = ResumeState(
        3 + 1, 1, 20, 0.5, 0.5, 3, 0, loader, "abc", PartialEpoch((1.0, 2.5), (0.5,), (0.1,))
    )
    path = save_checkpoint(
        tmp_path, 4, model, optimizer, scheduler, written.to_dict(), config, batch=6, rng=[{}]
    )
    state = resume_state(path, load_checkpoint(path, model, optimizer, scheduler, config=config))
    assert state.batches == 6 and state.next_epoch == 4 and state.rng == [{}]
    assert state.partial_epoch == written.partial_epoch
    assert state.to_dict() == written.to_dict()


@pytest.mark.parametrize("how", ["truncated", "empty", "missing", "another shape"])
def test_a_damaged_selected_heads_file_is_one_line(tmp_path, how) -> None:
    from safetensors.torch import save_file

    from trainer.checkpoint import load_selected_heads, save_selected
    from trainer.rundir import HEADS_FILE, ModelRecord, RunDir

    model = small_model(1)
    seed_dir = RunDir(tmp_path / "run").seed(1)
    seed_dir.path.mkdir(parents=True)
    record = ModelRecord(1, 0.5, 1, "emotion", ("a", "b", "c"), ("s1", "s2"))
    save_selected(model, seed_dir, record)
    load_selected_heads(small_model(2), seed_dir)  # as written: fine
    heads = seed_dir.best / HEADS_FILE
    if how == "truncated":
        heads.write_bytes(heads.read_bytes()[: heads.stat().st_size // 2])
    elif how == "empty":
        heads.write_bytes(b"")
    elif how == "missing":
        heads.unlink()
    else:
        save_file({"task_head.0.weight": torch.zeros(2, 2)}, str(heads))
    with pytest.raises(TrainerError, match=r"heads\.safetensors") as caught:
        load_selected_heads(small_model(2), seed_dir)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seeds": (1, 1)}, "seeds must be distinct, got 1 twice"),
        ({"seeds": (3, 1, 3)}, "seeds must be distinct, got 3 twice"),
        ({"lambda_reg": -0.1}, "lambda_reg must be >= 0"),
        ({"lambda_ce": -1.0}, "lambda_ce must be >= 0"),
        ({"lambda_grl": -0.01}, "lambda_grl must be >= 0"),
        ({"weight_decay": -0.01}, "weight_decay must be >= 0"),
        ({"grl_alpha": -1.0}, "grl_alpha must be >= 0"),
        ({"clip_grad_norm": -1.0}, "clip_grad_norm must be > 0"),
        ({"clip_grad_norm": 0.0}, "clip_grad_norm must be > 0"),
        ({"num_workers": 100000}, "num_workers must be at most"),
    ],
)
def test_config_ranges_are_refused_in_one_line(changes, message) -> None:
    with pytest.raises(TrainerError, match=f"config: {message}"):
        TrainConfig(manifest="m.json", **changes)
    with pytest.raises(TrainerError, match=f"config: {message}"):  # from a file: the same
        TrainConfig.from_dict({"manifest": "m.json", **changes})


def test_num_workers_up_to_the_cpu_count_and_a_recorded_larger_value_still_reads() -> None:
    import os

    from trainer.rundir import RunRecord

    cores = os.cpu_count() or 1
    assert TrainConfig(manifest="m.json", num_workers=cores).num_workers == cores
    # A run trained on a larger machine: its config.json still reads here (the value is
    # resume-neutral), as this machine's count.
    recorded = {**TrainConfig(manifest="m.json").to_dict(), "num_workers": cores + 64}
    record = RunRecord.from_dict({**recorded, "resolved_views": 2, "view_set": "k"})
    assert record.config.num_workers == cores


@pytest.mark.parametrize("version", [True, 1.0])
def test_a_checkpoint_version_equal_to_1_but_not_the_integer_is_refused(tmp_path, version):
    model = small_model(1)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    config = TrainConfig(manifest="m.json")
    path = save_checkpoint(tmp_path, 3, model, optimizer, scheduler, _resumable_state(), config)
    saved = json.loads((path / "state.json").read_text())
    (path / "state.json").write_text(json.dumps({**saved, "schema_version": version}))
    with pytest.raises(TrainerError, match=r"schema_version .* is not supported"):
        load_checkpoint(path, model, config=config)


def test_a_config_file_that_is_a_fifo_or_not_utf8_is_refused_in_one_line(tmp_path) -> None:
    """``--config`` is read like every record: a FIFO is refused, not waited on forever."""
    import os

    from trainer.config import read_config_file

    fifo = tmp_path / "run.toml"
    os.mkfifo(fifo)
    with pytest.raises(TrainerError, match=r"run.toml: cannot read config file \(.*FIFO"):
        read_config_file(fifo)
    latin = tmp_path / "latin.toml"
    latin.write_bytes("lr = 0.001 # caf\xe9\n".encode("latin-1"))
    with pytest.raises(TrainerError, match="not UTF-8"):
        read_config_file(latin)
