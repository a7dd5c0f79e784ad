"""The evaluation subcommands of ``ncore-train``: evaluate, report, embed and the experiments.

They are attached to the trainer's click group by :func:`register` (called at the end of
``trainer/cli.py``). Each parses its options, imports the heavy modules inside its body and
calls one library function; a :class:`~trainer.errors.TrainerError` becomes one line on
stderr and exit code 1.

The experiment commands take the training options from the group, before the subcommand::

    ncore-train --manifest manifests/synthetic.json --backbone tiny --lr 1e-3 --epochs 15 \\
        ablation --out experiments --views 5
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from trainer.errors import TrainerError


def _fail(error: Exception) -> click.ClickException:
    return click.ClickException(str(error))


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(message)s", force=True
    )


def base_config(ctx: click.Context):
    """The training config given to the group (``ncore-train [options] <experiment>``):
    only options typed on the command line override the ``--config`` file, as for training."""
    from trainer.config import read_config_file, resolve_config

    parent = ctx.find_root()
    params = dict(parent.params)
    config_file = params.pop("config_file", None)
    params.pop("verbose", None)
    given = {
        name: value
        for name, value in params.items()
        if parent.get_parameter_source(name)
        in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    }
    file_settings = read_config_file(config_file) if config_file else None
    if not given.get("manifest") and not (file_settings or {}).get("manifest"):
        raise click.UsageError(
            "give the training options before the experiment: "
            "ncore-train --manifest PATH [options] " + (ctx.info_name or "<experiment>") + " ..."
        )
    return resolve_config(file_settings, given)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise click.BadParameter("expected at least one integer")
    return values


def _print_result(result: Any) -> None:
    click.echo(result.table.read_text(encoding="utf-8"))
    click.echo(f"table: {result.table}")
    if result.figure is not None:
        click.echo(f"figure: {result.figure}")


def register(main: click.Group) -> None:
    """Attach the evaluation and experiment subcommands to the ``ncore-train`` group."""

    def command(name: str) -> Callable:
        return main.command(name, context_settings={"help_option_names": ["-h", "--help"]})

    @command("evaluate")
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
        _logging(verbose)
        from pathlib import Path

        from trainer.evaluate import evaluate_run, probe_on_manifest, summary_markdown

        try:
            for run in runs:
                summary = evaluate_run(run, device, folds, figures=not no_figures, force=force)
                click.echo(summary_markdown(summary))
                if probe_manifest:
                    probe_on_manifest(run, probe_manifest, device, folds)
                    stem = Path(probe_manifest).stem
                    click.echo((Path(run) / f"probe-{stem}.md").read_text(encoding="utf-8"))
        except TrainerError as error:
            raise _fail(error) from None

    @command("report")
    @click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
    @click.option(
        "--out",
        type=click.Path(dir_okay=False),
        default=None,
        help="Also write the table to this Markdown file.",
    )
    @click.option("-v", "--verbose", is_flag=True)
    def report_command(runs, out, verbose) -> None:
        """One Markdown table across RUNS (Tables 1/2 layout; best per column in bold)."""
        _logging(verbose)
        from trainer.report import report_runs

        try:
            click.echo(report_runs(runs, out), nl=False)
        except TrainerError as error:
            raise _fail(error) from None

    @command("embed")
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
        help="Only the clips of this split [all].",
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
        _logging(verbose)
        from trainer.embed import embed_manifest

        try:
            info = embed_manifest(
                run, manifest_path, out, seed, split, batch_size, max_seconds, device
            )
        except TrainerError as error:
            raise _fail(error) from None
        click.echo(
            f"{info['clips']} clips embedded ({info['dim']} dims), "
            f"{info['failed']} failed -> {info['path']}"
        )

    @command("ablation")
    @click.option(
        "--out",
        type=click.Path(file_okay=False),
        default="experiments",
        show_default=True,
        help="Parent folder; runs go to OUT/ablation/.",
    )
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
        _logging(ctx.find_root().params.get("verbose", False))
        from trainer.experiments import run_ablation

        try:
            _print_result(run_ablation(base_config(ctx), out, views))
        except TrainerError as error:
            raise _fail(error) from None

    @command("views")
    @click.option(
        "--out",
        type=click.Path(file_okay=False),
        default="experiments",
        show_default=True,
        help="Parent folder; runs go to OUT/views/.",
    )
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
        _logging(ctx.find_root().params.get("verbose", False))
        from trainer.experiments import run_views

        try:
            _print_result(run_views(base_config(ctx), out, _int_list(n_list)))
        except TrainerError as error:
            raise _fail(error) from None

    @command("cross-check")
    @click.option(
        "--out",
        type=click.Path(file_okay=False),
        default="experiments",
        show_default=True,
        help="Parent folder; runs go to OUT/cross-check/.",
    )
    @click.option("--tasks", default="speaker,emotion", show_default=True)
    @click.option("--perturbations", default="emotion,speaker", show_default=True)
    @click.pass_context
    def cross_check_command(ctx, out, tasks, perturbations) -> None:
        """Table 3: each perturbation (p_e, p_s) on each task."""
        _logging(ctx.find_root().params.get("verbose", False))
        from trainer.experiments import run_cross_check

        task_list = [t.strip() for t in tasks.split(",") if t.strip()]
        kinds = [p.strip() for p in perturbations.split(",") if p.strip()]
        for value in (*task_list, *kinds):
            if value not in ("emotion", "speaker"):
                raise click.BadParameter(f"{value!r}: use emotion and/or speaker")
        try:
            _print_result(run_cross_check(base_config(ctx), out, task_list, kinds))
        except TrainerError as error:
            raise _fail(error) from None

    @command("baselines")
    @click.option(
        "--out",
        type=click.Path(file_okay=False),
        default="experiments",
        show_default=True,
        help="Parent folder; runs go to OUT/baselines/.",
    )
    @click.option(
        "--backbones", required=True, help="Comma-separated backbones (hub ids, folders, or tiny)."
    )
    @click.pass_context
    def baselines_command(ctx, out, backbones) -> None:
        """Each backbone fine-tuned alone and with the GRL only."""
        _logging(ctx.find_root().params.get("verbose", False))
        from trainer.experiments import run_baselines

        names = [b.strip() for b in backbones.split(",") if b.strip()]
        try:
            _print_result(run_baselines(base_config(ctx), out, names))
        except TrainerError as error:
            raise _fail(error) from None
