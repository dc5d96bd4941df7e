"""Partial seals (docs/design/realtime.md; docs/format/manifest.md, "sealed"): a user's long
tail is sealed on its own, without a log rotation; the commit's "sealed through" record makes
every replay (writer recovery, readers) skip exactly that user's sealed events."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seqvault import Schema, SeqVault
from seqvault.faults import FAULT_ENV, SEAL_FAULT_POINTS

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = {"columns": [{"name": "item", "type": "int64", "default": 0},
                      {"name": "act", "type": "string", "default": "v"}]}


def ev(start: int, n: int, act: str = "v") -> dict:
    return {"ts": np.arange(start, start + n), "item": np.arange(start, start + n) * 10,
            "act": [act] * n}


def items(v: SeqVault, user: int) -> list[int]:
    return v.read(user).columns["item"].tolist()


def test_a_long_tail_is_sealed_alone_and_the_log_keeps_the_rest(tmp_path):
    store = tmp_path / "s"
    with SeqVault.open(store, schema=Schema.from_dict(SCHEMA), tail_events=50,
                       durability="sync") as v:
        v.append(1, ev(0, 30))
        wal_before = v.wal_id
        v.append(2, ev(0, 40))
        v.append(2, ev(40, 20))  # user 2 reaches 60 >= 50: sealed on its own
        st = v.stats()
        assert st["tail_seals"] == 1 and st["tail_sealed_events"] == 60
        assert v.wal_id == wal_before  # no log rotation
        assert st["memtable_events"] == 30 and st["sealed_events"] == 60
        v.append(2, ev(60, 5))
        want1, want2 = items(v, 1), items(v, 2)
        assert want2 == [i * 10 for i in range(65)]
        v.close(flush=False)  # the log still holds user 2's sealed records
    with SeqVault.open(store) as v:  # recovery skips them: no duplicates
        assert v.stats()["recovered_events"] == 35
        assert items(v, 1) == want1 and items(v, 2) == want2


def test_readers_drop_sealed_events_and_keep_newer_ones(tmp_path):
    store = tmp_path / "s"
    with SeqVault.open(store, schema=Schema.from_dict(SCHEMA), tail_events=50) as w:
        with SeqVault.open(store, read_only=True, refresh_interval=3600) as r:
            w.append(2, ev(0, 40))
            r.refresh()
            assert items(r, 2) == items(w, 2)
            w.append(2, ev(40, 20))  # sealed
            w.append(2, ev(60, 5))  # after the seal: in the log only
            r.refresh()
            assert items(r, 2) == items(w, 2) == [i * 10 for i in range(65)]
            assert r.stats()["memtable_events"] == 5
        with SeqVault.open(store, read_only=True) as fresh:
            assert items(fresh, 2) == [i * 10 for i in range(65)]


def test_string_codes_agree_when_sealed_records_are_skipped(tmp_path):
    # Codes are assigned in log order; a replay that skipped the sealed record without
    # learning its strings would give later strings different codes (a reader opened after
    # the seal, and a reader that was open before it).
    store = tmp_path / "s"
    with SeqVault.open(store, schema=Schema.from_dict(SCHEMA), tail_events=10) as w:
        early = SeqVault.open(store, read_only=True, refresh_interval=3600)
        w.append(1, ev(0, 12, act="first"))  # sealed at once; "first" gets code 0
        w.append(1, ev(12, 3, act="second"))  # stays in the log; "second" gets code 1
        w.append(2, ev(0, 2, act="third"))
        for reader in (early, SeqVault.open(store, read_only=True)):
            reader.refresh()
            for u in (1, 2):
                assert reader.read(u).columns["act"].tolist() == w.read(u).columns["act"].tolist()
            reader.close()


CHILD = r"""
import json, sys
import numpy as np
from seqvault import Schema, SeqVault
schema = Schema.from_dict({schema!r})
v = SeqVault.open(sys.argv[1], schema=schema, durability="sync", tail_events=25)
for r in range(40):
    for u in range(3):
        n = 7 + u
        v.append(u, {{"ts": np.arange(n) + 100 * r, "item": (u << 32) + r * 100 + np.arange(n),
                     "act": ["a%d" % (r % 5)] * n}})
        sys.stdout.write(json.dumps([u, r]) + "\n"); sys.stdout.flush()
v.close()
"""


@pytest.mark.parametrize("fault", [*SEAL_FAULT_POINTS, "seal:after_write@3",
                                   "seal:after_commit@4"])
def test_sigkill_during_a_partial_seal_loses_and_duplicates_nothing(tmp_path, fault):
    store = tmp_path / "s"
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{FAULT_ENV: fault})
    proc = subprocess.run([sys.executable, "-c", CHILD.format(schema=SCHEMA), str(store)],
                          capture_output=True, env=env, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    acked = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert acked, "the child was killed before any acknowledged append"
    with SeqVault.open(store) as v:
        for u in range(3):
            want = [(u << 32) + r * 100 + i for uu, r in acked if uu == u for i in range(7 + u)]
            got = items(v, u)
            # every acknowledged event once; the unacknowledged call in flight may be there too
            assert got[:len(want)] == want and len(got) - len(want) in (0, 7 + u), (u, fault)
        assert v.verify()["ok"]


def test_a_format_2_store_with_keyed_sealed_records_reads_right_and_migrates(tmp_path):
    # Format 2 wrote "sealed through" values as [through, user key]; format 3 writes [through]
    # (docs/format/manifest.md, "2 → 3"). A format-2 store must replay exactly as before.
    from seqvault.manifest import STORE_FORMAT_VERSION
    from seqvault.meta import Meta, pack, unpack

    store = tmp_path / "s"
    with SeqVault.open(store, schema=Schema.from_dict(SCHEMA), tail_events=50) as v:
        v.append(1, ev(0, 30))
        v.append(2, ev(0, 60))  # sealed on its own: a sealed record, the log keeps it
        v.append(2, ev(60, 5))
        want = {1: items(v, 1), 2: items(v, 2)}
        v.close(flush=False)
    meta = Meta(store / "meta", read_only=False)
    with meta.begin(write=True) as txn:
        recs = list(meta.items(txn, "sealed"))
        assert len(recs) == 1 and len(unpack(recs[0][1])) == 1  # no key in LMDB
        for k, val in recs:
            meta.put(txn, "sealed", bytes(k), pack([unpack(val)[0][0], 2]))  # [[through, tag]]
        meta.set_meta(txn, "format_version", 2)
    meta.close()
    with SeqVault.open(store, read_only=True) as r:
        assert {u: items(r, u) for u in (1, 2)} == want
    with SeqVault.open(store) as w:
        assert w.manifest.format_version == STORE_FORMAT_VERSION == 5
        assert {u: items(w, u) for u in (1, 2)} == want


def test_late_events_are_sealed_apart_so_last_n_reads_stop_early(tmp_path):
    # A seal whose tail holds events older than the user's newest sealed one writes them as a
    # segment of their own: the in-order segment then starts after everything older, and a
    # "last N" read chooses it alone (docs/design/realtime.md).
    from seqvault.reads import choose_sources, sources_of

    with SeqVault.open(tmp_path / "s", schema=Schema.from_dict(SCHEMA), tail_events=50) as v:
        v.append(1, ev(1_000, 50))  # sealed: ts 1000..1049
        late = ev(500, 3)  # older than everything sealed
        v.append(1, {k: [*late[k], *ev(2_000, 47)[k]] for k in late})  # 50: sealed again
        ext = v.index.extents_of(v_hash(1))
        assert [(e.min_ts, e.max_ts, e.count) for e in ext] == [
            (2_000, 2_046, 47), (500, 502, 3), (1_000, 1_049, 50)]
        chosen = choose_sources(sources_of(ext, None), 40, None, None)
        assert [(s.min_ts, s.count) for s in chosen] == [(2_000, 47)]
        got = v.read(1).columns["ts"].tolist()
        assert got == sorted([*range(1_000, 1_050), 500, 501, 502, *range(2_000, 2_047)])
        assert v.read(1, last=40).columns["ts"].tolist() == list(range(2_007, 2_047))


def v_hash(key: int) -> int:
    from seqvault.index import user_hash
    from seqvault.segment import key_bytes

    return user_hash(key_bytes(key)[1])


@pytest.mark.parametrize("durability", ["batch", "none"])
def test_R1_a_seal_commits_only_once_the_log_is_durable_through_its_offset(tmp_path,
                                                                         durability):
    """The log's fsync runs while the seal encodes (`WalWriter.sync_soon`); whatever the
    flusher managed by then, the commit that records "sealed through E" comes after the log
    is durable through E (rule R1 of docs/format/wal.md). A batch interval of 10 s keeps
    the flusher's own timer out of it."""
    store = tmp_path / "s"
    with SeqVault.open(store, schema=Schema.from_dict(SCHEMA), tail_events=50,
                       durability=durability, batch_interval=10.0) as v:
        seen: list[tuple[int, int]] = []
        commit = v.manifest.commit

        def checked(edit):
            for through in edit.sealed.values():
                seen.append((through, v.wal.synced.end))
            return commit(edit)

        v.manifest.commit = checked
        v.append(1, ev(0, 30))
        for start in range(0, 200, 20):
            v.append(2, ev(start, 20))
        assert v.stats()["tail_seals"] == 3
        assert len(seen) == 3
        assert all(synced >= through for through, synced in seen), seen
        want = items(v, 2)
        v.close(flush=False)
    with SeqVault.open(store) as v:
        assert items(v, 2) == want and len(want) == 200


def test_sync_soon_wakes_the_batch_flusher_before_its_interval(tmp_path):
    """`sync_soon` makes the batch flusher fsync now, not after `batch_interval`, and the
    caller does not wait for it (the seal encodes meanwhile)."""
    import time

    with SeqVault.open(tmp_path / "s", schema=Schema.from_dict(SCHEMA),
                       durability="batch", batch_interval=10.0) as v:
        v.append(1, ev(0, 3))
        wal = v.wal
        time.sleep(0.05)  # the flusher is now in its 10 s wait
        end = wal.size
        assert wal.synced.end < end
        wal.sync_soon()
        deadline = time.monotonic() + 5.0  # a liveness bound (half the interval), not a timing assert
        while wal.synced.end < end and time.monotonic() < deadline:
            time.sleep(0.001)
        assert wal.synced.end >= end
