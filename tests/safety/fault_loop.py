"""The fault-injection loop (issue 14, finding 9; docs/design/safety.md, section 9).

For each writer operation (scenario) the loop first runs it clean under `faults.counting()`,
which counts the engine's calls of each file operation (seqvault/iofaults.py: write, fsync,
ftruncate, replace, write-opens, and the two edges of the LMDB commit). Then, for every
operation kind, every N from 1 to that count and each errno, it copies the scenario's base
store, opens a writer, arms the Nth call to fail and runs the operation again, and checks:

- the operation either succeeds (only if nothing was injected) or raises a documented error:
  `WriterFailed` naming the store and the error, an `OSError` with that errno naming a file of
  the store (what the command line turns into "disk full: cannot write PATH", exit 1), or an
  `lmdb.Error` (a failed metadata commit: "metadata write failed in STORE", exit 1);
  one line each;
- nothing temporary is left: no `*.tmp`, no checkpoint, log or extent file the committed
  metadata does not name, no extent file longer than its committed size, no spill folder;
- the same writer still reads a whole state (before or after the failing step), and refuses
  every later write with `WriterFailed` (fail-stop);
- after a reopen the writer, and a read-only open in another process, hold exactly the
  model's events before the failing step or after it (an acknowledged step is never lost,
  nothing never written appears, a step is never half applied), and `verify()` is clean.

`python -m tests.safety.fault_loop [--all] [--only NAME]` runs the loop and prints the counts;
tests/safety/test_fault_loop.py runs it under pytest.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seqvault import Schema, SeqVault, WriterFailed, faults
from seqvault import wal as wal_mod
from seqvault.cli.common import describe_os_error
from seqvault.files import parse_file_name
from seqvault.meta import Meta, unpack
from seqvault.wal import wal_name
from tests.conftest import ACTIONS, SCHEMA_DICT

ROOT = Path(__file__).resolve().parents[2]
ERRNOS = (errno.EIO, errno.ENOSPC)
# Small limits so that a few dozen events exercise every path: partial seals at 16 events,
# several segments a user, extent files that roll over, merge publishing in several batches,
# merge in the calling thread (merge_nice 0: the same calls in the same order every run), an
# index checkpoint after most commits.
SETTINGS: dict[str, Any] = {
    "durability": "sync", "tail_events": 16, "segment_events": 8,
    "lifetime_segment_events": 16, "max_file_bytes": 4096, "merge_nice": 0,
    "merge_batch_users": 2, "checkpoint_deltas": 3,
}

State = dict[int, list[tuple[int, int]]]  # user → [(ts, item_id)] in read order


# ---------------------------------------------------------------------- the model
class Model:
    """Each user's events in arrival order; reads return them stably sorted by ts."""

    def __init__(self) -> None:
        self.events: dict[int, list[tuple[int, int]]] = {}

    def copy(self) -> Model:
        m = Model()
        m.events = {u: list(e) for u, e in self.events.items()}
        return m

    def add(self, user: int, ts: Iterable[int], items: Iterable[int]) -> None:
        self.events.setdefault(user, []).extend(zip((int(t) for t in ts), (int(i) for i in items)))

    def delete(self, user: int, before: int | None = None) -> None:
        kept = [] if before is None else [e for e in self.events.get(user, []) if e[0] >= before]
        if kept:
            self.events[user] = kept
        else:
            self.events.pop(user, None)

    def state(self) -> State:
        return {u: sorted(e, key=lambda x: x[0]) for u, e in self.events.items() if e}


class Events:
    """Deterministic events with unique item ids (so every event is identifiable)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.next_item = 1

    def make(self, n: int) -> dict[str, Any]:
        ts = self.rng.integers(1_000, 1_060, n)  # narrow: ties and late events are common
        items = np.arange(self.next_item, self.next_item + n, dtype=np.int64)
        self.next_item += n
        return {"ts": ts, "item_id": items,
                "action": [ACTIONS[i] for i in self.rng.integers(0, len(ACTIONS), n)],
                "dwell": self.rng.integers(0, 1000, n).astype(np.uint32),
                "score": self.rng.random(n).astype(np.float32),
                "liked": self.rng.random(n) < 0.3}


def one_event(ts: int, item: int) -> dict[str, Any]:
    return {"ts": [ts], "item_id": [item], "action": ["view"], "dwell": [0], "score": [0.0],
            "liked": [False]}


@dataclass
class Step:
    name: str
    run: Callable[[SeqVault], Any]
    apply: Callable[[Model], None]


@dataclass
class Spec:
    """What a scenario does: its steps, the settings its writer opens with, damage done to
    its base store first; `opens`: the step is the writer open itself (recovery)."""

    steps: list[Step]
    settings: dict[str, Any] = field(default_factory=dict)
    damage: Callable[[Path], None] | None = None
    opens: bool = False


@dataclass
class Scenario:
    name: str
    template: Path  # the base store (closed)
    spec: Spec
    states: list[State]  # states[k]: after k steps
    before: list[str]  # leftovers(template): what the base store already has

    @property
    def steps(self) -> list[Step]:
        return self.spec.steps


def append_step(ev: Events, user: int, n: int) -> Step:
    data = ev.make(n)
    return Step(f"append({user}, {n})", lambda v: v.append(user, data),
                lambda m: m.add(user, data["ts"], data["item_id"]))


def batch_step(ev: Events, users: list[tuple[int, int]]) -> Step:
    parts = [(u, ev.make(n)) for u, n in users]
    cols = {k: np.concatenate([np.asarray(d[k]) for _u, d in parts]) for k in parts[0][1]}
    cols["user_id"] = np.concatenate([np.full(len(d["ts"]), u, dtype=np.int64) for u, d in parts])

    def apply(m: Model) -> None:
        for u, d in parts:
            m.add(u, d["ts"], d["item_id"])
    return Step(f"append_batch({[u for u, _n in users]})", lambda v: v.append_batch(cols), apply)


# ---------------------------------------------------------------------- the base store
def build_base(path: Path, ev: Events) -> Model:
    """Lifetime segments (a merge), real-time segments (flushes), a log with unsealed records
    (closed without a flush), and garbage files for reclamation."""
    model = Model()
    with SeqVault.open(path, schema=Schema.from_dict(SCHEMA_DICT), **SETTINGS) as v:
        for rnd, (users, n) in enumerate([(range(1, 7), 10), (range(1, 5), 6)]):
            for u in users:
                step = append_step(ev, u, n + rnd)
                step.run(v)
                step.apply(model)
            v.flush()
        v.merge()
        for u in (1, 2, 3, 7):
            step = append_step(ev, u, 5)
            step.run(v)
            step.apply(model)
        v.flush()
        for u, n in ((2, 10), (5, 3), (8, 4)):  # stays in the log: replayed at every open
            step = append_step(ev, u, n)
            step.run(v)
            step.apply(model)
        v.close(flush=False)
    return model


def scenarios(workdir: Path) -> list[Scenario]:
    out = []
    for name in SCENARIOS:
        ev = Events(seed=len(out) + 1)
        template = workdir / f"base-{name}"
        base = build_base(template, ev)
        spec = SCENARIOS[name](ev, workdir)
        if spec.damage is not None:
            spec.damage(template)
        states, m = [base.state()], base.copy()
        for s in spec.steps:
            s.apply(m)
            states.append(m.state())
        out.append(Scenario(name, template, spec, states, leftovers(template)))
    return out


def _ingest(ev: Events, workdir: Path) -> Spec:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from seqvault.ingest import ingest

    parts = [(u, ev.make(4)) for u in (1, 5, 20, 21, 22)]  # existing and new users
    cols = {k: np.concatenate([np.asarray(d[k]) for _u, d in parts]) for k in parts[0][1]}
    cols["user_id"] = np.concatenate([np.full(4, u, dtype=np.int64) for u, _d in parts])
    path = workdir / f"ingest-{ev.next_item}.parquet"
    pq.write_table(pa.table(cols), path)

    def apply(m: Model) -> None:
        for u, d in parts:
            m.add(u, d["ts"], d["item_id"])
    return Spec([Step("ingest", lambda v: ingest(v, [path]), apply)])


def _delete(ev: Events, workdir: Path) -> Spec:
    return Spec([Step("delete(3)", lambda v: v.delete(3), lambda m: m.delete(3)),
                 Step("delete(1, before=1030)", lambda v: v.delete(1, before=1030),
                      lambda m: m.delete(1, before=1030))])


def _batch_durability(ev: Events, workdir: Path) -> Spec:
    """Appends acknowledged after write(); the fsyncs run in the log's background thread, so
    their number varies from run to run. The closing `sync()` waits for them: it raises once
    a background fsync failed."""
    steps = [append_step(ev, u, n) for u, n in ((1, 2), (5, 1), (9, 2), (2, 1))]
    return Spec([*steps, Step("sync", lambda v: v.sync(), lambda m: None)],
                settings={"durability": "batch", "batch_interval": 0.001})


def _torn(store: Path) -> None:
    """A crashed writer's leftovers: a torn record at the end of the log, and bytes past the
    published size of the newest extent file. The next writer open cuts both."""
    log = next((store / "wal").iterdir())
    end = wal_mod.scan(log).end  # a version-2 log is preallocated: the tear lands in its slack
    with open(log, "r+b") as fh:
        fh.seek(end)
        fh.write((1000).to_bytes(4, "little") + bytes(range(1, 21)))
    with open(max((store / "data").iterdir()), "ab") as fh:
        fh.write(b"unpublished" * 10)


def _same(name: str, call: Callable[[SeqVault], Any]) -> Callable[[Events, Path], Spec]:
    return lambda ev, wd: Spec([Step(name, call, lambda m: None)])


SCENARIOS: dict[str, Callable[[Events, Path], Spec]] = {
    "sync appends": lambda ev, wd: Spec([append_step(ev, u, n) for u, n in
                                         ((1, 3), (5, 2), (9, 2), (2, 1), (1, 2))]),
    "batch appends": lambda ev, wd: Spec([batch_step(ev, [(1, 2), (5, 2), (10, 3)]),
                                          batch_step(ev, [(3, 1), (11, 2)])]),
    "batch durability": _batch_durability,
    # user 2 has 10 events in the log: 8 more pass tail_events (16) and seal its tail alone
    "partial seal": lambda ev, wd: Spec([append_step(ev, 2, 8), append_step(ev, 8, 2)]),
    "full flush": _same("flush", lambda v: v.flush()),
    "merge and reclamation": _same("merge", lambda v: v.merge()),
    "ingest": _ingest,
    "index checkpoint": _same("checkpoint", lambda v: v.checkpoint()),
    "delete": _delete,
    "close": _same("close", lambda v: v.close()),
    "recovery at open": lambda ev, wd: Spec([Step("open", lambda v: None, lambda m: None)],
                                            damage=_torn, opens=True),
}


# ---------------------------------------------------------------------- checks
@dataclass
class Counts:
    cases: int = 0
    injected: int = 0
    not_reached: int = 0  # cases whose armed call never came (background fsyncs vary)
    sites: set[tuple[str, str]] = field(default_factory=set)  # (op, file:line function)
    paths: set[tuple[str, tuple[str, ...]]] = field(default_factory=set)  # (op, call chain)
    ops: dict[str, int] = field(default_factory=dict)  # scenario → cases
    reopens: int = 0  # writer reopens + read-only opens in another process
    events_compared: int = 0
    lost: int = 0  # acknowledged events missing after a reopen
    phantom: int = 0  # events present that no allowed state has
    raised: dict[str, int] = field(default_factory=dict)  # error class → cases
    problems: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"cases": self.cases, "failures_injected": self.injected,
                "cases_not_reached": self.not_reached,
                "call_sites_armed": len(self.sites), "call_paths_armed": len(self.paths),
                "reopens": self.reopens, "events_compared": self.events_compared,
                "lost": self.lost, "phantom": self.phantom, "errors_raised": self.raised,
                "cases_by_operation": self.ops, "problems": len(self.problems),
                "sites": sorted(f"{op} @ {site}" for op, site in self.sites)}


def read_state(v: SeqVault) -> State:
    out: State = {}
    for u in v.users():
        seq = v.read(u, columns=["ts", "item_id"])
        out[int(u)] = list(zip(seq.columns["ts"].tolist(), seq.columns["item_id"].tolist()))
    return out


def compare(got: State, allowed: list[State], counts: Counts, where: str) -> str | None:
    """None if `got` is one of the allowed states; else what differs."""
    for s in allowed:
        if got == s:
            counts.events_compared += sum(len(e) for e in got.values())
            return None
    have = {e for evs in got.values() for e in evs}
    must = set.intersection(*({e for evs in s.values() for e in evs} for s in allowed))
    may = set.union(*({e for evs in s.values() for e in evs} for s in allowed))
    lost, phantom = must - have, have - may
    counts.lost += len(lost)
    counts.phantom += len(phantom)
    return (f"{where}: matches no allowed state ({len(lost)} acknowledged events missing, "
            f"{len(phantom)} never-written present, users {sorted(got)} vs "
            f"{[sorted(s) for s in allowed]})")


def check_error(exc: BaseException, store: Path, err: int) -> str | None:
    """None if `exc` is a documented error for an injected `err`: one line, naming the store."""
    msg = str(exc)
    if "\n" in msg:
        return f"{type(exc).__name__} message is not one line: {msg!r}"
    if isinstance(exc, WriterFailed):
        if str(store) not in msg or os.strerror(err) not in msg:
            return f"WriterFailed does not name the store and the error: {msg!r}"
        return None
    if isinstance(exc, OSError):
        if exc.errno != err:
            return f"OSError errno {exc.errno}, injected {err}: {msg!r}"
        if not str(exc.filename or "").startswith(str(store)):
            return f"OSError names no file of the store (filename {exc.filename!r}): {msg!r}"
        line, code = describe_os_error(exc)
        if str(exc.filename) not in line or code != 1:
            return f"the command line would print {line!r} (exit {code})"
        return None
    if type(exc).__module__ == "lmdb":  # the command line: "metadata write failed in STORE"
        return None
    return f"undocumented {type(exc).__name__}: {msg!r}"


def leftovers(store: Path) -> list[str]:
    """Files the committed metadata does not account for."""
    meta = Meta(store / "meta", read_only=True)
    try:
        with meta.begin() as txn:
            wal_id = int(meta.get_meta(txn, "wal_id"))
            ckpt = meta.get_meta(txn, "ckpt_file")
            catalog = {int.from_bytes(k, "big"): unpack(v) for k, v in meta.items(txn, "files")}
    finally:
        meta.close()
    out = [p.name for p in store.iterdir() if p.name.startswith("tmp-ingest-")]
    for p in (store / "meta").iterdir():
        if p.suffix == ".tmp" or (p.suffix == ".ckpt" and (ckpt is None or p.name != ckpt["name"])):
            out.append(f"meta/{p.name}")
    # the current log, and its staging ring (docs/format/ring.md, G5: a writer that stopped
    # keeps it, as it may hold acknowledged records the next open copies into the log)
    current = (wal_name(wal_id), wal_name(wal_id)[:-len(".log")] + ".ring")
    out += [f"wal/{p.name}" for p in (store / "wal").iterdir() if p.name not in current]
    for p in (store / "data").iterdir():
        parsed = parse_file_name(p.name)
        rec = catalog.get(parsed[1]) if parsed else None
        if rec is None:
            out.append(f"data/{p.name} (not in the catalog)")
        elif p.stat().st_size > int(rec["size"]):
            out.append(f"data/{p.name} ({p.stat().st_size - int(rec['size'])} unpublished bytes)")
    return out


class Reader:
    """A read-only open in another process: one per loop, asked to open each store anew."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.safety.fault_loop_reader"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     cwd=ROOT, env=env)

    def state(self, store: Path) -> State:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"store": str(store)}) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        if "error" in reply:
            raise RuntimeError(f"read-only process: {reply['error']}")
        return {int(u): [tuple(e) for e in evs] for u, evs in reply["users"].items()}

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


# ---------------------------------------------------------------------- one case
def clean_counts(sc: Scenario, workdir: Path) -> dict[str, int]:
    store = workdir / f"clean-{sc.name.replace(' ', '_')}"
    shutil.copytree(sc.template, store)
    v = None if sc.spec.opens else SeqVault.open(store, **sc.spec.settings)
    try:
        with faults.counting() as rec:
            if v is None:
                v = SeqVault.open(store)
            for step in sc.steps:
                step.run(v)
    finally:
        if v is not None:
            v.close()
        shutil.rmtree(store)
    return dict(rec.calls)


def run_case(sc: Scenario, op: str, nth: int, err: int, workdir: Path, reader: Reader,
             counts: Counts, *, sticky: bool = False, double: bool = False) -> list[str]:
    """Arm the `nth` call of `op` with `err` (and every later call with `sticky`: a disk that
    stays full; with `double`, every truncate fails too, so the rollback of what the
    operation wrote fails as well), run the scenario, check; returns the problems found."""
    label = (f"[{sc.name} / {op} #{nth}{'+' if sticky else ''}{' +truncates' if double else ''}"
             f" / {errno.errorcode[err]}]")
    store = workdir / f"case-{counts.cases}"
    shutil.copytree(sc.template, store)
    problems: list[str] = []
    counts.cases += 1
    counts.ops[sc.name] = counts.ops.get(sc.name, 0) + 1
    v = None if sc.spec.opens else SeqVault.open(store, **sc.spec.settings)
    done, failure = 0, None
    always = ("ftruncate",) if double and op != "ftruncate" else ()
    with faults.armed(op, nth, err, sticky=sticky, always=always) as rec:
        try:
            if v is None:
                v = SeqVault.open(store)
            for step in sc.steps:
                step.run(v)
                done += 1
        except Exception as exc:  # noqa: BLE001 - checked below
            failure = exc
    counts.injected += len(rec.injected)
    counts.not_reached += not rec.injected
    for inj in rec.injected:
        counts.sites.add((inj.op, inj.site))
        counts.paths.add((inj.op, inj.chain))
    where = f"{label} at {rec.injected[0].site}" if rec.injected else label
    if failure is not None:
        counts.raised[type(failure).__name__] = counts.raised.get(type(failure).__name__, 0) + 1
        if not rec.injected:
            problems.append(f"{where}: failed with nothing injected: {failure!r}")
        elif (p := check_error(failure, store, err)) is not None:
            problems.append(f"{where}: {p}")
    elif rec.injected and (v is None or v.closed):
        problems.append(f"{where}: the injected error was swallowed: the operation succeeded")
    # (an operation whose own commit was durable may succeed, as long as the writer stops:
    # a failed index checkpoint after the commit; checked below)
    allowed = [sc.states[done]] + ([sc.states[done + 1]] if failure is not None else [])
    if rec.injected:
        # A rollback that cannot truncate leaves its unpublished bytes to the next writer open
        # (repair cuts them; the reopen below checks the result).
        problems += [f"{where}: left behind {x}" for x in leftovers(store)
                     # every truncate failing (`double`, or ftruncate itself armed sticky):
                     # the rollback cannot cut; the next writer open does (checked below)
                     if x not in sc.before and not ((double or (sticky and op == "ftruncate"))
                                                    and "unpublished" in x)]
    if v is None:  # the open failed: there is no writer to refuse or close
        pass
    elif rec.injected and not v.closed:
        # reads keep working on the stopped writer, and show a whole state
        if (p := compare(read_state(v), allowed, counts, f"{where} the stopped writer")):
            problems.append(p)
        try:
            v.append(1, one_event(1, 0))
            problems.append(f"{where}: the writer accepted an append after the failure")
        except WriterFailed:
            pass
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{where}: an append after the failure raised {exc!r}, "
                            "not WriterFailed")
    try:
        if v is not None:
            v.close()
    except Exception as exc:  # noqa: BLE001
        problems.append(f"{where}: close() after the failure raised {exc!r}")
    try:
        with SeqVault.open(store) as w:
            counts.reopens += 1
            if (p := compare(read_state(w), allowed, counts, f"{where} writer reopen")):
                problems.append(p)
            if (p := compare(reader.state(store), allowed, counts,
                             f"{where} read-only process")):
                problems.append(p)
            counts.reopens += 1
            report = w.verify()
            if not report["ok"]:
                problems.append(f"{where}: verify after reopen: {report}")
            w.append(1, one_event(2_000, 10**9))  # the reopened writer works
    except Exception as exc:  # noqa: BLE001
        problems.append(f"{where}: reopen failed: {exc!r}")
    shutil.rmtree(store, ignore_errors=True)
    counts.problems += problems
    return problems


def run_loop(workdir: Path, *, names: Iterable[str] | None = None,
             errnos: Callable[[int], Iterable[int]] = lambda n: ERRNOS,
             sticky: Iterable[bool] = (False,), double: bool = False,
             progress: bool = False) -> Counts:
    """The loop over scenarios × operation kinds × N × errno (× one-shot/sticky). `errnos(n)`
    picks the errnos for the Nth call; `double` adds a pass where every truncate fails too."""
    counts = Counts()
    reader = Reader()
    try:
        for sc in scenarios(workdir):
            if names is not None and sc.name not in names:
                continue
            calls = clean_counts(sc, workdir)
            for op, total in sorted(calls.items()):
                for nth in range(1, total + 1):
                    for err in errnos(nth):
                        modes = [(st, False) for st in sticky] + [(False, True)] * double
                        for st, dbl in modes:
                            found = run_case(sc, op, nth, err, workdir, reader, counts,
                                             sticky=st, double=dbl)
                            if progress:
                                mode = "sticky" if st else "double" if dbl else ""
                                print(f"{sc.name:22} {op:14} {nth:3}/{total:<3} "
                                      f"{errno.errorcode[err]:6} {mode:6} "
                                      f"{'ok' if not found else found}", flush=True)
    finally:
        reader.close()
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--all", action="store_true", help="every N with both EIO and ENOSPC, "
                    "failing that call only, every later one too, and that call with every "
                    "truncate (default: the sample of the default test run: each call once, "
                    "EIO and ENOSPC alternating)")
    ap.add_argument("--only", action="append", help="a scenario name (repeatable)")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--json", type=Path, help="write the summary here too")
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fault-loop-") as d:
        counts = run_loop(Path(d), names=args.only, progress=args.verbose,
                          errnos=(lambda n: ERRNOS) if args.all else sample_errnos,
                          sticky=(False, True) if args.all else (False,), double=args.all)
    summary = counts.summary()
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    summary["sweep"] = "all" if args.all else "sample"
    text = json.dumps(summary, indent=2)
    print(text)
    for p in counts.problems:
        print("PROBLEM", p)
    if args.json:
        args.json.write_text(text + "\n")
    sys.exit(1 if counts.problems else 0)


def sample_errnos(nth: int) -> tuple[int, ...]:
    """The default run: every call of every kind once, alternating EIO and ENOSPC."""
    return (ERRNOS[nth % 2],)


if __name__ == "__main__":
    main()
