"""`seqvault model ...` commands. Importing this module imports click only, never torch."""

from __future__ import annotations

import click

DATA_CHOICES = ("synthetic", "movielens")


@click.group("model", context_settings={"help_option_names": ["-h", "--help"]})
def model_cli() -> None:
    """The bundled LASER reference model (needs the torch extra)."""


@model_cli.command("eval")
@click.option("--data", "data", type=click.Choice(DATA_CHOICES), default="synthetic",
              show_default=True, help="Benchmark data set.")
@click.option("--models", default="all", show_default=True,
              help="Comma-separated: base,din,twin,hstu,transformer,laser (or 'all').")
@click.option("--seeds", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Training seeds per model (mean ± std over them).")
@click.option("--out", "out", type=click.Path(file_okay=False), default="model-eval",
              show_default=True, help="Folder for results.json, report.md and plots.")
@click.option("--quick", is_flag=True, help="Small data and model: minutes on 2 CPU cores.")
@click.option("--device", type=click.Choice(("auto", "cpu", "cuda")), default="auto",
              show_default=True, help="auto = cuda when available.")
@click.option("--source", type=click.Choice(("auto", "store", "arrays")), default="auto",
              show_default=True,
              help="Histories from a SeqVault store via laser_reader, or from in-memory arrays.")
@click.option("--ablations/--no-ablations", default=True, show_default=True,
              help="Also train the LASER ablations of the paper's table.")
@click.option("--segments", default="5,20", show_default=True,
              help="Extra LASER segment sizes w for the segment-size table ('' for none).")
@click.option("--depths", default="", show_default=True,
              help="Extra GSTA depths M for a depth table, e.g. '1,4'.")
@click.option("--users", type=click.IntRange(10, None), default=None,
              help="Override the number of users (synthetic) or keep that many (MovieLens).")
@click.option("--max-len", type=click.IntRange(1, None), default=None,
              help="Override L, the number of latest events the models see.")
@click.option("--batch-size", type=click.IntRange(1, None), default=None,
              help="Override the training batch size.")
@click.option("--epochs", type=click.IntRange(1, 100), default=None,
              help="Override the epoch budget.")
@click.option("--throughput-lengths", default=None,
              help="History lengths for the throughput sweep, e.g. '1000,4000,10000' "
                   "(default: 1000,4000 on cuda, none on cpu).")
@click.option("--threads", type=click.IntRange(1, 256), default=None,
              help="torch CPU threads (default: torch's choice).")
@click.option("--deadline", type=click.FloatRange(0, None), default=None,
              help="Seconds after which no further training run starts (tables keep what ran).")
@click.option("--store-dir", type=click.Path(file_okay=False), default=None,
              help="Where to build the SeqVault store (default: OUT/store).")
def eval_command(**options: object) -> None:
    """Train every model with one protocol and write the offline table (AUC, logloss, FLOPs)."""
    try:
        from . import evaluate
    except ImportError as exc:  # torch missing
        raise click.ClickException(
            f"{exc}. The model needs the torch extra: pip install 'seqvault[torch]'"
        ) from exc
    try:
        evaluate.run_from_options(options, log=lambda m: click.echo(m, err=True))
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
