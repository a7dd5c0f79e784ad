"""``ncore-train``: fine-tune an audio foundation model with the N-CORE objective.

``ncore-train --manifest manifests/x.json [options]`` trains every seed
(:func:`trainer.loop.train`) then evaluates the run (:func:`trainer.evaluate.evaluate_run`).
The group also hosts the evaluation and experiment subcommands of ``trainer/eval_cli.py``;
an experiment takes the training options given to the group, which the group resolves
into a :class:`TrainingOptions` handed down as the click context object. Every user
mistake is one line on stderr and exit code 1.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import click
from click.core import ParameterSource

from pipeline.atomic import os_error_line
from pipeline.cli import Commands, terminal_safe
from trainer.config import TrainConfig, parse_seeds, read_config_file, resolve_config
from trainer.errors import TrainerError
from trainer.eval_cli import (
    ablation_command,
    baselines_command,
    cross_check_command,
    embed_command,
    evaluate_command,
    migrate_command,
    report_command,
    setup_logging,
    views_command,
)

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


@dataclass(frozen=True)
class TrainingOptions:
    """The training options typed on the command line (not click's defaults) and the
    ``--config`` file: what an experiment subcommand starts from."""

    given: dict[str, Any]
    config_file: str | None = None

    def config(self, command: str) -> TrainConfig:
        """The resolved config (defaults <- file <- options); a usage error without a
        manifest."""
        file_settings = read_config_file(self.config_file) if self.config_file else None
        if not self.given.get("manifest") and not (file_settings or {}).get("manifest"):
            raise click.UsageError(
                "give the training options before the experiment: "
                f"ncore-train --manifest PATH [options] {command} ..."
            )
        return resolve_config(file_settings, self.given)


def _seeds(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    try:
        return parse_seeds(value)
    except TrainerError as error:
        raise click.BadParameter(str(error)) from None


class TrainerCommands(Commands):
    """``ncore-train``'s group: as ``ncore-prep``'s (any NCoreError, the trainer's or a
    pipeline error, is one line and exit 1), and an OSError too (a full disk, a read-only
    run folder), named by :func:`pipeline.atomic.os_error_line`."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OSError as error:
            raise click.ClickException(terminal_safe(os_error_line(error))) from None


@click.group(
    cls=TrainerCommands,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option("--manifest", type=click.Path(dir_okay=False), help="Manifest written by ncore-prep.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="TOML or JSON file of settings; options given here override it.",
)
@click.option(
    "--task",
    type=click.Choice(["emotion", "speaker"]),
    default=_DEFAULTS["task"],
    show_default=True,
    help="Label y+ to predict; the other one is adversarial (y-).",
)
@click.option(
    "--views",
    type=click.IntRange(min=0),
    default=None,
    help="Perturbed views N per clip (0: no consistency term). [default: all stored]",
)
@click.option(
    "--view-set",
    "view_set_key",
    default=None,
    metavar="KEY",
    help="Train on this view set (its key). [default: the one a resumed or evaluated run "
    "recorded, else the largest complete one of the kind]",
)
@click.option(
    "--perturbation",
    type=click.Choice(["speaker", "emotion"]),
    default=None,
    help="View kind. [default: speaker for the emotion task, emotion for speaker]",
)
@click.option(
    "--backbone",
    default=_DEFAULTS["backbone"],
    show_default=True,
    help="Hugging Face id, local save_pretrained folder, 'tiny' (CPU demo) or "
    "'tiny-group' (tiny without attention mask, as hubert-base).",
)
@click.option("--lambda-ce", type=float, default=_DEFAULTS["lambda_ce"], show_default=True)
@click.option("--lambda-reg", type=float, default=_DEFAULTS["lambda_reg"], show_default=True)
@click.option("--lambda-grl", type=float, default=_DEFAULTS["lambda_grl"], show_default=True)
@click.option("--grl-alpha", type=float, default=_DEFAULTS["grl_alpha"], show_default=True)
@click.option(
    "--grl-schedule",
    type=click.Choice(["constant", "dann"]),
    default=_DEFAULTS["grl_schedule"],
    show_default=True,
    help="constant: alpha throughout; dann: alpha * (2 / (1 + exp(-10 p)) - 1), p = progress.",
)
@click.option(
    "--grl-objective",
    type=click.Choice(["dann", "paper"]),
    default=_DEFAULTS["grl_objective"],
    show_default=True,
    help="dann: +l_GRL*L_GRL (reversal by the GRL alone); paper: eq. 4's minus sign.",
)
@click.option(
    "--recipe",
    type=click.Choice(["ncore", "paper"]),
    default=_DEFAULTS["recipe"],
    show_default=True,
    help="Preset of the adversary settings below. ncore: an adversary that can learn (own "
    "AdamW lr 1e-3, 5 updates per step on the detached embedding, whitened input); paper: "
    "appendix A.1 (h- in the backbone's optimizer, raw input). Options given win.",
)
@click.option(
    "--adv-lr",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="The adversary's own constant AdamW learning rate. [default: from --recipe]",
)
@click.option(
    "--adv-steps",
    type=click.IntRange(min=0),
    default=None,
    help="Adversary updates per optimizer step on the detached embeddings. [default: from "
    "--recipe]",
)
@click.option(
    "--adv-input",
    type=click.Choice(["raw", "standardize", "whiten"]),
    default=None,
    help="What the adversary reads: the raw embedding, or standardised / whitened with "
    "running statistics. [default: from --recipe]",
)
@click.option(
    "--adv-condition",
    type=click.Choice(["none", "task-label", "reweight"]),
    default=None,
    help="For entangled labels: task-label gives the adversary y+ (Zhang et al. 2018); "
    "reweight makes y+ and y- independent in its loss. [default: none]",
)
@click.option(
    "--adv-weight-decay",
    type=click.FloatRange(min=0),
    default=None,
    help="The adversary's AdamW weight decay. [default: from --recipe]",
)
@click.option(
    "--lambda-erase",
    type=click.FloatRange(min=0),
    default=None,
    help="Strength of the linear eraser (not in the paper), which lowers the in-batch "
    "cross-covariance of the adversary's whitened input with y- (within y+ classes under "
    "--adv-condition): its gradient at the embedding as a fraction of the task CE's, times "
    "the GRL strength. [default: from --recipe]",
)
@click.option(
    "--consistency-norm",
    type=click.Choice(["none", "batch-variance"]),
    default=_DEFAULTS["consistency_norm"],
    show_default=True,
    help="none: eq. 1; batch-variance (not in the paper): eq. 1 over 2x the batch's "
    "embedding variance, scale-free.",
)
@click.option(
    "--no-adversary",
    "adversary",
    flag_value=False,
    default=True,
    help="Drop the adversarial head and its loss.",
)
@click.option("--dropout", type=float, default=_DEFAULTS["dropout"], show_default=True)
@click.option(
    "--lr",
    type=float,
    default=_DEFAULTS["lr"],
    show_default=True,
    help="Peak learning rate (AdamW, linear schedule, 10 % warm-up).",
)
@click.option("--weight-decay", type=float, default=_DEFAULTS["weight_decay"], show_default=True)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=_DEFAULTS["batch_size"],
    show_default=True,
    help="Clips per micro-batch (each with 1 + N views).",
)
@click.option(
    "--grad-accum",
    type=click.IntRange(min=1),
    default=_DEFAULTS["grad_accum"],
    show_default=True,
    help="Micro-batches per optimizer step.",
)
@click.option(
    "--clip-grad-norm", type=float, default=_DEFAULTS["clip_grad_norm"], show_default=True
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=_DEFAULTS["epochs"], show_default=True
)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=_DEFAULTS["patience"],
    show_default=True,
    help="Epochs without a better validation score (--select-metric) before stopping.",
)
@click.option(
    "--select-metric",
    type=click.Choice(["accuracy", "uar"]),
    default=_DEFAULTS["select_metric"],
    show_default=True,
    help="Validation metric that selects the epoch (uar for imbalanced corpora).",
)
@click.option(
    "--protocol",
    type=click.Choice(["default", "paper", "speaker-held-out"]),
    default=None,
    help="Split protocol; each seed draws its own split under it, stratified on the task's "
    "label. paper selects the epoch on test (recorded). [default: the manifest's]",
)
@click.option(
    "--fixed-split",
    is_flag=True,
    default=False,
    help="Keep the manifest's stored split for every seed instead of one split per seed.",
)
@click.option(
    "--seeds",
    callback=_seeds,
    default=None,
    help="Comma-separated seeds, one run each. [default: 42,100,510]",
)
@click.option(
    "--max-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Training crop in seconds (the same window for all views). [default: whole clips]",
)
@click.option(
    "--freeze-feature-encoder",
    is_flag=True,
    default=False,
    help="Keep the convolutional feature encoder fixed.",
)
@click.option("--gradient-checkpointing", is_flag=True, default=False)
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... [default: cuda if present]")
@click.option(
    "--num-workers",
    type=click.IntRange(min=0),
    default=_DEFAULTS["num_workers"],
    show_default=True,
    help="DataLoader worker processes per rank.",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=0),
    default=_DEFAULTS["checkpoint_every"],
    show_default=True,
    help="Also checkpoint every N optimizer steps inside an epoch (0: after epochs only).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Run folder. [default: runs/<dataset>-<task>-<kind>-n<N>]",
)
@click.option(
    "--resume",
    is_flag=True,
    default=False,
    help="Continue the run in --out from its last checkpoint.",
)
@click.option("-v", "--verbose", is_flag=True, default=False, help="Debug logging.")
@click.pass_context
def main(ctx: click.Context, config_file: str | None, verbose: bool, **options) -> None:
    """Fine-tune a backbone with N-view consistency and gradient reversal (N-CORE)."""
    setup_logging(verbose)
    # Only what was typed overrides the config file; click's defaults do not.
    given = {
        name: value
        for name, value in options.items()
        if ctx.get_parameter_source(name)
        in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    }
    ctx.obj = TrainingOptions(given, config_file)
    if ctx.invoked_subcommand is not None:
        return
    from trainer.experiments import train_and_evaluate

    try:
        done = train_and_evaluate(ctx.obj.config(""))
    except click.UsageError:
        raise click.UsageError("pass --manifest PATH (or a subcommand)") from None
    if done is None:  # not rank 0 under torchrun
        return
    run, summary = done
    metrics = summary.metrics
    for i, seed in enumerate(summary.seeds):
        accuracy, f1, uar = (metrics[k].values[i] for k in ("accuracy", "macro_f1", "uar"))
        click.echo(f"seed {seed}: test accuracy {accuracy:.4f} macro F1 {f1:.4f} UAR {uar:.4f}")
    click.echo(f"summary: {run.summary_md}")


for _command in (
    evaluate_command,
    report_command,
    embed_command,
    migrate_command,
    ablation_command,
    views_command,
    cross_check_command,
    baselines_command,
):
    main.add_command(_command)


if __name__ == "__main__":
    main()
