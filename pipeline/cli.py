"""``ncore-prep``: the data-preparation commands.

Each command parses its options, imports the modules it needs inside its body (so that
``ncore-prep --help`` stays fast and a command does not pay for another's dependencies)
and calls one library function. User mistakes become :class:`click.ClickException`: one
line on stderr and exit code 1, never a traceback.

To add a command: define ``@main.command("name")`` below; nothing else needs to change.
"""

from __future__ import annotations

from pathlib import Path

import click

# Names are listed here (not imported from pipeline.datasets) so that --help needs no
# numpy / scipy / soundfile import.
DATASETS = ("synthetic", "vivae", "recanvo", "recanvo-balanced", "csv")
PROTOCOLS = ("default", "paper", "speaker-held-out")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ncore")
def main() -> None:
    """N-CORE data preparation: manifests, perturbed views, inspection and validation."""


@main.command("manifest")
@click.option(
    "--dataset",
    type=click.Choice(DATASETS),
    default="synthetic",
    show_default=True,
    help="Corpus to import.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Corpus folder (default data/<Name>; synthetic: generated there when absent).",
)
@click.option("--name", default=None, help="Manifest and cache name (default: the dataset).")
@click.option(
    "--manifest-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("manifests"),
    show_default=True,
    help="Where <name>.json is written.",
)
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the splits.")
@click.option(
    "--protocol",
    type=click.Choice(PROTOCOLS),
    default="default",
    show_default=True,
    help="default: train/val/test, val carved from train; paper: 80/20 train/test and "
    "selection on test; speaker-held-out: test speakers never in training.",
)
@click.option("--test-fraction", type=float, default=0.2, show_default=True)
@click.option("--val-fraction", type=float, default=0.1, show_default=True)
@click.option(
    "--test-speakers", default=None, help="speaker-held-out: comma-separated test speakers."
)
@click.option(
    "--jobs",
    type=int,
    default=None,
    help="Decoding threads (default: up to 4; output order fixed).",
)
@click.option(
    "--csv",
    "csv_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="csv: label file (default DIR/labels.csv).",
)
@click.option("--path-column", default=None, help="csv: column of paths [path].")
@click.option("--emotion-column", default=None, help="csv: column of emotions [emotion].")
@click.option("--speaker-column", default=None, help="csv: column of speakers [speaker].")
@click.option("--subset", default=None, help="vivae: full_set (default) or core_set.")
@click.option(
    "--keep", default=None, help="recanvo: labels to keep, comma-separated, or 'all' [paper's 7]."
)
@click.option("--merge", default=None, help="recanvo: FROM=TO,... [laugh=laughter].")
@click.option("--min-count", type=int, default=None, help="recanvo: drop labels with fewer clips.")
@click.option(
    "--per-class", type=int, default=None, help="recanvo-balanced: clips per label [100]."
)
@click.option(
    "--balance-seed", type=int, default=None, help="recanvo-balanced: seed of the draw [0]."
)
@click.option("--clips", type=int, default=None, help="synthetic: number of clips [240].")
@click.option("--speakers", type=int, default=None, help="synthetic: speakers [6].")
@click.option("--emotions", type=int, default=None, help="synthetic: emotions, 2-6 [4].")
@click.option(
    "--entanglement",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="synthetic: speaker/emotion entanglement, 0 independent .. 1 one speaker per emotion "
    "[0.5].",
)
@click.option("--synthetic-seed", type=int, default=None, help="synthetic: generator seed [0].")
def manifest_command(
    dataset: str,
    data_dir: Path | None,
    name: str | None,
    manifest_dir: Path,
    seed: int,
    protocol: str,
    test_fraction: float,
    val_fraction: float,
    test_speakers: str | None,
    jobs: int | None,
    csv_file: Path | None,
    **options: object,
) -> None:
    """Import a corpus and write manifests/<name>.json (clips, labels, splits, failures)."""
    from pipeline.datasets import DatasetError, build_manifest, save_manifest_keeping_views
    from pipeline.manifest import ManifestError

    options["csv"] = csv_file
    name = name or dataset
    path = manifest_dir / f"{name}.json"
    speakers = [s.strip() for s in test_speakers.split(",") if s.strip()] if test_speakers else None
    try:
        manifest, summary = build_manifest(
            dataset,
            data_dir,
            name,
            seed,
            protocol,
            manifest_path=path,
            jobs=jobs,
            test_fraction=test_fraction,
            val_fraction=val_fraction,
            test_speakers=speakers,
            **options,
        )
        note = save_manifest_keeping_views(manifest, path)
    except (DatasetError, ManifestError) as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"{e.filename or path}: {e.strerror or e}") from None
    for line in summary.lines():
        click.echo(line)
    if note:
        click.echo(f"  {note}")
    click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
