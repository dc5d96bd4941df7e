"""A Hypothesis state machine: the store against a plain dict-of-lists model.

Rules: append and append_batch (random users, random timestamp order, duplicates and ties),
read with every combination of last/before/since/columns, delete (whole users and `before=`
cuts), flush, close and reopen (with and without flushing), read-only reopen. Every read must equal the model.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from seqvault import Schema, SeqVault
from seqvault.faults import weak_hash

# Not the bundled schema: a minimal one (an int, a string, a float column) keeps the model and
# Hypothesis's shrunk examples small.
SCHEMA = Schema.from_dict({
    "columns": [
        {"name": "item", "type": "int64", "default": 0},
        {"name": "act", "type": "string", "default": "v"},
        {"name": "w", "type": "float32", "default": 0.0},
    ],
})
COLUMNS = ["ts", "item", "act", "w"]
USERS = st.integers(-3, 5)
TS = st.integers(0, 40)  # a small range: many ties
EVENT = st.tuples(TS, st.integers(-(2**40), 2**40), st.sampled_from(["v", "c", "l"]),
                  st.floats(-1e6, 1e6, width=32))


class StoreModel(RuleBasedStateMachine):
    """The model keeps each user's events in arrival order; reads stable-sort by ts."""

    CAPS: dict[str, int] = {"memtable_events": 40, "tail_events": 25}

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="sv-sm-"))
        self.vault = SeqVault.open(self.dir / "s", schema=SCHEMA, durability="none",
                                   **self.CAPS)
        self.model: dict[int, list[tuple[Any, ...]]] = {}
        self.removed = 0  # model events removed by deletes

    def teardown(self) -> None:
        self.vault.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def _cols(events):
        return {"ts": [e[0] for e in events], "item": [e[1] for e in events],
                "act": [e[2] for e in events], "w": np.array([e[3] for e in events], np.float32)}

    @rule(user=USERS, events=st.lists(EVENT, min_size=1, max_size=12))
    def append(self, user, events):
        self.vault.append(user, self._cols(events))
        self.model.setdefault(user, []).extend(events)

    @rule(rows=st.lists(st.tuples(USERS, EVENT), min_size=1, max_size=20))
    def append_batch(self, rows):
        batch = {"user_id": [u for u, _ in rows], **self._cols([e for _, e in rows])}
        self.vault.append_batch(batch)
        for u, e in rows:
            self.model.setdefault(u, []).append(e)

    @rule(user=USERS, before=st.none() | TS)
    def delete(self, user, before):
        events = self.model.get(user, [])
        keep = [e for e in events if before is not None and e[0] >= before]
        n = self.vault.delete(user, before=before)
        gone = len(events) - len(keep)
        # retention (the merge model) may already have dropped some of them
        assert n == gone if getattr(self, "keep", None) is None else n <= gone
        self.removed += gone
        self.model[user] = keep

    @rule()
    def flush(self):
        self.vault.flush()

    @rule(flush=st.booleans())
    def reopen(self, flush):
        self.vault.close(flush=flush)
        self.vault = SeqVault.open(self.dir / "s")

    def expected(self, user, last, before, since, columns):
        events = self.model.get(user, [])
        order = sorted(range(len(events)), key=lambda i: events[i][0])  # sorted() is stable
        rows = [events[i] for i in order]
        rows = [r for r in rows if (since is None or r[0] >= since)
                and (before is None or r[0] < before)]
        if last is not None:
            rows = rows[-last:] if last else []
        names = columns or COLUMNS
        return {n: [r[COLUMNS.index(n)] for r in rows] for n in names}

    def check(self, vault, user, last, before, since, columns):
        got = vault.read(user, last=last, before=before, since=since, columns=columns)
        want = self.expected(user, last, before, since, columns)
        assert list(got) == list(want)
        for name, values in want.items():
            arr = got[name]
            if name == "w":
                assert arr.tolist() == np.array(values, dtype=np.float32).tolist()
            else:
                assert arr.tolist() == values, (name, user, last, before, since)
        assert len(got) == len(want[next(iter(want))])

    @rule(user=USERS, last=st.none() | st.integers(1, 30), before=st.none() | TS,
          since=st.none() | TS,
          columns=st.none() | st.lists(st.sampled_from(COLUMNS), min_size=1, unique=True))
    def read(self, user, last, before, since, columns):
        self.check(self.vault, user, last, before, since, columns)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def read_only_view_agrees(self, data):
        user = data.draw(st.sampled_from(sorted(self.model)))
        with SeqVault.open(self.dir / "s", read_only=True) as r:
            self.check(r, user, None, None, None, None)

    @invariant()
    def counts_agree(self):
        assert self.vault.stats()["events"] == sum(len(v) for v in self.model.values())


StoreModel.TestCase.settings = settings(max_examples=35, stateful_step_count=30, deadline=None)
TestStoreModel = StoreModel.TestCase


class ByteCapStoreModel(StoreModel):
    """The same rules with the memtable capped in bytes (`memtable_bytes`, 8 KiB: a call of a
    few events costs ~2 KB of memtable) instead of events: background flushes start at the
    byte cap, partial seals at 25 events keep their rows counted until then."""

    CAPS = {"memtable_events": 1_000_000, "memtable_bytes": 1 << 13, "tail_events": 25}

    @invariant()
    def the_memtable_stays_near_its_cap(self):
        # two memtables at most while a flush runs, each stopped within a call of the cap
        v = self.vault
        with v.lock:
            held = v.mem.nbytes() + (v.frozen.nbytes() if v.frozen is not None else 0)
        assert held <= 2 * ((1 << 13) + 4096)


ByteCapStoreModel.TestCase.settings = settings(max_examples=20, stateful_step_count=40,
                                               deadline=None)
TestByteCapStoreModel = ByteCapStoreModel.TestCase


class WeakHashStoreModel(StoreModel):
    """The same rules, plus merge, while slot hashes keep 4 bits (`hash:weak`): most of the
    nine users collide, and their alternates collide too (docs/design/safety.md, "Hash
    collisions")."""

    def __init__(self) -> None:
        self.weak = weak_hash(4)
        self.weak.__enter__()
        super().__init__()

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            self.weak.__exit__(None, None, None)

    @rule()
    def merge(self):
        self.vault.merge()


WeakHashStoreModel.TestCase.settings = settings(max_examples=15, stateful_step_count=30,
                                                deadline=None)
TestWeakHashStoreModel = WeakHashStoreModel.TestCase
