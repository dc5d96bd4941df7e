"""``python -m bench.run [--full] [--out DIR]``: run every system, write the report.

Each system runs in its own subprocess (``--worker``) so that peak RSS, CPU time and caches
belong to that system alone, and a crash in one cannot take the others' numbers with it. The
parent drives the workers step by step, alternating systems (see ``run_all``).
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
import traceback
from pathlib import Path

from bench import measure
from bench.scenarios import PRESETS, RunConfig

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


def serve_worker(system: str, config_path: str, result_path: str, data_dir: str) -> None:
    """Worker side: announce the steps, then run each step the parent names on stdin.

    Protocol, one line each: worker -> JSON list of steps; parent -> a step name; worker ->
    "ok" or "error"; parent -> "finish"; worker writes the result file, "ok", exits.
    """
    from bench.scenarios import Runner

    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol
    sys.stdout = sys.stderr
    cfg = RunConfig.from_dict(json.loads(Path(config_path).read_text()))
    runner = Runner(system, cfg, os.path.join(data_dir, system))
    proto.write(json.dumps(runner.steps()) + "\n")
    for line in sys.stdin:
        step = line.strip()
        try:
            if step == "finish":
                Path(result_path).write_text(json.dumps(runner.finish(), indent=1, default=float))
                proto.write("ok\n")
                return
            runner.do(step)
        except Exception:
            traceback.print_exc()
            proto.write("error\n")
            return
        proto.write("ok\n")


class _Worker:
    def __init__(self, system: str, config_path: str, scratch: str) -> None:
        self.system = system
        self.result_path = os.path.join(scratch, f"{system}.json")
        self.log_path = os.path.join(scratch, f"{system}.log")
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.run", "--worker", system, "--config", config_path,
             "--result", self.result_path, "--data-dir", scratch],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
            bufsize=1)
        self.conditions: dict[str, float] = {}
        self.steps = json.loads(self._read() or "null")

    def _read(self) -> str:
        return (self.proc.stdout.readline() if self.proc.stdout else "").strip()

    def step(self, name: str) -> bool:
        meter = measure.NoiseMeter(self.proc.pid)
        try:
            self.proc.stdin.write(name + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        ok = self._read() == "ok"
        self.conditions = measure.add_conditions(self.conditions, meter.stop())
        return ok

    def error(self) -> str:
        self.close()
        return Path(self.log_path).read_text()[-3000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


def run_all(preset: str, out: Path, systems: tuple[str, ...] = SYSTEMS,
            data_dir: str | None = None, publish: Path | None = None,
            log=print, compare: Path | None = None) -> dict:
    """Run ``systems`` on the ``preset`` config; write results.json, report.md and plots.

    All systems' workers start together; each loads alone, then the parent alternates them
    step by step (rotating who goes first), so machine noise is shared fairly.
    """
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
    workers: dict[str, _Worker] = {}
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
            workers[system] = _Worker(system, config_path, scratch)
        steps = next((w.steps for w in workers.values() if w.steps), [])
        t0 = time.perf_counter()
        for k, step in enumerate(steps):
            order = list(workers)
            order = order[k % len(order):] + order[: k % len(order)] if order else order
            for system in order:
                if not workers[system].step(step):
                    results["skipped"][system] = (f"worker failed at step {step!r}:\n"
                                                  + workers.pop(system).error())
                    log(f"[bench] {system} FAILED at {step}: see the report")
            log(f"[bench] {k + 1}/{len(steps)} {step} ({time.perf_counter() - t0:.0f}s)")
        for system, worker in list(workers.items()):
            if not worker.step("finish"):
                results["skipped"][system] = "worker failed at finish:\n" + worker.error()
                continue
            result = json.loads(Path(worker.result_path).read_text())
            result["conditions"] = worker.conditions
            results["systems"][system] = result
            worker.close()
    finally:
        for worker in workers.values():
            worker.close()
        shutil.rmtree(scratch, ignore_errors=True)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    if compare is not None:
        # The previous run's ratios beside this run's: the run-to-run spread in the report.
        results["previous"] = report.previous_summary(json.loads(Path(compare).read_text()))
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
    p.add_argument("--compare", type=Path, metavar="RESULTS_JSON",
                   help="an earlier run's results.json: the report shows both runs' ratios "
                        "and their spread")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        serve_worker(args.worker, args.config, args.result, args.data_dir)
        return 0
    preset = "full" if args.full else "tiny" if args.tiny else "default"
    systems = tuple(s for s in args.systems.split(",") if s)
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        p.error(f"unknown systems {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    out = args.out or REPO / "bench" / "results" / preset
    run_all(preset, out, systems, args.data_dir, args.publish,
            log=lambda m: print(m, file=sys.stderr, flush=True), compare=args.compare)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
