"""The core state machine plus lifetime merge, reclamation and retention (issue 3).

Every rule of tests/engine/test_state_machine.py still runs (append, append_batch, flush, reopen,
reads with every combination of last/before/since/columns, read-only views); this machine adds
`merge` (all users or some), `reclaim`, tightening `max_events` retention, and a long-lived
read-only view that must equal the model after `refresh()` even though merge rewrote and
deleted the files of its earlier snapshots. The model applies retention at read time.
"""

from __future__ import annotations

import json

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

from seqvault import Schema, SeqVault

from .test_state_machine import COLUMNS, SCHEMA, USERS, StoreModel


class MergeModel(StoreModel):
    def __init__(self) -> None:
        super().__init__()
        self.vault.close()
        self.vault = SeqVault.open(self.dir / "s", durability="none", memtable_events=40,
                                   tail_events=25, lifetime_segment_events=6,
                                   max_file_bytes=3_000, reclaim_ratio=0.6)
        self.keep: int | None = None
        self.reader = SeqVault.open(self.dir / "s", read_only=True, refresh_interval=3600)

    def teardown(self) -> None:
        self.reader.close()
        super().teardown()

    def expected(self, user, last, before, since, columns):
        events = self.model.get(user, [])
        order = sorted(range(len(events)), key=lambda i: events[i][0])  # stable
        rows = [events[i] for i in order]
        if self.keep is not None:
            rows = rows[-self.keep:]  # retention: the newest max_events, whatever is asked
        rows = [r for r in rows if (since is None or r[0] >= since)
                and (before is None or r[0] < before)]
        if last is not None:
            rows = rows[-last:]
        names = columns or COLUMNS
        return {n: [r[COLUMNS.index(n)] for r in rows] for n in names}

    @rule(reclaim=st.booleans())
    def merge(self, reclaim):
        summary = self.vault.merge(reclaim=reclaim)
        json.dumps(summary)
        assert summary["events_in"] >= summary["events_out"]

    @rule(users=st.lists(USERS, max_size=3))
    def merge_some(self, users):
        self.vault.merge(users=users, reclaim=False)

    @rule()
    def reclaim(self):
        self.vault.merge(users=[], reclaim=True)  # reclamation only: no user asked for

    @rule(k=st.integers(3, 30))
    def tighten_retention(self, k):
        if self.keep is not None and k >= self.keep:
            return  # events merge already dropped do not come back: only tighten
        d = json.loads(self.vault.schema.to_json())
        d["retention"] = {"max_events": k}
        self.vault.evolve_schema(Schema.from_dict(d))
        self.keep = k

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def long_lived_reader_after_refresh(self, data):
        user = data.draw(st.sampled_from(sorted(self.model)))
        self.reader.refresh()
        self.check(self.reader, user, None, None, None, None)
        self.check(self.reader, user, 3, None, None, None)

    @invariant()
    def counts_agree(self):
        st_ = self.vault.stats()
        visible = sum(len(v) if self.keep is None else min(len(v), self.keep)
                      for v in self.model.values())
        total = sum(len(v) for v in self.model.values())
        # `events` is what reads return; what retention hides until a merge drops it is
        # `expired_events` (seqvault/retained.py)
        assert st_["events"] == visible
        # deletes remove from the model events that retention may already have counted
        assert st_["events"] + st_["expired_events"] + st_["retention_dropped_events"] \
            + st_["deleted_events"] == total + self.removed
        # files on disk are exactly the catalog (nothing leaked, nothing missing)
        names = {p.name for p in (self.dir / "s" / "data").iterdir()}
        cat = {f"{i.kind}-{fid:08d}.svx" for fid, i in self.vault.catalog.items()}
        assert names == cat or names <= cat


assert SCHEMA.retention.max_events is None
MergeModel.TestCase.settings = settings(max_examples=30, stateful_step_count=35, deadline=None)
TestMergeModel = MergeModel.TestCase
