"""Where does a merge's wall time go? (issue 14: "a merge of 400k events runs 83–143 s of wall
time on 9 s of CPU, silently").

    .venv/bin/python -m bench.merge_wall                       # 100k users x 4 events, 2 flushes
    .venv/bin/python -m bench.merge_wall --users 20000 --flushes 2 --nice 0 --nice 10

Builds a store of `--users` users with `--events` events each, appended in `--flushes`
`append_batch` calls with a flush after each (so every user has that many real-time segments:
merge rewrites all of them), then times one `merge(nice=..., worker=...)` per `--nice` /
`--worker` variant on a fresh copy of the store (on code before the merge process, where
`merge()` took neither, `--nice` sets the `merge_nice` setting every merge then ran at), and
reports for each:

- wall seconds, CPU seconds of this process (all threads) and of its children (the merge
  process), from `resource.getrusage`;
- fsyncs and their total wall time, LMDB commits (publishes) and their total wall time, and
  the time slept (`merge_duty` pacing), by wrapping those calls in this process only (the
  merge process does its own fsyncs: their count comes back in the summary, `worker_fsyncs`);
- the machine's load average at the start (other processes compete for the same cores: the
  point of the `--nice` comparison).

Optionally `--burn N` starts N busy-looping processes at nice 0 for the duration, to show a
shared machine's effect on a reproducible footing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seqvault import SeqVault, sample  # noqa: E402
from seqvault import manifest as manifest_mod  # noqa: E402
from seqvault import merge as merge_mod  # noqa: E402

BURN = "import os\nos.nice(0)\nwhile True: pass\n"


def build(path: Path, users: int, events: int, flushes: int, seed: int) -> int:
    schema = sample.behavior_schema()
    rng = np.random.default_rng(seed)
    t0 = int(time.time() * 1000) - 86_400_000
    total = 0
    with SeqVault.open(path, schema=schema, durability="batch",
                       memtable_events=1 << 30) as v:
        per = [events // flushes + (1 if i < events % flushes else 0) for i in range(flushes)]
        for f, k in enumerate(per):
            n = users * k
            uid = np.repeat(np.arange(users, dtype=np.int64), k)
            ts = t0 + f * 3_600_000 + rng.integers(0, 3_600_000, n)
            v.append_batch({"user_id": uid, "ts": ts,
                            **sample.event_columns(rng, n, n_items=10_000_000)})
            v.flush()
            total += n
    return total


class Counters:
    """Wrap os.fsync, Manifest.commit and time.sleep (this process only) to count and time."""

    def __init__(self) -> None:
        self.fsyncs = 0
        self.fsync_s = 0.0
        self.commits = 0
        self.commit_s = 0.0
        self.sleep_s = 0.0
        self._saved: list[tuple[Any, str, Any]] = []

    def _wrap(self, owner: Any, name: str, count: str, secs: str) -> None:
        orig = getattr(owner, name)

        def wrapped(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return orig(*a, **k)
            finally:
                if count:
                    setattr(self, count, getattr(self, count) + 1)
                setattr(self, secs, getattr(self, secs) + time.perf_counter() - t)

        self._saved.append((owner, name, orig))
        setattr(owner, name, wrapped)

    def __enter__(self) -> Counters:
        self._wrap(os, "fsync", "fsyncs", "fsync_s")
        self._wrap(manifest_mod.Manifest, "commit", "commits", "commit_s")
        self._wrap(merge_mod.time, "sleep", "", "sleep_s")
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, name, orig in reversed(self._saved):
            setattr(owner, name, orig)


def one(src: Path, work: Path, nice: int, worker: str) -> dict[str, Any]:
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(src, work)
    from seqvault.settings import DEFAULTS

    opts: dict[str, Any] = {"merge_nice": nice}
    if "merge_worker" in DEFAULTS:  # (absent before the merge process existed)
        opts["merge_worker"] = worker
    v = SeqVault.open(work, **opts)
    load = os.getloadavg()[0]
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    with Counters() as cnt:
        import inspect

        params = inspect.signature(v.merge).parameters
        if "worker" in params:  # this code: niceness and worker are per call
            summary = v.merge(nice=nice, worker=worker)
        else:  # before: every explicit merge ran at the merge_nice setting, in a thread
            summary = v.merge()
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    v.close()  # stops (and waits for) the merge process: only then is its CPU counted
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    child = (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime)
    return {"nice": nice, "worker": worker, "load_avg_1m": round(load, 2),
            "wall_s": round(wall, 3), "cpu_s_this_process": round(cpu, 3),
            "cpu_s_children": round(child, 3),
            "fsyncs_this_process": cnt.fsyncs, "fsync_s": round(cnt.fsync_s, 3),
            "lmdb_commits": cnt.commits, "commit_s": round(cnt.commit_s, 3),
            "sleep_s": round(cnt.sleep_s, 3),
            "batches": summary.get("batches"), "events_in": summary["events_in"],
            "users_merged": summary["users_merged"],
            "worker_fsyncs": summary.get("fsyncs"),
            "summary_seconds": summary["seconds"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--events", type=int, default=4, help="events per user")
    ap.add_argument("--flushes", type=int, default=2)
    ap.add_argument("--nice", type=int, action="append", default=None,
                    help="merge_nice values to compare (repeatable; default: the setting's "
                         "default)")
    ap.add_argument("--worker", action="append", default=None,
                    help="merge_worker values to compare (repeatable; default: the default)")
    ap.add_argument("--burn", type=int, default=0,
                    help="busy-looping processes to start (a shared machine, reproducibly)")
    ap.add_argument("--dir", type=str, default=None)
    ap.add_argument("--out", type=str, default=None)
    args = ap.parse_args(argv)
    from seqvault.settings import DEFAULTS

    nices = args.nice or [0]
    workers = args.worker or [str(DEFAULTS.get("merge_worker", "thread"))]
    tmp = Path(args.dir or tempfile.mkdtemp(prefix="sv-merge-wall-"))
    src = tmp / "src"
    shutil.rmtree(src, ignore_errors=True)
    total = build(src, args.users, args.events, args.flushes, 42)
    burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(args.burn)]
    runs = []
    try:
        for worker in workers:
            for nice in nices:
                r = one(src, tmp / "work", nice, worker)
                runs.append(r)
                print(json.dumps(r), flush=True)
    finally:
        for p in burners:
            p.kill()
            p.wait()
    out = {"config": vars(args) | {"events_total": total, "cpus": os.cpu_count()},
           "runs": runs}
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))
    if not args.dir:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


if __name__ == "__main__":
    main()
