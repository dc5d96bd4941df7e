"""``python -m bench.run [--full] [--out DIR]``: run every system, write the report.

Each system runs in its own subprocess (``--worker``) so that peak RSS, CPU time and caches
belong to that system alone, and a crash in one cannot take the others' numbers with it.
The stores live in a scratch directory (``--data-dir``, default: a temp dir) deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import measure
from bench.scenarios import PRESETS, RunConfig, run_system

SYSTEMS = ("seqvault", "rocks_blob", "rocks_event")
REPO = Path(__file__).resolve().parent.parent


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "seqvault", "bench"],
                               cwd=REPO, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_worker(system: str, config_path: str, result_path: str, data_dir: str) -> None:
    cfg = RunConfig.from_dict(json.loads(Path(config_path).read_text()))
    result = run_system(system, cfg, os.path.join(data_dir, system))
    Path(result_path).write_text(json.dumps(result, indent=1, default=float))


def run_all(preset: str, out: Path, systems: tuple[str, ...] = SYSTEMS,
            data_dir: str | None = None, publish: Path | None = None,
            log=print) -> dict:
    """Run ``systems`` on the ``preset`` config; write results.json, report.md and plots."""
    from bench import report
    from bench.seqvault_adapter import BULK_FILE, available, features, write_bulk_file

    cfg = PRESETS[preset]
    out.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="seqvault-bench-", dir=data_dir)
    results: dict = {
        "preset": preset,
        "config": cfg.to_dict(),
        "machine": measure.machine_info(),
        "commit": _git_commit(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "python -m bench.run" + ("" if preset == "default" else f" --{preset}"),
        "systems": {},
        "skipped": {},
    }
    try:
        config_path = os.path.join(scratch, "config.json")
        Path(config_path).write_text(json.dumps(cfg.to_dict()))
        for system in systems:
            if system == "seqvault" and (why := available()):
                results["skipped"][system] = why
                log(f"[bench] skip {system}: {why}")
                continue
            if system == "seqvault" and features()["ingest"]:
                from bench import workload as wl

                users, lengths = wl.all_users(cfg.workload)
                write_bulk_file(wl.iter_histories(cfg.workload, users, lengths),
                                os.path.join(scratch, BULK_FILE))
            log(f"[bench] {system} ...")
            t0 = time.perf_counter()
            result_path = os.path.join(scratch, f"{system}.json")
            noise = measure.NoiseMeter()
            proc = subprocess.run(
                [sys.executable, "-m", "bench.run", "--worker", system, "--config", config_path,
                 "--result", result_path, "--data-dir", scratch],
                cwd=REPO, capture_output=True, text=True)
            if proc.returncode != 0:
                results["skipped"][system] = (f"worker failed (exit {proc.returncode}): "
                                              + proc.stderr.strip()[-2000:])
                log(f"[bench] {system} FAILED:\n{proc.stderr[-4000:]}")
                continue
            results["systems"][system] = json.loads(Path(result_path).read_text())
            results["systems"][system]["conditions"] = noise.stop()
            shutil.rmtree(os.path.join(scratch, system), ignore_errors=True)
            log(f"[bench] {system} done in {time.perf_counter() - t0:.1f}s")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    report.write_report(results, out, publish=publish)
    log(f"[bench] report: {out / 'report.md'}")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="the big sweep (tens of minutes)")
    size.add_argument("--tiny", action="store_true", help="seconds; what the smoke test runs")
    p.add_argument("--out", type=Path, help="results folder (default bench/results/<preset>)")
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help=f"comma-separated subset of {','.join(SYSTEMS)}")
    p.add_argument("--data-dir", help="where the scratch stores go (default: system temp dir)")
    p.add_argument("--publish", type=Path, metavar="MD",
                   help="also write the report there (docs/benchmarks.md)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        run_worker(args.worker, args.config, args.result, args.data_dir)
        return 0
    preset = "full" if args.full else "tiny" if args.tiny else "default"
    systems = tuple(s for s in args.systems.split(",") if s)
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        p.error(f"unknown systems {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    out = args.out or REPO / "bench" / "results" / preset
    run_all(preset, out, systems, args.data_dir, args.publish,
            log=lambda m: print(m, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
