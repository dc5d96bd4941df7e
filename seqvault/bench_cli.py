"""`seqvault bench`: run the RocksDB LastN comparison (bench/run.py) or the core figures
(bench/core_bench.py) from a source checkout.

The benchmark code lives in the repository's top-level `bench/` package (it needs the
`bench` extra: rocksdict, psutil, matplotlib) and is not shipped in the wheel; this command
finds it next to the installed package or in the current directory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click


def _bench_root() -> Path:
    for root in (Path.cwd(), Path(__file__).resolve().parent.parent):
        if (root / "bench" / "run.py").exists():
            return root
    raise click.ClickException(
        "the benchmark code (bench/) is not here: run `seqvault bench` from a SeqVault source "
        "checkout (git clone ...; pip install -e '.[bench]')")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--full", is_flag=True, help="The big sweep (history lengths to 100,000; tens of minutes).")
@click.option("--tiny", is_flag=True, help="Seconds: tiny sizes, to check the setup works.")
@click.option("--core", is_flag=True, help="Core figures only: index bytes/user and open time at "
              "1M users, read percentiles, append throughput (bench/core_bench.py).")
@click.option("--out", type=click.Path(path_type=Path), help="Results folder.")
@click.option("--publish", type=click.Path(path_type=Path), metavar="MD",
              help="Also write the Markdown report here (e.g. docs/benchmarks.md).")
def bench(full: bool, tiny: bool, core: bool, out: Path | None, publish: Path | None) -> None:
    """Benchmark SeqVault against RocksDB LastN stores, side by side (see docs/benchmarks.md).

    Writes a Markdown report with percentiles and ratios, plus PNG plots. Progress goes to
    stderr; a default run takes a few minutes on 2 cores.
    """
    if full and tiny:
        raise click.UsageError("--full and --tiny exclude each other")
    out = out.resolve() if out is not None else None
    publish = publish.resolve() if publish is not None else None
    root = _bench_root()
    sys.path.insert(0, str(root))
    os.chdir(root)
    try:
        if core:
            from bench import core_bench

            args = ([] if out is None else ["--out", str(out)]) + (["--quick"] if tiny else [])
            code = core_bench.main(args)
        else:
            from bench import run

            args = ["--full"] if full else ["--tiny"] if tiny else []
            if out is not None:
                args += ["--out", str(out)]
            if publish is not None:
                args += ["--publish", str(publish)]
            code = run.main(args)
    except ModuleNotFoundError as exc:
        raise click.ClickException(
            f"{exc.name} is missing: pip install 'seqvault[bench]'") from exc
    raise SystemExit(code)


def register(cli: click.Group) -> None:
    cli.add_command(bench)
