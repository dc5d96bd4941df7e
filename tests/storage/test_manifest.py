"""The manifest: one commit path, checkpoint files, bounded metadata, format-1 migration
(docs/format/manifest.md, docs/format/index.md)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from seqvault import SeqVault, sample
from seqvault.manifest import STORE_FORMAT_VERSION
from seqvault.meta import Meta

from ..conftest import make_events

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _v1_store(tmp_path: Path) -> tuple[Path, dict]:
    """A store written by the format-1 code (commit 02022ef): flushes, a merge, a checkpoint
    held as one LMDB value, and unflushed events in its log."""
    with tarfile.open(FIXTURES / "store-v1.tar.gz") as tf:
        tf.extractall(tmp_path, filter="data")
    expect = json.loads((FIXTURES / "store-v1.expected.json").read_text())
    return tmp_path / "store-v1", expect


def _as_lists(seq) -> dict:
    return {k: v.tolist() for k, v in seq.columns.items()}


def _format_on_disk(store: Path) -> tuple[int, bool]:
    meta = Meta(store / "meta", read_only=True)
    try:
        with meta.begin() as txn:
            return (meta.get_meta(txn, "format_version"),
                    meta.get(txn, "ckpt", b"index") is not None)
    finally:
        meta.close()


def test_format_1_store_reads_as_it_is_then_a_writer_migrates_it(tmp_path):
    store, expect = _v1_store(tmp_path)
    with SeqVault.open(store, read_only=True) as r:
        assert {u: _as_lists(r.read(int(u))) for u in expect} == expect
    assert _format_on_disk(store) == (1, True)  # a reader changes nothing
    with SeqVault.open(store) as w:
        assert w.manifest.format_version == STORE_FORMAT_VERSION
        assert {u: _as_lists(w.read(int(u))) for u in expect} == expect
    assert _format_on_disk(store) == (STORE_FORMAT_VERSION, False)
    assert len(list((store / "meta").glob("index-*.ckpt"))) == 1
    with SeqVault.open(store, read_only=True) as r:
        assert {u: _as_lists(r.read(int(u))) for u in expect} == expect


def test_writer_open_removes_checkpoint_files_no_commit_refers_to(tmp_path, schema):
    store = tmp_path / "s"
    with SeqVault.open(store, schema=schema) as v:
        v.append(1, make_events(np.random.default_rng(1), 5))
        v.flush()
        v.checkpoint()
        live = v.manifest.ckpt_name
    (store / "meta" / "index-0000000000009999.ckpt").write_bytes(b"from a crash")
    (store / "meta" / "index-0000000000009999.tmp").write_bytes(b"half written")
    with SeqVault.open(store) as v:
        names = sorted(p.name for p in (store / "meta").iterdir() if "index-" in p.name)
        assert names == [v.manifest.ckpt_name] and live in names
        assert len(v.read(1)) == 5


def test_reader_follows_checkpoints_that_replace_each_other(tmp_path, schema):
    store = tmp_path / "s"
    rng = np.random.default_rng(2)
    with SeqVault.open(store, schema=schema, durability="none") as w:
        w.append(1, make_events(rng, 3))
        w.flush()
        with SeqVault.open(store, read_only=True, refresh_interval=3600) as r:
            for i in range(2, 6):
                w.append(i, make_events(rng, 3))
                w.flush()
                w.checkpoint()  # deletes the checkpoint file the reader loaded
                r.refresh()
                assert [len(r.read(u)) for u in range(1, i + 1)] == [3] * i


def test_a_commit_with_more_deltas_than_allowed_carries_a_checkpoint(tmp_path, schema):
    store = tmp_path / "s"
    rng = np.random.default_rng(3)
    with SeqVault.open(store, schema=schema, durability="none") as v:
        users = list(range(3_000))
        v.append_batch({"user_id": np.repeat(users, 2), **make_events(rng, 2 * len(users))})
        before = v.manifest.checkpoints
        v.flush()  # 3,000 delta records: far over the limit
        m = v.manifest
        assert m.checkpoints == before + 1 and m.ckpt_seq == m.seq
        assert m.deltas_since_ckpt == 0
        with m.meta.begin() as txn:
            assert list(m.meta.items(txn, "delta")) == []
        got = [len(v.read(u)) for u in (0, 1_500, 2_999)]
    assert got == [2, 2, 2]
    with SeqVault.open(store, read_only=True) as r:
        assert [len(r.read(u)) for u in (0, 1_500, 2_999)] == [2, 2, 2]


def test_the_delta_count_limit_grows_to_a_quarter_of_the_index(tmp_path, schema):
    """`checkpoint_deltas` is a floor: in an index of 4,000-5,500 users a checkpoint comes
    after a quarter of them in delta records, not after 100 (docs/format/index.md, "Delta
    records")."""
    store = tmp_path / "s"
    rng = np.random.default_rng(4)
    with SeqVault.open(store, schema=schema, durability="none", checkpoint_deltas=100) as v:
        users = np.arange(4_000)
        v.append_batch({"user_id": users, **make_events(rng, users.size)})
        v.flush()  # 4,000 deltas: a checkpoint
        m = v.manifest
        assert m.delta_count_limit() == 1_000
        assert m.delta_bytes <= m.delta_limit()
        before = m.checkpoints
        for i in range(5):  # 300 new users a commit: 300 ... 1,200 deltas, then 1,500
            part = 4_000 + users[i * 300:(i + 1) * 300]
            v.append_batch({"user_id": part, **make_events(rng, part.size)})
            v.flush()
            # the limit is a quarter of 4,300 ... 5,500 users: 1,075 ... 1,375
            assert m.checkpoints == before + (i == 4), i
        assert m.deltas_since_ckpt == 0
        got = [len(v.read(u)) for u in (0, 4_000, 5_499, 5_500)]
    assert got == [1, 1, 1, 0]
    with SeqVault.open(store, read_only=True) as r:
        assert [len(r.read(u)) for u in (0, 4_000, 5_499, 5_500)] == [1, 1, 1, 0]


def _index_lists(index) -> dict[int, list]:
    return {int(h): index.extents_of(int(h)) for h in index.u_hash[:len(index)].tolist()
            if index.extents_of(int(h))}


@pytest.mark.parametrize("bulk_from", [1, 10**9])
def test_deltas_replayed_in_bulk_give_the_writers_index(tmp_path, schema, monkeypatch,
                                                        bulk_from):
    """A reader's open and refresh replay thousands of delta records (users rewritten by
    several commits, some deleted) and end with the writer's index, whether the records are
    applied in whole-array steps or one by one (`manifest.DELTAS_IN_BULK`)."""
    from seqvault import manifest as manifest_mod

    monkeypatch.setattr(manifest_mod, "DELTAS_IN_BULK", bulk_from)
    monkeypatch.setattr(manifest_mod, "CKPT_MIN_DELTA_BYTES", 1 << 30)  # deltas only
    store = tmp_path / "s"
    rng = np.random.default_rng(5)
    with SeqVault.open(store, schema=schema, durability="none",
                       checkpoint_deltas=10**9) as v:
        early = SeqVault.open(store, read_only=True)
        try:
            for round_ in range(4):
                users = rng.choice(3_000, 1_200, replace=False)
                v.append_batch({"user_id": users, **make_events(rng, users.size)})
                v.flush()
                for u in users[:40].tolist():
                    v.delete(int(u)) if round_ % 2 else v.delete(int(u), before=2 * 10**12)
            assert v.manifest.deltas_since_ckpt > 3_000  # no checkpoint since the first
            want = _index_lists(v.manifest.index)
            with SeqVault.open(store, read_only=True) as fresh:
                assert _index_lists(fresh.manifest.index) == want
            early.refresh()
            assert _index_lists(early.manifest.index) == want
        finally:
            early.close()


def test_metadata_stays_within_twice_its_live_content(tmp_path):
    """Many small appends, flushes and merges (what made meta/ 40x its live content): LMDB's
    file plus the checkpoint stay within 2x the live bytes (keys, values, checkpoint).
    lock.mdb is left out: a fixed-size reader table (64 KiB), not data."""
    store = tmp_path / "s"
    rng = np.random.default_rng(4)
    n_users = 2_000
    with SeqVault.open(store, schema=sample.behavior_schema(retention=False),
                       durability="none") as v:
        for rnd in range(24):
            users = np.repeat(np.arange(n_users), 3)
            ts = 1_700_000_000_000 + rnd * 1_000_000 + rng.integers(0, 1_000_000, users.size)
            v.append_batch({"user_id": users, "ts": ts,
                            **sample.event_columns(rng, users.size)})
            v.flush()
            if rnd % 8 == 7:
                v.merge()
        v.merge()
        live = v.manifest.live_bytes()
    meta = store / "meta"
    on_disk = sum(p.stat().st_size for p in meta.iterdir() if p.name != "lock.mdb")
    assert on_disk <= 2 * live, (on_disk, live)


@pytest.mark.parametrize("end_key", [25, 100])  # some keys stay; every key goes (one drop)
def test_delete_range_deletes_exactly_the_keys_below_its_end(tmp_path, end_key):
    from seqvault.meta import Meta

    m = Meta(tmp_path / "meta", read_only=False)
    with m.begin(write=True) as txn:
        for k in range(50):
            m.put(txn, "delta", k.to_bytes(8, "big"), b"v%d" % k)
            m.put(txn, "sealed", k.to_bytes(8, "big"), b"x")
    with m.begin(write=True) as txn:
        m.delete_range(txn, "delta", end_key.to_bytes(8, "big"))
    with m.begin() as txn:
        left = [int.from_bytes(k, "big") for k, _v in m.items(txn, "delta")]
        other = sum(1 for _ in m.items(txn, "sealed"))
    assert left == [k for k in range(50) if k >= end_key]
    assert other == 50  # another database is untouched
    with m.begin(write=True) as txn:  # the emptied database takes keys again
        m.put(txn, "delta", (7).to_bytes(8, "big"), b"again")
    with m.begin() as txn:
        assert (7).to_bytes(8, "big") in dict(m.items(txn, "delta"))
    m.close()


@pytest.mark.parametrize("dup", [False, True])
def test_a_batchs_delta_records_are_the_per_user_records_in_key_order(dup):
    from seqvault.index import EXTENT_DTYPE, ExtentBatch
    from seqvault.manifest import _batch_deltas, _pack_batch
    from seqvault.meta import delta_key

    rng = np.random.default_rng(3)
    n = 500
    hashes = rng.integers(0, 1 << 63, n, dtype=np.int64).astype(np.uint64) * np.uint64(2)
    if dup:
        hashes[7] = hashes[300]
    counts = rng.integers(1, 5, n).astype(np.int64)
    ext = np.zeros(int(counts.sum()), dtype=EXTENT_DTYPE)
    ext["off"] = np.arange(ext.size) * 11
    ext["count"] = rng.integers(1, 99, ext.size)
    batch = ExtentBatch(hashes, counts, ext)
    packed = _pack_batch(batch)
    want = [(delta_key(77, h), packed[h]) for h in sorted(packed)]
    assert _batch_deltas(77, batch) == want
