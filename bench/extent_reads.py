"""Thread-CPU per read of the last 100 / 1,000 events of users with many extents (the
real-time layout between merges: one 2,048-event partial seal per 2,048 events appended),
with the extent walk (`reads.newest_plan`, `reads.choose_plan`) on and off (off: an
`Extent` and a `Source` per extent, then `newest_sources` / `choose_sources`), beside RocksDB key-per-event in the
same process. The measurement behind docs/design/realtime.md ("Walking the extent list").

    .venv/bin/python -m bench.extent_reads    # users of 4 / 16 / 64 × 2,048 events
    .venv/bin/python -m bench.extent_reads --rounds 7 --json out.json

Appends of 200 events, users interleaved, `tail_events=2,048`; the memtable's cap flushes add
small segments, so the users hold more extents than 2,048-event seals (the count read back
from the index is printed). Histories include bench.workload's late events, so extents
overlap in time and most reads take the general choice (`choose_plan`), not the short plan.
Each figure is the minimum over runs of `reps` reads cycling over the users (the least
disturbed run on a shared machine), with the maximum as the spread; the variants are
interleaved twice, so a noisy stretch hits each of them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from bench import workload as wl
from bench.native_reads import _cpu_runs

EXTENTS = (4, 16, 64)
LASTS = (100, 1_000)


def _one(schema, n_ext: int, n_users: int, rounds: int, reps: int) -> dict[str, list[float]]:
    from bench.rocks_baselines import RocksEventStore
    from seqvault import SeqVault, reads

    events = n_ext * 2_048 + 50
    hist = [(11_000 + u, wl.user_history(wl.WorkloadConfig(), 11_000 + u, events))
            for u in range(n_users)]
    users = [u for u, _ in hist]
    tmp = Path(tempfile.mkdtemp(prefix="sv-extents-"))
    walk, choose = reads.newest_plan, reads.choose_plan

    def objects(index, h, tail, last, before, since):  # the path before the walk
        return reads.choose_sources(reads.sources_of(index.extents_of(h), tail), last, before,
                                    since)

    def walk_on(on: bool) -> None:
        reads.newest_plan = walk if on else (lambda *a: None)  # type: ignore[assignment]
        reads.choose_plan = choose if on else objects  # type: ignore[assignment]

    try:
        v = SeqVault.open(tmp / "sv", schema=schema, durability="none", tail_events=2_048)
        for start in range(0, events, 200):
            for u, cols in hist:
                v.append(u, {c: cols[c][start:start + 200] for c in wl.EVENT_COLUMNS})
        idx = v.manifest.index
        from seqvault.segment import key_bytes

        got_ext = [len(idx.extents_of(idx.slot_of(key_bytes(u)[1]))) for u in users]
        rocks = RocksEventStore(str(tmp / "re"), "none")
        rocks.load(iter(hist))
        rocks.quiesce()
        figs: dict[str, list[float]] = {"extents": [float(min(got_ext))]}
        for _ in range(2):
            for last in LASTS:
                walk_on(True)
                figs.setdefault(f"walk_{last}", []).extend(
                    _cpu_runs(lambda u, n=last: v.read(u, last=n), users, rounds, reps))
                walk_on(False)
                figs.setdefault(f"nowalk_{last}", []).extend(
                    _cpu_runs(lambda u, n=last: v.read(u, last=n), users, rounds, reps))
                walk_on(True)
                figs.setdefault(f"rocks_{last}", []).extend(
                    _cpu_runs(lambda u, n=last: rocks.read_last(u, n), users, rounds, reps))
        v.close()
        rocks.close()
        return figs
    finally:
        walk_on(True)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--reps", type=int, default=150)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    from seqvault import Schema

    schema = Schema.from_arrow(wl.ARROW_SCHEMA, user_column=wl.USER_COLUMN,
                               time_column=wl.TIME_COLUMN)
    out: dict[str, dict[str, float]] = {}
    print("thread CPU µs per read, min [max] of runs; ratio = SeqVault ÷ RocksDB key/event")
    for n_ext in EXTENTS:
        figs = _one(schema, n_ext, args.users, args.rounds, args.reps)
        row = {f"{k}_us": min(x) for k, x in figs.items()}
        row.update({f"{k}_us_max": max(x) for k, x in figs.items()})
        out[str(n_ext)] = row
        for last in LASTS:
            w, o, r = row[f"walk_{last}_us"], row[f"nowalk_{last}_us"], row[f"rocks_{last}_us"]
            print(f"  {int(figs['extents'][0]):>3} extents, last {last:>5}: walk {w:.1f} "
                  f"[{row[f'walk_{last}_us_max']:.1f}]  no walk {o:.1f} "
                  f"[{row[f'nowalk_{last}_us_max']:.1f}]  key/event {r:.1f} "
                  f"[{row[f'rocks_{last}_us_max']:.1f}]  ratio walk {w / r:.2f}x, "
                  f"no walk {o / r:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
