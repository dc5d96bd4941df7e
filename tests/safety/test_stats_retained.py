"""`stats` never counts what reads can't return (issue 14, finding 3): events that aged out of
`max_age`, or fell behind `max_events`, after they were accepted are `expired_events` until the
merge that drops them, not `events`; a user none of whose events a read returns is not a user.
Every figure is checked against what reads return, user by user."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from seqvault import Schema, SeqVault
from seqvault import schema as schema_mod

DAY_S = 86_400


def schema(max_events: int | None) -> Schema:
    retention: dict[str, object] = {"max_age": "10d"}
    if max_events is not None:
        retention["max_events"] = max_events
    return Schema.from_dict({"user": {"name": "uid", "type": "int64"},
                             "time": {"name": "ts", "unit": "s"},
                             "columns": [{"name": "item", "type": "int64", "default": 0}],
                             "retention": retention})


def expected(v: SeqVault, users: list[int]) -> tuple[int, int]:
    counts = [len(v.read(u)) for u in users]
    return sum(1 for c in counts if c), sum(counts)


def check(v: SeqVault, users: list[int], held: int) -> dict:
    s = v.stats()
    n_users, n_events = expected(v, users)
    assert (s["users"], s["events"]) == (n_users, n_events)
    assert s["expired_events"] == held - n_events
    return s


@pytest.mark.parametrize("max_events", [None, 7])
def test_stats_count_only_what_reads_return_as_events_age_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_events: int | None) -> None:
    rng = np.random.default_rng(5)
    start = time.time()
    clock = {"now": start}
    monkeypatch.setattr(schema_mod.time, "time", lambda: clock["now"])
    users = list(range(40))
    held = 0
    with SeqVault.open(tmp_path / "s", schema=schema(max_events)) as v:
        # Events spread over the last 9 days: all inside the 10-day window when accepted.
        for u in users:
            n = int(rng.integers(1, 25))
            ts = np.sort(rng.integers(int(start) - 9 * DAY_S, int(start), n))
            v.append(u, {"ts": ts, "item": np.arange(n)})
            held += n
        s = check(v, users, held)
        assert s["expired_events"] == (0 if max_events is None else s["expired_events"])
        v.flush()  # sealed: per-user segments, some straddling the cutoff below
        for u in users[:10]:  # and some in the memtable too
            v.append(u, {"ts": [int(start) - DAY_S], "item": [1]})
            held += 1
        # Five days later, about half of every history is older than max_age.
        clock["now"] = start + 5 * DAY_S
        s = check(v, users, held)
        assert s["expired_events"] > 0
        # Twenty days later nothing is readable: no events, no users.
        clock["now"] = start + 20 * DAY_S
        s = check(v, users, held)
        assert s["events"] == 0 and s["users"] == 0 and s["expired_events"] == held
        clock["now"] = start + 5 * DAY_S
        v.flush()
        v.merge()  # physically drops what aged out: nothing expired is held any more
        s = v.stats()
        assert s["expired_events"] == 0
        assert (s["users"], s["events"]) == expected(v, users)


def test_stats_of_a_read_only_process_match_the_writer(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    start = time.time()
    clock = {"now": start}
    monkeypatch.setattr(schema_mod.time, "time", lambda: clock["now"])
    with SeqVault.open(tmp_path / "s", schema=schema(None)) as v:
        v.append(1, {"ts": [int(start) - 8 * DAY_S, int(start) - DAY_S], "item": [1, 2]})
        v.flush()
        v.append(2, {"ts": [int(start) - 8 * DAY_S], "item": [3]})
        clock["now"] = start + 3 * DAY_S
        w = v.stats()
        with SeqVault.open(tmp_path / "s", read_only=True) as r:
            s = r.stats()
    assert (w["users"], w["events"], w["expired_events"]) == (1, 1, 2)
    assert (s["users"], s["events"], s["expired_events"]) == (1, 1, 2)
