"""The evaluation subcommands of ``ncore-train``: evaluate, report, embed, migrate and the
experiments.

Commands are defined here at module level and added to the group in ``trainer/cli.py``.
Each parses its options, imports the heavy modules inside its body and calls one library
function; a :class:`~trainer.errors.TrainerError` becomes one line on stderr and exit
code 1.

The experiment commands take the training options given to the group, before the
subcommand, as the ``TrainingOptions`` object the group resolves (``ctx.obj``)::

    ncore-train --manifest manifests/synthetic.json --backbone tiny --lr 1e-3 --epochs 15 \\
        ablation --out experiments --views 5
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import click

CONTEXT = {"help_option_names": ["-h", "--help"]}


def setup_logging(verbose: bool) -> None:
    """Log records as bare lines on stderr; DEBUG with ``-v``."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", force=True
    )


def base_config(ctx: click.Context):
    """The training config the group resolved from its options (``ncore-train [options]
    <experiment>``); a usage error when they name no manifest."""
    if ctx.obj is None:
        raise click.UsageError("run the experiments through ncore-train")
    return ctx.obj.config(ctx.info_name or "<experiment>")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise click.BadParameter("expected at least one integer")
    return values


def out_option(experiment: str) -> Callable:
    """The ``--out`` option of an experiment command."""
    return click.option(
        "--out",
        type=click.Path(file_okay=False),
        default="experiments",
        show_default=True,
        help=f"Parent folder; runs go to OUT/{experiment}/.",
    )


def run_experiment(ctx: click.Context, run: Callable, *args: Any) -> None:
    """``run(config, *args)`` with the group's training config; print its table."""
    _print_result(run(base_config(ctx), *args))


def _print_result(result: Any) -> None:
    click.echo(result.table.read_text(encoding="utf-8"))
    click.echo(f"table: {result.table}")
    if result.figure is not None:
        click.echo(f"figure: {result.figure}")


@click.command("evaluate", context_settings=CONTEXT)
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--device", default=None, help="cpu, cuda ... [default: cuda if present]")
@click.option(
    "--folds",
    type=click.IntRange(min=2),
    default=5,
    show_default=True,
    help="Cross-validation folds of the linear probes.",
)
@click.option("--force", is_flag=True, help="Re-evaluate seeds already evaluated.")
@click.option("--no-figures", is_flag=True, help="Skip the PNG figures.")
@click.option(
    "--probe-manifest",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also probe both labels on the clips of this manifest (e.g. a corpus "
    "where they are independent); writes RUN/probe-<name>.json and .md.",
)
@click.option("-v", "--verbose", is_flag=True)
def evaluate_command(runs, device, folds, force, no_figures, probe_manifest, verbose) -> None:
    """Summarise finished RUNS: metrics over seeds, leakage probes, figures."""
    setup_logging(verbose)
    from trainer.evaluate import evaluate_run, probe_on_manifest
    from trainer.rundir import RunDir
    from trainer.summary import summary_markdown

    for run in runs:
        summary = evaluate_run(run, device, folds, figures=not no_figures, force=force)
        click.echo(summary_markdown(summary))
        if probe_manifest:
            probe_on_manifest(run, probe_manifest, device, folds)
            markdown = RunDir(run).probe_files(probe_manifest)[1]
            click.echo(markdown.read_text(encoding="utf-8"))


@click.command("migrate", context_settings=CONTEXT)
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
def migrate_command(runs) -> None:
    """Rewrite the records of RUNS written before they were versioned as current records
    (once per old run folder; the readers accept only the current version)."""
    from trainer.rundir import migrate_run

    for run in runs:
        written = migrate_run(run)
        for path in written:
            click.echo(f"rewrote {path}")
        if not written:
            click.echo(f"{run}: already current")


@click.command("report", context_settings=CONTEXT)
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the table to this Markdown file.",
)
@click.option(
    "--baseline",
    type=click.Path(file_okay=False),
    default=None,
    help="Run to compare every other run with: paired differences over shared seeds and "
    "test clips, with bootstrap 95 % intervals.",
)
@click.option("-v", "--verbose", is_flag=True)
def report_command(runs, out, baseline, verbose) -> None:
    """One Markdown table across RUNS (Tables 1/2 layout; best per column in bold)."""
    setup_logging(verbose)
    from trainer.report import report_runs

    click.echo(report_runs(runs, out, baseline), nl=False)


@click.command("embed", context_settings=CONTEXT)
@click.option(
    "--run",
    "run",
    required=True,
    type=click.Path(file_okay=False),
    help="Run folder (or one of its seed-<s> folders).",
)
@click.option(
    "--manifest",
    "manifest_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Any manifest, with or without views.",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .npz file.")
@click.option("--seed", type=int, default=None, help="Seed whose model to use [first].")
@click.option(
    "--split",
    type=click.Choice(["train", "val", "test"]),
    default=None,
    help="Only the clips of this split (on the run's own manifest: the seed's split) [all].",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option(
    "--max-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Keep the centre window of longer clips [the run's setting].",
)
@click.option("--device", default=None, help="cpu, cuda ... [default: cpu]")
@click.option("-v", "--verbose", is_flag=True)
def embed_command(
    run, manifest_path, out, seed, split, batch_size, max_seconds, device, verbose
) -> None:
    """Write clip ids, labels and embeddings of a manifest's clips (.npz)."""
    setup_logging(verbose)
    from trainer.embed import embed_manifest

    info = embed_manifest(run, manifest_path, out, seed, split, batch_size, max_seconds, device)
    click.echo(
        f"{info['clips']} clips embedded ({info['dim']} dims), "
        f"{info['failed']} failed -> {info['path']}"
    )


@click.command("ablation", context_settings=CONTEXT)
@out_option("ablation")
@click.option(
    "--views",
    type=click.IntRange(min=2),
    default=5,
    show_default=True,
    help="N of the last row.",
)
@click.pass_context
def ablation_command(ctx, out, views) -> None:
    """Table 4: backbone; + GRL; + consistency with 1 view; + N views."""
    from trainer.experiments import run_ablation

    run_experiment(ctx, run_ablation, out, views)


@click.command("views", context_settings=CONTEXT)
@out_option("views")
@click.option(
    "--n",
    "n_list",
    default="1,2,3,4,5,6,7",
    show_default=True,
    help="Comma-separated numbers of views.",
)
@click.pass_context
def views_command(ctx, out, n_list) -> None:
    """Figure 3: accuracy against the number of views N."""
    from trainer.experiments import run_views

    run_experiment(ctx, run_views, out, _int_list(n_list))


@click.command("cross-check", context_settings=CONTEXT)
@out_option("cross-check")
@click.option("--tasks", default="speaker,emotion", show_default=True)
@click.option("--perturbations", default="emotion,speaker", show_default=True)
@click.pass_context
def cross_check_command(ctx, out, tasks, perturbations) -> None:
    """Table 3: each perturbation (p_e, p_s) on each task."""
    from trainer.experiments import run_cross_check

    task_list = [t.strip() for t in tasks.split(",") if t.strip()]
    kinds = [p.strip() for p in perturbations.split(",") if p.strip()]
    for value in (*task_list, *kinds):
        if value not in ("emotion", "speaker"):
            raise click.BadParameter(f"{value!r}: use emotion and/or speaker")
    run_experiment(ctx, run_cross_check, out, task_list, kinds)


@click.command("baselines", context_settings=CONTEXT)
@out_option("baselines")
@click.option(
    "--backbones", required=True, help="Comma-separated backbones (hub ids, folders, or tiny)."
)
@click.pass_context
def baselines_command(ctx, out, backbones) -> None:
    """Each backbone fine-tuned alone and with the GRL only."""
    from trainer.experiments import run_baselines

    names = [b.strip() for b in backbones.split(",") if b.strip()]
    run_experiment(ctx, run_baselines, out, names)
